/*
 * test_quant.c - page quantize/dequantize over a grid of formats, head dims (64, 128), page sizes,
 * KIVI groups, source dtypes and strides: round-trip error within the derived bounds (qtest.h),
 * every tier byte-identical to the reference, strided layouts equal to packed ones.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "qtest.h"

struct geom {
    unsigned D, T, G;
};
static const struct geom geoms[] = {{64, 16, 16}, {128, 64, 32}, {128, 32, 8}, {64, 64, 64}};
enum { L = 2, H = 2 };

/* Worker-cache source in layout [layer][tok][head][D] (f32 values; *vals: what the kernel sees
 * after the dtype conversion). K has the channel outliers real keys have. */
static void *make_src(unsigned T, unsigned D, int dtype, int kind, uint64_t seed, float *vals)
{
    size_t n = (size_t)L * T * H * D;
    void *p = malloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned)(i % D);
        float x = qt_normal(&seed);
        if (kind == KV_KIND_K && c % 16 == 3)
            x = x * 8.0f + 20.0f;
        if (dtype == KV_DT_F32)
            ((float *)p)[i] = vals[i] = x;
        else if (dtype == KV_DT_F16)
            vals[i] = kv_f16_to_f32(((uint16_t *)p)[i] = kv_f16_from_f32(x));
        else
            vals[i] = kv_bf16_to_f32(((uint16_t *)p)[i] = kv_bf16_from_f32(x));
    }
    return p;
}

static struct kv_src packed_src(const void *base, int dtype, unsigned T, unsigned D)
{
    struct kv_src s = {.base = base,
                       .dtype = dtype,
                       .layer_stride = (ptrdiff_t)T * H * D,
                       .tok_stride = (ptrdiff_t)H * D,
                       .head_stride = D};
    return s;
}

static int tiers[3], ntiers;
static void init_tiers(void)
{
    ntiers = 0;
    for (int t = KV_TIER_REF; t <= KV_TIER_AVX512; t++)
        if (kv_quant_set_tier(t) == 0)
            tiers[ntiers++] = t;
    cr_assert(ntiers >= 1);
}

/* One (format, geometry, dtype, ntok) case on every tier: bounds, tier equality. */
static void run_case(int fmt, const struct geom *g, int dtype, unsigned ntok, uint64_t seed)
{
    struct kv_layout l = qt_layout(fmt, fmt, L, H, g->D, g->T, g->G);
    size_t pb = kv_page_bytes(&l), n = (size_t)L * g->T * H * g->D;
    cr_assert(pb > 0);
    float *kv = malloc(n * 4), *vv = malloc(n * 4), *ko = malloc(n * 4), *vo = malloc(n * 4);
    void *ks = make_src(g->T, g->D, dtype, KV_KIND_K, seed, kv);
    void *vs = make_src(g->T, g->D, dtype, KV_KIND_V, seed + 1, vv);
    struct kv_src k = packed_src(ks, dtype, g->T, g->D), v = packed_src(vs, dtype, g->T, g->D);
    uint8_t *ref_page = malloc(pb), *page = malloc(pb);
    float *ref_out = malloc(n * 4);
    struct kv_dst kd = {ko, (ptrdiff_t)g->T * H * g->D, H * g->D, g->D}, vd = kd;
    vd.base = vo;

    for (int ti = 0; ti < ntiers; ti++) {
        cr_assert_eq(kv_quant_set_tier(tiers[ti]), 0);
        memset(page, 0xa5, pb); /* the quantizer must write every byte */
        cr_assert_eq(kv_quant_page(&l, page, &k, &v, ntok), 0);
        memset(ko, 0xff, n * 4);
        cr_assert_eq(kv_dequant_page(&l, page, 0, ntok, &kd, &vd), 0);
        if (ti == 0) {
            memcpy(ref_page, page, pb);
            memcpy(ref_out, ko, n * 4);
        } else {
            cr_assert_eq(memcmp(ref_page, page, pb), 0, "%s %s D%u T%u dt%d: page differs",
                         kv_fmt_name(fmt), kv_quant_tier_name(tiers[ti]), g->D, g->T, dtype);
            for (size_t i = 0; i < n; i++)
                if ((i / ((size_t)H * g->D)) % g->T < ntok)
                    cr_assert_eq(kvq_f2u(ref_out[i]), kvq_f2u(ko[i]), "%s %s dequant elem %zu",
                                 kv_fmt_name(fmt), kv_quant_tier_name(tiers[ti]), i);
        }
        /* bounds, per segment */
        float *x = malloc((size_t)g->T * g->D * 4), *y = malloc((size_t)g->T * g->D * 4);
        for (unsigned layer = 0; layer < L; layer++)
            for (unsigned kind = 0; kind < 2; kind++)
                for (unsigned h = 0; h < H; h++) {
                    const float *sv = kind ? vv : kv, *ov = kind ? vo : ko;
                    for (unsigned t = 0; t < ntok; t++) {
                        size_t off = ((size_t)layer * g->T + t) * H * g->D + (size_t)h * g->D;
                        memcpy(x + (size_t)t * g->D, sv + off, g->D * 4);
                        memcpy(y + (size_t)t * g->D, ov + off, g->D * 4);
                    }
                    double worst = 0;
                    int bad = qt_check_seg(&l, kind, x, y, ntok, &worst);
                    cr_assert_eq(bad, 0,
                                 "%s %s kind %u D%u T%u G%u dt%d ntok %u: %d over bound"
                                 " (worst err/bound %.3f)",
                                 kv_fmt_name(fmt), kv_quant_tier_name(tiers[ti]), kind, g->D, g->T,
                                 g->G, dtype, ntok, bad, worst);
                    /* non-vacuous: lossy formats do lose something, somewhere */
                    if (fmt != KV_FMT_F16 && dtype == KV_DT_F32)
                        cr_assert_gt(worst, 0.0);
                }
        free(x);
        free(y);
    }
    free(kv), free(vv), free(ko), free(vo), free(ks), free(vs), free(ref_page), free(page);
    free(ref_out);
}

Test(quant, grid_roundtrip_and_tiers, .timeout = 60)
{
    init_tiers();
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++)
        for (size_t gi = 0; gi < sizeof(geoms) / sizeof(geoms[0]); gi++)
            for (int dt = KV_DT_F32; dt <= KV_DT_BF16; dt++) {
                run_case(fmt, &geoms[gi], dt, geoms[gi].T, 1000 + gi * 7 + (unsigned)dt);
                run_case(fmt, &geoms[gi], dt, geoms[gi].T / 2 + 1, 77 + gi);
            }
}

/* The same values laid out [head][layer][tok] with padded rows, and a negative token stride,
 * give the same page as the packed layout; strided dequant output matches packed output. */
Test(quant, strides_match_packed)
{
    init_tiers();
    const unsigned D = 128, T = 32, pad = 40;
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++)
        for (int ti = 0; ti < ntiers; ti++) {
            kv_quant_set_tier(tiers[ti]);
            struct kv_layout l = qt_layout(fmt, fmt, L, H, D, T, 16);
            size_t n = (size_t)L * T * H * D, pb = kv_page_bytes(&l);
            float *vals = malloc(n * 4);
            uint16_t *packed = make_src(T, D, KV_DT_F16, KV_KIND_K, 5, vals);
            /* [head][layer][tok reversed][D + pad] */
            size_t rs = D + pad;
            uint16_t *odd = calloc((size_t)H * L * T * rs, 2);
            for (unsigned layer = 0; layer < L; layer++)
                for (unsigned t = 0; t < T; t++)
                    for (unsigned h = 0; h < H; h++)
                        memcpy(odd + (((size_t)h * L + layer) * T + (T - 1 - t)) * rs,
                               packed + (((size_t)layer * T + t) * H + h) * D, D * 2);
            struct kv_src a = packed_src(packed, KV_DT_F16, T, D);
            struct kv_src b = {.base = odd + (T - 1) * rs,
                               .dtype = KV_DT_F16,
                               .layer_stride = (ptrdiff_t)(T * rs),
                               .tok_stride = -(ptrdiff_t)rs,
                               .head_stride = (ptrdiff_t)(L * T * rs)};
            uint8_t *pa = malloc(pb), *pbuf = malloc(pb);
            cr_assert_eq(kv_quant_page(&l, pa, &a, &a, T), 0);
            cr_assert_eq(kv_quant_page(&l, pbuf, &b, &b, T), 0);
            cr_assert_eq(memcmp(pa, pbuf, pb), 0, "%s: strided source gives another page",
                         kv_fmt_name(fmt));
            float *o1 = malloc(n * 4), *o2 = calloc((size_t)H * L * T * rs, 4);
            struct kv_dst d1 = {o1, (ptrdiff_t)T * H * D, H * D, D};
            struct kv_dst d2 = {o2, (ptrdiff_t)(T * rs), (ptrdiff_t)rs, (ptrdiff_t)(L * T * rs)};
            cr_assert_eq(kv_dequant_page(&l, pa, 0, T, &d1, NULL), 0);
            cr_assert_eq(kv_dequant_page(&l, pa, 3, T - 3, &d2, NULL), 0);
            for (unsigned layer = 0; layer < L; layer++)
                for (unsigned t = 3; t < T; t++)
                    for (unsigned h = 0; h < H; h++)
                        cr_assert_eq(memcmp(o1 + (((size_t)layer * T + t) * H + h) * D,
                                            o2 + (((size_t)h * L + layer) * T + (t - 3)) * rs,
                                            D * 4),
                                     0, "%s: strided dequant differs", kv_fmt_name(fmt));
            /* segment API agrees with the page API */
            float *so = malloc((size_t)T * D * 4);
            cr_assert_eq(
                kv_dequant_seg(&l, KV_KIND_K, pa + kv_seg_offset(&l, 1, 0, 1), 0, T, so, D), 0);
            for (unsigned t = 0; t < T; t++)
                cr_assert_eq(memcmp(so + t * D, o1 + (((size_t)1 * T + t) * H + 1) * D, D * 4), 0);
            free(vals), free(packed), free(odd), free(pa), free(pbuf), free(o1), free(o2), free(so);
        }
}
