/*
 * kvc_worker.c - a small inference-worker stand-in for the multi-process tests. It is exec'd
 * fresh by each test (so its ZeroMQ context is created after the fork), talks to kvd only
 * through libkvclient, reports on stdout one line per step, and takes go-ahead lines on stdin.
 *
 *   kvc_worker RUN_DIR NS MODE ARGS...
 *     write SEED N [hold]   hash prompt SEED, alloc N pages (pending), fill, commit: "committed D"
 *     read SEED N [hold]    lookup PIN|WAIT, check every byte in place: "read N"
 *     stage SEED N          alloc + fill, "written", wait for a line, commit: "committed D",
 *                           wait for a line, release
 *     once SEED N           "ready", wait for a line, then lookup-or-compute: "sent" when the
 *                           first lookup is out, then "found" or "computed D" (D deduplicated)
 *     pending SEED N        alloc with the prompt's hashes + fill: "allocated", wait for a line,
 *                           commit: "committed D", release
 *     hold-kill SEED N      pin the N committed pages, alloc N more (write leases): "held", pause
 *     alloc-kill SEED N     alloc N pages with the prompt's hashes (pending): "allocated", pause
 *     fork-hold SEED N      pin N pages, fork a child that tries the parent's handle (expects
 *                           -ECHILD: "child ok") and sleeps: "held CHILDPID", pause
 *     open-as UID GID       drop to uid/gid (no supplementary groups), kvc_open: "open RC"
 * With "hold" the worker prints "held" after its step and keeps its leases until a line arrives.
 * Exit status: 0 ok, 2 usage, 3 open failed, 4 unexpected return code, 5 content mismatch.
 */
#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvt.h"

#define MAXP 256

static struct kvc *c;
static struct kvc_info info;
static struct kvc_hash chain[MAXP];
static struct kvc_page pages[2 * MAXP];

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void wait_line(void)
{
    char line[64];
    if (fgets(line, sizeof(line), stdin) == NULL)
        return;
}

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ < 0) {                                                                             \
            say("error %s: %d %s", #call, rc_, kvc_strerror(rc_));                                 \
            exit(4);                                                                               \
        }                                                                                          \
    } while (0)

static void make_chain(unsigned seed, uint32_t n)
{
    int32_t tokens[MAXP * 16];
    struct kvc_layout l = kvt_layout();

    kvt_tokens(tokens, (size_t)n * l.page_tokens, seed);
    if (kvc_hash_chain(kvc_get_hasher(c), tokens, (size_t)n * l.page_tokens, NULL, chain, n) !=
        (int)n) {
        say("error hash");
        exit(4);
    }
}

static void check_pages(const struct kvc_page *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        void *ptr = kvc_page_ptr(c, &p[i]);
        size_t bad = ptr ? kvt_check_page(ptr, info.page_bytes, &chain[i]) : 1;
        if (bad) {
            say("bad page %u byte %zu", i, bad - 1);
            exit(5);
        }
    }
}

/* alloc n pages for chain[first..first+n), fill them; pages[first..] */
static void alloc_fill(uint32_t first, uint32_t n, int with_hashes)
{
    CHECK(kvc_alloc(c, n, with_hashes ? chain + first : NULL, pages + first));
    for (uint32_t i = 0; i < n; i++)
        kvt_fill_page(kvc_page_ptr(c, &pages[first + i]), info.page_bytes, &chain[first + i]);
}

static uint32_t commit(uint32_t first, uint32_t n)
{
    static struct kvc_commit e[MAXP];
    uint32_t dedup = 0;

    for (uint32_t i = 0; i < n; i++) {
        uint32_t b = first + i;
        e[i] = (struct kvc_commit){
            .page_id = pages[b].id, .ntok = kvt_layout().page_tokens, .hash = chain[b]};
        if (b > 0)
            e[i].parent = chain[b - 1];
    }
    CHECK(kvc_commit(c, e, n, pages + first));
    for (uint32_t i = 0; i < n; i++)
        dedup += (pages[first + i].flags & KVC_PAGE_DEDUP) != 0;
    return dedup;
}

static int mode_open_as(uid_t uid, gid_t gid)
{
    if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
        say("error setresuid: %s", strerror(errno));
        return 4;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct kvc_opts o = KVC_OPTS_INIT;
    const char *mode;
    unsigned seed;
    uint32_t n, hit, next;
    int hold, rc;

    if (argc < 6)
        return 2;
    mode = argv[3];
    seed = (unsigned)strtoul(argv[4], NULL, 10);
    n = (uint32_t)strtoul(argv[5], NULL, 10);
    hold = argc > 6 && strcmp(argv[6], "hold") == 0;
    if (strcmp(mode, "open-as") == 0) {
        if (mode_open_as((uid_t)seed, (gid_t)n) != 0)
            return 4;
        n = 0;
    }
    if (n > MAXP)
        return 2;

    o.run_dir = argv[1];
    o.ns = argv[2];
    o.layout = kvt_layout();
    o.timeout_ms = 10000;
    rc = kvc_open(&o, &c);
    if (strcmp(mode, "open-as") == 0) {
        say("open %d", rc);
        if (rc == 0) {
            rc = kvc_ping(c);
            say("ping %d", rc);
            kvc_close(c);
        }
        return 0;
    }
    if (rc < 0) {
        say("error open: %d %s", rc, kvc_strerror(rc));
        return 3;
    }
    CHECK(kvc_get_info(c, &info));
    make_chain(seed, n);

    if (strcmp(mode, "write") == 0) {
        alloc_fill(0, n, 1);
        say("committed %u", commit(0, n));
    } else if (strcmp(mode, "read") == 0) {
        CHECK(kvc_lookup(c, chain, n, KVC_LOOKUP_PIN | KVC_LOOKUP_WAIT, 10000, pages, &hit, &next));
        if (hit != n) {
            say("miss %u next %u", hit, next);
            return 4;
        }
        check_pages(pages, n);
        say("read %u", n);
    } else if (strcmp(mode, "stage") == 0) {
        alloc_fill(0, n, 0);
        say("written");
        wait_line();
        rc = (int)commit(0, n);
        check_pages(pages, n);
        say("committed %d", rc);
        hold = 1;
    } else if (strcmp(mode, "once") == 0) {
        say("ready");
        wait_line();
        for (int round = 0;; round++) {
            uint32_t busy = 0;
            struct kvc_req r = {.op = KVC_OP_LOOKUP,
                                .flags = KVC_LOOKUP_PIN | KVC_LOOKUP_WAIT,
                                .wait_ms = 10000,
                                .count = n,
                                .hashes = chain,
                                .pages = pages};
            struct kvc_req *d;
            CHECK(kvc_submit(c, &r));
            if (round == 0)
                say("sent"); /* the test may now check that the answer is held back */
            CHECK(kvc_complete(c, 30000, &d));
            CHECK(r.result);
            hit = r.n_out;
            next = r.next;
            if (hit == n) {
                check_pages(pages, n);
                say("found");
                break;
            }
            if (next == KVC_NEXT_PENDING || round > 100) {
                say("pending-timeout %u", hit);
                return 4;
            }
            CHECK(kvc_alloc(c, n - hit, chain + hit, pages + hit));
            for (uint32_t i = hit; i < n; i++)
                busy += (pages[i].flags & KVC_PAGE_BUSY) != 0;
            if (busy) { /* someone else computes it: give everything back and wait for theirs */
                CHECK(kvc_release_pages(c, pages, n));
                continue;
            }
            for (uint32_t i = hit; i < n; i++)
                kvt_fill_page(kvc_page_ptr(c, &pages[i]), info.page_bytes, &chain[i]);
            rc = (int)commit(hit, n - hit);
            check_pages(pages, n);
            say("computed %d", rc);
            break;
        }
    } else if (strcmp(mode, "pending") == 0) {
        alloc_fill(0, n, 1);
        say("allocated");
        wait_line();
        say("committed %u", commit(0, n));
    } else if (strcmp(mode, "hold-kill") == 0) {
        CHECK(kvc_lookup(c, chain, n, KVC_LOOKUP_PIN, 0, pages, &hit, &next));
        if (hit != n) {
            say("miss %u", hit);
            return 4;
        }
        CHECK(kvc_alloc(c, n, NULL, pages + n));
        say("held");
        for (;;)
            pause();
    } else if (strcmp(mode, "alloc-kill") == 0) {
        alloc_fill(0, n, 1);
        say("allocated");
        for (;;)
            pause();
    } else if (strcmp(mode, "fork-hold") == 0) {
        pid_t child;
        CHECK(kvc_lookup(c, chain, n, KVC_LOOKUP_PIN, 0, pages, &hit, &next));
        if (hit != n)
            return 4;
        child = fork();
        if (child == 0) {
            alarm(30); /* outlives its parent on purpose, but not a failed test */
            rc = kvc_ping(c);
            say(rc == -ECHILD ? "child ok" : "child bad %d", rc);
            kvc_close(c); /* frees the child's copy only */
            for (;;)
                pause();
        }
        say("held %d", (int)child);
        for (;;)
            pause();
    } else {
        return 2;
    }
    if (hold) {
        say("held");
        wait_line();
    }
    CHECK(kvc_release_pages(c, pages, n));
    kvc_close(c);
    return 0;
}
