/*
 * test_mp_badinput.c - hostile frames on the request channel, sent raw over ZeroMQ by a peer that
 * did the side-channel handshake itself. Each must get a typed error reply, after which the same
 * peer and another client (through libkvclient) are served normally. Also: how replies made in
 * one drain arrive (parts of one message).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "kvt.h"
#include "proto.h"
#include "sock.h"

static struct kvt_kvd kvd;

struct raw {
    int side;
    void *ctx, *sock;
    struct kvp_welcome w;
    uint32_t seq;
};

static void setup(void)
{
    cr_assert_eq(kvt_kvd_start(&kvd, NULL), 0);
}

static void teardown(void)
{
    if (getenv("KVT_VERBOSE"))
        kvt_kvd_dump_log(&kvd);
    kvt_kvd_cleanup(&kvd);
}

/* Send one frame and return the reply's header (the reply is checked to be a well-formed one). */
static struct kvp_hdr raw_rpc(struct raw *r, const void *frame, size_t len)
{
    zmq_pollitem_t it = {r->sock, 0, ZMQ_POLLIN, 0};
    uint8_t rep[4096];
    struct kvp_hdr h;
    int n;

    cr_assert_eq(zmq_send(r->sock, frame, len, 0), (int)len);
    cr_assert_eq(zmq_poll(&it, 1, 10000), 1, "no reply within 10 s");
    n = zmq_recv(r->sock, rep, sizeof(rep), 0);
    cr_assert_geq(n, (int)sizeof(h), "reply shorter than a header");
    memcpy(&h, rep, sizeof(h));
    cr_assert_eq(h.magic, KVP_MAGIC);
    cr_assert_eq(h.version, KVP_VERSION);
    return h;
}

static uint16_t raw_status(struct raw *r, const void *frame, size_t len)
{
    return raw_rpc(r, frame, len).status;
}

static void raw_open(struct raw *r, int attach)
{
    char path[160];
    struct kvp_hello hello = {
        .magic = KVP_MAGIC, .version = KVP_VERSION, .pid = (uint32_t)getpid()};
    uint8_t buf[sizeof(struct kvp_welcome)];
    int fd = -1;

    memset(r, 0, sizeof(*r));
    snprintf(path, sizeof(path), "%s/kvd.sock", kvd.run_dir);
    r->side = kv_sock_connect(path);
    cr_assert_geq(r->side, 0);
    cr_assert_eq(kv_sock_send(r->side, &hello, sizeof(hello), -1), 0);
    cr_assert_eq(kv_sock_recv(r->side, buf, sizeof(buf), &fd), (ssize_t)sizeof(buf));
    cr_assert_eq(kvp_decode_welcome(buf, sizeof(buf), &r->w), KVP_OK);
    if (fd >= 0)
        close(fd); /* the arena is not needed for these cases */
    r->ctx = zmq_ctx_new();
    r->sock = zmq_socket(r->ctx, ZMQ_DEALER);
    snprintf(path, sizeof(path), "ipc://%s/kvd.zmq", kvd.run_dir);
    cr_assert_eq(zmq_connect(r->sock, path), 0);
    if (attach) {
        uint8_t f[sizeof(struct kvp_hdr) + sizeof(struct kvp_attach)];
        struct kvp_attach a = {.layout = {.n_layers = 2,
                                          .n_kv_heads = 2,
                                          .head_dim = 64,
                                          .page_tokens = 16,
                                          .k_fmt = KV_FMT_FP8_E4M3,
                                          .v_fmt = KV_FMT_FP8_E4M3}};
        memcpy(a.token, r->w.token, 16);
        strcpy(a.ns, "bad");
        kvp_put_hdr(f, KVP_OP_ATTACH, 0, ++r->seq, 0);
        memcpy(f + sizeof(struct kvp_hdr), &a, sizeof(a));
        cr_assert_eq(raw_status(r, f, sizeof(f)), KVP_OK, "raw ATTACH refused");
    }
}

static void raw_close(struct raw *r)
{
    int zero = 0;
    zmq_setsockopt(r->sock, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_close(r->sock);
    zmq_ctx_term(r->ctx);
    close(r->side);
}

static void raw_ping_ok(struct raw *r)
{
    uint8_t f[sizeof(struct kvp_hdr)];
    kvp_put_hdr(f, KVP_OP_PING, 0, ++r->seq, 0);
    struct kvp_hdr h = raw_rpc(r, f, sizeof(f));
    cr_assert_eq(h.status, KVP_OK, "the peer itself is still served");
    cr_assert_eq(h.seq, r->seq);
}

/* Another client is served normally: attach, allocate, commit, look up, release. */
static void other_client_ok(void)
{
    struct kvc *c;
    int32_t t[32];
    struct kvc_hash h[2];
    struct kvc_page p[2];
    struct kvc_commit e[2];
    uint32_t hit, next;
    static unsigned seed = 100;

    cr_assert_eq(kvt_open(&kvd, "bad", &c), 0);
    cr_assert_eq(kvc_ping(c), 0);
    kvt_tokens(t, 32, seed++);
    cr_assert_eq(kvc_hash_chain(kvc_get_hasher(c), t, 32, NULL, h, 2), 2);
    cr_assert_eq(kvc_alloc(c, 2, h, p), 0);
    e[0] = (struct kvc_commit){.page_id = p[0].id, .ntok = 16, .hash = h[0]};
    e[1] = (struct kvc_commit){.page_id = p[1].id, .ntok = 16, .hash = h[1], .parent = h[0]};
    cr_assert_eq(kvc_commit(c, e, 2, p), 0);
    cr_assert_eq(kvc_release_pages(c, p, 2), 0);
    cr_assert_eq(kvc_lookup(c, h, 2, KVC_LOOKUP_PIN, 0, p, &hit, &next), 0);
    cr_assert_eq(hit, 2);
    cr_assert_eq(kvc_release_pages(c, p, 2), 0);
    kvc_close(c);
}

TestSuite(badinput, .init = setup, .fini = teardown, .timeout = 60);

Test(badinput, truncated_header)
{
    struct raw r;
    uint8_t f[sizeof(struct kvp_hdr)];

    raw_open(&r, 1);
    kvp_put_hdr(f, KVP_OP_PING, 0, 1, 0);
    cr_assert_eq(raw_status(&r, f, 7), KVP_E_MALFORMED);
    raw_ping_ok(&r);
    other_client_ok();
    raw_close(&r);
}

Test(badinput, truncated_body)
{
    struct raw r;
    uint8_t f[sizeof(struct kvp_hdr) + sizeof(struct kvp_lookup) + 2 * 16] = {0};
    struct kvp_hdr h;

    raw_open(&r, 1);
    kvp_put_hdr(f, KVP_OP_LOOKUP, 0, 77, 4); /* says 4 hashes, carries 2 */
    h = raw_rpc(&r, f, sizeof(f));
    cr_assert_eq(h.status, KVP_E_MALFORMED);
    cr_assert_eq(h.seq, 77, "the error reply echoes the request's seq");
    cr_assert_eq(h.op, KVP_OP_LOOKUP);
    raw_ping_ok(&r);
    other_client_ok();
    raw_close(&r);
}

Test(badinput, oversized_before_attach)
{
    struct raw r;
    uint8_t f[KVP_MAX_FRAME_PRE + 64] = {0};

    raw_open(&r, 0);
    kvp_put_hdr(f, KVP_OP_PING, 0, 1, 0);
    cr_assert_eq(raw_status(&r, f, sizeof(f)), KVP_E_TOOBIG);
    other_client_ok();
    raw_close(&r);
}

Test(badinput, oversized_attached)
{
    struct raw r;
    size_t len = KVP_MAX_FRAME + 4096;
    uint8_t *f = calloc(1, len);

    cr_assert_not_null(f);
    raw_open(&r, 1);
    kvp_put_hdr(f, KVP_OP_RELEASE, 0, 5, (uint32_t)((len - 16) / 4));
    cr_assert_eq(raw_status(&r, f, len), KVP_E_TOOBIG);
    raw_ping_ok(&r);
    other_client_ok();
    raw_close(&r);
    free(f);
}

Test(badinput, count_over_limit)
{
    struct raw r;
    size_t len = 16 + 8 + (KVP_MAX_CHAIN + 1) * 16;
    uint8_t *f = calloc(1, len);

    cr_assert_not_null(f);
    raw_open(&r, 1);
    kvp_put_hdr(f, KVP_OP_LOOKUP, 0, 6, KVP_MAX_CHAIN + 1);
    cr_assert_eq(raw_status(&r, f, len), KVP_E_TOOBIG);
    raw_ping_ok(&r);
    other_client_ok();
    raw_close(&r);
    free(f);
}

Test(badinput, wrong_version_and_magic)
{
    struct raw r;
    uint8_t f[sizeof(struct kvp_hdr)];

    raw_open(&r, 1);
    kvp_put_hdr(f, KVP_OP_PING, 0, 8, 0);
    f[4] = KVP_VERSION + 1;
    cr_assert_eq(raw_status(&r, f, sizeof(f)), KVP_E_VERSION);
    kvp_put_hdr(f, KVP_OP_PING, 0, 9, 0);
    f[0] ^= 0xff;
    cr_assert_eq(raw_status(&r, f, sizeof(f)), KVP_E_MALFORMED);
    raw_ping_ok(&r);
    other_client_ok();
    raw_close(&r);
}

Test(badinput, unknown_op)
{
    struct raw r;
    uint8_t f[sizeof(struct kvp_hdr)];
    struct kvp_hdr h;

    raw_open(&r, 1);
    kvp_put_hdr(f, 200, 0, 10, 0);
    h = raw_rpc(&r, f, sizeof(f));
    cr_assert_eq(h.status, KVP_E_OP);
    cr_assert_eq(h.seq, 10);
    raw_ping_ok(&r);
    other_client_ok();
    raw_close(&r);
}

/* The next n reply frames (a reply message may carry several as its parts), their headers. */
static void raw_frames(struct raw *r, struct kvp_hdr *h, unsigned n)
{
    zmq_pollitem_t it = {r->sock, 0, ZMQ_POLLIN, 0};
    uint8_t rep[4096];
    for (unsigned i = 0; i < n; i++) {
        int more = 0;
        size_t ml = sizeof(more);
        if (i == 0 || zmq_getsockopt(r->sock, ZMQ_RCVMORE, &more, &ml) != 0 || !more)
            cr_assert_eq(zmq_poll(&it, 1, 10000), 1, "no reply frame %u within 10 s", i);
        int len = zmq_recv(r->sock, rep, sizeof(rep), 0);
        cr_assert_geq(len, (int)sizeof(h[i]), "reply frame %u shorter than a header", i);
        memcpy(&h[i], rep, sizeof(h[i]));
        cr_assert_eq(h[i].magic, KVP_MAGIC);
    }
}

/* A message of several frames is several requests (kvc_submitv): each gets its own reply, in
 * order, a malformed one among them a typed error; past KVP_MAX_PARTS one error for the rest. */
Test(badinput, multipart_message)
{
    struct raw r;
    uint8_t f[sizeof(struct kvp_hdr)], junk[3] = {1, 2, 3};
    struct kvp_hdr h[KVP_MAX_PARTS + 1];

    raw_open(&r, 1);
    cr_assert(r.w.features & KVP_FEAT_MULTIPART, "the welcome announces multipart requests");
    kvp_put_hdr(f, KVP_OP_PING, 0, 11, 0);
    cr_assert_eq(zmq_send(r.sock, f, sizeof(f), ZMQ_SNDMORE), (int)sizeof(f));
    cr_assert_eq(zmq_send(r.sock, junk, sizeof(junk), ZMQ_SNDMORE), (int)sizeof(junk));
    kvp_put_hdr(f, KVP_OP_PING, 0, 12, 0);
    cr_assert_eq(zmq_send(r.sock, f, sizeof(f), 0), (int)sizeof(f));
    raw_frames(&r, h, 3);
    cr_assert_eq(h[0].status, KVP_OK);
    cr_assert_eq(h[0].seq, 11);
    cr_assert_eq(h[1].status, KVP_E_MALFORMED);
    cr_assert_eq(h[2].status, KVP_OK);
    cr_assert_eq(h[2].seq, 12);

    for (unsigned i = 0; i < KVP_MAX_PARTS + 6; i++) {
        kvp_put_hdr(f, KVP_OP_PING, 0, 100 + i, 0);
        cr_assert_eq(zmq_send(r.sock, f, sizeof(f), i + 1 < KVP_MAX_PARTS + 6 ? ZMQ_SNDMORE : 0),
                     (int)sizeof(f));
    }
    raw_frames(&r, h, KVP_MAX_PARTS + 1);
    for (unsigned i = 0; i < KVP_MAX_PARTS; i++) {
        cr_assert_eq(h[i].status, KVP_OK);
        cr_assert_eq(h[i].seq, 100 + i);
    }
    cr_assert_eq(h[KVP_MAX_PARTS].status, KVP_E_MALFORMED,
                 "one error for the parts past the limit");
    raw_ping_ok(&r); /* and nothing else arrives before this reply */
    other_client_ok();
    raw_close(&r);
}

Test(badinput, not_attached_and_bad_token)
{
    struct raw r;
    uint8_t f[sizeof(struct kvp_hdr) + sizeof(struct kvp_attach)] = {0};
    struct kvp_attach a = {.layout = {2, 2, 64, 16, KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3, 0}};

    raw_open(&r, 0);
    kvp_put_hdr(f, KVP_OP_STATS, 0, 12, 0);
    cr_assert_eq(raw_status(&r, f, sizeof(struct kvp_hdr)), KVP_E_NOT_ATTACHED);
    memcpy(a.token, r.w.token, 16);
    a.token[0] ^= 1;
    strcpy(a.ns, "bad");
    kvp_put_hdr(f, KVP_OP_ATTACH, 0, 13, 0);
    memcpy(f + sizeof(struct kvp_hdr), &a, sizeof(a));
    cr_assert_eq(raw_status(&r, f, sizeof(f)), KVP_E_BAD_TOKEN);
    other_client_ok();
    raw_close(&r);
}

/* Page ids that belong to another client: RELEASE, COMMIT and SCORES are refused, and the owner's
 * pages are untouched. */
Test(badinput, foreign_page_ids)
{
    struct raw r;
    struct kvc *owner;
    struct kvc_page p[2];
    struct kvc_hash h[2];
    int32_t t[32];
    uint8_t f[256] = {0};
    struct kvp_commit cm = {.ntok = 16};
    struct kvp_score_ent se = {.ntok = 1};
    float one = 1.0f;
    uint32_t bogus = 0xfffffff0u;

    cr_assert_eq(kvt_open(&kvd, "bad", &owner), 0);
    kvt_tokens(t, 32, 55);
    cr_assert_eq(kvc_hash_chain(kvc_get_hasher(owner), t, 32, NULL, h, 2), 2);
    cr_assert_eq(kvc_alloc(owner, 2, h, p), 0);
    raw_open(&r, 1);

    kvp_put_hdr(f, KVP_OP_RELEASE, 0, 20, 1);
    memcpy(f + 16, &p[0].id, 4);
    cr_assert_eq(raw_status(&r, f, 20), KVP_E_NOT_HELD);
    memcpy(f + 16, &bogus, 4);
    cr_assert_eq(raw_status(&r, f, 20), KVP_E_NOT_HELD);

    cm.page_id = p[1].id;
    memcpy(cm.hash, h[1].b, 16);
    memcpy(cm.parent, h[0].b, 16);
    kvp_put_hdr(f, KVP_OP_COMMIT, 0, 21, 1);
    memcpy(f + 16, &cm, sizeof(cm));
    cr_assert_eq(raw_status(&r, f, 16 + sizeof(cm)), KVP_E_NOT_HELD);

    se.page_id = p[0].id;
    kvp_put_hdr(f, KVP_OP_SCORES, 0, 22, 1);
    memcpy(f + 16, &se, sizeof(se));
    memcpy(f + 16 + sizeof(se), &one, sizeof(one));
    cr_assert_eq(raw_status(&r, f, 16 + sizeof(se) + 4), KVP_E_NOT_HELD);
    raw_ping_ok(&r);

    /* the owner's pages are still its own */
    struct kvc_commit e[2] = {{.page_id = p[0].id, .ntok = 16, .hash = h[0]},
                              {.page_id = p[1].id, .ntok = 16, .hash = h[1], .parent = h[0]}};
    cr_assert_eq(kvc_commit(owner, e, 2, p), 0);
    cr_assert_eq(p[0].flags & KVC_PAGE_DEDUP, 0);
    float mass[16] = {1, 2, 3};
    struct kvc_score sc = {.page_id = p[0].id, .ntok = 16, .mass = mass};
    cr_assert_eq(kvc_scores(owner, &sc, 1), 0);
    cr_assert_eq(kvc_release_pages(owner, p, 2), 0);
    cr_assert_eq(kvc_release_pages(owner, p, 1), -EBADF, "a lease is released once");
    kvc_close(owner);
    other_client_ok();
    raw_close(&r);
}

Test(badinput, layout_differs_from_namespace)
{
    struct kvc *a, *b;
    struct kvc_opts o = KVC_OPTS_INIT;

    int rc = kvt_open(&kvd, "bad", &a);
    cr_assert_eq(rc, 0, "kvc_open: %d %s", rc, kvc_strerror(rc));
    o.run_dir = kvd.run_dir;
    o.ns = "bad";
    o.layout = kvt_layout();
    o.layout.n_layers = 3;
    cr_assert_eq(kvc_open(&o, &b), -EINVAL);
    o.ns = "bad2"; /* another namespace may have its own layout */
    cr_assert_eq(kvc_open(&o, &b), 0);
    kvc_close(b);
    cr_assert_eq(kvc_ping(a), 0);
    kvc_close(a);
    other_client_ok();
}

/* Not bad input, but the same raw view of the wire: replies kvd makes in one drain of its ROUTER
 * reach a peer as the parts of one message (server.c, flush_out), each part a whole reply frame.
 * kvd is stopped while the requests are sent, so one drain finds them all. */
Test(badinput, replies_of_one_drain_are_parts_of_one_message)
{
    enum { N = 32 };
    struct raw r;
    uint8_t seen[N] = {0};
    int parts = 0, messages = 0;

    raw_open(&r, 1);
    raw_ping_ok(&r); /* connected and attached */
    cr_assert_eq(kill(kvd.pid, SIGSTOP), 0);
    for (uint32_t i = 0; i < N; i++) {
        uint8_t f[sizeof(struct kvp_hdr)];
        kvp_put_hdr(f, KVP_OP_PING, 0, 1000 + i, 0);
        cr_assert_eq(zmq_send(r.sock, f, sizeof(f), 0), (int)sizeof(f));
    }
    usleep(100000); /* let the frames reach kvd's socket buffer */
    cr_assert_eq(kill(kvd.pid, SIGCONT), 0);
    while (parts < N) {
        zmq_pollitem_t it = {r.sock, 0, ZMQ_POLLIN, 0};
        uint8_t rep[256];
        struct kvp_hdr h;
        int more;
        size_t ml = sizeof(more);
        cr_assert_eq(zmq_poll(&it, 1, 10000), 1, "only %d of %d replies within 10 s", parts, N);
        int n = zmq_recv(r.sock, rep, sizeof(rep), 0);
        cr_assert_eq(n, (int)sizeof(h), "a part is one whole reply frame");
        memcpy(&h, rep, sizeof(h));
        cr_assert_eq(h.magic, KVP_MAGIC);
        cr_assert_eq(h.op, KVP_OP_PING);
        cr_assert_eq(h.status, KVP_OK);
        cr_assert(h.seq >= 1000 && h.seq < 1000 + N && !seen[h.seq - 1000], "seq %u", h.seq);
        seen[h.seq - 1000] = 1;
        parts++;
        cr_assert_eq(zmq_getsockopt(r.sock, ZMQ_RCVMORE, &more, &ml), 0);
        messages += !more;
    }
    cr_assert_lt(messages, N, "%d replies came as %d messages: none were batched", N, messages);
    raw_ping_ok(&r); /* the next reply is a message of its own */
    raw_close(&r);
    other_client_ok();
}
