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
 * dequantized without touching the rest of the page. kernels/ owns the byte layout of a segment.
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
_Static_assert(sizeof(struct kv_layout) == 12, "kv_layout is a wire/disk struct");

/* Name of a format ("fp8_e4m3"), or NULL for an unknown id. */
const char *kv_fmt_name(int fmt);
/* Format id for a name, or -EINVAL. */
int kv_fmt_parse(const char *name);
/* Storage bits per element (excluding scales), or 0 for an unknown id. */
unsigned kv_fmt_bits(int fmt);

/* 0 if the layout is acceptable, else -EINVAL (unknown format, zero or over-limit dimension,
 * page_tokens not a multiple of the KIVI group, ...). */
int kv_layout_check(const struct kv_layout *l);

/* Bytes of one (layer, K or V, head) segment for the given format, including its scales and the
 * padding to KV_SEG_ALIGN; 0 for an invalid combination. */
size_t kv_seg_bytes(int fmt, const struct kv_layout *l);

/* Bytes of one page of this layout (multiple of KV_SEG_ALIGN); 0 if the layout is invalid. */
size_t kv_page_bytes(const struct kv_layout *l);

/* Offset of the segment (layer, kind 0=K 1=V, head) from the page start. Layout must be valid. */
size_t kv_seg_offset(const struct kv_layout *l, unsigned layer, unsigned kind, unsigned head);

#ifdef __cplusplus
}
#endif
#endif
