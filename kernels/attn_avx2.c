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

#include "attn_avx2.h"

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

/* ---- simple formats: one scale per token (or none) ---------------------------------------- */

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
    .win = attn_avx2_win,
    .win_ok = attn_avx2_win_ok,
};

#endif
