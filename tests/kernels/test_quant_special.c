/*
 * test_quant_special.c - documented behaviour for all-zero rows, constant rows, huge outliers,
 * NaN and inf; partial pages; static scales; layout checks; page conversion.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "qtest.h"

enum { D = 64, T = 16 };

/* Quantize one K or V segment (row-major T x D f32) and decode it back, on every tier; the tiers
 * must agree, the reference's result is returned in y. */
static void seg_roundtrip(int fmt, unsigned kind, const float *x, unsigned ntok, float *y,
                          uint8_t *seg_out)
{
    struct kv_layout l = qt_layout(fmt, fmt, 1, 1, D, T, 16);
    size_t sb = kv_seg_bytes(fmt, &l);
    uint8_t *seg = malloc(sb), *ref = malloc(sb);
    float *yy = malloc(T * D * 4);
    for (int t = KV_TIER_REF; t <= KV_TIER_AVX512; t++) {
        if (kv_quant_set_tier(t) != 0)
            continue;
        cr_assert_eq(kv_quant_seg(&l, kind, seg, x, KV_DT_F32, D, ntok, 0.0f), 0);
        cr_assert_eq(kv_dequant_seg(&l, kind, seg, 0, T, yy, D), 0);
        if (t == KV_TIER_REF) {
            memcpy(ref, seg, sb);
            memcpy(y, yy, T * D * 4);
        } else {
            cr_assert_eq(memcmp(ref, seg, sb), 0, "%s tier %d", kv_fmt_name(fmt), t);
            for (unsigned i = 0; i < T * D; i++)
                cr_assert(kvq_f2u(y[i]) == kvq_f2u(yy[i]) || (isnan(y[i]) && isnan(yy[i])));
        }
    }
    if (seg_out)
        memcpy(seg_out, ref, sb);
    free(seg), free(ref), free(yy);
}

Test(special, all_zero_rows_decode_to_zero_with_zero_scale)
{
    float x[T * D] = {0}, y[T * D];
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++)
        for (unsigned kind = 0; kind < 2; kind++) {
            seg_roundtrip(fmt, kind, x, T, y, NULL);
            for (unsigned i = 0; i < T * D; i++)
                cr_assert(y[i] == 0.0f, "%s kind %u elem %u = %g", kv_fmt_name(fmt), kind, i, y[i]);
        }
}

Test(special, constant_rows)
{
    float x[T * D], y[T * D];
    const float cs[] = {0.25f, -3.0f, 0.3f, 1000.5f};
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        for (unsigned i = 0; i < T * D; i++)
            x[i] = cs[k];
        int repr = kv_f16_to_f32(kv_f16_from_f32(cs[k])) == cs[k];
        for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++)
            for (unsigned kind = 0; kind < 2; kind++) {
                seg_roundtrip(fmt, kind, x, T, y, NULL);
                for (unsigned i = 0; i < T * D; i++) {
                    /* f16-representable constants come back exactly from every format whose
                     * grid contains them: f16/bf16 when representable, the 4/2-bit formats
                     * (min = c, scale 0), FP8/INT8 (amax/FMAX*FMAX may round: within 2u). */
                    if (fmt >= KV_FMT_INT4 && repr)
                        cr_assert_eq(y[i], cs[k], "%s kind %u", kv_fmt_name(fmt), kind);
                    else
                        cr_assert(fabsf(y[i] - cs[k]) <= 0x1p-8f * fabsf(cs[k]), "%s c=%g y=%g",
                                  kv_fmt_name(fmt), cs[k], y[i]);
                }
            }
    }
}

Test(special, nan_inf_and_outliers)
{
    float x[T * D], y[T * D];
    uint64_t s = 9;
    for (unsigned i = 0; i < T * D; i++)
        x[i] = qt_normal(&s);
    x[0] = NAN;             /* token 0 */
    x[D + 1] = INFINITY;    /* token 1 */
    x[2 * D + 2] = -1e6f;   /* token 2: outlier beyond f16 range */
    x[3 * D + 3] = 3000.0f; /* token 3: outlier within range */
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++)
        for (unsigned kind = 0; kind < 2; kind++) {
            seg_roundtrip(fmt, kind, x, T, y, NULL);
            int fp8 = fmt == KV_FMT_FP8_E4M3 || fmt == KV_FMT_FP8_E5M2;
            float fmax = fmt == KV_FMT_FP8_E4M3 ? 448.0f : 57344.0f;
            const char *nm = kv_fmt_name(fmt);
            if (fmt <= KV_FMT_BF16 || fp8)
                cr_assert(isnan(y[0]), "%s: NaN stays NaN", nm);
            else
                cr_assert(!isnan(y[0]), "%s: integer formats have no NaN", nm);
            if (fmt == KV_FMT_INT8)
                cr_assert_eq(y[0], 0.0f, "int8: NaN encodes as 0");
            if (fmt <= KV_FMT_BF16)
                cr_assert(isinf(y[D + 1]) && y[D + 1] > 0);
            else if (fp8) { /* +inf saturates to max * the token's scale (amax of finite values) */
                float amax = 0;
                for (unsigned c = 0; c < D; c++)
                    if (isfinite(x[D + c]))
                        amax = fmaxf(amax, fabsf(x[D + c]));
                cr_assert_eq(y[D + 1], (fmax * 1.0f) * (amax / fmax), "%s inf", nm);
            } else if (fmt == KV_FMT_INT8) {
                float amax = 0;
                for (unsigned c = 0; c < D; c++)
                    if (isfinite(x[D + c]))
                        amax = fmaxf(amax, fabsf(x[D + c]));
                cr_assert_eq(y[D + 1], 127.0f * (amax / 127.0f), "int8 inf");
            } else { /* 4/2-bit: clamped to 65504, then quantized: at least the group max */
                cr_assert(y[D + 1] >= 65504.0f * 0.99f && isfinite(y[D + 1]), "%s inf -> %g", nm,
                          y[D + 1]);
            }
            /* outlier beyond the f16 range: f16 -> -inf; FP8/INT8 keep it relative to its own
             * scale; 4/2-bit formats clamp it to -65504 */
            if (fmt == KV_FMT_F16)
                cr_assert(isinf(y[2 * D + 2]));
            else if (fmt == KV_FMT_BF16 || fp8 || fmt == KV_FMT_INT8)
                cr_assert(fabsf(y[2 * D + 2] + 1e6f) <= 0.07e6f, "%s outlier %g", nm, y[2 * D + 2]);
            else
                cr_assert(fabsf(y[2 * D + 2] + 65504.0f) <= 65504.0f * 0x1p-10f, "%s clamp %g", nm,
                          y[2 * D + 2]);
            /* in-range outlier: kept within the format's relative or group-step bound */
            cr_assert(fabsf(y[3 * D + 3] - 3000.0f) <= 3000.0f * 0.14f, "%s outlier %g", nm,
                      y[3 * D + 3]);
            /* finite, ordinary values of tokens 4.. are within the derived bounds */
            double worst = 0;
            struct kv_layout l = qt_layout(fmt, fmt, 1, 1, D, T, 16);
            if (!(kind == KV_KIND_K && (fmt == KV_FMT_KIVI4 || fmt == KV_FMT_KIVI2)))
                cr_assert_eq(qt_check_seg(&l, kind, x + 4 * D, y + 4 * D, T - 4, &worst), 0,
                             "%s worst %.3f", nm, worst);
        }
}

Test(special, partial_page_tail_is_zero)
{
    float x[T * D], y[T * D];
    uint64_t s = 3;
    for (unsigned i = 0; i < T * D; i++)
        x[i] = qt_normal(&s) + 2.0f;
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++)
        for (unsigned kind = 0; kind < 2; kind++) {
            struct kv_layout l = qt_layout(fmt, fmt, 1, 1, D, T, 16);
            uint8_t seg[8192];
            cr_assert_lt(kv_seg_bytes(fmt, &l), sizeof seg);
            seg_roundtrip(fmt, kind, x, 5, y, seg);
            int kivi_k = kind == KV_KIND_K && (fmt == KV_FMT_KIVI4 || fmt == KV_FMT_KIVI2);
            for (unsigned i = 5 * D; i < T * D; i++) {
                if (kivi_k) /* documented: the partial key group's min */
                    cr_assert(y[i] == y[i - (i / D - 4) * D] || y[i] <= y[4 * D + i % D]);
                else
                    cr_assert_eq(y[i], 0.0f, "%s kind %u tail elem %u", kv_fmt_name(fmt), kind, i);
            }
            /* data bytes of absent tokens are zero */
            size_t row = (size_t)D * kv_fmt_bits(fmt) / 8;
            for (size_t b = 5 * row; b < T * row; b++)
                cr_assert_eq(seg[b], 0);
        }
}

Test(special, static_scale)
{
    float x[T * D], y[T * D];
    uint64_t s = 4;
    for (unsigned i = 0; i < T * D; i++)
        x[i] = qt_normal(&s);
    x[7] = 100.0f; /* saturates under the static scale */
    const float ss = 0.01f;
    struct kv_layout l = qt_layout(KV_FMT_FP8_E4M3, KV_FMT_INT4, 1, 1, D, T, 16);
    uint8_t seg[4096];
    cr_assert_eq(kv_quant_seg(&l, KV_KIND_K, seg, x, KV_DT_F32, D, T, ss), 0);
    const float *sc = (const float *)(seg + kv_seg_scale_offset(KV_FMT_FP8_E4M3, &l));
    for (unsigned t = 0; t < T; t++)
        cr_assert_eq(sc[t], ss);
    for (unsigned i = 0; i < T * D; i++) /* exactly cvt(x / scale), divide not multiply */
        cr_assert_eq(seg[i], kv_fp8_e4m3_from_f32(x[i] / ss));
    cr_assert_eq(seg[7], 0x7e);
    cr_assert_eq(kv_dequant_seg(&l, KV_KIND_K, seg, 0, T, y, D), 0);
    cr_assert_eq(y[7], 448.0f * ss);
    /* dynamic scale: s = amax / 448 stored, codes cvt(x * fl(1 / s)) */
    for (int t = KV_TIER_REF; t <= KV_TIER_AVX512; t++) {
        if (kv_quant_set_tier(t) != 0)
            continue;
        cr_assert_eq(kv_quant_seg(&l, KV_KIND_K, seg, x, KV_DT_F32, D, T, 0.0f), 0);
        for (unsigned tok = 0; tok < T; tok++) {
            float amax = 0;
            for (unsigned c = 0; c < D; c++)
                amax = fmaxf(amax, fabsf(x[tok * D + c]));
            cr_assert_eq(sc[tok], amax / 448.0f);
            for (unsigned c = 0; c < D; c++)
                cr_assert_eq(seg[tok * D + c],
                             kv_fp8_e4m3_from_f32(x[tok * D + c] * (1.0f / sc[tok])));
        }
    }
    /* static scale on a format without per-token scales, or a bad value: -EINVAL */
    cr_assert_eq(kv_quant_seg(&l, KV_KIND_V, seg, x, KV_DT_F32, D, T, ss), -EINVAL);
    cr_assert_eq(kv_quant_seg(&l, KV_KIND_K, seg, x, KV_DT_F32, D, T, -1.0f), -EINVAL);
    cr_assert_eq(kv_quant_seg(&l, KV_KIND_K, seg, x, KV_DT_F32, D, T, INFINITY), -EINVAL);
    cr_assert_eq(kv_quant_seg(&l, KV_KIND_K, seg, x, KV_DT_F32, D, T, NAN), -EINVAL);
}

Test(special, layout_checks_and_sizes)
{
    struct kv_layout l = qt_layout(KV_FMT_KIVI4, KV_FMT_KIVI2, 2, 4, 128, 64, 32);
    cr_assert_eq(kv_layout_check(&l), 0);
    /* K: 64*128/2 data + 64/32*128 records; V: 64*128/4 + 64*128/32 records, 4 B each */
    cr_assert_eq(kv_seg_bytes(KV_FMT_KIVI4, &l), 4096 + 1024);
    cr_assert_eq(kv_seg_bytes(KV_FMT_KIVI2, &l), 2048 + 1024);
    cr_assert_eq(kv_page_bytes(&l), 2u * 4 * (5120 + 3072));
    l.page_tokens = 48; /* not a multiple of G */
    cr_assert_eq(kv_layout_check(&l), -EINVAL);
    cr_assert_eq(kv_page_bytes(&l), 0);
    l.page_tokens = 64, l.group = 4; /* not a multiple of 8 */
    cr_assert_eq(kv_layout_check(&l), -EINVAL);
    l.group = 0;
    cr_assert_eq(kv_layout_check(&l), -EINVAL);
    l = qt_layout(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3, 1, 1, 96, 16, 0);
    cr_assert_eq(kv_layout_check(&l), 0); /* group ignored without KIVI */
    cr_assert_eq(kv_seg_bytes(KV_FMT_FP8_E4M3, &l), 16 * 96 + 64);
    l.head_dim = 80;
    cr_assert_eq(kv_layout_check(&l), -EINVAL);
    l = qt_layout(KV_FMT_INT8, KV_FMT_INT4, 1, 1, 64, 16, 0);
    float x[16 * 64] = {0};
    uint8_t page[4096];
    struct kv_src src = {.base = x, .dtype = KV_DT_F32, .tok_stride = 64};
    cr_assert_eq(kv_quant_page(&l, page, &src, &src, 0), -EINVAL);
    cr_assert_eq(kv_quant_page(&l, page, &src, &src, 17), -EINVAL);
    src.dtype = 7;
    cr_assert_eq(kv_quant_page(&l, page, &src, &src, 16), -EINVAL);
    cr_assert_eq(kv_dequant_seg(&l, 0, page, 10, 7, x, 64), -EINVAL);
    cr_assert_eq(kv_dequant_seg(&l, 2, page, 0, 1, x, 64), -EINVAL);
}

/* Converting a page equals quantizing its decoded values in the new format; any format goes to
 * FP8 E4M3 (the spill tier) and back; an equal format copies bytes. */
Test(special, convert_pages)
{
    enum { LL = 2, HH = 2, DD = 64, TT = 32 };
    size_t n = (size_t)LL * TT * HH * DD;
    float *x = malloc(n * 4), *dec = malloc(n * 4);
    uint64_t s = 11;
    for (size_t i = 0; i < n; i++)
        x[i] = qt_normal(&s) * (i % 7 == 0 ? 10.0f : 1.0f);
    struct kv_src src = {.base = x,
                         .dtype = KV_DT_F32,
                         .layer_stride = TT * HH * DD,
                         .tok_stride = HH * DD,
                         .head_stride = DD};
    struct kv_dst dd = {dec, TT * HH * DD, HH * DD, DD};
    for (int from = 1; from <= KV_FMT_MAX_ID; from++)
        for (int to = 1; to <= KV_FMT_MAX_ID; to++) {
            struct kv_layout a = qt_layout(from, from, LL, HH, DD, TT, 16);
            struct kv_layout b = qt_layout(to, to, LL, HH, DD, TT, 32);
            uint8_t *pa = malloc(kv_page_bytes(&a)), *pb = malloc(kv_page_bytes(&b));
            uint8_t *pc = malloc(kv_page_bytes(&b));
            float *vdec = malloc(n * 4);
            struct kv_dst vd = {vdec, TT * HH * DD, HH * DD, DD};
            cr_assert_eq(kv_quant_page(&a, pa, &src, &src, TT), 0);
            cr_assert_eq(kv_convert_page(&a, pa, &b, pb), 0);
            cr_assert_eq(kv_dequant_page(&a, pa, 0, TT, &dd, &vd), 0);
            struct kv_src ks = src, vs = src;
            ks.base = dec, vs.base = vdec;
            cr_assert_eq(kv_quant_page(&b, pc, &ks, &vs, TT), 0);
            if (from == to && from != KV_FMT_KIVI4 && from != KV_FMT_KIVI2)
                cr_assert_eq(memcmp(pa, pb, kv_page_bytes(&a)), 0, "copy %s", kv_fmt_name(from));
            else
                cr_assert_eq(memcmp(pb, pc, kv_page_bytes(&b)), 0, "%s -> %s", kv_fmt_name(from),
                             kv_fmt_name(to));
            free(pa), free(pb), free(pc), free(vdec);
        }
    struct kv_layout a = qt_layout(KV_FMT_F16, KV_FMT_F16, LL, HH, DD, TT, 0);
    struct kv_layout b = qt_layout(KV_FMT_F16, KV_FMT_F16, LL, HH, DD + 32, TT, 0);
    uint8_t page[1];
    cr_assert_eq(kv_convert_page(&a, page, &b, page), -EINVAL);
    free(x), free(dec);
}
