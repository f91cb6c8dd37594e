/*
 * kv_quant_ref.c - the scalar reference: the specification of every conversion and row operation.
 *
 * FP8 encoding works on the bits of |x| (RNE by adding half an ulp minus one plus the lowest kept
 * bit); the subnormal range lets the FPU round (adding 2^14 (E4M3) / 2^7 (E5M2), whose ulp is the
 * FP8 subnormal step). Results equal NVIDIA's __nv_cvt_float_to_fp8(x, __NV_SATFINITE, ...) on
 * every input (checked by tests/kernels against committed golden vectors and, when cuda_fp8.h is
 * present, live). The SIMD tiers implement exactly these steps lane by lane.
 */
#include <math.h>

#include "kv_quant_impl.h"

uint8_t kv_fp8_e4m3_from_f32(float x)
{
    uint32_t u = kvq_f2u(x), sign = (u >> 24) & 0x80, a = u & 0x7fffffff;

    if (a > 0x7f800000)
        return 0x7f; /* NaN: NVIDIA's canonical NaN, sign dropped */
    if (a > 0x43e00000)
        a = 0x43e00000;  /* saturate to 448 (also +-inf) */
    if (a >= 0x3c800000) /* >= 2^-6: normal */
        return (uint8_t)(sign | (((a + 0x7ffff + ((a >> 20) & 1)) >> 20) - 960));
    return (uint8_t)(sign | (kvq_f2u(kvq_u2f(a) + 16384.0f) - 0x46800000));
}

uint8_t kv_fp8_e5m2_from_f32(float x)
{
    uint32_t u = kvq_f2u(x), sign = (u >> 24) & 0x80, a = u & 0x7fffffff;

    if (a > 0x7f800000)
        return 0x7f;
    if (a > 0x47600000)
        a = 0x47600000;  /* 57344 */
    if (a >= 0x38800000) /* >= 2^-14 */
        return (uint8_t)(sign | (((a + 0xfffff + ((a >> 21) & 1)) >> 21) - 448));
    return (uint8_t)(sign | (kvq_f2u(kvq_u2f(a) + 128.0f) - 0x43000000));
}

float kv_fp8_e4m3_to_f32(uint8_t c)
{
    if ((c & 0x7f) == 0x7f)
        return kvq_u2f(0x7fffe000);
    /* E4M3 bits shifted into an f16 are the value / 2^8 (subnormals included). */
    float f = kv_f16_to_f32((uint16_t)((c & 0x7f) << 7)) * 256.0f;
    return kvq_u2f(kvq_f2u(f) | (uint32_t)(c & 0x80) << 24);
}

float kv_fp8_e5m2_to_f32(uint8_t c)
{
    if ((c & 0x7f) > 0x7c)
        return kvq_u2f(0x7fffe000);
    return kv_f16_to_f32((uint16_t)(c << 8)); /* E5M2 is the top byte of an f16 */
}

uint16_t kv_f16_from_f32(float x)
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

float kv_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;

    if (e == 0x1f)
        return kvq_u2f(sign | 0x7f800000 | m << 13);
    if (e == 0) /* subnormal or zero: m * 2^-24, exact */
        return kvq_u2f(kvq_f2u((float)m * 0x1p-24f) | sign);
    return kvq_u2f(sign | (e + 112) << 23 | m << 13);
}

uint16_t kv_bf16_from_f32(float x)
{
    uint32_t u = kvq_f2u(x);

    if ((u & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

float kv_bf16_to_f32(uint16_t h)
{
    return kvq_u2f((uint32_t)h << 16);
}

static float clamp16(float x)
{
    return x > KV_F16_MAX ? KV_F16_MAX : (x < -KV_F16_MAX ? -KV_F16_MAX : x);
}

static void ref_load(float *dst, const void *src, int dtype, unsigned n)
{
    if (dtype == KV_DT_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (dtype == KV_DT_F16) {
        for (unsigned i = 0; i < n; i++)
            dst[i] = kv_f16_to_f32(((const uint16_t *)src)[i]);
    } else {
        for (unsigned i = 0; i < n; i++)
            dst[i] = kv_bf16_to_f32(((const uint16_t *)src)[i]);
    }
}

static float ref_amax(const float *x, unsigned n)
{
    uint32_t m = 0;
    for (unsigned i = 0; i < n; i++) {
        uint32_t a = kvq_f2u(x[i]) & 0x7fffffff;
        if (a < 0x7f800000 && a > m)
            m = a;
    }
    return kvq_u2f(m);
}

static void ref_minmax(float *mn, float *mx, const float *x, unsigned n, unsigned n_out)
{
    for (unsigned i = 0; i < n; i++) {
        if (isnan(x[i]))
            continue;
        float v = clamp16(x[i]);
        unsigned o = n_out == 1 ? 0 : i;
        mn[o] = v < mn[o] ? v : mn[o];
        mx[o] = v > mx[o] ? v : mx[o];
    }
}

static void ref_fp8_enc(uint8_t *q, const float *x, unsigned n, float s, int fmt)
{
    for (unsigned i = 0; i < n; i++)
        q[i] = fmt == KV_FMT_FP8_E4M3 ? kv_fp8_e4m3_from_f32(x[i] / s)
                                      : kv_fp8_e5m2_from_f32(x[i] / s);
}

static void ref_fp8_dec(float *y, const uint8_t *q, unsigned n, float s, int fmt)
{
    for (unsigned i = 0; i < n; i++)
        y[i] = (fmt == KV_FMT_FP8_E4M3 ? kv_fp8_e4m3_to_f32(q[i]) : kv_fp8_e5m2_to_f32(q[i])) * s;
}

static void ref_i8_enc(int8_t *q, const float *x, unsigned n, float s)
{
    for (unsigned i = 0; i < n; i++) {
        float d = x[i] / s;
        q[i] = isnan(d) ? 0 : (int8_t)nearbyintf(d > 127.0f ? 127.0f : (d < -127.0f ? -127.0f : d));
    }
}

static void ref_i8_dec(float *y, const int8_t *q, unsigned n, float s)
{
    for (unsigned i = 0; i < n; i++)
        y[i] = (float)q[i] * s;
}

static void ref_h_enc(uint16_t *h, const float *x, unsigned n, int bf16)
{
    for (unsigned i = 0; i < n; i++)
        h[i] = bf16 ? kv_bf16_from_f32(x[i]) : kv_f16_from_f32(x[i]);
}

static void ref_a_enc(uint32_t *w, const float *x, unsigned n, unsigned gsz, const float *s,
                      const float *m, unsigned bits)
{
    unsigned per = 32 / bits;
    float qmax = (float)((1u << bits) - 1);

    memset(w, 0, n / per * sizeof(uint32_t));
    for (unsigned i = 0; i < n; i++) {
        float d = (clamp16(x[i]) - m[i / gsz]) / s[i / gsz];
        uint32_t q = isnan(d) ? 0 : (uint32_t)nearbyintf(d > qmax ? qmax : (d < 0.0f ? 0.0f : d));
        w[i / per] |= q << (bits * (i % per));
    }
}

static void ref_a_dec(float *y, const uint32_t *w, unsigned n, unsigned gsz, const float *s,
                      const float *m, unsigned bits)
{
    unsigned per = 32 / bits, mask = (1u << bits) - 1;

    for (unsigned i = 0; i < n; i++) {
        unsigned q = (w[i / per] >> (bits * (i % per))) & mask;
        y[i] = fmaf((float)q, s[i / gsz], m[i / gsz]);
    }
}

const struct kvq_ops kvq_ops_ref = {
    .load = ref_load,
    .amax = ref_amax,
    .minmax = ref_minmax,
    .fp8_enc = ref_fp8_enc,
    .fp8_dec = ref_fp8_dec,
    .i8_enc = ref_i8_enc,
    .i8_dec = ref_i8_dec,
    .h_enc = ref_h_enc,
    .a_enc = ref_a_enc,
    .a_dec = ref_a_dec,
};
