/*
 * leases.h - one client's leases: page id -> number of leases it holds on that page.
 * Open addressing with linear probing and backward-shift deletion (no tombstones).
 * kv_leases_reserve() makes room for n more keys up front, so a request can reserve, then change
 * the pool, then insert without any failure in between (all or nothing).
 */
#ifndef KVD_LEASES_H
#define KVD_LEASES_H

#include <stddef.h>
#include <stdint.h>

struct kv_lease_slot {
    uint32_t id;
    uint32_t count; /* 0: empty slot */
};

struct kv_leases {
    struct kv_lease_slot *slots;
    size_t cap;     /* power of two, or 0 */
    size_t n;       /* keys with count > 0 */
    uint64_t total; /* sum of counts */
};

/* Make sure n more keys fit without allocating. 0 or -ENOMEM (nothing changed). */
int kv_leases_reserve(struct kv_leases *l, size_t n);
void kv_leases_free(struct kv_leases *l);

/* Out of line: the key's first lease (needs room, else -ENOSPC) / its last lease (-ENOENT if
 * none is held). kv_leases_add and kv_leases_drop below take the common paths inline: a lookup
 * or release pins or unpins every page of a chain, one call per page. */
int kv_leases_add_key(struct kv_leases *l, uint32_t id);
int kv_leases_drop_slot(struct kv_leases *l, struct kv_lease_slot *s);

/* The home slot of id in a table of cap slots. */
static inline size_t kv_leases_home(uint32_t id, size_t cap)
{
    return (size_t)((id * 0x9e3779b1u) & (cap - 1));
}

/* The slot holding id, or NULL. */
static inline struct kv_lease_slot *kv_leases_slot(const struct kv_leases *l, uint32_t id)
{
    if (!l->cap)
        return NULL;
    for (size_t i = kv_leases_home(id, l->cap);; i = (i + 1) & (l->cap - 1)) {
        if (!l->slots[i].count)
            return NULL;
        if (l->slots[i].id == id)
            return &l->slots[i];
    }
}

/* Add one lease on id. Needs room (reserve first): -ENOSPC otherwise. */
static inline int kv_leases_add(struct kv_leases *l, uint32_t id)
{
    struct kv_lease_slot *s = kv_leases_slot(l, id);
    if (!s)
        return kv_leases_add_key(l, id);
    s->count++;
    l->total++;
    return 0;
}

/* Leases held on id (0 if none). */
static inline uint32_t kv_leases_get(const struct kv_leases *l, uint32_t id)
{
    struct kv_lease_slot *s = kv_leases_slot(l, id);
    return s ? s->count : 0;
}

/* Drop one lease on id; -ENOENT if none held. One probe. */
static inline int kv_leases_drop(struct kv_leases *l, uint32_t id)
{
    struct kv_lease_slot *s = kv_leases_slot(l, id);
    if (!s || s->count == 1)
        return kv_leases_drop_slot(l, s);
    s->count--;
    l->total--;
    return 0;
}

#define kv_leases_foreach(l, s)                                                                    \
    for (struct kv_lease_slot *s = (l)->slots; s && s < (l)->slots + (l)->cap; s++)                \
        if (s->count)

#endif
