/*
 * pool.c - page pool, namespaces, prefix index. See pool.h for the state machine and invariants.
 * Single-threaded: the daemon's event loop is the only caller.
 */
#include "pool.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "mem.h"

#define POOL_MAX_CHUNKS  65535u
#define POOL_MAX_SLOTS   65535u
#define POOL_MIN_BUCKETS 1024u

static const uint8_t zero_hash[KVP_HASH_BYTES];

/* ---- index ------------------------------------------------------------------------------- */

/* Bucket of (ns, hash): see kv_pool_idx_mix in pool.h for why the hash is keyed. */
static size_t idx_bucket(const struct kv_pool *p, uint32_t ns_id, const uint8_t *hash)
{
    return (size_t)(kv_pool_idx_mix(p, ns_id, hash) & (p->nbuckets - 1));
}

static void idx_grow(struct kv_pool *p)
{
    size_t nb = p->nbuckets * 2;
    struct kv_inode **b = kv_calloc(nb, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < p->nbuckets; i++) {
        struct kv_inode *n = p->buckets[i], *next;
        for (; n; n = next) {
            next = n->next;
            size_t j = (size_t)(kv_pool_idx_mix(p, n->ns_id, n->hash) & (nb - 1));
            n->next = b[j];
            b[j] = n;
        }
    }
    kv_free(p->buckets);
    p->buckets = b;
    p->nbuckets = nb;
}

static void idx_insert(struct kv_pool *p, struct kv_inode *n, uint32_t ns_id, const uint8_t *hash,
                       int kind)
{
    assert(n->kind == KV_INODE_NONE);
    memcpy(n->hash, hash, KVP_HASH_BYTES);
    n->ns_id = ns_id;
    n->kind = (uint8_t)kind;
    size_t b = idx_bucket(p, ns_id, hash);
    n->next = p->buckets[b];
    p->buckets[b] = n;
    if (++p->nindexed > p->nbuckets)
        idx_grow(p);
}

static void idx_remove(struct kv_pool *p, struct kv_inode *n)
{
    struct kv_inode **pp = &p->buckets[idx_bucket(p, n->ns_id, n->hash)];
    for (; *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            n->next = NULL;
            n->kind = KV_INODE_NONE;
            p->nindexed--;
            return;
        }
    }
    assert(!"index node not found");
}

int kv_pool_index(struct kv_pool *p, struct kv_inode *n, uint32_t ns_id, const uint8_t *hash,
                  int kind)
{
    if (kv_pool_find(p, ns_id, hash))
        return -EEXIST;
    n->kind = KV_INODE_NONE;
    idx_insert(p, n, ns_id, hash, kind);
    return 0;
}

void kv_pool_unindex(struct kv_pool *p, struct kv_inode *n)
{
    if (n->kind != KV_INODE_NONE)
        idx_remove(p, n);
}

/* ---- pool ---------------------------------------------------------------------------------- */

int kv_pool_init(struct kv_pool *p, size_t arena_bytes, size_t chunk_bytes,
                 const struct pol_ops *pol)
{
    memset(p, 0, sizeof(*p));
    if (chunk_bytes < 4096 || chunk_bytes % 4096 || arena_bytes < chunk_bytes)
        return -EINVAL;
    size_t n = arena_bytes / chunk_bytes;
    if (n > POOL_MAX_CHUNKS)
        return -EINVAL;
    p->chunks = kv_calloc(n, sizeof(*p->chunks));
    p->buckets = kv_calloc(POOL_MIN_BUCKETS, sizeof(*p->buckets));
    if (!p->chunks || !p->buckets) {
        kv_free(p->chunks);
        kv_free(p->buckets);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        p->chunks[i].idx = (uint32_t)i;
    p->nbuckets = POOL_MIN_BUCKETS;
    randombytes_buf(p->idx_key, sizeof(p->idx_key));
    p->arena_bytes = arena_bytes;
    p->chunk_bytes = chunk_bytes;
    p->nchunks = p->nfree_chunks = (uint32_t)n;
    p->pol_ops = pol;
    return 0;
}

void kv_pool_free(struct kv_pool *p)
{
    for (uint32_t i = 0; i < p->nchunks; i++) {
        struct kv_chunk *c = &p->chunks[i];
        for (uint32_t s = 0; c->pages && s < c->npages; s++)
            kv_free(c->pages[s].scores);
        kv_free(c->pages);
    }
    for (uint32_t i = 0; i < p->n_ns; i++) {
        p->pol_ops->free(p->ns[i]->pol);
        kv_free(p->ns[i]);
    }
    kv_free(p->ns);
    kv_free(p->chunks);
    kv_free(p->buckets);
    memset(p, 0, sizeof(*p));
}

static int layout_equal(const struct kv_layout *a, const struct kv_layout *b)
{
    return memcmp(a, b, sizeof(*a)) == 0;
}

int kv_pool_ns_get(struct kv_pool *p, const char *name, const struct kv_layout *layout,
                   struct kv_ns **out)
{
    struct kv_ns *ns;
    size_t pb;
    int rc;

    for (uint32_t i = 0; i < p->n_ns; i++) {
        if (strcmp(p->ns[i]->name, name) == 0) {
            if (!layout_equal(&p->ns[i]->layout, layout))
                return -EEXIST;
            *out = p->ns[i];
            return 0;
        }
    }
    pb = kv_page_bytes(layout);
    if (pb == 0 || pb > p->chunk_bytes || strlen(name) >= KVP_MAX_NS_NAME)
        return -EINVAL;
    if (p->n_ns == p->cap_ns) {
        uint32_t cap = p->cap_ns ? p->cap_ns * 2 : 8;
        struct kv_ns **v = kv_realloc(p->ns, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        p->ns = v;
        p->cap_ns = cap;
    }
    ns = kv_calloc(1, sizeof(*ns));
    if (!ns)
        return -ENOMEM;
    rc = p->pol_ops->init(&ns->pol);
    if (rc) {
        kv_free(ns);
        return rc;
    }
    ns->id = p->n_ns + 1;
    snprintf(ns->name, sizeof(ns->name), "%s", name);
    ns->layout = *layout;
    ns->page_bytes = pb;
    ns->pages_per_chunk = (uint32_t)(p->chunk_bytes / pb);
    if (ns->pages_per_chunk > POOL_MAX_SLOTS)
        ns->pages_per_chunk = POOL_MAX_SLOTS;
    p->ns[p->n_ns++] = ns;
    *out = ns;
    return 0;
}

struct kv_ns *kv_pool_ns_by_id(struct kv_pool *p, uint32_t id)
{
    return (id >= 1 && id <= p->n_ns) ? p->ns[id - 1] : NULL;
}

static void partial_remove(struct kv_ns *ns, struct kv_chunk *c)
{
    for (struct kv_chunk **pp = &ns->partial; *pp; pp = &(*pp)->pnext) {
        if (*pp == c) {
            *pp = c->pnext;
            c->pnext = NULL;
            return;
        }
    }
}

/* Give chunk c (free) to ns: create its page descriptors. -ENOMEM leaves c free. */
static int chunk_assign(struct kv_pool *p, struct kv_chunk *c, struct kv_ns *ns)
{
    uint32_t n = ns->pages_per_chunk;
    struct kv_page *pages = kv_calloc(n, sizeof(*pages));
    if (!pages)
        return -ENOMEM;
    c->pages = pages;
    c->npages = c->nfree = n;
    c->ns = ns;
    c->free = NULL;
    for (uint32_t s = n; s-- > 0;) {
        pages[s].id = c->idx << 16 | s;
        pages[s].offset = (uint64_t)c->idx * p->chunk_bytes + (uint64_t)s * ns->page_bytes;
        pages[s].chunk = c;
        pages[s].free_next = c->free;
        c->free = &pages[s];
    }
    c->pnext = ns->partial;
    ns->partial = c;
    ns->nchunks++;
    ns->npages += n;
    ns->nfree += n;
    p->nfree_chunks--;
    return 0;
}

/* Take a wholly free chunk back from its namespace. */
static void chunk_release(struct kv_pool *p, struct kv_chunk *c)
{
    struct kv_ns *ns = c->ns;
    assert(c->nfree == c->npages);
    partial_remove(ns, c);
    ns->nchunks--;
    ns->npages -= c->npages;
    ns->nfree -= c->npages;
    for (uint32_t s = 0; s < c->npages; s++)
        kv_free(c->pages[s].scores);
    kv_free(c->pages);
    c->pages = NULL;
    c->free = NULL;
    c->ns = NULL;
    c->npages = c->nfree = 0;
    p->nfree_chunks++;
}

/* One more chunk for ns: a free one, else a wholly free chunk of another namespace.
 * 0, -ENOSPC (none), -ENOMEM. */
static int take_chunk(struct kv_pool *p, struct kv_ns *ns)
{
    struct kv_chunk *victim = NULL;
    for (uint32_t i = 0; i < p->nchunks; i++) {
        struct kv_chunk *c = &p->chunks[i];
        if (!c->ns)
            return chunk_assign(p, c, ns);
        if (!victim && c->ns != ns && c->nfree == c->npages)
            victim = c;
    }
    if (!victim)
        return -ENOSPC;
    chunk_release(p, victim);
    return chunk_assign(p, victim, ns);
}

static void page_free(struct kv_pool *p, struct kv_page *pg)
{
    struct kv_chunk *c = pg->chunk;
    struct kv_ns *ns = c->ns;

    assert(pg->refs == 0 && !pg->pol.linked && pg->n_children == 0);
    if (pg->in.kind != KV_INODE_NONE)
        idx_remove(p, &pg->in);
    if (pg->parent) {
        struct kv_page *par = pg->parent;
        pg->parent = NULL;
        if (--par->n_children == 0 && par->refs == 0 && par->state == KV_PAGE_COMMITTED)
            p->pol_ops->add(ns->pol, &par->pol);
    }
    if (pg->state == KV_PAGE_COMMITTED || pg->state == KV_PAGE_EVICTING)
        ns->ncommitted--;
    else if (pg->state == KV_PAGE_WRITING)
        ns->nwriting--;
    kv_free(pg->scores);
    pg->scores = NULL;
    pg->state = KV_PAGE_FREE;
    pg->writer = 0;
    pg->ntok = 0;
    pg->flags = 0;
    pg->hits = 0;
    pg->spill_slot1 = 0;
    memset(&pg->pol, 0, sizeof(pg->pol));
    pg->free_next = c->free;
    c->free = pg;
    if (c->nfree++ == 0) {
        c->pnext = ns->partial;
        ns->partial = c;
    }
    ns->nfree++;
}

int kv_pool_evict_one(struct kv_pool *p, struct kv_ns *ns)
{
    struct pol_entry *e = NULL;
    struct kv_ns *from = ns;

    if (ns) {
        e = p->pol_ops->victim(ns->pol);
    } else {
        for (uint32_t i = 0; i < p->n_ns && !e; i++) {
            from = p->ns[i];
            e = p->pol_ops->victim(from->pol);
        }
    }
    if (!e)
        return -ENOENT;
    struct kv_page *pg = (struct kv_page *)((char *)e - offsetof(struct kv_page, pol));
    assert(pg->state == KV_PAGE_COMMITTED && pg->refs == 0 && pg->n_children == 0);
    p->pol_ops->remove(from->pol, e);
    pg->state = KV_PAGE_EVICTING;
    struct kv_inode *rec = p->evict_hook ? p->evict_hook(p->hook_arg, pg) : NULL;
    uint8_t hash[KVP_HASH_BYTES];
    uint32_t ns_id = from->id;
    memcpy(hash, pg->in.hash, sizeof(hash));
    if (!rec && pg->spill_slot1 && p->drop_hook)
        p->drop_hook(p->hook_arg, pg); /* not kept on disk: its old slot must not come back */
    page_free(p, pg);
    if (rec)
        idx_insert(p, rec, ns_id, hash, KV_INODE_SPILLED);
    p->evictions++;
    return 0;
}

int kv_pool_evict_page(struct kv_pool *p, struct kv_page *pg)
{
    struct kv_ns *ns = pg->chunk->ns;
    if (pg->state != KV_PAGE_COMMITTED)
        return -EINVAL;
    if (pg->refs || pg->n_children)
        return -EBUSY;
    p->pol_ops->remove(ns->pol, &pg->pol);
    pg->state = KV_PAGE_EVICTING;
    if (pg->spill_slot1 && p->drop_hook)
        p->drop_hook(p->hook_arg, pg);
    page_free(p, pg);
    p->evictions++;
    return 0;
}

int kv_pool_alloc(struct kv_pool *p, struct kv_ns *ns, uint32_t client, uint32_t n,
                  struct kv_page **out)
{
    int rc;

    if (n == 0)
        return -EINVAL;
    while (ns->nfree < n) {
        rc = take_chunk(p, ns);
        if (rc == 0)
            continue;
        if (rc != -ENOSPC)
            return rc;
        if (kv_pool_evict_one(p, ns) != 0)
            return -ENOSPC;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct kv_chunk *c = ns->partial;
        struct kv_page *pg = c->free;
        assert(pg && pg->state == KV_PAGE_FREE);
        c->free = pg->free_next;
        pg->free_next = NULL;
        if (--c->nfree == 0) {
            ns->partial = c->pnext;
            c->pnext = NULL;
        }
        ns->nfree--;
        ns->nwriting++;
        pg->state = KV_PAGE_WRITING;
        pg->refs = 1;
        pg->writer = client;
        out[i] = pg;
    }
    return 0;
}

int kv_pool_set_pending(struct kv_pool *p, struct kv_page *pg, const uint8_t *hash)
{
    assert(pg->state == KV_PAGE_WRITING);
    if (pg->in.kind != KV_INODE_NONE)
        return -EALREADY;
    if (kv_pool_find(p, pg->chunk->ns->id, hash))
        return -EEXIST;
    idx_insert(p, &pg->in, pg->chunk->ns->id, hash, KV_INODE_PAGE);
    return 0;
}

void kv_pool_unref_last(struct kv_pool *p, struct kv_page *pg)
{
    assert(pg->refs > 0);
    if (--pg->refs > 0)
        return;
    if (pg->state == KV_PAGE_WRITING) {
        page_free(p, pg);
    } else if (pg->state == KV_PAGE_COMMITTED) {
        p->pol_ops->touch(pg->chunk->ns->pol, &pg->pol); /* the end of a use is a use */
        if (pg->n_children == 0)
            p->pol_ops->add(pg->chunk->ns->pol, &pg->pol);
    }
}

/* Move every committed child of `from` to `to` (same namespace). O(pages of the namespace): only
 * an exact commit replacing a demoted page takes it. Returns the number moved. */
static uint32_t adopt_children(struct kv_pool *p, struct kv_page *from, struct kv_page *to)
{
    uint32_t n = 0;
    for (uint32_t ci = 0; ci < p->nchunks && from->n_children; ci++) {
        struct kv_chunk *ch = &p->chunks[ci];
        if (ch->ns != from->chunk->ns)
            continue;
        for (uint32_t s = 0; s < ch->npages; s++) {
            if (ch->pages[s].state == KV_PAGE_COMMITTED && ch->pages[s].parent == from) {
                ch->pages[s].parent = to;
                from->n_children--;
                n++;
            }
        }
    }
    return n;
}

int kv_pool_commit(struct kv_pool *p, struct kv_page *pg, const uint8_t *hash,
                   const uint8_t *parent, uint16_t ntok, struct kv_page **winner)
{
    struct kv_ns *ns = pg->chunk->ns;
    struct kv_inode *in;
    struct kv_page *other;

    if (pg->state != KV_PAGE_WRITING)
        return -EINVAL;
    if (ntok == 0 || ntok > ns->layout.page_tokens || memcmp(hash, parent, KVP_HASH_BYTES) == 0)
        return -EINVAL;
    in = kv_pool_find(p, ns->id, hash);
    other = kv_pool_page_of(in);
    uint32_t adopted = 0;
    if (other && other != pg && other->state == KV_PAGE_COMMITTED &&
        (other->flags & KVP_PAGE_DEMOTED) && other->refs == 0) {
        /* an exact commit replaces a copy that came back lossy from the spill tier: its children
         * move to the new page, the demoted page and its disk slot go */
        adopted = adopt_children(p, other, pg);
        if (other->pol.linked)
            p->pol_ops->remove(ns->pol, &other->pol);
        other->state = KV_PAGE_EVICTING;
        if (other->spill_slot1 && p->drop_hook)
            p->drop_hook(p->hook_arg, other);
        page_free(p, other);
        in = NULL;
        other = NULL;
    }
    if (other && other != pg && other->state == KV_PAGE_COMMITTED) {
        /* dedup: keep the committed copy, free ours */
        kv_pool_ref(p, other);
        pg->refs = 0;
        page_free(p, pg);
        *winner = other;
        return 0;
    }
    if (in && in != &pg->in) {
        idx_remove(p, in); /* another writer's pending mark, or a spill record: we win */
        if (!other && p->forget_hook)
            p->forget_hook(p->hook_arg, in); /* a spill record: the tier forgets it */
    }
    if (pg->in.kind != KV_INODE_NONE && in != &pg->in)
        idx_remove(p, &pg->in); /* we were pending under another hash */
    if (pg->in.kind == KV_INODE_NONE)
        idx_insert(p, &pg->in, ns->id, hash, KV_INODE_PAGE);
    memcpy(pg->parent_hash, parent, KVP_HASH_BYTES);
    pg->parent = NULL;
    if (memcmp(parent, zero_hash, KVP_HASH_BYTES) != 0) {
        struct kv_page *par = kv_pool_page_of(kv_pool_find(p, ns->id, parent));
        if (par && par->state == KV_PAGE_COMMITTED) {
            if (par->pol.linked)
                p->pol_ops->remove(ns->pol, &par->pol);
            par->n_children++;
            pg->parent = par;
        }
    }
    pg->state = KV_PAGE_COMMITTED;
    pg->ntok = ntok;
    pg->writer = 0;
    pg->n_children = adopted;
    ns->nwriting--;
    ns->ncommitted++;
    *winner = pg;
    return 0;
}

int kv_pool_add_scores(struct kv_pool *p, struct kv_page *pg, const float *mass, unsigned n)
{
    double sum = 0;
    if (n > pg->chunk->ns->layout.page_tokens)
        return -EINVAL;
    if (!pg->scores) {
        pg->scores = kv_calloc(pg->chunk->ns->layout.page_tokens, sizeof(float));
        if (!pg->scores)
            return -ENOMEM;
    }
    for (unsigned i = 0; i < n; i++) {
        float m;
        memcpy(&m, &mass[i], sizeof(m)); /* the wire array may be unaligned */
        if (!(m >= 0.0f) || m > 1e30f)   /* NaN, negative or absurd: ignore the token */
            continue;
        pg->scores[i] += m;
        sum += m;
    }
    p->pol_ops->score(pg->chunk->ns->pol, &pg->pol, sum);
    return 0;
}

void kv_pool_counts(const struct kv_pool *p, struct kv_pool_counts *c)
{
    memset(c, 0, sizeof(*c));
    c->chunks_used = p->nchunks - p->nfree_chunks;
    for (uint32_t i = 0; i < p->n_ns; i++) {
        const struct kv_ns *ns = p->ns[i];
        c->pages_total += ns->npages;
        c->pages_free += ns->nfree;
        c->pages_writing += ns->nwriting;
        c->pages_committed += ns->ncommitted;
    }
    for (uint32_t i = 0; i < p->nchunks; i++) {
        const struct kv_chunk *ch = &p->chunks[i];
        for (uint32_t s = 0; ch->ns && s < ch->npages; s++)
            c->pages_pinned += ch->pages[s].refs > 0;
    }
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf(why, len, __VA_ARGS__);                                                       \
            return -EUCLEAN;                                                                       \
        }                                                                                          \
    } while (0)

int kv_pool_check(struct kv_pool *p, char *why, size_t len)
{
    uint32_t free_chunks = 0;
    size_t indexed = 0;

    for (uint32_t i = 0; i < p->n_ns; i++) {
        struct kv_ns *ns = p->ns[i];
        uint32_t nchunks = 0, npages = 0, nfree = 0, ncomm = 0, nwrit = 0;
        for (uint32_t c = 0; c < p->nchunks; c++) {
            struct kv_chunk *ch = &p->chunks[c];
            if (ch->ns != ns)
                continue;
            uint32_t f = 0;
            nchunks++;
            npages += ch->npages;
            for (uint32_t s = 0; s < ch->npages; s++) {
                struct kv_page *pg = &ch->pages[s];
                f += pg->state == KV_PAGE_FREE;
                ncomm += pg->state == KV_PAGE_COMMITTED;
                nwrit += pg->state == KV_PAGE_WRITING;
            }
            uint32_t onlist = 0;
            for (struct kv_page *pg = ch->free; pg; pg = pg->free_next) {
                CHECK(pg->state == KV_PAGE_FREE, "page %u on free list in state %u", pg->id,
                      pg->state);
                CHECK(++onlist <= ch->npages, "chunk %u free list loops", c);
            }
            CHECK(f == ch->nfree && onlist == f, "chunk %u: nfree %u, free pages %u, listed %u", c,
                  ch->nfree, f, onlist);
            nfree += f;
        }
        CHECK(nchunks == ns->nchunks && npages == ns->npages && nfree == ns->nfree &&
                  ncomm == ns->ncommitted && nwrit == ns->nwriting,
              "namespace %s counters disagree with its chunks", ns->name);
        CHECK(p->pol_ops->count(ns->pol) <= ns->ncommitted, "namespace %s: policy holds %zu > %u",
              ns->name, p->pol_ops->count(ns->pol), ns->ncommitted);
    }
    /* per-page invariants; children counted from the children's side first */
    for (uint32_t c = 0; c < p->nchunks; c++)
        for (uint32_t s = 0; p->chunks[c].ns && s < p->chunks[c].npages; s++)
            p->chunks[c].pages[s].check_kids = 0;
    for (uint32_t c = 0; c < p->nchunks; c++) {
        struct kv_chunk *ch = &p->chunks[c];
        for (uint32_t s = 0; ch->ns && s < ch->npages; s++) {
            struct kv_page *pg = &ch->pages[s];
            if (pg->state == KV_PAGE_COMMITTED && pg->parent) {
                CHECK(pg->parent->chunk->ns == ch->ns, "page %u has a parent in another namespace",
                      pg->id);
                pg->parent->check_kids++;
            }
        }
    }
    for (uint32_t c = 0; c < p->nchunks; c++) {
        struct kv_chunk *ch = &p->chunks[c];
        if (!ch->ns) {
            free_chunks++;
            continue;
        }
        for (uint32_t s = 0; s < ch->npages; s++) {
            struct kv_page *pg = &ch->pages[s];
            switch (pg->state) {
            case KV_PAGE_FREE:
                CHECK(pg->refs == 0 && pg->in.kind == KV_INODE_NONE && !pg->pol.linked,
                      "free page %u: refs %u, indexed %u, in policy %u", pg->id, pg->refs,
                      pg->in.kind, pg->pol.linked);
                break;
            case KV_PAGE_WRITING:
                CHECK(pg->refs >= 1 && pg->writer != 0 && !pg->pol.linked,
                      "writing page %u: refs %u writer %u", pg->id, pg->refs, pg->writer);
                indexed += pg->in.kind != KV_INODE_NONE;
                break;
            case KV_PAGE_COMMITTED:
                CHECK(pg->in.kind == KV_INODE_PAGE &&
                          kv_pool_find(p, ch->ns->id, pg->in.hash) == &pg->in,
                      "committed page %u not indexed", pg->id);
                CHECK(pg->n_children == pg->check_kids, "page %u: n_children %u, counted %u",
                      pg->id, pg->n_children, pg->check_kids);
                CHECK(pg->pol.linked == (pg->refs == 0 && pg->n_children == 0),
                      "page %u: in policy %u with refs %u children %u", pg->id, pg->pol.linked,
                      pg->refs, pg->n_children);
                indexed++;
                break;
            default:
                CHECK(0, "page %u in transient state %u between requests", pg->id, pg->state);
            }
        }
    }
    CHECK(free_chunks == p->nfree_chunks, "free chunks %u, counted %u", p->nfree_chunks,
          free_chunks);
    CHECK(indexed <= p->nindexed, "index holds %zu, pages indexed %zu", p->nindexed, indexed);
    return 0;
}
