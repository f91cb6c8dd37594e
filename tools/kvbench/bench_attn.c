/*
 * bench_attn.c - kvbench-attn: decode attention over quantized pages, tokens/s and effective GB/s
 * per format at 1k, 8k and 32k context, at the reference model's geometry (3 KV heads of 64
 * channels, 3 query heads per KV head, pages of 30 layers) and at 1:1, beside F16 and beside the
 * streaming-read bandwidth measured in the same run (single thread, like the kernel), for 16-token
 * pages and for 64-token pages (--page-tokens, repeatable, picks others): a page holds all layers
 * of its tokens, so the page size sets how long each layer's slice of a page is, which is what
 * bounds the read at 1:1 (docs/BENCHMARKS.md).
 *
 * Effective bytes = the segment bytes the call must read for one layer: K and V data plus their
 * scales, for every KV head and context token (tails excluded: the context is whole pages).
 * Times are medians of several batches; a batch repeats the call for at least --batch-ms of this
 * thread's CPU time (CLOCK_THREAD_CPUTIME_ID: the shared 2-vCPU machines are often oversubscribed,
 * and time spent descheduled is not the kernel's; memory bandwidth is still shared). The xF16 and
 * xstream columns are medians over rounds of alternating F16, format and streaming-read batches
 * (time_row), their quartiles printed beside them: two separate timings a second apart drift by up
 * to 30% here, and the memory bandwidth other tenants leave drifts with them.
 *
 * Pages sit at their real stride (all layers), so one layer's slices are scattered as in the arena.
 *
 *   kvbench-attn [--page-tokens N]... [--layers L] [--batch-ms M] [--reps R] [--ctx N]...
 *                [--fmt NAME (with F16)] [--prefill NQ] [--tier scalar|avx2] [--ratio 3|1] [--huge]
 * --prefill NQ also times one causal prefill of NQ queries against NQ decode calls.
 * --huge maps the pages and the streaming buffer with MADV_HUGEPAGE (2 MiB pages where the host
 * grants them; the last line says how much it did): what a 2 MiB-page arena would buy. kvd's arena
 * is a memfd, which takes 2 MiB pages only where the host enables shmem THP or reserves hugetlb
 * pages.
 */
#include <errno.h>
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "attn.h"
#include "kv_quant.h"

static volatile int g_sink; /* keeps the streaming read's loads alive */

struct opts {
    unsigned page_tokens, batch_ms, reps, n_ctx, ctx[8], layers, prefill;
    unsigned n_pt, pts[4]; /* page sizes to run, in turn (page_tokens: the current one) */
    unsigned only_g;       /* 0: 3:1 and 1:1; else only this ratio (3 or 1), for profiling */
    int only_fmt;          /* 0: every format */
    int huge;              /* --huge: pages and the streaming buffer asked for 2 MiB pages */
};

#define MAP_ROUND(n) (((n) + 4095) & ~(size_t)4095)

/* Maps n bytes of private anonymous memory; with huge, asks for transparent 2 MiB pages. A
 * PROT_NONE guard page after the bytes keeps the kernel from merging the mapping with the next
 * one, so that huge_kb reports this one alone. */
static void *map_anon(size_t n, int huge)
{
    size_t m = MAP_ROUND(n);
    uint8_t *p = mmap(NULL, m + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    (void)mprotect(p + m, 4096, PROT_NONE);
    if (huge)
        (void)madvise(p, m, MADV_HUGEPAGE);
    return p;
}

static void unmap_anon(void *p, size_t n)
{
    munmap(p, MAP_ROUND(n) + 4096);
}

/* kB of the mapping at addr that the kernel backs with huge pages (AnonHugePages in smaps). */
static long huge_kb(const void *addr)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char ln[256];
    long kb = -1;
    int in = 0;
    while (f && fgets(ln, sizeof ln, f)) {
        unsigned long lo, hi;
        if (sscanf(ln, "%lx-%lx ", &lo, &hi) == 2 && strchr(ln, '-') < strchr(ln, ' '))
            in = lo == (unsigned long)addr;
        else if (in && sscanf(ln, "AnonHugePages: %ld kB", &kb) == 1)
            break;
    }
    if (f)
        fclose(f);
    return kb;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof(double), cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The streaming-read floor: one 256 MiB buffer, read by one thread with AVX2 loads (OR-reduced
 * so nothing is optimized out). */
#define STREAM_BYTES (256u << 20)
static uint8_t *g_stream;

/* GB/s of one batch (whole passes over the buffer for at least batch_ms). */
__attribute__((target("avx2"))) static double stream_batch(const struct opts *o)
{
    double t0 = now_s();
    unsigned it = 0;
    do {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t i = 0; i < STREAM_BYTES; i += 128) {
            a0 = _mm256_or_si256(a0, _mm256_load_si256((const __m256i *)(g_stream + i)));
            a1 = _mm256_or_si256(a1, _mm256_load_si256((const __m256i *)(g_stream + i + 32)));
            a2 = _mm256_or_si256(a2, _mm256_load_si256((const __m256i *)(g_stream + i + 64)));
            a3 = _mm256_or_si256(a3, _mm256_load_si256((const __m256i *)(g_stream + i + 96)));
        }
        a0 = _mm256_or_si256(_mm256_or_si256(a0, a1), _mm256_or_si256(a2, a3));
        g_sink += _mm256_extract_epi32(a0, 0);
        it++;
    } while (now_s() - t0 < o->batch_ms * 1e-3);
    return (double)STREAM_BYTES * it / (now_s() - t0) * 1e-9;
}

/* Median streaming-read GB/s over reps batches. */
static double stream_read_gbs(const struct opts *o)
{
    double g[16];
    unsigned n = o->reps < 16 ? o->reps : 16;
    for (unsigned r = 0; r < n; r++)
        g[r] = stream_batch(o);
    return median(g, n);
}

struct ctxpages {
    struct kv_layout l;
    unsigned layer; /* the attended layer (the middle one) */
    uint8_t *pages;
    size_t map_bytes;
    struct kv_attn_block *bt;
    unsigned nblk;
    size_t bytes; /* effective bytes per call */
};

/* Pages of the full model geometry (all layers) at their real stride in one mapping; only the
 * attended layer's slice is written (the others are never touched, so cost no memory): it is
 * copied from a one-layer page quantized by kv_quant_page, which has the same slice layout. */
static int build(struct ctxpages *c, int fmt, unsigned n_ctx, const struct opts *o)
{
    unsigned T = o->page_tokens;
    struct kv_layout l1 = {.n_layers = 1,
                           .n_kv_heads = 3,
                           .head_dim = 64,
                           .page_tokens = (uint16_t)T,
                           .k_fmt = (uint8_t)fmt,
                           .v_fmt = (uint8_t)fmt,
                           .group = 16};
    struct kv_layout l = l1;
    l.n_layers = (uint16_t)o->layers;
    size_t pb = kv_page_bytes(&l), pb1 = kv_page_bytes(&l1);
    if (!pb || !pb1)
        return -EINVAL;
    c->l = l;
    c->layer = o->layers / 2;
    c->nblk = (n_ctx + T - 1) / T;
    c->map_bytes = c->nblk * pb;
    c->pages = map_anon(c->map_bytes, o->huge);
    if (!c->pages)
        return -ENOMEM;
    c->bt = calloc(c->nblk, sizeof(*c->bt));
    float *src = malloc((size_t)T * 3 * 64 * sizeof(float));
    uint8_t *one = aligned_alloc(64, pb1);
    if (!c->bt || !src || !one) {
        free(src);
        free(one);
        return -ENOMEM;
    }
    size_t off = kv_seg_offset(&l, c->layer, 0, 0);
    uint32_t s = 12345;
    int rc = 0;
    for (unsigned b = 0; b < c->nblk && rc == 0; b++) {
        for (size_t i = 0; i < (size_t)T * 3 * 64; i++) {
            s = s * 1664525u + 1013904223u;
            src[i] = (float)((s >> 8) * (1.0 / 8388608.0) - 1.0);
        }
        struct kv_src k = {
            .base = src, .dtype = KV_DT_F32, .tok_stride = 3 * 64, .head_stride = 64};
        rc = kv_quant_page(&l1, one, &k, &k, T);
        memcpy(c->pages + b * pb + off, one, pb1);
        c->bt[b].page = c->pages + b * pb;
        c->bt[b].n_tokens = b + 1 < c->nblk ? T : n_ctx - b * T;
    }
    free(src);
    free(one);
    /* bytes read: data + scales of the valid tokens, per token and head, K and V */
    double per_tok = 0.0;
    for (int kind = 0; kind < 2; kind++) {
        int f = kind ? l.v_fmt : l.k_fmt;
        size_t data = (size_t)T * 64 * kv_fmt_bits(f) / 8;
        size_t scales = kv_seg_bytes(f, &l) - data; /* includes padding: a slight overcount */
        per_tok += (double)(data + scales) / T;
    }
    c->bytes = (size_t)(per_tok * 3 * n_ctx);
    return rc;
}

static void unbuild(struct ctxpages *c)
{
    if (c->pages)
        unmap_anon(c->pages, c->map_bytes);
    free(c->bt);
}

/* Time of one batch (at least batch_ms) of fn(arg) calls, seconds per call. */
static double batch_time(const struct opts *o, void (*fn)(const void *), const void *arg)
{
    double t0 = now_s();
    unsigned it = 0;
    do {
        fn(arg);
        it++;
    } while (now_s() - t0 < o->batch_ms * 1e-3);
    return (now_s() - t0) / it;
}

static void call_decode(const void *a)
{
    kv_attn_decode(a);
}

static double batch_decode(const struct opts *o, const struct kv_attn_args *a)
{
    return batch_time(o, call_decode, a);
}

/* One decode query of nqh heads over c's pages: q (filled here) and out hold nqh * 64 floats. */
static struct kv_attn_args decode_args(const struct ctxpages *c, unsigned nqh, float *q, float *out)
{
    for (unsigned i = 0; i < nqh * 64; i++)
        q[i] = (float)sin(i * 0.37) * 2.0f;
    return (struct kv_attn_args){.layout = &c->l,
                                 .layer = c->layer,
                                 .n_q_heads = nqh,
                                 .n_q = 1,
                                 .q = q,
                                 .out = out,
                                 .blocks = c->bt,
                                 .n_blocks = c->nblk};
}

/* Median seconds per decode call. */
static double time_decode(const struct opts *o, struct ctxpages *c, unsigned nqh, int scores)
{
    float q[9 * 64], out[9 * 64];
    float *sc = scores ? calloc((size_t)3 * c->l.page_tokens * c->nblk, sizeof(float)) : NULL;
    struct kv_attn_args a = decode_args(c, nqh, q, out);
    a.scores = sc;
    double t[16];
    if (kv_attn_decode(&a) != 0) { /* warm-up, and the pages come into cache/TLB */
        free(sc);
        return NAN;
    }
    for (unsigned r = 0; r < o->reps && r < 16; r++)
        t[r] = batch_decode(o, &a);
    free(sc);
    return median(t, o->reps < 16 ? o->reps : 16);
}

/*
 * The kernel's own memory floor: a plain read of exactly the segments one decode call reads (K and
 * V of the attended layer, data and scales, every KV head), in the kernel's order (windows of 64
 * tokens; per window KV head by KV head, its keys then its values) and with its prefetch of the
 * next window (each page's layer region in address order, spread evenly over the window's 8-row
 * groups), and no arithmetic. The pages' layout (one page holds all layers of its tokens, so one
 * layer is a 6.4 KiB (FP8) or 12 KiB (F16) region per 16-token page at the page stride) caps this
 * below the streaming read at small pages; xread says how close the kernel comes to it. It
 * follows the kernel for page sizes that divide 64 (whole pages per window); for others kvbench
 * prints no xread.
 */
__attribute__((target("avx2"))) static void read_segments(const struct ctxpages *c)
{
    const struct kv_layout *l = &c->l;
    unsigned per_win = 64 / l->page_tokens ? 64 / l->page_tokens : 1, nkv = l->n_kv_heads;
    unsigned groups = l->page_tokens / 8; /* 8-row groups of a segment */
    size_t sb[2] = {kv_seg_bytes(l->k_fmt, l), kv_seg_bytes(l->v_fmt, l)};
    size_t region = nkv * (sb[0] + sb[1]), off = kv_seg_offset(l, c->layer, KV_KIND_K, 0);
    /* the next window's lines, evenly over the window's steps (one per 8-row group read) */
    size_t lines = per_win * ((region + 63) / 64), steps = (size_t)nkv * 2 * per_win * groups;
    __m256i acc = _mm256_setzero_si256();
    for (unsigned b0 = 0; b0 < c->nblk; b0 += per_win) {
        unsigned pb = b0 + per_win, pe = b0 + 2 * per_win < c->nblk ? b0 + 2 * per_win : c->nblk;
        size_t pi = 0, due = 0; /* next line of the next window's regions; lines owed x steps */
        for (unsigned h = 0; h < nkv; h++)
            for (unsigned kind = 0; kind < 2; kind++)
                for (unsigned b = b0; b < b0 + per_win && b < c->nblk; b++) {
                    const uint8_t *s = c->bt[b].page + kv_seg_offset(l, c->layer, kind, h);
                    for (unsigned g = 0; g < groups; g++) {
                        for (due += lines; due >= steps && pb < pe; due -= steps) {
                            _mm_prefetch((const char *)c->bt[pb].page + off + pi, _MM_HINT_T1);
                            if ((pi += 64) >= region)
                                pi = 0, pb++;
                        }
                        size_t g0 = sb[kind] * g / groups, g1 = sb[kind] * (g + 1) / groups;
                        for (size_t i = g0 & ~(size_t)31; i + 32 <= g1; i += 32)
                            acc =
                                _mm256_or_si256(acc, _mm256_loadu_si256((const __m256i *)(s + i)));
                    }
                }
    }
    g_sink += _mm256_extract_epi32(acc, 0);
}

static void call_read(const void *c)
{
    read_segments(c);
}

/* Quartiles (25th, 50th, 75th percentile) of v[0..n), sorting v. */
static void quartiles(double *v, unsigned n, double q[3])
{
    qsort(v, n, sizeof(double), cmp_d);
    q[0] = v[n / 4];
    q[1] = median(v, n);
    q[2] = v[(3 * n) / 4 < n ? (3 * n) / 4 : n - 1];
}

/*
 * One row, timed in rounds of alternating batches: F16, the format (cx; NULL: the F16 row itself)
 * and a streaming read. *tx = median seconds per call of the format; ratio = quartiles of the
 * per-round speed-ups t(F16)/t(format); xs = quartiles of the per-round fractions of the streaming
 * read's bandwidth; xr = quartiles of t(read_segments)/t(format). Batches a few tens of
 * milliseconds apart see the same machine, so the ratios hold still on a shared host where each
 * time alone drifts by 30% from one second to the next (and the memory bandwidth with it).
 */
static void time_row(const struct opts *o, struct ctxpages *c16, struct ctxpages *cx, unsigned nqh,
                     double *tx, double ratio[3], double xs[3], double xr[3])
{
    float q[9 * 64], out16[9 * 64], outx[9 * 64];
    struct ctxpages *c = cx ? cx : c16;
    struct kv_attn_args a16 = decode_args(c16, nqh, q, out16), ax = decode_args(c, nqh, q, outx);
    unsigned n = o->reps < 16 ? o->reps : 16;
    double t[16], r[16], x[16], y[16];
    if (kv_attn_decode(&a16) != 0 || kv_attn_decode(&ax) != 0) {
        *tx = ratio[0] = ratio[1] = ratio[2] = xs[0] = xs[1] = xs[2] = xr[0] = xr[1] = xr[2] = NAN;
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        double t16 = batch_decode(o, &a16);
        t[i] = cx ? batch_decode(o, &ax) : t16;
        r[i] = t16 / t[i];
        x[i] = (double)c->bytes / t[i] * 1e-9 / stream_batch(o);
        y[i] = 64 % c->l.page_tokens ? NAN : batch_time(o, call_read, c) / t[i];
    }
    *tx = median(t, n);
    quartiles(r, n, ratio);
    quartiles(x, n, xs);
    quartiles(y, n, xr);
}

/*
 * Causal prefill of the last nq positions of the context in one kv_attn_prefill call, against nq
 * kv_attn_decode calls over the growing prefixes (what an unblocked prefill would do). Prints
 * both times (3:1, 9 query heads).
 */
static void time_prefill(struct ctxpages *c, unsigned n_ctx, unsigned nq)
{
    float *q = malloc((size_t)nq * 9 * 64 * sizeof(float));
    float *out = malloc((size_t)nq * 9 * 64 * sizeof(float));
    struct kv_attn_block *bt = malloc(c->nblk * sizeof(*bt));
    if (!q || !out || !bt)
        goto out_free;
    for (size_t i = 0; i < (size_t)nq * 9 * 64; i++)
        q[i] = (float)sin(i * 0.37) * 2.0f;
    struct kv_attn_args a = {.layout = &c->l,
                             .layer = c->layer,
                             .n_q_heads = 9,
                             .n_q = nq,
                             .q = q,
                             .out = out,
                             .blocks = c->bt,
                             .n_blocks = c->nblk};
    double t0 = now_s();
    if (kv_attn_prefill(&a) != 0)
        goto out_free;
    double tp = now_s() - t0;
    t0 = now_s();
    unsigned T = c->l.page_tokens;
    for (unsigned i = 0; i < nq; i++) { /* query i sees the first n_ctx - nq + i + 1 tokens */
        unsigned len = n_ctx - nq + i + 1, nb = (len + T - 1) / T;
        memcpy(bt, c->bt, nb * sizeof(*bt));
        bt[nb - 1].n_tokens = len - (nb - 1) * T;
        struct kv_attn_args d = a;
        d.n_q = 1;
        d.q = q + (size_t)i * 9 * 64;
        d.out = out + (size_t)i * 9 * 64;
        d.blocks = bt;
        d.n_blocks = nb;
        kv_attn_decode(&d);
    }
    double td = now_s() - t0;
    printf("prefill %u queries at ctx %u (%s, 3:1): one kv_attn_prefill %.1f ms, %u decode calls "
           "%.1f ms (%.2fx)\n",
           nq, n_ctx, kv_fmt_name(c->l.k_fmt), tp * 1e3, nq, td * 1e3, td / tp);
out_free:
    free(q);
    free(out);
    free(bt);
}

int main(int argc, char **argv)
{
    struct opts o = {.batch_ms = 20, .reps = 9, .layers = 30};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--page-tokens") && i + 1 < argc && o.n_pt < 4)
            o.pts[o.n_pt++] = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch-ms") && i + 1 < argc)
            o.batch_ms = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prefill") && i + 1 < argc)
            o.prefill = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fmt") && i + 1 < argc)
            o.only_fmt = kv_fmt_parse(argv[++i]);
        else if (!strcmp(argv[i], "--ratio") && i + 1 < argc)
            o.only_g = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--huge"))
            o.huge = 1;
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            o.layers = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            o.reps = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc && o.n_ctx < 8)
            o.ctx[o.n_ctx++] = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tier") && i + 1 < argc) {
            i++;
            if (kv_attn_set_tier(!strcmp(argv[i], "scalar") ? KV_ATTN_TIER_SCALAR
                                                            : KV_ATTN_TIER_AVX2) != 0) {
                fprintf(stderr, "kvbench-attn: tier %s not supported here\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr,
                    "usage: kvbench-attn [--page-tokens N]... [--layers L] [--batch-ms M] "
                    "[--reps R] [--ctx N]... [--fmt NAME] [--prefill NQ] [--tier scalar|avx2] "
                    "[--ratio 3|1] [--huge]\n");
            return 2;
        }
    }
    if (!o.n_ctx) {
        o.ctx[0] = 1024;
        o.ctx[1] = 8192;
        o.ctx[2] = 32768;
        o.n_ctx = 3;
    }
    if (o.only_g != 0 && o.only_g != 1 && o.only_g != 3) {
        fprintf(stderr, "kvbench-attn: --ratio is 3 or 1\n");
        return 2;
    }
    if (o.only_fmt < 0) {
        fprintf(stderr, "kvbench-attn: unknown format\n");
        return 2;
    }
    if (!o.n_pt) { /* the small pages of the examples, and pages whose layer slices read well */
        o.pts[0] = 16;
        o.pts[1] = 64;
        o.n_pt = 2;
    }
    for (unsigned pi = 0; pi < o.n_pt; pi++)
        if (o.pts[pi] == 0 || o.pts[pi] > KV_MAX_PAGE_TOKENS || o.pts[pi] % 16) {
            fprintf(stderr, "kvbench-attn: page tokens must be a multiple of 16 (KIVI group)\n");
            return 2;
        }
    if (!o.reps || o.layers == 0 || o.layers > KV_MAX_LAYERS) {
        fprintf(stderr, "kvbench-attn: --reps and --layers must be at least 1\n");
        return 2;
    }

    g_stream = map_anon(STREAM_BYTES, o.huge);
    if (!g_stream) {
        fprintf(stderr, "kvbench-attn: no memory for the streaming read\n");
        return 1;
    }
    memset(g_stream, 1, STREAM_BYTES);
    double sr0 = stream_read_gbs(&o);
    printf("kvbench-attn: decode attention, 1 thread, tier %s, 3 KV heads x 64 ch, pages of %u "
           "layers (layer %u attended)\n",
           kv_attn_get_tier() == KV_ATTN_TIER_AVX2 ? "avx2" : "scalar", o.layers, o.layers / 2);
    printf("streaming read (256 MiB, 1 thread): %.1f GB/s\n", sr0);

    long huge_pages_kb = 0;
    size_t huge_pages_mb = 0;
    int fmts[] = {KV_FMT_F16,  KV_FMT_BF16, KV_FMT_FP8_E4M3, KV_FMT_FP8_E5M2,
                  KV_FMT_INT8, KV_FMT_INT4, KV_FMT_KIVI4,    KV_FMT_KIVI2};
    for (unsigned pi = 0; pi < o.n_pt; pi++) {
        o.page_tokens = o.pts[pi];
        printf("%s%u-token pages: one layer's K and V in a page are %.1f KiB in FP8, %.1f KiB in "
               "F16, read at the page stride\n\n",
               pi ? "" : "\n", o.page_tokens, o.page_tokens * 3 * 2 * (64 + 4) / 1024.0,
               o.page_tokens * 3 * 2 * 128 / 1024.0);
        printf("%-9s %6s %5s %10s %9s %8s %8s %7s %6s  %s\n", "format", "ctx", "q:kv", "us/call",
               "Mtok/s", "GB/s", "xF16", "xstream", "xread", "(quartiles: xF16, xstream, xread)");
        for (unsigned ci = 0; ci < o.n_ctx; ci++) {
            struct ctxpages c16; /* the baseline, kept for the paired timings */
            memset(&c16, 0, sizeof(c16));
            if (build(&c16, KV_FMT_F16, o.ctx[ci], &o) != 0) {
                fprintf(stderr, "kvbench-attn: cannot build f16 pages\n");
                unbuild(&c16);
                return 1;
            }
            if (ci == 0 && pi == 0) { /* for the --huge line at the end */
                huge_pages_kb = huge_kb(c16.pages);
                huge_pages_mb = c16.map_bytes >> 20;
            }
            for (unsigned fi = 0; fi < sizeof(fmts) / sizeof(fmts[0]); fi++) {
                struct ctxpages c;
                if (o.only_fmt && fmts[fi] != KV_FMT_F16 && fmts[fi] != o.only_fmt)
                    continue; /* F16 always runs: it is the baseline */
                memset(&c, 0, sizeof(c));
                if (fi > 0 && build(&c, fmts[fi], o.ctx[ci], &o) != 0) {
                    fprintf(stderr, "kvbench-attn: cannot build %s pages\n", kv_fmt_name(fmts[fi]));
                    unbuild(&c);
                    unbuild(&c16);
                    return 1;
                }
                struct ctxpages *cx = fi > 0 ? &c : &c16;
                for (unsigned ri = 0; ri < 2; ri++) {
                    unsigned nqh = ri == 0 ? 9 : 3;
                    if (o.only_g && nqh != 3 * o.only_g)
                        continue;
                    double t, r[3], x[3], y[3];
                    time_row(&o, &c16, fi > 0 ? cx : NULL, nqh, &t, r, x, y);
                    printf("%-9s %6u %5s %10.1f %9.2f %8.1f %8.2f %7.2f ", kv_fmt_name(fmts[fi]),
                           o.ctx[ci], ri == 0 ? "3:1" : "1:1", t * 1e6, o.ctx[ci] / t * 1e-6,
                           cx->bytes / t * 1e-9, r[1], x[1]);
                    if (isnan(y[1]))
                        printf("%6s  ", "-");
                    else
                        printf("%6.2f  ", y[1]);
                    if (fi > 0)
                        printf("(%.2f-%.2f) ", r[0], r[2]);
                    else
                        printf("%11s ", "");
                    printf("(%.2f-%.2f) ", x[0], x[2]);
                    if (isnan(y[1]))
                        printf("\n");
                    else
                        printf("(%.2f-%.2f)\n", y[0], y[2]);
                }
                if (o.prefill && o.prefill <= o.ctx[ci])
                    time_prefill(cx, o.ctx[ci], o.prefill);
                if ((fmts[fi] == KV_FMT_FP8_E4M3 || fmts[fi] == KV_FMT_F16) && o.only_g != 1) {
                    double t = time_decode(&o, cx, 9, 1);
                    printf("%-9s %6u %5s %10.1f %9.2f %8.1f %8s %7s  (+ H2O scores)\n",
                           kv_fmt_name(fmts[fi]), o.ctx[ci], "3:1", t * 1e6, o.ctx[ci] / t * 1e-6,
                           cx->bytes / t * 1e-9, "", "");
                }
                if (fi > 0)
                    unbuild(&c);
            }
            unbuild(&c16);
            printf("\n");
        }
    }
    printf("streaming read again at the end: %.1f GB/s\n", stream_read_gbs(&o));
    if (o.huge) {
        long skb = huge_kb(g_stream);
        if (huge_pages_kb < 0 || skb < 0)
            printf("--huge: how much 2 MiB pages backed is unknown (no AnonHugePages in smaps)\n");
        else
            printf("--huge: 2 MiB pages backed %ld of the %zu MiB of the first context's F16 "
                   "pages, %ld of the %u MiB streaming buffer\n",
                   huge_pages_kb / 1024, huge_pages_mb, skb / 1024, STREAM_BYTES >> 20);
    }
    unmap_anon(g_stream, STREAM_BYTES);
    return 0;
}
