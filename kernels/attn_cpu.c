/*
 * attn_cpu.c - the CPU attention driver: argument checks, tier dispatch, decode with online
 * softmax, blocked causal prefill, and the H2O score side output.
 *
 * Invariants:
 *  1. The context is walked as spans (blocks[0..n_blocks), then the tail); position pos counts
 *     tokens from the start of the context. Decode groups consecutive spans into windows of at
 *     most ATTN_CHUNK tokens (a window may cover several short pages, a kernel call never crosses
 *     a span); prefill walks each span in chunks of at most ATTN_CHUNK tokens.
 *  2. Per (query, head) row the running state is (m, l, acc): m the largest logit seen, l the sum
 *     of exp(logit - m), acc the sum of exp(logit - m) * v. A window/chunk with max m' > m
 *     rescales l and acc by exp(m - m'), so at the end acc / l is the softmax-weighted mean.
 *  3. Queries are pre-multiplied by the softmax scale; kernels compute raw dot products.
 *  4. Scores are added only after the row's final (m, l) is known: decode keeps each head's
 *     logits (n_q_heads * n_ctx floats); prefill recomputes them in a second pass over K.
 */
#include <errno.h>
#include <math.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "attn_impl.h"
#include "kv_quant.h"

#define PREFILL_Q 64 /* queries of one prefill tile (fewer when g > 4: <= 256 rows) */

size_t kv_attn_ctx_len(const struct kv_attn_args *a)
{
    size_t n = a->n_tail;
    for (unsigned b = 0; b < a->n_blocks; b++)
        n += a->blocks[b].n_tokens;
    return n;
}

int kv_attn_check(const struct kv_attn_args *a)
{
    if (!a || !a->layout || kv_layout_check(a->layout) != 0)
        return -EINVAL;
    const struct kv_layout *l = a->layout;
    if (a->layer >= l->n_layers || a->n_q_heads == 0 || a->n_q_heads > KV_ATTN_MAX_Q_HEADS ||
        a->n_q_heads % l->n_kv_heads != 0)
        return -EINVAL;
    if (!a->q || !a->out || a->n_q == 0 || a->n_q > KV_ATTN_MAX_Q)
        return -EINVAL;
    if (!(a->softmax_scale >= 0.0f) || isinf(a->softmax_scale))
        return -EINVAL;
    if (a->n_blocks && !a->blocks)
        return -EINVAL;
    if (a->n_blocks > KV_ATTN_MAX_CTX || a->n_tail > KV_ATTN_MAX_CTX)
        return -EINVAL;
    size_t n = a->n_tail;
    for (unsigned b = 0; b < a->n_blocks; b++) {
        if (!a->blocks[b].page || a->blocks[b].n_tokens == 0 ||
            a->blocks[b].n_tokens > l->page_tokens)
            return -EINVAL;
        n += a->blocks[b].n_tokens;
    }
    if (n > KV_ATTN_MAX_CTX)
        return -EINVAL;
    if (a->n_tail && (!a->tail_k || !a->tail_v ||
                      (a->tail_dtype != KV_ATTN_F32 && a->tail_dtype != KV_ATTN_F16)))
        return -EINVAL;
    if (a->n_q > (n ? n : 1)) /* prefill queries are the last n_q tokens of the context */
        return -EINVAL;
    return 0;
}

/* ---- tier dispatch ------------------------------------------------------------------------ */

static const struct attn_ops *g_ops;
static enum kv_attn_tier g_tier;

static int cpu_has_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned eax, ebx, ecx, edx;
    __builtin_cpu_init();
    /* clang 14's __builtin_cpu_supports does not know "f16c": CPUID.1:ECX bit 29 */
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 29)))
        return 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int kv_attn_set_tier(enum kv_attn_tier t)
{
    if (t == KV_ATTN_TIER_AUTO) {
        const char *f = getenv("KV_KERNELS_FORCE"); /* same switch as kv_quant */
        t = (cpu_has_avx2() && !(f && strcmp(f, "ref") == 0)) ? KV_ATTN_TIER_AVX2
                                                              : KV_ATTN_TIER_SCALAR;
    }
    switch (t) {
    case KV_ATTN_TIER_SCALAR:
        __atomic_store_n(&g_ops, &attn_ops_scalar, __ATOMIC_RELEASE);
        break;
#if defined(__x86_64__) || defined(__i386__)
    case KV_ATTN_TIER_AVX2:
        if (!cpu_has_avx2())
            return -ENOTSUP;
        __atomic_store_n(&g_ops, &attn_ops_avx2, __ATOMIC_RELEASE);
        break;
#endif
    default:
        return -ENOTSUP;
    }
    g_tier = t;
    return 0;
}

/* Racing first calls all pick the same tier; the pointer is published atomically. */
static const struct attn_ops *ops_get(void)
{
    const struct attn_ops *o = __atomic_load_n(&g_ops, __ATOMIC_ACQUIRE);
    if (!o) {
        kv_attn_set_tier(KV_ATTN_TIER_AUTO);
        o = __atomic_load_n(&g_ops, __ATOMIC_ACQUIRE);
    }
    return o;
}

enum kv_attn_tier kv_attn_get_tier(void)
{
    ops_get();
    return g_tier;
}

/* ---- context walking ---------------------------------------------------------------------- */

/* Page geometry of one call, computed once (kv_seg_offset per piece and head was ~6 % of
 * decode time at 16-token pages). */
struct geom {
    size_t layer_off; /* offset of the layer's first segment in a page */
    size_t seg[2];    /* K, V segment bytes */
    size_t so[2];     /* K, V scale offsets inside a segment */
    size_t row[2];    /* K, V data bytes per token */
    size_t sb[2];     /* K, V scale bytes per token (rounded down, for prefetching) */
    unsigned nkv;
};

static void geom_init(const struct kv_attn_args *a, struct geom *gm)
{
    const struct kv_layout *l = a->layout;
    for (unsigned kind = 0; kind < 2; kind++) {
        int fmt = kind ? l->v_fmt : l->k_fmt;
        gm->seg[kind] = kv_seg_bytes(fmt, l);
        gm->so[kind] = kv_seg_scale_offset(fmt, l);
        gm->row[kind] = (size_t)l->head_dim * kv_fmt_bits(fmt) / 8;
        gm->sb[kind] = gm->so[kind] ? (gm->seg[kind] - gm->so[kind]) / l->page_tokens : 0;
    }
    gm->nkv = l->n_kv_heads;
    gm->layer_off = kv_seg_offset(l, a->layer, KV_KIND_K, 0);
}

/* Offset of segment (kind, head) of the attended layer in a page (= kv_seg_offset). */
static size_t geom_seg(const struct geom *gm, unsigned kind, unsigned h)
{
    return gm->layer_off + (kind ? gm->nkv * gm->seg[0] + h * gm->seg[1] : h * gm->seg[0]);
}

/* Segment view of span `span` (a block, or the tail when span == n_blocks) for KV head kvh.
 * Returns the span's token count. */
static unsigned span_seg(const struct kv_attn_args *a, const struct geom *gm, unsigned span,
                         unsigned kvh, unsigned kind, struct attn_seg *s)
{
    const struct kv_layout *l = a->layout;

    s->l = l;
    s->kind = kind;
    s->d = l->head_dim;
    s->group = l->group;
    if (span < a->n_blocks) {
        s->fmt = kind == KV_KIND_K ? l->k_fmt : l->v_fmt;
        s->data = a->blocks[span].page + geom_seg(gm, kind, kvh);
        s->scales = s->data + gm->so[kind];
        s->stride = l->head_dim;
        return a->blocks[span].n_tokens;
    }
    size_t esz = a->tail_dtype == KV_ATTN_F16 ? 2 : 4;
    s->fmt = a->tail_dtype == KV_ATTN_F16 ? ATTN_TAIL_F16 : ATTN_TAIL_F32;
    s->data = (const uint8_t *)(kind == KV_KIND_K ? a->tail_k : a->tail_v) +
              (size_t)kvh * l->head_dim * esz;
    s->scales = NULL;
    s->stride = (size_t)l->n_kv_heads * l->head_dim;
    return a->n_tail;
}

static float row_max(const float *x, unsigned n)
{
    float m = -INFINITY;
    for (unsigned i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* Online-softmax update of one row with a chunk's probabilities-to-be p[0..n) (logits on entry,
 * exp(logit - m_new) on return). */
static void softmax_step(const struct attn_ops *ops, float *p, unsigned n, float *m, float *lsum,
                         float *acc, unsigned d)
{
    float mnew = fmaxf(*m, row_max(p, n));
    if (mnew == -INFINITY) { /* every logit masked: contributes nothing */
        for (unsigned j = 0; j < n; j++)
            p[j] = 0.0f;
        return;
    }
    float sum = ops->expsum(p, n, mnew);
    if (mnew != *m) {
        float alpha = *m == -INFINITY ? 0.0f : expf(*m - mnew);
        for (unsigned c = 0; c < d; c++)
            acc[c] *= alpha;
        *lsum *= alpha;
        *m = mnew;
    }
    *lsum += sum;
}

static float attn_scale(const struct kv_attn_args *a)
{
    return a->softmax_scale > 0.0f ? a->softmax_scale : 1.0f / sqrtf((float)a->layout->head_dim);
}

/* A run of tokens of one span inside a decode window. */
struct piece {
    unsigned span, t0, n, off; /* tokens [t0, t0+n) of the span, at window offset off */
};

/* Fills pc[] with the next window (up to ATTN_CHUNK tokens from spans starting at *span, token
 * *t_in) and advances the cursor. Returns the number of pieces; *cn gets the window's tokens. */
static unsigned window_next(const struct kv_attn_args *a, unsigned *span, unsigned *t_in,
                            struct piece *pc, unsigned *cn)
{
    unsigned np = 0;
    *cn = 0;
    while (*cn < ATTN_CHUNK && *span <= a->n_blocks) {
        unsigned nt = *span < a->n_blocks ? a->blocks[*span].n_tokens : a->n_tail;
        if (*t_in >= nt) {
            (*span)++;
            *t_in = 0;
            continue;
        }
        unsigned take = nt - *t_in < ATTN_CHUNK - *cn ? nt - *t_in : ATTN_CHUNK - *cn;
        pc[np++] = (struct piece){*span, *t_in, take, *cn};
        *cn += take;
        *t_in += take;
    }
    return np;
}

/* Prefetches one piece's K and V bytes of KV head h: pages are scattered in the arena, so the
 * hardware prefetcher cannot guess the next one. Issued piece by piece between the kernels of
 * the current window, so that loads stay in flight while the core computes (a whole window at
 * once would stall the core on full miss buffers, then leave memory idle). */
static void piece_prefetch(const struct kv_attn_args *a, const struct geom *gm,
                           const struct piece *pc, unsigned h)
{
    if (pc->span >= a->n_blocks)
        return;
    for (unsigned kind = 0; kind < 2; kind++) {
        const uint8_t *seg = a->blocks[pc->span].page + geom_seg(gm, kind, h);
        const uint8_t *d0 = seg + pc->t0 * gm->row[kind], *d1 = d0 + pc->n * gm->row[kind];
        for (const uint8_t *x = d0; x < d1; x += 64)
            __builtin_prefetch(x, 0, 1);
        const uint8_t *s0 = seg + gm->so[kind] + pc->t0 * gm->sb[kind];
        const uint8_t *s1 = s0 + pc->n * gm->sb[kind];
        for (const uint8_t *x = s0; x < s1; x += 64)
            __builtin_prefetch(x, 0, 1);
    }
}

/* Groups of up to 4 lines that the kernel issues for [lo, hi) (lo line-aligned). */
static unsigned pf_groups(const uint8_t *lo, const uint8_t *hi)
{
    return (unsigned)((hi - lo + 255) / 256);
}

/* Adds [lo, hi) to pf (lo rounded down to its 64-byte line), joined to the last range when the
 * two meet (consecutive pages of a one-layer arena). */
static void pf_add(struct attn_pf *pf, const uint8_t *lo, const uint8_t *hi)
{
    if (hi <= lo)
        return;
    lo = (const uint8_t *)((uintptr_t)lo & ~(uintptr_t)63);
    if (pf->n && lo <= pf->hi[pf->n - 1] && lo >= pf->lo[pf->n - 1]) {
        const uint8_t *l0 = pf->lo[pf->n - 1], *h0 = pf->hi[pf->n - 1];
        if (hi > h0) {
            pf->groups += pf_groups(l0, hi) - pf_groups(l0, h0);
            pf->hi[pf->n - 1] = hi;
        }
        return;
    }
    if (pf->n == pf->cap)
        return;
    pf->lo[pf->n] = lo;
    pf->hi[pf->n++] = hi;
    pf->groups += pf_groups(lo, hi);
}

/* pf = the attended layer's bytes of the window's page pieces, every KV head. A piece of at least
 * 3/4 of its page's tokens takes one range, from head 0's first K row to the last head's last V
 * scale (the layer's region of the page; the rows of the tokens it lacks come along, a third
 * more at most); a shorter piece (a token-evicted variant's short page, or a window's share of a
 * page longer than the window) takes its rows and scales head by head, so that it fetches what it
 * reads. */
static void window_pf(const struct kv_attn_args *a, const struct geom *gm, const struct piece *pc,
                      unsigned np, struct attn_pf *pf)
{
    pf->n = pf->groups = 0;
    for (unsigned i = 0; i < np && pc[i].span < a->n_blocks; i++) {
        const uint8_t *page = a->blocks[pc[i].span].page;
        size_t t0 = pc[i].t0, t1 = t0 + pc[i].n;
        if (4 * pc[i].n >= 3 * (unsigned)a->layout->page_tokens) {
            const uint8_t *last = page + geom_seg(gm, 1, gm->nkv - 1);
            pf_add(pf, page + geom_seg(gm, 0, 0) + t0 * gm->row[0],
                   gm->sb[1] ? last + gm->so[1] + t1 * gm->sb[1] : last + t1 * gm->row[1]);
            continue;
        }
        for (unsigned h = 0; h < gm->nkv; h++)
            for (unsigned kind = 0; kind < 2; kind++) {
                const uint8_t *seg = page + geom_seg(gm, kind, h);
                pf_add(pf, seg + t0 * gm->row[kind], seg + t1 * gm->row[kind]);
                pf_add(pf, seg + gm->so[kind] + t0 * gm->sb[kind],
                       seg + gm->so[kind] + t1 * gm->sb[kind]);
            }
    }
}

/* ---- decode ------------------------------------------------------------------------------- */

/* Windows kept: the current one and the next, whose bytes the fused kernel prefetches while it
 * computes the current one (measured at 32k, 1:1: 1 window ahead beat 0, 2 and 3; 0 is 2x slower
 * for FP8). */
#define ATTN_PF_AHEAD 1
#define ATTN_RING     (ATTN_PF_AHEAD + 1)

struct window {
    unsigned np, cn; /* pieces, tokens (0 past the end of the context) */
    struct piece pc[ATTN_CHUNK];
};

int kv_attn_decode(const struct kv_attn_args *a)
{
    int rc = kv_attn_check(a);
    if (rc)
        return rc;
    if (a->n_q != 1)
        return -EINVAL;

    const struct attn_ops *ops = ops_get();
    const struct kv_layout *l = a->layout;
    unsigned d = l->head_dim, nkv = l->n_kv_heads, nqh = a->n_q_heads, g = nqh / nkv;
    size_t n_ctx = kv_attn_ctx_len(a);
    int want_scores = (a->scores || a->scores_head) && n_ctx > 0;
    float scale = attn_scale(a);

    if (n_ctx == 0) {
        memset(a->out, 0, (size_t)nqh * d * sizeof(float));
        return 0;
    }
    /* scratch: qs[nqh*d] acc[nqh*d] work[CHUNK*d] p[g*CHUNK] m[nqh] l[nqh] logits[nqh*n_ctx] */
    size_t nf = 2 * (size_t)nqh * d + (size_t)ATTN_CHUNK * d + (size_t)g * ATTN_CHUNK + 2 * nqh +
                (want_scores ? (size_t)nqh * n_ctx : 0);
    float *buf = aligned_alloc(64, (nf * sizeof(float) + 63) / 64 * 64);
    struct window *wr = malloc(ATTN_RING * sizeof(*wr));
    struct attn_run *runs = malloc(ATTN_CHUNK * sizeof(*runs));
    /* prefetch ranges: a window of short pieces takes 4 per piece and KV head */
    unsigned pf_cap = 4 * nkv * ATTN_CHUNK < ATTN_PF_CAP ? 4 * nkv * ATTN_CHUNK : ATTN_PF_CAP;
    struct attn_pf *pf = malloc(sizeof(*pf) + 2 * (size_t)pf_cap * sizeof(const uint8_t *));
    if (pf) {
        pf->lo = (const uint8_t **)(pf + 1);
        pf->hi = pf->lo + pf_cap;
        pf->cap = pf_cap;
    }
    if (!buf || !wr || !runs || !pf) {
        free(buf);
        free(wr);
        free(runs);
        free(pf);
        return -ENOMEM;
    }
    float *qs = buf, *acc = qs + (size_t)nqh * d, *work = acc + (size_t)nqh * d;
    float *p = work + (size_t)ATTN_CHUNK * d, *m = p + (size_t)g * ATTN_CHUNK, *lsum = m + nqh;
    float *lg = want_scores ? lsum + nqh : NULL;
    struct geom gm;
    geom_init(a, &gm);
    int fused = ops->win && ops->win_ok(l); /* the tier's fused window kernel takes this layout */

    for (size_t i = 0; i < (size_t)nqh * d; i++)
        qs[i] = a->q[i] * scale;
    memset(acc, 0, (size_t)nqh * d * sizeof(float));
    for (unsigned h = 0; h < nqh; h++) {
        m[h] = -INFINITY;
        lsum[h] = 0.0f;
    }
    /* Windows of up to ATTN_CHUNK tokens gathered from consecutive spans (short pages), all KV
     * heads per window: the softmax bookkeeping runs once per window and the pages are read in
     * address order, the next window's prefetched while this one is computed. */
    unsigned span = 0, t_in = 0;
    for (unsigned r = 0; r < ATTN_RING; r++)
        wr[r].np = window_next(a, &span, &t_in, wr[r].pc, &wr[r].cn);
    for (size_t pos = 0, wi = 0, cn; pos < n_ctx; pos += cn, wi++) {
        struct window *cw = &wr[wi % ATTN_RING], *nw = &wr[(wi + 1) % ATTN_RING];
        struct window *fw = &wr[(wi + ATTN_PF_AHEAD) % ATTN_RING]; /* prefetched now */
        const struct piece *pc = cw->pc, *next = nw->pc;
        unsigned np = cw->np, nnp = nw->np;
        cn = cw->cn;
        if (fused && pc[np - 1].span < a->n_blocks) { /* no tail in the window: fused */
            window_pf(a, &gm, fw->pc, fw->np, pf);
            for (unsigned i = 0; i < np; i++) {
                const uint8_t *kseg = a->blocks[pc[i].span].page + geom_seg(&gm, 0, 0);
                const uint8_t *vseg = a->blocks[pc[i].span].page + geom_seg(&gm, 1, 0);
                runs[i] = (struct attn_run){.k = kseg + pc[i].t0 * gm.row[0],
                                            .v = vseg + pc[i].t0 * gm.row[1],
                                            .ks = kseg + gm.so[0] + 4 * (size_t)pc[i].t0,
                                            .vs = vseg + gm.so[1] + 4 * (size_t)pc[i].t0,
                                            .n = pc[i].n};
            }
            struct attn_win w = {.run = runs,
                                 .nrun = np,
                                 .n = cn,
                                 .kfmt = l->k_fmt,
                                 .vfmt = l->v_fmt,
                                 .d = d,
                                 .nkv = nkv,
                                 .kstep = gm.seg[0],
                                 .vstep = gm.seg[1],
                                 .pf = pf};
            ops->win(&w, qs, g, m, lsum, acc, lg ? lg + pos : NULL, n_ctx, work);
        } else { /* per KV head: dot, softmax, axpy */
            for (unsigned k = 0; k < nkv; k++) {
                const float *qk = qs + (size_t)k * g * d;
                float *ak = acc + (size_t)k * g * d, *lgk = lg ? lg + (size_t)k * g * n_ctx : NULL;
                struct attn_seg ks, vs;
                for (unsigned i = np; i < nnp; i++) /* the next window has more pieces */
                    piece_prefetch(a, &gm, &next[i], k);
                for (unsigned i = 0; i < np; i++) {
                    if (i < nnp)
                        piece_prefetch(a, &gm, &next[i], k);
                    span_seg(a, &gm, pc[i].span, k, KV_KIND_K, &ks);
                    if (lgk)
                        ops->dot(&ks, pc[i].t0, pc[i].n, qk, g, lgk + pos + pc[i].off, n_ctx, work);
                    else
                        ops->dot(&ks, pc[i].t0, pc[i].n, qk, g, p + pc[i].off, ATTN_CHUNK, work);
                }
                if (lgk)
                    for (unsigned h = 0; h < g; h++)
                        memcpy(p + h * ATTN_CHUNK, lgk + h * n_ctx + pos, cn * sizeof(float));
                for (unsigned h = 0; h < g; h++)
                    softmax_step(ops, p + h * ATTN_CHUNK, cn, &m[k * g + h], &lsum[k * g + h],
                                 ak + (size_t)h * d, d);
                for (unsigned i = 0; i < np; i++) {
                    span_seg(a, &gm, pc[i].span, k, KV_KIND_V, &vs);
                    ops->axpy(&vs, pc[i].t0, pc[i].n, p + pc[i].off, ATTN_CHUNK, g, ak, work);
                }
            }
        }
        cw->np = window_next(a, &span, &t_in, cw->pc, &cw->cn); /* window wi + ATTN_RING */
    }

    for (unsigned h = 0; h < nqh; h++) {
        float inv = 1.0f / lsum[h];
        for (unsigned c = 0; c < d; c++)
            a->out[(size_t)h * d + c] = acc[(size_t)h * d + c] * inv;
    }
    for (unsigned h = 0; lg && h < nqh; h++) {
        float *row = lg + (size_t)h * n_ctx, inv = 1.0f / lsum[h];
        ops->expsum(row, (unsigned)n_ctx, m[h]);
        float *sk = a->scores ? a->scores + (size_t)(h / g) * n_ctx : NULL;
        float *sh = a->scores_head ? a->scores_head + (size_t)h * n_ctx : NULL;
        for (size_t j = 0; j < n_ctx; j++) {
            float pj = row[j] * inv;
            if (sk)
                sk[j] += pj;
            if (sh)
                sh[j] += pj;
        }
    }
    free(pf);
    free(runs);
    free(wr);
    free(buf);
    return rc;
}

/* ---- prefill ------------------------------------------------------------------------------ */

/* A tile: up to PREFILL_Q consecutive queries of one KV head. Each window of K/V is dequantized
 * once per tile (kv_quant's dequantizer, into kt/vt, which stay in cache) and the tile's queries
 * run the tier's f32 kernels over it: conversion is paid once per 64 queries, not per query.
 * Row r = query r / g, head r % g. */
struct prefill_tile {
    unsigned nq, g, d;
    size_t qpos0;     /* context position of the tile's first query */
    float *q;         /* [nq * g][d] scaled queries */
    float *acc;       /* [nq * g][d] */
    float *s;         /* [nq * g][ATTN_CHUNK] logits, then probabilities */
    float *work;      /* [ATTN_CHUNK][d] tier scratch */
    float *kt, *vt;   /* [ATTN_CHUNK][d] the window's keys and values in f32 */
    float *m, *l;     /* [nq * g] */
    struct piece *pc; /* [ATTN_CHUNK] pieces of the current window */
    const struct geom *gm;
};

/* Dequantizes tokens [0, lim) of the window's pieces of KV head k into rows (f32). */
static int window_deq(const struct kv_attn_args *a, const struct prefill_tile *t, unsigned np,
                      unsigned k, unsigned kind, unsigned lim, float *rows)
{
    struct attn_seg sg;
    for (unsigned i = 0; i < np && t->pc[i].off < lim; i++) {
        unsigned n = lim - t->pc[i].off < t->pc[i].n ? lim - t->pc[i].off : t->pc[i].n;
        span_seg(a, t->gm, t->pc[i].span, k, kind, &sg);
        int rc = attn_seg_deq(&sg, t->pc[i].t0, n, rows + (size_t)t->pc[i].off * t->d);
        if (rc)
            return rc;
    }
    return 0;
}

/* Runs one tile of KV head k. Causality without masks: a query at position qp sees the first
 * qp - pos + 1 tokens of the window at pos. */
static int prefill_tile_run(const struct kv_attn_args *a, const struct attn_ops *ops,
                            struct prefill_tile *t, unsigned k, size_t n_ctx)
{
    unsigned d = t->d, g = t->g;
    size_t last = t->qpos0 + t->nq - 1; /* last visible position of the tile */
    struct attn_seg kf = {.data = (const uint8_t *)t->kt,
                          .fmt = ATTN_TAIL_F32,
                          .d = d,
                          .stride = d,
                          .l = a->layout,
                          .kind = KV_KIND_K};
    struct attn_seg vf = kf;
    vf.data = (const uint8_t *)t->vt;
    vf.kind = KV_KIND_V;

    for (int pass = 0; pass < 2; pass++) { /* pass 1: scores, only when requested */
        if (pass == 1 && !a->scores && !a->scores_head)
            break;
        unsigned span = 0, t_in = 0, cn;
        for (size_t pos = 0; pos <= last && pos < n_ctx; pos += cn) {
            unsigned np = window_next(a, &span, &t_in, t->pc, &cn);
            unsigned tlim = last - pos + 1 < cn ? (unsigned)(last - pos + 1) : cn;
            int rc = window_deq(a, t, np, k, KV_KIND_K, tlim, t->kt);
            if (!rc && pass == 0)
                rc = window_deq(a, t, np, k, KV_KIND_V, tlim, t->vt);
            if (rc)
                return rc;
            for (unsigned qi = 0; qi < t->nq; qi++) {
                size_t qp = t->qpos0 + qi;
                if (qp < pos)
                    continue;
                unsigned lim = qp - pos + 1 < cn ? (unsigned)(qp - pos + 1) : cn;
                float *srow = t->s + (size_t)qi * g * ATTN_CHUNK;
                ops->dot(&kf, 0, lim, t->q + (size_t)qi * g * d, g, srow, ATTN_CHUNK, t->work);
                for (unsigned h = 0; h < g; h++) {
                    unsigned r = qi * g + h;
                    float *sr = srow + h * ATTN_CHUNK;
                    if (pass == 0) {
                        softmax_step(ops, sr, lim, &t->m[r], &t->l[r], t->acc + (size_t)r * d, d);
                        continue;
                    }
                    float inv = 1.0f / t->l[r];
                    ops->expsum(sr, lim, t->m[r]);
                    for (unsigned j = 0; j < lim; j++) {
                        if (a->scores)
                            a->scores[(size_t)k * n_ctx + pos + j] += sr[j] * inv;
                        if (a->scores_head)
                            a->scores_head[(size_t)(k * g + h) * n_ctx + pos + j] += sr[j] * inv;
                    }
                }
                if (pass == 0)
                    ops->axpy(&vf, 0, lim, srow, ATTN_CHUNK, g, t->acc + (size_t)qi * g * d,
                              t->work);
            }
        }
    }
    return 0;
}

int kv_attn_prefill(const struct kv_attn_args *a)
{
    int rc = kv_attn_check(a);
    if (rc)
        return rc;

    const struct attn_ops *ops = ops_get();
    const struct kv_layout *l = a->layout;
    unsigned d = l->head_dim, nkv = l->n_kv_heads, g = a->n_q_heads / nkv;
    size_t n_ctx = kv_attn_ctx_len(a);
    float scale = attn_scale(a);

    if (n_ctx == 0) {
        memset(a->out, 0, (size_t)a->n_q * a->n_q_heads * d * sizeof(float));
        return 0;
    }
    unsigned qt = 256 / g < PREFILL_Q ? (256 / g ? 256 / g : 1) : PREFILL_Q; /* bounded scratch */
    unsigned maxrows = qt * g;
    size_t nf = 2 * (size_t)maxrows * d + (size_t)maxrows * ATTN_CHUNK +
                3 * (size_t)ATTN_CHUNK * d + 2 * (size_t)maxrows;
    float *buf = aligned_alloc(64, (nf * sizeof(float) + 63) / 64 * 64);
    struct piece *pc = malloc(ATTN_CHUNK * sizeof(*pc));
    if (!buf || !pc) {
        free(buf);
        free(pc);
        return -ENOMEM;
    }
    struct geom gm;
    geom_init(a, &gm);
    struct prefill_tile t = {.g = g, .d = d, .pc = pc, .gm = &gm};
    t.q = buf;
    t.acc = t.q + (size_t)maxrows * d;
    t.s = t.acc + (size_t)maxrows * d;
    t.work = t.s + (size_t)maxrows * ATTN_CHUNK;
    t.kt = t.work + (size_t)ATTN_CHUNK * d;
    t.vt = t.kt + (size_t)ATTN_CHUNK * d;
    t.m = t.vt + (size_t)ATTN_CHUNK * d;
    t.l = t.m + maxrows;

    for (unsigned k = 0; k < nkv && rc == 0; k++) {
        for (unsigned qi0 = 0; qi0 < a->n_q && rc == 0; qi0 += qt) {
            t.nq = a->n_q - qi0 < qt ? a->n_q - qi0 : qt;
            t.qpos0 = n_ctx - a->n_q + qi0;
            for (unsigned r = 0; r < t.nq * g; r++) {
                const float *src =
                    a->q + ((size_t)(qi0 + r / g) * a->n_q_heads + k * g + r % g) * d;
                for (unsigned c = 0; c < d; c++)
                    t.q[(size_t)r * d + c] = src[c] * scale;
                t.m[r] = -INFINITY;
                t.l[r] = 0.0f;
            }
            memset(t.acc, 0, (size_t)t.nq * g * d * sizeof(float));
            rc = prefill_tile_run(a, ops, &t, k, n_ctx);
            for (unsigned r = 0; r < t.nq * g; r++) {
                float *o = a->out + ((size_t)(qi0 + r / g) * a->n_q_heads + k * g + r % g) * d;
                float inv = 1.0f / t.l[r];
                for (unsigned c = 0; c < d; c++)
                    o[c] = t.acc[(size_t)r * d + c] * inv;
            }
        }
    }
    free(pc);
    free(buf);
    return rc;
}
