/*
 * kv_quant_cuda.h - CUDA launchers of the page quantizer/dequantizer (library kvkernels_cuda,
 * built whenever the CUDA toolkit is found). Same formats, same results as kv_quant.h's CPU tiers
 * (byte-identical pages, bit-identical floats except NaN payloads): the kernels use the shared
 * scalar code of kv_quant_scalar.h.
 *
 * Every pointer inside the arguments (page, kv_src.base, kv_dst.base) is a DEVICE pointer; the
 * structs themselves are host memory, read before the call returns. Work is queued on `stream`;
 * the caller synchronizes (a page must not be committed before its stream is done). The whole page
 * is written (cudaMemsetAsync to zero, then the tokens [0, ntok)).
 *
 * Return 0 when the work was queued; -EINVAL for an invalid layout/range/dtype/static scale (the
 * same checks as the CPU functions; nothing queued); -EIO when a launch failed
 * (cudaGetLastError). Thread-safe.
 */
#ifndef KV_QUANT_CUDA_H
#define KV_QUANT_CUDA_H

#include <cuda_runtime_api.h>

#include "kv_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

int kv_quant_page_cuda(const struct kv_layout *l, void *page, const struct kv_src *k,
                       const struct kv_src *v, unsigned ntok, cudaStream_t stream);

int kv_dequant_page_cuda(const struct kv_layout *l, const void *page, unsigned tok0, unsigned ntok,
                         const struct kv_dst *k, const struct kv_dst *v, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
