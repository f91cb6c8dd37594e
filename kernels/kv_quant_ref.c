/*
 * kv_quant_ref.c - the scalar reference: the specification of every row operation (scalar
 * conversions: kv_quant_scalar.h). The SIMD tiers implement exactly these steps lane by lane.
 */
#include <math.h>

#include "kv_quant_impl.h"

uint8_t kv_fp8_e4m3_from_f32(float x)
{
    return kvq_fp8_enc(x, 0);
}

uint8_t kv_fp8_e5m2_from_f32(float x)
{
    return kvq_fp8_enc(x, 1);
}

float kv_fp8_e4m3_to_f32(uint8_t c)
{
    return kvq_fp8_dec(c, 0);
}

float kv_fp8_e5m2_to_f32(uint8_t c)
{
    return kvq_fp8_dec(c, 1);
}

uint16_t kv_f16_from_f32(float x)
{
    return kvq_f16_enc(x);
}

float kv_f16_to_f32(uint16_t h)
{
    return kvq_f16_dec(h);
}

uint16_t kv_bf16_from_f32(float x)
{
    return kvq_bf16_enc(x);
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

static void ref_a_params(struct kv_sm16 *rec, float *s, float *m, const float *mn, const float *mx,
                         unsigned n, float qmax)
{
    for (unsigned i = 0; i < n; i++)
        rec[i] = kvq_asym_params(mn[i], mx[i], qmax, &s[i], &m[i]);
}

static void ref_fp8_enc(uint8_t *q, const float *x, unsigned n, float f, int mul, int fmt)
{
    for (unsigned i = 0; i < n; i++)
        q[i] = kvq_fp8_enc(mul ? x[i] * f : x[i] / f, fmt == KV_FMT_FP8_E5M2);
}

static void ref_fp8_dec(float *y, const uint8_t *q, unsigned n, float s, int fmt)
{
    for (unsigned i = 0; i < n; i++)
        y[i] = (fmt == KV_FMT_FP8_E4M3 ? kv_fp8_e4m3_to_f32(q[i]) : kv_fp8_e5m2_to_f32(q[i])) * s;
}

static void ref_i8_enc(int8_t *q, const float *x, unsigned n, float f, int mul)
{
    for (unsigned i = 0; i < n; i++) {
        float d = mul ? x[i] * f : x[i] / f;
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
    .a_params = ref_a_params,
    .fp8_enc = ref_fp8_enc,
    .fp8_dec = ref_fp8_dec,
    .i8_enc = ref_i8_enc,
    .i8_dec = ref_i8_dec,
    .h_enc = ref_h_enc,
    .a_enc = ref_a_enc,
    .a_dec = ref_a_dec,
};
