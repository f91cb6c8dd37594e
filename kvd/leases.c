/* leases.c - see leases.h. */
#include "leases.h"

#include <errno.h>
#include <string.h>

#include "mem.h"

static void put(struct kv_lease_slot *slots, size_t cap, uint32_t id, uint32_t count)
{
    size_t i = kv_leases_home(id, cap);
    while (slots[i].count)
        i = (i + 1) & (cap - 1);
    slots[i].id = id;
    slots[i].count = count;
}

int kv_leases_reserve(struct kv_leases *l, size_t n)
{
    size_t need = l->n + n, cap = l->cap ? l->cap : 16;
    if (need * 4 <= l->cap * 3)
        return 0;
    while (need * 4 > cap * 3)
        cap *= 2;
    struct kv_lease_slot *s = kv_calloc(cap, sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < l->cap; i++)
        if (l->slots[i].count)
            put(s, cap, l->slots[i].id, l->slots[i].count);
    kv_free(l->slots);
    l->slots = s;
    l->cap = cap;
    return 0;
}

int kv_leases_add_key(struct kv_leases *l, uint32_t id)
{
    if ((l->n + 1) * 4 > l->cap * 3)
        return -ENOSPC;
    put(l->slots, l->cap, id, 1);
    l->n++;
    l->total++;
    return 0;
}

int kv_leases_drop_slot(struct kv_leases *l, struct kv_lease_slot *s)
{
    if (!s)
        return -ENOENT;
    l->total--;
    if (--s->count)
        return 0;
    /* backward-shift deletion keeps probe chains intact */
    size_t i = (size_t)(s - l->slots), j = i;
    for (;;) {
        j = (j + 1) & (l->cap - 1);
        if (!l->slots[j].count)
            break;
        size_t home = kv_leases_home(l->slots[j].id, l->cap);
        /* move j back to i if home is not cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            l->slots[i] = l->slots[j];
            i = j;
        }
    }
    l->slots[i].count = 0;
    l->slots[i].id = 0;
    l->n--;
    return 0;
}

void kv_leases_free(struct kv_leases *l)
{
    kv_free(l->slots);
    memset(l, 0, sizeof(*l));
}
