/*
 * kvcache.c - page buffers, private tail and the attention boundary (see kvcache.h).
 *
 * Attention here is a plain per-query two-pass softmax over the dequantized pages of the layer
 * and the f32 recent positions. Every query is computed independently with a fixed operation
 * order (mm_dot for q.k, position order for the sums), so a query's output does not depend on
 * n_q or on which other queries share the call.
 */
#include "kvcache.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn.h"
#include "kv_quant.h"
#include "mm.h"

int kvcache_init(struct kvcache *c, const struct kv_layout *lay, unsigned max_tokens)
{
    size_t pb = kv_page_bytes(lay), P, n_pages, tail;

    memset(c, 0, sizeof(*c));
    if (!pb || max_tokens == 0)
        return -EINVAL;
    P = lay->page_tokens;
    n_pages = (max_tokens + P - 1) / P;
    if (n_pages > (1u << 20))
        return -EINVAL;
    c->lay = *lay;
    c->page_bytes = pb;
    c->max_tokens = (unsigned)(n_pages * P);
    tail = (size_t)lay->n_layers * P * lay->n_kv_heads * lay->head_dim;
    c->pages = aligned_alloc(KV_SEG_ALIGN, n_pages * pb);
    c->tail_k = calloc(tail, sizeof(float));
    c->tail_v = calloc(tail, sizeof(float));
    c->ptr = calloc(n_pages, sizeof(*c->ptr));
    if (!c->pages || !c->tail_k || !c->tail_v || !c->ptr) {
        kvcache_free(c);
        return -ENOMEM;
    }
    return 0;
}

void kvcache_free(struct kvcache *c)
{
    free(c->pages);
    free(c->tail_k);
    free(c->tail_v);
    free(c->ptr);
    free(c->scores);
    memset(c, 0, sizeof(*c));
}

void kvcache_reset(struct kvcache *c)
{
    c->n_tokens = 0;
    c->n_pages = 0;
    memset(c->ptr, 0, (size_t)(c->max_tokens / c->lay.page_tokens) * sizeof(*c->ptr));
    if (c->scores)
        memset(c->scores, 0, (size_t)c->max_tokens * sizeof(float));
}

uint8_t *kvcache_page(const struct kvcache *c, unsigned i)
{
    return c->ptr[i] ? c->ptr[i] : c->pages + (size_t)i * c->page_bytes;
}

void kvcache_set_page(struct kvcache *c, unsigned i, uint8_t *p)
{
    c->ptr[i] = p;
}

int kvcache_enable_scores(struct kvcache *c)
{
    if (!c->scores)
        c->scores = calloc(c->max_tokens, sizeof(float));
    return c->scores ? 0 : -ENOMEM;
}

/* kernels/attn.h's paged kernel, one kv_attn_prefill call per run of queries in the same page:
 * blocks = the pages before it, tail = the page's f32 K/V up to the run's last query (which makes
 * the run the last n_q positions of the context, as the kernel's causality wants). Prefill is used
 * for single decode queries too: its per-query arithmetic follows the context's spans, not the
 * query tiling, so a token's output is the same bits however its queries were batched. */
static int attend_paged(const struct kv_layout *l, unsigned layer, unsigned n_q_heads,
                        const uint8_t *const *pages, const float *rk, const float *rv, unsigned r0,
                        const float *q, unsigned q0, unsigned n_q, float *out, float *scores)
{
    const unsigned P = l->page_tokens, KH = l->n_kv_heads;
    const size_t row = (size_t)l->n_kv_heads * l->head_dim, qrow = (size_t)n_q_heads * l->head_dim;
    unsigned last = q0 + n_q - 1;
    struct kv_attn_block *bt = malloc(((size_t)last / P + 1) * sizeof(*bt));
    float *sc = scores ? malloc((size_t)KH * (last + 1) * sizeof(float)) : NULL;
    int rc = 0;

    if (!bt || (scores && !sc)) {
        free(bt);
        free(sc);
        return -ENOMEM;
    }
    for (unsigned p = 0; p < last / P; p++)
        bt[p] = (struct kv_attn_block){.page = pages[p], .n_tokens = P};
    for (unsigned i = 0; i < n_q && !rc;) {
        unsigned pos = q0 + i, pg = pos / P, end = (pg + 1) * P, nq = 0;
        while (i + nq < n_q && q0 + i + nq < end)
            nq++;
        struct kv_attn_args a = {
            .layout = l,
            .layer = layer,
            .n_q_heads = n_q_heads,
            .n_q = nq,
            .q = q + i * qrow,
            .out = out + i * qrow,
            .blocks = pg ? bt : NULL,
            .n_blocks = pg,
            .tail_k = rk + (size_t)(pg * P - r0) * row,
            .tail_v = rv + (size_t)(pg * P - r0) * row,
            .tail_dtype = KV_ATTN_F32,
            .n_tail = pos + nq - pg * P,
        };
        /* mass on the stored pages only: the own page's tokens are not shared yet */
        size_t n_ctx = (size_t)pg * P + a.n_tail, n_pg = (size_t)pg * P;
        if (sc && n_pg) {
            memset(sc, 0, KH * n_ctx * sizeof(float));
            a.scores = sc;
        }
        rc = kv_attn_prefill(&a);
        if (!rc && a.scores)
            for (unsigned k = 0; k < KH; k++)
                for (size_t j = 0; j < n_pg; j++)
                    scores[j] += sc[k * n_ctx + j];
        i += nq;
    }
    free(bt);
    free(sc);
    return rc;
}

int kvcache_attend(const struct kv_layout *l, unsigned layer, unsigned n_q_heads,
                   const uint8_t *const *pages, unsigned n_pages, const float *rk, const float *rv,
                   unsigned r0, unsigned n_r, const float *q, unsigned q0, unsigned n_q, float *out,
                   float *scores)
{
    unsigned lastq = q0 + n_q - 1;
    if (n_q == 0 || kv_layout_check(l) || layer >= l->n_layers || n_q_heads % l->n_kv_heads ||
        n_pages < lastq / l->page_tokens || r0 % l->page_tokens ||
        r0 > (q0 / l->page_tokens) * l->page_tokens || r0 + n_r < lastq + 1)
        return -EINVAL;
    const char *simple = getenv("KVRUN_SIMPLE_ATTN");
    if (!simple || !*simple)
        return attend_paged(l, layer, n_q_heads, pages, rk, rv, r0, q, q0, n_q, out, scores);
    return kvcache_attend_simple(l, layer, n_q_heads, pages, n_pages, rk, rv, r0, n_r, q, q0, n_q,
                                 out);
}

int kvcache_attend_simple(const struct kv_layout *l, unsigned layer, unsigned n_q_heads,
                          const uint8_t *const *pages, unsigned n_pages, const float *rk,
                          const float *rv, unsigned r0, unsigned n_r, const float *q, unsigned q0,
                          unsigned n_q, float *out)
{
    const unsigned P = l->page_tokens, KH = l->n_kv_heads, D = l->head_dim;
    const size_t row = (size_t)KH * D;
    unsigned last = q0 + n_q - 1, n_pg = last / P, group;
    float *dk = NULL, *dv = NULL, *s = NULL;
    const float scale = 1.0f / sqrtf((float)D);
    int rc = -EINVAL;

    if (n_q == 0 || kv_layout_check(l) || layer >= l->n_layers || n_q_heads % KH ||
        n_pages < n_pg || r0 % P || r0 > (q0 / P) * P || r0 + n_r < last + 1)
        return -EINVAL;
    group = n_q_heads / KH;
    rc = -ENOMEM;
    dk = malloc(((size_t)n_pg * P * row + 1) * sizeof(float));
    dv = malloc(((size_t)n_pg * P * row + 1) * sizeof(float));
    s = malloc(((size_t)last + 1) * sizeof(float));
    if (!dk || !dv || !s)
        goto out_free;
    /* stored form of the visible pages of this layer, [token][head][dim] */
    for (unsigned p = 0; p < n_pg; p++)
        for (unsigned h = 0; h < KH; h++) {
            const uint8_t *pg = pages[p];
            float *ok = dk + (size_t)p * P * row + (size_t)h * D;
            float *ov = dv + (size_t)p * P * row + (size_t)h * D;
            rc = kv_dequant_seg(l, 0, pg + kv_seg_offset(l, layer, 0, h), 0, P, ok, row);
            if (!rc)
                rc = kv_dequant_seg(l, 1, pg + kv_seg_offset(l, layer, 1, h), 0, P, ov, row);
            if (rc)
                goto out_free;
        }
    for (unsigned i = 0; i < n_q; i++) {
        unsigned pos = q0 + i, own = pos / P * P;
        for (unsigned h = 0; h < n_q_heads; h++) {
            unsigned kh = h / group;
            const float *qv = q + ((size_t)i * n_q_heads + h) * D;
            float *o = out + ((size_t)i * n_q_heads + h) * D, mx = -INFINITY, sum = 0.0f;
            for (unsigned j = 0; j <= pos; j++) {
                const float *kr = j < own ? dk + (size_t)j * row + (size_t)kh * D
                                          : rk + (size_t)(j - r0) * row + (size_t)kh * D;
                s[j] = mm_dot(qv, kr, D) * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (unsigned j = 0; j <= pos; j++) {
                s[j] = expf(s[j] - mx);
                sum += s[j];
            }
            memset(o, 0, D * sizeof(float));
            for (unsigned j = 0; j <= pos; j++) {
                const float *vr = j < own ? dv + (size_t)j * row + (size_t)kh * D
                                          : rv + (size_t)(j - r0) * row + (size_t)kh * D;
                const float pj = s[j];
                for (unsigned c = 0; c < D; c++)
                    o[c] += pj * vr[c];
            }
            for (unsigned c = 0; c < D; c++)
                o[c] /= sum;
        }
    }
    rc = 0;
out_free:
    free(dk);
    free(dv);
    free(s);
    return rc;
}
