/* Decode attention against the fp64 reference and the unquantized originals, every format, GQA
 * 1:1 / 3:1 / 8:1, partial pages, tails, score side output; every CPU tier available here. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_th.h"
#include "kv_quant.h"

static void check_decode(const struct th_cfg *cfg)
{
    struct th_case c;
    enum kv_attn_tier tiers[4];
    unsigned nt = th_tiers(tiers);

    th_build(&c, cfg);
    unsigned d = cfg->d, nqh = cfg->nkv * cfg->g;
    size_t n = c.n_ctx;
    double *ref = malloc((size_t)nqh * d * sizeof(double));
    double *p64 = malloc((size_t)nqh * (n ? n : 1) * sizeof(double));
    double *exact = malloc(d * sizeof(double)), *ftol = malloc(d * sizeof(double));
    float *out = malloc((size_t)nqh * d * sizeof(float));
    float *sc = malloc(cfg->nkv * (n ? n : 1) * sizeof(float));
    float *sh = malloc(nqh * (n ? n : 1) * sizeof(float));
    double *prels = malloc(nqh * sizeof(double));
    cr_assert(ref && p64 && exact && ftol && out && sc && sh && prels);
    cr_assert_eq(kv_attn_ref(&c.a, ref, p64), 0);

    for (unsigned ti = 0; ti < nt; ti++) {
        cr_assert_eq(kv_attn_set_tier(tiers[ti]), 0);
        memset(sc, 0, cfg->nkv * (n ? n : 1) * sizeof(float));
        memset(sh, 0, nqh * (n ? n : 1) * sizeof(float));
        c.a.out = out;
        c.a.scores = sc;
        c.a.scores_head = sh;
        cr_assert_eq(kv_attn_decode(&c.a), 0, "decode tier %d", tiers[ti]);
        for (unsigned h = 0; h < nqh; h++) {
            double otol, prel, stol, sum = 0.0;
            th_kernel_bound(&c, 0, h, &otol, &prel, &stol);
            prels[h] = prel;
            th_exact(&c, 0, h, exact);
            th_format_bound(&c, 0, h, ftol);
            for (unsigned ch = 0; ch < d; ch++) {
                double o = out[h * d + ch];
                cr_assert(fabs(o - ref[h * d + ch]) <= otol,
                          "tier %d fmt %d/%d head %u ch %u: %.9g vs ref %.9g (tol %.3g)", tiers[ti],
                          cfg->kf, cfg->vf, h, ch, o, ref[h * d + ch], otol);
                cr_assert(fabs(o - exact[ch]) <= ftol[ch],
                          "tier %d fmt %d/%d head %u ch %u: %.9g vs exact %.9g (format tol %.3g)",
                          tiers[ti], cfg->kf, cfg->vf, h, ch, o, exact[ch], ftol[ch]);
            }
            for (size_t j = 0; j < n; j++) {
                double p = p64[h * n + j], got = sh[h * n + j];
                cr_assert(fabs(got - p) <= prel * p + 0x1p-24,
                          "tier %d head %u token %zu: p %.9g vs ref %.9g", tiers[ti], h, j, got, p);
                sum += got;
            }
            if (n)
                cr_assert(fabs(sum - 1.0) <= stol, "tier %d head %u: probabilities sum to %.9g",
                          tiers[ti], h, sum);
        }
        for (unsigned k = 0; k < cfg->nkv; k++)
            for (size_t j = 0; j < n; j++) {
                double want = 0.0, tol = 0.0;
                for (unsigned hh = 0; hh < cfg->g; hh++) {
                    unsigned h = k * cfg->g + hh;
                    want += p64[h * n + j];
                    tol += prels[h] * p64[h * n + j] + 0x1p-24;
                }
                cr_assert(fabs(sc[k * n + j] - want) <= tol + cfg->g * 0x1p-24,
                          "kv head %u token %zu: score %.9g vs %.9g", k, j, sc[k * n + j], want);
            }
    }
    kv_attn_set_tier(KV_ATTN_TIER_AUTO);
    free(prels);
    free(ref);
    free(p64);
    free(exact);
    free(ftol);
    free(out);
    free(sc);
    free(sh);
    th_free(&c);
}

/* 2 KV heads x 3 (the reference model's ratio), head dim 64, 32-token pages, 2 layers (layer 1
 * attended), 2 full pages + one partly filled + a 5-token f32 tail: ends mid-page. */
static struct th_cfg base(int kf, int vf)
{
    struct th_cfg c = {.nkv = 2,
                       .g = 3,
                       .d = 64,
                       .T = 32,
                       .kf = kf,
                       .vf = vf,
                       .group = 16,
                       .n_layers = 2,
                       .layer = 1,
                       .nblk = 3,
                       .n_tail = 5,
                       .n_q = 1};
    c.blk_tokens[2] = 20;
    return c;
}

#define FMT_TEST(name, fmt)                                                                        \
    Test(attn_decode, fmt_##name)                                                                  \
    {                                                                                              \
        struct th_cfg c = base(fmt, fmt);                                                          \
        check_decode(&c);                                                                          \
    }
FMT_TEST(f16, KV_FMT_F16)
FMT_TEST(bf16, KV_FMT_BF16)
FMT_TEST(fp8_e4m3, KV_FMT_FP8_E4M3)
FMT_TEST(fp8_e5m2, KV_FMT_FP8_E5M2)
FMT_TEST(int8, KV_FMT_INT8)
FMT_TEST(int4, KV_FMT_INT4)
FMT_TEST(kivi4, KV_FMT_KIVI4)
FMT_TEST(kivi2, KV_FMT_KIVI2)

Test(attn_decode, mixed_formats_f16_tail)
{
    struct th_cfg c = base(KV_FMT_KIVI4, KV_FMT_FP8_E4M3);
    c.tail_f16 = 1;
    check_decode(&c);
    c = base(KV_FMT_FP8_E5M2, KV_FMT_KIVI2);
    c.tail_f16 = 1;
    check_decode(&c);
    c = base(KV_FMT_INT8, KV_FMT_INT4);
    check_decode(&c);
}

Test(attn_decode, gqa_1_to_1)
{
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    c.g = 1;
    c.nkv = 4;
    check_decode(&c);
    c.kf = c.vf = KV_FMT_KIVI4;
    check_decode(&c);
}

Test(attn_decode, gqa_8_to_1)
{
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_INT4);
    c.g = 8;
    c.nkv = 1;
    check_decode(&c);
    c.kf = c.vf = KV_FMT_F16;
    check_decode(&c);
}

/* The fused window kernel serves every KV head in one call (head k at k * kstep): head dim 128
 * with four KV heads, in each format it takes. */
Test(attn_decode, fused_kv_heads_d128)
{
    int fmts[] = {KV_FMT_F16, KV_FMT_BF16, KV_FMT_FP8_E4M3, KV_FMT_FP8_E5M2, KV_FMT_INT8};
    for (unsigned i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        struct th_cfg c = base(fmts[i], fmts[i]);
        c.nkv = 4;
        c.d = 128;
        c.nblk = 5;
        c.blk_tokens[2] = 0;
        check_decode(&c);
    }
}

/* More than 4 query heads per KV head with several KV heads: blocks of up to 4 query heads per
 * KV head inside one window call, scores per KV head summed over all of them; g = 17 at head dim
 * 128 puts g * d past the E4M3 route's query buffer (binary16 route). */
Test(attn_decode, fused_gqa_blocks)
{
    unsigned gs[] = {5, 6, 8};
    for (unsigned i = 0; i < sizeof(gs) / sizeof(gs[0]); i++) {
        struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
        c.g = gs[i];
        check_decode(&c);
        c.kf = c.vf = KV_FMT_F16;
        check_decode(&c);
    }
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    c.g = 17;
    c.d = 128;
    check_decode(&c);
}

/* A token-evicted variant: windows of many pages holding one token each (prefetched row by row
 * and head by head, four ranges per page and KV head), with some longer pages among them. */
Test(attn_decode, fused_one_token_pages)
{
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    c.nkv = 4;
    c.T = 16;
    c.nblk = TH_MAX_BLOCKS;
    for (unsigned b = 0; b < c.nblk; b++)
        c.blk_tokens[b] = b % 9 == 8 ? 13 : 1;
    c.n_tail = 0;
    check_decode(&c);
    c.d = 128;
    c.kf = c.vf = KV_FMT_INT8;
    check_decode(&c);
}

/* Compressed variants: pages holding fewer tokens than page_tokens anywhere in the chain, KIVI key
 * groups cut short, a context that ends exactly at a page boundary (no tail). */
Test(attn_decode, partly_filled_pages)
{
    int fmts[] = {KV_FMT_F16, KV_FMT_FP8_E4M3, KV_FMT_INT4, KV_FMT_KIVI4, KV_FMT_KIVI2};
    for (unsigned i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        struct th_cfg c = base(fmts[i], fmts[i]);
        c.nblk = 5;
        unsigned t[] = {32, 7, 19, 1, 32};
        memcpy(c.blk_tokens, t, sizeof(t));
        c.n_tail = 0;
        check_decode(&c);
    }
}

/* Several chunks per page, long context, head dim 128, 256-token pages. */
Test(attn_decode, long_context)
{
    struct th_cfg c = {.nkv = 1,
                       .g = 3,
                       .d = 128,
                       .T = 256,
                       .kf = KV_FMT_FP8_E4M3,
                       .vf = KV_FMT_FP8_E4M3,
                       .n_layers = 1,
                       .nblk = 4,
                       .n_tail = 77,
                       .n_q = 1};
    c.blk_tokens[3] = 200;
    check_decode(&c);
    c.kf = c.vf = KV_FMT_KIVI4;
    c.group = 32;
    check_decode(&c);
}

/* The AVX2 window kernel decodes E4M3 with integer ops into values 2^-120 too small and puts the
 * 2^120 into the query and the value weights; value scales of 2^7 and up (from f32 magnitudes of
 * 2^16 and more) take the binary16 route instead (from 2^8 the weights would overflow). Block 0
 * here has them, blocks 2-3 (the next window) not. */
Test(attn_decode, fp8_e4m3_large_value_scales)
{
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    c.nblk = 5;
    c.blk_tokens[2] = 0;
    c.v_amp0 = 200000.0f; /* value scale up to 200000 / 448 > 2^8 */
    check_decode(&c);
}

/* The same with the large value scales on KV head 1 only: one window call serves every KV head,
 * and each head picks its own route (head 0 the integer decode, head 1 binary16) in one window. */
Test(attn_decode, fp8_e4m3_large_value_scales_one_head)
{
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    c.nblk = 5;
    c.blk_tokens[2] = 0;
    c.n_tail = 0; /* every window fused */
    c.v_amp0 = 200000.0f;
    c.v_amp_kvh = 2;
    check_decode(&c);
    c.v_amp_kvh = 1; /* and the other way round */
    check_decode(&c);
}

/* Logits so far apart that softmax is one-hot: every tier's output for each head must be the
 * value row of its top key (the mean of the rows that tie, as FP8 keys often do). Logits in fp64
 * from the dequantized keys. */
static void check_one_hot(struct th_case *c)
{
    unsigned d = c->cfg.d, nkv = c->cfg.nkv, g = c->cfg.g;
    float out[8 * 128];
    enum kv_attn_tier tiers[4];
    unsigned nt = th_tiers(tiers);
    double *lg = malloc(c->n_ctx * sizeof(double));
    cr_assert(lg && nkv * g * d <= sizeof(out) / sizeof(out[0]));
    c->a.out = out;
    for (unsigned ti = 0; ti < nt; ti++) {
        cr_assert_eq(kv_attn_set_tier(tiers[ti]), 0);
        cr_assert_eq(kv_attn_decode(&c->a), 0);
        for (unsigned h = 0; h < nkv * g; h++) {
            unsigned k = h / g;
            double top = -INFINITY;
            for (size_t p = 0; p < c->n_ctx; p++) {
                lg[p] = 0.0;
                for (unsigned ch = 0; ch < d; ch++)
                    lg[p] += (double)c->q[h * d + ch] * c->kd[(p * nkv + k) * d + ch];
                top = fmax(top, lg[p]);
            }
            for (unsigned ch = 0; ch < d; ch++) {
                double want = 0.0;
                unsigned n = 0;
                for (size_t p = 0; p < c->n_ctx; p++)
                    if (lg[p] == top) {
                        want += c->vd[(p * nkv + k) * d + ch];
                        n++;
                    }
                want /= n;
                float o = out[h * d + ch];
                cr_assert(fabs(o - want) <= 1e-5 * (fabs(want) + 1.0),
                          "tier %d head %u ch %u: %.9g, want %.9g (%u tied)", tiers[ti], h, ch, o,
                          want, n);
            }
        }
    }
    kv_attn_set_tier(KV_ATTN_TIER_AUTO);
    free(lg);
}

/* A query so large that q * 2^64 overflows (same reason as above) takes the binary16 route; the
 * logits are then ~2^67 apart: one-hot. */
Test(attn_decode, fp8_e4m3_huge_query)
{
    struct th_cfg cfg = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    cfg.nblk = 5;
    cfg.blk_tokens[2] = 0;
    struct th_case c;
    th_build(&c, &cfg);
    memset(c.q, 0, (size_t)cfg.nkv * cfg.g * cfg.d * sizeof(float));
    for (unsigned h = 0; h < cfg.nkv * cfg.g; h++)
        c.q[h * cfg.d] = 0x1p70f; /* times 1/sqrt(64): 2^67 */
    check_one_hot(&c);
    th_free(&c);
}

/* Keys near 2^80 make key scales near 2^72: the integer decode's 2^56 must go onto the dot
 * product, not onto the key scale (2^72 * 2^56 overflows). One-hot again. */
Test(attn_decode, fp8_e4m3_huge_keys)
{
    struct th_cfg cfg = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    cfg.nblk = 5;
    cfg.blk_tokens[2] = 0;
    cfg.n_tail = 0; /* the f32 tail keeps small keys; here every key is in a page */
    cfg.k_amp = 0x1p80f;
    struct th_case c;
    th_build(&c, &cfg);
    check_one_hot(&c);
    th_free(&c);
}

Test(attn_decode, single_token_contexts)
{
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_INT4);
    c.nblk = 0;
    c.n_tail = 1; /* only the tail: the output is that token's value exactly */
    check_decode(&c);
    c.nblk = 1;
    c.blk_tokens[0] = 1;
    c.n_tail = 0; /* one page holding one token */
    check_decode(&c);
}

Test(attn_decode, single_tail_token_is_exact)
{
    struct th_cfg cfg = base(KV_FMT_F16, KV_FMT_F16);
    cfg.nblk = 0;
    cfg.n_tail = 1;
    struct th_case c;
    th_build(&c, &cfg);
    float out[6 * 64];
    c.a.out = out;
    cr_assert_eq(kv_attn_decode(&c.a), 0);
    for (unsigned h = 0; h < 6; h++)
        for (unsigned ch = 0; ch < 64; ch++)
            cr_assert_float_eq(out[h * 64 + ch], c.vx[(h / 3) * 64 + ch], 1e-6);
    th_free(&c);
}

Test(attn_decode, empty_context)
{
    struct th_cfg cfg = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    cfg.nblk = 0;
    cfg.n_tail = 0;
    struct th_case c;
    th_build(&c, &cfg);
    float out[6 * 64], sc[2] = {5.0f, 5.0f};
    memset(out, 0x7f, sizeof(out));
    c.a.out = out;
    c.a.scores = sc;
    cr_assert_eq(kv_attn_decode(&c.a), 0);
    for (unsigned i = 0; i < 6 * 64; i++)
        cr_assert_eq(out[i], 0.0f);
    cr_assert_eq(sc[0], 5.0f); /* nothing to add to */
    th_free(&c);
}

/* Scores accumulate: two calls add twice the mass. */
Test(attn_decode, scores_accumulate)
{
    struct th_cfg cfg = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    struct th_case c;
    th_build(&c, &cfg);
    size_t n = c.n_ctx;
    float out[6 * 64], *s1 = calloc(2 * n, sizeof(float)), *s2 = calloc(2 * n, sizeof(float));
    cr_assert(s1 && s2);
    c.a.out = out;
    c.a.scores = s1;
    cr_assert_eq(kv_attn_decode(&c.a), 0);
    c.a.scores = s2;
    cr_assert_eq(kv_attn_decode(&c.a), 0);
    cr_assert_eq(kv_attn_decode(&c.a), 0);
    double tot = 0.0;
    for (size_t j = 0; j < 2 * n; j++) {
        cr_assert_float_eq(s2[j], 2 * s1[j], 1e-6 + 1e-6 * s1[j]);
        tot += s1[j];
    }
    cr_assert_float_eq(tot, 6.0, 1e-4); /* 6 query heads, each sums to 1 */
    free(s1);
    free(s2);
    th_free(&c);
}

Test(attn_decode, invalid_arguments)
{
    struct th_cfg cfg = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    struct th_case c;
    th_build(&c, &cfg);
    float out[6 * 64];
    c.a.out = out;
    struct kv_attn_args a = c.a;
    cr_assert_eq(kv_attn_decode(&a), 0);
    a.n_q_heads = 5; /* not a multiple of 2 KV heads */
    cr_assert_eq(kv_attn_decode(&a), -EINVAL);
    a = c.a;
    a.layer = 2;
    cr_assert_eq(kv_attn_decode(&a), -EINVAL);
    a = c.a;
    struct kv_attn_block bt[3];
    memcpy(bt, c.bt, sizeof(bt));
    bt[1].n_tokens = 33; /* more than page_tokens */
    a.blocks = bt;
    cr_assert_eq(kv_attn_decode(&a), -EINVAL);
    bt[1].n_tokens = 0;
    cr_assert_eq(kv_attn_decode(&a), -EINVAL);
    a = c.a;
    a.tail_v = NULL;
    cr_assert_eq(kv_attn_decode(&a), -EINVAL);
    a = c.a;
    a.n_q = 2; /* decode takes one query */
    cr_assert_eq(kv_attn_decode(&a), -EINVAL);
    a = c.a;
    a.softmax_scale = NAN;
    cr_assert_eq(kv_attn_decode(&a), -EINVAL);
    th_free(&c);
}
