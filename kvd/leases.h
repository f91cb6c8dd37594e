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
    size_t cap;   /* power of two, or 0 */
    size_t n;     /* keys with count > 0 */
    uint64_t total; /* sum of counts */
};

/* Make sure n more keys fit without allocating. 0 or -ENOMEM (nothing changed). */
int kv_leases_reserve(struct kv_leases *l, size_t n);
/* Add one lease on id. Needs room (reserve first): -ENOSPC otherwise. */
int kv_leases_add(struct kv_leases *l, uint32_t id);
/* Leases held on id (0 if none). */
uint32_t kv_leases_get(const struct kv_leases *l, uint32_t id);
/* Drop one lease on id; -ENOENT if none held. */
int kv_leases_drop(struct kv_leases *l, uint32_t id);
void kv_leases_free(struct kv_leases *l);

#define kv_leases_foreach(l, s)                                                                    \
    for (struct kv_lease_slot *s = (l)->slots; s && s < (l)->slots + (l)->cap; s++)                \
        if (s->count)

#endif
