/*
 * ops.c - request handlers. Each handler validates the whole request before it changes anything
 * (all or nothing), then answers with one reply frame. A client error gets a typed status and a
 * debug log line; kvd keeps serving everyone else.
 */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "log.h"
#include "mem.h"
#include "server.h"

struct req {
    struct kvd *d;
    const uint8_t *rid;
    size_t rid_len;
    struct kv_client *c; /* NULL before ATTACH */
    uint64_t now_ms;     /* kv_now_ms() when the request was taken up */
    struct kvp_msg m;
};

static void reply_status(struct req *r, int status)
{
    uint8_t rep[sizeof(struct kvp_hdr)];
    if (status >= 32)
        r->d->st.errors_server++;
    else if (status != KVP_OK)
        r->d->st.errors_client++;
    kvp_put_hdr(rep, r->m.hdr.op, status, r->m.hdr.seq, 0);
    kvd_send(r->d, r->rid, r->rid_len, rep, sizeof(rep));
}

/* Reply with a body already written at d->reply + sizeof(hdr). */
static void reply_body(struct req *r, uint32_t count, size_t body_len)
{
    kvp_put_hdr(r->d->reply, r->m.hdr.op, KVP_OK, r->m.hdr.seq, count);
    kvd_send(r->d, r->rid, r->rid_len, r->d->reply, sizeof(struct kvp_hdr) + body_len);
}

static uint8_t *body_out(struct kvd *d)
{
    return d->reply + sizeof(struct kvp_hdr);
}

static void put_page(uint8_t *dst, const struct kv_pool *p, const struct kv_page *pg, int flags)
{
    struct kvp_page wp = {
        .page_id = pg->id,
        .ntok = pg->ntok,
        .flags = (uint16_t)(flags | (pg->flags & KVP_PAGE_DEMOTED)),
        .offset = kv_pool_page_offset(p, pg),
    };
    memcpy(dst, &wp, sizeof(wp));
}

static struct kv_client *client_by_rid(struct kvd *d, const uint8_t *rid, size_t len)
{
    int slot = kvd_rid_find(d, rid, len);
    return slot < 0 ? NULL : &d->clients[slot];
}

/* ---- ATTACH ---------------------------------------------------------------------------------- */

static void op_attach(struct req *r, const char *user_id)
{
    struct kvd *d = r->d;
    const struct kvp_attach *a = &r->m.u.attach;
    struct kv_client *c = NULL;
    struct kv_ns *ns;
    int rc;

    if (r->c) {
        reply_status(r, KVP_E_STATE); /* this socket is attached already */
        return;
    }
    for (uint32_t i = 0; i < d->cfg.max_clients; i++) {
        struct kv_client *x = &d->clients[i];
        if (x->state == KV_CLIENT_WELCOMED && sodium_memcmp(x->token, a->token, 16) == 0) {
            c = x;
            break;
        }
    }
    /* the pid ZAP saw on this ZeroMQ connection must be the pid of the side channel */
    if (!c || !user_id || c->peer.pid <= 0 || strcmp(user_id, c->pid_text) != 0) {
        kv_notice("ATTACH refused: %s (ZeroMQ peer pid %s)",
                  c ? "pid differs from the side channel's" : "unknown token",
                  user_id ? user_id : "?");
        reply_status(r, KVP_E_BAD_TOKEN);
        return;
    }
    if (kv_layout_check(&a->layout) != 0) {
        reply_status(r, KVP_E_LAYOUT);
        return;
    }
    rc = kv_pool_ns_get(&d->pool, a->ns, &a->layout, &ns);
    if (rc) {
        if (rc == -EEXIST)
            kv_notice("client %u: layout for namespace '%s' differs from the namespace's", c->id,
                      a->ns);
        reply_status(r, rc == -ENOMEM ? KVP_E_NOMEM : KVP_E_LAYOUT);
        return;
    }
    c->state = KV_CLIENT_ATTACHED;
    c->ns = ns;
    ns->nclients++;
    memcpy(c->rid, r->rid, r->rid_len);
    c->rid_len = (uint8_t)r->rid_len;
    kvd_rid_add(d, (uint32_t)(c - d->clients));
    sodium_memzero(c->token, sizeof(c->token));
    c->last_seen_ms = r->now_ms;
    kv_info("client %u (pid %d uid %u) attached to '%s'", c->id, (int)c->peer.pid,
            (unsigned)c->peer.uid, ns->name);
    struct kvp_attach_rep rep = {
        .client_id = c->id,
        .ns_id = ns->id,
        .page_bytes = ns->page_bytes,
        .arena_bytes = d->arena.bytes,
        .heartbeat_ms = (uint32_t)d->cfg.heartbeat_ms,
        .max_batch = KVP_MAX_BATCH,
    };
    memcpy(body_out(d), &rep, sizeof(rep));
    reply_body(r, 0, sizeof(rep));
}

/* ---- LOOKUP ---------------------------------------------------------------------------------- */

/* Is index node `in` the block that follows `prev` in a chain? Its parent hash must be prev: so a
 * "chain" of one hash repeated, or of unrelated hashes, stops at its second element. */
static int follows(struct kv_inode *in, const uint8_t *prev)
{
    struct kv_page *pg = kv_pool_page_of(in);
    const uint8_t *parent = pg ? pg->parent_hash : kvd_tier_parent(in);
    return kv_hash_eq(parent, prev);
}

/* The index node of chain element i if it continues the chain, else NULL. */
static struct kv_inode *chain_node(struct kvd *d, struct kv_client *c, const struct kvp_msg *m,
                                   uint32_t i)
{
    struct kv_inode *in = kv_pool_find(&d->pool, c->ns->id, m->elems + (size_t)i * 16);
    if (in && i > 0 && !follows(in, m->elems + (size_t)(i - 1) * 16))
        return NULL;
    return in;
}

/* Pins one client may hold at once: keeps every lease count and page refcount far from wrapping. */
#define KVD_MAX_LEASES (1u << 20)
#define KVD_MAX_REFS   (1u << 30)

/* One pass over a LOOKUP's chain: the leading committed pages go to d->walk[0..hit); the walk
 * stops at element stop_i, whose index node is stop (NULL: absent or not linked to the chain, or
 * the end). Valid until the pool next changes. */
struct chain_walk {
    uint32_t hit;
    uint32_t stop_i;
    struct kv_inode *stop;
    int stale; /* restores were started: the pool changed, walk again before using d->walk */
};

static void walk_chain(struct kvd *d, struct kv_client *c, const struct kvp_msg *m,
                       struct chain_walk *w)
{
    int pin = m->u.lookup.flags & KVP_LOOKUP_PIN;
    uint32_t i = 0;

    w->stop = NULL;
    w->stale = 0;
    for (const uint8_t *h = m->elems; i < m->hdr.count; i++, h += KVP_HASH_BYTES) {
        struct kv_inode *in = kv_pool_find(&d->pool, c->ns->id, h);
        struct kv_page *pg = kv_pool_page_of(in);
        /* the common case inline: a committed page that follows the previous element (what
         * chain_node checks, for a page) */
        if (!pg || (i > 0 && !kv_hash_eq(pg->parent_hash, h - KVP_HASH_BYTES)) ||
            pg->state != KV_PAGE_COMMITTED || (pin && pg->refs >= KVD_MAX_REFS)) {
            w->stop = in && i > 0 && !follows(in, h - KVP_HASH_BYTES) ? NULL : in;
            break;
        }
        d->walk[i] = pg;
    }
    w->hit = i;
    w->stop_i = i;
}

enum { NOT_BLOCKED = 0, BLOCKED_PENDING = 1, BLOCKED_RESTORE = 2 };

/* Where does the walked chain stop? BLOCKED_PENDING: at a page another client is writing;
 * BLOCKED_RESTORE: at spilled pages kvd is restoring (restores of the whole run of spilled pages
 * from there are started here; their allocations may evict unpinned pages, which is why nothing
 * is pinned before the chain is settled, and why the walk is then stale). */
static int lookup_blocked(struct kvd *d, struct kv_client *c, const struct kvp_msg *m,
                          struct chain_walk *w)
{
    int started = 0, restoring = 0;
    if (!w->stop)
        return NOT_BLOCKED;
    if (w->stop->kind == KV_INODE_PAGE)
        return kv_pool_page_of(w->stop)->state == KV_PAGE_WRITING ? BLOCKED_PENDING : NOT_BLOCKED;
    for (uint32_t i = w->stop_i; i < m->hdr.count; i++) {
        struct kv_inode *in = i == w->stop_i ? w->stop : chain_node(d, c, m, i);
        if (!in || in->kind != KV_INODE_SPILLED || !kvd_tier_blocked(d, c->ns, in, &started))
            break;
        restoring = 1;
    }
    if (started)
        w->stale = 1;
    return restoring ? BLOCKED_RESTORE : NOT_BLOCKED;
}

/* Should a lookup parked since `since` (with its own deadline `deadline`) keep waiting at `now`?
 * Returns why (BLOCKED_*), or NOT_BLOCKED.
 * Pages on disk are restored before the reply (up to KVD_RESTORE_WAIT_MS); pending pages are
 * waited for only when the caller asked, up to its wait_ms. */
static int must_wait(struct kvd *d, struct kv_client *c, const struct kvp_msg *m,
                     struct chain_walk *w, uint64_t since, uint64_t deadline, uint64_t now)
{
    int b = lookup_blocked(d, c, m, w);
    if (b == BLOCKED_RESTORE)
        return now < since + KVD_RESTORE_WAIT_MS ? b : NOT_BLOCKED;
    return b == BLOCKED_PENDING && (m->u.lookup.flags & KVP_LOOKUP_WAIT) && now < deadline
               ? b
               : NOT_BLOCKED;
}

/* Answer a lookup from its walk. `parked`: it waited, and was counted when it was parked. */
static void lookup_reply(struct req *r, struct chain_walk *w, int parked)
{
    struct kvd *d = r->d;
    struct kv_client *c = r->c;
    int pin = r->m.u.lookup.flags & KVP_LOOKUP_PIN;
    uint8_t *pages = body_out(d) + sizeof(struct kvp_lookup_rep);

    if (w->stale)
        walk_chain(d, c, &r->m, w);
    uint32_t hit = w->hit, next = KVP_NEXT_END;
    if (w->stop_i < r->m.hdr.count) {
        struct kv_page *pg = kv_pool_page_of(w->stop);
        next = pg && pg->state == KV_PAGE_WRITING ? KVP_NEXT_PENDING : KVP_NEXT_MISS;
    }
    if (pin && hit) {
        if (c->leases.total + hit > KVD_MAX_LEASES) {
            reply_status(r, KVP_E_TOOBIG);
            return;
        }
        if (kv_leases_reserve(&c->leases, hit) != 0) {
            reply_status(r, KVP_E_NOMEM);
            return;
        }
    }
    for (uint32_t i = 0; i < hit; i++) {
        struct kv_page *pg = d->walk[i];
        if (pin) {
            kv_pool_ref(&d->pool, pg);
            kv_leases_add(&c->leases, pg->id);
        }
        kv_pool_touch(&d->pool, pg);
        put_page(pages + (size_t)i * sizeof(struct kvp_page), &d->pool, pg, 0);
    }
    if (!parked) {
        d->st.lookups++;
        d->st.lookup_pending += next == KVP_NEXT_PENDING;
    }
    d->st.lookup_hits += hit > 0;
    d->st.lookup_pages_hit += hit;
    d->st.bytes_saved += (uint64_t)hit * c->ns->page_bytes;
    struct kvp_lookup_rep rep = {.n_hit = hit, .next = next};
    memcpy(body_out(d), &rep, sizeof(rep));
    reply_body(r, hit, sizeof(rep) + (size_t)hit * sizeof(struct kvp_page));
}

static void op_lookup(struct req *r, const uint8_t *frame, size_t len)
{
    struct kvd *d = r->d;
    const struct kvp_lookup *l = &r->m.u.lookup;
    uint64_t now = r->now_ms, deadline = now + l->wait_ms;
    struct chain_walk w;

    walk_chain(d, r->c, &r->m, &w);
    int why = must_wait(d, r->c, &r->m, &w, now, deadline, now);
    if (why != NOT_BLOCKED && d->nwaiters < d->cfg.max_waiters) {
        struct kv_waiter *wt = &d->waiters[d->nwaiters];
        wt->frame = kv_malloc(len);
        if (wt->frame) { /* without memory, answer now: the caller sees a miss or PENDING */
            memcpy(wt->frame, frame, len);
            wt->frame_len = len;
            wt->client_id = r->c->id;
            wt->slot = (uint32_t)(r->c - d->clients);
            wt->since_ms = now;
            wt->deadline_ms = deadline;
            wt->next_check_ms = kv_waiter_next(wt, now);
            d->nwaiters++;
            d->st.lookups++;
            d->st.lookup_pending += why == BLOCKED_PENDING; /* met a page being written */
            return;
        }
    }
    lookup_reply(r, &w, 0);
}

void kvd_eval_waiters(struct kvd *d, uint64_t now)
{
    int changed = d->pool_gen != d->waiters_gen;
    d->waiters_gen = d->pool_gen;
    for (uint32_t i = 0; i < d->nwaiters;) {
        struct kv_waiter *w = &d->waiters[i];
        struct kv_client *c = &d->clients[w->slot];
        struct req r = {.d = d, .c = c, .rid = c->rid, .rid_len = c->rid_len, .now_ms = now};

        if ((!changed && now < w->next_check_ms) ||
            kvp_decode_request(w->frame, w->frame_len, KVP_MAX_FRAME, &r.m) != KVP_OK) {
            i++;
            continue;
        }
        struct chain_walk cw;
        walk_chain(d, c, &r.m, &cw);
        if (must_wait(d, c, &r.m, &cw, w->since_ms, w->deadline_ms, now)) {
            w->next_check_ms = kv_waiter_next(w, now);
            i++;
            continue;
        }
        lookup_reply(&r, &cw, 1);
        kv_free(w->frame);
        d->waiters[i] = d->waiters[--d->nwaiters];
    }
}

/* ---- ALLOC ----------------------------------------------------------------------------------- */

static void op_alloc(struct req *r)
{
    struct kvd *d = r->d;
    struct kv_client *c = r->c;
    uint32_t n = r->m.hdr.count;
    struct kv_page **pages;
    int rc;

    if (n == 0) {
        reply_status(r, KVP_E_INVAL);
        return;
    }
    if (c->leases.total + n > KVD_MAX_LEASES) {
        reply_status(r, KVP_E_TOOBIG);
        return;
    }
    pages = kv_calloc(n, sizeof(*pages));
    if (!pages) {
        reply_status(r, KVP_E_NOMEM);
        return;
    }
    rc = kv_leases_reserve(&c->leases, n);
    if (rc == 0)
        rc = kv_pool_alloc(&d->pool, c->ns, c->id, n, pages);
    if (rc) {
        kv_free(pages);
        reply_status(r, kvp_status_from_errno(rc));
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        int flags = 0;
        kv_leases_add(&c->leases, pages[i]->id);
        if ((r->m.u.alloc.flags & KVP_ALLOC_HASHES) &&
            kv_pool_set_pending(&d->pool, pages[i], r->m.elems + (size_t)i * 16) == -EEXIST)
            flags = KVP_PAGE_BUSY; /* someone else writes or wrote it: tell the caller to wait */
        put_page(body_out(d) + (size_t)i * sizeof(struct kvp_page), &d->pool, pages[i], flags);
    }
    kv_free(pages);
    d->st.allocs += n;
    reply_body(r, n, (size_t)n * sizeof(struct kvp_page));
}

/* ---- COMMIT ---------------------------------------------------------------------------------- */

static void op_commit(struct req *r)
{
    struct kvd *d = r->d;
    struct kv_client *c = r->c;
    uint32_t n = r->m.hdr.count;

    /* validate everything first: on a client error nothing is committed */
    for (uint32_t i = 0; i < n; i++) {
        struct kvp_commit e;
        memcpy(&e, r->m.elems + (size_t)i * sizeof(e), sizeof(e));
        struct kv_page *pg = kv_pool_page_by_id(&d->pool, e.page_id);
        if (!pg || kv_leases_get(&c->leases, e.page_id) == 0 || pg->state != KV_PAGE_WRITING ||
            pg->writer != c->id) {
            reply_status(r,
                         pg && kv_leases_get(&c->leases, e.page_id) ? KVP_E_STATE : KVP_E_NOT_HELD);
            return;
        }
        if (pg->chunk->ns != c->ns || e.ntok == 0 || e.ntok > c->ns->layout.page_tokens ||
            memcmp(e.hash, e.parent, 16) == 0) {
            reply_status(r, KVP_E_INVAL);
            return;
        }
        for (uint32_t j = 0; j < i; j++) { /* the same page twice in one batch */
            uint32_t other;
            memcpy(&other, r->m.elems + (size_t)j * sizeof(e), sizeof(other));
            if (other == e.page_id) {
                reply_status(r, KVP_E_INVAL);
                return;
            }
        }
    }
    if (kv_leases_reserve(&c->leases, n) != 0) {
        reply_status(r, KVP_E_NOMEM);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct kvp_commit e;
        struct kv_page *winner;
        memcpy(&e, r->m.elems + (size_t)i * sizeof(e), sizeof(e));
        struct kv_page *pg = kv_pool_page_by_id(&d->pool, e.page_id);
        kv_pool_commit(&d->pool, pg, e.hash, e.parent, e.ntok, &winner); /* validated above */
        int flags = 0;
        if (winner != pg) { /* dedup: our write lease went with the freed page */
            kv_leases_drop(&c->leases, e.page_id);
            kv_leases_add(&c->leases, winner->id);
            d->st.commit_dedups++;
            flags = KVP_PAGE_DEDUP;
        }
        put_page(body_out(d) + (size_t)i * sizeof(struct kvp_page), &d->pool, winner, flags);
    }
    d->st.commits += n;
    d->pool_gen++;
    reply_body(r, n, (size_t)n * sizeof(struct kvp_page));
}

/* ---- RELEASE --------------------------------------------------------------------------------- */

static void op_release(struct req *r)
{
    struct kvd *d = r->d;
    struct kv_client *c = r->c;
    uint32_t n = r->m.hdr.count, ok = 0;
    int pending_freed = 0;

    /* tentatively drop every lease (one probe each: dropping fails if none is held); undo all
     * if one is not held (duplicates count) */
    for (; ok < n; ok++) {
        uint32_t id;
        memcpy(&id, r->m.elems + (size_t)ok * 4, 4);
        if (kv_leases_drop(&c->leases, id) != 0)
            break;
    }
    if (ok < n) {
        kv_leases_reserve(&c->leases, ok); /* re-adding keys we just removed needs no growth */
        for (uint32_t i = 0; i < ok; i++) {
            uint32_t id;
            memcpy(&id, r->m.elems + (size_t)i * 4, 4);
            kv_leases_add(&c->leases, id);
        }
        reply_status(r, KVP_E_NOT_HELD);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id;
        memcpy(&id, r->m.elems + (size_t)i * 4, 4);
        struct kv_page *pg = kv_pool_page_by_held_id(&d->pool, id); /* its lease was held */
        pending_freed |= pg->state == KV_PAGE_WRITING && pg->refs == 1;
        kv_pool_unref(&d->pool, pg);
    }
    if (pending_freed)
        d->pool_gen++;
    d->st.releases += n;
    kvp_put_hdr(d->reply, KVP_OP_RELEASE, KVP_OK, r->m.hdr.seq, n);
    kvd_send(d, r->rid, r->rid_len, d->reply, sizeof(struct kvp_hdr));
}

/* ---- SCORES ---------------------------------------------------------------------------------- */

static void op_scores(struct req *r)
{
    struct kvd *d = r->d;
    struct kv_client *c = r->c;
    struct kvp_score_ent e;
    const uint8_t *mass;
    size_t pos = 0;
    uint32_t applied = 0;
    int rc;

    while ((rc = kvp_next_score(&r->m, &pos, &e, &mass)) == 1) {
        struct kv_page *pg = kv_pool_page_by_id(&d->pool, e.page_id);
        if (!pg || kv_leases_get(&c->leases, e.page_id) == 0) {
            reply_status(r, KVP_E_NOT_HELD);
            return;
        }
        if (e.ntok > c->ns->layout.page_tokens) {
            reply_status(r, KVP_E_INVAL);
            return;
        }
    }
    if (rc < 0) {
        reply_status(r, KVP_E_MALFORMED);
        return;
    }
    for (pos = 0; kvp_next_score(&r->m, &pos, &e, &mass) == 1; applied++) {
        struct kv_page *pg = kv_pool_page_by_id(&d->pool, e.page_id);
        if (kv_pool_add_scores(&d->pool, pg, (const float *)(const void *)mass, e.ntok) != 0) {
            reply_status(r, KVP_E_NOMEM); /* earlier entries stay applied; scores are hints */
            return;
        }
    }
    d->st.score_reports++;
    kvp_put_hdr(d->reply, KVP_OP_SCORES, KVP_OK, r->m.hdr.seq, applied);
    kvd_send(d, r->rid, r->rid_len, d->reply, sizeof(struct kvp_hdr));
}

/* ---- STATS, ADMIN -----------------------------------------------------------------------------
 */

static void op_stats(struct req *r)
{
    struct kvd *d = r->d;
    kvd_stats_refresh(d);
    memcpy(body_out(d), &d->st, sizeof(d->st));
    reply_body(r, 0, sizeof(d->st));
}

/* ---- dispatch -------------------------------------------------------------------------------- */

static void dispatch(struct kvd *d, const uint8_t *rid, size_t rid_len, const char *user_id,
                     const uint8_t *frame, size_t len, uint64_t now_ms)
{
    struct req r; /* not zeroed as a whole: r.m is most of its ~300 bytes and
                   * kvp_decode_request clears it itself; its header is zeroed here so that an
                   * error reply never echoes stale bytes whatever the decoder leaves */
    int st;

    memset(&r.m.hdr, 0, sizeof(r.m.hdr));
    r.d = d;
    r.rid = rid;
    r.rid_len = rid_len;
    r.now_ms = now_ms;
    r.c = client_by_rid(d, rid, rid_len);
    st = kvp_decode_request(frame, len, r.c ? KVP_MAX_FRAME : KVP_MAX_FRAME_PRE, &r.m);
    if (st != KVP_OK) {
        kv_debug("client %u: bad frame (%zu bytes, op %u): %s", r.c ? r.c->id : 0, len, r.m.hdr.op,
                 kvp_status_str(st));
        reply_status(&r, st);
        return;
    }
    if (r.c) {
        /* the routing id alone is guessable: the connection's pid (from ZAP) must still be the
         * client's (compared as the text ZAP wrote: no parsing per request) */
        if (!user_id || strcmp(user_id, r.c->pid_text) != 0) {
            reply_status(&r, KVP_E_BAD_TOKEN);
            return;
        }
        r.c->last_seen_ms = now_ms;
        r.c->requests++;
    }
    if (r.m.hdr.op == KVP_OP_ATTACH) {
        op_attach(&r, user_id);
        return;
    }
    if (!r.c) {
        reply_status(&r, KVP_E_NOT_ATTACHED);
        return;
    }
    switch (r.m.hdr.op) {
    case KVP_OP_PING:
        reply_status(&r, KVP_OK);
        break;
    case KVP_OP_LOOKUP:
        op_lookup(&r, frame, len);
        break;
    case KVP_OP_ALLOC:
        op_alloc(&r);
        break;
    case KVP_OP_COMMIT:
        op_commit(&r);
        break;
    case KVP_OP_RELEASE:
        op_release(&r);
        break;
    case KVP_OP_SCORES:
        op_scores(&r);
        break;
    case KVP_OP_STATS:
        op_stats(&r);
        break;
    case KVP_OP_ADMIN:
        kvd_admin_request(d, r.c, &r.m, rid, rid_len);
        break;
    case KVP_OP_DETACH:
        reply_status(&r, KVP_OK);
        kvd_client_gone(d, r.c, KV_GONE_DETACH);
        break;
    default:
        reply_status(&r, KVP_E_OP);
        break;
    }
}

static const uint64_t lat_bounds_us[KVD_LAT_NBOUNDS] = {KVD_LAT_BOUNDS_US};

void kvd_handle_request(struct kvd *d, const uint8_t *rid, size_t rid_len, const char *user_id,
                        const uint8_t *frame, size_t len)
{
    /* one clock reading serves the histogram and the handler's notion of now */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dispatch(d, rid, rid_len, user_id, frame, len,
             (uint64_t)t0.tv_sec * 1000 + (uint64_t)t0.tv_nsec / 1000000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    uint64_t us =
        (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000 + (uint64_t)((t1.tv_nsec - t0.tv_nsec) / 1000);
    unsigned b = 0;
    while (b < KVD_LAT_NBOUNDS && us > lat_bounds_us[b])
        b++;
    d->lat_count[b]++;
    d->lat_sum_s += (double)us * 1e-6;
}
