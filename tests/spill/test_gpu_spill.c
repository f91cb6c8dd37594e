/*
 * test_gpu_spill.c - the spill store with a GPU arena: pages live in device memory, staging
 * buffers (also the io_uring registered buffers) are pinned host memory from cudaHostAlloc. Spill
 * from a device page, restore into another device page, compare on the host; an F16 page goes out
 * demoted and comes back marked. Skips when there is no CUDA device (or no driver).
 */
#include <cuda_runtime_api.h>

#include "spill_th.h"

static void need_device(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);

    if (e != cudaSuccess || n == 0)
        cr_skip_test("no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
}

static void gpu_roundtrip(int kf, int vf, int sync)
{
    char dir[PATH_MAX], path[PATH_MAX + 16], why[256];
    struct kv_layout l = th_layout(kf, vf);
    size_t pb = kv_page_bytes(&l);
    uint8_t *host = malloc(pb), *back = malloc(pb);
    void *dsrc, *ddst;
    struct th_rec *rec = calloc(1, sizeof *rec);
    struct kv_spill_cfg cfg = {.path = path,
                               .bytes = 1 << 20,
                               .max_page_bytes = TH_MAX_PAGE,
                               .queue_depth = 4,
                               .force_sync = sync,
                               .gpu_staging = 1};
    struct kv_spill_meta m = th_meta(&l, 7);
    struct kv_spill *s;
    int slot;

    need_device();
    th_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/store", dir);
    cr_assert_eq(cudaMalloc(&dsrc, pb), cudaSuccess);
    cr_assert_eq(cudaMalloc(&ddst, pb), cudaSuccess);
    th_fill(host, pb, 7);
    if (kv_fmt_bits(kf) > 8) /* keep f16 codes finite: clear each exponent's top bit */
        for (size_t i = 1; i < pb; i += 2)
            host[i] &= 0xbf;
    cr_assert_eq(cudaMemcpy(dsrc, host, pb, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(kv_spill_open(&s, &cfg, why, sizeof why), 0, "%s", why);
    kv_spill_scan(s, NULL, NULL);
    slot = kv_spill_write(s, &m, dsrc, th_cookie(0));
    cr_assert_geq(slot, 0, "%s", strerror(-slot));
    cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
    cr_assert_eq(rec->res[0], 0);
    cr_assert_eq(kv_spill_read(s, (uint32_t)slot, m.hash, &l, ddst, th_cookie(1)), 0);
    cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
    cr_assert_eq(rec->res[1], 0);
    cr_assert_eq(cudaMemcpy(back, ddst, pb, cudaMemcpyDeviceToHost), cudaSuccess);
    if (kv_fmt_bits(kf) <= 8) {
        cr_assert_eq(rec->flags[1], 0);
        cr_assert(memcmp(host, back, pb) == 0, "device page not bit-exact after restore");
    } else {
        cr_assert_eq(rec->flags[1], KV_SPILL_F_DEMOTED);
    }
    kv_spill_close(s);
    cudaFree(dsrc);
    cudaFree(ddst);
    free(host), free(back), free(rec);
    th_rmdir(dir);
}

Test(gpu_spill, device_page_fp8_uring)
{
    gpu_roundtrip(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3, 0);
}

Test(gpu_spill, device_page_fp8_sync)
{
    gpu_roundtrip(KV_FMT_FP8_E4M3, KV_FMT_INT4, 1);
}

Test(gpu_spill, device_page_f16_demoted)
{
    gpu_roundtrip(KV_FMT_F16, KV_FMT_F16, 0);
}
