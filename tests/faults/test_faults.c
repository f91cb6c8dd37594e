/*
 * test_faults.c - allocation failure injection through whole requests against a real kvd
 * (SQLite-style): for N = 0, 1, 2, ... the daemon lets N allocations succeed and fails every later
 * one while one request runs; every run must end with success or a clean -ENOMEM, the pool must
 * pass its invariant check, and a failed request must have changed nothing a client can see.
 * kvd runs with fault_injection=true, which lets the admin op arm the shim.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "kvt.h"

static struct kvt_kvd kvd;
static struct kvc *admin; /* arms and disarms the shim, checks the pool */
static const char *const args[] = {"--set", "fault_injection=true", NULL};

static void setup(void)
{
    cr_assert_eq(kvt_kvd_start(&kvd, args), 0, "kvd did not start");
    cr_assert_eq(kvt_open(&kvd, "faults", &admin), 0);
}

static void teardown(void)
{
    kvc_close(admin);
    if (getenv("KVT_VERBOSE"))
        kvt_kvd_dump_log(&kvd);
    kvt_kvd_cleanup(&kvd);
}

static void arm(int32_t n)
{
    cr_assert_eq(kvc_admin(admin, KVP_ADMIN_FAULT, &n, sizeof(n), NULL, 0, NULL, NULL), 0);
}

static void check_pool(const char *what, int n)
{
    int rc = kvc_admin(admin, KVP_ADMIN_CHECK, NULL, 0, NULL, 0, NULL, NULL);
    cr_assert_eq(rc, 0, "%s, N=%d: pool invariants broken (%s)", what, n, kvc_strerror(rc));
}

static struct kvc_stats stats(void)
{
    struct kvc_stats s;
    cr_assert_eq(kvc_stats(admin, &s), 0);
    return s;
}

/* Run op under the shim for N = 0, 1, ... until it succeeds. op returns 0 or -errno and must undo
 * nothing itself: a failure has to leave kvd as it was. Returns the N that succeeded. */
static int sweep(const char *what, int (*op)(struct kvc *c, void *arg), struct kvc *c, void *arg)
{
    for (int n = 0; n < 64; n++) {
        struct kvc_stats before = stats();
        arm(n);
        int rc = op(c, arg);
        arm(-1);
        check_pool(what, n);
        if (rc == 0) {
            cr_log_info("%s: succeeded once %d allocations were allowed", what, n);
            return n;
        }
        cr_assert_eq(rc, -ENOMEM, "%s, N=%d: %s", what, n, kvc_strerror(rc));
        struct kvc_stats after = stats();
        cr_assert_eq(after.pages_writing, before.pages_writing, "%s, N=%d: pages handed out", what,
                     n);
        cr_assert_eq(after.pages_committed, before.pages_committed, "%s, N=%d", what, n);
        cr_assert_eq(after.pages_pinned, before.pages_pinned, "%s, N=%d: pins taken", what, n);
    }
    cr_assert_fail("%s never succeeded", what);
    return -1;
}

#define NPAGES 40

struct work {
    struct kvc_hash chain[NPAGES];
    struct kvc_page pages[NPAGES], got[NPAGES];
    struct kvc_commit ents[NPAGES];
};

static int op_alloc(struct kvc *c, void *arg)
{
    struct work *w = arg;
    return kvc_alloc(c, NPAGES, w->chain, w->pages);
}

static int op_commit(struct kvc *c, void *arg)
{
    struct work *w = arg;
    return kvc_commit(c, w->ents, NPAGES, w->got);
}

static int op_lookup_pin(struct kvc *c, void *arg)
{
    struct work *w = arg;
    uint32_t hit, next;
    int rc = kvc_lookup(c, w->chain, NPAGES, KVC_LOOKUP_PIN, 0, w->got, &hit, &next);
    if (rc == 0 && hit != NPAGES)
        return -EPROTO;
    return rc;
}

static int op_scores(struct kvc *c, void *arg)
{
    struct work *w = arg;
    static float mass[16];
    struct kvc_score s[NPAGES];
    for (int i = 0; i < 16; i++)
        mass[i] = 1.0f / 16;
    for (int i = 0; i < NPAGES; i++)
        s[i] = (struct kvc_score){.page_id = w->got[i].id, .ntok = 16, .mass = mass};
    return kvc_scores(c, s, NPAGES);
}

static int op_attach(struct kvc *unused, void *arg)
{
    (void)unused;
    struct kvc **out = arg;
    return kvt_open(&kvd, (const char *)"faults-new-ns", out);
}

Test(faults, every_request_fails_cleanly_or_succeeds, .init = setup, .fini = teardown,
     .timeout = 120)
{
    struct kvc *c;
    static struct work w;
    int32_t tok[NPAGES * 16];

    cr_assert_eq(kvt_open(&kvd, "faults", &c), 0);
    kvt_tokens(tok, NPAGES * 16, 5);
    cr_assert_eq(kvc_hash_chain(kvc_get_hasher(c), tok, NPAGES * 16, NULL, w.chain, NPAGES),
                 NPAGES);

    int n = sweep("ALLOC", op_alloc, c, &w);
    cr_assert_gt(n, 0, "ALLOC makes at least one allocation");
    for (int i = 0; i < NPAGES; i++) {
        w.ents[i] = (struct kvc_commit){.page_id = w.pages[i].id, .ntok = 16, .hash = w.chain[i]};
        if (i)
            w.ents[i].parent = w.chain[i - 1];
    }
    sweep("COMMIT", op_commit, c, &w);
    cr_assert_eq(kvc_release_pages(c, w.got, NPAGES), 0);
    sweep("LOOKUP+PIN", op_lookup_pin, c, &w);
    sweep("SCORES", op_scores, c, &w);
    cr_assert_eq(kvc_release_pages(c, w.got, NPAGES), 0);

    /* ATTACH of a new namespace allocates the namespace and its policy */
    struct kvc *c2 = NULL;
    sweep("ATTACH", op_attach, NULL, &c2);
    kvc_close(c2);

    struct kvc_stats s = stats();
    cr_assert_eq(s.pages_pinned, 0, "every lease was released");
    check_pool("end", -1);
    kvc_close(c);
}
