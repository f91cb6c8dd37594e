/*
 * kvc_req.c - libkvclient requests: encode, send, receive, match replies to slots, complete.
 *
 * Every request, synchronous or not, takes a slot (kvc_int.h, invariant 2) and travels as one
 * ZeroMQ frame: kvp_hdr + body. Replies may arrive in any order (kvd holds a waiting LOOKUP while
 * it answers later requests); the echoed seq finds the slot. A reply is checked before any byte of
 * it reaches the caller: its op must be the request's, its counts must match what was asked, and
 * every page must lie inside the arena.
 *
 * Waiting polls two things at once: the DEALER socket and the side channel. The side channel
 * becoming readable with nothing to read (EOF) is how a dead kvd is seen; ZeroMQ alone would queue
 * requests for a peer that never comes back.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zmq.h>

#include "kvc_int.h"

_Static_assert(sizeof(struct kvc_page) == sizeof(struct kvp_page), "public page mirror");
_Static_assert(offsetof(struct kvc_page, offset) == offsetof(struct kvp_page, offset),
               "public page mirror");
_Static_assert(offsetof(struct kvc_page, flags) == offsetof(struct kvp_page, flags),
               "public page mirror");
_Static_assert(sizeof(struct kvc_stats) == sizeof(struct kvp_stats), "public stats mirror");
#define KVC_STATS_OFF(name)                                                                        \
    _Static_assert(offsetof(struct kvc_stats, name) == offsetof(struct kvp_stats, name),           \
                   "public stats mirror: " #name);
KVP_STATS_MAP(KVC_STATS_OFF)
#undef KVC_STATS_OFF
_Static_assert((int)KVC_OP_LOOKUP == (int)KVP_OP_LOOKUP && (int)KVC_OP_ALLOC == (int)KVP_OP_ALLOC &&
                   (int)KVC_OP_COMMIT == (int)KVP_OP_COMMIT &&
                   (int)KVC_OP_RELEASE == (int)KVP_OP_RELEASE &&
                   (int)KVC_OP_SCORES == (int)KVP_OP_SCORES &&
                   (int)KVC_OP_STATS == (int)KVP_OP_STATS && (int)KVC_OP_PING == (int)KVP_OP_PING,
               "public op ids");
_Static_assert(KVC_LOOKUP_PIN == KVP_LOOKUP_PIN && KVC_LOOKUP_WAIT == KVP_LOOKUP_WAIT &&
                   (int)KVC_NEXT_PENDING == (int)KVP_NEXT_PENDING &&
                   (int)KVC_NEXT_MISS == (int)KVP_NEXT_MISS,
               "public lookup flags");
_Static_assert(KVC_PAGE_DEDUP == KVP_PAGE_DEDUP && KVC_PAGE_DEMOTED == KVP_PAGE_DEMOTED &&
                   KVC_PAGE_BUSY == KVP_PAGE_BUSY,
               "public page flags");
_Static_assert((KVC_MAX_INFLIGHT & (KVC_MAX_INFLIGHT - 1)) == 0, "slot index is seq & mask");

#define HDR sizeof(struct kvp_hdr)

static uint32_t max_batch(const struct kvc *c)
{
    uint32_t m = c->rep.max_batch;

    return (m == 0 || m > KVP_MAX_BATCH) ? KVP_MAX_BATCH : m;
}

/* Frame length of r, or a negative errno for a request that must not be sent. */
static long req_len(const struct kvc *c, const struct kvc_req *r)
{
    size_t len = HDR;

    switch (r->op) {
    case KVP_OP_ATTACH:
        return (long)(HDR + sizeof(struct kvp_attach));
    case KVP_OP_DETACH:
    case KVP_OP_PING:
        return (long)HDR;
    case KVP_OP_STATS:
        return r->stats ? (long)HDR : -EINVAL;
    case KVP_OP_ADMIN:
        return (long)(HDR + sizeof(uint32_t) + c->adm_arg_len);
    case KVP_OP_LOOKUP:
        if (!r->hashes || !r->pages || r->count == 0 ||
            (r->flags & ~(KVC_LOOKUP_PIN | KVC_LOOKUP_WAIT)) || r->wait_ms > KVP_MAX_WAIT_MS)
            return -EINVAL;
        if (r->count > KVP_MAX_CHAIN)
            return -E2BIG;
        return (long)(HDR + sizeof(struct kvp_lookup) + (size_t)r->count * KVP_HASH_BYTES);
    case KVP_OP_ALLOC:
        if (!r->pages || r->count == 0 || r->flags)
            return -EINVAL;
        if (r->count > max_batch(c))
            return -E2BIG;
        return (long)(HDR + sizeof(struct kvp_alloc) +
                      (r->hashes ? (size_t)r->count * KVP_HASH_BYTES : 0));
    case KVP_OP_COMMIT:
        if (!r->commits || !r->pages || r->count == 0 || r->flags)
            return -EINVAL;
        if (r->count > max_batch(c))
            return -E2BIG;
        return (long)(HDR + (size_t)r->count * sizeof(struct kvp_commit));
    case KVP_OP_RELEASE:
        if ((!r->page_ids && !r->pages) || r->count == 0 || r->flags)
            return -EINVAL;
        if (r->count > max_batch(c))
            return -E2BIG;
        return (long)(HDR + (size_t)r->count * sizeof(uint32_t));
    case KVP_OP_SCORES:
        if (!r->scores || r->count == 0 || r->flags)
            return -EINVAL;
        if (r->count > KVP_MAX_SCORE_ENTS)
            return -E2BIG;
        for (uint32_t i = 0; i < r->count; i++) {
            const struct kvc_score *s = &r->scores[i];
            if (s->ntok == 0 || s->mass == NULL)
                return -EINVAL;
            if (s->ntok > KV_MAX_PAGE_TOKENS)
                return -E2BIG;
            len += sizeof(struct kvp_score_ent) + (size_t)s->ntok * sizeof(float);
        }
        return len <= KVP_MAX_FRAME ? (long)len : -E2BIG;
    default:
        return -EINVAL;
    }
}

static void req_encode(const struct kvc *c, const struct kvc_req *r, uint32_t seq, uint8_t *p)
{
    uint8_t *b = p + HDR;

    kvp_put_hdr(p, r->op, 0, seq, r->count);
    switch (r->op) {
    case KVP_OP_ATTACH: {
        struct kvp_attach a;
        memset(&a, 0, sizeof(a));
        memcpy(a.token, c->welcome.token, sizeof(a.token));
        memcpy(a.ns, c->ns, sizeof(a.ns));
        a.layout = c->layout;
        memcpy(b, &a, sizeof(a));
        kvp_put_hdr(p, r->op, 0, seq, 0);
        break;
    }
    case KVP_OP_LOOKUP: {
        struct kvp_lookup l = {.flags = r->flags, .wait_ms = r->wait_ms};
        memcpy(b, &l, sizeof(l));
        memcpy(b + sizeof(l), r->hashes, (size_t)r->count * KVP_HASH_BYTES);
        break;
    }
    case KVP_OP_ALLOC: {
        struct kvp_alloc a = {.flags = r->hashes ? KVP_ALLOC_HASHES : 0};
        memcpy(b, &a, sizeof(a));
        if (r->hashes)
            memcpy(b + sizeof(a), r->hashes, (size_t)r->count * KVP_HASH_BYTES);
        break;
    }
    case KVP_OP_COMMIT:
        for (uint32_t i = 0; i < r->count; i++, b += sizeof(struct kvp_commit)) {
            const struct kvc_commit *e = &r->commits[i];
            struct kvp_commit w = {.page_id = e->page_id, .ntok = e->ntok, .flags = e->flags};
            memcpy(w.hash, e->hash.b, KVP_HASH_BYTES);
            memcpy(w.parent, e->parent.b, KVP_HASH_BYTES);
            memcpy(b, &w, sizeof(w));
        }
        break;
    case KVP_OP_RELEASE:
        for (uint32_t i = 0; i < r->count; i++, b += sizeof(uint32_t)) {
            uint32_t id = r->page_ids ? r->page_ids[i] : r->pages[i].id;
            memcpy(b, &id, sizeof(id));
        }
        break;
    case KVP_OP_SCORES:
        for (uint32_t i = 0; i < r->count; i++) {
            const struct kvc_score *s = &r->scores[i];
            struct kvp_score_ent e = {.page_id = s->page_id, .ntok = s->ntok, .flags = s->flags};
            memcpy(b, &e, sizeof(e));
            b += sizeof(e);
            memcpy(b, s->mass, (size_t)s->ntok * sizeof(float));
            b += (size_t)s->ntok * sizeof(float);
        }
        break;
    case KVP_OP_ADMIN:
        kvp_put_hdr(p, r->op, 0, seq, 0);
        memcpy(b, &c->adm_sub, sizeof(uint32_t));
        if (c->adm_arg_len)
            memcpy(b + sizeof(uint32_t), c->adm_arg, c->adm_arg_len);
        break;
    default: /* header-only ops */
        break;
    }
}

/* A free slot and its seq; seqs whose slot is still busy (a long wait) are skipped. */
static struct kvc_slot *slot_get(struct kvc *c)
{
    for (uint32_t i = 0; i < KVC_MAX_INFLIGHT; i++) {
        uint32_t seq = c->next_seq++;
        struct kvc_slot *s = &c->slots[seq & (KVC_MAX_INFLIGHT - 1)];
        if (s->state == KVC_SLOT_FREE) {
            s->seq = seq;
            return s;
        }
    }
    return NULL;
}

static int frame_send(struct kvc *c, zmq_msg_t *m, int flags)
{
    for (;;) {
        if (zmq_msg_send(m, c->zsock, flags) >= 0)
            return 0;
        if (errno != EINTR)
            break;
    }
    zmq_msg_close(m);
    return errno == ETERM ? -ESHUTDOWN : -errno;
}

/* Encodes r into *m on a free slot, marked busy (a failed send sets it free again). */
static int req_prepare(struct kvc *c, struct kvc_req *r, int sync, zmq_msg_t *m,
                       struct kvc_slot **sp)
{
    struct kvc_slot *s;
    long len = req_len(c, r);

    if (len < 0)
        return (int)len;
    s = slot_get(c);
    if (s == NULL)
        return -EAGAIN;
    if (zmq_msg_init_size(m, (size_t)len) < 0)
        return -ENOMEM;
    req_encode(c, r, s->seq, zmq_msg_data(m));
    s->state = KVC_SLOT_BUSY;
    s->op = (uint8_t)r->op;
    s->sync = (uint8_t)sync;
    s->count = r->count;
    s->leases = r->op == KVP_OP_ALLOC || r->op == KVP_OP_COMMIT ||
                (r->op == KVP_OP_LOOKUP && (r->flags & KVC_LOOKUP_PIN));
    s->req = r;
    *sp = s;
    return 0;
}

/* The request on s was sent: it is in flight. */
static void slot_sent(struct kvc *c, struct kvc_slot *s, struct kvc_req *r)
{
    r->seq = s->seq;
    r->result = 0;
    r->n_out = r->next = 0;
    r->priv_next = NULL;
    c->n_busy++;
    if (s->sync)
        c->sync_done = 0;
}

int kvc_int_send(struct kvc *c, struct kvc_req *r, int sync)
{
    struct kvc_slot *s;
    zmq_msg_t m;
    int rc;

    if (c->forked)
        return -ECHILD;
    if (c->zsock == NULL)
        return -ENOTCONN;
    rc = req_prepare(c, r, sync, &m, &s);
    if (rc < 0)
        return rc;
    rc = frame_send(c, &m, 0);
    if (rc < 0) {
        s->state = KVC_SLOT_FREE;
        return rc;
    }
    slot_sent(c, s, r);
    return 0;
}

/* Release leases that no caller will ever see (a reply to an abandoned or rejected request). The
 * RELEASE is itself abandoned: its reply is consumed and dropped. Best effort. */
static void release_orphans(struct kvc *c, const uint8_t *pages, uint32_t n)
{
    struct kvc_slot *s;
    zmq_msg_t m;

    if (n == 0 || n > KVP_MAX_BATCH || (s = slot_get(c)) == NULL)
        return;
    if (zmq_msg_init_size(&m, HDR + (size_t)n * sizeof(uint32_t)) < 0)
        return;
    kvp_put_hdr(zmq_msg_data(&m), KVP_OP_RELEASE, 0, s->seq, n);
    for (uint32_t i = 0; i < n; i++)
        memcpy((uint8_t *)zmq_msg_data(&m) + HDR + i * sizeof(uint32_t),
               pages + i * sizeof(struct kvp_page) + offsetof(struct kvp_page, page_id),
               sizeof(uint32_t));
    if (frame_send(c, &m, 0) < 0)
        return;
    s->state = KVC_SLOT_ABANDONED;
    s->op = KVP_OP_RELEASE;
    s->req = NULL;
}

static void slot_finish(struct kvc *c, struct kvc_slot *s, int result)
{
    struct kvc_req *r = s->req;
    int sync = s->sync;

    memset(s, 0, sizeof(*s));
    if (r == NULL)
        return;
    c->n_busy--;
    r->result = result;
    if (sync) {
        c->sync_done = 1;
        return;
    }
    r->priv_next = NULL;
    if (c->done_tail)
        c->done_tail->priv_next = r;
    else
        c->done_head = r;
    c->done_tail = r;
    c->n_done++;
}

void kvc_int_fail_all(struct kvc *c, int err)
{
    for (uint32_t i = 0; i < KVC_MAX_INFLIGHT; i++)
        if (c->slots[i].state != KVC_SLOT_FREE)
            slot_finish(c, &c->slots[i], err);
    if (c->state == KVC_ST_ATTACHED)
        c->state = KVC_ST_DEAD;
}

static int pages_in_arena(const struct kvc *c, const uint8_t *elems, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        struct kvp_page p;
        memcpy(&p, elems + (size_t)i * sizeof(p), sizeof(p));
        if (p.offset > c->arena.bytes || c->rep.page_bytes > c->arena.bytes - p.offset)
            return 0;
    }
    return 1;
}

/* Fill the request from a decoded OK reply. Returns 0 or -EPROTO (reply does not fit). */
static int reply_fill(struct kvc *c, struct kvc_slot *s, const struct kvp_msg *m)
{
    struct kvc_req *r = s->req;
    uint32_t n;

    switch (s->op) {
    case KVP_OP_ATTACH:
        c->rep = m->u.attach_rep;
        return 0;
    case KVP_OP_LOOKUP:
        n = m->u.lookup_rep.n_hit;
        if (n > s->count || m->elems_len != (size_t)n * sizeof(struct kvp_page) ||
            m->u.lookup_rep.next > KVP_NEXT_PENDING)
            return -EPROTO;
        break;
    case KVP_OP_ALLOC:
    case KVP_OP_COMMIT:
        n = m->hdr.count;
        if (n != s->count || m->elems_len != (size_t)n * sizeof(struct kvp_page))
            return -EPROTO;
        break;
    case KVP_OP_RELEASE:
    case KVP_OP_SCORES:
        if (m->hdr.count > s->count)
            return -EPROTO;
        r->n_out = m->hdr.count;
        return 0;
    case KVP_OP_STATS:
        memcpy(r->stats, &m->u.stats, sizeof(*r->stats));
        return 0;
    case KVP_OP_ADMIN:
        c->adm_len = m->body_len;
        r->n_out = m->hdr.count;
        if (c->adm_out)
            memcpy(c->adm_out, m->body, m->body_len < c->adm_cap ? m->body_len : c->adm_cap);
        return m->body_len > c->adm_cap ? -EMSGSIZE : 0;
    default:
        return 0;
    }
    if (!pages_in_arena(c, m->elems, n))
        return -EPROTO;
    memcpy(r->pages, m->elems, (size_t)n * sizeof(struct kvp_page));
    r->n_out = n;
    if (s->op == KVP_OP_LOOKUP)
        r->next = m->u.lookup_rep.next;
    return 0;
}

static void frame_handle(struct kvc *c, const uint8_t *buf, size_t len)
{
    struct kvp_hdr h;
    struct kvp_msg m;
    struct kvc_slot *s;
    int st, result;

    if (len < HDR)
        return; /* cannot be matched to a request: dropped */
    memcpy(&h, buf, sizeof(h));
    s = &c->slots[h.seq & (KVC_MAX_INFLIGHT - 1)];
    if (h.magic != KVP_MAGIC || s->state == KVC_SLOT_FREE || s->seq != h.seq)
        return; /* stale (an old connection's) or foreign: dropped */
    memset(&m, 0, sizeof(m));
    st = kvp_decode_reply(buf, len, &m);
    if (st == KVP_OK && m.hdr.op != s->op)
        st = KVP_E_MALFORMED;
    if (s->state == KVC_SLOT_ABANDONED) {
        if (st == KVP_OK && s->leases)
            release_orphans(c, m.elems, (uint32_t)(m.elems_len / sizeof(struct kvp_page)));
        memset(s, 0, sizeof(*s));
        return;
    }
    result = st == KVP_OK ? 0 : kvp_status_errno(st);
    if (st == KVP_OK) {
        result = reply_fill(c, s, &m);
        if (result < 0 && s->leases)
            release_orphans(c, m.elems, (uint32_t)(m.elems_len / sizeof(struct kvp_page)));
    }
    slot_finish(c, s, result);
}

void kvc_int_handle_frame(struct kvc *c, const void *buf, size_t len)
{
    frame_handle(c, buf, len);
}

/* Process every frame ready now. Returns how many, or a negative errno. */
static int recv_ready(struct kvc *c)
{
    zmq_msg_t m;
    int n = 0;

    zmq_msg_init(&m);
    for (;;) {
        if (zmq_msg_recv(&m, c->zsock, ZMQ_DONTWAIT) < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            zmq_msg_close(&m);
            return errno == ETERM ? -ESHUTDOWN : -errno;
        }
        frame_handle(c, zmq_msg_data(&m), zmq_msg_size(&m));
        n++;
    }
    zmq_msg_close(&m);
    return n;
}

/* Has the side channel closed? Consumes (and ignores) any datagram kvd sent on it. */
static int side_closed(struct kvc *c)
{
    uint8_t b[256];
    ssize_t n;

    if (c->side_fd < 0)
        return 1;
    n = recv(c->side_fd, b, sizeof(b), MSG_DONTWAIT);
    if (n > 0)
        return 0;
    return n == 0 || (errno != EAGAIN && errno != EINTR);
}

/* Wait until at least one reply has been processed or the deadline (ms, UINT64_MAX: none)
 * passes. Returns frames processed (> 0), -ETIMEDOUT, -ESHUTDOWN (kvd went away: everything in
 * flight has been completed with -ESHUTDOWN), or another negative errno.
 *
 * One poll(2) per idle wait, on the DEALER's ZMQ_FD and the side channel. That is safe because
 * recv_ready() has just received until EAGAIN: its last receive processed the socket's command
 * mailbox, so ZMQ_FD (edge-like: it signals new commands, not readable messages) is re-armed and
 * the next arriving reply signals it. Nothing else touches the socket between that receive and
 * the poll. zmq_poll() would cost two more polls and two ZMQ_EVENTS checks per wait. */
static int pump(struct kvc *c, uint64_t deadline)
{
    for (;;) {
        struct pollfd it[2] = {{c->zfd, POLLIN, 0}, {c->side_fd, POLLIN, 0}};
        uint64_t now;
        int wait;
        int rc = recv_ready(c);

        if (rc != 0)
            return rc;
        if (deadline == UINT64_MAX) {
            wait = -1;
        } else {
            now = kvc_int_now_ms();
            if (now >= deadline)
                return -ETIMEDOUT;
            wait = deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
        }
        rc = poll(it, c->side_fd >= 0 ? 2 : 1, wait);
        if (rc < 0 && errno != EINTR)
            return -errno;
        if (rc > 0 && it[1].revents && side_closed(c)) {
            recv_ready(c); /* replies that made it before kvd died */
            kvc_int_fail_all(c, -ESHUTDOWN);
            return -ESHUTDOWN;
        }
    }
}

static uint64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? UINT64_MAX : kvc_int_now_ms() + (uint64_t)timeout_ms;
}

int kvc_int_wait(struct kvc *c, struct kvc_req *r, int timeout_ms)
{
    uint64_t deadline = deadline_of(timeout_ms);

    while (!c->sync_done) {
        int rc = pump(c, deadline);
        if (rc < 0 && !c->sync_done) {
            struct kvc_slot *s = &c->slots[r->seq & (KVC_MAX_INFLIGHT - 1)];
            if (s->state == KVC_SLOT_BUSY && s->req == r) {
                s->state = KVC_SLOT_ABANDONED; /* its late reply is consumed, leases released */
                s->req = NULL;
                c->n_busy--;
            }
            return rc;
        }
    }
    return 0;
}

/* ---- public --------------------------------------------------------------------------------- */

static int call(struct kvc *c, struct kvc_req *r, uint32_t extra_ms)
{
    int rc = c ? kvc_int_usable(c) : -EINVAL;

    if (rc == 0)
        rc = kvc_int_send(c, r, 1);
    if (rc == 0)
        rc = kvc_int_wait(c, r, c->timeout_ms + (int)extra_ms);
    return rc < 0 ? rc : r->result;
}

KVC_API int kvc_lookup(struct kvc *c, const struct kvc_hash *chain, uint32_t n, unsigned flags,
                       uint32_t wait_ms, struct kvc_page *pages, uint32_t *n_hit, uint32_t *next)
{
    struct kvc_req r = {.op = KVP_OP_LOOKUP,
                        .flags = flags,
                        .wait_ms = wait_ms,
                        .count = n,
                        .hashes = chain,
                        .pages = pages};
    int rc;

    if (n_hit == NULL || next == NULL)
        return -EINVAL;
    if (n == 0) {
        *n_hit = 0;
        *next = KVC_NEXT_END;
        return c ? kvc_int_usable(c) : -EINVAL;
    }
    rc = call(c, &r, (flags & KVC_LOOKUP_WAIT) ? wait_ms : 0);
    if (rc == 0) {
        *n_hit = r.n_out;
        *next = r.next;
    }
    return rc;
}

KVC_API int kvc_alloc(struct kvc *c, uint32_t n, const struct kvc_hash *hashes,
                      struct kvc_page *pages)
{
    struct kvc_req r = {.op = KVP_OP_ALLOC, .count = n, .hashes = hashes, .pages = pages};

    return call(c, &r, 0);
}

KVC_API int kvc_commit(struct kvc *c, const struct kvc_commit *ents, uint32_t n,
                       struct kvc_page *pages)
{
    struct kvc_req r = {.op = KVP_OP_COMMIT, .count = n, .commits = ents, .pages = pages};

    return call(c, &r, 0);
}

KVC_API int kvc_release(struct kvc *c, const uint32_t *page_ids, uint32_t n)
{
    struct kvc_req r = {.op = KVP_OP_RELEASE, .count = n, .page_ids = page_ids};

    if (n == 0)
        return c ? kvc_int_usable(c) : -EINVAL;
    if (page_ids == NULL)
        return -EINVAL;
    return call(c, &r, 0);
}

KVC_API int kvc_release_pages(struct kvc *c, const struct kvc_page *pages, uint32_t n)
{
    /* pages is only read for RELEASE: the cast does not lead to a write */
    struct kvc_req r = {.op = KVP_OP_RELEASE, .count = n, .pages = (struct kvc_page *)pages};

    if (n == 0)
        return c ? kvc_int_usable(c) : -EINVAL;
    return call(c, &r, 0);
}

KVC_API int kvc_scores(struct kvc *c, const struct kvc_score *ents, uint32_t n)
{
    struct kvc_req r = {.op = KVP_OP_SCORES, .count = n, .scores = ents};

    return call(c, &r, 0);
}

KVC_API int kvc_stats(struct kvc *c, struct kvc_stats *out)
{
    struct kvc_req r = {.op = KVP_OP_STATS, .stats = out};

    return call(c, &r, 0);
}

KVC_API int kvc_ping(struct kvc *c)
{
    struct kvc_req r = {.op = KVP_OP_PING};

    return call(c, &r, 0);
}

KVC_API int kvc_admin(struct kvc *c, uint32_t sub, const void *arg, size_t arg_len, void *out,
                      size_t cap, size_t *out_len, uint32_t *count)
{
    struct kvc_req r = {.op = KVP_OP_ADMIN};
    int rc;

    if (c == NULL || (arg == NULL && arg_len) || (out == NULL && cap))
        return -EINVAL;
    if (arg_len > KVP_ADMIN_MAX_ARG)
        return -E2BIG;
    c->adm_sub = sub;
    c->adm_arg = arg;
    c->adm_arg_len = arg_len;
    c->adm_out = out;
    c->adm_cap = cap;
    c->adm_len = 0;
    rc = call(c, &r, 0);
    c->adm_arg = c->adm_out = NULL; /* a late reply to an abandoned call must not write */
    c->adm_cap = 0;
    if (rc == 0 || rc == -EMSGSIZE) {
        if (out_len)
            *out_len = c->adm_len;
        if (count)
            *count = r.n_out;
    }
    return rc;
}

/* Ops a caller may submit (enum kvc_op). */
static int user_op(int op)
{
    return op >= KVC_OP_PING && op <= KVC_OP_STATS;
}

KVC_API int kvc_submit(struct kvc *c, struct kvc_req *r)
{
    int rc;

    if (c == NULL || r == NULL)
        return -EINVAL;
    rc = kvc_int_usable(c);
    if (rc < 0)
        return rc;
    return user_op(r->op) ? kvc_int_send(c, r, 0) : -EINVAL;
}

_Static_assert(KVC_MAX_SUBMITV == KVP_MAX_PARTS, "one kvc_submitv is one message of kvd's limit");

KVC_API int kvc_submitv(struct kvc *c, struct kvc_req *const *reqs, unsigned n)
{
    zmq_msg_t m[KVP_MAX_PARTS];
    struct kvc_slot *s[KVP_MAX_PARTS];
    unsigned k = 0, i;
    int rc = 0;

    if (c == NULL || (reqs == NULL && n) || n > KVP_MAX_PARTS)
        return -EINVAL;
    if (n == 0)
        return 0;
    rc = kvc_int_usable(c);
    if (rc < 0)
        return rc;
    if (c->forked)
        return -ECHILD;
    if (c->zsock == NULL)
        return -ENOTCONN;
    if (!(c->welcome.features & KVP_FEAT_MULTIPART)) { /* an older kvd: one message each */
        for (; k < n; k++) {
            struct kvc_req *r = reqs[k];
            rc = r == NULL || !user_op(r->op) ? -EINVAL : kvc_int_send(c, r, 0);
            if (rc < 0)
                break;
        }
        return k ? (int)k : rc;
    }
    for (; k < n; k++) { /* encode a prefix: the first request that cannot go ends it */
        struct kvc_req *r = reqs[k];
        if (r == NULL || !user_op(r->op)) {
            rc = -EINVAL;
            break;
        }
        rc = req_prepare(c, r, 0, &m[k], &s[k]);
        if (rc < 0)
            break;
    }
    if (k == 0)
        return rc;
    /* One message, the requests its parts; ZeroMQ delivers all of them or none. With no send
     * high-water mark (zmq_open_dealer sets ZMQ_SNDHWM 0) and a blocking send, only ETERM can
     * fail a part after the first; should a send timeout or a limit ever be set, a failure
     * there would leave a message half built in the socket for the next send to complete. */
    for (i = 0; i < k; i++) {
        rc = frame_send(c, &m[i], i + 1 < k ? ZMQ_SNDMORE : 0); /* closes m[i] on error */
        if (rc < 0)
            break;
    }
    if (i < k) { /* not sent: nothing is in flight */
        for (unsigned j = i + 1; j < k; j++)
            zmq_msg_close(&m[j]);
        for (unsigned j = 0; j < k; j++)
            s[j]->state = KVC_SLOT_FREE;
        return rc;
    }
    for (i = 0; i < k; i++)
        slot_sent(c, s[i], reqs[i]);
    return (int)k;
}

KVC_API int kvc_complete(struct kvc *c, int timeout_ms, struct kvc_req **done)
{
    uint64_t deadline;
    int rc;

    if (c == NULL || done == NULL)
        return -EINVAL;
    if (c->forked)
        return -ECHILD;
    deadline = deadline_of(timeout_ms);
    for (;;) {
        if (c->done_head != NULL) {
            struct kvc_req *r = c->done_head;
            c->done_head = r->priv_next;
            if (c->done_head == NULL)
                c->done_tail = NULL;
            c->n_done--;
            r->priv_next = NULL;
            *done = r;
            return 0;
        }
        rc = kvc_int_usable(c);
        if (rc < 0)
            return rc;
        if (c->n_busy == 0)
            return -ENOENT;
        rc = pump(c, deadline);
        if (rc < 0 && c->done_head == NULL)
            return rc;
    }
}

KVC_API uint32_t kvc_inflight(const struct kvc *c)
{
    return c ? c->n_busy + c->n_done : 0;
}
