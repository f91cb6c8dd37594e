/*
 * pool.h - the page pool: arena carving, namespaces, page descriptors, the prefix index, leases'
 * reference counts and eviction. It never touches page memory (a GPU page cannot be read cheaply);
 * it hands out offsets.
 *
 * Page state machine (the function that takes each edge):
 *
 *          kv_pool_alloc                kv_pool_commit
 *   FREE -----------------> WRITING -----------------------> COMMITTED
 *    ^                        |   \   (same hash already          |  ^
 *    |   kv_pool_unref        |    \   committed: dedup,          |  | kv_pool_restored
 *    +------------------------+     \  loser freed)               |  |  (spill read verified)
 *    |   (write lease dropped        v                            |  |
 *    |    before commit)            FREE                          |  |
 *    |                                                            v  |
 *    +------------------------- EVICTING <--- kv_pool_evict_one (unpinned leaf, policy victim)
 *      kv_pool_evict_one             \
 *      (spill hook done or refused)   +---> SPILLED: not a page state; the index keeps a spill
 *                                          record (kv_inode of kind KV_INODE_SPILLED) instead
 *
 * Invariants (checked by kv_pool_check):
 *  1. A FREE page has refs == 0, is on its chunk's free list, is not indexed, not in the policy.
 *  2. A WRITING page has refs >= 1 (its writer's write lease) and writer != 0.
 *  3. A COMMITTED page is indexed under (ns, hash); it is in the policy iff refs == 0 and
 *     n_children == 0 (an unpinned leaf): a chain never loses its middle.
 *  4. n_children of a page == number of COMMITTED pages whose parent pointer is that page.
 *  5. chunk->nfree == number of FREE pages in the chunk; ns counters match the chunks.
 *  6. Each index key (ns, hash) appears at most once.
 */
#ifndef KVD_POOL_H
#define KVD_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kv_format.h"
#include "policy.h"
#include "proto.h"

enum kv_pstate { KV_PAGE_FREE = 0, KV_PAGE_WRITING, KV_PAGE_COMMITTED, KV_PAGE_EVICTING };
enum kv_inode_kind { KV_INODE_NONE = 0, KV_INODE_PAGE, KV_INODE_SPILLED };

/* A key in the prefix index: (namespace, block hash). Embedded in what it names. */
struct kv_inode {
    struct kv_inode *next; /* bucket chain */
    uint8_t hash[KVP_HASH_BYTES];
    uint32_t ns_id;
    uint8_t kind; /* enum kv_inode_kind; NONE while not indexed */
};

struct kv_ns;
struct kv_chunk;

struct kv_page {
    struct kv_inode in;     /* indexed while pending (WRITING with a hash) or COMMITTED */
    struct pol_entry pol;   /* eviction policy node */
    struct kv_chunk *chunk; /* owning chunk (its ns is the page's ns) */
    struct kv_page *parent; /* committed parent page in the same ns, or NULL */
    struct kv_page *free_next;
    float *scores;   /* per-token attention mass reported by workers (ntok), or NULL */
    uint64_t offset; /* where the page starts in the arena (fixed when its chunk is carved) */
    uint8_t parent_hash[KVP_HASH_BYTES];
    uint32_t id;          /* chunk index << 16 | slot */
    uint32_t refs;        /* leases held on the page, all clients together */
    uint32_t n_children;  /* COMMITTED pages whose parent is this page */
    uint32_t writer;      /* client id of the write lease (WRITING) */
    uint32_t check_kids;  /* scratch for kv_pool_check */
    uint32_t spill_slot1; /* spill slot + 1 still holding this page's bytes on disk, 0: none */
    uint64_t hits;        /* lookups that returned this page */
    uint16_t ntok;        /* tokens held (committed) */
    uint8_t state;        /* enum kv_pstate */
    uint8_t flags;        /* KVP_PAGE_DEMOTED */
};

struct kv_chunk {
    struct kv_ns *ns;       /* NULL while the chunk is free */
    struct kv_page *pages;  /* descriptors, npages of them */
    struct kv_page *free;   /* free pages of this chunk */
    struct kv_chunk *pnext; /* ns list of chunks with free pages */
    uint32_t idx;
    uint32_t npages;
    uint32_t nfree;
};

struct kv_ns {
    uint32_t id;
    char name[KVP_MAX_NS_NAME];
    struct kv_layout layout;
    size_t page_bytes;
    uint32_t pages_per_chunk;
    uint32_t nchunks; /* chunks owned */
    uint32_t npages;  /* pages in owned chunks */
    uint32_t nfree;   /* FREE pages in owned chunks */
    uint32_t ncommitted;
    uint32_t nwriting;
    uint32_t nclients;        /* attached clients */
    struct kv_chunk *partial; /* chunks with at least one free page */
    struct pol *pol;
};

/* Called for a page entering EVICTING, before it is freed: the spill tier copies it out here.
 * The page is still indexed; the hook must not change the pool. It may return an index node (a
 * spill record) that the pool indexes under the page's (ns, hash) once the page is freed. */
typedef struct kv_inode *(*kv_evict_hook)(void *arg, struct kv_page *page);
/* Called when a node of kind KV_INODE_SPILLED leaves the index because a commit of the same hash
 * replaced it (the tier then forgets the record and invalidates its slot). */
typedef void (*kv_forget_hook)(void *arg, struct kv_inode *node);
/* Called for a COMMITTED page freed other than by eviction (operator evict), and for an evicted
 * page whose hook returned no record: a slot it still owns on disk must be invalidated. */
typedef void (*kv_drop_hook)(void *arg, struct kv_page *page);

struct kv_pool {
    size_t arena_bytes;
    size_t chunk_bytes;
    uint32_t nchunks;
    uint32_t nfree_chunks;
    struct kv_chunk *chunks;
    struct kv_ns **ns; /* by id - 1 */
    uint32_t n_ns;
    uint32_t cap_ns;
    const struct pol_ops *pol_ops;
    /* prefix index */
    struct kv_inode **buckets;
    size_t nbuckets; /* power of two */
    size_t nindexed;
    uint64_t idx_key[2]; /* secret of the bucket function (random per daemon) */
    /* counters */
    uint64_t evictions;
    kv_evict_hook evict_hook;
    kv_forget_hook forget_hook;
    kv_drop_hook drop_hook;
    void *hook_arg;
};

/* Set up a pool over an arena (sodium_init() must have run) of arena_bytes cut into chunks of
 * chunk_bytes. -EINVAL for sizes that leave no chunk, -ENOMEM. Nothing is allocated per page until
 * a chunk is given out. */
int kv_pool_init(struct kv_pool *p, size_t arena_bytes, size_t chunk_bytes,
                 const struct pol_ops *pol);
void kv_pool_free(struct kv_pool *p);

/* Find the namespace `name`, or create it with `layout`. -EINVAL: invalid layout, or a page that
 * does not fit in a chunk; -EEXIST: the namespace exists with a different layout; -ENOMEM.
 * On error nothing is changed. */
int kv_pool_ns_get(struct kv_pool *p, const char *name, const struct kv_layout *layout,
                   struct kv_ns **out);
struct kv_ns *kv_pool_ns_by_id(struct kv_pool *p, uint32_t id);

/* Allocate n pages of ns for writer `client` (state WRITING, refs 1), evicting unpinned leaves
 * as needed. All or nothing: -ENOSPC when the pool cannot give n pages (everything pinned),
 * -ENOMEM; on error no page changed hands (pages evicted on the way stay evicted). */
int kv_pool_alloc(struct kv_pool *p, struct kv_ns *ns, uint32_t client, uint32_t n,
                  struct kv_page **out);

/* Mark a WRITING page as pending under `hash` (index it), so lookups report it as pending.
 * -EEXIST if the key is already indexed (another writer or a committed page); not an error for
 * the caller: the page just is not pending. */
int kv_pool_set_pending(struct kv_pool *p, struct kv_page *pg, const uint8_t *hash);

/* Commit a WRITING page. If (ns, hash) is already COMMITTED by another page, *winner gets that
 * page with a new reference and pg is freed (its write lease consumed); else pg becomes COMMITTED,
 * its write lease becomes a read lease, and *winner = pg. Exception: a committed page that came
 * back demoted (lossy) from the spill tier and is not pinned is replaced by pg (its children move
 * to pg, its disk slot is dropped). -EINVAL for ntok == 0 or > page_tokens. */
int kv_pool_commit(struct kv_pool *p, struct kv_page *pg, const uint8_t *hash,
                   const uint8_t *parent, uint16_t ntok, struct kv_page **winner);

/* Take / drop one lease. Dropping the last lease of a WRITING page frees it. (Taking one is
 * inline: a lookup takes one per page of its chain.) */
static inline void kv_pool_ref(struct kv_pool *p, struct kv_page *pg)
{
    if (pg->pol.linked)
        p->pol_ops->remove(pg->chunk->ns->pol, &pg->pol); /* a pinned page is no victim */
    pg->refs++;
}
void kv_pool_unref_last(struct kv_pool *p, struct kv_page *pg);
static inline void kv_pool_unref(struct kv_pool *p, struct kv_page *pg)
{
    if (pg->refs > 1) { /* the common case inline: a release drops one lease per page */
        pg->refs--;
        return;
    }
    kv_pool_unref_last(p, pg);
}

/* Index a foreign node (a spill record) under (ns_id, hash); the key must not be indexed yet
 * (-EEXIST). Remove it again with kv_pool_unindex. */
int kv_pool_index(struct kv_pool *p, struct kv_inode *n, uint32_t ns_id, const uint8_t *hash,
                  int kind);
void kv_pool_unindex(struct kv_pool *p, struct kv_inode *n);

/* Evict one specific COMMITTED, unpinned leaf page (operator eviction): -EBUSY if it is pinned or
 * has children. The drop hook runs (its spill slot is invalidated); nothing is spilled. */
int kv_pool_evict_page(struct kv_pool *p, struct kv_page *pg);

/* Two block hashes equal? (Inline: the chain walk of a lookup compares two per element.) */
_Static_assert(KVP_HASH_BYTES == 16, "kv_hash_eq compares two 64-bit words");
static inline int kv_hash_eq(const uint8_t *a, const uint8_t *b)
{
    uint64_t a0, a1, b0, b1;
    memcpy(&a0, a, 8);
    memcpy(&a1, a + 8, 8);
    memcpy(&b0, b, 8);
    memcpy(&b1, b + 8, 8);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
}

/* Bucket hash of (ns, hash), before masking. Block hashes come from clients, so it is a keyed
 * hash of all of it with a per-daemon random secret (a 64x64->128 multiply-fold, as wyhash does):
 * a client that does not know the secret cannot aim keys at one bucket. SipHash would be the
 * conservative choice, but it costs ~30 ns a probe, 2 us on a 64-page lookup, where this costs
 * ~2 ns; and a client able to attach may write any page of the arena anyway, so it is not the
 * adversary this guards against. */
static inline uint64_t kv_pool_idx_mix(const struct kv_pool *p, uint32_t ns_id, const uint8_t *hash)
{
    uint64_t lo, hi;
    memcpy(&lo, hash, 8);
    memcpy(&hi, hash + 8, 8);
    __uint128_t m = (__uint128_t)(lo ^ p->idx_key[0]) * (hi ^ p->idx_key[1] ^ ns_id);
    return (uint64_t)m ^ (uint64_t)(m >> 64);
}

/* Index lookup: the node for (ns, hash), or NULL. Inline: a lookup probes once per element. */
static inline struct kv_inode *kv_pool_find(struct kv_pool *p, uint32_t ns_id, const uint8_t *hash)
{
    struct kv_inode *n = p->buckets[kv_pool_idx_mix(p, ns_id, hash) & (p->nbuckets - 1)];
    for (; n; n = n->next)
        if (n->ns_id == ns_id && kv_hash_eq(n->hash, hash))
            return n;
    return NULL;
}

/* The page an index node names, or NULL (no node, or a spill record). */
static inline struct kv_page *kv_pool_page_of(struct kv_inode *in)
{
    if (!in || in->kind != KV_INODE_PAGE)
        return NULL;
    return (struct kv_page *)((char *)in - offsetof(struct kv_page, in));
}

/* A page hit by a lookup: counts it and tells the policy, except for a pinned page: its last
 * lease going is told as a touch anyway (kv_pool_unref_last), before anything could compare its
 * use, so the indirect call per pinned page of a LOOKUP+PIN is skipped. */
static inline void kv_pool_touch(struct kv_pool *p, struct kv_page *pg)
{
    pg->hits++;
    if (pg->pol.linked || pg->refs == 0)
        p->pol_ops->touch(pg->chunk->ns->pol, &pg->pol);
}

/* Page by id, or NULL for an id that names no page of the arena. Inline, with the next one:
 * every page of every request takes them. */
static inline struct kv_page *kv_pool_page_by_id(struct kv_pool *p, uint32_t id)
{
    uint32_t ci = id >> 16, slot = id & 0xffff;
    if (ci >= p->nchunks || !p->chunks[ci].ns || slot >= p->chunks[ci].npages)
        return NULL;
    return &p->chunks[ci].pages[slot];
}

/* Page by the id of a lease its holder dropped just now: the id is known to be valid (leases
 * are taken on real pages only), so no bounds checks. */
static inline struct kv_page *kv_pool_page_by_held_id(struct kv_pool *p, uint32_t id)
{
    return &p->chunks[id >> 16].pages[id & 0xffff];
}

/* Where a page starts in the arena. */
static inline uint64_t kv_pool_page_offset(const struct kv_pool *p, const struct kv_page *pg)
{
    (void)p;
    return pg->offset;
}

/* Evict one victim of ns (or of any namespace when ns is NULL). 0, or -ENOENT if none. */
int kv_pool_evict_one(struct kv_pool *p, struct kv_ns *ns);

/* Record attention mass for a page's tokens (n <= ntok). -ENOMEM leaves the old scores. */
int kv_pool_add_scores(struct kv_pool *p, struct kv_page *pg, const float *mass, unsigned n);

/* Check every invariant above. 0, or -EUCLEAN with a description in why. O(pages). */
int kv_pool_check(struct kv_pool *p, char *why, size_t len);

/* Totals by state. */
struct kv_pool_counts {
    uint64_t pages_total, pages_free, pages_writing, pages_committed, pages_pinned;
    uint64_t chunks_used;
};
void kv_pool_counts(const struct kv_pool *p, struct kv_pool_counts *c);

#endif
