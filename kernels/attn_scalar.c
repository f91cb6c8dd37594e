/*
 * attn_scalar.c - portable attention kernels: each chunk of a segment is dequantized through
 * kv_quant (the format's specification) into a chunk-sized scratch (ATTN_CHUNK rows, in L1), then
 * the dot products and weighted sums run in float. This tier runs on every CPU; the AVX2 tier
 * (attn_avx2.c) reads the segment bytes directly instead. Plain multiply-add, not fmaf(): without
 * an FMA target fmaf() is a slow library call (the portable tier must not assume FMA hardware).
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "attn_impl.h"
#include "kv_quant.h"

int attn_seg_deq(const struct attn_seg *s, unsigned t0, unsigned n, float *rows)
{
    unsigned d = s->d;

    if (s->fmt == ATTN_TAIL_F32) {
        const float *src = (const float *)s->data;
        for (unsigned j = 0; j < n; j++)
            memcpy(rows + (size_t)j * d, src + (t0 + j) * s->stride, d * sizeof(float));
        return 0;
    }
    if (s->fmt == ATTN_TAIL_F16) {
        const uint16_t *src = (const uint16_t *)s->data;
        for (unsigned j = 0; j < n; j++) {
            const uint16_t *r = src + (t0 + j) * s->stride;
            for (unsigned c = 0; c < d; c++)
                rows[(size_t)j * d + c] = kv_f16_to_f32(r[c]);
        }
        return 0;
    }
    return kv_dequant_seg(s->l, s->kind, s->data, t0, n, rows, d);
}

static void scalar_dot(const struct attn_seg *s, unsigned t0, unsigned n, const float *q,
                       unsigned g, float *logits, size_t ld, float *work)
{
    unsigned d = s->d;

    if (attn_seg_deq(s, t0, n, work) != 0) {
        /* The driver validated the layout, so this cannot happen; make it visible if it does. */
        for (unsigned h = 0; h < g; h++)
            for (unsigned j = 0; j < n; j++)
                logits[h * ld + j] = NAN;
        return;
    }
    for (unsigned h = 0; h < g; h++) {
        const float *qh = q + (size_t)h * d;
        for (unsigned j = 0; j < n; j++) {
            const float *k = work + (size_t)j * d;
            float acc = 0.0f;
            for (unsigned c = 0; c < d; c++)
                acc += qh[c] * k[c];
            logits[h * ld + j] = acc;
        }
    }
}

static void scalar_axpy(const struct attn_seg *s, unsigned t0, unsigned n, const float *p,
                        size_t ld, unsigned g, float *acc, float *work)
{
    unsigned d = s->d;

    if (attn_seg_deq(s, t0, n, work) != 0) {
        for (unsigned i = 0; i < g * d; i++)
            acc[i] = NAN;
        return;
    }
    for (unsigned h = 0; h < g; h++) {
        float *ah = acc + (size_t)h * d;
        for (unsigned j = 0; j < n; j++) {
            const float *v = work + (size_t)j * d;
            float w = p[h * ld + j];
            for (unsigned c = 0; c < d; c++)
                ah[c] += w * v[c];
        }
    }
}

static float scalar_expsum(float *x, unsigned n, float m)
{
    float sum = 0.0f;
    for (unsigned i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    return sum;
}

const struct attn_ops attn_ops_scalar = {
    .dot = scalar_dot,
    .axpy = scalar_axpy,
    .expsum = scalar_expsum,
};
