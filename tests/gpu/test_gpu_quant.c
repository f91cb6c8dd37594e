/*
 * test_gpu_quant.c - the CUDA quantizer/dequantizer against the CPU reference tier: pages must be
 * byte-identical and dequantized floats bit-identical, for every format, head dims 64 and 128,
 * f32/f16/bf16 sources with padded strides, full and partial pages. Skips (cr_skip_test) when
 * cudaGetDeviceCount fails (no driver: error 35) or finds no device. Also prints the kernels'
 * throughput beside a device-to-device cudaMemcpy of the same f32 bytes (not asserted).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_quant_cuda.h"

static void need_device(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        cr_skip_test("no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
}

#define CK(x) cr_assert_eq((x), cudaSuccess, "%s", #x)

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void one_case(int fmt, unsigned D, unsigned T, unsigned G, int dtype, unsigned ntok)
{
    const unsigned L = 2, H = 3, pad = 16;
    struct kv_layout l = {L, H, D, T, (uint8_t)fmt, (uint8_t)fmt, (uint16_t)G};
    size_t pb = kv_page_bytes(&l), esz = dtype == KV_DT_F32 ? 4 : 2;
    cr_assert(pb > 0);
    /* source [layer][tok][head][D + pad], K with outlier channels */
    size_t rs = D + pad, n = (size_t)L * T * H * rs;
    uint8_t *src = malloc(n * esz * 2);
    uint64_t s = 42 + (uint64_t)fmt * 131 + D + T + (uint64_t)dtype;
    for (size_t i = 0; i < 2 * n; i++) {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        float x = (float)(int32_t)((s * 0x2545f4914f6cdd1dull) >> 32) * 0x1p-31f * 3.0f;
        if (i < n && i % rs % 16 == 5)
            x = x * 10.0f + 30.0f;
        if (dtype == KV_DT_F32)
            ((float *)src)[i] = x;
        else
            ((uint16_t *)src)[i] = dtype == KV_DT_F16 ? kv_f16_from_f32(x) : kv_bf16_from_f32(x);
    }
    struct kv_src k = {src, dtype, (ptrdiff_t)(T * H * rs), (ptrdiff_t)(H * rs), (ptrdiff_t)rs, 0};
    struct kv_src v = k;
    v.base = src + n * esz;
    uint8_t *cpu = malloc(pb), *gpu = malloc(pb);
    cr_assert_eq(kv_quant_set_tier(KV_TIER_REF), 0);
    cr_assert_eq(kv_quant_page(&l, cpu, &k, &v, ntok), 0);

    void *dsrc, *dpage;
    float *dout;
    size_t on = (size_t)L * T * H * D;
    CK(cudaMalloc(&dsrc, n * esz * 2));
    CK(cudaMalloc(&dpage, pb));
    CK(cudaMalloc((void **)&dout, on * 2 * sizeof(float)));
    CK(cudaMemcpy(dsrc, src, n * esz * 2, cudaMemcpyHostToDevice));
    struct kv_src dk = k, dv = v;
    dk.base = dsrc;
    dv.base = (uint8_t *)dsrc + n * esz;
    cr_assert_eq(kv_quant_page_cuda(&l, dpage, &dk, &dv, ntok, 0), 0);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(gpu, dpage, pb, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < pb; i++)
        cr_assert_eq(gpu[i], cpu[i], "%s D%u T%u dt%d ntok %u: page byte %zu: gpu %02x cpu %02x",
                     kv_fmt_name(fmt), D, T, dtype, ntok, i, gpu[i], cpu[i]);

    /* dequantize the same page on both */
    struct kv_dst kd = {dout, (ptrdiff_t)T * H * D, (ptrdiff_t)H * D, D}, vd = kd;
    vd.base = dout + on;
    cr_assert_eq(kv_dequant_page_cuda(&l, dpage, 0, ntok, &kd, &vd, 0), 0);
    float *hg = malloc(on * 2 * sizeof(float)), *hc = calloc(on * 2, sizeof(float));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(hg, dout, on * 2 * sizeof(float), cudaMemcpyDeviceToHost));
    struct kv_dst hk = kd, hv = vd;
    hk.base = hc, hv.base = hc + on;
    cr_assert_eq(kv_dequant_page(&l, cpu, 0, ntok, &hk, &hv), 0);
    for (size_t i = 0; i < 2 * on; i++)
        if ((i % on) / (H * D) % T < ntok)
            cr_assert(f2u(hg[i]) == f2u(hc[i]) || (isnan(hg[i]) && isnan(hc[i])),
                      "%s dequant elem %zu: gpu %g cpu %g", kv_fmt_name(fmt), i, hg[i], hc[i]);
    cudaFree(dsrc), cudaFree(dpage), cudaFree(dout);
    free(src), free(cpu), free(gpu), free(hg), free(hc);
}

Test(gpu_quant, matches_cpu_reference)
{
    need_device();
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++)
        for (int dt = KV_DT_F32; dt <= KV_DT_BF16; dt++) {
            one_case(fmt, 128, 32, 16, dt, 32);
            one_case(fmt, 64, 64, 32, dt, 40);
        }
}

Test(gpu_quant, rejects_bad_arguments)
{
    need_device();
    struct kv_layout l = {1, 1, 64, 16, KV_FMT_FP8_E4M3, KV_FMT_KIVI4, 16};
    struct kv_src s = {(void *)16, KV_DT_F32, 0, 64, 0, 0};
    cr_assert_eq(kv_quant_page_cuda(&l, (void *)64, &s, &s, 17, 0), -EINVAL);
    s.static_scale = 2.0f; /* static scale on KIVI values */
    cr_assert_eq(kv_quant_page_cuda(&l, (void *)64, &s, &s, 16, 0), -EINVAL);
    l.group = 12;
    cr_assert_eq(kv_dequant_page_cuda(&l, (void *)64, 0, 1, NULL, NULL, 0), -EINVAL);
}

/* Throughput beside a device-to-device copy of the same f32 bytes: printed, never asserted. */
Test(gpu_quant, throughput_report)
{
    need_device();
    const unsigned L = 32, H = 8, D = 128, T = 16, pages = 256;
    size_t per = (size_t)L * T * H * D, bytes = per * 2 * sizeof(float) * pages;
    float *src, *dst;
    CK(cudaMalloc((void **)&src, bytes));
    CK(cudaMalloc((void **)&dst, bytes));
    CK(cudaMemset(src, 0x3c, bytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float ms;
    CK(cudaEventRecord(e0, 0));
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
    CK(cudaEventRecord(e1, 0));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&ms, e0, e1));
    printf("gpu: D2D copy of %zu MiB: %.1f GB/s\n", bytes >> 20, bytes / ms / 1e6);
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++) {
        struct kv_layout l = {L, H, D, T, (uint8_t)fmt, (uint8_t)fmt, 16};
        size_t pb = kv_page_bytes(&l);
        uint8_t *pg;
        CK(cudaMalloc((void **)&pg, pb * pages));
        for (int op = 0; op < 2; op++) {
            for (int warm = 0; warm < 2; warm++) {
                CK(cudaEventRecord(e0, 0));
                for (unsigned p = 0; p < pages; p++) {
                    float *k = src + 2 * per * p, *ko = dst + 2 * per * p;
                    struct kv_src ks = {k, KV_DT_F32, (ptrdiff_t)T * H * D, H * D, D, 0}, vs = ks;
                    struct kv_dst kd = {ko, (ptrdiff_t)T * H * D, H * D, D}, vd = kd;
                    vs.base = k + per, vd.base = ko + per;
                    if (op == 0)
                        cr_assert_eq(kv_quant_page_cuda(&l, pg + pb * p, &ks, &vs, T, 0), 0);
                    else
                        cr_assert_eq(kv_dequant_page_cuda(&l, pg + pb * p, 0, T, &kd, &vd, 0), 0);
                }
                CK(cudaEventRecord(e1, 0));
                CK(cudaEventSynchronize(e1));
            }
            CK(cudaEventElapsedTime(&ms, e0, e1));
            printf("gpu: %-9s %-7s %.1f GB/s of f32\n", kv_fmt_name(fmt), op ? "dequant" : "quant",
                   bytes / ms / 1e6);
        }
        cudaFree(pg);
    }
    cudaFree(src), cudaFree(dst);
}
