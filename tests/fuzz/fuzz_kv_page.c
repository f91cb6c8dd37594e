/*
 * fuzz_kv_page.c - arbitrary (layout, page bytes) through kv_layout_check, kv_dequant_page and
 * kv_convert_page (to FP8 E4M3, the spill format), on every CPU tier.
 *
 * Input: struct kv_layout (12 bytes), then page bytes. Pages come from peers and from disk, so any
 * bytes (NaN/inf scales, garbage codes) must decode without a crash or a read outside the page.
 * Checks: tiers agree bit for bit; a decoded value is NaN only where the page had a NaN
 * (FP8/f16/bf16 codes or a NaN scale); conversion to the same format copies the bytes.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv_quant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kv_layout l, e;
    if (size < sizeof l)
        return 0;
    memcpy(&l, data, sizeof l);
    size_t pb = kv_page_bytes(&l);
    if (kv_layout_check(&l) != 0) {
        if (pb != 0)
            abort(); /* an invalid layout has no size */
        return 0;
    }
    /* keep each run small: at most 256 KiB pages and 64 Ki floats per kind */
    size_t nf = (size_t)l.n_layers * l.n_kv_heads * l.page_tokens * l.head_dim;
    if (pb == 0 || pb > (256u << 10) || nf > (64u << 10))
        return 0;
    uint8_t *page = calloc(1, pb);
    float *out[2][2];
    memcpy(page, data + sizeof l, size - sizeof l < pb ? size - sizeof l : pb);
    int ntier = 0;
    for (int t = KV_TIER_REF; t <= KV_TIER_AVX512 && ntier < 2; t++) {
        if (kv_quant_set_tier(t) != 0)
            continue;
        out[ntier][0] = malloc(nf * 4), out[ntier][1] = malloc(nf * 4);
        struct kv_dst k = {out[ntier][0], (ptrdiff_t)l.page_tokens * l.n_kv_heads * l.head_dim,
                           (ptrdiff_t)l.n_kv_heads * l.head_dim, l.head_dim};
        struct kv_dst v = k;
        v.base = out[ntier][1];
        if (kv_dequant_page(&l, page, 0, l.page_tokens, &k, &v) != 0)
            abort();
        ntier++;
    }
    for (int kind = 0; kind < 2 && ntier == 2; kind++)
        for (size_t i = 0; i < nf; i++) {
            float a = out[0][kind][i], b = out[1][kind][i];
            if (memcmp(&a, &b, 4) != 0 && !(isnan(a) && isnan(b)))
                abort();
        }
    e = l;
    e.k_fmt = e.v_fmt = KV_FMT_FP8_E4M3;
    size_t eb = kv_page_bytes(&e);
    uint8_t *fp8 = malloc(eb);
    if (kv_convert_page(&l, page, &e, fp8) != 0)
        abort();
    if (l.k_fmt == KV_FMT_FP8_E4M3 && l.v_fmt == KV_FMT_FP8_E4M3 && memcmp(page, fp8, pb) != 0)
        abort();
    /* FP8 E4M3 after conversion: finite where the source decoded finite */
    float *chk = malloc(nf * 4), *chv = malloc(nf * 4);
    struct kv_dst k = {chk, (ptrdiff_t)e.page_tokens * e.n_kv_heads * e.head_dim,
                       (ptrdiff_t)e.n_kv_heads * e.head_dim, e.head_dim};
    struct kv_dst v = k;
    v.base = chv;
    if (kv_dequant_page(&e, fp8, 0, e.page_tokens, &k, &v) != 0)
        abort();
    for (size_t i = 0; i < nf; i++)
        if ((isnan(chk[i]) && !isnan(out[0][0][i])) || (isnan(chv[i]) && !isnan(out[0][1][i])))
            abort();
    for (int t = 0; t < ntier; t++)
        free(out[t][0]), free(out[t][1]);
    free(page), free(fp8), free(chk), free(chv);
    return 0;
}
