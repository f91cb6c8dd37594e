/*
 * kv_quant_scalar.h - the scalar conversions and scale rules, shared verbatim by the C reference
 * (kv_quant_ref.c, kv_quant.c) and the CUDA kernels (kv_quant.cu), so both compute the very same
 * bits. Private to kernels/.
 *
 * FP8 encoding works on the bits of |x| (RNE by adding half an ulp minus one plus the lowest kept
 * bit); in the subnormal range the FPU rounds (adding 2^14 (E4M3) / 2^7 (E5M2), whose ulp is the
 * FP8 subnormal step). Results equal NVIDIA's __nv_cvt_float_to_fp8(x, __NV_SATFINITE, ...) on
 * all 2^32 inputs (tests/kernels: golden vectors and a full sweep).
 */
#ifndef KV_QUANT_SCALAR_H
#define KV_QUANT_SCALAR_H

#include <stdint.h>
#include <string.h>

#include "kv_format.h"

#ifdef __CUDACC__
#define KVQ_HD __host__ __device__
#else
#define KVQ_HD
#endif

static inline KVQ_HD uint32_t kvq_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline KVQ_HD float kvq_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline KVQ_HD uint8_t kvq_fp8_enc(float x, int e5)
{
    uint32_t u = kvq_f2u(x), sign = (u >> 24) & 0x80, a = u & 0x7fffffff;

    if (a > 0x7f800000)
        return 0x7f; /* NaN: NVIDIA's canonical NaN, sign dropped */
    if (e5) {
        if (a > 0x47600000)
            a = 0x47600000;  /* saturate to 57344 (also +-inf) */
        if (a >= 0x38800000) /* >= 2^-14: normal */
            return (uint8_t)(sign | (((a + 0xfffff + ((a >> 21) & 1)) >> 21) - 448));
        return (uint8_t)(sign | (kvq_f2u(kvq_u2f(a) + 128.0f) - 0x43000000));
    }
    if (a > 0x43e00000)
        a = 0x43e00000;  /* 448 */
    if (a >= 0x3c800000) /* >= 2^-6 */
        return (uint8_t)(sign | (((a + 0x7ffff + ((a >> 20) & 1)) >> 20) - 960));
    return (uint8_t)(sign | (kvq_f2u(kvq_u2f(a) + 16384.0f) - 0x46800000));
}

static inline KVQ_HD float kvq_f16_dec(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;

    if (e == 0x1f)
        return kvq_u2f(sign | 0x7f800000 | m << 13);
    if (e == 0) /* subnormal or zero: m * 2^-24, exact */
        return kvq_u2f(kvq_f2u((float)m * 0x1p-24f) | sign);
    return kvq_u2f(sign | (e + 112) << 23 | m << 13);
}

static inline KVQ_HD uint16_t kvq_f16_enc(float x)
{
    uint32_t u = kvq_f2u(x), sign = (u >> 16) & 0x8000, a = u & 0x7fffffff;

    if (a > 0x7f800000)
        return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
    if (a >= 0x477ff000) /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7c00);
    if (a >= 0x38800000) /* >= 2^-14 */
        return (uint16_t)(sign | (((a + 0xfff + ((a >> 13) & 1)) >> 13) - (112 << 10)));
    return (uint16_t)(sign | (kvq_f2u(kvq_u2f(a) + 0.5f) - 0x3f000000));
}

static inline KVQ_HD uint16_t kvq_bf16_enc(float x)
{
    uint32_t u = kvq_f2u(x);

    if ((u & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static inline KVQ_HD float kvq_fp8_dec(uint8_t c, int e5)
{
    if (e5)
        return (c & 0x7f) > 0x7c ? kvq_u2f(0x7fffe000) : kvq_f16_dec((uint16_t)(c << 8));
    if ((c & 0x7f) == 0x7f)
        return kvq_u2f(0x7fffe000);
    /* E4M3 bits shifted into an f16 are the value / 2^8 (subnormals included) */
    float f = kvq_f16_dec((uint16_t)((c & 0x7f) << 7)) * 256.0f;
    return kvq_u2f(kvq_f2u(f) | (uint32_t)(c & 0x80) << 24);
}

/* Per-token scale of FP8/INT8: s = amax / qmax (dynamic) or the static scale. What the encoder
 * applies: static scales divide (cvt(x / s), as vLLM does); dynamic scales multiply by r = 1 / s
 * (as vLLM's dynamic per-token quantizer does: one division per token instead of per element),
 * unless r overflows (s < 2^-128), then they divide too. Returns s (stored in the page); *f, *mul
 * say what the encoder uses. s == 0 means: encode zeros (NaN stays NaN in FP8). */
static inline KVQ_HD float kvq_token_scale(float amax, float qmax, float sscale, float *f, int *mul)
{
    float s = sscale > 0.0f ? sscale : amax / qmax;
    *f = s;
    *mul = 0;
    if (!(sscale > 0.0f) && s > 0.0f) {
        float r = 1.0f / s;
        if (kvq_f2u(r) < 0x7f800000) {
            *f = r;
            *mul = 1;
        }
    }
    return s;
}

/* Largest f16 <= v (|v| <= 65504). */
static inline KVQ_HD uint16_t kvq_f16_down(float v)
{
    uint16_t h = kvq_f16_enc(v);
    if (kvq_f16_dec(h) > v)
        h = (h & 0x8000) ? (uint16_t)(h + 1) : (h == 0 ? (uint16_t)0x8001 : (uint16_t)(h - 1));
    return h;
}

/* Smallest f16 >= v (0 <= v <= 65504). */
static inline KVQ_HD uint16_t kvq_f16_up(float v)
{
    uint16_t h = kvq_f16_enc(v);
    if (kvq_f16_dec(h) < v)
        h = (uint16_t)(h + 1);
    return h;
}

/* Asymmetric group parameters for clamped finite values spanning [mn, mx] (mn > mx: no finite
 * value). +0.0f makes -0 and +0 the same, so the order in which a tier reduced them is
 * irrelevant. min is rounded down and scale up: the grid m + q s, q in [0, qmax], covers [mn, mx].
 */
static inline KVQ_HD struct kv_sm16 kvq_asym_params(float mn, float mx, float qmax, float *s,
                                                    float *m)
{
    struct kv_sm16 r;
    if (mn > mx)
        mn = mx = 0.0f;
    mn = mn + 0.0f;
    mx = mx + 0.0f;
    r.min = kvq_f16_down(mn);
    *m = kvq_f16_dec(r.min);
    r.scale = kvq_f16_up((mx - *m) / qmax);
    *s = kvq_f16_dec(r.scale);
    return r;
}

#endif
