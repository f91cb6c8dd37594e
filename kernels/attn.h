/*
 * attn.h - paged attention over quantized KV pages, with H2O score accumulation.
 *
 * A worker reads kvd's pages in place: a block table gives, per logical block, the address of a
 * page (arena base + offset) and how many of its tokens are valid; the layer index selects the
 * page's segments (kv_seg_offset). Keys and values are dequantized on the fly from the segment
 * bytes; no page is ever converted into a temporary. After the paged blocks come the worker's
 * private tail (the partial last page and KIVI's full-precision residual) in f32 or f16.
 *
 *   struct kv_attn_block bt[2] = {{arena + off0, 256}, {arena + off1, 100}};
 *   struct kv_attn_args a = {.layout = &lay, .layer = 3, .n_q_heads = 24, .n_q = 1,
 *                            .q = q, .out = out, .blocks = bt, .n_blocks = 2,
 *                            .tail_k = tk, .tail_v = tv, .tail_dtype = KV_ATTN_F32,
 *                            .n_tail = 7, .scores = sc};   // sc: n_kv_heads x 363 floats
 *   int rc = kv_attn_decode(&a);
 *
 * Context order: the tokens of blocks[0], blocks[1], ..., then the tail; token j of the context is
 * its j-th token in that order (n_ctx = sum of block counts + n_tail).
 *
 * GQA: query head h reads KV head h / (n_q_heads / n_kv_heads) (consecutive groups, as
 * llama's repeat_kv). n_q_heads must be a multiple of the layout's n_kv_heads.
 *
 * Causality (prefill): query i (0 <= i < n_q) sits at context position n_ctx - n_q + i and sees
 * tokens 0 .. n_ctx - n_q + i. Decode is the case n_q == 1 (the query sees everything).
 *
 * Scores (H2O): when `scores` is set, the call ADDS, for every KV head k and context token j, the
 * softmax probability that token j received, summed over the query heads of k's group and over the
 * n_q queries, to scores[k * n_ctx + j]. `scores_head` (optional) gets the same per query head:
 * scores_head[h * n_ctx + j]. The caller zeroes the buffers when it wants one step's mass; for
 * each query and head the added probabilities sum to 1 (within float rounding).
 *
 * Tiers: the specification kv_attn_ref (kv_quant's dequantizer, fp64 math); the portable tier
 * (each chunk of <= 64 tokens dequantized by kv_quant into an L1 scratch, float math); the AVX2 +
 * F16C + FMA tier (fused: segment bytes decoded in registers), picked at run time when the CPU
 * has it (KV_KERNELS_FORCE=ref selects the portable tier, as for kv_quant); CUDA (below). All
 * compute the same function; tests/attn and tests/gpu bound their differences.
 *
 * Thread-safety: the functions keep no state beyond a once-initialized dispatch choice; calls on
 * distinct outputs may run concurrently. Pages are only read.
 */
#ifndef KV_ATTN_H
#define KV_ATTN_H

#include <stddef.h>
#include <stdint.h>

#include "kv_format.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KV_ATTN_MAX_Q_HEADS 1024       /* n_q_heads limit */
#define KV_ATTN_MAX_CTX     (1u << 24) /* n_ctx limit (16M tokens) */
#define KV_ATTN_MAX_Q       65536      /* queries in one prefill call */

enum kv_attn_dtype {
    KV_ATTN_F32 = 0, /* float */
    KV_ATTN_F16 = 1, /* IEEE binary16 stored as uint16_t */
};

/* One logical block of the context: a page in the arena and its valid tokens. */
struct kv_attn_block {
    const uint8_t *page; /* page start; the segments of every layer follow kv_seg_offset */
    uint32_t n_tokens;   /* valid tokens, 1..page_tokens (fewer in compressed variants) */
};

struct kv_attn_args {
    const struct kv_layout *layout;     /* the namespace's page geometry and formats */
    unsigned layer;                     /* layer whose segments are read */
    unsigned n_q_heads;                 /* query heads; multiple of layout->n_kv_heads */
    unsigned n_q;                       /* queries (1 for decode) */
    const float *q;                     /* [n_q][n_q_heads][head_dim] */
    float *out;                         /* [n_q][n_q_heads][head_dim], written */
    const struct kv_attn_block *blocks; /* n_blocks entries (may be NULL when n_blocks == 0) */
    unsigned n_blocks;
    const void *tail_k;  /* [n_tail][n_kv_heads][head_dim] of tail_dtype; NULL if n_tail 0 */
    const void *tail_v;  /* same shape as tail_k */
    unsigned tail_dtype; /* enum kv_attn_dtype */
    unsigned n_tail;     /* private tokens after the blocks */
    float softmax_scale; /* logit scale; 0 means 1/sqrt(head_dim) */
    float *scores;       /* optional [n_kv_heads][n_ctx], accumulated (see above) */
    float *scores_head;  /* optional [n_q_heads][n_ctx], accumulated */
};

/* Total context length of the arguments (block counts + tail), or 0 if none. No validation. */
size_t kv_attn_ctx_len(const struct kv_attn_args *a);

/*
 * Checks the arguments: valid layout, layer in range, head counts, non-NULL q/out, block counts in
 * 1..page_tokens with non-NULL pages, tail present when n_tail > 0, n_q <= n_ctx, limits above.
 * Returns 0 or -EINVAL.
 */
int kv_attn_check(const struct kv_attn_args *a);

/*
 * Decode attention (a->n_q must be 1) with online softmax: no buffer proportional to the context
 * except when scores are requested (then n_q_heads/n_kv_heads * n_ctx floats of scratch).
 * An empty context (n_ctx == 0) writes zeros to out and adds nothing to scores.
 * Returns 0, -EINVAL (see kv_attn_check) or -ENOMEM (scratch for scores); on error out and scores
 * may be partly written.
 */
int kv_attn_decode(const struct kv_attn_args *a);

/*
 * Causal prefill attention for a->n_q queries (the last n_q positions of the context), blocked over
 * tiles of queries and tokens so that each K/V chunk is dequantized once per query tile.
 * Same returns as kv_attn_decode.
 */
int kv_attn_prefill(const struct kv_attn_args *a);

/*
 * The specification: dequantizes every segment through kv_quant's reference dequantizer and
 * computes attention in fp64 (two-pass softmax), writing fp64 outputs out64 [n_q][n_q_heads][d]
 * and, when non-NULL, fp64 per-head probabilities p64 [n_q][n_q_heads][n_ctx] (overwritten, not
 * accumulated). a->out and a->scores are ignored. Slow; for tests and benchmarks' checks.
 * Returns 0, -EINVAL or -ENOMEM.
 */
int kv_attn_ref(const struct kv_attn_args *a, double *out64, double *p64);

/* Tier selection, for tests and benchmarks. */
enum kv_attn_tier {
    KV_ATTN_TIER_AUTO = 0,   /* best the CPU supports (default) */
    KV_ATTN_TIER_SCALAR = 1, /* portable fused kernels */
    KV_ATTN_TIER_AVX2 = 2,   /* AVX2 + F16C + FMA */
};
/* Forces a tier for the calling process; -ENOTSUP if the CPU lacks it. Not thread-safe. */
int kv_attn_set_tier(enum kv_attn_tier t);
/* The tier calls use now (never KV_ATTN_TIER_AUTO). */
enum kv_attn_tier kv_attn_get_tier(void);

#ifdef KVD_HAVE_CUDA
/*
 * CUDA decode or causal prefill attention (kernels/attn.cu, library kvkernels_cuda), the same
 * function as kv_attn_decode/kv_attn_prefill (n_q == 1 is decode). Pointers inside *a (q, out,
 * every block's page, the tails, scores) are DEVICE memory; a itself and the blocks array are
 * host memory, read (the table is staged by cudaMemcpyAsync from pageable memory) before the call
 * returns. Scores are accumulated with atomicAdd. Queued on `stream` (a cudaStream_t; NULL is the
 * default stream): synchronize it before reading out/scores. Limits: n_q_heads / n_kv_heads <= 16
 * and head_dim <= 256. Returns 0, -EINVAL (kv_attn_check, limits), -ENOMEM (device scratch), or
 * -EIO when a launch fails.
 */
struct CUstream_st;
int kv_attn_cuda(const struct kv_attn_args *a, struct CUstream_st *stream);
#endif

#ifdef __cplusplus
}
#endif
#endif
