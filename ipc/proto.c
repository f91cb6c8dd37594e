/*
 * proto.c - codec for the kvd wire protocol (proto.h): status table, header writer, decoders.
 *
 * Invariants:
 *  1. No decoder reads a byte before it has checked that the byte lies inside the frame, and every
 *     count is checked against a named limit (KVP_MAX_*, KV_MAX_PAGE_TOKENS) before it is used in
 *     arithmetic, so `count * elem + fixed` cannot overflow (all limits are far below SIZE_MAX).
 *  2. A request either decodes to KVP_OK with every element array exactly covering the body, or
 *     fails with a client status code ("client error: ..."). Once the header is readable,
 *     msg->hdr holds it (so an error reply can echo op and seq).
 *  3. The decoders never allocate, never print and never write outside *msg / *out.
 *  4. Wire structs are read with memcpy: frames from ZeroMQ carry no alignment promise.
 *
 * Check order for requests: length >= header, header copied out, frame length vs max_len, magic,
 * version, status field, op, then the op's body (fixed part, counts vs limits, exact size, field
 * values). The order is part of the contract: tests pin which status each malformed frame gets.
 */
#include <errno.h>
#include <string.h>

#include "proto.h"

/* ADMIN request body: uint32 sub-command, then at most KVP_ADMIN_MAX_ARG argument bytes. The
 * sub-commands belong to the operations work (kvd/admin.c, tools/kvctl). */
#ifndef KVP_ADMIN_MAX_ARG
#define KVP_ADMIN_MAX_ARG 256u
#endif

#define KVP_LOOKUP_KNOWN (KVP_LOOKUP_PIN | KVP_LOOKUP_WAIT)
#define KVP_ALLOC_KNOWN  KVP_ALLOC_HASHES

/* ---- status table ---------------------------------------------------------------------------- */

const char *kvp_status_str(int status)
{
    switch (status) {
#define KVP_ST_STR(name, val, err, str)                                                            \
    case val:                                                                                      \
        return str;
        KVP_STATUS_MAP(KVP_ST_STR)
#undef KVP_ST_STR
    default:
        return "unknown status";
    }
}

int kvp_status_errno(int status)
{
    switch (status) {
#define KVP_ST_ERR(name, val, err, str)                                                            \
    case val:                                                                                      \
        return -(err);
        KVP_STATUS_MAP(KVP_ST_ERR)
#undef KVP_ST_ERR
    default:
        return -EPROTO;
    }
}

int kvp_status_from_errno(int neg_errno)
{
    /* Several codes share an errno (EINVAL: E_LAYOUT, E_STATE, E_INVAL); the last entry in the
     * table wins, which makes a plain -EINVAL the generic E_INVAL. Unknown errnos are kvd's fault.
     */
    static const struct {
        int err;
        int status;
    } tab[] = {
#define KVP_ST_TAB(name, val, err, str) {err, val},
        KVP_STATUS_MAP(KVP_ST_TAB)
#undef KVP_ST_TAB
    };
    int e = neg_errno < 0 ? -neg_errno : neg_errno;
    int found = KVP_E_INTERNAL;

    if (e == 0)
        return KVP_OK;
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
        if (tab[i].err == e)
            found = tab[i].status;
    return found;
}

const char *kvp_op_name(int op)
{
    switch (op) {
#define KVP_OP_STR(name, val)                                                                      \
    case val:                                                                                      \
        return #name;
        KVP_OP_MAP(KVP_OP_STR)
#undef KVP_OP_STR
    default:
        return "UNKNOWN";
    }
}

void kvp_put_hdr(void *buf, int op, int status, uint32_t seq, uint32_t count)
{
    struct kvp_hdr h = {
        .magic = KVP_MAGIC,
        .version = KVP_VERSION,
        .op = (uint8_t)op,
        .status = (uint16_t)status,
        .seq = seq,
        .count = count,
    };
    memcpy(buf, &h, sizeof(h));
}

/* ---- shared helpers -------------------------------------------------------------------------- */

/* body_len must be exactly fixed + count * elem. count was already checked against a limit
 * <= 2^16 and elem <= 64, so the product cannot overflow; the explicit check keeps that true if a
 * limit is ever raised. */
static int proto_exact(size_t body_len, size_t fixed, uint32_t count, size_t elem)
{
    if (elem != 0 && (size_t)count > (SIZE_MAX - fixed) / elem)
        return KVP_E_TOOBIG;
    return body_len == fixed + (size_t)count * elem ? KVP_OK : KVP_E_MALFORMED;
}

static void proto_set_elems(struct kvp_msg *msg, size_t fixed)
{
    msg->elems = msg->body + fixed;
    msg->elems_len = msg->body_len - fixed;
}

/* Namespace names: 1..KVP_MAX_NS_NAME-1 bytes of [A-Za-z0-9._:-], NUL-terminated and NUL-padded. */
static int proto_ns_ok(const char *ns)
{
    size_t n = 0;

    while (n < KVP_MAX_NS_NAME && ns[n] != '\0') {
        char c = ns[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
        n++;
    }
    if (n == 0 || n == KVP_MAX_NS_NAME)
        return 0;
    for (size_t i = n; i < KVP_MAX_NS_NAME; i++)
        if (ns[i] != '\0')
            return 0;
    return 1;
}

/* Walks `count` score entries covering exactly [p, p + len). Returns KVP_OK or a client status. */
static int proto_check_scores(const uint8_t *p, size_t len, uint32_t count)
{
    size_t pos = 0;

    for (uint32_t i = 0; i < count; i++) {
        struct kvp_score_ent ent;

        if (len - pos < sizeof(ent))
            return KVP_E_MALFORMED;
        memcpy(&ent, p + pos, sizeof(ent));
        pos += sizeof(ent);
        if (ent.ntok > KV_MAX_PAGE_TOKENS)
            return KVP_E_TOOBIG;
        if (len - pos < (size_t)ent.ntok * sizeof(float))
            return KVP_E_MALFORMED;
        pos += (size_t)ent.ntok * sizeof(float);
    }
    return pos == len ? KVP_OK : KVP_E_MALFORMED;
}

/* Header checks shared by requests and replies. Fills msg->hdr/body; returns a status. */
static int proto_hdr(const void *buf, size_t len, struct kvp_msg *msg)
{
    memset(msg, 0, sizeof(*msg));
    if (buf == NULL || len < sizeof(struct kvp_hdr))
        return KVP_E_MALFORMED;
    memcpy(&msg->hdr, buf, sizeof(msg->hdr));
    msg->body = (const uint8_t *)buf + sizeof(struct kvp_hdr);
    msg->body_len = len - sizeof(struct kvp_hdr);
    return KVP_OK;
}

/* ---- requests -------------------------------------------------------------------------------- */

static int proto_req_attach(struct kvp_msg *m)
{
    if (m->hdr.count != 0 || m->body_len != sizeof(struct kvp_attach))
        return KVP_E_MALFORMED;
    memcpy(&m->u.attach, m->body, sizeof(m->u.attach));
    if (!proto_ns_ok(m->u.attach.ns))
        return KVP_E_INVAL;
    if (kv_layout_check(&m->u.attach.layout) != 0)
        return KVP_E_LAYOUT;
    return KVP_OK;
}

static int proto_req_lookup(struct kvp_msg *m)
{
    int st;

    if (m->hdr.count > KVP_MAX_CHAIN)
        return KVP_E_TOOBIG;
    if (m->body_len < sizeof(struct kvp_lookup))
        return KVP_E_MALFORMED;
    st = proto_exact(m->body_len, sizeof(struct kvp_lookup), m->hdr.count, KVP_HASH_BYTES);
    if (st != KVP_OK)
        return st;
    memcpy(&m->u.lookup, m->body, sizeof(m->u.lookup));
    if (m->u.lookup.flags & ~KVP_LOOKUP_KNOWN)
        return KVP_E_INVAL;
    if (m->u.lookup.wait_ms > KVP_MAX_WAIT_MS)
        return KVP_E_INVAL;
    proto_set_elems(m, sizeof(struct kvp_lookup));
    return KVP_OK;
}

static int proto_req_alloc(struct kvp_msg *m)
{
    size_t elem;
    int st;

    if (m->hdr.count > KVP_MAX_BATCH)
        return KVP_E_TOOBIG;
    if (m->body_len < sizeof(struct kvp_alloc))
        return KVP_E_MALFORMED;
    memcpy(&m->u.alloc, m->body, sizeof(m->u.alloc));
    if (m->u.alloc.flags & ~KVP_ALLOC_KNOWN)
        return KVP_E_INVAL;
    elem = (m->u.alloc.flags & KVP_ALLOC_HASHES) ? KVP_HASH_BYTES : 0;
    st = proto_exact(m->body_len, sizeof(struct kvp_alloc), m->hdr.count, elem);
    if (st != KVP_OK)
        return st;
    proto_set_elems(m, sizeof(struct kvp_alloc));
    return KVP_OK;
}

static int proto_req_commit(struct kvp_msg *m)
{
    int st;

    if (m->hdr.count > KVP_MAX_BATCH)
        return KVP_E_TOOBIG;
    st = proto_exact(m->body_len, 0, m->hdr.count, sizeof(struct kvp_commit));
    if (st != KVP_OK)
        return st;
    for (uint32_t i = 0; i < m->hdr.count; i++) {
        struct kvp_commit c;

        memcpy(&c, m->body + (size_t)i * sizeof(c), sizeof(c));
        if (c.ntok == 0 || c.ntok > KV_MAX_PAGE_TOKENS)
            return KVP_E_INVAL;
    }
    proto_set_elems(m, 0);
    return KVP_OK;
}

static int proto_req_release(struct kvp_msg *m)
{
    int st;

    if (m->hdr.count > KVP_MAX_BATCH)
        return KVP_E_TOOBIG;
    st = proto_exact(m->body_len, 0, m->hdr.count, sizeof(uint32_t));
    if (st != KVP_OK)
        return st;
    proto_set_elems(m, 0);
    return KVP_OK;
}

static int proto_req_scores(struct kvp_msg *m)
{
    int st;

    if (m->hdr.count > KVP_MAX_SCORE_ENTS)
        return KVP_E_TOOBIG;
    st = proto_check_scores(m->body, m->body_len, m->hdr.count);
    if (st != KVP_OK)
        return st;
    proto_set_elems(m, 0);
    return KVP_OK;
}

static int proto_req_admin(struct kvp_msg *m)
{
    if (m->hdr.count > KVP_MAX_LIST)
        return KVP_E_TOOBIG;
    if (m->body_len < sizeof(uint32_t))
        return KVP_E_MALFORMED;
    if (m->body_len - sizeof(uint32_t) > KVP_ADMIN_MAX_ARG)
        return KVP_E_TOOBIG;
    proto_set_elems(m, 0);
    return KVP_OK;
}

int kvp_decode_request(const void *buf, size_t len, size_t max_len, struct kvp_msg *msg)
{
    int st = proto_hdr(buf, len, msg);

    if (st != KVP_OK)
        return st;
    if (max_len > KVP_MAX_FRAME)
        max_len = KVP_MAX_FRAME;
    if (len > max_len)
        return KVP_E_TOOBIG;
    if (msg->hdr.magic != KVP_MAGIC)
        return KVP_E_MALFORMED;
    if (msg->hdr.version != KVP_VERSION)
        return KVP_E_VERSION;
    if (msg->hdr.status != 0)
        return KVP_E_MALFORMED;

    switch (msg->hdr.op) {
    case KVP_OP_ATTACH:
        return proto_req_attach(msg);
    case KVP_OP_DETACH:
    case KVP_OP_PING:
    case KVP_OP_STATS:
        return (msg->hdr.count == 0 && msg->body_len == 0) ? KVP_OK : KVP_E_MALFORMED;
    case KVP_OP_LOOKUP:
        return proto_req_lookup(msg);
    case KVP_OP_ALLOC:
        return proto_req_alloc(msg);
    case KVP_OP_COMMIT:
        return proto_req_commit(msg);
    case KVP_OP_RELEASE:
        return proto_req_release(msg);
    case KVP_OP_SCORES:
        return proto_req_scores(msg);
    case KVP_OP_ADMIN:
        return proto_req_admin(msg);
    default:
        return KVP_E_OP;
    }
}

/* ---- replies --------------------------------------------------------------------------------- */

static int proto_rep_fixed(struct kvp_msg *m, void *dst, size_t size)
{
    if (m->body_len != size)
        return KVP_E_MALFORMED;
    if (size != 0)
        memcpy(dst, m->body, size);
    return KVP_OK;
}

static int proto_rep_pages(struct kvp_msg *m, size_t fixed, uint32_t limit)
{
    int st;

    if (m->hdr.count > limit)
        return KVP_E_MALFORMED;
    st = proto_exact(m->body_len, fixed, m->hdr.count, sizeof(struct kvp_page));
    if (st != KVP_OK)
        return KVP_E_MALFORMED;
    proto_set_elems(m, fixed);
    return KVP_OK;
}

static int proto_rep_lookup(struct kvp_msg *m)
{
    if (m->body_len < sizeof(struct kvp_lookup_rep))
        return KVP_E_MALFORMED;
    memcpy(&m->u.lookup_rep, m->body, sizeof(m->u.lookup_rep));
    if (m->u.lookup_rep.n_hit != m->hdr.count || m->u.lookup_rep.next > KVP_NEXT_PENDING)
        return KVP_E_MALFORMED;
    return proto_rep_pages(m, sizeof(struct kvp_lookup_rep), KVP_MAX_CHAIN);
}

int kvp_decode_reply(const void *buf, size_t len, struct kvp_msg *msg)
{
    int st = proto_hdr(buf, len, msg);

    if (st != KVP_OK)
        return st;
    if (msg->hdr.magic != KVP_MAGIC)
        return KVP_E_MALFORMED;
    if (msg->hdr.version != KVP_VERSION)
        return KVP_E_VERSION;
    /* Error replies first: kvd echoes the request's op, which may be the unknown op it refuses.
     * Their body is optional and not interpreted. */
    if (msg->hdr.status != KVP_OK)
        return msg->hdr.status;
    if (msg->hdr.op < 1 || msg->hdr.op > KVP_OP_MAX)
        return KVP_E_MALFORMED;

    switch (msg->hdr.op) {
    case KVP_OP_ATTACH:
        return proto_rep_fixed(msg, &msg->u.attach_rep, sizeof(msg->u.attach_rep));
    case KVP_OP_DETACH:
    case KVP_OP_PING:
        return proto_rep_fixed(msg, NULL, 0);
    case KVP_OP_STATS:
        return proto_rep_fixed(msg, &msg->u.stats, sizeof(msg->u.stats));
    case KVP_OP_LOOKUP:
        return proto_rep_lookup(msg);
    case KVP_OP_ALLOC:
    case KVP_OP_COMMIT:
        return proto_rep_pages(msg, 0, KVP_MAX_BATCH);
    case KVP_OP_RELEASE:
        return (msg->hdr.count <= KVP_MAX_BATCH && msg->body_len == 0) ? KVP_OK : KVP_E_MALFORMED;
    case KVP_OP_SCORES:
        return (msg->hdr.count <= KVP_MAX_SCORE_ENTS && msg->body_len == 0) ? KVP_OK
                                                                            : KVP_E_MALFORMED;
    case KVP_OP_ADMIN:
        if (msg->hdr.count > KVP_MAX_LIST || msg->body_len > KVP_MAX_FRAME)
            return KVP_E_MALFORMED;
        proto_set_elems(msg, 0);
        return KVP_OK;
    default:
        return KVP_E_MALFORMED;
    }
}

/* ---- side channel ---------------------------------------------------------------------------- */

int kvp_decode_hello(const void *buf, size_t len, struct kvp_hello *out)
{
    struct kvp_hello h;

    if (buf == NULL || len != sizeof(h))
        return KVP_E_MALFORMED;
    memcpy(&h, buf, sizeof(h));
    if (h.magic != KVP_MAGIC)
        return KVP_E_MALFORMED;
    if (h.version != KVP_VERSION)
        return KVP_E_VERSION;
    *out = h;
    return KVP_OK;
}

int kvp_decode_welcome(const void *buf, size_t len, struct kvp_welcome *out)
{
    struct kvp_welcome w;

    if (buf == NULL || len != sizeof(w))
        return KVP_E_MALFORMED;
    memcpy(&w, buf, sizeof(w));
    if (w.magic != KVP_MAGIC)
        return KVP_E_MALFORMED;
    if (w.version != KVP_VERSION)
        return KVP_E_VERSION;
    *out = w;
    if (w.status != KVP_OK)
        return w.status;
    if (w.backend < KVP_BACKEND_HOST || w.backend > KVP_BACKEND_CUDA_LEGACY)
        return KVP_E_MALFORMED;
    if (w.arena_bytes == 0 || (uint64_t)(size_t)w.arena_bytes != w.arena_bytes)
        return KVP_E_MALFORMED;
    return KVP_OK;
}

/* ---- score iteration ------------------------------------------------------------------------- */

int kvp_next_score(const struct kvp_msg *msg, size_t *pos, struct kvp_score_ent *ent,
                   const uint8_t **scores)
{
    size_t p = *pos, need;

    if (p == msg->elems_len)
        return 0;
    if (msg->elems == NULL || p > msg->elems_len)
        return -1;
    if (msg->elems_len - p < sizeof(*ent))
        return -1;
    memcpy(ent, msg->elems + p, sizeof(*ent));
    p += sizeof(*ent);
    if (ent->ntok > KV_MAX_PAGE_TOKENS)
        return -1;
    need = (size_t)ent->ntok * sizeof(float);
    if (msg->elems_len - p < need)
        return -1;
    *scores = msg->elems + p;
    *pos = p + need;
    return 1;
}
