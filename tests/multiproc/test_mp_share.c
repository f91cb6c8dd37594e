/*
 * test_mp_share.c - workers in separate processes share pages through a real kvd: one writes a
 * prefix and four others find it and read it byte-exact in place; pins are refcounted across
 * processes; two writers of the same prefix end up with one copy (dedup); workers starting on one
 * prompt compute it once.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvt.h"

#define NP  24 /* pages in the shared prefix */
#define NPS "24"
#define NRD 4 /* readers */

static struct kvt_kvd kvd;
static struct kvc *mon; /* the test's own client, for stats */

static void setup(void)
{
    int rc = kvt_kvd_start(&kvd, NULL);
    cr_assert_eq(rc, 0, "kvd did not start: %d", rc);
    rc = kvt_open(&kvd, "mp", &mon);
    cr_assert_eq(rc, 0, "kvc_open: %s", kvc_strerror(rc));
}

static void teardown(void)
{
    kvc_close(mon);
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

Test(multiproc, share_prefix_byte_exact_and_refcounts, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct kvt_proc w, r[NRD];
    struct kvc_stats s0 = stats(), s;

    /* one writer commits the prefix and keeps its read leases */
    cr_assert_eq(
        kvt_spawn_worker(&w, &kvd, "mp", (const char *[]){"write", "7", NPS, "hold", NULL}), 0);
    expect_line(&w, "committed 0");
    expect_line(&w, "held");
    s = stats();
    cr_assert_eq(s.pages_committed - s0.pages_committed, NP);
    cr_assert_eq(s.pages_pinned - s0.pages_pinned, NP);

    /* four readers find it and read every byte in place, pinning it too */
    for (int i = 0; i < NRD; i++)
        cr_assert_eq(
            kvt_spawn_worker(&r[i], &kvd, "mp", (const char *[]){"read", "7", NPS, "hold", NULL}),
            0);
    for (int i = 0; i < NRD; i++) {
        expect_line(&r[i], "read " NPS);
        expect_line(&r[i], "held");
    }
    s = stats();
    cr_assert_eq(s.clients - s0.clients, 1 + NRD);
    cr_assert_eq(s.pages_pinned - s0.pages_pinned, NP, "pinned pages are counted once");
    cr_assert_eq(s.lookup_pages_hit - s0.lookup_pages_hit, (uint64_t)NP * NRD);
    cr_assert_eq(s.pages_committed - s0.pages_committed, NP, "no copies were made");

    /* the writer lets go: the readers' pins keep the pages */
    kvt_send_line(&w, "release");
    cr_assert_eq(kvt_wait(&w, 20000), 0);
    s = stats();
    cr_assert_eq(s.pages_pinned - s0.pages_pinned, NP);
    for (int i = 0; i < NRD; i++) {
        kvt_send_line(&r[i], "release");
        cr_assert_eq(kvt_wait(&r[i], 20000), 0);
        s = stats();
        cr_assert_eq(s.pages_pinned - s0.pages_pinned, i + 1 < NRD ? NP : 0,
                     "after %d readers released", i + 1);
    }
    cr_assert_eq(s.pages_committed - s0.pages_committed, NP, "unpinned pages stay cached");
    kvt_proc_free(&w);
    for (int i = 0; i < NRD; i++)
        kvt_proc_free(&r[i]);
}

Test(multiproc, dedup_two_writers_one_copy, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kvt_proc a, b, rd;
    struct kvc_stats s0 = stats(), s;

    cr_assert_eq(kvt_spawn_worker(&a, &kvd, "mp", (const char *[]){"stage", "9", "8", NULL}), 0);
    cr_assert_eq(kvt_spawn_worker(&b, &kvd, "mp", (const char *[]){"stage", "9", "8", NULL}), 0);
    expect_line(&a, "written");
    expect_line(&b, "written");
    s = stats();
    cr_assert_eq(s.pages_writing - s0.pages_writing, 16);
    kvt_send_line(&a, "commit");
    expect_line(&a, "committed 0");
    kvt_send_line(&b, "commit");
    expect_line(&b, "committed 8"); /* every page of b deduplicated to a's */
    expect_line(&a, "held");
    expect_line(&b, "held");
    s = stats();
    cr_assert_eq(s.commit_dedups - s0.commit_dedups, 8);
    cr_assert_eq(s.pages_committed - s0.pages_committed, 8, "one copy of the prefix");
    cr_assert_eq(s.pages_writing - s0.pages_writing, 0, "the loser's pages were freed");
    cr_assert_eq(s.pages_pinned - s0.pages_pinned, 8);

    /* the kept copy holds the content (b checked it in place too) */
    cr_assert_eq(kvt_spawn_worker(&rd, &kvd, "mp", (const char *[]){"read", "9", "8", NULL}), 0);
    expect_line(&rd, "read 8");
    cr_assert_eq(kvt_wait(&rd, 20000), 0);
    kvt_send_line(&a, "done");
    kvt_send_line(&b, "done");
    cr_assert_eq(kvt_wait(&a, 20000), 0);
    cr_assert_eq(kvt_wait(&b, 20000), 0);
    s = stats();
    cr_assert_eq(s.pages_pinned - s0.pages_pinned, 0);
    kvt_proc_free(&a);
    kvt_proc_free(&b);
    kvt_proc_free(&rd);
}

#define NONCE 6

/* N workers start on one prompt together. All may miss; the first ALLOC makes the prompt's hashes
 * pending, every later ALLOC of them comes back KVC_PAGE_BUSY, so those workers release and wait
 * (LOOKUP_WAIT) for the one that computes. */
Test(multiproc, same_prompt_computed_once, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kvt_proc w[NONCE];
    struct kvc_stats s0 = stats(), s;
    char line[200];
    int computed = 0, found = 0, dedup_pages = 0;

    for (int i = 0; i < NONCE; i++)
        cr_assert_eq(
            kvt_spawn_worker(&w[i], &kvd, "mp", (const char *[]){"once", "11", "32", NULL}), 0);
    for (int i = 0; i < NONCE; i++)
        expect_line(&w[i], "ready");
    for (int i = 0; i < NONCE; i++)
        kvt_send_line(&w[i], "go");
    for (int i = 0; i < NONCE; i++)
        expect_line(&w[i], "sent");
    for (int i = 0; i < NONCE; i++) {
        int d;
        cr_assert_geq(kvt_read_line(&w[i], line, sizeof(line), 20000), 0);
        if (strcmp(line, "found") == 0)
            found++;
        else if (sscanf(line, "computed %d", &d) == 1)
            computed++, dedup_pages += d;
        else
            cr_assert_fail("worker %d: %s", i, line);
        cr_assert_eq(kvt_wait(&w[i], 20000), 0);
        kvt_proc_free(&w[i]);
    }
    s = stats();
    cr_log_info("same prompt: %d computed (%d pages deduplicated), %d found", computed, dedup_pages,
                found);
    cr_assert_eq(computed, 1, "the prompt must be computed once");
    cr_assert_eq(dedup_pages, 0);
    cr_assert_eq(computed + found, NONCE);
    cr_assert_eq(s.pages_committed - s0.pages_committed, 32, "the prompt is stored once");
    cr_assert_eq(s.commit_dedups - s0.commit_dedups, (uint64_t)dedup_pages);
    cr_assert_eq(s.pages_pinned - s0.pages_pinned, 0);
}

/* The deterministic half of "computed once": a worker has allocated the prompt (pending) but not
 * committed; workers that start now wait for it (kvd parks their lookups) and find it when it is
 * committed: none computes. */
Test(multiproc, late_joiners_wait_for_pending, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kvt_proc wr, w[4];
    struct kvc_stats s0, s;

    cr_assert_eq(kvt_spawn_worker(&wr, &kvd, "mp", (const char *[]){"pending", "15", "16", NULL}),
                 0);
    expect_line(&wr, "allocated");
    s0 = stats();
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(
            kvt_spawn_worker(&w[i], &kvd, "mp", (const char *[]){"once", "15", "16", NULL}), 0);
        expect_line(&w[i], "ready");
        kvt_send_line(&w[i], "go");
        expect_line(&w[i], "sent");
    }
    /* kvd holds their answers while the prompt is being written (a lookup that reached kvd after
     * the commit below would simply find it: this check can only miss, never fail wrongly) */
    for (int i = 0; i < 4; i++) {
        char line[200];
        int rc = kvt_read_line(&w[i], line, sizeof(line), 300);
        cr_assert_eq(rc, -ETIMEDOUT, "worker %d answered before the commit: '%s'", i,
                     rc >= 0 ? line : "");
    }
    s = stats();
    cr_assert_eq(s.commits - s0.commits, 0);
    kvt_send_line(&wr, "commit");
    expect_line(&wr, "committed 0");
    for (int i = 0; i < 4; i++) {
        expect_line(&w[i], "found");
        cr_assert_eq(kvt_wait(&w[i], 20000), 0);
        kvt_proc_free(&w[i]);
    }
    cr_assert_eq(kvt_wait(&wr, 20000), 0);
    kvt_proc_free(&wr);
    s = stats();
    cr_assert_eq(s.commits - s0.commits, 16, "computed by one worker only");
    cr_assert_eq(s.commit_dedups - s0.commit_dedups, 0);
    cr_assert_eq(s.pages_pinned, 0);
}
