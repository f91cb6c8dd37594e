/* kv_format.c - format table and page geometry. See kv_format.h for the page layout. */
#include "kv_format.h"

#include <errno.h>
#include <string.h>

struct fmt_info {
    const char *name;
    unsigned bits;
};

static const struct fmt_info fmt_table[KV_FMT_MAX_ID + 1] = {
#define KV_FMT_INFO(name, id, str, bits) [id] = {str, bits},
    KV_FMT_MAP(KV_FMT_INFO)
#undef KV_FMT_INFO
};

const char *kv_fmt_name(int fmt)
{
    if (fmt <= 0 || fmt > KV_FMT_MAX_ID)
        return NULL;
    return fmt_table[fmt].name;
}

int kv_fmt_parse(const char *name)
{
    for (int i = 1; i <= KV_FMT_MAX_ID; i++)
        if (fmt_table[i].name && strcmp(fmt_table[i].name, name) == 0)
            return i;
    return -EINVAL;
}

unsigned kv_fmt_bits(int fmt)
{
    return kv_fmt_name(fmt) ? fmt_table[fmt].bits : 0;
}

static int fmt_is_kivi(int fmt)
{
    return fmt == KV_FMT_KIVI4 || fmt == KV_FMT_KIVI2;
}

int kv_layout_check(const struct kv_layout *l)
{
    if (!l || !kv_fmt_name(l->k_fmt) || !kv_fmt_name(l->v_fmt))
        return -EINVAL;
    if (l->n_layers == 0 || l->n_layers > KV_MAX_LAYERS || l->n_kv_heads == 0 ||
        l->n_kv_heads > KV_MAX_KV_HEADS || l->head_dim == 0 || l->head_dim > KV_MAX_HEAD_DIM ||
        l->page_tokens == 0 || l->page_tokens > KV_MAX_PAGE_TOKENS)
        return -EINVAL;
    if (l->head_dim % 32 != 0) /* INT4 groups and packed words need whole groups of 32 */
        return -EINVAL;
    if (fmt_is_kivi(l->k_fmt) || fmt_is_kivi(l->v_fmt)) {
        if (l->group == 0 || l->group % 8 != 0 || l->page_tokens % l->group != 0 ||
            l->head_dim % l->group != 0)
            return -EINVAL;
    }
    return 0;
}

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

size_t kv_seg_bytes(int fmt, const struct kv_layout *l)
{
    size_t t = l->page_tokens, d = l->head_dim, data, scales;

    switch (fmt) {
    case KV_FMT_F16:
    case KV_FMT_BF16:
        data = t * d * 2;
        scales = 0;
        break;
    case KV_FMT_FP8_E4M3:
    case KV_FMT_FP8_E5M2:
    case KV_FMT_INT8:
        data = t * d;
        scales = t * sizeof(float); /* one f32 scale per token (and head) */
        break;
    case KV_FMT_INT4:
        data = t * d / 2;
        scales = t * (d / 32) * 2 * sizeof(uint16_t); /* f16 scale + f16 min per group of 32 */
        break;
    case KV_FMT_KIVI4:
    case KV_FMT_KIVI2: {
        unsigned bits = kv_fmt_bits(fmt);
        if (!l->group)
            return 0;
        data = t * d * bits / 8;
        /* worst case of K (per channel over G tokens) and V (per token over G channels): both
         * t*d/G groups, each an f16 scale and an f16 min. */
        scales = t * d / l->group * 2 * sizeof(uint16_t);
        break;
    }
    default:
        return 0;
    }
    return align_up(data + scales, KV_SEG_ALIGN);
}

size_t kv_seg_scale_offset(int fmt, const struct kv_layout *l)
{
    unsigned bits = kv_fmt_bits(fmt);
    if (fmt == KV_FMT_F16 || fmt == KV_FMT_BF16)
        return 0;
    return (size_t)l->page_tokens * l->head_dim * bits / 8;
}

size_t kv_page_bytes(const struct kv_layout *l)
{
    if (kv_layout_check(l) != 0)
        return 0;
    size_t per_layer =
        (size_t)l->n_kv_heads * (kv_seg_bytes(l->k_fmt, l) + kv_seg_bytes(l->v_fmt, l));
    return per_layer * l->n_layers;
}

size_t kv_seg_offset(const struct kv_layout *l, unsigned layer, unsigned kind, unsigned head)
{
    size_t ks = kv_seg_bytes(l->k_fmt, l), vs = kv_seg_bytes(l->v_fmt, l);
    size_t off = (size_t)layer * l->n_kv_heads * (ks + vs);
    if (kind == 0)
        return off + (size_t)head * ks;
    return off + (size_t)l->n_kv_heads * ks + (size_t)head * vs;
}
