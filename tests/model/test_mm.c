/*
 * test_mm.c - mm.h's determinism contract on random data: every element of mm_matmul equals
 * mm_dot of its row and column bit for bit, whatever the number of rows M in the call (so a
 * token's result does not depend on its batch), and the AVX2 and scalar tiers agree bit for bit.
 * Also a sanity check against a float64 product, within the f32 bound (K/8 + 3) u sum|x w|.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mm.h"

#define N 53
#define K 584

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

Test(mm, results_independent_of_batch_and_tier)
{
    static float x[13 * K], w[N * K], ya[13 * N], yb[N], yc[13 * N];
    unsigned s = 7;
    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
        x[i] = frand(&s);
    for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++)
        w[i] = frand(&s);
    mm_matmul(ya, N, x, K, w, 13, N, K);
    for (int r = 0; r < 13; r++) {
        mm_matmul(yb, N, x + r * K, K, w, 1, N, K); /* the same row alone */
        cr_assert_eq(memcmp(yb, ya + r * N, sizeof(yb)), 0, "row %d differs alone", r);
        for (int c = 0; c < N; c++) {
            float d = mm_dot(x + r * K, w + c * K, K);
            cr_assert_eq(memcmp(&d, &ya[r * N + c], 4), 0, "(%d,%d) differs from mm_dot", r, c);
            double e = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                e += (double)x[r * K + k] * w[c * K + k];
                mag += fabs((double)x[r * K + k] * w[c * K + k]);
            }
            cr_assert_leq(fabs(ya[r * N + c] - e), (K / 8 + 3) * 0x1p-24 * mag);
        }
    }
    if (!mm_have_avx2())
        cr_skip_test("no AVX2+FMA on this CPU: only the scalar tier ran");
    mm_force_scalar(1);
    mm_matmul(yc, N, x, K, w, 13, N, K);
    mm_force_scalar(0);
    cr_assert_eq(memcmp(ya, yc, sizeof(ya)), 0, "AVX2 and scalar tiers differ");
}
