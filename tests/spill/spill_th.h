/*
 * spill_th.h - helpers shared by the spill tests: a temp dir under the build directory, page
 * contents derived from a seed, a completion recorder. Everything static: one copy per test binary.
 */
#ifndef SPILL_TH_H
#define SPILL_TH_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spill.h"

#define TH_MAX_PAGE 16384u
#define TH_MAX_OPS  4096

/* A small page: 2 layers x 2 heads x 32 dims x 16 tokens; FP8 is 4608 bytes. */
static inline struct kv_layout th_layout(int kf, int vf)
{
    struct kv_layout l = {.n_layers = 2,
                          .n_kv_heads = 2,
                          .head_dim = 32,
                          .page_tokens = 16,
                          .k_fmt = (uint8_t)kf,
                          .v_fmt = (uint8_t)vf,
                          .group = 8};
    return l;
}

/* Temp dir under $KVD_BIN_DIR (the build tree, a real disk), else $TMPDIR, else /var/tmp. */
static inline void th_tmpdir(char *dir, size_t n)
{
    const char *base = getenv("KVD_BIN_DIR");

    if (!base || !base[0])
        base = getenv("TMPDIR");
    if (!base || !base[0])
        base = "/var/tmp";
    snprintf(dir, n, "%s/spill-test-XXXXXX", base);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
}

static inline void th_rmdir(const char *dir)
{
    char cmd[PATH_MAX + 16];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static inline uint64_t th_rng(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Page bytes from a seed: any bytes are a valid 8-bit-or-narrower page for a copy round trip. */
static inline void th_fill(void *page, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    uint8_t *p = page;

    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(th_rng(&x) >> 24);
}

static inline struct kv_spill_meta th_meta(const struct kv_layout *l, uint64_t seed)
{
    struct kv_spill_meta m;

    memset(&m, 0, sizeof m);
    snprintf(m.ns, sizeof m.ns, "test-ns");
    m.layout = *l;
    memcpy(m.hash, &seed, sizeof seed);
    m.hash[15] = 0xa5;
    seed--;
    memcpy(m.parent, &seed, sizeof seed);
    m.ntok = l->page_tokens;
    return m;
}

static inline uint64_t th_seed(const uint8_t hash[16])
{
    uint64_t seed;

    memcpy(&seed, hash, sizeof seed);
    return seed;
}

/* Completion recorder: cookie = (void *)(uintptr_t)(index + 1). */
struct th_rec {
    int n;
    int res[TH_MAX_OPS];
    int op[TH_MAX_OPS];
    uint16_t flags[TH_MAX_OPS];
    int seen[TH_MAX_OPS];
    int invalidates; /* INVALIDATE completions */
    int inval_err;
};

static inline void *th_cookie(int i)
{
    return (void *)(uintptr_t)(i + 1);
}

static inline void th_done(void *arg, const struct kv_spill_done *d)
{
    struct th_rec *r = arg;

    r->n++;
    if (d->op == KV_SPILL_OP_INVALIDATE) {
        cr_assert_null(d->cookie);
        r->invalidates++;
        if (d->res)
            r->inval_err++;
        return;
    }
    int i = (int)((uintptr_t)d->cookie - 1);
    cr_assert(i >= 0 && i < TH_MAX_OPS, "bad cookie");
    r->res[i] = d->res;
    r->op[i] = d->op;
    r->flags[i] = d->flags;
    r->seen[i]++;
}

static inline struct kv_spill *th_open(const char *path, int sync, uint32_t slots, unsigned qd)
{
    struct kv_spill_cfg cfg = {.path = path,
                               .bytes = KV_SPILL_ALIGN +
                                        (uint64_t)slots * (KV_SPILL_ALIGN + TH_MAX_PAGE),
                               .max_page_bytes = TH_MAX_PAGE,
                               .queue_depth = qd,
                               .force_sync = sync};
    struct kv_spill *s = NULL;
    char why[256];
    int rc = kv_spill_open(&s, &cfg, why, sizeof why);

    if (rc == -ENOTSUP)
        cr_skip_test("O_DIRECT refused here: %s", why);
    cr_assert_eq(rc, 0, "kv_spill_open: %s (%s)", strerror(-rc), why);
    return s;
}

#endif
