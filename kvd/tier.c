/*
 * tier.c - the spill tier inside the daemon: evicted pages go to the spill store (spill.c) and
 * come back when a lookup reaches them; at start the store's slots are re-indexed.
 *
 * A spilled page is a record in the prefix index (kind KV_INODE_SPILLED) in place of the page:
 *
 *   WRITING --write reaped ok--> VALID --lookup reaches it--> RESTORING --read ok--> (a COMMITTED
 *      |                           |                              |         page; record freed,
 *      | write failed: dropped     | a commit of the same hash    | bad      slot kept on disk and
 *      v (counted)                 v replaced it: slot erased     v slot    noted in the page)
 *    gone                        gone                           gone (counted, never served)
 *
 * A record whose hash a worker commits while its I/O is in flight is marked orphan and freed when
 * the I/O completes. A restored page remembers its slot: evicting it again costs no write, and
 * freeing it any other way erases the slot, so a restart never brings back what was removed.
 * Lookups that reach a VALID record start restores for the run of spilled pages and are parked like
 * pending lookups; they are answered once the restores complete (or their deadline passes).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "server.h"
#include "spill.h"

#define TIER_WRITER 0xffffffffu /* the "client" that holds a page while kvd restores into it */

enum { SP_WRITING = 1, SP_VALID, SP_RESTORING };

struct kv_spilled {
    struct kv_inode in;
    uint8_t parent[KVP_HASH_BYTES];
    uint32_t slot;
    uint32_t ns_id;
    uint16_t ntok;
    uint8_t state;
    uint8_t orphan;     /* left the index while its I/O was in flight */
    struct kv_page *pg; /* RESTORING: the page being filled */
    uint64_t seq;       /* the store's write sequence of the slot (newer is larger) */
};

static struct kv_spilled *rec_of(struct kv_inode *in)
{
    return (struct kv_spilled *)((char *)in - offsetof(struct kv_spilled, in));
}

static void *page_ptr(struct kvd *d, const struct kv_page *pg)
{
    return (uint8_t *)d->arena.base + kv_pool_page_offset(&d->pool, pg);
}

/* ---- pool hooks -------------------------------------------------------------------------- */

/* Completions drained while an eviction waits for a free queue slot: the pool is in the middle
 * of a change then, so they are kept here and handled by the next kvd_tier_service. */
#define TIER_DEFER_MAX (16 * KV_SPILL_MAX_QD)
static struct kv_spill_done deferred[TIER_DEFER_MAX];
static unsigned ndeferred;

static void tier_defer(void *arg, const struct kv_spill_done *x)
{
    (void)arg;
    /* erases (and flush writes) have no record to update: only writes and reads of records are
     * kept, at most a queue's worth per drain, and callers drain only with that much room left */
    if (x->op == KV_SPILL_OP_INVALIDATE || !x->cookie)
        return;
    if (ndeferred < TIER_DEFER_MAX)
        deferred[ndeferred++] = *x;
}

static struct kv_inode *tier_evict(void *arg, struct kv_page *pg)
{
    struct kvd *d = arg;
    struct kv_ns *ns = pg->chunk->ns;
    struct kv_spilled *r;

    if (!d->spill)
        return NULL;
    r = kv_calloc(1, sizeof(*r));
    if (!r) {
        d->tier_dropped++;
        return NULL;
    }
    memcpy(r->parent, pg->parent_hash, sizeof(r->parent));
    r->ntok = pg->ntok;
    r->ns_id = ns->id;
    if (pg->spill_slot1) { /* restored earlier and still on disk: nothing to write */
        r->slot = pg->spill_slot1 - 1;
        r->state = SP_VALID;
        pg->spill_slot1 = 0;
        return &r->in;
    }
    struct kv_spill_meta m = {.layout = ns->layout, .ntok = pg->ntok};
    snprintf(m.ns, sizeof(m.ns), "%s", ns->name);
    memcpy(m.hash, pg->in.hash, sizeof(m.hash));
    memcpy(m.parent, pg->parent_hash, sizeof(m.parent));
    int slot = kv_spill_write(d->spill, &m, page_ptr(d, pg), r);
    if (slot == -EBUSY && ndeferred + KV_SPILL_MAX_QD <= TIER_DEFER_MAX) {
        /* every staging buffer is in flight: wait for them (backpressure) rather than drop */
        kv_spill_drain(d->spill, tier_defer, d);
        slot = kv_spill_write(d->spill, &m, page_ptr(d, pg), r);
    }
    if (slot < 0) { /* store full, queue full, page too large: the victim is dropped */
        kv_debug("spill: page %u dropped: %s", pg->id, strerror(-slot));
        d->tier_dropped++;
        kv_free(r);
        return NULL;
    }
    r->slot = (uint32_t)slot;
    r->state = SP_WRITING;
    return &r->in;
}

static void tier_forget(void *arg, struct kv_inode *in)
{
    struct kvd *d = arg;
    struct kv_spilled *r = rec_of(in);
    if (r->state == SP_VALID) {
        kv_spill_invalidate(d->spill, r->slot);
        kv_free(r);
    } else {
        r->orphan = 1; /* freed when its I/O completes */
    }
}

static void tier_drop(void *arg, struct kv_page *pg)
{
    struct kvd *d = arg;
    if (d->spill && pg->spill_slot1)
        kv_spill_invalidate(d->spill, pg->spill_slot1 - 1);
    pg->spill_slot1 = 0;
}

/* ---- completions ------------------------------------------------------------------------- */

static void tier_done(void *arg, const struct kv_spill_done *x)
{
    struct kvd *d = arg;
    struct kv_spilled *r = x->cookie;

    if (x->op == KV_SPILL_OP_INVALIDATE || !r)
        return;
    if (x->op == KV_SPILL_OP_WRITE) {
        if (r->orphan) {
            if (x->res == 0)
                kv_spill_invalidate(d->spill, r->slot);
            kv_free(r);
            return;
        }
        if (x->res == 0) {
            r->state = SP_VALID;
        } else { /* disk full or I/O error: the page is lost, counted by the store */
            kv_pool_unindex(&d->pool, &r->in);
            kv_free(r);
        }
        d->pool_gen++;
        return;
    }
    /* READ */
    struct kv_page *pg = r->pg;
    d->pool_gen++;
    if (r->orphan || x->res != 0) {
        if (x->res != 0)
            kv_warn("spill: slot %u did not restore (%s); dropped", r->slot, strerror(-x->res));
        else /* replaced by a commit or purged by an operator meanwhile: its slot goes too */
            kv_spill_invalidate(d->spill, r->slot);
        if (!r->orphan)
            kv_pool_unindex(&d->pool, &r->in);
        kv_pool_unref(&d->pool, pg); /* still WRITING: freed */
        kv_free(r);
        return;
    }
    struct kv_page *winner;
    uint32_t slot = r->slot;
    kv_pool_unindex(&d->pool, &r->in);
    if (kv_pool_commit(&d->pool, pg, r->in.hash, r->parent, r->ntok, &winner) != 0) {
        kv_spill_invalidate(d->spill, slot);
        kv_pool_unref(&d->pool, pg);
        kv_free(r);
        return;
    }
    if (x->flags & KV_SPILL_F_DEMOTED)
        winner->flags |= KVP_PAGE_DEMOTED;
    winner->spill_slot1 = slot + 1;
    kv_pool_unref(&d->pool, winner); /* kvd's own lease: the page is now a normal cached page */
    d->tier_restored++;
    kv_free(r);
}

/* ---- restores ---------------------------------------------------------------------------- */

int kvd_tier_blocked(struct kvd *d, struct kv_ns *ns, struct kv_inode *in, int *started)
{
    struct kv_spilled *r = rec_of(in);
    struct kv_page *pg;
    int rc;

    if (!d->spill)
        return 0;
    if (r->state == SP_RESTORING || r->state == SP_WRITING)
        return 1; /* wait: a write in flight is restorable once it lands (its completion wakes us)
                   */
    rc = kv_pool_alloc(&d->pool, ns, TIER_WRITER, 1, &pg);
    if (rc) { /* no room to restore into: a miss */
        kv_debug("spill: no page to restore slot %u into: %s", r->slot, strerror(-rc));
        return 0;
    }
    rc = kv_spill_read(d->spill, r->slot, in->hash, &ns->layout, page_ptr(d, pg), r);
    if (rc) {
        kv_debug("spill: cannot restore slot %u: %s", r->slot, strerror(-rc));
        kv_pool_unref(&d->pool, pg);
        return rc == -EBUSY ? 1 : 0; /* queue full: retry when a completion frees a place */
    }
    r->state = SP_RESTORING;
    r->pg = pg;
    (*started)++;
    return 1;
}

const uint8_t *kvd_tier_parent(struct kv_inode *in)
{
    return rec_of(in)->parent;
}

/* ---- operator eviction ------------------------------------------------------------------ */

static const uint8_t zero_hash[KVP_HASH_BYTES];

/* Does the chain of spill record r lead back to `top`? Follows parent hashes through the index
 * (records and pages alike), at most `limit` steps. */
static int rec_extends(struct kv_pool *p, uint32_t ns_id, const struct kv_spilled *r,
                       const uint8_t *top, size_t limit)
{
    const uint8_t *h = r->in.hash, *parent = r->parent;
    for (size_t i = 0; i < limit; i++) {
        if (memcmp(h, top, KVP_HASH_BYTES) == 0)
            return 1;
        if (memcmp(parent, zero_hash, KVP_HASH_BYTES) == 0)
            return 0;
        struct kv_inode *in = kv_pool_find(p, ns_id, parent);
        if (!in)
            return 0;
        h = in->hash;
        if (in->kind == KV_INODE_SPILLED)
            parent = rec_of(in)->parent;
        else
            parent = kv_pool_page_of(in)->parent_hash;
    }
    return 0;
}

int kvd_tier_evict_under(struct kvd *d, uint32_t ns_id, const uint8_t *top)
{
    struct kv_pool *p = &d->pool;
    int dropped = 0;

    if (!d->spill)
        return 0;
    /* decide first, then unlink: dropping a record would cut the chains of its descendants */
    for (size_t b = 0; b < p->nbuckets; b++)
        for (struct kv_inode *n = p->buckets[b]; n; n = n->next)
            if (n->kind == KV_INODE_SPILLED && n->ns_id == ns_id)
                rec_of(n)->orphan = rec_extends(p, ns_id, rec_of(n), top, p->nindexed + 1) ? 2 : 0;
    for (size_t b = 0; b < p->nbuckets; b++) {
        struct kv_inode *n = p->buckets[b], *next;
        for (; n; n = next) {
            next = n->next;
            struct kv_spilled *r = rec_of(n);
            if (n->kind != KV_INODE_SPILLED || n->ns_id != ns_id || r->orphan != 2)
                continue;
            kv_pool_unindex(p, n);
            dropped++;
            if (r->state == SP_VALID) {
                kv_spill_invalidate(d->spill, r->slot);
                kv_free(r);
            } else {
                r->orphan = 1; /* a write or restore in flight: erased when it lands */
            }
        }
    }
    if (dropped)
        d->pool_gen++;
    return dropped;
}

/* ---- life cycle -------------------------------------------------------------------------- */

/* Slots found to hold an older copy of a hash during the scan, erased once it is over. */
static uint32_t *stale;
static size_t nstale, capstale;

static int tier_scan_cb(void *arg, uint32_t slot, const struct kv_spill_meta *m)
{
    struct kvd *d = arg;
    struct kv_ns *ns;
    char name[KVP_MAX_NS_NAME];

    snprintf(name, sizeof(name), "%.*s", (int)sizeof(m->ns), m->ns);
    int rc = kv_pool_ns_get(&d->pool, name, &m->layout, &ns);
    if (rc == -ENOMEM)
        return rc;
    if (rc) /* a namespace now declared with another layout, or a page that no longer fits */
        return 1;
    struct kv_inode *old = kv_pool_find(&d->pool, ns->id, m->hash);
    if (old) { /* the same hash twice (a crash between two writes): keep the newer copy */
        struct kv_spilled *o = rec_of(old);
        if (o->seq > m->seq)
            return 1;
        if (nstale == capstale) {
            size_t cap = capstale ? capstale * 2 : 64;
            uint32_t *v = kv_realloc(stale, cap * sizeof(*v));
            if (!v)
                return -ENOMEM;
            stale = v;
            capstale = cap;
        }
        stale[nstale++] = o->slot;
        o->slot = slot;
        o->seq = m->seq;
        memcpy(o->parent, m->parent, sizeof(o->parent));
        o->ntok = m->ntok;
        return 0;
    }
    struct kv_spilled *r = kv_calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    memcpy(r->parent, m->parent, sizeof(r->parent));
    r->slot = slot;
    r->seq = m->seq;
    r->ns_id = ns->id;
    r->ntok = m->ntok;
    r->state = SP_VALID;
    kv_pool_index(&d->pool, &r->in, ns->id, m->hash, KV_INODE_SPILLED);
    return 0;
}

static void tier_log(void *arg, const char *line)
{
    (void)arg;
    kv_info("%s", line);
}

int kvd_tier_open(struct kvd *d)
{
    char path[KV_PATH_MAX + 32], why[256] = "";
    int rc;

    d->spill_fd = -1;
    d->pool.hook_arg = d;
    d->pool.evict_hook = tier_evict;
    d->pool.forget_hook = tier_forget;
    d->pool.drop_hook = tier_drop;
    if (!strcmp(d->cfg.spill_path, "none") || d->cfg.spill_size == 0) {
        kv_notice("spill tier disabled");
        return 0;
    }
    if (d->cfg.spill_path[0])
        snprintf(path, sizeof(path), "%s", d->cfg.spill_path);
    else
        snprintf(path, sizeof(path), "%s/kvd.spill", d->cfg.state_dir);
    struct kv_spill_cfg sc = {
        .path = path,
        .bytes = d->cfg.spill_size,
        .max_page_bytes = (uint32_t)d->cfg.spill_page_max,
        .queue_depth = (unsigned)d->cfg.spill_queue_depth,
        .force_sync = (int)d->cfg.spill_sync,
        .gpu_staging = d->arena.backend != KVP_BACKEND_HOST,
        .log = tier_log,
    };
    rc = kv_spill_open(&d->spill, &sc, why, sizeof(why));
    if (rc) {
        kv_warn("spill tier unavailable (%s): evicted pages are dropped",
                why[0] ? why : strerror(-rc));
        d->spill = NULL;
        return 0;
    }
    if (why[0])
        kv_notice("%s", why); /* e.g. io_uring refused: pread/pwrite path */
    kvd_notify_status(d, "re-indexing the spill store %s", path);
    rc = kv_spill_scan(d->spill, tier_scan_cb, d);
    if (rc < 0) {
        kv_err("spill: re-indexing %s failed: %s", path, strerror(-rc));
        return rc;
    }
    for (size_t i = 0; i < nstale; i++)
        kv_spill_invalidate(d->spill, stale[i]);
    kv_free(stale);
    stale = NULL;
    nstale = capstale = 0;
    struct kv_spill_stats st;
    kv_spill_stats(d->spill, &st);
    kv_notice("spill tier %s: %u slots of %u KiB, %d pages re-indexed, %llu damaged slots dropped",
              path, st.slots_total, st.slot_bytes >> 10, rc, (unsigned long long)st.scan_corrupt);
    d->spill_fd = kv_spill_event_fd(d->spill);
    return 0;
}

void kvd_tier_service(struct kvd *d)
{
    if (!d->spill)
        return;
    for (unsigned i = 0; i < ndeferred; i++)
        tier_done(d, &deferred[i]);
    ndeferred = 0;
    kv_spill_reap(d->spill, tier_done, d);
}

void kvd_tier_submit(struct kvd *d)
{
    if (!d->spill)
        return;
    if (ndeferred)
        kvd_tier_service(d);
    kv_spill_submit(d->spill);
}

void kvd_tier_stats(struct kvd *d)
{
    struct kv_spill_stats st;
    if (!d->spill)
        return;
    kv_spill_stats(d->spill, &st);
    d->st.spill_writes = st.writes;
    d->st.spill_restores = d->tier_restored;
    d->st.spill_dropped = d->tier_dropped + st.dropped_nospace + st.dropped_io;
    d->st.spill_checksum_failures = st.corrupt + st.scan_corrupt;
}

/* Graceful stop: write every committed page that has no copy on disk yet, so the next kvd
 * starts warm. Waits for the queue when it is full; a page the store has no room for is skipped. */
static void tier_flush(struct kvd *d)
{
    struct kv_pool *p = &d->pool;
    uint64_t written = 0, skipped = 0;

    for (uint32_t ci = 0; ci < p->nchunks; ci++) {
        struct kv_chunk *ch = &p->chunks[ci];
        for (uint32_t s = 0; ch->ns && s < ch->npages; s++) {
            struct kv_page *pg = &ch->pages[s];
            if (pg->state != KV_PAGE_COMMITTED || pg->spill_slot1)
                continue;
            struct kv_spill_meta m = {.layout = ch->ns->layout, .ntok = pg->ntok};
            snprintf(m.ns, sizeof(m.ns), "%s", ch->ns->name);
            memcpy(m.hash, pg->in.hash, sizeof(m.hash));
            memcpy(m.parent, pg->parent_hash, sizeof(m.parent));
            int slot = kv_spill_write(d->spill, &m, page_ptr(d, pg), NULL);
            if (slot == -EBUSY) {
                kv_spill_drain(d->spill, tier_done, d);
                slot = kv_spill_write(d->spill, &m, page_ptr(d, pg), NULL);
            }
            if (slot < 0) {
                skipped++;
                if (slot == -ENOSPC)
                    goto out; /* the store is full */
                continue;
            }
            pg->spill_slot1 = (uint32_t)slot + 1;
            written++;
        }
    }
out:
    kv_spill_drain(d->spill, tier_done, d);
    if (written || skipped)
        kv_notice("spill: wrote %llu resident pages for the next start (%llu did not fit)",
                  (unsigned long long)written, (unsigned long long)skipped);
}

void kvd_tier_close(struct kvd *d)
{
    if (!d->spill)
        return;
    kvd_tier_service(d);
    if (d->cfg.spill_on_stop)
        tier_flush(d);
    kvd_tier_service(d);
    kv_spill_drain(d->spill, tier_done, d);
    kv_spill_close(d->spill);
    d->spill = NULL;
    /* free the records still indexed (the pool frees only pages) */
    for (size_t b = 0; b < d->pool.nbuckets; b++) {
        struct kv_inode **pp = &d->pool.buckets[b];
        while (*pp) {
            struct kv_inode *n = *pp;
            if (n->kind == KV_INODE_SPILLED) {
                *pp = n->next;
                d->pool.nindexed--;
                kv_free(rec_of(n));
            } else {
                pp = &n->next;
            }
        }
    }
}
