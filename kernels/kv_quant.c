/*
 * kv_quant.c - page and segment drivers, scale computation, tier dispatch.
 *
 * Invariants:
 *  1. Everything that depends on the layout (where a row, a scale, a group is) lives here; the
 *     tiers (kv_quant_ref.c, kv_quant_avx2.c) only see rows of <= KV_MAX_HEAD_DIM channels.
 *  2. Scales are computed here, in scalar code, once per token/group, so every tier quantizes with
 *     the very same scale bits.
 *  3. A quantizer writes every byte of its segment (data of tokens >= ntok, scales of absent
 *     tokens/groups and the padding are zero), so equal inputs give equal pages.
 *  4. The tier is resolved once (first call) and read with relaxed atomics afterwards.
 */
#include <errno.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <math.h>
#include <stdlib.h>

#include "kv_quant_impl.h"

static int g_tier = -1; /* enum kv_tier; -1 until resolved */

const char *kv_quant_tier_name(int tier)
{
    switch (tier) {
    case KV_TIER_REF:
        return "ref";
    case KV_TIER_AVX2:
        return "avx2";
    case KV_TIER_AVX512:
        return "avx512";
    default:
        return NULL;
    }
}

#if defined(__x86_64__)
/* F16C: CPUID.1:ECX bit 29 (clang 14's __builtin_cpu_supports does not know "f16c"; the AVX
 * state check of "avx2" covers the registers F16C uses). */
static int cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

static int tier_supported(int tier)
{
    switch (tier) {
    case KV_TIER_REF:
        return 1;
#if defined(__x86_64__)
    case KV_TIER_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
#endif
    case KV_TIER_AVX512:
#if defined(__x86_64__)
        __builtin_cpu_init();
        return tier_supported(KV_TIER_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq");
#else
        return 0;
#endif
    default:
        return 0;
    }
}

int kv_quant_best_tier(void)
{
    if (tier_supported(KV_TIER_AVX512))
        return KV_TIER_AVX512;
    if (tier_supported(KV_TIER_AVX2))
        return KV_TIER_AVX2;
    return KV_TIER_REF;
}

int kv_quant_tier(void)
{
    int t = __atomic_load_n(&g_tier, __ATOMIC_RELAXED);
    if (t >= 0)
        return t;
    t = kv_quant_best_tier();
    const char *env = getenv("KV_KERNELS_FORCE");
    if (env) {
        for (int i = KV_TIER_REF; i <= KV_TIER_AVX512; i++)
            if (strcmp(env, kv_quant_tier_name(i)) == 0 && tier_supported(i))
                t = i;
    }
    __atomic_store_n(&g_tier, t, __ATOMIC_RELAXED);
    return t;
}

int kv_quant_set_tier(int tier)
{
    if (!kv_quant_tier_name(tier) || !tier_supported(tier))
        return -ENOTSUP;
    __atomic_store_n(&g_tier, tier, __ATOMIC_RELAXED);
    return 0;
}

static const struct kvq_ops *ops(void)
{
    switch (kv_quant_tier()) {
#if defined(__x86_64__)
    case KV_TIER_AVX512:
        return &kvq_ops_avx512;
    case KV_TIER_AVX2:
        return &kvq_ops_avx2;
#endif
    default:
        return &kvq_ops_ref;
    }
}

/* ---- scale helpers -------------------------------------------------------------------------- */

static int fmt_per_token_scale(int fmt)
{
    return fmt == KV_FMT_FP8_E4M3 || fmt == KV_FMT_FP8_E5M2 || fmt == KV_FMT_INT8;
}

static float fmt_qmax(int fmt)
{
    switch (fmt) {
    case KV_FMT_FP8_E4M3:
        return KV_FP8_E4M3_MAX;
    case KV_FMT_FP8_E5M2:
        return KV_FP8_E5M2_MAX;
    case KV_FMT_INT8:
        return 127.0f;
    case KV_FMT_KIVI2:
        return 3.0f;
    default:
        return 15.0f;
    }
}

/* ---- segments ------------------------------------------------------------------------------- */

static size_t dtype_size(int dtype)
{
    return dtype == KV_DT_F32 ? 4 : (dtype == KV_DT_F16 || dtype == KV_DT_BF16) ? 2 : 0;
}

static int seg_fmt(const struct kv_layout *l, unsigned kind)
{
    return kind == KV_KIND_K ? l->k_fmt : l->v_fmt;
}

/* Row t of the source as f32: the source itself when it is f32, else converted into buf. Rows of
 * a worker's cache are usually a page (or more) apart, where the hardware prefetcher stops: fetch
 * row t + 2 ahead (prefetching past the last row only touches cache, never faults). */
static const float *src_row(const struct kvq_ops *o, float *buf, const void *src, int dtype,
                            ptrdiff_t ts, unsigned t, unsigned d)
{
    const char *p = (const char *)src + (ptrdiff_t)t * ts * (ptrdiff_t)dtype_size(dtype);
    uintptr_t ahead = (uintptr_t)p + (uintptr_t)(2 * ts * (ptrdiff_t)dtype_size(dtype));
    for (size_t b = 0; b < d * dtype_size(dtype); b += 64)
        __builtin_prefetch((const void *)(ahead + b));
    if (dtype == KV_DT_F32)
        return (const float *)p;
    o->load(buf, p, dtype, d);
    return buf;
}

static void quant_scaled(const struct kvq_ops *o, const struct kv_layout *l, int fmt, uint8_t *seg,
                         const void *src, int dtype, ptrdiff_t ts, unsigned ntok, float sscale)
{
    unsigned d = l->head_dim;
    float buf[KV_MAX_HEAD_DIM] __attribute__((aligned(64)));
    float *scales = (float *)(seg + kv_seg_scale_offset(fmt, l));

    for (unsigned t = 0; t < ntok; t++) {
        const float *x = src_row(o, buf, src, dtype, ts, t, d);
        uint8_t *q = seg + (size_t)t * d;
        float f;
        int mul;
        float s =
            kvq_token_scale(sscale > 0.0f ? 0.0f : o->amax(x, d), fmt_qmax(fmt), sscale, &f, &mul);
        scales[t] = s;
        if (s > 0.0f && fmt == KV_FMT_INT8) {
            o->i8_enc((int8_t *)q, x, d, f, mul);
        } else if (s > 0.0f) {
            o->fp8_enc(q, x, d, f, mul, fmt);
        } else { /* scale 0: every finite value is 0 (or too small to scale): code 0 */
            for (unsigned i = 0; i < d; i++)
                q[i] = (fmt != KV_FMT_INT8 && isnan(x[i])) ? 0x7f : 0;
        }
    }
    memset(seg + (size_t)ntok * d, 0, (size_t)(l->page_tokens - ntok) * d);
    memset(scales + ntok, 0, (l->page_tokens - ntok) * sizeof(float));
}

static void quant_asym_rows(const struct kvq_ops *o, const struct kv_layout *l, int fmt,
                            uint8_t *seg, const void *src, int dtype, ptrdiff_t ts, unsigned ntok,
                            unsigned gsz)
{
    unsigned d = l->head_dim, bits = kv_fmt_bits(fmt), ng = d / gsz;
    size_t row_words = d * bits / 32;
    float buf[KV_MAX_HEAD_DIM] __attribute__((aligned(64)));
    float s[KV_MAX_HEAD_DIM / 8], m[KV_MAX_HEAD_DIM / 8];
    uint32_t *w = (uint32_t *)seg;
    struct kv_sm16 *sm = (struct kv_sm16 *)(seg + kv_seg_scale_offset(fmt, l));

    for (unsigned t = 0; t < ntok; t++) {
        const float *x = src_row(o, buf, src, dtype, ts, t, d);
        float mn[KV_MAX_HEAD_DIM / 8], mx[KV_MAX_HEAD_DIM / 8];
        for (unsigned g = 0; g < ng; g++) {
            mn[g] = INFINITY, mx[g] = -INFINITY;
            o->minmax(&mn[g], &mx[g], x + g * gsz, gsz, 1);
        }
        o->a_params(sm + (size_t)t * ng, s, m, mn, mx, ng, fmt_qmax(fmt));
        o->a_enc(w + t * row_words, x, d, gsz, s, m, bits);
    }
    memset(w + ntok * row_words, 0, (l->page_tokens - ntok) * row_words * 4);
    memset(sm + (size_t)ntok * ng, 0, (size_t)(l->page_tokens - ntok) * ng * sizeof(*sm));
}

static void quant_kivi_k(const struct kvq_ops *o, const struct kv_layout *l, int fmt, uint8_t *seg,
                         const void *src, int dtype, ptrdiff_t ts, unsigned ntok)
{
    unsigned d = l->head_dim, bits = kv_fmt_bits(fmt), G = l->group;
    size_t row_words = d * bits / 32;
    float buf[KV_MAX_HEAD_DIM] __attribute__((aligned(64)));
    float mn[KV_MAX_HEAD_DIM], mx[KV_MAX_HEAD_DIM], s[KV_MAX_HEAD_DIM], m[KV_MAX_HEAD_DIM];
    uint32_t *w = (uint32_t *)seg;
    struct kv_sm16 *sm = (struct kv_sm16 *)(seg + kv_seg_scale_offset(fmt, l));

    for (unsigned t0 = 0; t0 < l->page_tokens; t0 += G) {
        unsigned t1 = t0 + G < ntok ? t0 + G : ntok;
        for (unsigned c = 0; c < d; c++)
            mn[c] = INFINITY, mx[c] = -INFINITY;
        for (unsigned t = t0; t < t1; t++)
            o->minmax(mn, mx, src_row(o, buf, src, dtype, ts, t, d), d, d);
        o->a_params(sm + (size_t)(t0 / G) * d, s, m, mn, mx, d, fmt_qmax(fmt));
        for (unsigned t = t0; t < t1; t++)
            o->a_enc(w + t * row_words, src_row(o, buf, src, dtype, ts, t, d), d, 1, s, m, bits);
        for (unsigned t = t1 > t0 ? t1 : t0; t < t0 + G; t++)
            memset(w + t * row_words, 0, row_words * 4);
    }
}

static int check_scale(int fmt, float sscale)
{
    if (sscale == 0.0f)
        return 0;
    if (!(sscale > 0.0f) || isinf(sscale) || !fmt_per_token_scale(fmt))
        return -EINVAL;
    return 0;
}

static int seg_quant(const struct kvq_ops *o, const struct kv_layout *l, unsigned kind, void *segp,
                     const void *src, int dtype, ptrdiff_t ts, unsigned ntok, float sscale)
{
    int fmt = seg_fmt(l, kind);
    uint8_t *seg = segp;
    size_t used;

    switch (fmt) {
    case KV_FMT_F16:
    case KV_FMT_BF16: {
        float buf[KV_MAX_HEAD_DIM] __attribute__((aligned(64)));
        uint16_t *h = (uint16_t *)seg;
        for (unsigned t = 0; t < ntok; t++)
            o->h_enc(h + (size_t)t * l->head_dim, src_row(o, buf, src, dtype, ts, t, l->head_dim),
                     l->head_dim, fmt == KV_FMT_BF16);
        memset(h + (size_t)ntok * l->head_dim, 0,
               (size_t)(l->page_tokens - ntok) * l->head_dim * 2);
        used = (size_t)l->page_tokens * l->head_dim * 2;
        break;
    }
    case KV_FMT_FP8_E4M3:
    case KV_FMT_FP8_E5M2:
    case KV_FMT_INT8:
        quant_scaled(o, l, fmt, seg, src, dtype, ts, ntok, sscale);
        used = (size_t)l->page_tokens * (l->head_dim + sizeof(float));
        break;
    case KV_FMT_INT4:
        quant_asym_rows(o, l, fmt, seg, src, dtype, ts, ntok, 32);
        used = kv_seg_scale_offset(fmt, l) + (size_t)l->page_tokens * l->head_dim / 32 * 4;
        break;
    default: /* KIVI */
        if (kind == KV_KIND_K)
            quant_kivi_k(o, l, fmt, seg, src, dtype, ts, ntok);
        else
            quant_asym_rows(o, l, fmt, seg, src, dtype, ts, ntok, l->group);
        used = kv_seg_scale_offset(fmt, l) + (size_t)l->page_tokens * l->head_dim / l->group * 4;
        break;
    }
    memset(seg + used, 0, kv_seg_bytes(fmt, l) - used);
    return 0;
}

static void seg_dequant(const struct kvq_ops *o, const struct kv_layout *l, unsigned kind,
                        const uint8_t *seg, unsigned tok0, unsigned ntok, float *out, ptrdiff_t ts)
{
    int fmt = seg_fmt(l, kind);
    unsigned d = l->head_dim, bits = kv_fmt_bits(fmt);
    const float *scales = (const float *)(seg + kv_seg_scale_offset(fmt, l));
    const struct kv_sm16 *sm = (const struct kv_sm16 *)scales;
    float s[KV_MAX_HEAD_DIM], m[KV_MAX_HEAD_DIM];
    size_t row_words = d * bits / 32;
    unsigned gsz = fmt == KV_FMT_INT4 ? 32 : l->group, cur_group = ~0u;

    for (unsigned t = tok0; t < tok0 + ntok; t++) {
        float *y = out + (ptrdiff_t)(t - tok0) * ts;
        switch (fmt) {
        case KV_FMT_F16:
        case KV_FMT_BF16:
            o->load(y, seg + (size_t)t * d * 2, fmt == KV_FMT_F16 ? KV_DT_F16 : KV_DT_BF16, d);
            break;
        case KV_FMT_FP8_E4M3:
        case KV_FMT_FP8_E5M2:
            o->fp8_dec(y, seg + (size_t)t * d, d, scales[t], fmt);
            break;
        case KV_FMT_INT8:
            o->i8_dec(y, (const int8_t *)seg + (size_t)t * d, d, scales[t]);
            break;
        default:
            if (kind == KV_KIND_K && fmt != KV_FMT_INT4) { /* KIVI keys: per channel */
                if (t / gsz != cur_group) {
                    cur_group = t / gsz;
                    for (unsigned c = 0; c < d; c++) {
                        s[c] = kv_f16_to_f32(sm[(size_t)cur_group * d + c].scale);
                        m[c] = kv_f16_to_f32(sm[(size_t)cur_group * d + c].min);
                    }
                }
                o->a_dec(y, (const uint32_t *)seg + t * row_words, d, 1, s, m, bits);
            } else {
                unsigned ng = d / gsz;
                for (unsigned g = 0; g < ng; g++) {
                    s[g] = kv_f16_to_f32(sm[(size_t)t * ng + g].scale);
                    m[g] = kv_f16_to_f32(sm[(size_t)t * ng + g].min);
                }
                o->a_dec(y, (const uint32_t *)seg + t * row_words, d, gsz, s, m, bits);
            }
        }
    }
}

int kv_quant_seg(const struct kv_layout *l, unsigned kind, void *seg, const void *src, int dtype,
                 ptrdiff_t tok_stride, unsigned ntok, float static_scale)
{
    if (kv_layout_check(l) != 0 || kind > KV_KIND_V || !seg || !src || !dtype_size(dtype) ||
        ntok == 0 || ntok > l->page_tokens || check_scale(seg_fmt(l, kind), static_scale) != 0)
        return -EINVAL;
    return seg_quant(ops(), l, kind, seg, src, dtype, tok_stride, ntok, static_scale);
}

int kv_dequant_seg(const struct kv_layout *l, unsigned kind, const void *seg, unsigned tok0,
                   unsigned ntok, float *out, ptrdiff_t tok_stride)
{
    if (kv_layout_check(l) != 0 || kind > KV_KIND_V || !seg || !out || ntok == 0 ||
        tok0 >= l->page_tokens || ntok > l->page_tokens - tok0)
        return -EINVAL;
    seg_dequant(ops(), l, kind, seg, tok0, ntok, out, tok_stride);
    return 0;
}

/* ---- pages ---------------------------------------------------------------------------------- */

static int src_ok(const struct kv_src *s, int fmt)
{
    return s && s->base && dtype_size(s->dtype) && check_scale(fmt, s->static_scale) == 0;
}

int kv_quant_page(const struct kv_layout *l, void *page, const struct kv_src *k,
                  const struct kv_src *v, unsigned ntok)
{
    if (kv_layout_check(l) != 0 || !page || ntok == 0 || ntok > l->page_tokens ||
        !src_ok(k, l->k_fmt) || !src_ok(v, l->v_fmt))
        return -EINVAL;
    const struct kvq_ops *o = ops();
    for (unsigned layer = 0; layer < l->n_layers; layer++)
        for (unsigned kind = 0; kind < 2; kind++)
            for (unsigned h = 0; h < l->n_kv_heads; h++) {
                const struct kv_src *s = kind == KV_KIND_K ? k : v;
                ptrdiff_t off = (ptrdiff_t)layer * s->layer_stride + (ptrdiff_t)h * s->head_stride;
                const char *row0 = (const char *)s->base + off * (ptrdiff_t)dtype_size(s->dtype);
                seg_quant(o, l, kind, (char *)page + kv_seg_offset(l, layer, kind, h), row0,
                          s->dtype, s->tok_stride, ntok, s->static_scale);
            }
    return 0;
}

int kv_dequant_page(const struct kv_layout *l, const void *page, unsigned tok0, unsigned ntok,
                    const struct kv_dst *k, const struct kv_dst *v)
{
    if (kv_layout_check(l) != 0 || !page || ntok == 0 || tok0 >= l->page_tokens ||
        ntok > l->page_tokens - tok0 || (k && !k->base) || (v && !v->base))
        return -EINVAL;
    const struct kvq_ops *o = ops();
    for (unsigned layer = 0; layer < l->n_layers; layer++)
        for (unsigned kind = 0; kind < 2; kind++)
            for (unsigned h = 0; h < l->n_kv_heads; h++) {
                const struct kv_dst *dst = kind == KV_KIND_K ? k : v;
                if (!dst)
                    continue;
                float *y = dst->base + (ptrdiff_t)layer * dst->layer_stride +
                           (ptrdiff_t)h * dst->head_stride;
                seg_dequant(o, l, kind, (const uint8_t *)page + kv_seg_offset(l, layer, kind, h),
                            tok0, ntok, y, dst->tok_stride);
            }
    return 0;
}

int kv_convert_page(const struct kv_layout *src_l, const void *src, const struct kv_layout *dst_l,
                    void *dst)
{
    if (kv_layout_check(src_l) != 0 || kv_layout_check(dst_l) != 0 || !src || !dst ||
        src_l->n_layers != dst_l->n_layers || src_l->n_kv_heads != dst_l->n_kv_heads ||
        src_l->head_dim != dst_l->head_dim || src_l->page_tokens != dst_l->page_tokens)
        return -EINVAL;
    const struct kvq_ops *o = ops();
    unsigned T = src_l->page_tokens, d = src_l->head_dim;
    float *tmp = malloc((size_t)T * d * sizeof(float));
    if (!tmp)
        return -ENOMEM;
    for (unsigned layer = 0; layer < src_l->n_layers; layer++)
        for (unsigned kind = 0; kind < 2; kind++)
            for (unsigned h = 0; h < src_l->n_kv_heads; h++) {
                int sf = seg_fmt(src_l, kind), df = seg_fmt(dst_l, kind);
                const uint8_t *s = (const uint8_t *)src + kv_seg_offset(src_l, layer, kind, h);
                uint8_t *dd = (uint8_t *)dst + kv_seg_offset(dst_l, layer, kind, h);
                int kivi = sf == KV_FMT_KIVI4 || sf == KV_FMT_KIVI2;
                if (sf == df && (!kivi || src_l->group == dst_l->group)) {
                    memcpy(dd, s, kv_seg_bytes(sf, src_l));
                    continue;
                }
                seg_dequant(o, src_l, kind, s, 0, T, tmp, d);
                seg_quant(o, dst_l, kind, dd, tmp, KV_DT_F32, d, T, 0.0f);
            }
    free(tmp);
    return 0;
}
