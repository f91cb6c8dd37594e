/*
 * attn_th.h - test harness for kernels/attn: builds a context of real quantized pages (through
 * kv_quant_page), a private tail and queries, and computes the derived error bounds.
 *
 * Two comparisons, two bounds (u = 2^-24, gamma(n) = n u / (1 - n u), the classic bound on the
 * rounding error of an n-term float sum or dot product, Higham 3.1):
 *
 *  (1) kernel vs kv_attn_ref on the SAME dequantized pages (only float rounding differs).
 *      Logits: the kernel computes s~_j = sum_c q^_c k_jc in float, q^ = q * softmax_scale
 *      (one rounding), k decoded exactly or as s*code (+ m) regrouped; each such term differs from
 *      the reference's float decode by at most one rounding of |code*s| + |m|. So
 *          |s~_j - s_j| <= delta_j = gamma(d + 8) * A_j,  A_j = sum_c |q^_c| (|k_jc| + 2 M)
 *      with M = 0 for formats without a group minimum, else an upper bound of |min| (the minimum
 *      is rounded down from the group's smallest input: |min| <= max|x| (1 + 2^-9)).
 *      Weights: w_j = exp(s~_j - m~) with exp relative error <= 4u, the subtraction's rounding
 *      u |s_j - m|, and at most one exp-rescale (4u) per chunk, so every weight is within a factor
 *      e^(+-Ew) of exact, Ew = max delta + u max|s - m| + 4u (chunks + 2). Normalizing by their
 *      own sum gives p~_j / p_j in [e^(-2Ew), e^(2Ew)], and the two float sums (l and acc, n terms
 *      plus chunk rescales) add 2 gamma(n + chunks + 16). Hence, per output channel,
 *          |o~ - o| <= (e^(2Ew) - 1 + 2 gamma(n + chunks + 16)) * Vbar,  Vbar = max|v| + 2 M_v
 *      and for each probability |p~_j - p_j| <= (e^(2Ew) - 1 + 2 gamma(n + chunks + 16)) p_j + u,
 *      and the probabilities of one query and head sum to 1 within
 *          (e^(2Ew) - 1) + 2 gamma(n + chunks + 16) + n u.
 *
 *  (2) kernel vs fp64 attention on the ORIGINAL (unquantized) K and V: the format's own error.
 *      e_k, e_v: per-element bounds of each format's quantization error, derived from its
 *      definition in kv_format.h (half a step of its grid, see th_elem_err). Then
 *          |s'_j - s_j| <= Dk = max_j softmax_scale * sum_c |q_c| e_k(j, c)
 *      so p'_j / p_j in [e^(-2 Dk), e^(2 Dk)] and, with o' - o = sum (p'-p) v' + sum p (v' - v),
 *          |o'_c - o_c| <= (e^(2 Dk) - 1) max_j |v'_jc| + max_j e_v(j, c) + bound (1).
 *      (For the 2-bit formats this bound is loose by construction; it is still a valid bound.)
 */
#ifndef ATTN_TH_H
#define ATTN_TH_H

#include <stddef.h>
#include <stdint.h>

#include "attn.h"
#include "kv_format.h"

#define TH_MAX_BLOCKS 64

struct th_cfg {
    unsigned nkv, g, d, T;    /* KV heads, query heads per KV head, head dim, page tokens */
    int kf, vf;               /* formats */
    unsigned group;           /* KIVI group */
    unsigned n_layers, layer; /* page layers and the one attended */
    unsigned nblk;            /* blocks */
    unsigned blk_tokens[TH_MAX_BLOCKS]; /* valid tokens per block (0 = full page) */
    unsigned n_tail;                    /* private tail tokens */
    int tail_f16;                       /* tail dtype f16 instead of f32 */
    unsigned n_q;                       /* queries (1 = decode) */
    float v_amp0;                       /* block 0's values times this (0: 1): large scales */
    unsigned v_amp_kvh;                 /* 0: v_amp0 on every KV head; k + 1: on KV head k only */
    float k_amp;                        /* every key times this (0: 1) */
    uint32_t seed;
};

struct th_case {
    struct th_cfg cfg;
    struct kv_layout l;
    uint8_t *pages; /* nblk * page bytes */
    struct kv_attn_block bt[TH_MAX_BLOCKS];
    void *tk, *tv;   /* tail [n_tail][nkv][d] */
    float *kx, *vx;  /* originals of the attended layer [n_ctx][nkv][d] */
    float *kd, *vd;  /* dequantized (pages) / tail values [n_ctx][nkv][d] */
    float *q;        /* [n_q][nq_heads][d] */
    double *ek, *ev; /* per-element format error bounds (th_elem_err) */
    size_t n_ctx;
    unsigned *blk_of; /* [n_ctx]: block of each position (nblk for the tail) */
    unsigned *tok_of; /* [n_ctx]: token index inside its block */
    struct kv_attn_args a;
};

/* Builds a case (Criterion asserts inside on failure). */
void th_build(struct th_case *c, const struct th_cfg *cfg);
void th_free(struct th_case *c);

/* Bound (1) for output channel values of (query qi, head h); also returns the probability
 * tolerance factor (multiplies p_j) and the sum-to-one tolerance. */
void th_kernel_bound(const struct th_case *c, unsigned qi, unsigned h, double *out_tol,
                     double *p_rel, double *sum_tol);

/* Per-channel bound (2) against the originals, for (query qi, head h); tol[d]. */
void th_format_bound(const struct th_case *c, unsigned qi, unsigned h, double *tol);

/* fp64 attention over the originals kx/vx for (qi, h): out[d]. */
void th_exact(const struct th_case *c, unsigned qi, unsigned h, double *out);

/* Tiers available here (scalar always, AVX2 when the CPU has it): fills tiers[], returns count. */
unsigned th_tiers(enum kv_attn_tier *tiers);

#endif
