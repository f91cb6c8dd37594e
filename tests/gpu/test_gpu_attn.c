/*
 * test_gpu_attn.c - kv_attn_cuda (kernels/attn.cu) against the CPU fp64 reference, with the bound
 * (1) derived in tests/attn/attn_th.h (it holds for any summation order), for every format, GQA
 * 1:1 / 3:1 / 8:1, partial pages, tails, prefill and scores. Skips (cr_skip_test) when
 * cudaGetDeviceCount fails (no driver: error 35) or finds no device. Also prints decode throughput
 * at 32k context beside a device-to-device cudaMemcpy of the same bytes (not asserted).
 */
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_th.h"
#include "kv_quant.h"

#define CK(x) cr_assert_eq((x), cudaSuccess, "%s", #x)

static void need_device(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        cr_skip_test("no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
}

static void *to_dev(const void *src, size_t n)
{
    void *d = NULL;
    CK(cudaMalloc(&d, n ? n : 1));
    if (n)
        CK(cudaMemcpy(d, src, n, cudaMemcpyHostToDevice));
    return d;
}

static void check_gpu(const struct th_cfg *cfg)
{
    struct th_case c;
    th_build(&c, cfg);
    unsigned d = cfg->d, nqh = cfg->nkv * cfg->g, nq = cfg->n_q;
    size_t n = c.n_ctx, pb = kv_page_bytes(&c.l), rowf = (size_t)cfg->nkv * d;
    size_t esz = cfg->tail_f16 ? 2 : 4, nout = (size_t)nq * nqh * d;

    double *ref = malloc(nout * sizeof(double)), *p64 = malloc(nq * nqh * (n ? n : 1) * 8);
    float *out = malloc(nout * sizeof(float)), *sh = calloc(nqh * (n ? n : 1), sizeof(float));
    cr_assert(ref && p64 && out && sh);
    cr_assert_eq(kv_attn_ref(&c.a, ref, p64), 0);

    uint8_t *dpages = to_dev(c.pages, cfg->nblk * pb);
    struct kv_attn_block bt[TH_MAX_BLOCKS];
    for (unsigned b = 0; b < cfg->nblk; b++) {
        bt[b] = c.bt[b];
        bt[b].page = dpages + (c.bt[b].page - c.pages);
    }
    struct kv_attn_args a = c.a;
    a.blocks = cfg->nblk ? bt : NULL;
    a.q = to_dev(c.q, nout * sizeof(float));
    CK(cudaMalloc((void **)&a.out, nout * sizeof(float)));
    a.tail_k = cfg->n_tail ? to_dev(c.tk, cfg->n_tail * rowf * esz) : NULL;
    a.tail_v = cfg->n_tail ? to_dev(c.tv, cfg->n_tail * rowf * esz) : NULL;
    a.scores_head = to_dev(sh, nqh * (n ? n : 1) * sizeof(float));
    cr_assert_eq(kv_attn_cuda(&a, NULL), 0);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(out, a.out, nout * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(sh, a.scores_head, nqh * (n ? n : 1) * sizeof(float), cudaMemcpyDeviceToHost));

    for (unsigned h = 0; h < nqh; h++) {
        double tot = 0.0, tol_sum = 0.0;
        for (unsigned qi = 0; qi < nq; qi++) {
            double otol, prel, stol;
            th_kernel_bound(&c, qi, h, &otol, &prel, &stol);
            tol_sum += stol;
            for (unsigned ch = 0; ch < d; ch++) {
                size_t i = ((size_t)qi * nqh + h) * d + ch;
                cr_assert(fabs(out[i] - ref[i]) <= otol, "q %u head %u ch %u: %.9g vs %.9g", qi, h,
                          ch, out[i], ref[i]);
            }
        }
        for (size_t j = 0; j < n; j++)
            tot += sh[h * n + j];
        if (n)
            cr_assert(fabs(tot - nq) <= tol_sum, "head %u: mass %.9g for %u queries", h, tot, nq);
    }
    cudaFree(dpages);
    cudaFree((void *)a.q);
    cudaFree(a.out);
    cudaFree((void *)a.tail_k);
    cudaFree((void *)a.tail_v);
    cudaFree(a.scores_head);
    free(ref);
    free(p64);
    free(out);
    free(sh);
    th_free(&c);
}

static struct th_cfg base(int kf, int vf)
{
    struct th_cfg c = {.nkv = 2,
                       .g = 3,
                       .d = 64,
                       .T = 32,
                       .kf = kf,
                       .vf = vf,
                       .group = 16,
                       .n_layers = 2,
                       .layer = 1,
                       .nblk = 3,
                       .n_tail = 5,
                       .n_q = 1};
    c.blk_tokens[2] = 20;
    return c;
}

Test(gpu_attn, every_format_decode)
{
    need_device();
    int f[] = {KV_FMT_F16,  KV_FMT_BF16, KV_FMT_FP8_E4M3, KV_FMT_FP8_E5M2,
               KV_FMT_INT8, KV_FMT_INT4, KV_FMT_KIVI4,    KV_FMT_KIVI2};
    for (unsigned i = 0; i < 8; i++) {
        struct th_cfg c = base(f[i], f[i]);
        check_gpu(&c);
    }
}

Test(gpu_attn, gqa_partial_pages_prefill)
{
    need_device();
    struct th_cfg c = base(KV_FMT_FP8_E4M3, KV_FMT_INT4);
    c.g = 1;
    c.nkv = 4;
    c.tail_f16 = 1;
    check_gpu(&c);
    c = base(KV_FMT_KIVI4, KV_FMT_FP8_E4M3);
    c.g = 8;
    c.nkv = 1;
    c.nblk = 4;
    unsigned t[] = {32, 7, 19, 1};
    memcpy(c.blk_tokens, t, sizeof(t));
    check_gpu(&c);
    c = base(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    c.n_tail = 30;
    c.n_q = 40; /* causal prefill across pages and tail */
    check_gpu(&c);
}

/* Throughput at the reference geometry, 32k tokens of FP8 vs F16, beside cudaMemcpy D2D. */
Test(gpu_attn, throughput_report)
{
    need_device();
    const unsigned T = 16, nblk = 2048;
    int fmts[2] = {KV_FMT_F16, KV_FMT_FP8_E4M3};
    double ms_f[2] = {0, 0};
    for (int fi = 0; fi < 2; fi++) {
        struct kv_layout l = {1, 3, 64, (uint16_t)T, (uint8_t)fmts[fi], (uint8_t)fmts[fi], 16};
        size_t pb = kv_page_bytes(&l);
        uint8_t *dp, *dp2;
        CK(cudaMalloc((void **)&dp, nblk * pb));
        CK(cudaMalloc((void **)&dp2, nblk * pb));
        CK(cudaMemset(dp, 0x11, nblk * pb)); /* finite codes and scales: timing only */
        struct kv_attn_block *bt = malloc(nblk * sizeof(*bt));
        for (unsigned b = 0; b < nblk; b++)
            bt[b] = (struct kv_attn_block){dp + b * pb, T};
        float *q, *o;
        CK(cudaMalloc((void **)&q, 9 * 64 * 4));
        CK(cudaMemset(q, 0, 9 * 64 * 4));
        CK(cudaMalloc((void **)&o, 9 * 64 * 4));
        struct kv_attn_args a = {.layout = &l,
                                 .n_q_heads = 9,
                                 .n_q = 1,
                                 .q = q,
                                 .out = o,
                                 .blocks = bt,
                                 .n_blocks = nblk};
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        cr_assert_eq(kv_attn_cuda(&a, NULL), 0);
        CK(cudaEventRecord(e0, NULL));
        for (int r = 0; r < 20; r++)
            kv_attn_cuda(&a, NULL);
        CK(cudaEventRecord(e1, NULL));
        CK(cudaEventSynchronize(e1));
        float ms, mc;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        CK(cudaEventRecord(e0, NULL));
        for (int r = 0; r < 20; r++)
            cudaMemcpyAsync(dp2, dp, nblk * pb, cudaMemcpyDeviceToDevice, NULL);
        CK(cudaEventRecord(e1, NULL));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&mc, e0, e1));
        ms_f[fi] = ms / 20;
        printf("gpu_attn: %s 32k ctx 3:1 decode %.3f ms/call, %.1f GB/s of pages; "
               "cudaMemcpy D2D %.1f GB/s (read+write)\n",
               kv_fmt_name(fmts[fi]), ms / 20, nblk * pb / (ms / 20) * 1e-6,
               2.0 * nblk * pb / (mc / 20) * 1e-6);
        cudaFree(dp);
        cudaFree(dp2);
        cudaFree(q);
        cudaFree(o);
        free(bt);
    }
    printf("gpu_attn: fp8_e4m3 / f16 speed-up at 32k: %.2fx\n", ms_f[0] / ms_f[1]);
}
