/*
 * kv_quant_impl.h - private to kernels/kv_quant*.c: the row operations every tier implements.
 *
 * The page/segment driver (kv_quant.c) does all layout work and calls these on one row of at most
 * KV_MAX_HEAD_DIM channels. Each operation is specified by its scalar version in kv_quant_ref.c;
 * every tier performs the same IEEE-754 operations (one division, one subtraction, one fused
 * multiply-add, RNE conversions), element by element, so all tiers agree bit for bit. The kernels
 * are built with -ffp-contract=off so the compiler cannot fuse what the specification does not.
 */
#ifndef KV_QUANT_IMPL_H
#define KV_QUANT_IMPL_H

#include <stdint.h>
#include <string.h>

#include "kv_quant.h"
#include "kv_quant_scalar.h"

struct kvq_ops {
    /* dst[i] = (float)src[i] for dtype f32/f16/bf16 (exact). */
    void (*load)(float *dst, const void *src, int dtype, unsigned n);
    /* Largest finite |x[i]|; 0 when there is none (NaN and inf are skipped). */
    float (*amax)(const float *x, unsigned n);
    /* Per element: mn[i] = min(mn[i], c(x[i])), mx likewise, c = clamp to +-KV_F16_MAX, NaN
     * skipped. With n_out == 1 the whole row reduces into mn[0], mx[0]. */
    void (*minmax)(float *mn, float *mx, const float *x, unsigned n, unsigned n_out);
    /* kvq_asym_params (kv_quant_scalar.h) for n groups: rec[i], s[i], m[i] from mn[i], mx[i]. */
    void (*a_params)(struct kv_sm16 *rec, float *s, float *m, const float *mn, const float *mx,
                     unsigned n, float qmax);
    /* FP8 codes of y = x[i] / f (mul == 0) or x[i] * f (mul != 0), f > 0 (kvq_token_scale), fmt
     * KV_FMT_FP8_E4M3 or _E5M2. */
    void (*fp8_enc)(uint8_t *q, const float *x, unsigned n, float f, int mul, int fmt);
    /* y[i] = fp8_to_f32(q[i]) * s. */
    void (*fp8_dec)(float *y, const uint8_t *q, unsigned n, float s, int fmt);
    /* q[i] = NaN(y) ? 0 : clamp(rne(y), -127, 127), y as for fp8_enc. */
    void (*i8_enc)(int8_t *q, const float *x, unsigned n, float f, int mul);
    /* y[i] = (float)q[i] * s. */
    void (*i8_dec)(float *y, const int8_t *q, unsigned n, float s);
    /* f16 (bf16 != 0: bfloat16) encodings of x[i], RNE. */
    void (*h_enc)(uint16_t *h, const float *x, unsigned n, int bf16);
    /* Asymmetric b-bit (b = 4 or 2) codes packed into 32-bit words, low bits first: channel i
     * uses s[i / gsz], m[i / gsz]; d = (clamp16(x) - m) / s; q = NaN(d) ? 0 : clamp(rne(d), 0,
     * 2^b - 1). n is a multiple of 32 and gsz of 8, or gsz == 1. */
    void (*a_enc)(uint32_t *w, const float *x, unsigned n, unsigned gsz, const float *s,
                  const float *m, unsigned bits);
    /* y[i] = fmaf(q[i], s[i / gsz], m[i / gsz]). */
    void (*a_dec)(float *y, const uint32_t *w, unsigned n, unsigned gsz, const float *s,
                  const float *m, unsigned bits);
};

extern const struct kvq_ops kvq_ops_ref;
extern const struct kvq_ops kvq_ops_avx2;   /* only valid when the CPU has AVX2+F16C+FMA */
extern const struct kvq_ops kvq_ops_avx512; /* ... and AVX-512 F/BW/VL/DQ */

#endif
