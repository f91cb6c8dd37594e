/* attn_th.c - test harness for kernels/attn; the bounds are derived in attn_th.h. */
#include "attn_th.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv_quant.h"

#define U (1.0 / 16777216.0) /* 2^-24, float unit roundoff */

static double gamma_n(double n)
{
    return n * U / (1.0 - n * U);
}

static uint32_t rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static float urand(uint32_t *s) /* [-1, 1) */
{
    return (float)((rnd(s) >> 8) * (2.0 / 16777216.0) - 1.0);
}

static int fmt_asym(int fmt)
{
    return fmt == KV_FMT_INT4 || fmt == KV_FMT_KIVI4 || fmt == KV_FMT_KIVI2;
}

static size_t idx(const struct th_case *c, size_t pos, unsigned h, unsigned ch)
{
    return (pos * c->cfg.nkv + h) * c->cfg.d + ch;
}

static double th_elem_err(const struct th_case *c, const float *x, size_t pos, unsigned kvh,
                          unsigned ch, unsigned kind);

void th_build(struct th_case *c, const struct th_cfg *cfg)
{
    memset(c, 0, sizeof(*c));
    c->cfg = *cfg;
    struct kv_layout *l = &c->l;
    l->n_layers = (uint16_t)cfg->n_layers;
    l->n_kv_heads = (uint16_t)cfg->nkv;
    l->head_dim = (uint16_t)cfg->d;
    l->page_tokens = (uint16_t)cfg->T;
    l->k_fmt = (uint8_t)cfg->kf;
    l->v_fmt = (uint8_t)cfg->vf;
    l->group = (uint16_t)cfg->group;
    cr_assert_eq(kv_layout_check(l), 0, "layout");
    cr_assert(cfg->nblk <= TH_MAX_BLOCKS);

    unsigned nkv = cfg->nkv, d = cfg->d, T = cfg->T, nqh = nkv * cfg->g;
    size_t pb = kv_page_bytes(l), rowf = (size_t)nkv * d;
    for (unsigned b = 0; b < cfg->nblk; b++) {
        c->bt[b].n_tokens = cfg->blk_tokens[b] ? cfg->blk_tokens[b] : T;
        c->n_ctx += c->bt[b].n_tokens;
    }
    c->n_ctx += cfg->n_tail;
    size_t nc = c->n_ctx ? c->n_ctx : 1;
    c->pages = aligned_alloc(64, cfg->nblk ? cfg->nblk * pb : 64);
    c->kx = calloc(nc * rowf, sizeof(float));
    c->vx = calloc(nc * rowf, sizeof(float));
    c->kd = calloc(nc * rowf, sizeof(float));
    c->vd = calloc(nc * rowf, sizeof(float));
    c->q = calloc((size_t)cfg->n_q * nqh * d, sizeof(float));
    c->blk_of = calloc(nc, sizeof(unsigned));
    c->tok_of = calloc(nc, sizeof(unsigned));
    size_t esz = cfg->tail_f16 ? 2 : 4;
    c->tk = calloc(cfg->n_tail ? cfg->n_tail * rowf : 1, esz);
    c->tv = calloc(cfg->n_tail ? cfg->n_tail * rowf : 1, esz);
    cr_assert(c->pages && c->kx && c->vx && c->kd && c->vd && c->q && c->tk && c->tv);

    uint32_t s = cfg->seed ? cfg->seed : 0x9e3779b9u;
    float bias[KV_MAX_HEAD_DIM];
    for (unsigned ch = 0; ch < d; ch++) /* a few outlier key channels, as in real models */
        bias[ch] = ch % 7 == 0 ? 3.0f * urand(&s) : 0.0f;

    size_t pos = 0;
    float *ks = malloc((size_t)cfg->n_layers * T * rowf * sizeof(float));
    float *vs = malloc((size_t)cfg->n_layers * T * rowf * sizeof(float));
    cr_assert(ks && vs);
    for (unsigned b = 0; b < cfg->nblk; b++) {
        unsigned nt = c->bt[b].n_tokens;
        uint8_t *page = c->pages + b * pb;
        float amp = b == 0 && cfg->v_amp0 != 0.0f ? cfg->v_amp0 : 1.0f;
        float kamp = cfg->k_amp != 0.0f ? cfg->k_amp : 1.0f;
        for (size_t i = 0; i < (size_t)cfg->n_layers * T * rowf; i++) {
            ks[i] = kamp * (urand(&s) + bias[i % d]);
            int on = !cfg->v_amp_kvh || (i / d) % cfg->nkv == cfg->v_amp_kvh - 1;
            vs[i] = (on ? amp : 1.0f) * urand(&s);
        }
        struct kv_src ksrc = {.base = ks,
                              .dtype = KV_DT_F32,
                              .layer_stride = (ptrdiff_t)(T * rowf),
                              .tok_stride = (ptrdiff_t)rowf,
                              .head_stride = d};
        struct kv_src vsrc = ksrc;
        vsrc.base = vs;
        cr_assert_eq(kv_quant_page(l, page, &ksrc, &vsrc, nt), 0, "kv_quant_page");
        c->bt[b].page = page;
        const float *kl = ks + (size_t)cfg->layer * T * rowf,
                    *vl = vs + (size_t)cfg->layer * T * rowf;
        memcpy(c->kx + pos * rowf, kl, nt * rowf * sizeof(float));
        memcpy(c->vx + pos * rowf, vl, nt * rowf * sizeof(float));
        for (unsigned h = 0; h < nkv; h++) {
            cr_assert_eq(kv_dequant_seg(l, KV_KIND_K, page + kv_seg_offset(l, cfg->layer, 0, h), 0,
                                        nt, c->kd + idx(c, pos, h, 0), (ptrdiff_t)rowf),
                         0);
            cr_assert_eq(kv_dequant_seg(l, KV_KIND_V, page + kv_seg_offset(l, cfg->layer, 1, h), 0,
                                        nt, c->vd + idx(c, pos, h, 0), (ptrdiff_t)rowf),
                         0);
        }
        for (unsigned t = 0; t < nt; t++) {
            c->blk_of[pos + t] = b;
            c->tok_of[pos + t] = t;
        }
        pos += nt;
    }
    for (unsigned t = 0; t < cfg->n_tail; t++, pos++) {
        c->blk_of[pos] = cfg->nblk;
        c->tok_of[pos] = t;
        for (size_t i = 0; i < rowf; i++) {
            float kv = urand(&s) + bias[i % d], vv = urand(&s);
            if (cfg->tail_f16) {
                ((uint16_t *)c->tk)[t * rowf + i] = kv_f16_from_f32(kv);
                ((uint16_t *)c->tv)[t * rowf + i] = kv_f16_from_f32(vv);
                kv = kv_f16_to_f32(kv_f16_from_f32(kv));
                vv = kv_f16_to_f32(kv_f16_from_f32(vv));
            } else {
                ((float *)c->tk)[t * rowf + i] = kv;
                ((float *)c->tv)[t * rowf + i] = vv;
            }
            c->kx[pos * rowf + i] = c->kd[pos * rowf + i] = kv;
            c->vx[pos * rowf + i] = c->vd[pos * rowf + i] = vv;
        }
    }
    free(ks);
    free(vs);
    for (size_t i = 0; i < (size_t)cfg->n_q * nqh * d; i++)
        c->q[i] = 2.0f * urand(&s);

    struct kv_attn_args *a = &c->a;
    a->layout = l;
    a->layer = cfg->layer;
    a->n_q_heads = nqh;
    a->n_q = cfg->n_q;
    a->q = c->q;
    a->blocks = cfg->nblk ? c->bt : NULL;
    a->n_blocks = cfg->nblk;
    a->tail_k = cfg->n_tail ? c->tk : NULL;
    a->tail_v = cfg->n_tail ? c->tv : NULL;
    a->tail_dtype = cfg->tail_f16 ? KV_ATTN_F16 : KV_ATTN_F32;
    a->n_tail = cfg->n_tail;

    c->ek = malloc(nc * rowf * sizeof(double));
    c->ev = malloc(nc * rowf * sizeof(double));
    cr_assert(c->ek && c->ev);
    for (size_t p = 0; p < c->n_ctx; p++)
        for (unsigned h = 0; h < nkv; h++)
            for (unsigned ch = 0; ch < d; ch++) {
                c->ek[idx(c, p, h, ch)] = th_elem_err(c, c->kx, p, h, ch, KV_KIND_K);
                c->ev[idx(c, p, h, ch)] = th_elem_err(c, c->vx, p, h, ch, KV_KIND_V);
            }
}

void th_free(struct th_case *c)
{
    free(c->pages);
    free(c->kx);
    free(c->vx);
    free(c->kd);
    free(c->vd);
    free(c->q);
    free(c->tk);
    free(c->tv);
    free(c->ek);
    free(c->ev);
    free(c->blk_of);
    free(c->tok_of);
}

static double softmax_scale(const struct th_case *c)
{
    return 1.0 / sqrt((double)c->cfg.d);
}

static size_t visible(const struct th_case *c, unsigned qi)
{
    return c->n_ctx - c->cfg.n_q + qi + 1;
}

static double max_abs(const struct th_case *c, const float *x, unsigned kvh)
{
    double m = 0.0;
    for (size_t p = 0; p < c->n_ctx; p++)
        for (unsigned ch = 0; ch < c->cfg.d; ch++)
            m = fmax(m, fabs(x[idx(c, p, kvh, ch)]));
    return m;
}

void th_kernel_bound(const struct th_case *c, unsigned qi, unsigned h, double *out_tol,
                     double *p_rel, double *sum_tol)
{
    unsigned d = c->cfg.d, kvh = h / c->cfg.g;
    size_t n = visible(c, qi);
    const float *q = c->q + ((size_t)qi * c->a.n_q_heads + h) * d;
    double mk = fmt_asym(c->cfg.kf) ? max_abs(c, c->kx, kvh) * (1 + 0x1p-9) : 0.0;
    double mv = fmt_asym(c->cfg.vf) ? max_abs(c, c->vx, kvh) * (1 + 0x1p-9) : 0.0;
    double amax = 0.0, smax = -INFINITY, smin = INFINITY, sc = softmax_scale(c);

    for (size_t j = 0; j < n; j++) {
        double aj = 0.0, sj = 0.0;
        for (unsigned ch = 0; ch < d; ch++) {
            double k = c->kd[idx(c, j, kvh, ch)];
            aj += fabs(q[ch] * sc) * (fabs(k) + 2 * mk);
            sj += q[ch] * sc * k;
        }
        amax = fmax(amax, aj);
        smax = fmax(smax, sj);
        smin = fmin(smin, sj);
    }
    double chunks = (double)n / 64 + c->cfg.nblk + 2;
    double ew = gamma_n(d + 8) * amax + U * (smax - smin) + 4 * U * (chunks + 2);
    double r = expm1(2 * ew) + 2 * gamma_n((double)n + chunks + 16);
    *out_tol = r * (max_abs(c, c->vd, kvh) + 2 * mv) + 1e-30;
    *p_rel = r;
    *sum_tol = r + (double)n * U;
}

/* Extent of original values in a quantization group; see th_elem_err. */
static void group_range(const struct th_case *c, const float *x, size_t pos, unsigned kvh,
                        unsigned ch, int fmt, unsigned kind, double *lo, double *hi)
{
    unsigned d = c->cfg.d, G = c->cfg.group;
    *lo = INFINITY;
    *hi = -INFINITY;
    if (fmt == KV_FMT_KIVI4 || fmt == KV_FMT_KIVI2) {
        if (kind == KV_KIND_K) { /* channel ch over the token group of this page */
            unsigned b = c->blk_of[pos], t = c->tok_of[pos], nt = c->bt[b].n_tokens;
            size_t start = pos - t;
            for (unsigned u = t / G * G; u < t / G * G + G && u < nt; u++) {
                double v = x[idx(c, start + u, kvh, ch)];
                *lo = fmin(*lo, v);
                *hi = fmax(*hi, v);
            }
            return;
        }
        for (unsigned u = ch / G * G; u < ch / G * G + G; u++) { /* V: G channels of a token */
            double v = x[idx(c, pos, kvh, u)];
            *lo = fmin(*lo, v);
            *hi = fmax(*hi, v);
        }
        return;
    }
    unsigned gs = fmt == KV_FMT_INT4 ? 32 : d; /* INT4: 32 channels; per-token scales: all */
    for (unsigned u = ch / gs * gs; u < ch / gs * gs + gs; u++) {
        double v = x[idx(c, pos, kvh, u)];
        *lo = fmin(*lo, v);
        *hi = fmax(*hi, v);
    }
}

/*
 * Per-element bound of a format's quantization error, from kv_format.h's definitions:
 *  F16/BF16: round-to-nearest, half an ulp: 2^-11 |x| (2^-8 for bf16) plus half the smallest
 *            subnormal.
 *  FP8 with s = amax/FPMAX: code = rn(x/s): half an ulp relative (2^-4 E4M3, 2^-3 E5M2) or half
 *            the subnormal spacing times s (2^-10 s, 2^-17 s); x/s and code*s add <= 2u each.
 *  INT8: s = amax/127, half a step s/2.
 *  INT4/KIVI (asymmetric, L = 2^b - 1 levels): scale rounded up and min rounded down to f16 keep
 *            [lo, hi] inside the grid, scale <= (hi - lo + 2^-10 |lo| + 2^-24)/L (1 + 2^-10);
 *            half a step plus the f16/float decode roundings (the (1 + 2^-8) margin, 4u).
 */
static double th_elem_err(const struct th_case *c, const float *x, size_t pos, unsigned kvh,
                          unsigned ch, unsigned kind)
{
    int fmt = kind == KV_KIND_K ? c->cfg.kf : c->cfg.vf;
    double v = fabs(x[idx(c, pos, kvh, ch)]), lo, hi, amax, s, L;

    if (c->blk_of[pos] == c->cfg.nblk)
        return 0.0; /* the tail is used as given */
    group_range(c, x, pos, kvh, ch, fmt, kind, &lo, &hi);
    amax = fmax(fabs(lo), fabs(hi));
    switch (fmt) {
    case KV_FMT_F16:
        return v * 0x1p-11 + 0x1p-25;
    case KV_FMT_BF16:
        return v * 0x1p-8 + 1e-38;
    case KV_FMT_FP8_E4M3:
        s = amax / 448.0;
        return fmax(v * 0x1p-4, s * 0x1p-10) * (1 + 1e-6) + 4 * U * (v + amax);
    case KV_FMT_FP8_E5M2:
        s = amax / 57344.0;
        return fmax(v * 0x1p-3, s * 0x1p-17) * (1 + 1e-6) + 4 * U * (v + amax);
    case KV_FMT_INT8:
        return amax / 127.0 / 2 * (1 + 1e-6) + 4 * U * (v + amax);
    default:
        L = fmt == KV_FMT_KIVI2 ? 3.0 : 15.0;
        return (hi - lo + 0x1p-10 * fabs(lo) + 0x1p-24) / L * (1 + 0x1p-10) / 2 * (1 + 0x1p-8) +
               4 * U * (fabs(lo) + fabs(hi));
    }
}

void th_format_bound(const struct th_case *c, unsigned qi, unsigned h, double *tol)
{
    unsigned d = c->cfg.d, kvh = h / c->cfg.g;
    size_t n = visible(c, qi);
    const float *q = c->q + ((size_t)qi * c->a.n_q_heads + h) * d;
    double dk = 0.0, ot, pr, st;

    for (size_t j = 0; j < n; j++) {
        double e = 0.0;
        for (unsigned ch = 0; ch < d; ch++)
            e += fabs((double)q[ch]) * c->ek[idx(c, j, kvh, ch)];
        dk = fmax(dk, e * softmax_scale(c));
    }
    th_kernel_bound(c, qi, h, &ot, &pr, &st);
    for (unsigned ch = 0; ch < d; ch++) {
        double vmax = 0.0, ev = 0.0;
        for (size_t j = 0; j < n; j++) {
            vmax = fmax(vmax, fabs(c->vd[idx(c, j, kvh, ch)]));
            ev = fmax(ev, c->ev[idx(c, j, kvh, ch)]);
        }
        tol[ch] = expm1(2 * dk) * vmax + ev + ot;
    }
}

void th_exact(const struct th_case *c, unsigned qi, unsigned h, double *out)
{
    unsigned d = c->cfg.d, kvh = h / c->cfg.g;
    size_t n = visible(c, qi);
    const float *q = c->q + ((size_t)qi * c->a.n_q_heads + h) * d;
    double *s = malloc(n * sizeof(double)), m = -INFINITY, sum = 0.0;
    cr_assert(s);
    for (size_t j = 0; j < n; j++) {
        double acc = 0.0;
        for (unsigned ch = 0; ch < d; ch++)
            acc += (double)q[ch] * c->kx[idx(c, j, kvh, ch)];
        s[j] = acc * softmax_scale(c);
        m = fmax(m, s[j]);
    }
    for (size_t j = 0; j < n; j++)
        sum += s[j] = exp(s[j] - m);
    for (unsigned ch = 0; ch < d; ch++) {
        double acc = 0.0;
        for (size_t j = 0; j < n; j++)
            acc += s[j] * c->vx[idx(c, j, kvh, ch)];
        out[ch] = acc / sum;
    }
    free(s);
}

unsigned th_tiers(enum kv_attn_tier *tiers)
{
    unsigned n = 0;
    tiers[n++] = KV_ATTN_TIER_SCALAR;
    if (kv_attn_set_tier(KV_ATTN_TIER_AVX2) == 0)
        tiers[n++] = KV_ATTN_TIER_AVX2;
    kv_attn_set_tier(KV_ATTN_TIER_AUTO);
    return n;
}
