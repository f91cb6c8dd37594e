/*
 * spill_cuda.c - pinned staging for GPU arenas: the spill store's staging buffers (which are also
 * its io_uring registered buffers) come from cudaHostAlloc, and pages move between a device arena
 * and staging with cudaMemcpy (unified addressing: host or device pointers alike). Built only with
 * CUDA; without a device cudaHostAlloc fails and the store uses plain host memory.
 */
#include "spill_int.h"

#include <errno.h>

#include <cuda_runtime_api.h>

int spill_cuda_host_alloc(void **p, size_t n)
{
    *p = NULL;
    if (cudaHostAlloc(p, n, cudaHostAllocPortable) != cudaSuccess) {
        *p = NULL;
        return -ENODEV;
    }
    return 0;
}

void spill_cuda_host_free(void *p)
{
    if (p)
        cudaFreeHost(p);
}

int spill_cuda_copy(void *dst, const void *src, size_t n)
{
    return cudaMemcpy(dst, src, n, cudaMemcpyDefault) == cudaSuccess ? 0 : -EIO;
}
