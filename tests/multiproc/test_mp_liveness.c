/*
 * test_mp_liveness.c - dead workers never leak pages, and workers survive a dead daemon.
 * kvd runs with the heartbeat fallback at 60 s, so a release within the 10 s guard can only come
 * from the kernel-level signals (side channel closing, pidfd), which the stats must name.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvt.h"

static struct kvt_kvd kvd;
static struct kvc *mon;

static void start(const char *const *extra)
{
    int rc = kvt_kvd_start(&kvd, extra);
    cr_assert_eq(rc, 0, "kvd did not start: %d", rc);
    rc = kvt_open(&kvd, "live", &mon);
    cr_assert_eq(rc, 0, "kvc_open: %s", kvc_strerror(rc));
}

static void setup(void)
{
    start(NULL);
}

static void teardown(void)
{
    kvc_close(mon);
    mon = NULL;
    if (getenv("KVT_VERBOSE"))
        kvt_kvd_dump_log(&kvd);
    kvt_kvd_cleanup(&kvd);
}

static void expect_line(struct kvt_proc *p, const char *want)
{
    char line[200];
    int rc = kvt_read_line(p, line, sizeof(line), 20000);
    cr_assert_geq(rc, 0, "worker %d: no line (%d), wanted '%s'", (int)p->pid, rc, want);
    cr_assert_str_eq(line, want, "worker %d said '%s'", (int)p->pid, line);
}

static struct kvc_stats stats(void)
{
    struct kvc_stats s;
    cr_assert_eq(kvc_stats(mon, &s), 0);
    return s;
}

/* "Released through a kernel-level signal, and everything it held is back." */
struct released {
    struct kvc_stats base;
    uint64_t leases; /* leases the dead worker held */
};

static int all_released(const struct kvc_stats *s, void *arg)
{
    const struct released *r = arg;
    uint64_t kernel = (s->released_by_pidfd - r->base.released_by_pidfd) +
                      (s->released_by_sidechannel - r->base.released_by_sidechannel);
    return kernel >= 1 &&
           s->leases_released_on_death - r->base.leases_released_on_death >= r->leases;
}

static void write_prefix(const char *seed, const char *n)
{
    struct kvt_proc w;
    char want[32];
    (void)snprintf(want, sizeof(want), "committed 0");
    cr_assert_eq(kvt_spawn_worker(&w, &kvd, "live", (const char *[]){"write", seed, n, NULL}), 0);
    expect_line(&w, want);
    cr_assert_eq(kvt_wait(&w, 20000), 0);
    kvt_proc_free(&w);
}

Test(liveness, sigkill_with_leases_released_by_kernel_signal, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct kvt_proc w;
    struct released r;
    struct kvc_stats s, held;
    long t0;

    write_prefix("21", "8");
    r.base = stats();
    cr_assert_eq(kvt_spawn_worker(&w, &kvd, "live", (const char *[]){"hold-kill", "21", "8", NULL}),
                 0);
    expect_line(&w, "held");
    held = stats();
    cr_assert_eq(held.pages_pinned - r.base.pages_pinned, 16, "8 read + 8 write leases");
    cr_assert_eq(held.pages_writing - r.base.pages_writing, 8);
    r.leases = 16;
    t0 = kvt_now_ms();
    kill(w.pid, SIGKILL);
    cr_assert_eq(kvt_stats_until(mon, all_released, &r, 10000, &s), 0,
                 "leases not released within 10 s (pidfd %lu, side %lu, heartbeat %lu)",
                 (unsigned long)s.released_by_pidfd, (unsigned long)s.released_by_sidechannel,
                 (unsigned long)s.released_by_heartbeat);
    cr_log_info("released %ld ms after SIGKILL", kvt_now_ms() - t0);
    cr_assert_eq(s.released_by_heartbeat, r.base.released_by_heartbeat);
    cr_assert_eq(s.pages_pinned, r.base.pages_pinned);
    cr_assert_eq(s.pages_writing, r.base.pages_writing, "its uncommitted pages are freed");
    cr_assert_eq(s.pages_committed, r.base.pages_committed, "the shared prefix stays");
    kvt_wait(&w, 1000);
    kvt_proc_free(&w);
}

Test(liveness, killed_between_alloc_and_commit, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kvt_proc w, waiter;
    struct released r;
    struct kvc_stats s;

    r.base = stats();
    cr_assert_eq(
        kvt_spawn_worker(&w, &kvd, "live", (const char *[]){"alloc-kill", "23", "8", NULL}), 0);
    expect_line(&w, "allocated");
    s = stats();
    cr_assert_eq(s.pages_writing - r.base.pages_writing, 8);
    /* a worker on the same prompt parks on the pending pages */
    cr_assert_eq(kvt_spawn_worker(&waiter, &kvd, "live", (const char *[]){"once", "23", "8", NULL}),
                 0);
    expect_line(&waiter, "ready");
    kvt_send_line(&waiter, "go");
    expect_line(&waiter, "sent");
    {
        char line[200];
        int rc = kvt_read_line(&waiter, line, sizeof(line), 300);
        cr_assert_eq(rc, -ETIMEDOUT, "the waiter must be held while the pages are pending: '%s'",
                     rc >= 0 ? line : "");
    }

    r.leases = 8;
    kill(w.pid, SIGKILL);
    cr_assert_eq(kvt_stats_until(mon, all_released, &r, 10000, &s), 0,
                 "write leases not released within 10 s");
    cr_assert_eq(s.released_by_heartbeat, r.base.released_by_heartbeat);
    /* the waiter learns the pages will never come, computes them itself */
    expect_line(&waiter, "computed 0");
    cr_assert_eq(kvt_wait(&waiter, 20000), 0);
    s = stats();
    cr_assert_eq(s.pages_writing, r.base.pages_writing);
    cr_assert_eq(s.pages_committed - r.base.pages_committed, 8);
    cr_assert_eq(s.pages_pinned, r.base.pages_pinned);
    kvt_wait(&w, 1000);
    kvt_proc_free(&w);
    kvt_proc_free(&waiter);
}

Test(liveness, forked_child_does_not_keep_leases, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kvt_proc w;
    struct released r;
    struct kvc_stats s;
    char line[200], l2[200];
    int child = 0;

    write_prefix("25", "8");
    r.base = stats();
    cr_assert_eq(kvt_spawn_worker(&w, &kvd, "live", (const char *[]){"fork-hold", "25", "8", NULL}),
                 0);
    cr_assert_geq(kvt_read_line(&w, line, sizeof(line), 20000), 0);
    cr_assert_geq(kvt_read_line(&w, l2, sizeof(l2), 20000), 0);
    if (sscanf(line, "held %d", &child) != 1)
        sscanf(l2, "held %d", &child);
    cr_assert_gt(child, 0, "lines: '%s' '%s'", line, l2);
    cr_assert(strcmp(line, "child ok") == 0 || strcmp(l2, "child ok") == 0,
              "the child must get -ECHILD from the parent's handle: '%s' '%s'", line, l2);
    s = stats();
    cr_assert_eq(s.pages_pinned - r.base.pages_pinned, 8);
    r.leases = 8;
    kill(w.pid, SIGKILL);
    cr_assert_eq(kvt_stats_until(mon, all_released, &r, 10000, &s), 0,
                 "a forked child kept the dead parent's leases alive");
    cr_assert_eq(kill(child, 0), 0, "the child is still running");
    cr_assert_eq(s.pages_pinned, r.base.pages_pinned);
    cr_assert_eq(s.released_by_heartbeat, r.base.released_by_heartbeat);
    kill(child, SIGKILL);
    kvt_wait(&w, 1000);
    kvt_proc_free(&w);
}

static void commit_some(struct kvc *c, unsigned seed, uint32_t n, struct kvc_hash *chain)
{
    int32_t t[16 * 16];
    struct kvc_page p[16];
    struct kvc_commit e[16];
    struct kvc_info info;

    cr_assert_leq(n, 16);
    cr_assert_eq(kvc_get_info(c, &info), 0);
    kvt_tokens(t, n * 16, seed);
    cr_assert_eq(kvc_hash_chain(kvc_get_hasher(c), t, n * 16, NULL, chain, n), (int)n);
    cr_assert_eq(kvc_alloc(c, n, chain, p), 0);
    for (uint32_t i = 0; i < n; i++) {
        kvt_fill_page(kvc_page_ptr(c, &p[i]), info.page_bytes, &chain[i]);
        e[i] = (struct kvc_commit){.page_id = p[i].id, .ntok = 16, .hash = chain[i]};
        if (i)
            e[i].parent = chain[i - 1];
    }
    cr_assert_eq(kvc_commit(c, e, n, p), 0);
    cr_assert_eq(kvc_release_pages(c, p, n), 0);
}

static void daemon_gone_then_back(int hard)
{
    struct kvc *c;
    struct kvc_hash chain[4];
    struct kvc_page p[4];
    struct kvc_req r = {.op = KVC_OP_PING}, *done = NULL;
    struct kvc_stats st;
    uint32_t hit, next;
    int rc;

    cr_assert_eq(kvt_open(&kvd, "live", &c), 0);
    commit_some(c, 31, 4, chain);
    cr_assert_eq(kvc_submit(c, &r), 0);
    cr_assert_eq(kvc_complete(c, 5000, &done), 0);
    cr_assert_eq(done, &r);
    cr_assert_eq(r.result, 0);

    kvc_close(mon);
    mon = NULL;
    if (hard)
        kvt_kvd_kill(&kvd);
    else
        cr_assert_eq(kvt_kvd_stop(&kvd), 0, "kvd exits 0 on SIGTERM");
    /* every call on the handle now fails clearly */
    cr_assert_eq(kvc_ping(c), -ESHUTDOWN);
    cr_assert_eq(kvc_stats(c, &st), -ESHUTDOWN);
    cr_assert_eq(kvc_lookup(c, chain, 4, KVC_LOOKUP_PIN, 0, p, &hit, &next), -ESHUTDOWN);
    cr_assert_eq(kvc_submit(c, &r), -ESHUTDOWN);
    cr_assert_eq(kvc_complete(c, 0, &done), -ESHUTDOWN);
    cr_assert_null(kvc_page_ptr(c, &p[0]));
    rc = kvc_reconnect(c);
    cr_assert(rc == -ENOENT || rc == -ECONNREFUSED, "reconnect while kvd is down: %d", rc);
    cr_assert_eq(kvc_ping(c), -ENOTCONN);

    cr_assert_eq(kvt_kvd_restart(&kvd), 0);
    cr_assert_eq(kvc_reconnect(c), 0);
    cr_assert_eq(kvc_ping(c), 0);
    cr_assert_eq(kvc_lookup(c, chain, 4, KVC_LOOKUP_PIN, 0, p, &hit, &next), 0);
    cr_log_info("after restart %u of 4 pages found", hit);
    if (hit)
        cr_assert_eq(kvc_release_pages(c, p, hit), 0);
    commit_some(c, 33, 4, chain); /* the new arena is usable */
    cr_assert_eq(kvt_open(&kvd, "live", &mon), 0);
    kvc_close(c);
}

Test(liveness, daemon_restart_clients_reattach, .init = setup, .fini = teardown, .timeout = 60)
{
    daemon_gone_then_back(0);
}

Test(liveness, daemon_killed_clients_reattach, .init = setup, .fini = teardown, .timeout = 60)
{
    daemon_gone_then_back(1);
}

/* 8 MiB of 8.5 KiB pages. Every page under a lease: -ENOSPC, not a hang or a crash. */
Test(liveness, full_pool_every_page_pinned_is_enospc, .fini = teardown, .timeout = 90)
{
    static int32_t t[1200 * 16];
    static struct kvc_hash chain[1200];
    static struct kvc_page p[1200];
    static struct kvc_commit e[64];
    struct kvc_stats s;
    uint32_t n = 0;
    int rc;

    start((const char *[]){"--arena-size", "8M", NULL});
    kvt_tokens(t, 1200 * 16, 41);
    cr_assert_eq(kvc_hash_chain(kvc_get_hasher(mon), t, 1200 * 16, NULL, chain, 1200), 1200);
    /* fill with write leases, 64 at a time, then commit each batch (read leases) */
    for (;;) {
        rc = kvc_alloc(mon, 64, NULL, p + n);
        if (rc == -ENOSPC)
            break;
        cr_assert_eq(rc, 0, "alloc: %s", kvc_strerror(rc));
        for (uint32_t i = 0; i < 64; i++) {
            e[i] = (struct kvc_commit){.page_id = p[n + i].id, .ntok = 16, .hash = chain[n + i]};
            if (n + i)
                e[i].parent = chain[n + i - 1];
        }
        cr_assert_eq(kvc_commit(mon, e, 64, p + n), 0);
        n += 64;
        cr_assert_lt(n, 1200, "an 8 MiB pool cannot hold 1200 pages");
    }
    /* smaller requests fail too, until one page is released */
    for (uint32_t want = 32; want >= 1; want /= 2) {
        struct kvc_page q[32];
        rc = kvc_alloc(mon, want, NULL, q);
        if (rc == 0) { /* the tail of the last chunk: take it, it is pinned now */
            cr_assert_lt(n + want, 1200);
            memcpy(p + n, q, want * sizeof(q[0]));
            for (uint32_t i = 0; i < want; i++) {
                e[i] = (struct kvc_commit){.page_id = q[i].id,
                                           .ntok = 16,
                                           .hash = chain[n + i],
                                           .parent = chain[n + i - 1]};
            }
            cr_assert_eq(kvc_commit(mon, e, want, p + n), 0);
            n += want;
            want *= 2;
            continue;
        }
        cr_assert_eq(rc, -ENOSPC, "alloc %u: %s", want, kvc_strerror(rc));
        if (want == 1)
            break;
    }
    cr_assert_eq(kvc_stats(mon, &s), 0);
    cr_assert_eq(s.pages_free, 0);
    cr_assert_eq(s.pages_pinned, n);
    cr_log_info("pool full at %u pinned pages", n);
    /* the last page released (a leaf) is evictable: the next alloc succeeds */
    cr_assert_eq(kvc_release_pages(mon, p + n - 1, 1), 0);
    cr_assert_eq(kvc_alloc(mon, 1, NULL, p + n - 1), 0);
    cr_assert_eq(kvc_ping(mon), 0);
}
