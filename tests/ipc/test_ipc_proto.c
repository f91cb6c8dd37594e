/*
 * test_ipc_proto.c - the wire codec: round trips for every op, one test per malformed frame,
 * the status table, replies, side-channel messages and score iteration.
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>

#include "proto.h"

/* A frame under construction: header + body, with room for the largest frame plus slack. */
static uint8_t frame[KVP_MAX_FRAME + 64];

static size_t put(int op, uint32_t seq, uint32_t count, const void *body, size_t body_len)
{
    kvp_put_hdr(frame, op, 0, seq, count);
    if (body_len)
        memcpy(frame + sizeof(struct kvp_hdr), body, body_len);
    return sizeof(struct kvp_hdr) + body_len;
}

static struct kvp_attach good_attach(void)
{
    struct kvp_attach a;

    memset(&a, 0, sizeof(a));
    memset(a.token, 0xab, sizeof(a.token));
    strcpy(a.ns, "llama-3.1:8b_fp8");
    a.layout = (struct kv_layout){.n_layers = 32,
                                  .n_kv_heads = 8,
                                  .head_dim = 128,
                                  .page_tokens = 16,
                                  .k_fmt = KV_FMT_FP8_E4M3,
                                  .v_fmt = KV_FMT_FP8_E4M3,
                                  .group = 0};
    return a;
}

static int req(size_t len, struct kvp_msg *m)
{
    return kvp_decode_request(frame, len, KVP_MAX_FRAME, m);
}

/* ---- round trips ----------------------------------------------------------------------------- */

Test(proto_roundtrip, attach)
{
    struct kvp_attach a = good_attach();
    struct kvp_msg m;
    size_t len = put(KVP_OP_ATTACH, 77, 0, &a, sizeof(a));

    cr_assert_eq(kvp_decode_request(frame, len, KVP_MAX_FRAME_PRE, &m), KVP_OK);
    cr_assert_eq(m.hdr.op, KVP_OP_ATTACH);
    cr_assert_eq(m.hdr.seq, 77);
    cr_assert_eq(memcmp(&m.u.attach, &a, sizeof(a)), 0);
}

Test(proto_roundtrip, bodyless_ops)
{
    const int ops[] = {KVP_OP_DETACH, KVP_OP_PING, KVP_OP_STATS};
    struct kvp_msg m;

    for (size_t i = 0; i < 3; i++) {
        size_t len = put(ops[i], 1000 + (uint32_t)i, 0, NULL, 0);
        cr_assert_eq(req(len, &m), KVP_OK, "op %s", kvp_op_name(ops[i]));
        cr_assert_eq(m.hdr.op, ops[i]);
        cr_assert_eq(m.hdr.seq, 1000 + i);
        cr_assert_eq(m.body_len, 0);
    }
}

Test(proto_roundtrip, lookup)
{
    uint8_t body[sizeof(struct kvp_lookup) + 3 * KVP_HASH_BYTES];
    struct kvp_lookup lk = {.flags = KVP_LOOKUP_PIN | KVP_LOOKUP_WAIT, .wait_ms = KVP_MAX_WAIT_MS};
    struct kvp_msg m;

    memcpy(body, &lk, sizeof(lk));
    for (size_t i = 0; i < 3 * KVP_HASH_BYTES; i++)
        body[sizeof(lk) + i] = (uint8_t)i;
    cr_assert_eq(req(put(KVP_OP_LOOKUP, 5, 3, body, sizeof(body)), &m), KVP_OK);
    cr_assert_eq(m.u.lookup.flags, lk.flags);
    cr_assert_eq(m.u.lookup.wait_ms, KVP_MAX_WAIT_MS);
    cr_assert_eq(m.elems_len, 3 * KVP_HASH_BYTES);
    cr_assert_eq(m.elems[KVP_HASH_BYTES], KVP_HASH_BYTES);
    cr_assert_eq(m.elems, frame + sizeof(struct kvp_hdr) + sizeof(lk));
}

Test(proto_roundtrip, lookup_max_chain)
{
    struct kvp_lookup lk = {0};
    struct kvp_msg m;
    size_t body_len = sizeof(lk) + (size_t)KVP_MAX_CHAIN * KVP_HASH_BYTES;

    memset(frame + sizeof(struct kvp_hdr), 0, body_len);
    kvp_put_hdr(frame, KVP_OP_LOOKUP, 0, 1, KVP_MAX_CHAIN);
    cr_assert_eq(req(sizeof(struct kvp_hdr) + body_len, &m), KVP_OK);
    cr_assert_eq(m.elems_len, (size_t)KVP_MAX_CHAIN * KVP_HASH_BYTES);
}

Test(proto_roundtrip, alloc_with_and_without_hashes)
{
    uint8_t body[sizeof(struct kvp_alloc) + 2 * KVP_HASH_BYTES] = {0};
    struct kvp_alloc al = {.flags = KVP_ALLOC_HASHES};
    struct kvp_msg m;

    memcpy(body, &al, sizeof(al));
    cr_assert_eq(req(put(KVP_OP_ALLOC, 9, 2, body, sizeof(body)), &m), KVP_OK);
    cr_assert_eq(m.u.alloc.flags, KVP_ALLOC_HASHES);
    cr_assert_eq(m.elems_len, 2 * KVP_HASH_BYTES);

    al.flags = 0;
    memcpy(body, &al, sizeof(al));
    cr_assert_eq(req(put(KVP_OP_ALLOC, 10, 64, body, sizeof(al)), &m), KVP_OK);
    cr_assert_eq(m.hdr.count, 64);
    cr_assert_eq(m.elems_len, 0);
}

Test(proto_roundtrip, commit)
{
    struct kvp_commit c[2];
    struct kvp_commit back;
    struct kvp_msg m;

    memset(c, 0, sizeof(c));
    for (int i = 0; i < 2; i++) {
        c[i].page_id = 100 + (uint32_t)i;
        c[i].ntok = 16;
        memset(c[i].hash, 0x10 + i, KVP_HASH_BYTES);
    }
    memcpy(c[1].parent, c[0].hash, KVP_HASH_BYTES);
    cr_assert_eq(req(put(KVP_OP_COMMIT, 3, 2, c, sizeof(c)), &m), KVP_OK);
    cr_assert_eq(m.elems_len, sizeof(c));
    memcpy(&back, m.elems + sizeof(back), sizeof(back));
    cr_assert_eq(back.page_id, 101);
    cr_assert_eq(memcmp(back.parent, c[0].hash, KVP_HASH_BYTES), 0);
}

Test(proto_roundtrip, release)
{
    uint32_t ids[5] = {1, 2, 3, 4, 0xffffffffu};
    uint32_t last;
    struct kvp_msg m;

    cr_assert_eq(req(put(KVP_OP_RELEASE, 4, 5, ids, sizeof(ids)), &m), KVP_OK);
    cr_assert_eq(m.elems_len, sizeof(ids));
    memcpy(&last, m.elems + 4 * sizeof(uint32_t), sizeof(last));
    cr_assert_eq(last, 0xffffffffu);
}

/* Builds a SCORES body: entries with ntok = 1, 3, 0 and scores = entry*100 + token. */
static size_t scores_body(uint8_t *b)
{
    const uint16_t nt[3] = {1, 3, 0};
    size_t p = 0;

    for (uint32_t e = 0; e < 3; e++) {
        struct kvp_score_ent ent = {.page_id = 7 + e, .ntok = nt[e], .flags = 0};
        memcpy(b + p, &ent, sizeof(ent));
        p += sizeof(ent);
        for (uint16_t t = 0; t < nt[e]; t++) {
            float f = (float)(e * 100 + t);
            memcpy(b + p, &f, sizeof(f));
            p += sizeof(f);
        }
    }
    return p;
}

Test(proto_roundtrip, scores_and_iteration)
{
    uint8_t body[256];
    size_t body_len = scores_body(body), pos = 0;
    struct kvp_score_ent ent;
    const uint8_t *sc;
    struct kvp_msg m;
    int n = 0;

    cr_assert_eq(req(put(KVP_OP_SCORES, 8, 3, body, body_len), &m), KVP_OK);
    while (kvp_next_score(&m, &pos, &ent, &sc) == 1) {
        cr_assert_eq(ent.page_id, 7u + (uint32_t)n);
        for (uint16_t t = 0; t < ent.ntok; t++) {
            float f;
            memcpy(&f, sc + t * sizeof(float), sizeof(f));
            cr_assert_float_eq(f, (float)(n * 100 + t), 0.0f);
        }
        n++;
    }
    cr_assert_eq(n, 3);
    cr_assert_eq(pos, body_len);
    cr_assert_eq(kvp_next_score(&m, &pos, &ent, &sc), 0);
}

Test(proto_roundtrip, next_score_detects_malformed_view)
{
    uint8_t body[256];
    size_t pos = 0;
    struct kvp_score_ent ent;
    const uint8_t *sc;
    struct kvp_msg m = {.elems = body, .elems_len = scores_body(body)};

    m.elems_len = 12 + 8 + 6; /* stops inside the scores of entry 2 */

    cr_assert_eq(kvp_next_score(&m, &pos, &ent, &sc), 1);
    cr_assert_eq(kvp_next_score(&m, &pos, &ent, &sc), -1, "entry cut short must be -1");
}

Test(proto_roundtrip, admin)
{
    uint8_t body[4 + 256];
    struct kvp_msg m;
    uint32_t sub = 42, got;

    memset(body, 'x', sizeof(body));
    memcpy(body, &sub, sizeof(sub));
    cr_assert_eq(req(put(KVP_OP_ADMIN, 6, 0, body, sizeof(body)), &m), KVP_OK);
    cr_assert_eq(m.elems_len, sizeof(body));
    memcpy(&got, m.elems, sizeof(got));
    cr_assert_eq(got, 42);
    cr_assert_eq(req(put(KVP_OP_ADMIN, 6, 0, body, 4), &m), KVP_OK, "sub-command alone");
}

Test(proto_roundtrip, op_names)
{
    cr_assert_str_eq(kvp_op_name(KVP_OP_ATTACH), "ATTACH");
    cr_assert_str_eq(kvp_op_name(KVP_OP_ADMIN), "ADMIN");
    cr_assert_str_eq(kvp_op_name(0), "UNKNOWN");
    cr_assert_str_eq(kvp_op_name(KVP_OP_MAX + 1), "UNKNOWN");
}

/* ---- malformed requests: one test each ------------------------------------------------------- */

Test(proto_bad, truncated_header)
{
    struct kvp_msg m;

    put(KVP_OP_PING, 1, 0, NULL, 0);
    for (size_t len = 0; len < sizeof(struct kvp_hdr); len++)
        cr_assert_eq(req(len, &m), KVP_E_MALFORMED, "len %zu", len);
    cr_assert_eq(kvp_decode_request(NULL, 0, KVP_MAX_FRAME, &m), KVP_E_MALFORMED);
}

Test(proto_bad, truncated_body)
{
    struct kvp_attach a = good_attach();
    struct kvp_msg m;
    size_t len = put(KVP_OP_ATTACH, 31, 0, &a, sizeof(a));

    cr_assert_eq(req(len - 1, &m), KVP_E_MALFORMED);
    cr_assert_eq(m.hdr.seq, 31, "seq is echoed once the header is readable");
    cr_assert_eq(m.hdr.op, KVP_OP_ATTACH);
}

Test(proto_bad, bad_magic)
{
    struct kvp_msg m;
    size_t len = put(KVP_OP_PING, 1, 0, NULL, 0);

    frame[0] ^= 0x20;
    cr_assert_eq(req(len, &m), KVP_E_MALFORMED);
}

Test(proto_bad, wrong_version)
{
    struct kvp_msg m;
    size_t len = put(KVP_OP_PING, 12, 0, NULL, 0);

    frame[offsetof(struct kvp_hdr, version)] = KVP_VERSION + 1;
    cr_assert_eq(req(len, &m), KVP_E_VERSION);
    cr_assert_eq(m.hdr.seq, 12);
    cr_assert_eq(kvp_status_errno(KVP_E_VERSION), -EPROTONOSUPPORT);
}

Test(proto_bad, unknown_op)
{
    struct kvp_msg m;

    cr_assert_eq(req(put(0, 1, 0, NULL, 0), &m), KVP_E_OP);
    cr_assert_eq(req(put(KVP_OP_MAX + 1, 1, 0, NULL, 0), &m), KVP_E_OP);
    cr_assert_eq(req(put(255, 1, 0, NULL, 0), &m), KVP_E_OP);
}

Test(proto_bad, status_set_in_request)
{
    struct kvp_msg m;
    size_t len = put(KVP_OP_PING, 1, 0, NULL, 0);

    kvp_put_hdr(frame, KVP_OP_PING, KVP_E_IO, 1, 0);
    cr_assert_eq(req(len, &m), KVP_E_MALFORMED);
}

Test(proto_bad, oversized_frame)
{
    struct kvp_msg m;
    size_t body_len = KVP_MAX_FRAME; /* header + this > KVP_MAX_FRAME */

    memset(frame + sizeof(struct kvp_hdr), 0, body_len);
    kvp_put_hdr(frame, KVP_OP_RELEASE, 0, 1, (uint32_t)(body_len / 4));
    cr_assert_eq(kvp_decode_request(frame, sizeof(struct kvp_hdr) + body_len, SIZE_MAX, &m),
                 KVP_E_TOOBIG, "max_len is clamped to KVP_MAX_FRAME");
}

Test(proto_bad, pre_attach_limit)
{
    uint32_t ids[64] = {0}; /* 16 + 256 bytes > KVP_MAX_FRAME_PRE */
    struct kvp_msg m;
    size_t len = put(KVP_OP_RELEASE, 1, 64, ids, sizeof(ids));

    cr_assert_eq(kvp_decode_request(frame, len, KVP_MAX_FRAME_PRE, &m), KVP_E_TOOBIG);
    cr_assert_eq(kvp_decode_request(frame, len, KVP_MAX_FRAME, &m), KVP_OK);
}

Test(proto_bad, count_over_limit)
{
    struct kvp_msg m;
    uint8_t body[sizeof(struct kvp_lookup)] = {0};

    cr_assert_eq(req(put(KVP_OP_LOOKUP, 1, KVP_MAX_CHAIN + 1, body, sizeof(body)), &m),
                 KVP_E_TOOBIG);
    cr_assert_eq(req(put(KVP_OP_ALLOC, 1, KVP_MAX_BATCH + 1, body, sizeof(body)), &m),
                 KVP_E_TOOBIG);
    cr_assert_eq(req(put(KVP_OP_COMMIT, 1, KVP_MAX_BATCH + 1, NULL, 0), &m), KVP_E_TOOBIG);
    cr_assert_eq(req(put(KVP_OP_RELEASE, 1, KVP_MAX_BATCH + 1, NULL, 0), &m), KVP_E_TOOBIG);
    cr_assert_eq(req(put(KVP_OP_SCORES, 1, KVP_MAX_SCORE_ENTS + 1, NULL, 0), &m), KVP_E_TOOBIG);
}

Test(proto_bad, count_length_mismatch)
{
    uint32_t ids[4] = {1, 2, 3, 4};
    struct kvp_commit c[2];
    struct kvp_attach a;
    struct kvp_msg m;

    memset(c, 0, sizeof(c));
    c[0].ntok = c[1].ntok = 16;
    cr_assert_eq(req(put(KVP_OP_RELEASE, 1, 3, ids, sizeof(ids)), &m), KVP_E_MALFORMED);
    cr_assert_eq(req(put(KVP_OP_RELEASE, 1, 4, ids, sizeof(ids) - 1), &m), KVP_E_MALFORMED);
    cr_assert_eq(req(put(KVP_OP_COMMIT, 1, 1, c, sizeof(c)), &m), KVP_E_MALFORMED);
    cr_assert_eq(req(put(KVP_OP_PING, 1, 1, NULL, 0), &m), KVP_E_MALFORMED);
    cr_assert_eq(req(put(KVP_OP_STATS, 1, 0, ids, 4), &m), KVP_E_MALFORMED);
    a = good_attach();
    cr_assert_eq(req(put(KVP_OP_ATTACH, 1, 1, &a, sizeof(a)), &m), KVP_E_MALFORMED, "count 1");
}

Test(proto_bad, alloc_hashes_mismatch)
{
    uint8_t body[sizeof(struct kvp_alloc) + KVP_HASH_BYTES] = {0};
    struct kvp_alloc al = {.flags = KVP_ALLOC_HASHES};
    struct kvp_msg m;

    memcpy(body, &al, sizeof(al));
    cr_assert_eq(req(put(KVP_OP_ALLOC, 1, 2, body, sizeof(body)), &m), KVP_E_MALFORMED);
    al.flags = 0;
    memcpy(body, &al, sizeof(al));
    cr_assert_eq(req(put(KVP_OP_ALLOC, 1, 1, body, sizeof(body)), &m), KVP_E_MALFORMED,
                 "hashes without KVP_ALLOC_HASHES");
    al.flags = 0x80;
    memcpy(body, &al, sizeof(al));
    cr_assert_eq(req(put(KVP_OP_ALLOC, 1, 0, body, sizeof(al)), &m), KVP_E_INVAL);
}

/* Counts whose byte size would wrap a 32-bit product must be refused by the limit, not by luck. */
Test(proto_bad, overflowing_counts)
{
    uint8_t body[sizeof(struct kvp_lookup)] = {0};
    struct kvp_msg m;
    const uint32_t evil[] = {0xffffffffu, 0x10000000u, 0x80000000u, (0xffffffffu / 16) + 1};

    for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
        cr_assert_eq(req(put(KVP_OP_LOOKUP, 1, evil[i], body, sizeof(body)), &m), KVP_E_TOOBIG);
        cr_assert_eq(req(put(KVP_OP_COMMIT, 1, evil[i], NULL, 0), &m), KVP_E_TOOBIG);
        cr_assert_eq(req(put(KVP_OP_RELEASE, 1, evil[i], NULL, 0), &m), KVP_E_TOOBIG);
        cr_assert_eq(req(put(KVP_OP_SCORES, 1, evil[i], NULL, 0), &m), KVP_E_TOOBIG);
    }
}

Test(proto_bad, namespace_name)
{
    const char *bad[] = {"", "has space", "slash/x", "new\nline", "\xc3\xa9t\xc3\xa9", "semi;"};
    struct kvp_attach a;
    struct kvp_msg m;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        a = good_attach();
        memset(a.ns, 0, sizeof(a.ns));
        memcpy(a.ns, bad[i], strlen(bad[i]));
        cr_assert_eq(req(put(KVP_OP_ATTACH, 1, 0, &a, sizeof(a)), &m), KVP_E_INVAL, "%s", bad[i]);
    }
    a = good_attach(); /* no NUL in 64 bytes */
    memset(a.ns, 'a', sizeof(a.ns));
    cr_assert_eq(req(put(KVP_OP_ATTACH, 1, 0, &a, sizeof(a)), &m), KVP_E_INVAL);
    a = good_attach(); /* garbage after the terminator */
    a.ns[KVP_MAX_NS_NAME - 1] = 'z';
    cr_assert_eq(req(put(KVP_OP_ATTACH, 1, 0, &a, sizeof(a)), &m), KVP_E_INVAL);
    a = good_attach(); /* longest legal name: 63 characters */
    memset(a.ns, 'a', KVP_MAX_NS_NAME - 1);
    a.ns[KVP_MAX_NS_NAME - 1] = '\0';
    cr_assert_eq(req(put(KVP_OP_ATTACH, 1, 0, &a, sizeof(a)), &m), KVP_OK);
}

Test(proto_bad, invalid_layout)
{
    struct kvp_attach a = good_attach();
    struct kvp_msg m;

    a.layout.k_fmt = 0;
    cr_assert_eq(req(put(KVP_OP_ATTACH, 1, 0, &a, sizeof(a)), &m), KVP_E_LAYOUT);
    a = good_attach();
    a.layout.page_tokens = KV_MAX_PAGE_TOKENS + 1;
    cr_assert_eq(req(put(KVP_OP_ATTACH, 1, 0, &a, sizeof(a)), &m), KVP_E_LAYOUT);
}

Test(proto_bad, over_long_wait)
{
    struct kvp_lookup lk = {.flags = KVP_LOOKUP_WAIT, .wait_ms = KVP_MAX_WAIT_MS + 1};
    struct kvp_msg m;

    cr_assert_eq(req(put(KVP_OP_LOOKUP, 1, 0, &lk, sizeof(lk)), &m), KVP_E_INVAL);
    lk.wait_ms = 0xffffffffu;
    cr_assert_eq(req(put(KVP_OP_LOOKUP, 1, 0, &lk, sizeof(lk)), &m), KVP_E_INVAL);
    lk.wait_ms = 10;
    lk.flags = 0x100; /* unknown flag */
    cr_assert_eq(req(put(KVP_OP_LOOKUP, 1, 0, &lk, sizeof(lk)), &m), KVP_E_INVAL);
}

Test(proto_bad, commit_ntok)
{
    struct kvp_commit c;
    struct kvp_msg m;

    memset(&c, 0, sizeof(c));
    cr_assert_eq(req(put(KVP_OP_COMMIT, 1, 1, &c, sizeof(c)), &m), KVP_E_INVAL, "ntok 0");
    c.ntok = KV_MAX_PAGE_TOKENS + 1;
    cr_assert_eq(req(put(KVP_OP_COMMIT, 1, 1, &c, sizeof(c)), &m), KVP_E_INVAL);
}

Test(proto_bad, malformed_score_entries)
{
    static uint8_t body[sizeof(struct kvp_score_ent) + 4 * (KV_MAX_PAGE_TOKENS + 1)];
    size_t body_len = scores_body(body);
    struct kvp_score_ent ent = {.page_id = 1, .ntok = KV_MAX_PAGE_TOKENS + 1};
    struct kvp_msg m;

    /* fewer entries than count */
    cr_assert_eq(req(put(KVP_OP_SCORES, 1, 4, body, body_len), &m), KVP_E_MALFORMED);
    /* more bytes than the entries cover */
    cr_assert_eq(req(put(KVP_OP_SCORES, 1, 2, body, body_len), &m), KVP_E_MALFORMED);
    /* last entry's scores cut short */
    cr_assert_eq(req(put(KVP_OP_SCORES, 1, 3, body, 8 + 4 + 8 + 8), &m), KVP_E_MALFORMED);
    /* fourth entry header cut short */
    memset(body + body_len, 0, 4);
    cr_assert_eq(req(put(KVP_OP_SCORES, 1, 4, body, body_len + 4), &m), KVP_E_MALFORMED);
    /* ntok over KV_MAX_PAGE_TOKENS */
    memcpy(body, &ent, sizeof(ent));
    cr_assert_eq(req(put(KVP_OP_SCORES, 1, 1, body, sizeof(ent) + 4 * (size_t)ent.ntok), &m),
                 KVP_E_TOOBIG);
    /* huge ntok claimed by a short frame */
    ent.ntok = 0xffff;
    memcpy(body, &ent, sizeof(ent));
    cr_assert_eq(req(put(KVP_OP_SCORES, 1, 1, body, sizeof(ent)), &m), KVP_E_TOOBIG);
}

Test(proto_bad, admin_bodies)
{
    uint8_t body[4 + 257] = {0};
    struct kvp_msg m;

    cr_assert_eq(req(put(KVP_OP_ADMIN, 1, 0, body, 3), &m), KVP_E_MALFORMED);
    cr_assert_eq(req(put(KVP_OP_ADMIN, 1, 0, body, sizeof(body)), &m), KVP_E_TOOBIG);
    cr_assert_eq(req(put(KVP_OP_ADMIN, 1, KVP_MAX_LIST + 1, body, 4), &m), KVP_E_TOOBIG);
}

/* ---- status table ---------------------------------------------------------------------------- */

Test(proto_status, every_code_has_text_and_errno)
{
    const int codes[] = {
#define X(name, val, err, str) val,
        KVP_STATUS_MAP(X)
#undef X
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *s = kvp_status_str(codes[i]);
        cr_assert_neq(strcmp(s, "unknown status"), 0, "code %d", codes[i]);
        cr_assert(strlen(s) > 1);
        if (codes[i] == KVP_OK) {
            cr_assert_eq(kvp_status_errno(codes[i]), 0);
            continue;
        }
        cr_assert_lt(kvp_status_errno(codes[i]), 0, "code %d", codes[i]);
        /* whose fault it is: codes below 32 are the client's */
        cr_assert_eq(
            strncmp(s, codes[i] < 32 ? "client error:" : "server:", codes[i] < 32 ? 13 : 7), 0,
            "%s", s);
    }
    cr_assert_str_eq(kvp_status_str(999), "unknown status");
    cr_assert_eq(kvp_status_errno(999), -EPROTO);
    cr_assert_eq(kvp_status_errno(KVP_E_NOSPC), -ENOSPC);
}

Test(proto_status, from_errno_round_trip)
{
    const int codes[] = {
#define X(name, val, err, str) val,
        KVP_STATUS_MAP(X)
#undef X
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        int e = kvp_status_errno(codes[i]);
        int back = kvp_status_from_errno(e);
        /* EINVAL is shared by E_LAYOUT, E_STATE and E_INVAL: a bare -EINVAL means E_INVAL */
        if (e == -EINVAL)
            cr_assert_eq(back, KVP_E_INVAL);
        else
            cr_assert_eq(back, codes[i], "code %d errno %d -> %d", codes[i], e, back);
        cr_assert_eq(kvp_status_errno(back), e);
    }
    cr_assert_eq(kvp_status_from_errno(-ENOSPC), KVP_E_NOSPC);
    cr_assert_eq(kvp_status_from_errno(-EXDEV), KVP_E_INTERNAL, "unknown errno is kvd's fault");
    cr_assert_eq(kvp_status_from_errno(0), KVP_OK);
}

/* ---- replies --------------------------------------------------------------------------------- */

static size_t put_rep(int op, int status, uint32_t seq, uint32_t count, const void *body,
                      size_t body_len)
{
    kvp_put_hdr(frame, op, status, seq, count);
    if (body_len)
        memcpy(frame + sizeof(struct kvp_hdr), body, body_len);
    return sizeof(struct kvp_hdr) + body_len;
}

Test(proto_reply, every_op)
{
    struct kvp_attach_rep ar = {.client_id = 3,
                                .ns_id = 1,
                                .page_bytes = 65536,
                                .arena_bytes = 1 << 30,
                                .heartbeat_ms = 1000,
                                .max_batch = 4096};
    uint8_t lbody[sizeof(struct kvp_lookup_rep) + 2 * sizeof(struct kvp_page)] = {0};
    struct kvp_lookup_rep lr = {.n_hit = 2, .next = KVP_NEXT_PENDING};
    struct kvp_page pages[3] = {{.page_id = 1, .ntok = 16, .offset = 0},
                                {.page_id = 2, .ntok = 16, .offset = 65536},
                                {.page_id = 3, .ntok = 8, .flags = KVP_PAGE_DEDUP}};
    struct kvp_stats st;
    struct kvp_msg m;

    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_ATTACH, 0, 1, 0, &ar, sizeof(ar)), &m),
                 KVP_OK);
    cr_assert_eq(m.u.attach_rep.page_bytes, 65536);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_PING, 0, 2, 0, NULL, 0), &m), KVP_OK);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_DETACH, 0, 2, 0, NULL, 0), &m), KVP_OK);
    memcpy(lbody, &lr, sizeof(lr));
    memcpy(lbody + sizeof(lr), pages, 2 * sizeof(pages[0]));
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_LOOKUP, 0, 3, 2, lbody, sizeof(lbody)), &m),
                 KVP_OK);
    cr_assert_eq(m.u.lookup_rep.next, KVP_NEXT_PENDING);
    cr_assert_eq(m.elems_len, 2 * sizeof(struct kvp_page));
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_ALLOC, 0, 4, 3, pages, sizeof(pages)), &m),
                 KVP_OK);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_COMMIT, 0, 5, 3, pages, sizeof(pages)), &m),
                 KVP_OK);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_RELEASE, 0, 6, 17, NULL, 0), &m), KVP_OK);
    cr_assert_eq(m.hdr.count, 17);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_SCORES, 0, 7, 2, NULL, 0), &m), KVP_OK);
    memset(&st, 0, sizeof(st));
    st.pages_total = 1234;
    st.spill_checksum_failures = 5;
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_STATS, 0, 8, 0, &st, sizeof(st)), &m),
                 KVP_OK);
    cr_assert_eq(m.u.stats.pages_total, 1234);
    cr_assert_eq(m.u.stats.spill_checksum_failures, 5);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_ADMIN, 0, 9, 1, "{}", 2), &m), KVP_OK);
    cr_assert_eq(m.elems_len, 2);
}

Test(proto_reply, error_status_is_returned)
{
    struct kvp_msg m;

    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_ALLOC, KVP_E_NOSPC, 41, 0, NULL, 0), &m),
                 KVP_E_NOSPC);
    cr_assert_eq(m.hdr.seq, 41);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_ATTACH, KVP_E_BAD_TOKEN, 1, 0, "x", 1), &m),
                 KVP_E_BAD_TOKEN);
    /* the reply to an unknown op echoes that op */
    cr_assert_eq(kvp_decode_reply(frame, put_rep(200, KVP_E_OP, 2, 0, NULL, 0), &m), KVP_E_OP);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(0, KVP_E_MALFORMED, 0, 0, NULL, 0), &m),
                 KVP_E_MALFORMED);
}

Test(proto_reply, malformed)
{
    struct kvp_page pg = {0};
    struct kvp_lookup_rep lr = {.n_hit = 2, .next = 0};
    struct kvp_msg m;
    size_t len;

    cr_assert_eq(kvp_decode_reply(frame, 15, &m), KVP_E_MALFORMED);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_ALLOC, 0, 1, 2, &pg, sizeof(pg)), &m),
                 KVP_E_MALFORMED);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_STATS, 0, 1, 0, &pg, sizeof(pg)), &m),
                 KVP_E_MALFORMED);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_LOOKUP, 0, 1, 1, &lr, sizeof(lr)), &m),
                 KVP_E_MALFORMED, "n_hit != count");
    cr_assert_eq(kvp_decode_reply(frame, put_rep(0, 0, 1, 0, NULL, 0), &m), KVP_E_MALFORMED);
    cr_assert_eq(kvp_decode_reply(frame, put_rep(KVP_OP_PING, 0, 1, 0, "x", 1), &m),
                 KVP_E_MALFORMED);
    len = put_rep(KVP_OP_PING, 0, 1, 0, NULL, 0);
    frame[offsetof(struct kvp_hdr, version)] = 9;
    cr_assert_eq(kvp_decode_reply(frame, len, &m), KVP_E_VERSION);
    len = put_rep(KVP_OP_PING, 0, 1, 0, NULL, 0);
    frame[3] = 0;
    cr_assert_eq(kvp_decode_reply(frame, len, &m), KVP_E_MALFORMED);
}

/* ---- side channel ---------------------------------------------------------------------------- */

Test(proto_side, hello)
{
    struct kvp_hello h = {.magic = KVP_MAGIC, .version = KVP_VERSION, .pid = 1234}, out;

    cr_assert_eq(kvp_decode_hello(&h, sizeof(h), &out), KVP_OK);
    cr_assert_eq(out.pid, 1234);
    cr_assert_eq(kvp_decode_hello(&h, sizeof(h) - 1, &out), KVP_E_MALFORMED);
    cr_assert_eq(kvp_decode_hello(&h, sizeof(h) + 1, &out), KVP_E_MALFORMED);
    h.version = 2;
    cr_assert_eq(kvp_decode_hello(&h, sizeof(h), &out), KVP_E_VERSION);
    h.version = KVP_VERSION;
    h.magic = 0;
    cr_assert_eq(kvp_decode_hello(&h, sizeof(h), &out), KVP_E_MALFORMED);
}

Test(proto_side, welcome)
{
    struct kvp_welcome w, out;

    memset(&w, 0, sizeof(w));
    w.magic = KVP_MAGIC;
    w.version = KVP_VERSION;
    w.client_id = 5;
    w.backend = KVP_BACKEND_HOST;
    w.arena_bytes = 1 << 20;
    cr_assert_eq(kvp_decode_welcome(&w, sizeof(w), &out), KVP_OK);
    cr_assert_eq(out.client_id, 5);
    cr_assert_eq(kvp_decode_welcome(&w, sizeof(w) - 8, &out), KVP_E_MALFORMED);
    w.backend = 4;
    cr_assert_eq(kvp_decode_welcome(&w, sizeof(w), &out), KVP_E_MALFORMED);
    w.backend = KVP_BACKEND_CUDA_VMM;
    w.arena_bytes = 0;
    cr_assert_eq(kvp_decode_welcome(&w, sizeof(w), &out), KVP_E_MALFORMED);
    w.status = KVP_E_PERM;
    cr_assert_eq(kvp_decode_welcome(&w, sizeof(w), &out), KVP_E_PERM);
    w.version = 0;
    cr_assert_eq(kvp_decode_welcome(&w, sizeof(w), &out), KVP_E_VERSION);
}
