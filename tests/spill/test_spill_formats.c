/*
 * test_spill_formats.c - spill and restore of every page format.
 *
 * Pages of 8 bits or fewer are written as they are and must come back bit-exact. Wider pages
 * (F16, BF16) are demoted to FP8 E4M3 on the way out and converted back on the way in; they come
 * back marked demoted and within the FP8 error bound derived below.
 *
 * Bound, per element x of the original page (f32 value of its F16/BF16 code), with the per-token
 * scale s = amax / 448 the converter picks (amax over the head's row of that token):
 *   demotion  y = s * E4M3(x / s):  |y - x| <= 2^-4 |x|  (3 mantissa bits, half an ulp, normal
 *             range) or <= 2^-10 s  (subnormal E4M3 step 2^-9, half of it);
 *   restore   z = W(y), W = F16 (rel. half-ulp 2^-11) or BF16 (2^-8):  |z - y| <= r |y|;
 * so |z - x| <= (2^-4 + r (1 + 2^-4)) |x| + 2^-10 (1 + r) s, plus f32 rounding of the scale and
 * products (a few 2^-24 relative), covered by 2^-20 |x| + 2^-20 s.
 */
#include <math.h>

#include "spill_th.h"
#ifdef KVSPILL_HAVE_QUANT
#include "kv_quant.h"
#endif

static struct kv_spill *open_store(char *dir, size_t dlen, char *path, size_t plen, int sync)
{
    th_tmpdir(dir, dlen);
    snprintf(path, plen, "%s/store", dir);
    struct kv_spill *s = th_open(path, sync, 32, 4);
    cr_assert_eq(kv_spill_scan(s, NULL, NULL), 0);
    return s;
}

static int roundtrip(struct kv_spill *s, const struct kv_layout *l, const void *page, void *out,
                     uint64_t seed, uint16_t *flags)
{
    struct kv_spill_meta m = th_meta(l, seed);
    struct th_rec *rec = calloc(1, sizeof *rec);
    int slot, res;

    slot = kv_spill_write(s, &m, page, th_cookie(0));
    cr_assert_geq(slot, 0, "write: %s", strerror(-slot));
    cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
    cr_assert_eq(rec->res[0], 0);
    cr_assert_eq(kv_spill_read(s, (uint32_t)slot, m.hash, l, out, th_cookie(1)), 0);
    cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
    res = rec->res[1];
    *flags = rec->flags[1];
    free(rec);
    return res;
}

static void narrow_formats(int sync)
{
    static const int fmts[][2] = {
        {KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3}, {KV_FMT_FP8_E5M2, KV_FMT_FP8_E5M2},
        {KV_FMT_INT8, KV_FMT_INT8},         {KV_FMT_INT4, KV_FMT_INT4},
        {KV_FMT_KIVI4, KV_FMT_KIVI4},       {KV_FMT_KIVI2, KV_FMT_KIVI2},
        {KV_FMT_FP8_E4M3, KV_FMT_KIVI2},    {KV_FMT_INT8, KV_FMT_INT4},
    };
    char dir[PATH_MAX], path[PATH_MAX + 16];
    struct kv_spill *s = open_store(dir, sizeof dir, path, sizeof path, sync);
    struct kv_spill_stats st;

    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        struct kv_layout l = th_layout(fmts[i][0], fmts[i][1]);
        size_t pb = kv_page_bytes(&l);
        uint8_t *page = malloc(pb), *out = malloc(pb);
        uint16_t flags;

        cr_assert_gt(pb, 0);
        th_fill(page, pb, 1000 + i);
        memset(out, 0xee, pb);
        cr_assert_eq(roundtrip(s, &l, page, out, 1000 + i, &flags), 0);
        cr_assert_eq(flags, 0, "%s/%s demoted", kv_fmt_name(l.k_fmt), kv_fmt_name(l.v_fmt));
        cr_assert(memcmp(page, out, pb) == 0, "%s/%s not bit-exact", kv_fmt_name(l.k_fmt),
                  kv_fmt_name(l.v_fmt));
        free(page);
        free(out);
    }
    kv_spill_stats(s, &st);
    cr_assert_eq(st.demotions, 0);
    kv_spill_close(s);
    th_rmdir(dir);
}

Test(spill_formats, narrow_bit_exact_uring)
{
    narrow_formats(0);
}

Test(spill_formats, narrow_bit_exact_sync)
{
    narrow_formats(1);
}

#ifdef KVSPILL_HAVE_QUANT
/* f32 rows [layer][tok][head][d] with magnitudes spread over 6 decades, token by token. */
static float *make_rows(const struct kv_layout *l, uint64_t seed)
{
    size_t n = (size_t)l->n_layers * l->page_tokens * l->n_kv_heads * l->head_dim;
    float *x = malloc(n * sizeof *x);
    uint64_t r = seed * 2654435761u + 7;

    for (size_t i = 0; i < n; i++) {
        size_t row = i / l->head_dim;
        float mag = powf(10.0f, (float)(row % 7) - 3.0f);
        x[i] = mag * ((float)(th_rng(&r) % 20001) / 10000.0f - 1.0f);
    }
    x[3] = 0.0f;
    return x;
}

static void dequant(const struct kv_layout *l, const void *page, float *k, float *v)
{
    ptrdiff_t H = l->n_kv_heads, D = l->head_dim, T = l->page_tokens;
    struct kv_dst kd = {
        .base = k, .layer_stride = T * H * D, .tok_stride = H * D, .head_stride = D};
    struct kv_dst vd = kd;

    vd.base = v;
    cr_assert_eq(kv_dequant_page(l, page, 0, l->page_tokens, &kd, &vd), 0);
}

/* Compare one kind (K or V): exact when the format was 8 bits or fewer, else the bound above. */
static void check_kind(const struct kv_layout *l, int fmt, const float *a, const float *b)
{
    size_t D = l->head_dim, rows = (size_t)l->n_layers * l->page_tokens * l->n_kv_heads;
    double r = fmt == KV_FMT_F16 ? ldexp(1, -11) : ldexp(1, -8);

    for (size_t row = 0; row < rows; row++) {
        double amax = 0;
        for (size_t c = 0; c < D; c++)
            amax = fmax(amax, fabs(a[row * D + c]));
        double s = amax / 448.0;
        for (size_t c = 0; c < D; c++) {
            double x = a[row * D + c], z = b[row * D + c];
            if (kv_fmt_bits(fmt) <= 8) {
                cr_assert(x == z, "undemoted element changed: %g vs %g", x, z);
                continue;
            }
            double tol = (ldexp(1, -4) + r * (1 + ldexp(1, -4)) + ldexp(1, -20)) * fabs(x) +
                         (ldexp(1, -10) * (1 + r) + ldexp(1, -20)) * s;
            cr_assert(fabs(z - x) <= tol, "%s row %zu ch %zu: %.9g -> %.9g (tol %.3g)",
                      kv_fmt_name(fmt), row, c, x, z, tol);
        }
    }
}

static void wide_formats(int sync)
{
    static const int fmts[][2] = {
        {KV_FMT_F16, KV_FMT_F16}, {KV_FMT_BF16, KV_FMT_BF16}, {KV_FMT_F16, KV_FMT_INT4}};
    char dir[PATH_MAX], path[PATH_MAX + 16];
    struct kv_spill *s = open_store(dir, sizeof dir, path, sizeof path, sync);
    struct kv_spill_stats st;

    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        struct kv_layout l = th_layout(fmts[i][0], fmts[i][1]);
        size_t pb = kv_page_bytes(&l),
               n = (size_t)l.n_layers * l.page_tokens * l.n_kv_heads * l.head_dim;
        uint8_t *page = malloc(pb), *out = malloc(pb);
        float *k = make_rows(&l, 1 + i), *v = make_rows(&l, 100 + i);
        float *ka = malloc(n * 4), *va = malloc(n * 4), *kb = malloc(n * 4), *vb = malloc(n * 4);
        ptrdiff_t H = l.n_kv_heads, D = l.head_dim, T = l.page_tokens;
        struct kv_src ks = {.base = k,
                            .dtype = KV_DT_F32,
                            .layer_stride = T * H * D,
                            .tok_stride = H * D,
                            .head_stride = D};
        struct kv_src vs = ks;
        uint16_t flags;

        vs.base = v;
        cr_assert_eq(kv_quant_page(&l, page, &ks, &vs, l.page_tokens), 0);
        cr_assert_eq(roundtrip(s, &l, page, out, 2000 + i, &flags), 0);
        cr_assert_eq(flags, KV_SPILL_F_DEMOTED);
        dequant(&l, page, ka, va);
        dequant(&l, out, kb, vb);
        check_kind(&l, l.k_fmt, ka, kb);
        check_kind(&l, l.v_fmt, va, vb);
        free(page), free(out), free(k), free(v), free(ka), free(va), free(kb), free(vb);
    }
    kv_spill_stats(s, &st);
    cr_assert_eq(st.demotions, 3);
    cr_assert_eq(st.restored_demoted, 3);
    kv_spill_close(s);

    /* after a restart the scan reports the namespace's format and the demotion */
    s = th_open(path, sync, 32, 4);
    cr_assert_eq(kv_spill_scan(s, NULL, NULL), 3);
    kv_spill_close(s);
    th_rmdir(dir);
}

static int demoted_cb(void *arg, uint32_t slot, const struct kv_spill_meta *m)
{
    int *n = arg;

    (void)slot;
    cr_assert(m->flags & KV_SPILL_F_DEMOTED);
    cr_assert(m->layout.k_fmt == KV_FMT_F16 || m->layout.k_fmt == KV_FMT_BF16,
              "scan reports the namespace format, not the stored one");
    (*n)++;
    return 0;
}

Test(spill_formats, wide_demoted_within_fp8_error_uring)
{
    wide_formats(0);
}

Test(spill_formats, wide_demoted_within_fp8_error_sync)
{
    wide_formats(1);
}

Test(spill_formats, demoted_meta_survives_restart)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    struct kv_spill *s = open_store(dir, sizeof dir, path, sizeof path, 0);
    struct kv_layout l = th_layout(KV_FMT_F16, KV_FMT_F16);
    uint8_t *page = calloc(1, kv_page_bytes(&l)), *out = malloc(kv_page_bytes(&l));
    uint16_t flags;
    int n = 0;

    cr_assert_eq(roundtrip(s, &l, page, out, 1, &flags), 0);
    cr_assert_eq(flags, KV_SPILL_F_DEMOTED);
    kv_spill_close(s);
    s = th_open(path, 0, 32, 4);
    cr_assert_eq(kv_spill_scan(s, demoted_cb, &n), 1);
    cr_assert_eq(n, 1);
    kv_spill_close(s);
    free(page), free(out);
    th_rmdir(dir);
}
#else
Test(spill_formats, wide_demoted_within_fp8_error)
{
    cr_skip_test("kvkernels has no kv_convert_page in this build");
}
#endif
