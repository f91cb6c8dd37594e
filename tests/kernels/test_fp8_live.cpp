// test_fp8_live.cpp - built only where cuda_fp8.h exists: compares the reference conversions with
// NVIDIA's host-side functions live (all 65,536 halfs, every code, and 2^25 float inputs: a
// stride-131 walk over all bit patterns plus 2^24 uniformly random ones).
#include <criterion/criterion.h>
#include <cuda_fp8.h>

#include <cstring>

#include "kv_quant.h"

static float u2f(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

Test(fp8_live, all_halfs_and_codes)
{
    for (uint32_t h = 0; h < 65536; h++) {
        __half_raw r;
        r.x = (unsigned short)h;
        float x = kv_f16_to_f32((uint16_t)h);
        cr_assert_eq(kv_fp8_e4m3_from_f32(x),
                     __nv_cvt_halfraw_to_fp8(r, __NV_SATFINITE, __NV_E4M3));
        cr_assert_eq(kv_fp8_e5m2_from_f32(x),
                     __nv_cvt_halfraw_to_fp8(r, __NV_SATFINITE, __NV_E5M2));
    }
    for (uint32_t c = 0; c < 256; c++) {
        __half_raw h4 = __nv_cvt_fp8_to_halfraw((uint8_t)c, __NV_E4M3);
        __half_raw h5 = __nv_cvt_fp8_to_halfraw((uint8_t)c, __NV_E5M2);
        float a = kv_fp8_e4m3_to_f32((uint8_t)c), b = kv_f16_to_f32(h4.x);
        float d = kv_fp8_e5m2_to_f32((uint8_t)c), e = kv_f16_to_f32(h5.x);
        cr_assert_eq(std::memcmp(&a, &b, 4), 0, "e4m3 code %02x", c);
        cr_assert_eq(std::memcmp(&d, &e, 4), 0, "e5m2 code %02x", c);
    }
}

Test(fp8_live, float_sample, .timeout = 120)
{
    uint64_t s = 0x243f6a8885a308d3ull;
    for (uint64_t i = 0; i < (1ull << 25); i++) {
        uint32_t u;
        if (i & 1) {
            s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
            u = (uint32_t)((s * 0x2545f4914f6cdd1dull) >> 32);
        } else {
            u = (uint32_t)(i / 2 * 131);
        }
        float x = u2f(u);
        cr_assert_eq(kv_fp8_e4m3_from_f32(x), __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3),
                     "e4m3 of %08x", u);
        cr_assert_eq(kv_fp8_e5m2_from_f32(x), __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2),
                     "e5m2 of %08x", u);
    }
}
