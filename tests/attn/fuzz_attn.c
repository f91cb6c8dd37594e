/*
 * fuzz_attn.c - paged attention over pages whose bytes come from another process (any bytes a
 * worker may have written into the arena). Input: 8 header bytes choosing the geometry, formats
 * and block token counts, then page bytes (cycled to fill every page) and query bits. Every tier
 * and the reference must run without a memory error or undefined behaviour; outputs of garbage
 * pages may be anything (NaN included), so only the calls' return codes are checked.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9)
        return 0;
    static const unsigned dims[4] = {32, 64, 96, 128}, gs[4] = {1, 2, 3, 8};
    struct kv_layout l = {.n_layers = (uint16_t)(1 + data[0] % 2),
                          .n_kv_heads = (uint16_t)(1 + data[0] / 2 % 2),
                          .head_dim = (uint16_t)dims[data[1] % 4],
                          .page_tokens = (uint16_t)(16 * (1 + data[1] / 4 % 2)),
                          .k_fmt = (uint8_t)(1 + data[2] % KV_FMT_MAX_ID),
                          .v_fmt = (uint8_t)(1 + data[2] / 16 % KV_FMT_MAX_ID),
                          .group = (uint16_t)(data[1] / 8 % 2 ? 16 : 32)};
    if (kv_layout_check(&l) != 0)
        return 0;
    unsigned g = gs[data[3] % 4], nblk = data[3] / 4 % 4, n_tail = data[4] % 20;
    unsigned nqh = g * l.n_kv_heads, d = l.head_dim;
    size_t pb = kv_page_bytes(&l);
    struct kv_attn_block bt[3];
    uint8_t *pages = malloc(nblk ? nblk * pb : 1);
    float *q = malloc(8 * nqh * d * sizeof(float)), *out = malloc(8 * nqh * d * sizeof(float));
    float *tail = calloc((size_t)(n_tail ? n_tail : 1) * l.n_kv_heads * d, sizeof(float));
    const uint8_t *body = data + 8;
    size_t nb = size - 8, n_ctx = n_tail;
    if (!pages || !q || !out || !tail)
        goto out_free;
    for (size_t i = 0; i < nblk * pb; i++)
        pages[i] = body[i % nb];
    for (unsigned b = 0; b < nblk && b < 3; b++) {
        bt[b].page = pages + b * pb;
        bt[b].n_tokens = 1 + data[5 + b] % l.page_tokens;
        n_ctx += bt[b].n_tokens;
    }
    for (size_t i = 0; i < 8 * nqh * d; i++)
        q[i] = (float)(int8_t)body[(i * 7) % nb] / 32.0f;
    unsigned nq = n_ctx ? 1 + data[4] / 20 % (n_ctx < 8 ? n_ctx : 8) : 1;
    float *sc = calloc((n_ctx ? n_ctx : 1) * nqh, sizeof(float));
    double *o64 = malloc(8 * nqh * d * sizeof(double));
    if (sc && o64) {
        struct kv_attn_args a = {.layout = &l,
                                 .layer = data[0] / 4 % l.n_layers,
                                 .n_q_heads = nqh,
                                 .n_q = 1,
                                 .q = q,
                                 .out = out,
                                 .blocks = nblk ? bt : NULL,
                                 .n_blocks = nblk,
                                 .tail_k = n_tail ? tail : NULL,
                                 .tail_v = n_tail ? tail : NULL,
                                 .n_tail = n_tail,
                                 .scores = sc,
                                 .scores_head = sc};
        for (int t = KV_ATTN_TIER_SCALAR; t <= KV_ATTN_TIER_AVX2; t++) {
            if (kv_attn_set_tier((enum kv_attn_tier)t) != 0)
                continue;
            if (kv_attn_decode(&a) != 0)
                abort();
            a.n_q = nq;
            if (kv_attn_prefill(&a) != 0)
                abort();
            a.n_q = 1;
        }
        kv_attn_set_tier(KV_ATTN_TIER_AUTO);
        a.n_q = nq;
        if (kv_attn_ref(&a, o64, NULL) != 0)
            abort();
    }
    free(sc);
    free(o64);
out_free:
    free(pages);
    free(q);
    free(out);
    free(tail);
    return 0;
}
