/*
 * h2o.c - heavy-hitter eviction: the page whose attention mass, aged since its last use, is
 * lowest goes first.
 *
 * Workers report per-token attention mass for the pages they read (kvd sums it over tokens and
 * over every worker: score()); H2O (Zhang et al., 2023) keeps the tokens with the largest
 * accumulated mass. Across requests a page's mass must also age, or a prefix that was hot an
 * hour ago would never leave. So a page's priority is
 *
 *     p(e) = (1 + mass(e)) * 2^-((now - tick(e)) / H2O_HALF_TICKS)
 *
 * (mass in units of attention probability, tick = the policy's use counter at the page's last
 * use): a page nobody attends to ages like LRU; mass multiplies its weight, and the weight halves
 * every H2O_HALF_TICKS uses of the namespace after its last use. In log2 the decay is a common
 * offset, so key(e) = log2(1 + mass) + tick / H2O_HALF_TICKS orders the pages at any `now`
 * without ever being recomputed, and it cannot overflow. Equal keys: the older use goes first.
 *
 * The evictable pages sit in an intrusive pairing heap ordered by key (min at the root): add,
 * touch and score are O(1) or a remove + reinsert, O(log n) amortized; nothing allocates.
 *
 * Invariants: the heap holds exactly the linked entries; every entry's key is key(e) as above
 * for its current mass and tick; a parent's key <= its children's (ties by tick).
 */
#include "policy.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

/* Uses of the namespace after which an unused page's weight halves. A LOOKUP of a 64-page
 * chain is 64 uses: 2^20 uses is ~16k such lookups. */
#define H2O_HALF_TICKS 1048576.0

struct pol {
    struct pol_entry *root;
    size_t n;
    uint64_t tick;
};

static double key_of(const struct pol_entry *e)
{
    return log2(1.0 + (e->score > 0 ? e->score : 0.0)) + (double)e->tick / H2O_HALF_TICKS;
}

/* a goes before b (is the better victim) */
static int before(const struct pol_entry *a, const struct pol_entry *b)
{
    return a->key < b->key || (a->key == b->key && a->tick < b->tick);
}

/* Meld two heap roots (either may be NULL); the loser becomes the winner's first child. */
static struct pol_entry *meld(struct pol_entry *a, struct pol_entry *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (before(b, a)) {
        struct pol_entry *t = a;
        a = b;
        b = t;
    }
    b->prev = a; /* the first child's prev is its parent */
    b->next = a->child;
    if (a->child)
        a->child->prev = b;
    a->child = b;
    a->prev = a->next = NULL;
    return a;
}

/* Two-pass pairing of a sibling list; returns the new root (prev/next of it cleared). */
static struct pol_entry *merge_pairs(struct pol_entry *first)
{
    struct pol_entry *paired = NULL; /* pass 1 results, linked through next, last pair first */
    while (first) {
        struct pol_entry *a = first, *b = a->next;
        first = b ? b->next : NULL;
        a->prev = a->next = NULL;
        if (b)
            b->prev = b->next = NULL;
        struct pol_entry *m = meld(a, b);
        m->next = paired;
        paired = m;
    }
    struct pol_entry *root = NULL; /* pass 2: meld right to left */
    while (paired) {
        struct pol_entry *next = paired->next;
        paired->next = NULL;
        root = meld(root, paired);
        paired = next;
    }
    return root;
}

static void heap_remove(struct pol *p, struct pol_entry *e)
{
    struct pol_entry *sub = merge_pairs(e->child);
    e->child = NULL;
    if (e == p->root) {
        p->root = sub;
    } else {
        if (e->prev->child == e) /* first child: prev is the parent */
            e->prev->child = e->next;
        else
            e->prev->next = e->next;
        if (e->next)
            e->next->prev = e->prev;
        p->root = meld(p->root, sub);
    }
    e->prev = e->next = NULL;
}

static void heap_insert(struct pol *p, struct pol_entry *e)
{
    e->key = key_of(e);
    e->prev = e->next = e->child = NULL;
    p->root = meld(p->root, e);
}

static int h2o_init(struct pol **out)
{
    struct pol *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    *out = p;
    return 0;
}

static void h2o_free(struct pol *p)
{
    free(p);
}

static void h2o_add(struct pol *p, struct pol_entry *e)
{
    if (e->linked) {
        heap_remove(p, e);
        p->n--;
    }
    if (e->tick == 0 || e->tick > p->tick) /* never used, or stamped by another policy's clock */
        e->tick = ++p->tick;
    heap_insert(p, e);
    e->linked = 1;
    p->n++;
}

static void h2o_remove(struct pol *p, struct pol_entry *e)
{
    if (!e->linked)
        return;
    heap_remove(p, e);
    e->linked = 0;
    p->n--;
}

static void h2o_touch(struct pol *p, struct pol_entry *e)
{
    e->tick = ++p->tick;
    if (e->linked) { /* its key grew: it moves away from the root */
        heap_remove(p, e);
        heap_insert(p, e);
    }
}

static void h2o_score(struct pol *p, struct pol_entry *e, double mass)
{
    if (!(mass > 0)) /* negative or NaN mass cannot lower a page's standing */
        return;
    e->score += mass;
    if (e->linked) {
        heap_remove(p, e);
        heap_insert(p, e);
    }
}

static struct pol_entry *h2o_victim(struct pol *p)
{
    return p->root;
}

static size_t h2o_count(const struct pol *p)
{
    return p->n;
}

const struct pol_ops pol_h2o_ops = {
    .name = "h2o",
    .init = h2o_init,
    .free = h2o_free,
    .add = h2o_add,
    .remove = h2o_remove,
    .touch = h2o_touch,
    .score = h2o_score,
    .victim = h2o_victim,
    .count = h2o_count,
};
