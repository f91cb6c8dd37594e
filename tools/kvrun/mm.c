/*
 * mm.c - deterministic f32 matmul (see mm.h for the operation order every tier keeps).
 *
 * Blocking: W rows in blocks of MM_NB (a block of 48 rows x 576 floats = 108 KiB stays in L2
 * while all X rows sweep past it); the AVX2 micro-kernel computes a 4 x 3 tile of Y with twelve
 * 8-lane accumulators. Edges use smaller tiles with the same per-element sequence.
 */
#include "mm.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define MM_NB 48

static int mm_tier = -1; /* -1 unknown, 0 scalar, 1 avx2 */

static float reduce8(const float a[8])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

static float dot_scalar(const float *x, const float *w, size_t k)
{
    float a[8] = {0};
    for (size_t i = 0; i < k; i += 8)
        for (int j = 0; j < 8; j++)
            a[j] = fmaf(x[i + j], w[i + j], a[j]);
    return reduce8(a);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static float hsum8(__m256 v)
{
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* a_j+a_j+4 */
    __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t)); /* (t0+t2), (t1+t3) */
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *x, const float *w, size_t k)
{
    __m256 a = _mm256_setzero_ps();
    for (size_t i = 0; i < k; i += 8)
        a = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(w + i), a);
    return hsum8(a);
}

/* Y tile of 4 X rows x 3 W rows. */
__attribute__((target("avx2,fma"))) static void tile43(float *y, size_t ldy, const float *x,
                                                       size_t ldx, const float *w, size_t k)
{
    __m256 c[4][3];
    /* fully unrolled so the twelve accumulators live in registers (3.4x faster than at -O2
     * without the pragmas, on par with OpenBLAS sgemm: see docs/ARCHITECTURE.md, kvrun) */
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
#pragma GCC unroll 3
        for (int s = 0; s < 3; s++)
            c[r][s] = _mm256_setzero_ps();
    for (size_t i = 0; i < k; i += 8) {
        __m256 w0 = _mm256_loadu_ps(w + i), w1 = _mm256_loadu_ps(w + k + i),
               w2 = _mm256_loadu_ps(w + 2 * k + i);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            __m256 xv = _mm256_loadu_ps(x + r * ldx + i);
            c[r][0] = _mm256_fmadd_ps(xv, w0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(xv, w1, c[r][1]);
            c[r][2] = _mm256_fmadd_ps(xv, w2, c[r][2]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
#pragma GCC unroll 3
        for (int s = 0; s < 3; s++)
            y[r * ldy + s] = hsum8(c[r][s]);
}

/* Y tile of 1 X row x 4 W rows (decode: four independent FMA chains hide the latency). */
__attribute__((target("avx2,fma"))) static void tile14(float *y, const float *x, const float *w,
                                                       size_t k)
{
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (size_t i = 0; i < k; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        c0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w + i), c0);
        c1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w + k + i), c1);
        c2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w + 2 * k + i), c2);
        c3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w + 3 * k + i), c3);
    }
    y[0] = hsum8(c0);
    y[1] = hsum8(c1);
    y[2] = hsum8(c2);
    y[3] = hsum8(c3);
}

__attribute__((target("avx2,fma"))) static void matmul_avx2(float *y, size_t ldy, const float *x,
                                                            size_t ldx, const float *w, size_t m,
                                                            size_t n, size_t k)
{
    for (size_t n0 = 0; n0 < n; n0 += MM_NB) {
        size_t n1 = n0 + MM_NB < n ? n0 + MM_NB : n;
        size_t r = 0;
        for (; r + 4 <= m; r += 4) {
            size_t c = n0;
            for (; c + 3 <= n1; c += 3)
                tile43(y + r * ldy + c, ldy, x + r * ldx, ldx, w + c * k, k);
            for (; c < n1; c++)
                for (int i = 0; i < 4; i++)
                    y[(r + i) * ldy + c] = dot_avx2(x + (r + i) * ldx, w + c * k, k);
        }
        for (; r < m; r++) {
            size_t c = n0;
            for (; c + 4 <= n1; c += 4)
                tile14(y + r * ldy + c, x + r * ldx, w + c * k, k);
            for (; c < n1; c++)
                y[r * ldy + c] = dot_avx2(x + r * ldx, w + c * k, k);
        }
    }
}
#endif

static int tier(void)
{
    if (mm_tier < 0) {
#if defined(__x86_64__)
        __builtin_cpu_init();
        mm_tier = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
        mm_tier = 0;
#endif
    }
    return mm_tier;
}

int mm_have_avx2(void)
{
    return tier();
}

void mm_force_scalar(int on)
{
    mm_tier = on ? 0 : -1;
}

float mm_dot(const float *a, const float *b, size_t n)
{
#if defined(__x86_64__)
    if (tier())
        return dot_avx2(a, b, n);
#endif
    return dot_scalar(a, b, n);
}

void mm_matmul(float *y, size_t ldy, const float *x, size_t ldx, const float *w, size_t m, size_t n,
               size_t k)
{
#if defined(__x86_64__)
    if (tier()) {
        matmul_avx2(y, ldy, x, ldx, w, m, n, k);
        return;
    }
#endif
    for (size_t r = 0; r < m; r++)
        for (size_t c = 0; c < n; c++)
            y[r * ldy + c] = dot_scalar(x + r * ldx, w + c * k, k);
}
