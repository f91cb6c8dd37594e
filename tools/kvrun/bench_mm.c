/*
 * bench_mm.c - why kvrun has its own matmul instead of a BLAS: mm_matmul vs OpenBLAS sgemm
 * (Debian libopenblas-dev, one thread) on kvrun's largest weight shape, prefill (M = 512) and
 * decode (M = 1), in CPU time so other load on the machine does not skew the ratio. Not built by
 * CMake (kvrun does not link a BLAS); by hand:
 *   apt-get install libopenblas-dev
 *   gcc -O2 -Itools/kvrun tools/kvrun/bench_mm.c tools/kvrun/mm.c -lopenblas -lm -o /tmp/bench_mm
 *   OPENBLAS_NUM_THREADS=1 /tmp/bench_mm
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "mm.h"

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void)
{
    const size_t Ms[] = {512, 1}, N = 1536, K = 576;
    for (int mi = 0; mi < 2; mi++) {
        size_t M = Ms[mi];
        int reps = M == 1 ? 2000 : 20;
        float *x = malloc(M * K * 4), *w = malloc(N * K * 4), *y = malloc(M * N * 4);
        for (size_t i = 0; i < M * K; i++)
            x[i] = (float)rand() / 2147483648.0f - 0.5f;
        for (size_t i = 0; i < N * K; i++)
            w[i] = (float)rand() / 2147483648.0f - 0.5f;
        mm_matmul(y, N, x, K, w, M, N, K); /* warm up both */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, x, K, w, K, 0, y, N);
        double t = cpu_s();
        for (int r = 0; r < reps; r++)
            mm_matmul(y, N, x, K, w, M, N, K);
        double a = cpu_s() - t;
        t = cpu_s();
        for (int r = 0; r < reps; r++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, x, K, w, K, 0, y, N);
        double b = cpu_s() - t, fl = 2.0 * M * N * K * reps;
        printf("M=%zu N=%zu K=%zu: mm_matmul %.1f GFLOP/s, openblas sgemm %.1f GFLOP/s, "
               "mm/openblas speed %.2f\n",
               M, N, K, fl / a / 1e9, fl / b / 1e9, b / a);
        free(x);
        free(w);
        free(y);
    }
    return 0;
}
