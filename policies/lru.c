/*
 * lru.c - least-recently-used page eviction.
 *
 * Invariants: the list holds exactly the linked entries in order of their last use (tick), most
 * recent at the head; victim() is the tail. A use is a touch(); add() keeps the entry's own tick,
 * so a parent that becomes a leaf when its child is evicted goes where its last use puts it (next
 * to its cold child, usually at the tail) instead of looking fresh. An entry never used (tick 0)
 * counts as used now. Scores are ignored.
 */
#include "policy.h"

#include <errno.h>
#include <stdlib.h>

struct pol {
    struct pol_entry head; /* sentinel: head.next = most recent, head.prev = least recent */
    size_t n;
    uint64_t tick;
};

static int lru_init(struct pol **out)
{
    struct pol *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->head.next = p->head.prev = &p->head;
    *out = p;
    return 0;
}

static void lru_free(struct pol *p)
{
    free(p);
}

static void lru_unlink(struct pol *p, struct pol_entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
    e->linked = 0;
    p->n--;
}

static void lru_push_head(struct pol *p, struct pol_entry *e)
{
    e->next = p->head.next;
    e->prev = &p->head;
    p->head.next->prev = e;
    p->head.next = e;
    e->linked = 1;
    p->n++;
}

static void lru_add(struct pol *p, struct pol_entry *e)
{
    if (e->linked)
        lru_unlink(p, e);
    if (e->tick == 0)
        e->tick = ++p->tick;
    /* the common case, a page released just now, goes to the head at once; an old entry is
     * placed by walking from the cold end, where it belongs */
    struct pol_entry *newer = &p->head;
    if (p->n && e->tick < p->head.next->tick) {
        newer = p->head.prev;
        while (newer != &p->head && newer->tick < e->tick)
            newer = newer->prev;
    }
    e->prev = newer;
    e->next = newer->next;
    newer->next->prev = e;
    newer->next = e;
    e->linked = 1;
    p->n++;
}

static void lru_remove(struct pol *p, struct pol_entry *e)
{
    if (e->linked)
        lru_unlink(p, e);
}

static void lru_touch(struct pol *p, struct pol_entry *e)
{
    e->tick = ++p->tick;
    if (e->linked) {
        lru_unlink(p, e);
        lru_push_head(p, e);
    }
}

static void lru_score(struct pol *p, struct pol_entry *e, double mass)
{
    (void)p;
    e->score += mass;
}

static struct pol_entry *lru_victim(struct pol *p)
{
    return p->n ? p->head.prev : NULL;
}

static size_t lru_count(const struct pol *p)
{
    return p->n;
}

const struct pol_ops pol_lru_ops = {
    .name = "lru",
    .init = lru_init,
    .free = lru_free,
    .add = lru_add,
    .remove = lru_remove,
    .touch = lru_touch,
    .score = lru_score,
    .victim = lru_victim,
    .count = lru_count,
};
