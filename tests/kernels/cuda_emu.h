/*
 * cuda_emu.h - just enough of CUDA's execution model to run kernels/kv_quant.cu's kernels on host
 * threads: one std::thread per CUDA thread, one block at a time, __syncthreads as a std::barrier,
 * __shared__ as function statics (shared by the block's threads). It checks the kernels' indexing
 * and arithmetic against the CPU reference where no GPU exists; tests/gpu runs the real thing.
 */
#ifndef CUDA_EMU_H
#define CUDA_EMU_H
#include <barrier>
#include <cmath>
#include <functional>
#include <thread>
#include <vector>

#define KVQ_HOST_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__      static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
static thread_local dim3 blockIdx, threadIdx;
static dim3 blockDim;
static std::barrier<> *emu_bar;

static inline void __syncthreads()
{
    emu_bar->arrive_and_wait();
}
static inline unsigned atomicMax(unsigned *p, unsigned v)
{
    unsigned old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old < v &&
           !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
    return old;
}
static inline float __fdiv_rn(float a, float b)
{
    return a / b;
}
static inline float __fmul_rn(float a, float b)
{
    return a * b;
}
static inline float __fsub_rn(float a, float b)
{
    return a - b;
}

/* kernel<<<grid, threads>>>(...) as emu_launch(grid, threads, [&] { kernel(...); }) */
static inline void emu_launch(dim3 grid, unsigned threads, const std::function<void()> &body)
{
    blockDim = {threads, 1, 1};
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                std::barrier<> bar((std::ptrdiff_t)threads);
                emu_bar = &bar;
                std::vector<std::thread> th;
                for (unsigned t = 0; t < threads; t++)
                    th.emplace_back([&, t] {
                        blockIdx = {x, y, z};
                        threadIdx = {t, 0, 0};
                        body();
                    });
                for (auto &t : th)
                    t.join();
            }
}
#endif
