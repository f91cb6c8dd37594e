/*
 * attn_impl.h - internal interface between the attention driver (attn_cpu.c) and its tiers
 * (attn_scalar.c portable, attn_avx2.c AVX2+F16C+FMA). Not installed, not for other modules.
 *
 * The driver walks the context in chunks of at most ATTN_CHUNK tokens of one segment (a page's
 * K or V segment for one KV head, or the private tail) and calls a tier's two fused kernels:
 * dot (logits of g query heads against a chunk of keys) and axpy (probability-weighted sum of a
 * chunk of values into g accumulators). The tiers compute exactly these sums; they differ only in
 * float rounding order, which tests/attn bounds.
 */
#ifndef KV_ATTN_IMPL_H
#define KV_ATTN_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "attn.h"

#define ATTN_CHUNK 64 /* tokens per kernel call; multiple of 8 */

/* Pseudo-formats of the private tail (never stored in a page). */
#define ATTN_TAIL_F32 100
#define ATTN_TAIL_F16 101

/* A view of one K or V segment of one KV head (or of the tail for that head). */
struct attn_seg {
    const uint8_t *data;       /* segment start (tail: first element of token 0, this head) */
    const uint8_t *scales;     /* segment + kv_seg_scale_offset (unused for F16/BF16/tail) */
    const struct kv_layout *l; /* the namespace layout (page segments only) */
    int fmt;                   /* enum kv_fmt, or ATTN_TAIL_F32 / ATTN_TAIL_F16 */
    unsigned kind;             /* KV_KIND_K or KV_KIND_V */
    unsigned d;                /* head_dim */
    unsigned group;            /* KIVI group size G */
    size_t stride;             /* tail: elements between consecutive tokens */
};

/*
 * dot:  logits[h * ld + j] = sum_c q[h * d + c] * K[t0 + j][c]   for h < g, j < n
 * axpy: acc[h * d + c]    += sum_j p[h * ld + j] * V[t0 + j][c]  for h < g, c < d
 * n <= ATTN_CHUNK; t0 + n within the segment's valid tokens. work: ATTN_CHUNK * d floats of
 * scratch the tier may use (and clobber).
 */
typedef void (*attn_dot_fn)(const struct attn_seg *s, unsigned t0, unsigned n, const float *q,
                            unsigned g, float *logits, size_t ld, float *work);
typedef void (*attn_axpy_fn)(const struct attn_seg *s, unsigned t0, unsigned n, const float *p,
                             size_t ld, unsigned g, float *acc, float *work);
/* x[i] = exp(x[i] - m) for i < n; returns the sum of the new x[i] (float accumulation). */
typedef float (*attn_expsum_fn)(float *x, unsigned n, float m);

/* Consecutive tokens of one page in a decode window, at KV head 0 (head k's bytes lie k * kstep
 * (K) and k * vstep (V) further on: see attn_win). */
struct attn_run {
    const uint8_t *k, *v;   /* K and V rows of the run's first token */
    const uint8_t *ks, *vs; /* their per-token scales (FP8, INT8); unused for F16/BF16 */
    unsigned n;             /* tokens, >= 1 */
};

/* Byte ranges to prefetch while a window is computed (the next window's bytes): the kernel
 * spreads the line prefetches over its work, so that loads stay in flight while it computes
 * instead of stalling it on full miss buffers. Mostly one range per page: the attended layer's K
 * and V segments of every KV head lie together in a page (kv_format.h), so the next window is
 * read in address order; short pieces give their rows head by head (see window_pf in
 * attn_cpu.c). Lines go out in groups of 4 (fewer at a range's end). */
#define ATTN_PF_CAP 4096 /* ranges at most; past them the rest of a window is not prefetched */
struct attn_pf {
    const uint8_t **lo, **hi; /* [lo, hi), lo 64-byte aligned, cap entries each */
    unsigned n, cap;          /* ranges, their room */
    unsigned groups;          /* groups of up to 4 lines in all: ceil(lines / 4) per range */
};

/* A decode window of every KV head: runs of page tokens, n <= ATTN_CHUNK in all. */
struct attn_win {
    const struct attn_run *run; /* at KV head 0 */
    unsigned nrun, n;
    int kfmt, vfmt;           /* page formats (never a tail pseudo-format) */
    unsigned d;               /* head_dim */
    unsigned nkv;             /* KV heads */
    size_t kstep, vstep;      /* bytes from one KV head's K (V) segment to the next one's */
    const struct attn_pf *pf; /* prefetched during the window; NULL: none */
};

/*
 * win: one decode window of all nkv KV heads, each for its g query heads, fused: logits of q
 * [nkv * g][d] (pre-scaled), the online-softmax update of m, lsum [nkv * g], acc [nkv * g][d]
 * (invariant 2 of attn_cpu.c, same state as dot + expsum + axpy keep), then the weighted sum of
 * the values. When lg is set the raw logits are also stored at lg[h * ld + j] (h < nkv * g).
 * work: ATTN_CHUNK * d floats. One call per window, not per KV head: the call's bookkeeping
 * (runs, prefetch ranges) is paid once for all heads.
 * win_ok: whether win handles pages of this layout. Both NULL in tiers without a fused kernel.
 */
typedef void (*attn_win_fn)(const struct attn_win *w, const float *q, unsigned g, float *m,
                            float *lsum, float *acc, float *lg, size_t ld, float *work);
typedef int (*attn_win_ok_fn)(const struct kv_layout *l);

/* One tier's kernels: implementations that coexist at run time (CPU dispatch). */
struct attn_ops {
    attn_dot_fn dot;
    attn_axpy_fn axpy;
    attn_expsum_fn expsum;
    attn_win_fn win;
    attn_win_ok_fn win_ok;
};

extern const struct attn_ops attn_ops_scalar;
#if defined(__x86_64__) || defined(__i386__)
extern const struct attn_ops attn_ops_avx2;
#endif

/* Dequantize tokens [t0, t0 + n) of a segment (or tail) to rows[j * d + c] (portable; uses
 * kv_quant's dequantizer for pages). Returns 0 or -EINVAL. */
int attn_seg_deq(const struct attn_seg *s, unsigned t0, unsigned n, float *rows);

#endif
