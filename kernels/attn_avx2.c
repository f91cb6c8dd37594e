/*
 * attn_avx2.c - AVX2+F16C+FMA attention kernels that read segment bytes in place (no dequantized
 * copy of a page or chunk): each 16-channel slice of a key or value row is decoded into two
 * registers and used at once. Compiled with target attributes; attn_cpu.c selects this tier only
 * when the CPU reports avx2, f16c and fma, so one binary runs everywhere.
 *
 * Decoding tricks (exact, so the only difference from kv_quant's decoder is summation order):
 *  - FP8 E5M2 is the high byte of an IEEE binary16: h = code << 8, then vcvtph2ps.
 *  - FP8 E4M3: h = (sext16(code) << 7) & 0xBF80 puts sign, 4 exponent and 3 mantissa bits into a
 *    binary16 whose value is code_value * 2^-8 (normals and subnormals alike; exponent bias 15 vs
 *    7). The 2^8 is folded into the per-token scale, which is a power-of-two change: no rounding.
 *    NaN codes (0x7f, 0xff; the quantizer writes them only for NaN inputs) decode to +-480, not
 * NaN.
 *  - Per-token scales multiply the reduced dot product (keys) or the probability (values), once
 *    per token instead of once per element.
 *  - INT4/KIVI codes: broadcast one 32-bit word, shift lanes by 0,4,..,28 (2-bit: 0,2,..,14 +
 *    16 for the upper half), mask. Asymmetric groups: sum(q*(c*s+m)) = s*sum(q*c) + m*sum(q).
 *  - KIVI keys (scale/min per channel over G tokens): q' = q*s per channel and sum(q*m) are
 *    formed once per token group, so each key row costs one dot product with its raw codes.
 */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "attn_impl.h"

/* Full unrolling of the window kernels (below), one copy per format x head dim x query heads,
 * keeps their accumulators in registers. Under AddressSanitizer they stay in memory anyway, and
 * clang -O2 spent over 5 minutes and 2.5 GB per copy of this file instrumenting the 40 unrolled
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

/* Work-buffer layout of the dot kernels (ATTN_CHUNK * d floats, d >= 32, so >= 2048 floats). */
#define W_PART 0   /* [4 heads][8 tokens][8 lanes] partial sums */
#define W_LIN  256 /* [4 heads][8 tokens] additive terms (INT4 mins, KIVI constants) */
#define W_AUX  512 /* per-format: INT4 group sums of q [4][d/32]; KIVI q' [4][d]; axpy weights */

static float ld_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, sizeof(f));
    return f;
}

static uint16_t ld_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

INLINE float h2f(uint16_t h)
{
    return _cvtsh_ss(h);
}

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

/* ---- simple formats: one scale per token (or none) ---------------------------------------- */

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

/* Multiplier of token t's decoded row (1 for unscaled formats). */
INLINE float tok_scale(int fmt, const struct attn_seg *s, unsigned t)
{
    switch (fmt) {
    case KV_FMT_FP8_E4M3:
        return 256.0f * ld_f32(s->scales + 4 * (size_t)t);
    case KV_FMT_FP8_E5M2:
    case KV_FMT_INT8:
        return ld_f32(s->scales + 4 * (size_t)t);
    default:
        return 1.0f;
    }
}

/* Partial dot products of two rows with hn (1..4) query heads, into part[hh*64 + lane] (row 0)
 * and part[hh*64 + 8 + lane] (row 1): each query slice loaded once serves both rows. */
INLINE void dot_row2(int fmt, const uint8_t *r0, const uint8_t *r1, const float *q, unsigned d,
                     unsigned hn, float *part)
{
    __m256 a[4][2];
    for (unsigned hh = 0; hh < 4; hh++)
        a[hh][0] = a[hh][1] = _mm256_setzero_ps();
    for (unsigned c = 0; c < d; c += 16) {
        __m256 l0, h0, l1, h1;
        load16(fmt, r0, c, &l0, &h0);
        load16(fmt, r1, c, &l1, &h1);
        for (unsigned hh = 0; hh < hn; hh++) {
            __m256 ql = _mm256_loadu_ps(q + hh * d + c), qh = _mm256_loadu_ps(q + hh * d + c + 8);
            a[hh][0] = _mm256_fmadd_ps(ql, l0, a[hh][0]);
            a[hh][1] = _mm256_fmadd_ps(ql, l1, a[hh][1]);
            a[hh][0] = _mm256_fmadd_ps(qh, h0, a[hh][0]);
            a[hh][1] = _mm256_fmadd_ps(qh, h1, a[hh][1]);
        }
    }
    for (unsigned hh = 0; hh < hn; hh++) {
        _mm256_storeu_ps(part + hh * 64, a[hh][0]);
        _mm256_storeu_ps(part + hh * 64 + 8, a[hh][1]);
    }
}

/* Stores the reduced sums of 8 tokens (times per-token multipliers mul, plus lin) for hn heads. */
INLINE void dot_flush(const float *part, const float *lin, const float *mul, unsigned hn,
                      unsigned jn, float *logits, size_t ld)
{
    __m256 vm = _mm256_loadu_ps(mul);
    for (unsigned hh = 0; hh < hn; hh++) {
        __m256 r = _mm256_fmadd_ps(reduce8(part + hh * 64), vm, _mm256_loadu_ps(lin + hh * 8));
        if (jn == 8) {
            _mm256_storeu_ps(logits + hh * ld, r);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, r);
            memcpy(logits + hh * ld, tmp, jn * sizeof(float));
        }
    }
}

INLINE void dot_simple(int fmt, const struct attn_seg *s, unsigned t0, unsigned n, const float *q,
                       unsigned g, float *logits, size_t ld, float *work)
{
    unsigned d = s->d;
    size_t rs = s->stride * esize(fmt);
    float *part = work + W_PART, *lin = work + W_LIN;
    float mul[8];

    memset(lin, 0, 32 * sizeof(float));
    for (unsigned h0 = 0; h0 < g; h0 += 4) {
        unsigned hn = g - h0 < 4 ? g - h0 : 4;
        for (unsigned j0 = 0; j0 < n; j0 += 8) {
            unsigned jn = n - j0 < 8 ? n - j0 : 8;
            for (unsigned jj = 0; jj < 8; jj += 2) {
                unsigned ta = t0 + j0 + (jj < jn ? jj : 0); /* pad with a valid row */
                unsigned tb = t0 + j0 + (jj + 1 < jn ? jj + 1 : 0);
                const uint8_t *ra = s->data + ta * rs, *rb = s->data + tb * rs;
                const float *qh = q + (size_t)h0 * d;
                mul[jj] = tok_scale(fmt, s, ta);
                mul[jj + 1] = tok_scale(fmt, s, tb);
                switch (hn) {
                case 1:
                    dot_row2(fmt, ra, rb, qh, d, 1, part + jj * 8);
                    break;
                case 2:
                    dot_row2(fmt, ra, rb, qh, d, 2, part + jj * 8);
                    break;
                case 3:
                    dot_row2(fmt, ra, rb, qh, d, 3, part + jj * 8);
                    break;
                default:
                    dot_row2(fmt, ra, rb, qh, d, 4, part + jj * 8);
                    break;
                }
            }
            dot_flush(part, lin, mul, hn, jn, logits + h0 * ld + j0, ld);
        }
    }
}

/* acc[hh][c..c+16) += sum_j w[hh][j] * row_j[c..c+16) for hn heads. */
INLINE void axpy_cols(int fmt, const struct attn_seg *s, unsigned t0, unsigned n, size_t rs,
                      const float *w, unsigned hn, float *acc, unsigned c)
{
    unsigned d = s->d;
    __m256 l0 = _mm256_loadu_ps(acc + c), h0 = _mm256_loadu_ps(acc + c + 8);
    __m256 l1 = l0, h1 = h0, l2 = l0, h2 = h0, l3 = l0, h3 = h0;
    if (hn > 1) {
        l1 = _mm256_loadu_ps(acc + d + c);
        h1 = _mm256_loadu_ps(acc + d + c + 8);
    }
    if (hn > 2) {
        l2 = _mm256_loadu_ps(acc + 2 * d + c);
        h2 = _mm256_loadu_ps(acc + 2 * d + c + 8);
    }
    if (hn > 3) {
        l3 = _mm256_loadu_ps(acc + 3 * d + c);
        h3 = _mm256_loadu_ps(acc + 3 * d + c + 8);
    }
    for (unsigned j = 0; j < n; j++) {
        __m256 lo, hi, b;
        load16(fmt, s->data + (t0 + j) * rs, c, &lo, &hi);
        b = _mm256_broadcast_ss(w + j);
        l0 = _mm256_fmadd_ps(b, lo, l0);
        h0 = _mm256_fmadd_ps(b, hi, h0);
        if (hn > 1) {
            b = _mm256_broadcast_ss(w + ATTN_CHUNK + j);
            l1 = _mm256_fmadd_ps(b, lo, l1);
            h1 = _mm256_fmadd_ps(b, hi, h1);
        }
        if (hn > 2) {
            b = _mm256_broadcast_ss(w + 2 * ATTN_CHUNK + j);
            l2 = _mm256_fmadd_ps(b, lo, l2);
            h2 = _mm256_fmadd_ps(b, hi, h2);
        }
        if (hn > 3) {
            b = _mm256_broadcast_ss(w + 3 * ATTN_CHUNK + j);
            l3 = _mm256_fmadd_ps(b, lo, l3);
            h3 = _mm256_fmadd_ps(b, hi, h3);
        }
    }
    _mm256_storeu_ps(acc + c, l0);
    _mm256_storeu_ps(acc + c + 8, h0);
    if (hn > 1) {
        _mm256_storeu_ps(acc + d + c, l1);
        _mm256_storeu_ps(acc + d + c + 8, h1);
    }
    if (hn > 2) {
        _mm256_storeu_ps(acc + 2 * d + c, l2);
        _mm256_storeu_ps(acc + 2 * d + c + 8, h2);
    }
    if (hn > 3) {
        _mm256_storeu_ps(acc + 3 * d + c, l3);
        _mm256_storeu_ps(acc + 3 * d + c + 8, h3);
    }
}

INLINE void axpy_simple(int fmt, const struct attn_seg *s, unsigned t0, unsigned n, const float *p,
                        size_t ld, unsigned g, float *acc, float *work)
{
    unsigned d = s->d;
    size_t rs = s->stride * esize(fmt);
    float *w = work + W_AUX; /* [4][ATTN_CHUNK] probability * token scale */

    for (unsigned h0 = 0; h0 < g; h0 += 4) {
        unsigned hn = g - h0 < 4 ? g - h0 : 4;
        for (unsigned hh = 0; hh < hn; hh++)
            for (unsigned j = 0; j < n; j++)
                w[hh * ATTN_CHUNK + j] = p[(h0 + hh) * ld + j] * tok_scale(fmt, s, t0 + j);
        float *ah = acc + (size_t)h0 * d;
        for (unsigned c = 0; c < d; c += 16) {
            switch (hn) {
            case 1:
                axpy_cols(fmt, s, t0, n, rs, w, 1, ah, c);
                break;
            case 2:
                axpy_cols(fmt, s, t0, n, rs, w, 2, ah, c);
                break;
            case 3:
                axpy_cols(fmt, s, t0, n, rs, w, 3, ah, c);
                break;
            default:
                axpy_cols(fmt, s, t0, n, rs, w, 4, ah, c);
                break;
            }
        }
    }
}

#define SIMPLE_KERNELS(name, fmt)                                                                  \
    static TGT void dot_##name(const struct attn_seg *s, unsigned t0, unsigned n, const float *q,  \
                               unsigned g, float *logits, size_t ld, float *work)                  \
    {                                                                                              \
        dot_simple(fmt, s, t0, n, q, g, logits, ld, work);                                         \
    }                                                                                              \
    static TGT void axpy_##name(const struct attn_seg *s, unsigned t0, unsigned n, const float *p, \
                                size_t ld, unsigned g, float *acc, float *work)                    \
    {                                                                                              \
        axpy_simple(fmt, s, t0, n, p, ld, g, acc, work);                                           \
    }
SIMPLE_KERNELS(f16, KV_FMT_F16)
SIMPLE_KERNELS(bf16, KV_FMT_BF16)
SIMPLE_KERNELS(e4m3, KV_FMT_FP8_E4M3)
SIMPLE_KERNELS(e5m2, KV_FMT_FP8_E5M2)
SIMPLE_KERNELS(int8, KV_FMT_INT8)
SIMPLE_KERNELS(tf32, ATTN_TAIL_F32)
SIMPLE_KERNELS(tf16, ATTN_TAIL_F16)

/* ---- fused decode window (simple formats, head_dim 64 or 128) ----------------------------- */

/*
 * One window of one KV head in three steps, all on L1-resident buffers of the window: logits of
 * hn <= 4 query heads (each key row decoded once for all of them, 8 rows' partial sums parked in
 * L1 and reduced by one hadd tree), the online-softmax update with the per-token value scales
 * folded into the weights, and the weighted sum of the value rows (each row decoded once per
 * slice, the accumulators of a slice of channels in registers). head_dim is a compile-time
 * constant here (64 or 128), so the channel loops unroll and the accumulators stay in registers;
 * other head dims take dot + axpy.
 */
#define WS (ATTN_CHUNK + 8) /* row stride of the window buffers: 8-wide stores pass n by < 8 */

/* Prefetch cursor over a window's attn_pf ranges (the next window's bytes), stepped once per 8
 * rows: per 8-token group of the logits pass and per 8 value rows of the first channel slice, so
 * the inner loops carry no prefetch bookkeeping (stepping per row cost ~15% of the instructions at
 * 3:1). Each line costs a prefetch, an add, a compare and the loop branch; once the ranges are
 * used up k is 0 and a step is free. The hint is T1: kvbench-attn at 32k, three alternating runs
 * of each: FP8 1:1 at 0.39-0.52 of the streaming read with T1, 0.36-0.44 with T0; F16 the same
 * within noise. Prefetching two windows ahead instead of one lost ~10% (xread 0.82-0.88 vs
 * 0.92-0.97 at FP8 1:1). */
struct pf_cur {
    const struct attn_pf *pf;
    unsigned r;           /* current range */
    unsigned rate, due;   /* groups per step and groups owed, both in 1/256 groups */
    const uint8_t *p, *e; /* next line, end of the current range; p NULL: done */
};

/* Spreads pf's line groups evenly over `steps` steps: each step owes rate groups and issues the
 * whole ones owed (an even pace matters: groups rounded up per step finished the prefetches early
 * in the window, and a run's steps issued at once at its start, and both lost 15-30% at 1:1). */
INLINE void pf_init(struct pf_cur *c, const struct attn_pf *pf, unsigned steps)
{
    c->pf = pf;
    c->r = 0;
    c->due = 0;
    c->rate = pf && pf->n ? (unsigned)(((uint64_t)pf->groups << 8) / steps) + 1 : 0;
    c->p = c->rate ? pf->lo[0] : NULL;
    c->e = c->rate ? pf->hi[0] : NULL;
}

/* Issues the next n groups: 4 line prefetches each, or the 1-3 lines left at a range's end. */
INLINE void pf_groups(struct pf_cur *c, unsigned n)
{
    const uint8_t *p = c->p, *e = c->e;
    for (; n; n--) {
        if (p >= e) {
            if (++c->r >= c->pf->n) {
                p = NULL;
                break;
            }
            p = c->pf->lo[c->r];
            e = c->pf->hi[c->r];
        }
        if (e - p > 192) {
            _mm_prefetch((const char *)p, _MM_HINT_T1);
            _mm_prefetch((const char *)p + 64, _MM_HINT_T1);
            _mm_prefetch((const char *)p + 128, _MM_HINT_T1);
            _mm_prefetch((const char *)p + 192, _MM_HINT_T1);
            p += 256;
        } else {
            for (; p < e; p += 64)
                _mm_prefetch((const char *)p, _MM_HINT_T1);
        }
    }
    c->p = p;
    c->e = e;
}

/* One step of the window's work done: issues the groups owed so far. */
INLINE void pf_step(struct pf_cur *c)
{
    if (!c->p)
        return;
    c->due += c->rate;
    unsigned n = c->due >> 8;
    c->due -= n << 8;
    pf_groups(c, n);
}

/* Issues whatever is left. */
INLINE void pf_rest(struct pf_cur *c)
{
    if (c->p)
        pf_groups(c, c->pf->groups);
}

/* One key row against hn heads: part[hh * 64] gets head hh's 8 partial sums (see win_dot8). */
INLINE void win_row(int fmt, unsigned D, unsigned hn, const uint8_t *r, const float *q, float *part)
{
    const unsigned na = hn <= 2 ? 2 : 1;
    __m256 a[4][2];
    KV_UNROLL(4)
    for (unsigned hh = 0; hh < hn; hh++)
        a[hh][0] = a[hh][1] = _mm256_setzero_ps();
    KV_UNROLL(8)
    for (unsigned c = 0; c < D; c += 16) {
        __m256 lo, hi;
        load16(fmt, r, c, &lo, &hi);
        KV_UNROLL(4)
        for (unsigned hh = 0; hh < hn; hh++) {
            a[hh][0] = _mm256_fmadd_ps(_mm256_loadu_ps(q + hh * D + c), lo, a[hh][0]);
            a[hh][na - 1] = _mm256_fmadd_ps(_mm256_loadu_ps(q + hh * D + c + 8), hi, a[hh][na - 1]);
        }
    }
    KV_UNROLL(4)
    for (unsigned hh = 0; hh < hn; hh++)
        _mm256_storeu_ps(part + hh * 64, na == 2 ? _mm256_add_ps(a[hh][0], a[hh][1]) : a[hh][0]);
}

/* Logits of tokens [0, jn) of 8 rows starting at k0 (row stride rs; missing rows read row 0) for
 * hn heads of q [hn][D]: out[hh] lane j = q_hh . decode(K_j), unscaled. Each row is decoded 16
 * channels at a time into two registers that serve every head; each head keeps one accumulator
 * (two with one or two heads: shorter FMA chains) and parks it in part[hh][j] after the row, so at
 * most 2 * 4 + 2 vectors are live and nothing spills (keeping the 8 rows' partial sums in
 * registers for an in-register hadd tree needed 12 more with 3 heads, and the compiler spilled
 * them); one reduce8 per head turns the 8 parked vectors into 8 logits. */
INLINE void win_dot8(int fmt, unsigned D, unsigned hn, const uint8_t *k0, size_t rs, unsigned jn,
                     const float *q, float *part, __m256 *out)
{
    if (jn == 8) { /* whole groups, unrolled: row addresses are constant offsets */
        KV_UNROLL(8)
        for (unsigned j = 0; j < 8; j++)
            win_row(fmt, D, hn, k0 + j * rs, q, part + 8 * j);
    } else {
        for (unsigned j = 0; j < 8; j++)
            win_row(fmt, D, hn, k0 + (j < jn ? j : 0) * rs, q, part + 8 * j);
    }
    KV_UNROLL(4)
    for (unsigned hh = 0; hh < hn; hh++)
        out[hh] = reduce8(part + hh * 64);
}

/* Per-token multipliers of 8 tokens from f32 scales at sc (jn valid), times mul. */
INLINE __m256 win_scale8(int fmt, const uint8_t *sc, unsigned jn, float mul)
{
    if (fmt == KV_FMT_F16 || fmt == KV_FMT_BF16)
        return _mm256_set1_ps(1.0f);
    if (jn == 8)
        return _mm256_mul_ps(_mm256_loadu_ps((const float *)sc), _mm256_set1_ps(mul));
    float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(t, sc, jn * sizeof(float));
    return _mm256_mul_ps(_mm256_loadu_ps(t), _mm256_set1_ps(mul));
}

/* s[hh * WS + j] = logit of head hh, token j of the window; lanes [n, n + 8) are clobbered. */
INLINE void win_logits(int fmt, unsigned D, unsigned hn, const struct attn_win *w, size_t kofs,
                       const float *q, float *s, float *part, struct pf_cur *pf)
{
    size_t rs = (size_t)D * esize(fmt);
    float mul = fmt == KV_FMT_FP8_E4M3 ? 256.0f : 1.0f; /* see tok_scale */
    /* FMT_E4M3_F32: q carries 2^64, the codes 2^-120; the 2^56 goes onto the dot product before
     * the key scale (q . code is finite whenever 2^64 q is), not onto the scale, which a key
     * scale of 2^72 would overflow */
    const __m256 undo = _mm256_set1_ps(fmt == FMT_E4M3_F32 ? 0x1p56f : 1.0f);
    unsigned off = 0;
    for (unsigned i = 0; i < w->nrun; i++) {
        const struct attn_run *r = &w->run[i];
        for (unsigned j0 = 0; j0 < r->n; j0 += 8) {
            unsigned jn = r->n - j0 < 8 ? r->n - j0 : 8;
            __m256 x[4];
            pf_step(pf);
            win_dot8(fmt, D, hn, r->k + kofs + j0 * rs, rs, jn, q, part, x);
            __m256 sc = win_scale8(fmt, r->ks + kofs + 4 * (size_t)j0, jn, mul);
            KV_UNROLL(4)
            for (unsigned hh = 0; hh < hn; hh++)
                _mm256_storeu_ps(
                    s + hh * WS + off + j0,
                    _mm256_mul_ps(fmt == FMT_E4M3_F32 ? _mm256_mul_ps(x[hh], undo) : x[hh], sc));
        }
        off += r->n;
    }
}

/* a[hh][] += wt[hh * WS] * decode(row)[c0, c0 + cw) for hn heads. */
INLINE void val_row(int fmt, unsigned hn, unsigned cw, unsigned c0, const uint8_t *row,
                    const float *wt, __m256 a[4][8])
{
    KV_UNROLL(4)
    for (unsigned cc = 0; cc < cw; cc += 16) {
        __m256 lo, hi;
        load16(fmt, row, c0 + cc, &lo, &hi);
        KV_UNROLL(4)
        for (unsigned hh = 0; hh < hn; hh++) {
            __m256 b = _mm256_broadcast_ss(wt + hh * WS);
            a[hh][cc / 8] = _mm256_fmadd_ps(b, lo, a[hh][cc / 8]);
            a[hh][cc / 8 + 1] = _mm256_fmadd_ps(b, hi, a[hh][cc / 8 + 1]);
        }
    }
}

/* acc[hh][c] += sum_j wt[hh * WS + j] * decode(V_j)[c] for hn heads: channels in slices whose
 * accumulators fit in registers (hn * slice / 8 <= 8), every value row decoded once per slice. */
INLINE void win_values(int fmt, unsigned D, unsigned hn, const struct attn_win *w, size_t vofs,
                       const float *wt, float *acc, struct pf_cur *pf)
{
    const unsigned cw = hn == 1 ? 64 : hn == 2 ? 32 : 16; /* 3 heads x 32 would spill */
    size_t rs = (size_t)D * esize(fmt);
    for (unsigned c0 = 0; c0 < D; c0 += cw) {
        __m256 a[4][8];
        KV_UNROLL(4)
        for (unsigned hh = 0; hh < hn; hh++) {
            KV_UNROLL(8)
            for (unsigned v = 0; v < cw / 8; v++)
                a[hh][v] = _mm256_loadu_ps(acc + hh * D + c0 + 8 * v);
            if (fmt == FMT_E4M3_F32) {
                KV_UNROLL(4)
                for (unsigned v = 0; v < cw / 8; v += 2)
                    perm16(&a[hh][v], &a[hh][v + 1]);
            }
        }
        const float *wj = wt;
        for (unsigned i = 0; i < w->nrun; i++) {
            const struct attn_run *r = &w->run[i];
            const uint8_t *row = r->v + vofs;
            const uint8_t *end = row + r->n * rs; /* the loops run on row alone */
            if (c0 == 0) { /* the second half of the window's prefetch steps, per 8 rows */
                for (; (size_t)(end - row) >= 8 * rs; row += 8 * rs, wj += 8) {
                    pf_step(pf);
                    KV_UNROLL(8) /* row addresses are constant offsets */
                    for (unsigned t = 0; t < 8; t++)
                        val_row(fmt, hn, cw, c0, row + t * rs, wj + t, a);
                }
                if (row < end)
                    pf_step(pf);
            }
            KV_UNROLL(2)
            for (; row < end; row += rs, wj++)
                val_row(fmt, hn, cw, c0, row, wj, a);
        }
        KV_UNROLL(4)
        for (unsigned hh = 0; hh < hn; hh++) {
            if (fmt == FMT_E4M3_F32) {
                KV_UNROLL(4)
                for (unsigned v = 0; v < cw / 8; v += 2)
                    perm16(&a[hh][v], &a[hh][v + 1]);
            }
            KV_UNROLL(8)
            for (unsigned v = 0; v < cw / 8; v++)
                _mm256_storeu_ps(acc + hh * D + c0 + 8 * v, a[hh][v]);
        }
    }
}

/* Online-softmax update of one head with the window's logits s[0, n) (s[n, n + 8) writable):
 * wt[j] = exp(s_j - m') * vsc[j] (vsc NULL: 1), as softmax_step in attn_cpu.c. */
INLINE void win_softmax(float *s, unsigned n, const float *vsc, float *m, float *lsum, float *acc,
                        unsigned D, float *wt)
{
    unsigned n8 = (n + 7) & ~7u;
    for (unsigned j = n; j < n8; j++)
        s[j] = -INFINITY;
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (unsigned j = 0; j < n8; j += 8)
        mx = _mm256_max_ps(_mm256_loadu_ps(s + j), mx); /* NaN logits are skipped, as row_max */
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mnew = fmaxf(*m, _mm_cvtss_f32(m4));
    if (mnew == -INFINITY) { /* every logit masked: contributes nothing */
        memset(wt, 0, n8 * sizeof(float));
        return;
    }
    __m256 vm = _mm256_set1_ps(mnew), sum = _mm256_setzero_ps();
    for (unsigned j = 0; j < n8; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        sum = _mm256_add_ps(sum, e);
        _mm256_storeu_ps(wt + j, vsc ? _mm256_mul_ps(e, _mm256_loadu_ps(vsc + j)) : e);
    }
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    if (mnew != *m) {
        float alpha = *m == -INFINITY ? 0.0f : expf(*m - mnew);
        __m256 va = _mm256_set1_ps(alpha);
        for (unsigned c = 0; c < D; c += 8)
            _mm256_storeu_ps(acc + c, _mm256_mul_ps(_mm256_loadu_ps(acc + c), va));
        *lsum *= alpha;
        *m = mnew;
    }
    *lsum += _mm_cvtss_f32(s4);
}

/* One block of hn heads of a window (kfmt/vfmt/D constant after inlining). */
INLINE void win_block(int kfmt, int vfmt, unsigned D, unsigned hn, const struct attn_win *w,
                      size_t kofs, size_t vofs, const float *q, float *m, float *lsum, float *acc,
                      float *lg, size_t ld, const float *vsc, float *work, struct pf_cur *pf)
{
    float *s = work, *wt = work + 4 * WS;
    win_logits(kfmt, D, hn, w, kofs, q, s, work + 9 * WS, pf);
    for (unsigned hh = 0; hh < hn; hh++) {
        if (lg)
            memcpy(lg + hh * ld, s + hh * WS, w->n * sizeof(float));
        win_softmax(s + hh * WS, w->n, vsc, &m[hh], &lsum[hh], acc + hh * D, D, wt + hh * WS);
    }
    win_values(vfmt, D, hn, w, vofs, wt, acc, pf);
}

#ifdef KV_ASAN /* one copy per (format, D), hn at run time: see KV_UNROLL */
#define WIN_BLOCKS(kf, vf, D)                                                                      \
    for (unsigned h0 = 0; h0 < g; h0 += 4) {                                                       \
        unsigned hn = g - h0 < 4 ? g - h0 : 4;                                                     \
        win_block(kf, vf, D, hn, w, kofs, vofs, q + (size_t)h0 * D, m + h0, lsum + h0,             \
                  acc + (size_t)h0 * D, lg ? lg + h0 * ld : NULL, ld, vsc, work, pf);              \
    }
#else
#define WIN_BLOCKS(kf, vf, D)                                                                      \
    for (unsigned h0 = 0; h0 < g; h0 += 4) {                                                       \
        unsigned hn = g - h0 < 4 ? g - h0 : 4;                                                     \
        const float *qh = q + (size_t)h0 * D;                                                      \
        float *ah = acc + (size_t)h0 * D, *lh = lg ? lg + h0 * ld : NULL;                          \
        if (hn == 1)                                                                               \
            win_block(kf, vf, D, 1, w, kofs, vofs, qh, m + h0, lsum + h0, ah, lh, ld, vsc, work,   \
                      pf);                                                                         \
        else if (hn == 2)                                                                          \
            win_block(kf, vf, D, 2, w, kofs, vofs, qh, m + h0, lsum + h0, ah, lh, ld, vsc, work,   \
                      pf);                                                                         \
        else if (hn == 3)                                                                          \
            win_block(kf, vf, D, 3, w, kofs, vofs, qh, m + h0, lsum + h0, ah, lh, ld, vsc, work,   \
                      pf);                                                                         \
        else                                                                                       \
            win_block(kf, vf, D, 4, w, kofs, vofs, qh, m + h0, lsum + h0, ah, lh, ld, vsc, work,   \
                      pf);                                                                         \
    }
#endif

/* vsc[0, n) = mul * the window's value scales, vsc[n, n8) = 0; returns the largest magnitude of
 * vsc. A NaN scale may hide others from the maximum (maxps returns its second operand when one is
 * NaN); it makes the outputs NaN on every route anyway. */
INLINE float win_vscales(const struct attn_win *w, size_t vofs, float mul, float *vsc)
{
    __m256 vm = _mm256_set1_ps(mul), mx = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f);
    unsigned off = 0;
    for (unsigned i = 0; i < w->nrun; i++) {
        const float *src = (const float *)(w->run[i].vs + vofs); /* 4-aligned in the page */
        unsigned j = 0, n = w->run[i].n;
        for (; j + 8 <= n; j += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(src + j), vm);
            mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v));
            _mm256_storeu_ps(vsc + off + j, v);
        }
        for (; j < n; j++) {
            vsc[off + j] = mul * src[j];
            mx = _mm256_max_ps(mx, _mm256_set1_ps(fabsf(vsc[off + j])));
        }
        off += n;
    }
    for (; off % 8; off++)
        vsc[off] = 0.0f;
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
}

/* Prefetch steps of a window: per KV head and block of up to 4 of its query heads, one per 8-token
 * group of the logits and as many in the values' first channel slice. */
INLINE unsigned win_steps(const struct attn_win *w, unsigned g)
{
    unsigned groups = 0;
    for (unsigned i = 0; i < w->nrun; i++)
        groups += (w->run[i].n + 7) / 8;
    return 2 * groups * w->nkv * ((g + 3) / 4);
}

/* Instantiated per (key format = value format, D): mixed-format layouts take dot + axpy.
 * win1_<name>: KV head k of the window (q, m, lsum, acc, lg at its first query head);
 * win_<name>: every KV head, with one prefetch cursor over the next window's bytes. */
#define WIN_HEAD(name, fmt)                                                                        \
    INLINE void win1_##name(const struct attn_win *w, unsigned k, const float *q, unsigned g,      \
                            float *m, float *lsum, float *acc, float *lg, size_t ld, float *work,  \
                            struct pf_cur *pf)                                                     \
    {                                                                                              \
        size_t kofs = k * w->kstep, vofs = k * w->vstep;                                           \
        float *vsc = NULL;                                                                         \
        if (fmt != KV_FMT_F16 && fmt != KV_FMT_BF16) /* value scales of the window */              \
            vsc = work + 8 * WS;                                                                   \
        if (vsc && fmt != FMT_E4M3_F32) /* win_e4m3 has made those (times 2^120) already */        \
            win_vscales(w, vofs, fmt == KV_FMT_FP8_E4M3 ? 256.0f : 1.0f, vsc);                     \
        if (w->d == 64) {                                                                          \
            WIN_BLOCKS(fmt, fmt, 64)                                                               \
        } else {                                                                                   \
            WIN_BLOCKS(fmt, fmt, 128)                                                              \
        }                                                                                          \
    }
#define WIN_KERNEL(name, fmt)                                                                      \
    WIN_HEAD(name, fmt)                                                                            \
    static TGT void win_##name(const struct attn_win *w, const float *q, unsigned g, float *m,     \
                               float *lsum, float *acc, float *lg, size_t ld, float *work)         \
    {                                                                                              \
        struct pf_cur pf;                                                                          \
        pf_init(&pf, w->pf, win_steps(w, g));                                                      \
        for (unsigned k = 0; k < w->nkv; k++) {                                                    \
            size_t h = (size_t)k * g;                                                              \
            win1_##name(w, k, q + h * w->d, g, m + h, lsum + h, acc + h * w->d,                    \
                        lg ? lg + h * ld : NULL, ld, work, &pf);                                   \
        }                                                                                          \
        pf_rest(&pf); /* whatever rounding left */                                                 \
    }
WIN_KERNEL(f16, KV_FMT_F16)
WIN_KERNEL(bf16, KV_FMT_BF16)
WIN_HEAD(e4m3h, KV_FMT_FP8_E4M3)
WIN_HEAD(e4m3f, FMT_E4M3_F32)
WIN_KERNEL(e5m2, KV_FMT_FP8_E5M2)
WIN_KERNEL(int8, KV_FMT_INT8)

#define WIN_QBUF 2048 /* work offset of the scaled query (past the window buffers, < 64 * 64) */

/* E4M3 windows take the integer decode (FMT_E4M3_F32) when the query times 2^64 and every value
 * scale times 2^120 are finite (|q| < 2^63, value scale < 2^7: true unless the source data held
 * magnitudes near 2^16) and the thread does not treat subnormal inputs as zero (MXCSR.DAZ, set
 * by -ffast-math builds and torch.set_flush_denormal: subnormal codes decode to binary32
 * subnormals here), else the binary16 route. */
static TGT void win_e4m3(const struct attn_win *w, const float *q, unsigned g, float *m,
                         float *lsum, float *acc, float *lg, size_t ld, float *work)
{
    size_t nq = (size_t)g * w->d;
    float *qs = work + WIN_QBUF;
    struct pf_cur pf;
    pf_init(&pf, w->pf, win_steps(w, g));
    for (unsigned k = 0; k < w->nkv; k++) {
        size_t h = (size_t)k * g;
        const float *qk = q + h * w->d;
        int ok = nq <= WIN_QBUF;
        if (ok) {
            __m256 two64 = _mm256_set1_ps(0x1p64f), lim = _mm256_set1_ps(0x1p127f);
            __m256 big = _mm256_setzero_ps();     /* lanes not below 2^127 (or NaN) */
            for (size_t i = 0; i < nq; i += 16) { /* in FMT_E4M3_F32's channel order */
                __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(qk + i), two64);
                __m256 v1 = _mm256_mul_ps(_mm256_loadu_ps(qk + i + 8), two64);
                __m256 a0 = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v0);
                __m256 a1 = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v1);
                big = _mm256_or_ps(big, _mm256_cmp_ps(a0, lim, _CMP_NLT_UQ));
                big = _mm256_or_ps(big, _mm256_cmp_ps(a1, lim, _CMP_NLT_UQ));
                perm16(&v0, &v1);
                _mm256_storeu_ps(qs + i, v0);
                _mm256_storeu_ps(qs + i + 8, v1);
            }
            /* the value weights' scales, made once here for win1_e4m3f: every scale < 2^7
             * exactly when every scale * 2^120 < 2^127 (a power-of-two product is exact) */
            ok = _mm256_movemask_ps(big) == 0 &&
                 win_vscales(w, k * w->vstep, 0x1p120f, work + 8 * WS) < 0x1p127f &&
                 !(_mm_getcsr() & 0x0040); /* DAZ would read subnormal codes as 0 */
        }
        float *lk = lg ? lg + h * ld : NULL;
        if (ok)
            win1_e4m3f(w, k, qs, g, m + h, lsum + h, acc + h * w->d, lk, ld, work, &pf);
        else
            win1_e4m3h(w, k, qk, g, m + h, lsum + h, acc + h * w->d, lk, ld, work, &pf);
    }
    pf_rest(&pf);
}

static void avx2_win(const struct attn_win *w, const float *q, unsigned g, float *m, float *lsum,
                     float *acc, float *lg, size_t ld, float *work)
{
    switch (w->kfmt) {
    case KV_FMT_F16:
        win_f16(w, q, g, m, lsum, acc, lg, ld, work);
        break;
    case KV_FMT_BF16:
        win_bf16(w, q, g, m, lsum, acc, lg, ld, work);
        break;
    case KV_FMT_FP8_E4M3:
        win_e4m3(w, q, g, m, lsum, acc, lg, ld, work);
        break;
    case KV_FMT_FP8_E5M2:
        win_e5m2(w, q, g, m, lsum, acc, lg, ld, work);
        break;
    default:
        win_int8(w, q, g, m, lsum, acc, lg, ld, work);
        break;
    }
}

static int avx2_win_ok(const struct kv_layout *l)
{
    if (l->head_dim != 64 && l->head_dim != 128)
        return 0;
    if (l->k_fmt != l->v_fmt)
        return 0;
    switch (l->k_fmt) {
    case KV_FMT_F16:
    case KV_FMT_BF16:
    case KV_FMT_FP8_E4M3:
    case KV_FMT_FP8_E5M2:
    case KV_FMT_INT8:
        return 1;
    default:
        return 0;
    }
}

/* ---- packed 4/2-bit formats --------------------------------------------------------------- */

/* Codes of channels [c, c+8) (c % 8 == 0) of a packed row, as floats. */
INLINE __m256 codes8(const uint8_t *row, unsigned c, unsigned bits)
{
    uint32_t w;
    __m256i sh;
    if (bits == 4) {
        memcpy(&w, row + (c / 8) * 4, 4);
        sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    } else {
        memcpy(&w, row + (c / 16) * 4, 4);
        sh = (c % 16) ? _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30)
                      : _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    }
    __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32((int)w), sh);
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32((1 << bits) - 1)));
}

/* One packed key row with per-token groups against hn (1..4) heads: the codes are decoded once
 * and serve every head; part[hh*64 + lane] and lin[hh*8] get the partial sums and min terms. */
INLINE void tokgroup_row(const uint8_t *row, const uint8_t *sm, const float *q, const float *qsum,
                         unsigned d, unsigned gs, unsigned bits, unsigned hn, float *part,
                         float *lin)
{
    unsigned ng = d / gs;
    __m256 acc[4], ga[4];
    float l[4] = {0, 0, 0, 0};
    for (unsigned hh = 0; hh < 4; hh++)
        acc[hh] = _mm256_setzero_ps();
    for (unsigned gi = 0; gi < ng; gi++) {
        for (unsigned hh = 0; hh < 4; hh++)
            ga[hh] = _mm256_setzero_ps();
        for (unsigned c = gi * gs; c < (gi + 1) * gs; c += 8) {
            __m256 v = codes8(row, c, bits);
            for (unsigned hh = 0; hh < hn; hh++)
                ga[hh] = _mm256_fmadd_ps(_mm256_loadu_ps(q + hh * d + c), v, ga[hh]);
        }
        __m256 sc = _mm256_set1_ps(h2f(ld_u16(sm + 4 * gi)));
        float mn = h2f(ld_u16(sm + 4 * gi + 2));
        for (unsigned hh = 0; hh < hn; hh++) {
            acc[hh] = _mm256_fmadd_ps(sc, ga[hh], acc[hh]);
            l[hh] = fmaf(mn, qsum[hh * ng + gi], l[hh]);
        }
    }
    for (unsigned hh = 0; hh < hn; hh++) {
        _mm256_storeu_ps(part + hh * 64, acc[hh]);
        lin[hh * 8] = l[hh];
    }
}

/* Keys with per-token groups of `gs` channels (INT4: 4 bits, gs = 32): sm16 records [T][D/gs]. */
INLINE void dot_tokgroup(const struct attn_seg *s, unsigned bits, unsigned gs, unsigned t0,
                         unsigned n, const float *q, unsigned g, float *logits, size_t ld,
                         float *work)
{
    unsigned d = s->d, ng = d / gs;
    size_t rs = (size_t)d * bits / 8;
    float *part = work + W_PART, *lin = work + W_LIN, *qsum = work + W_AUX;
    float one[8] = {1, 1, 1, 1, 1, 1, 1, 1};

    for (unsigned h0 = 0; h0 < g; h0 += 4) {
        unsigned hn = g - h0 < 4 ? g - h0 : 4;
        const float *qh = q + (size_t)h0 * d;
        for (unsigned hh = 0; hh < hn; hh++)
            for (unsigned gi = 0; gi < ng; gi++) {
                float sum = 0.0f;
                for (unsigned c = gi * gs; c < (gi + 1) * gs; c++)
                    sum += qh[(size_t)hh * d + c];
                qsum[hh * ng + gi] = sum;
            }
        for (unsigned j0 = 0; j0 < n; j0 += 8) {
            unsigned jn = n - j0 < 8 ? n - j0 : 8;
            for (unsigned jj = 0; jj < 8; jj++) {
                unsigned t = t0 + j0 + (jj < jn ? jj : 0);
                const uint8_t *row = s->data + t * rs, *sm = s->scales + (size_t)t * ng * 4;
                float *pp = part + jj * 8, *ll = lin + jj;
                switch (hn) {
                case 1:
                    tokgroup_row(row, sm, qh, qsum, d, gs, bits, 1, pp, ll);
                    break;
                case 2:
                    tokgroup_row(row, sm, qh, qsum, d, gs, bits, 2, pp, ll);
                    break;
                case 3:
                    tokgroup_row(row, sm, qh, qsum, d, gs, bits, 3, pp, ll);
                    break;
                default:
                    tokgroup_row(row, sm, qh, qsum, d, gs, bits, 4, pp, ll);
                    break;
                }
            }
            dot_flush(part, lin, one, hn, jn, logits + h0 * ld + j0, ld);
        }
    }
}

/* One packed KIVI key row against hn heads' scale-folded queries qp [4][d]. */
INLINE void kivi_row(const uint8_t *row, const float *qp, unsigned d, unsigned bits, unsigned hn,
                     float *part)
{
    __m256 a[4];
    for (unsigned hh = 0; hh < 4; hh++)
        a[hh] = _mm256_setzero_ps();
    for (unsigned c = 0; c < d; c += 8) {
        __m256 v = codes8(row, c, bits);
        for (unsigned hh = 0; hh < hn; hh++)
            a[hh] = _mm256_fmadd_ps(_mm256_loadu_ps(qp + hh * d + c), v, a[hh]);
    }
    for (unsigned hh = 0; hh < hn; hh++)
        _mm256_storeu_ps(part + hh * 64, a[hh]);
}

/* KIVI keys: sm16 records [T/G][D], scale and min per channel over each group of G tokens. */
INLINE void dot_kivi(const struct attn_seg *s, unsigned bits, unsigned t0, unsigned n,
                     const float *q, unsigned g, float *logits, size_t ld, float *work)
{
    unsigned d = s->d, gt = s->group;
    size_t rs = (size_t)d * bits / 8;
    float *part = work + W_PART, *lin = work + W_LIN, *qp = work + W_AUX; /* q' [4][d] */
    float one[8] = {1, 1, 1, 1, 1, 1, 1, 1}, cst[4] = {0, 0, 0, 0};

    for (unsigned h0 = 0; h0 < g; h0 += 4) {
        unsigned hn = g - h0 < 4 ? g - h0 : 4, cur = ~0u;
        for (unsigned j0 = 0; j0 < n; j0 += 8) {
            unsigned jn = n - j0 < 8 ? n - j0 : 8;
            for (unsigned jj = 0; jj < 8; jj++) {
                unsigned t = t0 + j0 + (jj < jn ? jj : 0);
                if (t / gt != cur) { /* new token group: fold its scales into q */
                    cur = t / gt;
                    const uint8_t *sm = s->scales + (size_t)cur * d * 4;
                    for (unsigned hh = 0; hh < hn; hh++) {
                        const float *qh = q + (size_t)(h0 + hh) * d;
                        float c0 = 0.0f;
                        for (unsigned c = 0; c < d; c++) {
                            qp[hh * d + c] = qh[c] * h2f(ld_u16(sm + 4 * c));
                            c0 = fmaf(qh[c], h2f(ld_u16(sm + 4 * c + 2)), c0);
                        }
                        cst[hh] = c0;
                    }
                }
                const uint8_t *row = s->data + t * rs;
                switch (hn) {
                case 1:
                    kivi_row(row, qp, d, bits, 1, part + jj * 8);
                    break;
                case 2:
                    kivi_row(row, qp, d, bits, 2, part + jj * 8);
                    break;
                case 3:
                    kivi_row(row, qp, d, bits, 3, part + jj * 8);
                    break;
                default:
                    kivi_row(row, qp, d, bits, 4, part + jj * 8);
                    break;
                }
                for (unsigned hh = 0; hh < hn; hh++)
                    lin[hh * 8 + jj] = cst[hh];
            }
            dot_flush(part, lin, one, hn, jn, logits + h0 * ld + j0, ld);
        }
    }
}

/* Values with per-token groups of gs channels (INT4: gs 32; KIVI V: gs = G), sm16 [T][D/gs]. */
INLINE void axpy_tokgroup(const struct attn_seg *s, unsigned bits, unsigned gs, unsigned t0,
                          unsigned n, const float *p, size_t ld, unsigned g, float *acc,
                          float *work)
{
    unsigned d = s->d, ng = d / gs;
    size_t rs = (size_t)d * bits / 8;
    float *coef = work + W_AUX;        /* [4][ATTN_CHUNK] p * group scale */
    float *sc = coef + 4 * ATTN_CHUNK; /* [ATTN_CHUNK] group scales */

    for (unsigned gi = 0; gi < ng; gi++) {
        for (unsigned j = 0; j < n; j++)
            sc[j] = h2f(ld_u16(s->scales + ((size_t)(t0 + j) * ng + gi) * 4));
        for (unsigned h0 = 0; h0 < g; h0 += 4) {
            unsigned hn = g - h0 < 4 ? g - h0 : 4;
            float msum[4] = {0, 0, 0, 0};
            for (unsigned hh = 0; hh < hn; hh++)
                for (unsigned j = 0; j < n; j++) {
                    float pj = p[(h0 + hh) * ld + j];
                    coef[hh * ATTN_CHUNK + j] = pj * sc[j];
                    msum[hh] =
                        fmaf(pj, h2f(ld_u16(s->scales + ((size_t)(t0 + j) * ng + gi) * 4 + 2)),
                             msum[hh]);
                }
            for (unsigned c = gi * gs; c < (gi + 1) * gs; c += 8) {
                __m256 a[4];
                for (unsigned hh = 0; hh < hn; hh++)
                    a[hh] = _mm256_add_ps(_mm256_loadu_ps(acc + (size_t)(h0 + hh) * d + c),
                                          _mm256_set1_ps(msum[hh]));
                for (unsigned j = 0; j < n; j++) {
                    __m256 v = codes8(s->data + (t0 + j) * rs, c, bits);
                    for (unsigned hh = 0; hh < hn; hh++)
                        a[hh] = _mm256_fmadd_ps(_mm256_broadcast_ss(coef + hh * ATTN_CHUNK + j), v,
                                                a[hh]);
                }
                for (unsigned hh = 0; hh < hn; hh++)
                    _mm256_storeu_ps(acc + (size_t)(h0 + hh) * d + c, a[hh]);
            }
        }
    }
}

static TGT void dot_int4(const struct attn_seg *s, unsigned t0, unsigned n, const float *q,
                         unsigned g, float *logits, size_t ld, float *work)
{
    dot_tokgroup(s, 4, 32, t0, n, q, g, logits, ld, work);
}

static TGT void axpy_int4(const struct attn_seg *s, unsigned t0, unsigned n, const float *p,
                          size_t ld, unsigned g, float *acc, float *work)
{
    axpy_tokgroup(s, 4, 32, t0, n, p, ld, g, acc, work);
}

static TGT void dot_kivi_k(const struct attn_seg *s, unsigned t0, unsigned n, const float *q,
                           unsigned g, float *logits, size_t ld, float *work)
{
    if (s->fmt == KV_FMT_KIVI4)
        dot_kivi(s, 4, t0, n, q, g, logits, ld, work);
    else
        dot_kivi(s, 2, t0, n, q, g, logits, ld, work);
}

static TGT void axpy_kivi_v(const struct attn_seg *s, unsigned t0, unsigned n, const float *p,
                            size_t ld, unsigned g, float *acc, float *work)
{
    if (s->fmt == KV_FMT_KIVI4)
        axpy_tokgroup(s, 4, s->group, t0, n, p, ld, g, acc, work);
    else
        axpy_tokgroup(s, 2, s->group, t0, n, p, ld, g, acc, work);
}

/* ---- dispatch on format ------------------------------------------------------------------- */

static void avx2_dot(const struct attn_seg *s, unsigned t0, unsigned n, const float *q, unsigned g,
                     float *logits, size_t ld, float *work)
{
    switch (s->fmt) {
    case KV_FMT_F16:
        dot_f16(s, t0, n, q, g, logits, ld, work);
        break;
    case KV_FMT_BF16:
        dot_bf16(s, t0, n, q, g, logits, ld, work);
        break;
    case KV_FMT_FP8_E4M3:
        dot_e4m3(s, t0, n, q, g, logits, ld, work);
        break;
    case KV_FMT_FP8_E5M2:
        dot_e5m2(s, t0, n, q, g, logits, ld, work);
        break;
    case KV_FMT_INT8:
        dot_int8(s, t0, n, q, g, logits, ld, work);
        break;
    case KV_FMT_INT4:
        dot_int4(s, t0, n, q, g, logits, ld, work);
        break;
    case KV_FMT_KIVI4:
    case KV_FMT_KIVI2:
        if (s->kind == KV_KIND_K)
            dot_kivi_k(s, t0, n, q, g, logits, ld, work);
        else /* a KIVI V segment used as keys: portable path (no fused kernel for this mix) */
            attn_ops_scalar.dot(s, t0, n, q, g, logits, ld, work);
        break;
    case ATTN_TAIL_F32:
        dot_tf32(s, t0, n, q, g, logits, ld, work);
        break;
    default:
        dot_tf16(s, t0, n, q, g, logits, ld, work);
        break;
    }
}

static void avx2_axpy(const struct attn_seg *s, unsigned t0, unsigned n, const float *p, size_t ld,
                      unsigned g, float *acc, float *work)
{
    switch (s->fmt) {
    case KV_FMT_F16:
        axpy_f16(s, t0, n, p, ld, g, acc, work);
        break;
    case KV_FMT_BF16:
        axpy_bf16(s, t0, n, p, ld, g, acc, work);
        break;
    case KV_FMT_FP8_E4M3:
        axpy_e4m3(s, t0, n, p, ld, g, acc, work);
        break;
    case KV_FMT_FP8_E5M2:
        axpy_e5m2(s, t0, n, p, ld, g, acc, work);
        break;
    case KV_FMT_INT8:
        axpy_int8(s, t0, n, p, ld, g, acc, work);
        break;
    case KV_FMT_INT4:
        axpy_int4(s, t0, n, p, ld, g, acc, work);
        break;
    case KV_FMT_KIVI4:
    case KV_FMT_KIVI2:
        if (s->kind == KV_KIND_V)
            axpy_kivi_v(s, t0, n, p, ld, g, acc, work);
        else
            attn_ops_scalar.axpy(s, t0, n, p, ld, g, acc, work);
        break;
    case ATTN_TAIL_F32:
        axpy_tf32(s, t0, n, p, ld, g, acc, work);
        break;
    default:
        axpy_tf16(s, t0, n, p, ld, g, acc, work);
        break;
    }
}

static TGT float avx2_expsum(float *x, unsigned n, float m)
{
    __m256 vm = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
    unsigned i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (i < n) {
        float tmp[8];
        for (unsigned k = 0; k < 8; k++)
            tmp[k] = i + k < n ? x[i + k] : -INFINITY;
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(tmp), vm));
        _mm256_storeu_ps(tmp, e);
        sum = _mm256_add_ps(sum, e);
        memcpy(x + i, tmp, (n - i) * sizeof(float));
    }
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

const struct attn_ops attn_ops_avx2 = {
    .dot = avx2_dot,
    .axpy = avx2_axpy,
    .expsum = avx2_expsum,
    .win = avx2_win,
    .win_ok = avx2_win_ok,
};

#endif
