/*
 * kvquality - how much each page format changes K, V and attention.
 *
 * For every format (K and V in the same format, group G for KIVI): quantize the KV through real
 * pages (kv_quant_page, page_tokens tokens each), dequantize, and print
 *   - B/tok/hd: page bytes per token and KV head, K and V together, scales included;
 *   - NMSE of K and of V: sum (x - x')^2 / sum x^2;
 *   - the attention output o = softmax(q K^T / sqrt(d)) V, computed in fp64 from the original and
 *     from the dequantized K/V: relative error ||o - o'|| / ||o|| and cosine(o, o'), averaged over
 *     queries, heads and layers (the score and softmax arithmetic is fp64 for both, so only the
 *     storage format differs).
 *
 * Inputs:
 *   kvquality                       synthetic KV: keys with the channel outliers real keys have
 *                                   (a few channels with 10-20x magnitude and a bias), N(0,1)
 * values kvquality --dump FILE           a KV dump from a worker (format below) options: --tokens N
 * (1024) --heads H (4) --dim D (128) --page T (64) --group G (32)
 *            --queries Q (16) --seed S
 *
 * Dump format (little-endian, f32):
 *   char magic[8] = "KVDUMP01"; u32 n_layers, n_kv_heads, head_dim, n_tokens;
 *   f32 K[n_layers][n_tokens][n_kv_heads][head_dim]; f32 V[same shape]
 *   Queries for a dump are the keys of Q random tokens plus N(0, 0.1) noise (a self-attention proxy
 *   until the worker dumps real queries). n_tokens is cut to a multiple of the page size.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_quant.h"

struct kv {
    unsigned L, H, D, N; /* layers, heads, dim, tokens */
    float *k, *v;        /* [L][N][H][D] */
};

static uint64_t rng = 1;
static double urand(void)
{
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return ((rng * 0x2545f4914f6cdd1dull) >> 11) * 0x1p-53;
}
static double nrand(void)
{
    double u = urand(), w = urand();
    return sqrt(-2 * log(u + 1e-300)) * cos(2 * M_PI * w);
}

static int synth(struct kv *kv)
{
    size_t n = (size_t)kv->L * kv->N * kv->H * kv->D;
    kv->k = malloc(n * 4), kv->v = malloc(n * 4);
    if (!kv->k || !kv->v)
        return -ENOMEM;
    double *cs = malloc(kv->D * sizeof(double)), *cb = malloc(kv->D * sizeof(double));
    for (unsigned c = 0; c < kv->D; c++) { /* per-channel key scale and bias: a few outliers */
        int outlier = c % 37 == 5 || c % 53 == 11;
        cs[c] = outlier ? 10 + 10 * urand() : exp(0.5 * nrand());
        cb[c] = outlier ? 8 * nrand() : 0.2 * nrand();
    }
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned)(i % kv->D);
        kv->k[i] = (float)(cs[c] * nrand() + cb[c]);
        kv->v[i] = (float)nrand();
    }
    free(cs), free(cb);
    return 0;
}

static int load_dump(const char *path, struct kv *kv, unsigned page)
{
    FILE *f = fopen(path, "rb");
    char magic[8];
    uint32_t hdr[4];
    int rc = -EINVAL;
    if (!f)
        return -errno;
    if (fread(magic, 8, 1, f) != 1 || memcmp(magic, "KVDUMP01", 8) != 0 ||
        fread(hdr, 4, 4, f) != 4 || !hdr[0] || hdr[0] > KV_MAX_LAYERS || !hdr[1] ||
        hdr[1] > KV_MAX_KV_HEADS || !hdr[2] || hdr[2] > KV_MAX_HEAD_DIM || hdr[3] < page ||
        hdr[3] > (1u << 20))
        goto out;
    kv->L = hdr[0], kv->H = hdr[1], kv->D = hdr[2], kv->N = hdr[3];
    size_t n = (size_t)kv->L * kv->N * kv->H * kv->D;
    kv->k = malloc(n * 4), kv->v = malloc(n * 4);
    if (!kv->k || !kv->v) {
        rc = -ENOMEM;
        goto out;
    }
    if (fread(kv->k, 4, n, f) != n || fread(kv->v, 4, n, f) != n)
        goto out;
    kv->N = kv->N / page * page; /* whole pages; [L][N][H][D] rows stay where they are */
    rc = 0;
out:
    fclose(f);
    return rc;
}

/* Quantize kv through pages of format fmt and decode into out (same shape). */
static int roundtrip(const struct kv *kv, int kf, int vf, unsigned page, unsigned G, float *ko,
                     float *vo, size_t *page_bytes)
{
    struct kv_layout l = {1,           (uint16_t)kv->H, (uint16_t)kv->D, (uint16_t)page,
                          (uint8_t)kf, (uint8_t)vf,     (uint16_t)G};
    size_t pb = kv_page_bytes(&l), ts = (size_t)kv->H * kv->D;
    if (!pb)
        return -EINVAL;
    *page_bytes = pb;
    void *pg = malloc(pb);
    if (!pg)
        return -ENOMEM;
    for (unsigned layer = 0; layer < kv->L; layer++)
        for (unsigned p = 0; p < kv->N / page; p++) {
            size_t off = ((size_t)layer * kv->N + (size_t)p * page) * ts;
            struct kv_src ks = {kv->k + off, KV_DT_F32, 0, (ptrdiff_t)ts, kv->D, 0}, vs = ks;
            struct kv_dst kd = {ko + off, 0, (ptrdiff_t)ts, kv->D}, vd = kd;
            vs.base = kv->v + off, vd.base = vo + off;
            int rc = kv_quant_page(&l, pg, &ks, &vs, page);
            if (!rc)
                rc = kv_dequant_page(&l, pg, 0, page, &kd, &vd);
            if (rc) {
                free(pg);
                return rc;
            }
        }
    free(pg);
    return 0;
}

static double nmse(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d, den += (double)a[i] * a[i];
    }
    return den > 0 ? num / den : 0;
}

/* o[D] = softmax(q K^T / sqrt(D)) V over tokens of (layer, head), fp64. */
static void attend(const struct kv *kv, const float *k, const float *v, unsigned layer, unsigned h,
                   const double *q, double *o, double *sc)
{
    size_t ts = (size_t)kv->H * kv->D;
    double mx = -INFINITY, sum = 0;
    for (unsigned t = 0; t < kv->N; t++) {
        const float *kr = k + ((size_t)layer * kv->N + t) * ts + (size_t)h * kv->D;
        double s = 0;
        for (unsigned c = 0; c < kv->D; c++)
            s += q[c] * kr[c];
        sc[t] = s / sqrt((double)kv->D);
        mx = fmax(mx, sc[t]);
    }
    for (unsigned c = 0; c < kv->D; c++)
        o[c] = 0;
    for (unsigned t = 0; t < kv->N; t++) {
        double p = exp(sc[t] - mx);
        const float *vr = v + ((size_t)layer * kv->N + t) * ts + (size_t)h * kv->D;
        sum += p;
        for (unsigned c = 0; c < kv->D; c++)
            o[c] += p * vr[c];
    }
    for (unsigned c = 0; c < kv->D; c++)
        o[c] /= sum;
}

int main(int argc, char **argv)
{
    struct kv kv = {.L = 1, .H = 4, .D = 128, .N = 1024};
    unsigned page = 64, G = 32, nq = 16;
    const char *dump = NULL;
    int kf = 0, vf = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        unsigned val = (unsigned)strtoul(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--dump"))
            dump = argv[i + 1];
        else if (!strcmp(argv[i], "--tokens"))
            kv.N = val;
        else if (!strcmp(argv[i], "--heads"))
            kv.H = val;
        else if (!strcmp(argv[i], "--dim"))
            kv.D = val;
        else if (!strcmp(argv[i], "--page"))
            page = val;
        else if (!strcmp(argv[i], "--group"))
            G = val;
        else if (!strcmp(argv[i], "--queries"))
            nq = val;
        else if (!strcmp(argv[i], "--k"))
            kf = kv_fmt_parse(argv[i + 1]);
        else if (!strcmp(argv[i], "--v"))
            vf = kv_fmt_parse(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed"))
            rng = val ? val : 1;
        else {
            fprintf(stderr,
                    "usage: %s [--dump FILE] [--tokens N] [--heads H] [--dim D] [--page T]"
                    " [--group G] [--queries Q] [--seed S]\n",
                    argv[0]);
            return 2;
        }
    }
    if (argc % 2 == 0 || !page || !nq || nq > 4096 || kf < 0 || vf < 0 || !kf != !vf) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    int rc = dump ? load_dump(dump, &kv, page) : (kv.N = kv.N / page * page, synth(&kv));
    if (rc || kv.N == 0 || kv.D > KV_MAX_HEAD_DIM || kv.H > KV_MAX_KV_HEADS) {
        fprintf(stderr, "kvquality: cannot get KV: %s\n", rc ? strerror(-rc) : "bad shape");
        return 1;
    }
    size_t n = (size_t)kv.L * kv.N * kv.H * kv.D;
    float *ko = malloc(n * 4), *vo = malloc(n * 4);
    double *q = malloc((size_t)nq * kv.D * sizeof(double)), *o = malloc(kv.D * sizeof(double));
    double *o2 = malloc(kv.D * sizeof(double)), *sc = malloc(kv.N * sizeof(double));
    if (!ko || !vo || !q || !o || !o2 || !sc)
        return 1;
    printf("kvquality: %s, %u layers x %u tokens x %u heads x %u dims, page %u, G %u, %u queries"
           " per head\n",
           dump ? dump : "synthetic KV (key channel outliers)", kv.L, kv.N, kv.H, kv.D, page, G,
           nq);
    printf("%-9s %8s %12s %12s %14s %12s\n", "format", "B/tok/hd", "NMSE K", "NMSE V",
           "attn rel.err", "attn cosine");
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++) {
        size_t pb;
        int k = kf ? kf : fmt, v = vf ? vf : fmt;
        char name[32];
        if (kf && fmt > 1)
            break;
        snprintf(name, sizeof name, "%s", kv_fmt_name(k));
        if (k != v)
            snprintf(name, sizeof name, "%s/%s", kv_fmt_name(k), kv_fmt_name(v));
        if ((rc = roundtrip(&kv, k, v, page, G, ko, vo, &pb)) != 0) {
            printf("%-9s (layout rejected: %s)\n", name, strerror(-rc));
            continue;
        }
        double rel = 0, cosv = 0;
        unsigned cnt = 0;
        for (unsigned layer = 0; layer < kv.L; layer++)
            for (unsigned h = 0; h < kv.H; h++) {
                uint64_t save = rng;
                rng = 77 + layer * 1000 + h; /* the same queries for every format */
                for (unsigned qi = 0; qi < nq; qi++) {
                    unsigned t = (unsigned)(urand() * kv.N) % kv.N;
                    const float *kr =
                        kv.k + ((size_t)layer * kv.N + t) * kv.H * kv.D + (size_t)h * kv.D;
                    for (unsigned c = 0; c < kv.D; c++) /* synthetic: N(0,1) queries */
                        q[c] = dump ? kr[c] + 0.1 * nrand() : nrand();
                    attend(&kv, kv.k, kv.v, layer, h, q, o, sc);
                    attend(&kv, ko, vo, layer, h, q, o2, sc);
                    double dd = 0, oo = 0, o22 = 0, dot = 0;
                    for (unsigned c = 0; c < kv.D; c++) {
                        dd += (o[c] - o2[c]) * (o[c] - o2[c]);
                        oo += o[c] * o[c], o22 += o2[c] * o2[c], dot += o[c] * o2[c];
                    }
                    rel += sqrt(dd / oo);
                    cosv += dot / sqrt(oo * o22);
                    cnt++;
                }
                rng = save;
            }
        printf("%-9s %8.1f %12.3e %12.3e %14.3e %12.8f\n", name, (double)pb / page / kv.H,
               nmse(kv.k, ko, n), nmse(kv.v, vo, n), rel / cnt, cosv / cnt);
    }
    free(kv.k), free(kv.v), free(ko), free(vo), free(q), free(o), free(o2), free(sc);
    return 0;
}
