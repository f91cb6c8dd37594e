/*
 * test_fp8.c - FP8/f16/bf16 scalar conversions against NVIDIA's cuda_fp8.h (through the committed
 * golden vectors kernels/golden/fp8_golden.bin), and every tier's row conversions against them:
 * all 65,536 halfs, all 256 codes decoded, a deterministic float sample with every special class,
 * and the full 2^32 float sweep compared by hash.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kv_quant_impl.h"
#include "sweep_hash.h"

struct golden {
    uint8_t e4_of_half[65536], e5_of_half[65536];
    uint32_t f_of_e4[256], f_of_e5[256];
    uint64_t sweep_e4, sweep_e5;
    uint32_t n;
    uint32_t *in;
    uint8_t *c4, *c5;
};

static struct golden *load_golden(void)
{
    struct golden *g = calloc(1, sizeof(*g));
    FILE *f = fopen(KV_GOLDEN_PATH, "rb");
    char magic[8];
    cr_assert(g && f, "cannot open %s", KV_GOLDEN_PATH);
    cr_assert(fread(magic, 8, 1, f) == 1 && memcmp(magic, "KVFP8G01", 8) == 0);
    cr_assert(fread(g->e4_of_half, 65536, 1, f) == 1 && fread(g->e5_of_half, 65536, 1, f) == 1);
    cr_assert(fread(g->f_of_e4, 4, 256, f) == 256 && fread(g->f_of_e5, 4, 256, f) == 256);
    cr_assert(fread(&g->sweep_e4, 8, 1, f) == 1 && fread(&g->sweep_e5, 8, 1, f) == 1);
    cr_assert(fread(&g->n, 4, 1, f) == 1 && g->n > 100000 && g->n < 1000000);
    g->in = calloc(g->n + 32, 4);
    g->c4 = calloc(g->n + 32, 1);
    g->c5 = calloc(g->n + 32, 1);
    for (uint32_t i = 0; i < g->n; i++) {
        cr_assert(fread(&g->in[i], 4, 1, f) == 1);
        cr_assert(fread(&g->c4[i], 1, 1, f) == 1 && fread(&g->c5[i], 1, 1, f) == 1);
    }
    cr_assert(fgetc(f) == EOF, "trailing bytes in golden file");
    fclose(f);
    return g;
}

static int n_tiers(const struct kvq_ops **t)
{
    int n = 0;
    t[n++] = &kvq_ops_ref;
    if (kv_quant_set_tier(KV_TIER_AVX2) == 0)
        t[n++] = &kvq_ops_avx2;
    if (kv_quant_set_tier(KV_TIER_AVX512) == 0)
        t[n++] = &kvq_ops_avx512;
    return n;
}

Test(fp8, golden_all_halfs)
{
    struct golden *g = load_golden();
    for (uint32_t h = 0; h < 65536; h++) {
        float x = kv_f16_to_f32((uint16_t)h);
        cr_assert_eq(kv_fp8_e4m3_from_f32(x), g->e4_of_half[h], "e4m3 half %04x", h);
        cr_assert_eq(kv_fp8_e5m2_from_f32(x), g->e5_of_half[h], "e5m2 half %04x", h);
    }
}

Test(fp8, golden_decode_all_codes)
{
    struct golden *g = load_golden();
    for (unsigned c = 0; c < 256; c++) {
        cr_assert_eq(kvq_f2u(kv_fp8_e4m3_to_f32((uint8_t)c)), g->f_of_e4[c], "e4m3 %02x", c);
        cr_assert_eq(kvq_f2u(kv_fp8_e5m2_to_f32((uint8_t)c)), g->f_of_e5[c], "e5m2 %02x", c);
    }
    /* every tier's row decode (scale 1) */
    const struct kvq_ops *t[3];
    uint8_t codes[256];
    float y[256];
    for (unsigned c = 0; c < 256; c++)
        codes[c] = (uint8_t)c;
    for (int i = 0, n = n_tiers(t); i < n; i++)
        for (int e5 = 0; e5 < 2; e5++) {
            t[i]->fp8_dec(y, codes, 256, 1.0f, e5 ? KV_FMT_FP8_E5M2 : KV_FMT_FP8_E4M3);
            for (unsigned c = 0; c < 256; c++)
                cr_assert_eq(kvq_f2u(y[c]), e5 ? g->f_of_e5[c] : g->f_of_e4[c],
                             "tier %d e5 %d code %02x", i, e5, c);
        }
}

Test(fp8, golden_float_sample_and_specials)
{
    struct golden *g = load_golden();
    const struct kvq_ops *t[3];
    uint32_t n = (g->n + 31) / 32 * 32;
    uint8_t *q = malloc(n);
    for (uint32_t i = 0; i < g->n; i++) {
        float x = kvq_u2f(g->in[i]);
        cr_assert_eq(kv_fp8_e4m3_from_f32(x), g->c4[i], "e4m3 of %08x", g->in[i]);
        cr_assert_eq(kv_fp8_e5m2_from_f32(x), g->c5[i], "e5m2 of %08x", g->in[i]);
    }
    for (int k = 0, nt = n_tiers(t); k < nt; k++)
        for (int e5 = 0; e5 < 2; e5++) {
            /* x / 1.0f == x for every non-NaN x, and NaN stays NaN: the row op is the bare cvt */
            t[k]->fp8_enc(q, (const float *)g->in, n, 1.0f, 0,
                          e5 ? KV_FMT_FP8_E5M2 : KV_FMT_FP8_E4M3);
            for (uint32_t i = 0; i < g->n; i++)
                cr_assert_eq(q[i], e5 ? g->c5[i] : g->c4[i], "tier %d e5 %d input %08x", k, e5,
                             g->in[i]);
        }
    free(q);
}

Test(fp8, explicit_special_classes)
{
    /* independent of the golden file: the documented behaviour, spelled out */
    cr_assert_eq(kv_fp8_e4m3_from_f32(0.0f), 0x00);
    cr_assert_eq(kv_fp8_e4m3_from_f32(-0.0f), 0x80);
    cr_assert_eq(kv_fp8_e4m3_from_f32(448.0f), 0x7e);
    cr_assert_eq(kv_fp8_e4m3_from_f32(1e9f), 0x7e);
    cr_assert_eq(kv_fp8_e4m3_from_f32(-INFINITY), 0xfe);
    cr_assert_eq(kv_fp8_e4m3_from_f32(NAN), 0x7f);
    cr_assert_eq(kv_fp8_e4m3_from_f32(-NAN), 0x7f);
    cr_assert_eq(kv_fp8_e4m3_from_f32(0x1p-9f), 0x01);   /* smallest subnormal */
    cr_assert_eq(kv_fp8_e4m3_from_f32(0x1p-10f), 0x00);  /* tie to even: 0 */
    cr_assert_eq(kv_fp8_e4m3_from_f32(0x1.8p-9f), 0x02); /* tie 1.5 -> 2 */
    cr_assert_eq(kv_fp8_e4m3_from_f32(1.0625f), 0x38);   /* tie between 1 and 1.125 -> even 1 */
    cr_assert_eq(kv_fp8_e4m3_from_f32(1.1875f), 0x3a);   /* tie between 1.125 and 1.25 -> 1.25 */
    cr_assert_eq(kv_fp8_e5m2_from_f32(57344.0f), 0x7b);
    cr_assert_eq(kv_fp8_e5m2_from_f32(INFINITY), 0x7b);
    cr_assert_eq(kv_fp8_e5m2_from_f32(NAN), 0x7f);
    cr_assert_eq(kv_fp8_e5m2_from_f32(0x1p-16f), 0x01);
    cr_assert(isnan(kv_fp8_e4m3_to_f32(0xff)));
    cr_assert(isinf(kv_fp8_e5m2_to_f32(0x7c)));
    cr_assert_eq(kv_fp8_e4m3_to_f32(0x7e), 448.0f);
    cr_assert_eq(kv_fp8_e5m2_to_f32(0xfb), -57344.0f);
    cr_assert_eq(kv_f16_from_f32(65520.0f), 0x7c00);
    cr_assert_eq(kv_f16_from_f32(65519.0f), 0x7bff);
    cr_assert_eq(kv_bf16_from_f32(1.00390625f), 0x3f80); /* tie to even */
    cr_assert_eq(kv_bf16_from_f32(1.01171875f), 0x3f82);
}

/* Every x in [0, 2^32) as float through the best tier's FP8 row encoder, hashed, against the hash
 * of NVIDIA's results; the reference itself is compared with that tier on a 1/61 stride sample.
 * (Other tiers are compared with the golden sample above, and with the reference in test_quant.) */
Test(fp8, sweep_all_floats, .timeout = 120)
{
    struct golden *g = load_golden();
    const struct kvq_ops *t[3];
    int nt = n_tiers(t);
    const struct kvq_ops *o = t[nt - 1];
    enum { CH = 1 << 16 };
    uint32_t *in = malloc(CH * 4);
    uint8_t *q = malloc(CH);
    for (int e5 = 0; e5 < 2; e5++) {
        int fmt = e5 ? KV_FMT_FP8_E5M2 : KV_FMT_FP8_E4M3;
        struct kvq_sweep sw;
        kvq_sweep_init(&sw);
        for (uint64_t base = 0; base < (1ull << 32); base += CH) {
            for (uint32_t i = 0; i < CH; i++)
                in[i] = (uint32_t)(base + i);
            o->fp8_enc(q, (const float *)in, CH, 1.0f, 0, fmt);
            kvq_sweep_add(&sw, q, CH);
            if (base % (61ull * CH) == 0)
                for (uint32_t i = 0; i < CH; i += 61)
                    cr_assert_eq(q[i], e5 ? kv_fp8_e5m2_from_f32(kvq_u2f(in[i]))
                                          : kv_fp8_e4m3_from_f32(kvq_u2f(in[i])));
        }
        cr_assert_eq(sw.h, e5 ? g->sweep_e5 : g->sweep_e4, "sweep hash, e5 %d", e5);
    }
    free(in);
    free(q);
}
