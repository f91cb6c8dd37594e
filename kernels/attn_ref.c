/*
 * attn_ref.c - the specification of paged attention: every segment is dequantized through
 * kv_quant's dequantizer (the formats' own specification), then attention runs in fp64 with a
 * plain two-pass softmax. Slow and allocation-heavy by design; tests and benchmark checks only.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "attn_impl.h"
#include "kv_quant.h"

/* Dequantize the whole context of KV head kvh (kind K or V) into rows[n_ctx][d] (fp64). */
static int ref_ctx_rows(const struct kv_attn_args *a, unsigned kvh, unsigned kind, double *rows,
                        float *tmp)
{
    const struct kv_layout *l = a->layout;
    unsigned d = l->head_dim;
    size_t pos = 0;

    for (unsigned b = 0; b < a->n_blocks; b++) {
        const uint8_t *seg = a->blocks[b].page + kv_seg_offset(l, a->layer, kind, kvh);
        unsigned nt = a->blocks[b].n_tokens;
        int rc = kv_dequant_seg(l, kind, seg, 0, nt, tmp, d);
        if (rc)
            return rc;
        for (size_t i = 0; i < (size_t)nt * d; i++)
            rows[pos * d + i] = tmp[i];
        pos += nt;
    }
    const void *tail = kind == KV_KIND_K ? a->tail_k : a->tail_v;
    size_t stride = (size_t)l->n_kv_heads * d;
    for (unsigned t = 0; t < a->n_tail; t++, pos++) {
        for (unsigned c = 0; c < d; c++) {
            size_t i = t * stride + (size_t)kvh * d + c;
            rows[pos * d + c] = a->tail_dtype == KV_ATTN_F16
                                    ? kv_f16_to_f32(((const uint16_t *)tail)[i])
                                    : ((const float *)tail)[i];
        }
    }
    return 0;
}

int kv_attn_ref(const struct kv_attn_args *a, double *out64, double *p64)
{
    struct kv_attn_args chk = *a;
    float unused;
    if (!chk.out) /* the reference writes out64, not out */
        chk.out = &unused;
    int rc = kv_attn_check(&chk);
    if (rc)
        return rc;
    if (!out64)
        return -EINVAL;

    const struct kv_layout *l = a->layout;
    unsigned d = l->head_dim, nkv = l->n_kv_heads, g = a->n_q_heads / nkv;
    size_t n_ctx = kv_attn_ctx_len(a);
    double scale = a->softmax_scale > 0.0f ? (double)a->softmax_scale : 1.0 / sqrt((double)d);

    if (n_ctx == 0) {
        for (size_t i = 0; i < (size_t)a->n_q * a->n_q_heads * d; i++)
            out64[i] = 0.0;
        return 0;
    }
    double *kr = malloc(n_ctx * d * sizeof(double));
    double *vr = malloc(n_ctx * d * sizeof(double));
    double *s = malloc(n_ctx * sizeof(double));
    float *tmp = malloc((size_t)l->page_tokens * d * sizeof(float));
    rc = -ENOMEM;
    if (!kr || !vr || !s || !tmp)
        goto out_free;

    for (unsigned k = 0; k < nkv; k++) {
        rc = ref_ctx_rows(a, k, KV_KIND_K, kr, tmp);
        if (!rc)
            rc = ref_ctx_rows(a, k, KV_KIND_V, vr, tmp);
        if (rc)
            goto out_free;
        for (unsigned qi = 0; qi < a->n_q; qi++) {
            size_t visible = n_ctx - a->n_q + qi + 1; /* causal: positions 0 .. n_ctx-n_q+qi */
            for (unsigned hh = 0; hh < g; hh++) {
                unsigned h = k * g + hh;
                const float *q = a->q + ((size_t)qi * a->n_q_heads + h) * d;
                double mx = -INFINITY, sum = 0.0;
                for (size_t j = 0; j < visible; j++) {
                    double acc = 0.0;
                    for (unsigned c = 0; c < d; c++)
                        acc += (double)q[c] * kr[j * d + c];
                    s[j] = acc * scale;
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (size_t j = 0; j < visible; j++) {
                    s[j] = exp(s[j] - mx);
                    sum += s[j];
                }
                double *o = out64 + ((size_t)qi * a->n_q_heads + h) * d;
                for (unsigned c = 0; c < d; c++)
                    o[c] = 0.0;
                for (size_t j = 0; j < visible; j++)
                    for (unsigned c = 0; c < d; c++)
                        o[c] += s[j] / sum * vr[j * d + c];
                if (p64) {
                    double *pr = p64 + ((size_t)qi * a->n_q_heads + h) * n_ctx;
                    for (size_t j = 0; j < n_ctx; j++)
                        pr[j] = j < visible ? s[j] / sum : 0.0;
                }
            }
        }
    }
    rc = 0;
out_free:
    free(tmp);
    free(s);
    free(vr);
    free(kr);
    return rc;
}
