/*
 * kv_quant.h - quantize and dequantize KV pages (formats: kv_format.h).
 *
 * Usage (a worker writing one page it allocated, K and V of shape [layer][token][head][dim] f16):
 *
 *     struct kv_src k = {.base = kcache, .dtype = KV_DT_F16,
 *                        .layer_stride = T * H * D, .tok_stride = H * D, .head_stride = D};
 *     struct kv_src v = k; v.base = vcache;
 *     int rc = kv_quant_page(&layout, page, &k, &v, ntok);   // 0 or -EINVAL
 *     ...
 *     struct kv_dst kd = {.base = kout, .layer_stride = ..., .tok_stride = ..., .head_stride = D};
 *     rc = kv_dequant_page(&layout, page, 0, ntok, &kd, &vd);
 *
 * Every function is thread-safe (no shared mutable state after the first call picks the tier),
 * uses only bounded stack buffers (kv_convert_page also mallocs one segment of f32), returns 0 or
 * a negative errno, never prints and never touches errno. The caller owns every buffer. On error
 * nothing has been written, except where noted (a failing argument check happens before any write).
 *
 * Rows: channels of one (layer, token, head) are contiguous; layers, tokens and heads are at
 * arbitrary strides in ELEMENTS (of the source dtype, or floats for kv_dst), which may be
 * negative or zero (broadcast) for sources.
 *
 * Tiers: a scalar reference (the specification), AVX2+F16C+FMA, and AVX-512 where the CPU has it,
 * chosen at the first call from the CPU features. The environment variable KV_KERNELS_FORCE=ref|
 * avx2|avx512, read at the first call (ignored for a tier this CPU lacks), or kv_quant_set_tier()
 * forces one. All tiers produce
 * identical bytes when quantizing and identical floats when dequantizing (NaN payloads aside):
 * every tier performs the same IEEE operations in the same order (see kv_quant_ref.c).
 */
#ifndef KV_QUANT_H
#define KV_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "kv_format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of a worker's own cache. */
enum kv_dtype {
    KV_DT_F32 = 0,
    KV_DT_F16 = 1,
    KV_DT_BF16 = 2,
};

/* Where a worker's K or V for one page lives. Element (layer, tok, head, c) is at
 * base + layer*layer_stride + tok*tok_stride + head*head_stride + c (in elements). */
struct kv_src {
    const void *base;
    int dtype;              /* enum kv_dtype */
    ptrdiff_t layer_stride; /* elements */
    ptrdiff_t tok_stride;   /* elements */
    ptrdiff_t head_stride;  /* elements */
    float static_scale;     /* 0: dynamic per-token scale; > 0: static per-tensor scale
                               (FP8 E4M3/E5M2 and INT8 only; stored in every scale slot) */
};

/* Where dequantized f32 rows go; same addressing as kv_src, in floats. */
struct kv_dst {
    float *base;
    ptrdiff_t layer_stride;
    ptrdiff_t tok_stride;
    ptrdiff_t head_stride;
};

/* Quantize tokens [0, ntok) of every layer and head of K and V into `page` (kv_page_bytes(l)
 * bytes), writing the whole page: tokens [ntok, page_tokens) and padding become zero bytes.
 * 1 <= ntok <= page_tokens. -EINVAL: invalid layout, ntok, dtype, NULL pointer, static_scale
 * negative/non-finite or given for a format without per-token scales. */
int kv_quant_page(const struct kv_layout *l, void *page, const struct kv_src *k,
                  const struct kv_src *v, unsigned ntok);

/* Dequantize tokens [tok0, tok0 + ntok) of every layer and head to f32. k or v may be NULL to skip
 * that kind. -EINVAL: invalid layout or range (tok0 + ntok > page_tokens, ntok == 0). */
int kv_dequant_page(const struct kv_layout *l, const void *page, unsigned tok0, unsigned ntok,
                    const struct kv_dst *k, const struct kv_dst *v);

/* One segment (layer, kind, head): the format is l->k_fmt or l->v_fmt by kind (KV_KIND_K/V).
 * src rows: token t at src + t * tok_stride elements of dtype. Writes the whole segment
 * (kv_seg_bytes bytes). Same errors as kv_quant_page. */
int kv_quant_seg(const struct kv_layout *l, unsigned kind, void *seg, const void *src, int dtype,
                 ptrdiff_t tok_stride, unsigned ntok, float static_scale);

/* Tokens [tok0, tok0 + ntok) of one segment to f32: token tok0 + i at out + i * tok_stride. */
int kv_dequant_seg(const struct kv_layout *l, unsigned kind, const void *seg, unsigned tok0,
                   unsigned ntok, float *out, ptrdiff_t tok_stride);

/* Convert a whole page to another format: src_l and dst_l must have the same n_layers,
 * n_kv_heads, head_dim and page_tokens (formats and group may differ). Equal formats copy the
 * bytes; otherwise every token is dequantized to f32 and requantized with dynamic scales (a
 * static scale is not kept). The spill tier uses dst k_fmt = v_fmt = FP8_E4M3. src and dst must
 * not overlap. -EINVAL on a geometry mismatch or an invalid layout; -ENOMEM if the page_tokens x
 * head_dim f32 scratch cannot be allocated (nothing written then). */
int kv_convert_page(const struct kv_layout *src_l, const void *src, const struct kv_layout *dst_l,
                    void *dst);

/* Tiers. */
enum kv_tier {
    KV_TIER_REF = 0,
    KV_TIER_AVX2 = 1,
    KV_TIER_AVX512 = 2,
};
/* Tier in use (resolved on first use). */
int kv_quant_tier(void);
/* Force a tier; -ENOTSUP if this CPU or build lacks it (nothing changes then). Not thread-safe
 * against concurrent quantization calls: call at start-up or in tests. */
int kv_quant_set_tier(int tier);
/* Best tier this CPU supports. */
int kv_quant_best_tier(void);
/* "ref", "avx2", "avx512"; NULL for an unknown tier. */
const char *kv_quant_tier_name(int tier);

/* Scalar conversions (the reference; bit-exact with NVIDIA cuda_fp8.h __nv_cvt_float_to_fp8(x,
 * __NV_SATFINITE, ...) and __nv_cvt_fp8_to_halfraw -> float: RNE, saturation to +-max, NaN ->
 * 0x7f; decoding a NaN code gives the canonical f32 NaN 0x7fffe000). */
uint8_t kv_fp8_e4m3_from_f32(float x);
float kv_fp8_e4m3_to_f32(uint8_t c);
uint8_t kv_fp8_e5m2_from_f32(float x);
float kv_fp8_e5m2_to_f32(uint8_t c);
/* IEEE binary16 and bfloat16, round-to-nearest-even; NaN stays NaN (quiet bit set, sign and high
 * payload bits kept, as the F16C instruction does); overflow gives inf. */
uint16_t kv_f16_from_f32(float x);
float kv_f16_to_f32(uint16_t h);
uint16_t kv_bf16_from_f32(float x);
float kv_bf16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif
