/*
 * bench_quant.c - kvbench-quant: quantize and dequantize throughput of every page format, with
 * 1 and 2 threads, beside memcpy of the same bytes measured in the same run.
 *
 * GB/s counts the f32 bytes of K and V (the quantizer's input, the dequantizer's output), so the
 * figures compare directly with memcpy of that many bytes. Pages: 32 layers x 8 KV heads x
 * head_dim 128 x 16 tokens (a 7-8B-class model), K and V as f32 [layer][tok][head][dim] per page.
 * Each figure is the median of --reps runs over --mib MiB of f32 input. Ratios are quoted by CPU
 * time (robust on a shared VM whose other users steal the core) and by wall time.
 *
 *   kvbench-quant [--mib 256] [--reps 5] [--tier ref|avx2|avx512] [--threads 2]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_quant.h"

enum { L = 32, H = 8, D = 128, T = 16, G = 16 };

struct job {
    int op; /* 0 memcpy, 1 quantize, 2 dequantize */
    struct kv_layout l;
    size_t page_bytes;
    float *src, *dst; /* f32 K then V per page: 2 * L*T*H*D floats per page */
    uint8_t *pages;
    unsigned p0, p1; /* pages of this thread */
    double cpu_s;    /* out: this thread's CPU time */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *run(void *arg)
{
    struct job *j = arg;
    double c0 = cpu_now();
    const size_t per = (size_t)L * T * H * D;
    for (unsigned p = j->p0; p < j->p1; p++) {
        float *k = j->src + 2 * per * p, *v = k + per;
        float *ko = j->dst + 2 * per * p, *vo = ko + per;
        uint8_t *page = j->pages + j->page_bytes * p;
        if (j->op == 0) {
            memcpy(ko, k, 2 * per * sizeof(float));
        } else if (j->op == 1) {
            struct kv_src ks = {k, KV_DT_F32, (ptrdiff_t)T * H * D, H * D, D, 0.0f}, vs = ks;
            vs.base = v;
            if (kv_quant_page(&j->l, page, &ks, &vs, T) != 0)
                abort();
        } else {
            struct kv_dst kd = {ko, (ptrdiff_t)T * H * D, H * D, D}, vd = kd;
            vd.base = vo;
            if (kv_dequant_page(&j->l, page, 0, T, &kd, &vd) != 0)
                abort();
        }
    }
    j->cpu_s = cpu_now() - c0;
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median GB/s of f32 bytes processed, by wall time and by CPU time (bytes / the busiest thread's
 * CPU time: what the kernel sustains when it has the core, which other users of a shared VM
 * cannot steal; memory contention still shows). */
static void measure(struct job *base, unsigned npages, int nthr, int reps, double *wall,
                    double *cpu)
{
    double r[64], c[64];
    for (int rep = 0; rep < reps; rep++) {
        pthread_t th[8];
        struct job jobs[8];
        double t0 = now(), busiest = 0;
        for (int i = 0; i < nthr; i++) {
            jobs[i] = *base;
            jobs[i].p0 = npages * i / nthr;
            jobs[i].p1 = npages * (i + 1) / nthr;
            pthread_create(&th[i], NULL, run, &jobs[i]);
        }
        for (int i = 0; i < nthr; i++) {
            pthread_join(th[i], NULL);
            busiest = jobs[i].cpu_s > busiest ? jobs[i].cpu_s : busiest;
        }
        double bytes = (double)npages * 2 * L * T * H * D * sizeof(float);
        r[rep] = bytes / (now() - t0) / 1e9;
        c[rep] = bytes / busiest / 1e9;
    }
    qsort(r, reps, sizeof r[0], cmp_double);
    qsort(c, reps, sizeof c[0], cmp_double);
    *wall = r[reps / 2];
    *cpu = c[reps / 2];
}

int main(int argc, char **argv)
{
    unsigned mib = 256, maxthr = 2;
    int reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mib"))
            mib = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            maxthr = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tier")) {
            int t = -1;
            for (int k = 0; k <= KV_TIER_AVX512; k++)
                if (!strcmp(argv[i + 1], kv_quant_tier_name(k)))
                    t = k;
            if (t < 0 || kv_quant_set_tier(t) != 0) {
                fprintf(stderr, "tier %s not available here\n", argv[i + 1]);
                return 1;
            }
        } else {
            fprintf(stderr, "usage: %s [--mib N] [--reps N] [--threads N] [--tier T]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 64 || maxthr < 1 || maxthr > 8)
        return 2;
    const size_t per_page_f32 = 2 * (size_t)L * T * H * D * sizeof(float);
    unsigned npages = (unsigned)(((size_t)mib << 20) / per_page_f32);
    if (npages < maxthr)
        npages = maxthr;
    float *src = aligned_alloc(64, npages * per_page_f32),
          *dst = aligned_alloc(64, npages * per_page_f32);
    if (!src || !dst)
        return 1;
    uint64_t s = 1;
    for (size_t i = 0; i < npages * per_page_f32 / 4; i++) { /* N(0,1)-ish, outlier channels */
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        float x = (float)((int32_t)((s * 0x2545f4914f6cdd1dull) >> 32)) * 0x1p-31f * 2.0f;
        src[i] = (i % D) % 16 == 3 ? x * 8 + 20 : x;
    }
    memset(dst, 0, npages * per_page_f32);
    printf("kvbench-quant: tier %s, %u pages of %ux%ux%ux%u (K+V f32 %.1f MiB each), %.0f MiB, "
           "median of %d\n",
           kv_quant_tier_name(kv_quant_tier()), npages, L, H, D, T, per_page_f32 / 1048576.0,
           npages * per_page_f32 / 1048576.0, reps);
    printf(
        "GB/s of f32 K+V bytes; cpu = bytes / busiest thread's CPU time, wall = bytes / elapsed\n");
    printf("%-9s %3s | %7s %7s %6s %6s | %7s %7s %6s %6s\n", "format", "thr", "quant", "memcpy",
           "ratio", "wall", "deq", "memcpy", "ratio", "wall");
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++) {
        struct job j = {.l = {L, H, D, T, (uint8_t)fmt, (uint8_t)fmt, G}, .src = src, .dst = dst};
        j.page_bytes = kv_page_bytes(&j.l);
        j.pages = aligned_alloc(64, (j.page_bytes * npages + 63) / 64 * 64);
        if (!j.pages)
            return 1;
        memset(j.pages, 0, j.page_bytes * npages);
        for (unsigned thr = 1; thr <= maxthr; thr++) {
            struct job m = j;
            double mw1, mc1, qw, qc, mw2, mc2, dw, dc;
            m.op = 0;
            measure(&m, npages, (int)thr, reps, &mw1, &mc1);
            j.op = 1;
            measure(&j, npages, (int)thr, reps, &qw, &qc);
            measure(&m, npages, (int)thr, reps, &mw2, &mc2);
            j.op = 2;
            measure(&j, npages, (int)thr, reps, &dw, &dc);
            printf("%-9s %3u | %7.2f %7.2f %6.2f %6.2f | %7.2f %7.2f %6.2f %6.2f\n",
                   kv_fmt_name(fmt), thr, qc, mc1, qc / mc1, qw / mw1, dc, mc2, dc / mc2, dw / mw2);
            fflush(stdout);
        }
        free(j.pages);
    }
    free(src);
    free(dst);
    return 0;
}
