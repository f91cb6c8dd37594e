/*
 * kv_quant_avx2.c - AVX2+F16C+FMA and AVX-512 tiers of the row operations (kv_quant_impl.h).
 *
 * Every function is compiled for that target only (one binary runs everywhere; kv_quant.c selects
 * it after checking the CPU). Each lane performs exactly the reference's operations
 * (kv_quant_ref.c) in the same order: the same IEEE division, subtraction and fused multiply-add,
 * the same bit manipulation for FP8/bf16, F16C's RNE conversion for f16, cvtps2dq under the default
 * RNE mode for nearbyintf. So results are bit-identical to the reference; the tests check that.
 *
 * NaN handling follows the reference: min/max are written with the operand order that lets a NaN
 * through (x86 MINPS/MAXPS return the second operand when either is NaN), then masked explicitly.
 */
#if defined(__x86_64__)
#include <immintrin.h>

#include "kv_quant_impl.h"

#define TGT __attribute__((target("avx2,f16c,fma")))

TGT static void avx2_load(float *dst, const void *src, int dtype, unsigned n)
{
    if (dtype == KV_DT_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (dtype == KV_DT_F16) {
        const __m128i *p = src;
        for (unsigned i = 0; i < n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(p + i / 8)));
    } else {
        const __m128i *p = src;
        for (unsigned i = 0; i < n; i += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p + i / 8));
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(w, 16));
        }
    }
}

TGT static float avx2_amax(const float *x, unsigned n)
{
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    __m256i m = _mm256_setzero_si256();
    for (unsigned i = 0; i < n; i += 8) {
        __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)), absm);
        m = _mm256_max_epu32(m, _mm256_and_si256(a, _mm256_cmpgt_epi32(inf, a)));
    }
    __m128i h = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
    return kvq_u2f((uint32_t)_mm_cvtsi128_si32(h));
}

TGT static __m256 clamp16(__m256 x)
{
    /* NaN passes through: MAXPS/MINPS return their second operand when one is NaN. */
    return _mm256_min_ps(_mm256_set1_ps(KV_F16_MAX), _mm256_max_ps(_mm256_set1_ps(-KV_F16_MAX), x));
}

TGT static void avx2_minmax(float *mn, float *mx, const float *x, unsigned n, unsigned n_out)
{
    const __m256 pinf = _mm256_set1_ps(__builtin_inff()), ninf = _mm256_set1_ps(-__builtin_inff());
    __m256 amn = pinf, amx = ninf;
    for (unsigned i = 0; i < n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i), v = clamp16(xv);
        __m256 nan = _mm256_cmp_ps(xv, xv, _CMP_UNORD_Q);
        __m256 vmn = _mm256_blendv_ps(v, pinf, nan), vmx = _mm256_blendv_ps(v, ninf, nan);
        if (n_out == 1) {
            amn = _mm256_min_ps(vmn, amn);
            amx = _mm256_max_ps(vmx, amx);
        } else {
            _mm256_storeu_ps(mn + i, _mm256_min_ps(vmn, _mm256_loadu_ps(mn + i)));
            _mm256_storeu_ps(mx + i, _mm256_max_ps(vmx, _mm256_loadu_ps(mx + i)));
        }
    }
    if (n_out == 1) { /* min/max of a set: order-free (NaN excluded; -0/+0 made equal later) */
        __m128 a = _mm_min_ps(_mm256_castps256_ps128(amn), _mm256_extractf128_ps(amn, 1));
        __m128 b = _mm_max_ps(_mm256_castps256_ps128(amx), _mm256_extractf128_ps(amx, 1));
        a = _mm_min_ps(a, _mm_movehl_ps(a, a));
        b = _mm_max_ps(b, _mm_movehl_ps(b, b));
        a = _mm_min_ss(a, _mm_movehdup_ps(a));
        b = _mm_max_ss(b, _mm_movehdup_ps(b));
        float fa = _mm_cvtss_f32(a), fb = _mm_cvtss_f32(b);
        mn[0] = fa < mn[0] ? fa : mn[0];
        mx[0] = fb > mx[0] ? fb : mx[0];
    }
}

/* kvq_asym_params, 8 groups at a time: F16C's directed rounding modes give exactly the largest
 * f16 <= min and the smallest f16 >= scale (no overflow: |values| <= 65504 after clamping). */
TGT static void avx2_a_params(struct kv_sm16 *rec, float *s, float *m, const float *mn,
                              const float *mx, unsigned n, float qmax)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (unsigned i = 0; i < n; i += 8) {
        __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)), lane);
        __m256 a = _mm256_maskload_ps(mn + i, live), b = _mm256_maskload_ps(mx + i, live);
        __m256 none = _mm256_cmp_ps(a, b, _CMP_GT_OQ);
        a = _mm256_add_ps(_mm256_andnot_ps(none, a), _mm256_setzero_ps());
        b = _mm256_add_ps(_mm256_andnot_ps(none, b), _mm256_setzero_ps());
        __m128i mh = _mm256_cvtps_ph(a, _MM_FROUND_TO_NEG_INF);
        __m256 mf = _mm256_cvtph_ps(mh);
        __m128i sh = _mm256_cvtps_ph(_mm256_div_ps(_mm256_sub_ps(b, mf), _mm256_set1_ps(qmax)),
                                     _MM_FROUND_TO_POS_INF);
        _mm256_maskstore_ps(m + i, live, mf);
        _mm256_maskstore_ps(s + i, live, _mm256_cvtph_ps(sh));
        __m256i r = _mm256_set_m128i(_mm_unpackhi_epi16(sh, mh), _mm_unpacklo_epi16(sh, mh));
        _mm256_maskstore_epi32((int *)(rec + i), live, r);
    }
}

/* 4 vectors of 8 int32 in [0, 255] (or [-128, 127] with sgn) -> 32 bytes in order. */
TGT static __m256i pack_bytes(__m256i a, __m256i b, __m256i c, __m256i d, int sgn)
{
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i r = sgn ? _mm256_packs_epi16(ab, cd) : _mm256_packus_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Constants of one FP8 format's encoder, hoisted out of the loop (held in registers). */
struct fp8c {
    __m256i absm, inf, maxb, minnorm_m1, half_m1, bias, sub_bias, nan_code, one;
    __m256 sub_add;
    int shift;
};

/* Reference kvq_fp8_enc, lane by lane. The normal path folds "- bias << shift" into the rounding
 * addend (lanes below the normal range go negative there and are blended away). */
TGT static inline __m256i fp8_enc8(__m256 y, const struct fp8c *k)
{
    __m256i u = _mm256_castps_si256(y);
    __m256i sign = _mm256_slli_epi32(_mm256_srli_epi32(u, 31), 7);
    __m256i a = _mm256_and_si256(u, k->absm);
    __m256i nan = _mm256_cmpgt_epi32(a, k->inf);
    a = _mm256_min_epu32(a, k->maxb);
    __m256i normal = _mm256_cmpgt_epi32(a, k->minnorm_m1);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, k->shift), k->one);
    __m256i rn = _mm256_add_epi32(_mm256_add_epi32(a, k->half_m1), lsb);
    rn = _mm256_srli_epi32(rn, k->shift);
    __m256 f = _mm256_add_ps(_mm256_castsi256_ps(a), k->sub_add);
    __m256i rs = _mm256_sub_epi32(_mm256_castps_si256(f), k->sub_bias);
    __m256i r = _mm256_or_si256(_mm256_blendv_epi8(rs, rn, normal), sign);
    return _mm256_blendv_epi8(r, k->nan_code, nan);
}

TGT static void avx2_fp8_enc(uint8_t *q, const float *x, unsigned n, float f, int mul, int fmt)
{
    const __m256 sv = _mm256_set1_ps(f);
    struct fp8c k;
    k.absm = _mm256_set1_epi32(0x7fffffff);
    k.inf = _mm256_set1_epi32(0x7f800000);
    k.nan_code = _mm256_set1_epi32(0x7f);
    k.one = _mm256_set1_epi32(1);
    if (fmt == KV_FMT_FP8_E5M2) {
        k.maxb = _mm256_set1_epi32(0x47600000);
        k.minnorm_m1 = _mm256_set1_epi32(0x387fffff);
        k.half_m1 = _mm256_set1_epi32((int)(0xfffffu - (448u << 21)));
        k.sub_add = _mm256_set1_ps(128.0f);
        k.sub_bias = _mm256_set1_epi32(0x43000000);
        k.shift = 21;
    } else {
        k.maxb = _mm256_set1_epi32(0x43e00000);
        k.minnorm_m1 = _mm256_set1_epi32(0x3c7fffff);
        k.half_m1 = _mm256_set1_epi32((int)(0x7ffffu - (960u << 20)));
        k.sub_add = _mm256_set1_ps(16384.0f);
        k.sub_bias = _mm256_set1_epi32(0x46800000);
        k.shift = 20;
    }
    if (mul) {
        for (unsigned i = 0; i < n; i += 32) {
            __m256i r0 = fp8_enc8(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv), &k);
            __m256i r1 = fp8_enc8(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), sv), &k);
            __m256i r2 = fp8_enc8(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), sv), &k);
            __m256i r3 = fp8_enc8(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), sv), &k);
            _mm256_storeu_si256((__m256i *)(q + i), pack_bytes(r0, r1, r2, r3, 0));
        }
        return;
    }
    for (unsigned i = 0; i < n; i += 32) {
        __m256i r0 = fp8_enc8(_mm256_div_ps(_mm256_loadu_ps(x + i), sv), &k);
        __m256i r1 = fp8_enc8(_mm256_div_ps(_mm256_loadu_ps(x + i + 8), sv), &k);
        __m256i r2 = fp8_enc8(_mm256_div_ps(_mm256_loadu_ps(x + i + 16), sv), &k);
        __m256i r3 = fp8_enc8(_mm256_div_ps(_mm256_loadu_ps(x + i + 24), sv), &k);
        _mm256_storeu_si256((__m256i *)(q + i), pack_bytes(r0, r1, r2, r3, 0));
    }
}

TGT static void avx2_fp8_dec(float *y, const uint8_t *q, unsigned n, float s, int fmt)
{
    const __m256 sv = _mm256_set1_ps(s), cnan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffe000));
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (unsigned i = 0; i < n; i += 16) {
        __m256i c = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(q + i))), h;
        if (fmt == KV_FMT_FP8_E4M3)
            h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(c, _mm256_set1_epi16(0x7f)), 7),
                                _mm256_slli_epi16(_mm256_and_si256(c, _mm256_set1_epi16(0x80)), 8));
        else
            h = _mm256_slli_epi16(c, 8);
        for (int j = 0; j < 2; j++) {
            __m128i hj = j ? _mm256_extracti128_si256(h, 1) : _mm256_castsi256_si128(h);
            __m256 f = _mm256_cvtph_ps(hj), nan;
            if (fmt == KV_FMT_FP8_E4M3) {
                f = _mm256_mul_ps(f, _mm256_set1_ps(256.0f));
                nan = _mm256_cmp_ps(_mm256_and_ps(f, absm), _mm256_set1_ps(480.0f), _CMP_EQ_OQ);
            } else {
                nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
            }
            f = _mm256_blendv_ps(f, cnan, nan);
            _mm256_storeu_ps(y + i + 8 * j, _mm256_mul_ps(f, sv));
        }
    }
}

TGT static void avx2_i8_enc(int8_t *q, const float *x, unsigned n, float f, int mul)
{
    const __m256 sv = _mm256_set1_ps(f), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    for (unsigned i = 0; i < n; i += 32) {
        __m256i r[4];
        for (int j = 0; j < 4; j++) {
            __m256 xv = _mm256_loadu_ps(x + i + 8 * j);
            __m256 d = mul ? _mm256_mul_ps(xv, sv) : _mm256_div_ps(xv, sv);
            __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(d, d, _CMP_UNORD_Q));
            d = _mm256_min_ps(_mm256_max_ps(d, lo), hi);
            r[j] = _mm256_andnot_si256(nan, _mm256_cvtps_epi32(d));
        }
        _mm256_storeu_si256((__m256i *)(q + i), pack_bytes(r[0], r[1], r[2], r[3], 1));
    }
}

TGT static void avx2_i8_dec(float *y, const int8_t *q, unsigned n, float s)
{
    const __m256 sv = _mm256_set1_ps(s);
    for (unsigned i = 0; i < n; i += 8) {
        __m256i c = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtepi32_ps(c), sv));
    }
}

TGT static void avx2_h_enc(uint16_t *h, const float *x, unsigned n, int bf16)
{
    if (!bf16) {
        for (unsigned i = 0; i < n; i += 8)
            _mm_storeu_si128((__m128i *)(h + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
        return;
    }
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i one = _mm256_set1_epi32(1);
    for (unsigned i = 0; i < n; i += 16) {
        __m256i r[2];
        for (int j = 0; j < 2; j++) {
            __m256i u = _mm256_loadu_si256((const __m256i *)(x + i + 8 * j));
            __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absm), inf);
            __m256i rn = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)),
                                          _mm256_and_si256(_mm256_srli_epi32(u, 16), one));
            rn = _mm256_srli_epi32(rn, 16);
            __m256i qn = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
            r[j] = _mm256_blendv_epi8(rn, qn, nan);
        }
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xd8);
        _mm256_storeu_si256((__m256i *)(h + i), p);
    }
}

/* Codes of 8 channels starting at i (all in one group when gsz >= 8). */
TGT static inline __attribute__((always_inline)) __m256i
a_codes8(const float *x, unsigned i, unsigned gsz, const float *s, const float *m, __m256 qmax)
{
    __m256 sv = gsz == 1 ? _mm256_loadu_ps(s + i) : _mm256_set1_ps(s[i / gsz]);
    __m256 mv = gsz == 1 ? _mm256_loadu_ps(m + i) : _mm256_set1_ps(m[i / gsz]);
    __m256 d = _mm256_div_ps(_mm256_sub_ps(clamp16(_mm256_loadu_ps(x + i)), mv), sv);
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(d, d, _CMP_UNORD_Q));
    d = _mm256_min_ps(_mm256_max_ps(d, _mm256_setzero_ps()), qmax);
    return _mm256_andnot_si256(nan, _mm256_cvtps_epi32(d));
}

TGT static void avx2_a_enc(uint32_t *w, const float *x, unsigned n, unsigned gsz, const float *s,
                           const float *m, unsigned bits)
{
    const __m256 qmax = _mm256_set1_ps(bits == 4 ? 15.0f : 3.0f);
    for (unsigned i = 0; i < n; i += 32) {
        __m256i b = pack_bytes(a_codes8(x, i, gsz, s, m, qmax), a_codes8(x, i + 8, gsz, s, m, qmax),
                               a_codes8(x, i + 16, gsz, s, m, qmax),
                               a_codes8(x, i + 24, gsz, s, m, qmax), 0);
        if (bits == 4) { /* byte pairs -> b0 | b1 << 4 */
            __m256i p = _mm256_maddubs_epi16(b, _mm256_set1_epi16(0x1001));
            __m128i r = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            _mm_storeu_si128((__m128i *)(w + i / 8), r);
        } else { /* b0 | b1 << 2, then pairs of those | << 4 */
            __m256i p = _mm256_maddubs_epi16(b, _mm256_set1_epi16(0x0401));
            p = _mm256_madd_epi16(p, _mm256_set1_epi32(0x00100001));
            __m128i r = _mm_packus_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            r = _mm_packus_epi16(r, r);
            _mm_storel_epi64((__m128i *)(w + i / 16), r);
        }
    }
}

TGT static void avx2_a_dec(float *y, const uint32_t *w, unsigned n, unsigned gsz, const float *s,
                           const float *m, unsigned bits)
{
    const __m256i sh4 = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m256i sh2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i mask = _mm256_set1_epi32((1 << bits) - 1);
    for (unsigned i = 0; i < n; i += 8) {
        __m256i q;
        if (bits == 4)
            q = _mm256_srlv_epi32(_mm256_set1_epi32((int)w[i / 8]), sh4);
        else
            q = _mm256_srlv_epi32(_mm256_set1_epi32((int)(w[i / 16] >> (i % 16 * 2))), sh2);
        __m256 qf = _mm256_cvtepi32_ps(_mm256_and_si256(q, mask));
        __m256 sv = gsz == 1 ? _mm256_loadu_ps(s + i) : _mm256_set1_ps(s[i / gsz]);
        __m256 mv = gsz == 1 ? _mm256_loadu_ps(m + i) : _mm256_set1_ps(m[i / gsz]);
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(qf, sv, mv));
    }
}

const struct kvq_ops kvq_ops_avx2 = {
    .load = avx2_load,
    .amax = avx2_amax,
    .minmax = avx2_minmax,
    .a_params = avx2_a_params,
    .fp8_enc = avx2_fp8_enc,
    .fp8_dec = avx2_fp8_dec,
    .i8_enc = avx2_i8_enc,
    .i8_dec = avx2_i8_dec,
    .h_enc = avx2_h_enc,
    .a_enc = avx2_a_enc,
    .a_dec = avx2_a_dec,
};

/* ---- AVX-512 (F/BW/VL/DQ): only the FP8/INT8 encoders and amax, where AVX2 is compute-bound;
 * every other operation is the AVX2 one. Same operations as the reference, 16 lanes. ---------- */

#define TGT512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,f16c,fma")))

TGT512 static float avx512_amax(const float *x, unsigned n)
{
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    __m512i m = _mm512_setzero_si512();
    for (unsigned i = 0; i < n; i += 16) {
        __m512i a = _mm512_and_si512(_mm512_loadu_si512(x + i), absm);
        m = _mm512_mask_max_epu32(m, _mm512_cmplt_epu32_mask(a, inf), m, a);
    }
    return kvq_u2f(_mm512_reduce_max_epu32(m));
}

TGT512 static void avx512_fp8_enc(uint8_t *q, const float *x, unsigned n, float f, int mul, int fmt)
{
    const int e5 = fmt == KV_FMT_FP8_E5M2;
    const __m512 sv = _mm512_set1_ps(f), sub_add = _mm512_set1_ps(e5 ? 128.0f : 16384.0f);
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i maxb = _mm512_set1_epi32(e5 ? 0x47600000 : 0x43e00000);
    const __m512i minnorm_m1 = _mm512_set1_epi32(e5 ? 0x387fffff : 0x3c7fffff);
    const __m512i half_m1 =
        _mm512_set1_epi32(e5 ? (int)(0xfffffu - (448u << 21)) : (int)(0x7ffffu - (960u << 20)));
    const __m512i sub_bias = _mm512_set1_epi32(e5 ? 0x43000000 : 0x46800000);
    const __m512i nan_code = _mm512_set1_epi32(0x7f), one = _mm512_set1_epi32(1);
    const __m128i sh = _mm_cvtsi32_si128(e5 ? 21 : 20);
    for (unsigned i = 0; i < n; i += 16) {
        __m512 xv = _mm512_loadu_ps(x + i);
        __m512i u = _mm512_castps_si512(mul ? _mm512_mul_ps(xv, sv) : _mm512_div_ps(xv, sv));
        __m512i sign = _mm512_slli_epi32(_mm512_srli_epi32(u, 31), 7);
        __m512i a = _mm512_and_si512(u, absm);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(a, inf);
        a = _mm512_min_epu32(a, maxb);
        __mmask16 normal = _mm512_cmpgt_epu32_mask(a, minnorm_m1);
        __m512i lsb = _mm512_and_si512(_mm512_srl_epi32(a, sh), one);
        __m512i rn = _mm512_srl_epi32(_mm512_add_epi32(_mm512_add_epi32(a, half_m1), lsb), sh);
        __m512 fs = _mm512_add_ps(_mm512_castsi512_ps(a), sub_add);
        __m512i rs = _mm512_sub_epi32(_mm512_castps_si512(fs), sub_bias);
        __m512i r = _mm512_or_si512(_mm512_mask_blend_epi32(normal, rs, rn), sign);
        r = _mm512_mask_blend_epi32(nan, r, nan_code);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(r));
    }
}

TGT512 static void avx512_i8_enc(int8_t *q, const float *x, unsigned n, float f, int mul)
{
    const __m512 sv = _mm512_set1_ps(f), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    for (unsigned i = 0; i < n; i += 16) {
        __m512 xv = _mm512_loadu_ps(x + i);
        __m512 d = mul ? _mm512_mul_ps(xv, sv) : _mm512_div_ps(xv, sv);
        __mmask16 ok = _mm512_cmp_ps_mask(d, d, _CMP_ORD_Q);
        d = _mm512_min_ps(_mm512_max_ps(d, lo), hi);
        __m512i r = _mm512_maskz_mov_epi32(ok, _mm512_cvtps_epi32(d));
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(r));
    }
}

const struct kvq_ops kvq_ops_avx512 = {
    .load = avx2_load,
    .amax = avx512_amax,
    .minmax = avx2_minmax,
    .a_params = avx2_a_params,
    .fp8_enc = avx512_fp8_enc,
    .fp8_dec = avx2_fp8_dec,
    .i8_enc = avx512_i8_enc,
    .i8_dec = avx2_i8_dec,
    .h_enc = avx2_h_enc,
    .a_enc = avx2_a_enc,
    .a_dec = avx2_a_dec,
};
#endif
