/*
 * test_mp_async.c - libkvclient's pipelining against the real kvd: many requests in flight,
 * replies out of order (a parked LOOKUP_WAIT finishes after later requests), synchronous calls
 * mixed in, the in-flight limit, and a request timeout whose late reply is consumed and whose
 * leases are given back.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "kvt.h"

static struct kvt_kvd kvd;
static struct kvc *c;
static struct kvc_hash chain[8];
static struct kvc_page pages[8];

static void setup(void)
{
    int32_t t[8 * 16];
    struct kvc_commit e[8];
    struct kvc_info info;

    cr_assert_eq(kvt_kvd_start(&kvd, NULL), 0);
    cr_assert_eq(kvt_open(&kvd, "async", &c), 0);
    cr_assert_eq(kvc_get_info(c, &info), 0);
    kvt_tokens(t, 8 * 16, 3);
    cr_assert_eq(kvc_hash_chain(kvc_get_hasher(c), t, 8 * 16, NULL, chain, 8), 8);
    cr_assert_eq(kvc_alloc(c, 8, chain, pages), 0);
    for (int i = 0; i < 8; i++) {
        kvt_fill_page(kvc_page_ptr(c, &pages[i]), info.page_bytes, &chain[i]);
        e[i] = (struct kvc_commit){.page_id = pages[i].id, .ntok = 16, .hash = chain[i]};
        if (i)
            e[i].parent = chain[i - 1];
    }
    cr_assert_eq(kvc_commit(c, e, 8, pages), 0);
    cr_assert_eq(kvc_release_pages(c, pages, 8), 0);
}

static void teardown(void)
{
    kvc_close(c);
    if (kvd.pid > 0)
        kill(kvd.pid, SIGCONT);
    kvt_kvd_cleanup(&kvd);
}

TestSuite(async, .init = setup, .fini = teardown, .timeout = 60);

/* Completes n requests of r[] (any order): each succeeds once (its user_data counts it) and each
 * lookup hits the whole chain; page_bytes != 0 also checks every hit page's bytes, else the last
 * page's id. */
static void complete_n(struct kvc_req *r, int n, size_t page_bytes)
{
    struct kvc_req *done;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(kvc_complete(c, 10000, &done), 0);
        cr_assert_eq(done->result, 0, "request %d: %s", (int)(done - r),
                     kvc_strerror(done->result));
        ++*(int *)done->user_data;
        if (done->op != KVC_OP_LOOKUP)
            continue;
        cr_assert_eq(done->n_out, 8);
        if (!page_bytes) {
            cr_assert_eq(done->pages[7].id, pages[7].id);
            continue;
        }
        for (int k = 0; k < 8; k++) {
            cr_assert_eq(done->pages[k].id, pages[k].id);
            cr_assert_eq(kvt_check_page(kvc_page_ptr(c, &done->pages[k]), page_bytes, &chain[k]),
                         0);
        }
    }
}

#define NREQ 300

Test(async, many_in_flight)
{
    static struct kvc_req r[NREQ];
    static struct kvc_page out[NREQ][8];
    static struct kvc_stats st;
    int seen[NREQ] = {0};
    struct kvc_req *done;
    struct kvc_info info;

    cr_assert_eq(kvc_get_info(c, &info), 0);
    for (int i = 0; i < NREQ; i++) {
        r[i] = (struct kvc_req){.user_data = &seen[i]};
        if (i % 3 == 0) {
            r[i].op = KVC_OP_PING;
        } else if (i == NREQ - 1) {
            r[i].op = KVC_OP_STATS;
            r[i].stats = &st;
        } else {
            r[i].op = KVC_OP_LOOKUP;
            r[i].flags = KVC_LOOKUP_PIN;
            r[i].count = 8;
            r[i].hashes = chain;
            r[i].pages = out[i];
        }
        cr_assert_eq(kvc_submit(c, &r[i]), 0);
    }
    cr_assert_eq(kvc_inflight(c), NREQ);
    complete_n(r, NREQ, info.page_bytes);
    cr_assert_eq(kvc_complete(c, 0, &done), -ENOENT, "nothing left in flight");
    for (int i = 0; i < NREQ; i++)
        cr_assert_eq(seen[i], 1, "request %d completed %d times", i, seen[i]);
    cr_assert_geq(st.lookups, 1);
    /* give every pin back, pipelined too */
    int n = 0;
    for (int i = 0; i < NREQ; i++) {
        if (r[i].op != KVC_OP_LOOKUP)
            continue;
        r[i] = (struct kvc_req){.op = KVC_OP_RELEASE, .count = 8, .pages = out[i]};
        cr_assert_eq(kvc_submit(c, &r[i]), 0);
        n++;
    }
    for (int i = 0; i < n; i++) {
        cr_assert_eq(kvc_complete(c, 10000, &done), 0);
        cr_assert_eq(done->result, 0);
        cr_assert_eq(done->n_out, 8);
    }
    cr_assert_eq(kvc_stats(c, &st), 0);
    cr_assert_eq(st.pages_pinned, 0);
}

Test(async, parked_lookup_completes_after_later_requests)
{
    struct kvc *w;
    int32_t t[4 * 16];
    struct kvc_hash h[4];
    struct kvc_page wp[4], rp[4];
    struct kvc_commit e[4];
    struct kvc_req look = {.op = KVC_OP_LOOKUP,
                           .flags = KVC_LOOKUP_PIN | KVC_LOOKUP_WAIT,
                           .wait_ms = 20000,
                           .count = 4,
                           .hashes = h,
                           .pages = rp};
    struct kvc_req ping = {.op = KVC_OP_PING}, *done;

    cr_assert_eq(kvt_open(&kvd, "async", &w), 0);
    kvt_tokens(t, 4 * 16, 9);
    cr_assert_eq(kvc_hash_chain(kvc_get_hasher(w), t, 4 * 16, NULL, h, 4), 4);
    cr_assert_eq(kvc_alloc(w, 4, h, wp), 0); /* pending */
    cr_assert_eq(kvc_submit(c, &look), 0);
    cr_assert_eq(kvc_submit(c, &ping), 0);
    cr_assert_eq(kvc_complete(c, 10000, &done), 0);
    cr_assert_eq(done, &ping, "the ping overtakes the parked lookup");
    cr_assert_eq(kvc_ping(c), 0, "a synchronous call while the lookup is parked");
    cr_assert_eq(kvc_complete(c, 100, &done), -ETIMEDOUT);
    for (int i = 0; i < 4; i++) {
        e[i] = (struct kvc_commit){.page_id = wp[i].id, .ntok = 16, .hash = h[i]};
        if (i)
            e[i].parent = h[i - 1];
    }
    cr_assert_eq(kvc_commit(w, e, 4, wp), 0);
    cr_assert_eq(kvc_complete(c, 10000, &done), 0);
    cr_assert_eq(done, &look);
    cr_assert_eq(look.result, 0);
    cr_assert_eq(look.n_out, 4);
    cr_assert_eq(rp[3].id, wp[3].id);
    cr_assert_eq(kvc_release_pages(c, rp, 4), 0);
    cr_assert_eq(kvc_release_pages(w, wp, 4), 0);
    kvc_close(w);
}

/* kvc_submitv: up to 64 requests as the parts of one message, each with its own reply; a prefix
 * is submitted when a later request is refused; the in-flight limit cuts a batch short too. */
Test(async, submitv_batches)
{
    static struct kvc_req r[KVC_MAX_SUBMITV];
    static struct kvc_page out[KVC_MAX_SUBMITV][8];
    struct kvc_req *v[KVC_MAX_SUBMITV + 1], *done;
    struct kvc_stats st;
    int seen[KVC_MAX_SUBMITV] = {0};

    for (int i = 0; i < KVC_MAX_SUBMITV; i++) {
        r[i] = (struct kvc_req){.user_data = &seen[i]};
        if (i % 4 == 3) {
            r[i].op = KVC_OP_PING;
        } else {
            r[i].op = KVC_OP_LOOKUP;
            r[i].flags = KVC_LOOKUP_PIN;
            r[i].count = 8;
            r[i].hashes = chain;
            r[i].pages = out[i];
        }
        v[i] = &r[i];
    }
    cr_assert_eq(kvc_submitv(c, v, KVC_MAX_SUBMITV), KVC_MAX_SUBMITV);
    cr_assert_eq(kvc_inflight(c), KVC_MAX_SUBMITV);
    complete_n(r, KVC_MAX_SUBMITV, 0);
    for (int i = 0; i < KVC_MAX_SUBMITV; i++)
        cr_assert_eq(seen[i], 1, "request %d completed %d times", i, seen[i]);
    int n = 0; /* the pins back, batched too */
    for (int i = 0; i < KVC_MAX_SUBMITV; i++)
        if (r[i].op == KVC_OP_LOOKUP) {
            r[i] = (struct kvc_req){.op = KVC_OP_RELEASE, .count = 8, .pages = out[i]};
            v[n++] = &r[i];
        }
    cr_assert_eq(kvc_submitv(c, v, (unsigned)n), n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(kvc_complete(c, 10000, &done), 0);
        cr_assert_eq(done->result, 0);
        cr_assert_eq(done->n_out, 8);
    }
    cr_assert_eq(kvc_stats(c, &st), 0);
    cr_assert_eq(st.pages_pinned, 0);

    /* a refused request ends the batch: the ones before it go, nothing after it */
    for (int i = 0; i < 4; i++) {
        r[i] = (struct kvc_req){.op = KVC_OP_PING};
        v[i] = &r[i];
    }
    r[2] = (struct kvc_req){.op = KVC_OP_LOOKUP, .count = 1, .hashes = chain}; /* no pages */
    cr_assert_eq(kvc_submitv(c, v, 4), 2);
    cr_assert_eq(kvc_inflight(c), 2);
    cr_assert_eq(kvc_submitv(c, v + 2, 2), -EINVAL, "the first refused: nothing submitted");
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(kvc_complete(c, 10000, &done), 0);
        cr_assert_eq(done->result, 0);
    }
    cr_assert_eq(kvc_submitv(c, v, KVC_MAX_SUBMITV + 1), -EINVAL);
    cr_assert_eq(kvc_submitv(c, v, 0), 0);
    cr_assert_eq(kvc_submitv(c, NULL, 1), -EINVAL);
    cr_assert_eq(kvc_inflight(c), 0);

    /* two slots left: a batch of four submits two */
    static struct kvc_req fill[KVC_MAX_INFLIGHT];
    for (unsigned i = 0; i < KVC_MAX_INFLIGHT - 2; i++) {
        fill[i] = (struct kvc_req){.op = KVC_OP_PING};
        cr_assert_eq(kvc_submit(c, &fill[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = (struct kvc_req){.op = KVC_OP_PING};
        v[i] = &r[i];
    }
    cr_assert_eq(kvc_submitv(c, v, 4), 2);
    cr_assert_eq(kvc_submitv(c, v + 2, 2), -EAGAIN);
    for (unsigned i = 0; i < KVC_MAX_INFLIGHT; i++) {
        cr_assert_eq(kvc_complete(c, 10000, &done), 0);
        cr_assert_eq(done->result, 0);
    }
}

Test(async, inflight_limit)
{
    static struct kvc_req r[KVC_MAX_INFLIGHT + 1];
    struct kvc_req *done;

    for (unsigned i = 0; i < KVC_MAX_INFLIGHT; i++) {
        r[i] = (struct kvc_req){.op = KVC_OP_PING};
        cr_assert_eq(kvc_submit(c, &r[i]), 0, "submit %u", i);
    }
    r[KVC_MAX_INFLIGHT] = (struct kvc_req){.op = KVC_OP_PING};
    cr_assert_eq(kvc_submit(c, &r[KVC_MAX_INFLIGHT]), -EAGAIN);
    cr_assert_eq(kvc_ping(c), -EAGAIN, "a synchronous call needs a slot too");
    for (unsigned i = 0; i < KVC_MAX_INFLIGHT; i++) {
        cr_assert_eq(kvc_complete(c, 10000, &done), 0);
        cr_assert_eq(done->result, 0);
    }
    cr_assert_eq(kvc_ping(c), 0);
}

Test(async, bad_requests_are_not_sent)
{
    struct kvc_req r = {.op = KVC_OP_LOOKUP, .count = 1, .hashes = chain}; /* no pages */
    struct kvc_req *done;

    cr_assert_eq(kvc_submit(c, &r), -EINVAL);
    r = (struct kvc_req){.op = 2 /* DETACH is not a user op */};
    cr_assert_eq(kvc_submit(c, &r), -EINVAL);
    r = (struct kvc_req){
        .op = KVC_OP_LOOKUP, .count = KVC_MAX_CHAIN + 1, .hashes = chain, .pages = pages};
    cr_assert_eq(kvc_submit(c, &r), -E2BIG);
    r = (struct kvc_req){.op = KVC_OP_LOOKUP,
                         .count = 1,
                         .hashes = chain,
                         .pages = pages,
                         .flags = KVC_LOOKUP_WAIT,
                         .wait_ms = KVC_MAX_WAIT_MS + 1};
    cr_assert_eq(kvc_submit(c, &r), -EINVAL);
    cr_assert_eq(kvc_inflight(c), 0);
    cr_assert_eq(kvc_complete(c, 0, &done), -ENOENT);
}

/* kvd stopped (SIGSTOP): a call times out; its late reply, carrying pins, is consumed and the pins
 * are released by the library. */
Test(async, timeout_then_late_reply_released)
{
    struct kvc_opts o = KVC_OPTS_INIT;
    struct kvc *t;
    struct kvc_page p[8];
    struct kvc_stats st;
    uint32_t hit, next;
    long end;

    o.run_dir = kvd.run_dir;
    o.ns = "async";
    o.layout = kvt_layout();
    o.timeout_ms = 300;
    cr_assert_eq(kvc_open(&o, &t), 0);
    cr_assert_eq(kill(kvd.pid, SIGSTOP), 0);
    cr_assert_eq(kvc_lookup(t, chain, 8, KVC_LOOKUP_PIN, 0, p, &hit, &next), -ETIMEDOUT);
    cr_assert_eq(kill(kvd.pid, SIGCONT), 0);
    cr_assert_eq(kvc_ping(t), 0, "the handle works after a timeout");
    end = kvt_now_ms() + 10000;
    do {
        cr_assert_eq(kvc_ping(t), 0); /* lets the library process the orphaned release reply */
        cr_assert_eq(kvc_stats(c, &st), 0);
    } while (st.pages_pinned != 0 && kvt_now_ms() < end);
    cr_assert_eq(st.pages_pinned, 0, "pins of a timed-out lookup must be released");
    cr_assert_eq(st.lookups, 1, "kvd did serve the timed-out lookup (setup made none)");
    kvc_close(t);
}
