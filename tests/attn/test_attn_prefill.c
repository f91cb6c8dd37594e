/* Causal prefill attention against the fp64 reference and the originals; scores summed over the
 * queries; prefill of one query agrees with decode. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_th.h"
#include "kv_quant.h"

static void check_prefill(const struct th_cfg *cfg)
{
    struct th_case c;
    enum kv_attn_tier tiers[4];
    unsigned nt = th_tiers(tiers);

    th_build(&c, cfg);
    unsigned d = cfg->d, nqh = cfg->nkv * cfg->g, nq = cfg->n_q;
    size_t n = c.n_ctx;
    double *ref = malloc((size_t)nq * nqh * d * sizeof(double));
    double *p64 = malloc((size_t)nq * nqh * n * sizeof(double));
    double *exact = malloc(d * sizeof(double)), *ftol = malloc(d * sizeof(double));
    float *out = malloc((size_t)nq * nqh * d * sizeof(float));
    float *sh = malloc(nqh * n * sizeof(float)), *sc = malloc(cfg->nkv * n * sizeof(float));
    double *prels = malloc(nq * sizeof(double));
    cr_assert(ref && p64 && exact && ftol && out && sh && sc && prels);
    cr_assert_eq(kv_attn_ref(&c.a, ref, p64), 0);

    for (unsigned ti = 0; ti < nt; ti++) {
        cr_assert_eq(kv_attn_set_tier(tiers[ti]), 0);
        memset(sh, 0, nqh * n * sizeof(float));
        memset(sc, 0, cfg->nkv * n * sizeof(float));
        c.a.out = out;
        c.a.scores_head = sh;
        c.a.scores = sc;
        cr_assert_eq(kv_attn_prefill(&c.a), 0);
        for (unsigned h = 0; h < nqh; h++) {
            double tol_sum = 0.0;
            for (unsigned qi = 0; qi < nq; qi++) {
                double otol, prel, stol;
                const float *o = out + ((size_t)qi * nqh + h) * d;
                const double *r = ref + ((size_t)qi * nqh + h) * d;
                th_kernel_bound(&c, qi, h, &otol, &prel, &stol);
                prels[qi] = prel;
                th_exact(&c, qi, h, exact);
                th_format_bound(&c, qi, h, ftol);
                for (unsigned ch = 0; ch < d; ch++) {
                    cr_assert(fabs(o[ch] - r[ch]) <= otol,
                              "tier %d q %u head %u ch %u: %.9g vs ref %.9g (tol %.3g)", tiers[ti],
                              qi, h, ch, o[ch], r[ch], otol);
                    cr_assert(fabs(o[ch] - exact[ch]) <= ftol[ch],
                              "tier %d q %u head %u ch %u: %.9g vs exact %.9g (tol %.3g)",
                              tiers[ti], qi, h, ch, o[ch], exact[ch], ftol[ch]);
                }
                tol_sum += stol;
            }
            /* scores_head sums the probabilities over the queries: per token, compare with the
             * reference's sum; in total, each query contributes 1. */
            double tot = 0.0;
            for (size_t j = 0; j < n; j++) {
                double want = 0.0, tol = 0.0;
                for (unsigned qi = 0; qi < nq; qi++) {
                    double p = p64[((size_t)qi * nqh + h) * n + j];
                    want += p;
                    tol += prels[qi] * p + 0x1p-24;
                }
                cr_assert(fabs(sh[h * n + j] - want) <= tol + nq * 0x1p-24,
                          "tier %d head %u token %zu: %.9g vs %.9g", tiers[ti], h, j, sh[h * n + j],
                          want);
                tot += sh[h * n + j];
            }
            cr_assert(fabs(tot - nq) <= tol_sum, "head %u: mass %.9g for %u queries", h, tot, nq);
        }
        for (unsigned k = 0; k < cfg->nkv; k++)
            for (size_t j = 0; j < n; j++) {
                double want = 0.0;
                for (unsigned hh = 0; hh < cfg->g; hh++)
                    want += sh[(k * cfg->g + hh) * n + j];
                cr_assert(fabs(sc[k * n + j] - want) <= 1e-5 * (1 + want));
            }
    }
    kv_attn_set_tier(KV_ATTN_TIER_AUTO);
    free(prels);
    free(ref);
    free(p64);
    free(exact);
    free(ftol);
    free(out);
    free(sh);
    free(sc);
    th_free(&c);
}

static struct th_cfg base(int kf, int vf, unsigned nq)
{
    struct th_cfg c = {.nkv = 2,
                       .g = 3,
                       .d = 64,
                       .T = 32,
                       .kf = kf,
                       .vf = vf,
                       .group = 16,
                       .n_layers = 2,
                       .layer = 0,
                       .nblk = 3,
                       .n_tail = 30,
                       .n_q = nq};
    c.blk_tokens[2] = 20;
    return c;
}

Test(attn_prefill, fp8_e4m3_queries_span_tail)
{
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3, 30);
    check_prefill(&c);
}

Test(attn_prefill, queries_span_pages)
{
    /* 60 queries: the last 30 tail tokens and 30 tokens of the pages, several query tiles */
    int fmts[] = {KV_FMT_F16, KV_FMT_INT8, KV_FMT_INT4, KV_FMT_KIVI4};
    for (unsigned i = 0; i < 4; i++) {
        struct th_cfg c = base(fmts[i], fmts[i], 60);
        check_prefill(&c);
    }
}

Test(attn_prefill, gqa_1_and_8)
{
    struct th_cfg c = base(KV_FMT_FP8_E5M2, KV_FMT_KIVI2, 17);
    c.g = 1;
    c.nkv = 3;
    check_prefill(&c);
    c = base(KV_FMT_BF16, KV_FMT_FP8_E4M3, 17);
    c.g = 8;
    c.nkv = 1;
    c.tail_f16 = 1;
    check_prefill(&c);
}

Test(attn_prefill, whole_context_is_queries)
{
    struct th_cfg c = base(KV_FMT_F16, KV_FMT_F16, 1);
    c.nblk = 0;
    c.n_tail = 40;
    c.n_q = 40; /* the first query sees only itself */
    check_prefill(&c);
}

Test(attn_prefill, one_query_matches_decode)
{
    struct th_cfg cfg = base(KV_FMT_FP8_E4M3, KV_FMT_INT4, 1);
    struct th_case c;
    th_build(&c, &cfg);
    float o1[6 * 64], o2[6 * 64];
    c.a.out = o1;
    cr_assert_eq(kv_attn_prefill(&c.a), 0);
    c.a.out = o2;
    cr_assert_eq(kv_attn_decode(&c.a), 0);
    for (unsigned h = 0; h < 6; h++) {
        double otol, prel, stol;
        th_kernel_bound(&c, 0, h, &otol, &prel, &stol);
        for (unsigned ch = 0; ch < 64; ch++) /* both within otol of the reference */
            cr_assert(fabs(o1[h * 64 + ch] - o2[h * 64 + ch]) <= 2 * otol);
    }
    th_free(&c);
}

/* More queries than one tile holds (64 queries at 3:1, 32 at 8:1): tiles of queries, each with
 * its own causal limits, over short pages and a tail. */
Test(attn_prefill, several_query_tiles)
{
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_KIVI4, 70);
    c.g = 8;
    c.nkv = 1;
    c.n_tail = 50;
    check_prefill(&c);
    c = base(KV_FMT_INT8, KV_FMT_F16, 90);
    c.n_tail = 60;
    check_prefill(&c);
}
