/*
 * mm.h - the f32 matrix products of kvrun's forward pass: Y[m][n] = sum_k X[m][k] * W[n][k].
 *
 * Determinism is the contract, not an accident: every output element is computed by the same
 * sequence of IEEE operations whatever M (the number of tokens in the batch), the blocking, the
 * CPU tier or the caller's position in a sequence: eight lane partial sums, lane j accumulating
 * k = j, j+8, ... with a fused multiply-add in increasing k, then the fixed reduction
 * ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)). So the logits of a token are bit-identical whether it
 * was prefilled in a batch of 512 or decoded alone, which a KV cache hit relies on. The AVX2+FMA
 * tier and the scalar tier (fmaf) produce the same bits; the tier is picked once from the CPU.
 */
#ifndef KVRUN_MM_H
#define KVRUN_MM_H

#include <stddef.h>

/* X: M rows of K floats (row stride ldx), W: N rows of K floats (contiguous), Y: M rows of N
 * floats (row stride ldy). K must be a multiple of 8. Thread-safe. */
void mm_matmul(float *y, size_t ldy, const float *x, size_t ldx, const float *w, size_t m, size_t n,
               size_t k);
/* Dot product of a and b (n a multiple of 8), with the same operation order as mm_matmul. */
float mm_dot(const float *a, const float *b, size_t n);
/* 1 if the AVX2+FMA tier is in use. mm_force_scalar(1) forces the scalar tier (tests). */
int mm_have_avx2(void);
void mm_force_scalar(int on);

#endif
