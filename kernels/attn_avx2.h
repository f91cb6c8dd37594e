/*
 * attn_avx2.h - what the AVX2+F16C+FMA tier's two files share: attn_avx2.c (per-segment dot and
 * axpy kernels for every format, the packed 4/2-bit formats, dispatch, the ops table) and
 * attn_avx2_win.c (the fused decode window of the simple formats). Target attributes, unroll
 * pragmas, the horizontal sum and exp, and the simple formats' row decoders. Internal to
 * kernels/; x86 only.
 */
#ifndef KV_ATTN_AVX2_H
#define KV_ATTN_AVX2_H

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "attn_impl.h"

/* Full unrolling of the window kernels (attn_avx2_win.c), one copy per format x head dim x query
 * heads, keeps their accumulators in registers. Under AddressSanitizer they stay in memory anyway,
 * and clang -O2 spent over 5 minutes and 2.5 GB per copy of that file instrumenting the 40 unrolled
 * instances (twice in the fuzz build), so there the loops stay rolled and the number of query
 * heads is a run-time value: the same code paths, 10 instances. */
#if defined(__SANITIZE_ADDRESS__)
#define KV_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KV_ASAN 1
#endif
#endif
#define KV_PRAGMA(x) _Pragma(#x)
#ifdef KV_ASAN
#define KV_UNROLL(n)
#else
#define KV_UNROLL(n) KV_PRAGMA(GCC unroll n)
#endif

#define TGT    __attribute__((target("avx2,f16c,fma")))
#define INLINE static inline __attribute__((always_inline)) TGT

/* Eight vectors to one vector of their eight horizontal sums. */
INLINE __m256 reduce8(const float *part)
{
    __m256 a01 = _mm256_hadd_ps(_mm256_loadu_ps(part + 0), _mm256_loadu_ps(part + 8));
    __m256 a23 = _mm256_hadd_ps(_mm256_loadu_ps(part + 16), _mm256_loadu_ps(part + 24));
    __m256 a45 = _mm256_hadd_ps(_mm256_loadu_ps(part + 32), _mm256_loadu_ps(part + 40));
    __m256 a67 = _mm256_hadd_ps(_mm256_loadu_ps(part + 48), _mm256_loadu_ps(part + 56));
    __m256 b0 = _mm256_hadd_ps(a01, a23), b1 = _mm256_hadd_ps(a45, a67);
    return _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20),
                         _mm256_permute2f128_ps(b0, b1, 0x31));
}

/* exp(x) for x <= 88.7, Cephes expf polynomial (max error ~2 ulp on [-87, 88]); 0 below -87.3. */
INLINE __m256 exp8(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), keep);
}

/* Bytes per element of a simple format. */
INLINE size_t esize(int fmt)
{
    switch (fmt) {
    case ATTN_TAIL_F32:
        return 4;
    case KV_FMT_F16:
    case KV_FMT_BF16:
    case ATTN_TAIL_F16:
        return 2;
    default:
        return 1;
    }
}

/* FP8 E4M3 decoded by integer ops alone, for the window kernels: (sext32(code) << 20) & 0x87F00000
 * is a binary32 whose value is code_value * 2^-120 (exponent bias 127 vs 7; subnormal codes become
 * binary32 subnormals, which cost nothing extra in an FMA here). It is made in 16-bit lanes (the
 * upper halves of those words: sext16(code) << 4 & 0x87F0) and unpacked below zeros in-lane: 5
 * integer ops per 16 channels instead of the binary16 route's conversions (and 6 for 32-bit lanes),
 * but the channels come out permuted in each 16: [0,4) [8,12) in the first register, [4,8)
 * [12,16) in the second (perm16); the query and the value accumulators are kept in that order.
 * The 2^120 goes into the query (2^64, the key scale takes 2^56) and the value weights (2^120),
 * when those stay finite (see win_e4m3). */
#define FMT_E4M3_F32 200

/* Channels [0,8) [8,16) <-> [0,4) [8,12) | [4,8) [12,16): the order of FMT_E4M3_F32's decode (its
 * own inverse). */
INLINE void perm16(__m256 *x0, __m256 *x1)
{
    __m256 a = _mm256_permute2f128_ps(*x0, *x1, 0x20), b = _mm256_permute2f128_ps(*x0, *x1, 0x31);
    *x0 = a;
    *x1 = b;
}

/* Channels [c, c+16) of a row, unscaled. */
INLINE void load16(int fmt, const uint8_t *row, unsigned c, __m256 *lo, __m256 *hi)
{
    switch (fmt) {
    case ATTN_TAIL_F32:
        *lo = _mm256_loadu_ps((const float *)row + c);
        *hi = _mm256_loadu_ps((const float *)row + c + 8);
        break;
    case KV_FMT_F16:
    case ATTN_TAIL_F16:
        *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * c)));
        *hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * c + 16)));
        break;
    case KV_FMT_BF16: {
        __m256i a = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * c)));
        __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * c + 16)));
        *lo = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
        *hi = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
        break;
    }
    case KV_FMT_FP8_E4M3: {
        __m256i s = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(row + c)));
        __m256i h = _mm256_and_si256(_mm256_slli_epi16(s, 7), _mm256_set1_epi16((short)0xBF80));
        *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
        *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
        break;
    }
    case FMT_E4M3_F32: { /* permuted: see FMT_E4M3_F32 */
        __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(row + c)));
        w = _mm256_and_si256(_mm256_slli_epi16(w, 4), _mm256_set1_epi16((short)0x87F0));
        *lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(_mm256_setzero_si256(), w));
        *hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(_mm256_setzero_si256(), w));
        break;
    }
    case KV_FMT_FP8_E5M2: {
        __m256i h =
            _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(row + c))), 8);
        *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
        *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
        break;
    }
    default: /* KV_FMT_INT8 */
        *lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + c))));
        *hi = _mm256_cvtepi32_ps(
            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + c + 8))));
        break;
    }
}

/* The fused decode window (attn_avx2_win.c): attn_ops.win and .win_ok of this tier. */
void attn_avx2_win(const struct attn_win *w, const float *q, unsigned g, float *m, float *lsum,
                   float *acc, float *lg, size_t ld, float *work);
int attn_avx2_win_ok(const struct kv_layout *l);

#endif
#endif
