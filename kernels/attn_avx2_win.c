/*
 * attn_avx2_win.c - the AVX2 tier's fused decode window: one call per window of up to ATTN_CHUNK
 * tokens computes, for every KV head, the logits, the online-softmax update and the weighted
 * values of F16, BF16, FP8 and INT8 pages at head_dim 64 or 128, and issues the next window's
 * prefetches at an even pace over its work. attn_avx2.c has the per-segment kernels that take
 * everything else.
 */
#if defined(__x86_64__) || defined(__i386__)

#include "attn_avx2.h"

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

void attn_avx2_win(const struct attn_win *w, const float *q, unsigned g, float *m, float *lsum,
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

int attn_avx2_win_ok(const struct kv_layout *l)
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

#endif
