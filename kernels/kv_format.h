/*
 * kv_format.h - KV page formats and the page layout, defined once.
 *
 * Included by C, CUDA, the wire code (ipc/) and the spill code. A namespace's layout fixes the
 * geometry of every page in it; kv_page_bytes() is the only place that turns a layout into a size.
 *
 * Page layout (all offsets from the page start, every segment 64-byte aligned):
 *
 *   for layer in [0, n_layers):
 *       for kind in {K, V}:
 *           for head in [0, n_kv_heads):
 *               segment: page_tokens x head_dim elements in the kind's format, then its scales
 *
 * A segment is self-contained (its scales follow its data), so one (layer, K/V, head) slice can be
 * dequantized without touching the rest of the page. All multi-byte values are little-endian.
 *
 * Segment byte layout. T = page_tokens, D = head_dim (a multiple of 32), G = group. Data starts
 * at segment offset 0; scales start right after the data (offset S below, always 4-byte aligned);
 * the segment is zero-padded to KV_SEG_ALIGN.
 *
 *   F16, BF16   data  u16[T][D]   IEEE binary16 / bfloat16, round-to-nearest-even. No scales.
 *   FP8_E4M3,   data  u8[T][D]    OCP FP8 (E4M3FN: bias 7, max 448, no inf, NaN 0x7f/0xff;
 *   FP8_E5M2                      E5M2: bias 15, max 57344), code = cvt_rn_satfinite(y)
 *               S = T*D: f32 s[T] one scale per token (of this head). Dynamic mode:
 *                 s = amax_t / FP8_MAX (amax over the token's finite |x|), y = x * fl(1 / s)
 *                 (as vLLM's dynamic per-token quantizer; x / s if 1 / s overflows); static
 *                 per-tensor mode: every s[t] holds the caller's static scale, y = x / s (divide,
 *                 as vLLM's static quantizer). Decoding is always code_f32 * s[t], so a page is
 *                 self-describing whichever mode wrote it.
 *   INT8        data  i8[T][D]    q = clamp(rne(y), -127, 127), y as for FP8; x' = q * s
 *               S = T*D: f32 s[T]; s = amax_t / 127 (or the static scale).
 *   INT4        data  u32[T][D/8] channel c of a token in word c/8, bits 4*(c%8).. (low bits
 *                                 first; i.e. byte-wise: channel 2j low nibble of byte j)
 *               S = T*D/2: struct kv_sm16 [T][D/32]: per token and group of 32 channels,
 *                 asymmetric: q = clamp(rne((x - min) / scale), 0, 15); x' = q * scale + min.
 *   KIVI4,      data  u32[T][D*b/32] (b = 4 or 2 bits) channel c in word c/(32/b), bits
 *   KIVI2                         b*(c%(32/b)), low bits first; the same row-major token packing
 *                                 for K and V (a key row is contiguous for q.k).
 *               S = T*D*b/8: struct kv_sm16 records, asymmetric as INT4 with qmax = 2^b - 1:
 *                 K segment: [T/G][D]  per channel over each group of G tokens;
 *                 V segment: [T][D/G]  per token over each group of G channels.
 *               The meaning of the segment therefore depends on its kind (K or V).
 *
 * Scale dtypes, and why: FP8 and INT8 carry one f32 per token and head (4 B per D bytes, 3% at
 * D=128): f32 is what vLLM and FlashInfer use for FP8 scales, a static per-tensor scale is an f32
 * and must be stored unchanged to reproduce cvt(x / scale) exactly, and f32 never under- or
 * overflows for any finite amax. The 4- and 2-bit formats carry an f16 scale and an f16 min per
 * group (struct kv_sm16), as ggml and KIVI do: an f32 pair would add 50% instead of 25% to an
 * INT4 group. The f16 rounding is made harmless by rounding min down and scale up (so the grid
 * still covers [min, max]); its relative error (2^-11) is far below the 4-bit step (1/15). Inputs
 * of these formats are clamped to the f16 range +-65504 first.
 *
 * Special inputs (all formats): NaN inputs do not enter amax/min/max. FP8 encodes NaN as 0x7f
 * (NVIDIA's canonical NaN) and saturates +-inf and overflow to +-max; INT8/INT4/KIVI have no NaN:
 * NaN encodes as 0 (INT8) or code 0 (= the group min, INT4/KIVI) and +-inf saturates. An all-zero
 * token/group has scale 0 and decodes to exact zeros; a constant group decodes to its value
 * within the f16 rounding of min (4/2-bit) or exactly (FP8/INT8 when c / s is representable).
 *
 * Partial pages: a page may be quantized with ntok < T tokens (compressed variants). Tokens
 * [ntok, T) are written as zero bytes (data and per-token scales); they decode to 0, except in a
 * partially filled KIVI key group where they decode to that group's min. Readers take the token
 * count from the page's metadata and ignore the rest.
 */
#ifndef KV_FORMAT_H
#define KV_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, id, string, bits per element). ids are stored on disk and on the wire: never renumber. */
#define KV_FMT_MAP(X)                                                                              \
    X(F16, 1, "f16", 16)                                                                           \
    X(BF16, 2, "bf16", 16)                                                                         \
    X(FP8_E4M3, 3, "fp8_e4m3", 8)                                                                  \
    X(FP8_E5M2, 4, "fp8_e5m2", 8)                                                                  \
    X(INT8, 5, "int8", 8)                                                                          \
    X(INT4, 6, "int4", 4)                                                                          \
    X(KIVI4, 7, "kivi4", 4)                                                                        \
    X(KIVI2, 8, "kivi2", 2)

enum kv_fmt {
#define KV_FMT_ENUM(name, id, str, bits) KV_FMT_##name = id,
    KV_FMT_MAP(KV_FMT_ENUM)
#undef KV_FMT_ENUM
        KV_FMT_MAX_ID = 8
};

/* Limits a layout must respect (checked by kv_layout_check). */
#define KV_MAX_LAYERS      256
#define KV_MAX_KV_HEADS    128
#define KV_MAX_HEAD_DIM    512
#define KV_MAX_PAGE_TOKENS 1024
#define KV_SEG_ALIGN       64

/* A namespace's page geometry. Fixed size, no padding holes: it goes on the wire and to disk. */
struct kv_layout {
    uint16_t n_layers;    /* transformer layers in one page */
    uint16_t n_kv_heads;  /* KV heads per layer */
    uint16_t head_dim;    /* channels per head */
    uint16_t page_tokens; /* tokens in a full page */
    uint8_t k_fmt;        /* enum kv_fmt of keys */
    uint8_t v_fmt;        /* enum kv_fmt of values */
    uint16_t group;       /* KIVI group size G (tokens for K, channels for V); 0 when unused */
};
#ifdef __cplusplus
#define KV_STATIC_ASSERT static_assert
#else
#define KV_STATIC_ASSERT _Static_assert
#endif

KV_STATIC_ASSERT(sizeof(struct kv_layout) == 12, "kv_layout is a wire/disk struct");

/* FP8 largest finite magnitudes (the satfinite saturation points). */
#define KV_FP8_E4M3_MAX 448.0f
#define KV_FP8_E5M2_MAX 57344.0f
#define KV_F16_MAX      65504.0f

/* Segment kinds (the `kind` argument of kv_seg_offset and the quantizers). */
#define KV_KIND_K 0
#define KV_KIND_V 1

/* Block structs of the segment data: 32 channels of one token. */
struct kv_blk_q8 { /* FP8 E4M3/E5M2 codes or INT8 values */
    uint8_t q[32];
};
KV_STATIC_ASSERT(sizeof(struct kv_blk_q8) == 32, "segment block");
struct kv_blk_q4 { /* INT4/KIVI4: channel c in w[c / 8] bits 4 * (c % 8) */
    uint32_t w[4];
};
KV_STATIC_ASSERT(sizeof(struct kv_blk_q4) == 16, "segment block");
struct kv_blk_q2 { /* KIVI2: channel c in w[c / 16] bits 2 * (c % 16) */
    uint32_t w[2];
};
KV_STATIC_ASSERT(sizeof(struct kv_blk_q2) == 8, "segment block");
/* Asymmetric group parameters of INT4/KIVI: x' = q * scale + min, both IEEE binary16. */
struct kv_sm16 {
    uint16_t scale; /* f16, rounded up; 0 for a group whose values are all equal */
    uint16_t min;   /* f16, rounded down */
};
KV_STATIC_ASSERT(sizeof(struct kv_sm16) == 4, "segment scale record");

/* Name of a format ("fp8_e4m3"), or NULL for an unknown id. */
const char *kv_fmt_name(int fmt);
/* Format id for a name, or -EINVAL. */
int kv_fmt_parse(const char *name);
/* Storage bits per element (excluding scales), or 0 for an unknown id. */
unsigned kv_fmt_bits(int fmt);

/* 0 if the layout is acceptable, else -EINVAL (unknown format, zero or over-limit dimension,
 * head_dim not a multiple of 32, and with a KIVI format: group not a multiple of 8, page_tokens or
 * head_dim not a multiple of group). group is ignored when neither format is KIVI. */
int kv_layout_check(const struct kv_layout *l);

/* Bytes of one (layer, K or V, head) segment for the given format, including its scales and the
 * padding to KV_SEG_ALIGN; 0 for an invalid combination. */
size_t kv_seg_bytes(int fmt, const struct kv_layout *l);

/* Bytes of one page of this layout (multiple of KV_SEG_ALIGN); 0 if the layout is invalid. */
size_t kv_page_bytes(const struct kv_layout *l);

/* Offset of the segment (layer, kind 0=K 1=V, head) from the page start. Layout must be valid. */
size_t kv_seg_offset(const struct kv_layout *l, unsigned layer, unsigned kind, unsigned head);

/* Offset of the scales inside a segment of this format (= its data bytes); 0 for F16/BF16. */
size_t kv_seg_scale_offset(int fmt, const struct kv_layout *l);

#ifdef __cplusplus
}
#endif
#endif
