/*
 * attn.cu - CUDA paged attention (decode and causal prefill) over quantized pages with the H2O
 * score side output; the same function as kv_attn_decode/kv_attn_prefill (kernels/attn.h).
 *
 * Grid: one block per (query, KV head); ATTN_CU_WARPS warps split the context's tokens (token t of
 * every span goes to warp t % warps); a lane owns channels c = lane, lane + 32, ... of the head.
 * Each warp keeps an online softmax (m, l, acc in shared memory) per query head of its group;
 * the warps' states are merged at the end (acc = sum_w acc_w e^(m_w - M), l likewise). Elements
 * are decoded with kv_quant_scalar.h, the very code of the CPU reference, straight from the page.
 *
 * Scores need each row's final (M, L): a second launch recomputes the logits of every token and
 * adds exp(s - M) / L to scores (atomicAdd; the order of additions is not deterministic).
 *
 * Limits (checked by the launcher, -EINVAL): query heads per KV head <= ATTN_CU_MAX_G,
 * head_dim <= 256, and (warps + 1) * g * d floats of shared memory must fit the device (above
 * 48 KiB the launcher opts in with cudaFuncSetAttribute; sm_75 allows 64 KiB).
 */
#include <cuda_runtime.h>
#include <errno.h>
#include <math.h>

#include "attn.h"
#include "kv_quant_scalar.h"

#define ATTN_CU_WARPS 4
#define ATTN_CU_MAX_G 16
#define ATTN_CU_MAX_D 256

struct dev_args {
    kv_layout l;
    unsigned layer, nqh, nq, g, nblk, n_tail, tail_f16;
    const float *q;
    float *out;
    const kv_attn_block *blocks; /* device copy */
    const void *tk, *tv;
    float scale;
    float *scores, *scores_head;
    float *ml; /* [nq][nqh][2] final (M, L) of every row */
    size_t n_ctx, ks, vs;
};

static __device__ float dec(const dev_args &a, const uint8_t *page, unsigned kind, unsigned h,
                            unsigned t, unsigned c)
{
    const kv_layout &l = a.l;
    unsigned D = l.head_dim, T = l.page_tokens, nkv = l.n_kv_heads;
    int fmt = kind ? l.v_fmt : l.k_fmt;
    size_t off = (size_t)a.layer * nkv * (a.ks + a.vs) +
                 (kind ? (size_t)nkv * a.ks + (size_t)h * a.vs : (size_t)h * a.ks);
    const uint8_t *seg = page + off;

    if (fmt == KV_FMT_F16)
        return kvq_f16_dec(((const uint16_t *)seg)[(size_t)t * D + c]);
    if (fmt == KV_FMT_BF16)
        return kvq_u2f((uint32_t)((const uint16_t *)seg)[(size_t)t * D + c] << 16);
    if (fmt <= KV_FMT_INT8) {
        float s = ((const float *)(seg + (size_t)T * D))[t];
        uint8_t q = seg[(size_t)t * D + c];
        return (fmt == KV_FMT_INT8 ? (float)(int8_t)q : kvq_fp8_dec(q, fmt == KV_FMT_FP8_E5M2)) * s;
    }
    unsigned bits = fmt == KV_FMT_KIVI2 ? 2 : 4, per = 32 / bits, G = l.group;
    const kv_sm16 *rec = (const kv_sm16 *)(seg + (size_t)T * D * bits / 8);
    kv_sm16 r;
    if (kind == KV_KIND_K && fmt != KV_FMT_INT4)
        r = rec[(size_t)(t / G) * D + c];
    else if (fmt == KV_FMT_INT4)
        r = rec[(size_t)t * (D / 32) + c / 32];
    else
        r = rec[(size_t)t * (D / G) + c / G];
    uint32_t w = ((const uint32_t *)seg)[(size_t)t * D / per + c / per];
    unsigned q = (w >> (bits * (c % per))) & ((1u << bits) - 1);
    return fmaf((float)q, kvq_f16_dec(r.scale), kvq_f16_dec(r.min));
}

static __device__ float tail_dec(const dev_args &a, unsigned kind, unsigned h, unsigned t,
                                 unsigned c)
{
    size_t i = ((size_t)t * a.l.n_kv_heads + h) * a.l.head_dim + c;
    const void *p = kind ? a.tv : a.tk;
    return a.tail_f16 ? kvq_f16_dec(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static __device__ float warp_sum(float x)
{
    for (int o = 16; o > 0; o >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* pass 0: outputs and (M, L); pass 1: scores. */
__global__ void attn_kernel(dev_args a, int pass)
{
    extern __shared__ float sm[];
    unsigned qi = blockIdx.x, k = blockIdx.y, g = a.g, d = a.l.head_dim;
    unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *qs = sm;                          /* [g][d] */
    float *acc = qs + g * d;                 /* [warps][g][d] */
    float *mw = acc + ATTN_CU_WARPS * g * d; /* [warps][g] */
    float *lw = mw + ATTN_CU_WARPS * g;      /* [warps][g] */
    float m[ATTN_CU_MAX_G], l[ATTN_CU_MAX_G], s[ATTN_CU_MAX_G];
    size_t visible = a.n_ctx - a.nq + qi + 1, pos = 0;
    const float *ml = a.ml + ((size_t)qi * a.nqh + k * g) * 2;

    for (unsigned i = threadIdx.x; i < g * d; i += blockDim.x)
        qs[i] = a.q[((size_t)qi * a.nqh + k * g) * d + i] * a.scale;
    for (unsigned i = threadIdx.x; i < ATTN_CU_WARPS * g * d; i += blockDim.x)
        acc[i] = 0.0f;
    for (unsigned h = 0; h < g; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
    }
    __syncthreads();
    float *aw = acc + w * g * d;

    for (unsigned b = 0; b <= a.nblk && pos < visible; b++) {
        unsigned nt = b < a.nblk ? a.blocks[b].n_tokens : a.n_tail;
        const uint8_t *page = b < a.nblk ? a.blocks[b].page : NULL;
        for (unsigned t = w; t < nt && pos + t < visible; t += ATTN_CU_WARPS) {
            for (unsigned h = 0; h < g; h++)
                s[h] = 0.0f;
            for (unsigned c = lane; c < d; c += 32) {
                float kv = page ? dec(a, page, 0, k, t, c) : tail_dec(a, 0, k, t, c);
                for (unsigned h = 0; h < g; h++)
                    s[h] = fmaf(qs[h * d + c], kv, s[h]);
            }
            for (unsigned h = 0; h < g; h++)
                s[h] = warp_sum(s[h]);
            if (pass == 1) {
                float tot = 0.0f;
                for (unsigned h = 0; h < g; h++) {
                    float p = expf(s[h] - ml[2 * h]) / ml[2 * h + 1];
                    tot += p;
                    if (a.scores_head && lane == 0)
                        atomicAdd(&a.scores_head[(size_t)(k * g + h) * a.n_ctx + pos + t], p);
                }
                if (a.scores && lane == 0)
                    atomicAdd(&a.scores[(size_t)k * a.n_ctx + pos + t], tot);
                continue;
            }
            for (unsigned h = 0; h < g; h++) {
                float mn = fmaxf(m[h], s[h]);
                float alpha = m[h] == -INFINITY ? 0.0f : expf(m[h] - mn), p = expf(s[h] - mn);
                l[h] = l[h] * alpha + p;
                m[h] = mn;
                s[h] = p;
                for (unsigned c = lane; c < d; c += 32)
                    aw[h * d + c] *= alpha;
            }
            for (unsigned c = lane; c < d; c += 32) {
                float vv = page ? dec(a, page, 1, k, t, c) : tail_dec(a, 1, k, t, c);
                for (unsigned h = 0; h < g; h++)
                    aw[h * d + c] = fmaf(s[h], vv, aw[h * d + c]);
            }
        }
        pos += nt;
    }
    if (pass == 1)
        return;
    if (lane == 0)
        for (unsigned h = 0; h < g; h++) {
            mw[w * g + h] = m[h];
            lw[w * g + h] = l[h];
        }
    __syncthreads();
    for (unsigned i = threadIdx.x; i < g * d; i += blockDim.x) {
        unsigned h = i / d;
        float M = -INFINITY, L = 0.0f, o = 0.0f;
        for (unsigned v = 0; v < ATTN_CU_WARPS; v++)
            M = fmaxf(M, mw[v * g + h]);
        for (unsigned v = 0; v < ATTN_CU_WARPS; v++) {
            if (mw[v * g + h] == -INFINITY)
                continue;
            float e = expf(mw[v * g + h] - M);
            L += lw[v * g + h] * e;
            o += acc[v * g * d + i] * e;
        }
        a.out[((size_t)qi * a.nqh + k * g) * d + i] = L > 0.0f ? o / L : 0.0f;
        if (i % d == 0) {
            a.ml[((size_t)qi * a.nqh + k * g + h) * 2] = M;
            a.ml[((size_t)qi * a.nqh + k * g + h) * 2 + 1] = L;
        }
    }
}

static size_t seg_bytes(int fmt, const kv_layout *l)
{
    return kv_seg_bytes(fmt, l);
}

extern "C" int kv_attn_cuda(const struct kv_attn_args *a, struct CUstream_st *stream)
{
    int rc = kv_attn_check(a);
    if (rc)
        return rc;
    const kv_layout *l = a->layout;
    unsigned g = a->n_q_heads / l->n_kv_heads, d = l->head_dim;
    if (g > ATTN_CU_MAX_G || d > ATTN_CU_MAX_D)
        return -EINVAL;
    size_t n_ctx = kv_attn_ctx_len(a);
    cudaStream_t st = (cudaStream_t)stream;

    if (n_ctx == 0)
        return cudaMemsetAsync(a->out, 0, (size_t)a->n_q * a->n_q_heads * d * sizeof(float), st) ==
                       cudaSuccess
                   ? 0
                   : -EIO;

    dev_args da = {};
    da.l = *l;
    da.layer = a->layer;
    da.nqh = a->n_q_heads;
    da.nq = a->n_q;
    da.g = g;
    da.nblk = a->n_blocks;
    da.n_tail = a->n_tail;
    da.tail_f16 = a->tail_dtype == KV_ATTN_F16;
    da.q = a->q;
    da.out = a->out;
    da.tk = a->tail_k;
    da.tv = a->tail_v;
    da.scale = a->softmax_scale > 0.0f ? a->softmax_scale : 1.0f / sqrtf((float)d);
    da.scores = a->scores;
    da.scores_head = a->scores_head;
    da.n_ctx = n_ctx;
    da.ks = seg_bytes(l->k_fmt, l);
    da.vs = seg_bytes(l->v_fmt, l);

    /* device scratch: the block table and the rows' (M, L) */
    size_t tb = (size_t)a->n_blocks * sizeof(kv_attn_block),
           mlb = (size_t)a->n_q * a->n_q_heads * 2 * sizeof(float);
    void *scratch = NULL;
    if (cudaMallocAsync(&scratch, tb + mlb + 16, st) != cudaSuccess)
        return -ENOMEM;
    rc = -EIO;
    da.ml = (float *)((char *)scratch + (tb + 15) / 16 * 16);
    da.blocks = (const kv_attn_block *)scratch;
    /* pageable source: the call returns once the table is staged, so *a may go away after */
    if (tb && cudaMemcpyAsync(scratch, a->blocks, tb, cudaMemcpyHostToDevice, st) != cudaSuccess)
        goto out_free;
    {
        dim3 grid(a->n_q, l->n_kv_heads);
        size_t shm = ((size_t)g * d * (1 + ATTN_CU_WARPS) + 2 * ATTN_CU_WARPS * g) * sizeof(float);
        /* above the 48 KiB default (g * d large), opt in; devices with less shared memory refuse */
        if (shm > 48 * 1024 &&
            cudaFuncSetAttribute(attn_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)shm) != cudaSuccess) {
            rc = -EINVAL;
            goto out_free;
        }
        attn_kernel<<<grid, ATTN_CU_WARPS * 32, shm, st>>>(da, 0);
        if (cudaGetLastError() != cudaSuccess)
            goto out_free;
        if (a->scores || a->scores_head) {
            attn_kernel<<<grid, ATTN_CU_WARPS * 32, shm, st>>>(da, 1);
            if (cudaGetLastError() != cudaSuccess)
                goto out_free;
        }
    }
    rc = 0;
out_free:
    cudaFreeAsync(scratch, st);
    return rc;
}
