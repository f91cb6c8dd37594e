// test_cuda_emu.cpp - kernels/kv_quant.cu's kernels, run on host threads (cuda_emu.h), must write
// the same page bytes and dequantize to the same floats as the CPU reference, for every format,
// K and V, full and partial pages, f32/f16/bf16 sources with padded strides. Built only where the
// CUDA toolkit is (the GPU itself is not needed: tests/gpu checks the device).
#include "cuda_emu.h"

#include <criterion/criterion.h>

#include <cstdlib>
#include <cstring>

#include "../../kernels/kv_quant.cu"

static uint32_t f2u(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

static void emu_case(int fmt, unsigned D, unsigned T, unsigned G, int dtype, unsigned ntok,
                     unsigned threads)
{
    const unsigned L = 2, H = 2, pad = 8;
    kv_layout l = {(uint16_t)L,  (uint16_t)H,  (uint16_t)D, (uint16_t)T,
                   (uint8_t)fmt, (uint8_t)fmt, (uint16_t)G};
    size_t pb = kv_page_bytes(&l), esz = dtype == KV_DT_F32 ? 4 : 2, rs = D + pad;
    size_t n = (size_t)L * T * H * rs, on = (size_t)L * T * H * D;
    cr_assert(pb > 0);
    std::vector<uint8_t> src(2 * n * esz), cpu(pb), emu(pb, 0);
    uint64_t s = 7 + fmt * 31 + D + ntok + dtype;
    for (size_t i = 0; i < 2 * n; i++) {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        float x = (float)(int32_t)((s * 0x2545f4914f6cdd1dull) >> 32) * 0x1p-31f * 2.0f;
        if (i % rs % 16 == 3)
            x = x * 12.0f - 7.0f;
        if (i == 5)
            x = NAN;
        if (dtype == KV_DT_F32)
            std::memcpy(&src[i * 4], &x, 4);
        else {
            uint16_t h = dtype == KV_DT_F16 ? kv_f16_from_f32(x) : kv_bf16_from_f32(x);
            std::memcpy(&src[i * 2], &h, 2);
        }
    }
    kv_src k = {src.data(), dtype, (ptrdiff_t)(T * H * rs), (ptrdiff_t)(H * rs), (ptrdiff_t)rs, 0};
    kv_src v = k;
    v.base = src.data() + n * esz;
    cr_assert_eq(kv_quant_set_tier(KV_TIER_REF), 0);
    cr_assert_eq(kv_quant_page(&l, cpu.data(), &k, &v, ntok), 0);

    seg_geom g = geom(&l);
    uint8_t *pg = emu.data();
    emu_launch({ntok, L * H, 2}, threads, [&] { kvq_quant_rows(l, g, pg, k, v); });
    if (is_kivi_host(l.k_fmt))
        emu_launch({(ntok + g.G - 1) / g.G, L * H, 1}, threads,
                   [&] { kvq_quant_kivi_k(l, g, pg, k, ntok); });
    for (size_t i = 0; i < pb; i++)
        cr_assert_eq(emu[i], cpu[i], "%s D%u T%u dt%d ntok %u: byte %zu emu %02x cpu %02x",
                     kv_fmt_name(fmt), D, T, dtype, ntok, i, emu[i], cpu[i]);

    std::vector<float> ec(2 * on, -1.0f), cc(2 * on, -1.0f);
    kv_dst kd = {ec.data(), (ptrdiff_t)(T * H * D), (ptrdiff_t)(H * D), (ptrdiff_t)D}, vd = kd;
    vd.base = ec.data() + on;
    kv_dst hk = kd, hv = vd;
    hk.base = cc.data(), hv.base = cc.data() + on;
    unsigned tok0 = ntok > 3 ? 2 : 0;
    emu_launch({ntok - tok0, L * H, 2}, threads,
               [&] { kvq_dequant_rows(l, g, pg, tok0, kd, vd, 0, 0); });
    cr_assert_eq(kv_dequant_page(&l, cpu.data(), tok0, ntok - tok0, &hk, &hv), 0);
    for (size_t i = 0; i < 2 * on; i++)
        cr_assert(f2u(ec[i]) == f2u(cc[i]) || (std::isnan(ec[i]) && std::isnan(cc[i])),
                  "%s dequant elem %zu: emu %g cpu %g", kv_fmt_name(fmt), i, ec[i], cc[i]);
}

Test(cuda_emu, kernels_match_cpu_reference, .timeout = 120)
{
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++) {
        emu_case(fmt, 64, 16, 8, KV_DT_F32, 16, 4);
        emu_case(fmt, 128, 32, 16, KV_DT_F16, 21, 8);
        emu_case(fmt, 64, 32, 32, KV_DT_BF16, 32, 3);
    }
}

Test(cuda_emu, static_scale)
{
    for (int fmt = KV_FMT_FP8_E4M3; fmt <= KV_FMT_INT8; fmt++) {
        const unsigned D = 64, T = 16;
        kv_layout l = {1, 1, (uint16_t)D, (uint16_t)T, (uint8_t)fmt, (uint8_t)fmt, 0};
        std::vector<float> x(T * D);
        for (unsigned i = 0; i < T * D; i++)
            x[i] = (float)((int)(i * 37 % 101) - 50) * 0.3f;
        kv_src k = {x.data(), KV_DT_F32, 0, (ptrdiff_t)D, 0, 0.07f}, v = k;
        std::vector<uint8_t> cpu(kv_page_bytes(&l)), emu(cpu.size(), 0);
        cr_assert_eq(kv_quant_page(&l, cpu.data(), &k, &v, T), 0);
        seg_geom g = geom(&l);
        uint8_t *pg = emu.data();
        emu_launch({T, 1, 2}, 8, [&] { kvq_quant_rows(l, g, pg, k, v); });
        cr_assert_eq(std::memcmp(cpu.data(), emu.data(), cpu.size()), 0, "%s", kv_fmt_name(fmt));
    }
}
