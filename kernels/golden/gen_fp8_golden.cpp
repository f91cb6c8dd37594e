// gen_fp8_golden.cpp - writes fp8_golden.bin from NVIDIA's own conversions in cuda_fp8.h.
//
// Host-only: cuda_fp8.h's conversion functions compile with plain g++ (no GPU, no libcudart):
//   g++ -O2 -std=c++17 -I/usr/local/cuda/include kernels/golden/gen_fp8_golden.cpp -o /tmp/gen
//   /tmp/gen kernels/golden/fp8_golden.bin        (about a minute: it sweeps all 2^32 floats)
// The file is committed so tests/kernels checks against it where the header is absent.
//
// Format (little-endian):
//   char magic[8] = "KVFP8G01"
//   u8  e4m3_of_half[65536], e5m2_of_half[65536]   __nv_cvt_halfraw_to_fp8(h, SATFINITE, ...)
//   u32 f32_of_e4m3[256], f32_of_e5m2[256]          float(__nv_cvt_fp8_to_halfraw(c, ...))
//   u64 sweep_hash_e4m3, sweep_hash_e5m2            kvq_sweep_hash over all 2^32 float inputs
//   u32 n; then n x { u32 f32_bits; u8 e4m3; u8 e5m2; }   deterministic float sample + specials
#include <cuda_fp8.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "sweep_hash.h"

static uint8_t e4(float x)
{
    return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
}
static uint8_t e5(float x)
{
    return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
}
static float h2f(__half_raw h)
{
    // binary16 -> float, exact (the header's own helper is internal)
    uint32_t s = (uint32_t)(h.x & 0x8000) << 16, e = (h.x >> 10) & 0x1f, m = h.x & 0x3ff, u;
    if (e == 0x1f)
        u = s | 0x7f800000 | m << 13;
    else if (e == 0) {
        float f = (float)m * 0x1p-24f;
        std::memcpy(&u, &f, 4);
        u |= s;
    } else
        u = s | (e + 112) << 23 | m << 13;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static uint32_t f2u(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
static float u2f(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s out.bin\n", argv[0]);
        return 2;
    }
    FILE *f = std::fopen(argv[1], "wb");
    if (!f)
        return 1;
    std::fwrite("KVFP8G01", 1, 8, f);
    for (int fmt = 0; fmt < 2; fmt++)
        for (uint32_t h = 0; h < 65536; h++) {
            __half_raw r;
            r.x = (unsigned short)h;
            uint8_t c = __nv_cvt_halfraw_to_fp8(r, __NV_SATFINITE, fmt ? __NV_E5M2 : __NV_E4M3);
            std::fputc(c, f);
        }
    for (int fmt = 0; fmt < 2; fmt++)
        for (uint32_t c = 0; c < 256; c++) {
            uint32_t u = f2u(h2f(__nv_cvt_fp8_to_halfraw((uint8_t)c, fmt ? __NV_E5M2 : __NV_E4M3)));
            std::fwrite(&u, 4, 1, f);
        }
    for (int fmt = 0; fmt < 2; fmt++) {
        struct kvq_sweep sw;
        kvq_sweep_init(&sw);
        static uint8_t buf[1 << 16];
        for (uint64_t base = 0; base < (1ull << 32); base += sizeof buf) {
            for (uint32_t i = 0; i < sizeof buf; i++)
                buf[i] = fmt ? e5(u2f((uint32_t)(base + i))) : e4(u2f((uint32_t)(base + i)));
            kvq_sweep_add(&sw, buf, sizeof buf);
        }
        uint64_t h = sw.h;
        std::fwrite(&h, 8, 1, f);
    }
    std::vector<uint32_t> in;
    // specials: zeros, subnormal edges, min normal, max, just above max, the rounding thresholds,
    // overflow, inf, NaN (quiet, signalling, negative), and ties in every binade of both formats
    const float sp[] = {0.0f,       -0.0f,    0x1p-149f, 0x1p-126f,  0x1p-10f, 0x1p-9f,
                        0x1.8p-10f, 0x1p-17f, 0x1p-16f,  0x1.8p-17f, 0x1p-6f,  0x1p-14f,
                        448.0f,     449.0f,   464.0f,    464.0001f,  480.0f,   57344.0f,
                        57345.0f,   61440.0f, 61439.0f,  65504.0f,   1e30f,    3.4028235e38f};
    for (float x : sp) {
        in.push_back(f2u(x));
        in.push_back(f2u(-x));
    }
    const uint32_t nans[] = {0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000,
                             0x7f800001, 0x7fbfffff, 0xffffffff};
    for (uint32_t u : nans)
        in.push_back(u);
    for (int e = -20; e <= 16; e++) // exact ties and neighbours for 3 and 2 mantissa bits
        for (uint32_t m = 0; m < 16; m++) {
            uint32_t u = (uint32_t)(127 + e) << 23 | m << 19;
            for (int d = -1; d <= 1; d++) {
                in.push_back(u + d);
                in.push_back((u + d) ^ 0x80000000u);
            }
        }
    uint64_t s = 0x9e3779b97f4a7c15ull; // xorshift64*: uniform bits, then focused on FP8 range
    auto next = [&s]() {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        return (uint32_t)((s * 0x2545f4914f6cdd1dull) >> 32);
    };
    for (int i = 0; i < 65536; i++)
        in.push_back(next());
    for (int i = 0; i < 65536; i++) {
        uint32_t r = next();
        int e = (int)(r % 40) - 22;
        in.push_back((r & 0x80000000u) | (uint32_t)(127 + e) << 23 | (next() & 0x7fffff));
    }
    uint32_t n = (uint32_t)in.size();
    std::fwrite(&n, 4, 1, f);
    for (uint32_t u : in) {
        uint8_t c[2] = {e4(u2f(u)), e5(u2f(u))};
        std::fwrite(&u, 4, 1, f);
        std::fwrite(c, 1, 2, f);
    }
    return std::fclose(f) == 0 ? 0 : 1;
}
