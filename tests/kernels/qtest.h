/* qtest.h - helpers shared by the kernels/ quantization tests: data, layouts, error bounds. */
#ifndef QTEST_H
#define QTEST_H
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kv_quant_impl.h"

static inline uint32_t qt_rand(uint64_t *s)
{
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return (uint32_t)((*s * 0x2545f4914f6cdd1dull) >> 32);
}

/* approximately N(0, 1) (sum of 4 uniforms, scaled) */
static inline float qt_normal(uint64_t *s)
{
    float a = 0;
    for (int i = 0; i < 4; i++)
        a += (float)qt_rand(s) / 4294967296.0f;
    return (a - 2.0f) * 1.7320508f;
}

static inline struct kv_layout qt_layout(int kf, int vf, unsigned L, unsigned H, unsigned D,
                                         unsigned T, unsigned G)
{
    struct kv_layout l = {.n_layers = (uint16_t)L,
                          .n_kv_heads = (uint16_t)H,
                          .head_dim = (uint16_t)D,
                          .page_tokens = (uint16_t)T,
                          .k_fmt = (uint8_t)kf,
                          .v_fmt = (uint8_t)vf,
                          .group = (uint16_t)G};
    return l;
}

/*
 * Round-trip error bound of one element, derived from the source data alone (not from the scales
 * the page stores, so a wrong scale fails). u = 2^-24 is the f32 unit roundoff.
 *
 *  F16/BF16: RNE to p mantissa bits: |x - x'| <= 2^-(p+1) |x| for normal |x|, half the smallest
 *    subnormal below (2^-25 / 2^-134).
 *  FP8 (dynamic): s = amax/FMAX; y = fl(x/s) = (x/s)(1+d1); c = y rounded to FP8 with
 *    |c - y| <= max(2^-(m+1) |y|, sub) (m mantissa bits: 3 for E4M3, 2 for E5M2; sub = half the
 *    smallest subnormal: 2^-10, 2^-17; saturation only clips values above FMAX by < 2u);
 *    x' = fl(c s) = c s (1+d2). So |x - x'| <= 2^-(m+1)|x| + sub s + ~3u|x| + ~2^-(m+1) 2u |x|,
 *    which we bound by (2^-(m+1) + 2^-20)|x| + sub s (1 + 2^-20). s is recomputed here in double.
 *  INT8: s = amax/127; q = rne(fl(x/s)): |q - x/s| <= 1/2 + u|x/s|; |x - x'| <= s/2 + 2u|x| +
 *    u|x'|, bounded by s/2 (1 + 2^-20) + 2^-20 |x|.
 *  4/2-bit asymmetric over a group with data range [mn, mx] (clamped to +-65504), qmax levels:
 *    min is rounded down to f16 (m >= mn - 2^-10 |mn| - 2^-24), scale up (s <= fl((mx - m)/qmax)
 *    (1 + 2^-10) + 2^-24, f16 has 10 fraction bits, 2^-24 its smallest subnormal), so
 *    step := ((mx - mn + 2^-10 |mn| + 2^-24)/qmax)(1 + 2^-10)(1 + 2u) + 2^-24 >= s. The code
 *    q = rne(fl(fl(x - m)/s)) is within 1/2 + 2u|x - m|/s of (x - m)/s (the grid covers
 *    [m, mx] up to the same roundings, so clamping to qmax adds no more than that), and
 *    x' = fma(q, s, m) adds u|x'|. Total: step/2 + 2^-20 (|x| + |mn| + qmax step).
 */
static inline double qt_bound_elem(int fmt, double x, double s_or_step, double mn, double qmax)
{
    double ax = fabs(x);
    switch (fmt) {
    case KV_FMT_F16:
        return fmax(ldexp(ax, -11), 0x1p-25);
    case KV_FMT_BF16:
        return fmax(ldexp(ax, -8), 0x1p-134);
    case KV_FMT_FP8_E4M3:
        return (0x1p-4 + 0x1p-20) * ax + 0x1p-10 * s_or_step * (1 + 0x1p-20);
    case KV_FMT_FP8_E5M2:
        return (0x1p-3 + 0x1p-20) * ax + 0x1p-17 * s_or_step * (1 + 0x1p-20);
    case KV_FMT_INT8:
        return s_or_step / 2 * (1 + 0x1p-20) + 0x1p-20 * ax;
    default:
        return s_or_step / 2 + 0x1p-20 * (ax + fabs(mn) + qmax * s_or_step);
    }
}

static inline double qt_step(double mn, double mx, double qmax)
{
    return ((mx - mn + 0x1p-10 * fabs(mn) + 0x1p-24) / qmax) * (1 + 0x1p-10) * (1 + 0x1p-22) +
           0x1p-24;
}

/* Check a decoded segment y[t][D] against its source x[t][D] (tokens [0, ntok)), per the format's
 * grouping. Returns the number of violations; *worst gets the largest err/bound. */
static inline int qt_check_seg(const struct kv_layout *l, unsigned kind, const float *x,
                               const float *y, unsigned ntok, double *worst)
{
    int fmt = kind == KV_KIND_K ? l->k_fmt : l->v_fmt, bad = 0;
    unsigned D = l->head_dim, G = l->group;
    int kivi = fmt == KV_FMT_KIVI4 || fmt == KV_FMT_KIVI2;
    double qmax = fmt == KV_FMT_KIVI2 ? 3 : 15;
    for (unsigned t = 0; t < ntok; t++) {
        double amax = 0;
        for (unsigned c = 0; c < D; c++)
            amax = fmax(amax, fabs(x[t * D + c]));
        for (unsigned c = 0; c < D; c++) {
            double xv = x[t * D + c], p = 0, mn = 0, mx = 0;
            if (fmt == KV_FMT_FP8_E4M3)
                p = amax / 448.0;
            else if (fmt == KV_FMT_FP8_E5M2)
                p = amax / 57344.0;
            else if (fmt == KV_FMT_INT8)
                p = amax / 127.0;
            else if (fmt == KV_FMT_INT4 || kivi) {
                unsigned t0 = t, t1 = t + 1, c0 = c, c1 = c + 1;
                if (fmt == KV_FMT_INT4)
                    c0 = c / 32 * 32, c1 = c0 + 32;
                else if (kind == KV_KIND_K)
                    t0 = t / G * G, t1 = t0 + G < ntok ? t0 + G : ntok;
                else
                    c0 = c / G * G, c1 = c0 + G;
                mn = INFINITY, mx = -INFINITY;
                for (unsigned tt = t0; tt < t1; tt++)
                    for (unsigned cc = c0; cc < c1; cc++)
                        mn = fmin(mn, x[tt * D + cc]), mx = fmax(mx, x[tt * D + cc]);
                p = qt_step(mn, mx, qmax);
            }
            double b = qt_bound_elem(fmt, xv, p, mn, qmax), e = fabs(xv - y[t * D + c]);
            if (!(e <= b))
                bad++;
            if (b > 0 && e / b > *worst)
                *worst = e / b;
        }
    }
    return bad;
}
#endif
