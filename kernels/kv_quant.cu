/*
 * kv_quant.cu - CUDA quantize/dequantize of KV pages (formats: kv_format.h, API: kv_quant_cuda.h).
 *
 * One block of KVQ_THREADS threads per (token, layer*head, kind) row for the row-wise formats;
 * one block per (token group, layer*head) for KIVI keys (per-channel statistics over G tokens).
 * The per-element arithmetic is the CPU reference's (kv_quant_scalar.h plus the same IEEE
 * division, subtraction, fmaf and RNE rounding; nvcc's default -prec-div=true and -ftz=false keep
 * division and subnormals IEEE); amax and min/max are order-independent reductions (integer max
 * of |x| bits; +0.0f canonicalizes the sign of zero), so pages are byte-identical to the CPU's.
 */
#include <errno.h>
#include <math.h>

#ifndef KVQ_HOST_EMU /* tests/kernels/test_cuda_emu.cpp runs the kernels below on host threads */
#include "kv_quant_cuda.h"
#endif
#include "kv_quant.h"
#include "kv_quant_scalar.h"

#define KVQ_THREADS 128

struct seg_geom {
    size_t kseg, vseg; /* segment bytes of K and V */
    unsigned H, D, T, G;
};

static __device__ size_t seg_off(const seg_geom &g, unsigned layer, unsigned kind, unsigned h)
{
    size_t off = (size_t)layer * g.H * (g.kseg + g.vseg);
    return kind == 0 ? off + (size_t)h * g.kseg : off + (size_t)g.H * g.kseg + (size_t)h * g.vseg;
}

static __device__ float load_elem(const kv_src &s, unsigned layer, unsigned t, unsigned h,
                                  unsigned c)
{
    ptrdiff_t i = (ptrdiff_t)layer * s.layer_stride + (ptrdiff_t)t * s.tok_stride +
                  (ptrdiff_t)h * s.head_stride + c;
    if (s.dtype == KV_DT_F32)
        return ((const float *)s.base)[i];
    uint16_t b = ((const uint16_t *)s.base)[i];
    return s.dtype == KV_DT_F16 ? kvq_f16_dec(b) : kvq_u2f((uint32_t)b << 16);
}

static __device__ float clamp16(float x)
{
    return x > KV_F16_MAX ? KV_F16_MAX : (x < -KV_F16_MAX ? -KV_F16_MAX : x);
}

static __device__ uint32_t asym_code(float x, float s, float m, float qmax)
{
    float d = __fdiv_rn(__fsub_rn(clamp16(x), m), s);
    return isnan(d) ? 0u : (uint32_t)rintf(d > qmax ? qmax : (d < 0.0f ? 0.0f : d));
}

static __device__ float fmt_qmax(int fmt)
{
    return fmt == KV_FMT_FP8_E4M3   ? KV_FP8_E4M3_MAX
           : fmt == KV_FMT_FP8_E5M2 ? KV_FP8_E5M2_MAX
           : fmt == KV_FMT_INT8     ? 127.0f
           : fmt == KV_FMT_KIVI2    ? 3.0f
                                    : 15.0f;
}

static __device__ bool is_kivi(int fmt)
{
    return fmt == KV_FMT_KIVI4 || fmt == KV_FMT_KIVI2;
}

__global__ void kvq_quant_rows(kv_layout l, seg_geom g, uint8_t *page, kv_src k, kv_src v)
{
    unsigned t = blockIdx.x, layer = blockIdx.y / g.H, h = blockIdx.y % g.H, kind = blockIdx.z;
    int fmt = kind ? l.v_fmt : l.k_fmt;
    if (kind == 0 && is_kivi(fmt))
        return;
    const kv_src &src = kind ? v : k;
    __shared__ float x[KV_MAX_HEAD_DIM], gs[KV_MAX_HEAD_DIM / 8], gm[KV_MAX_HEAD_DIM / 8];
    __shared__ unsigned amax;
    unsigned D = g.D, tid = threadIdx.x, bits = fmt == KV_FMT_KIVI2 ? 2 : 4;
    uint8_t *seg = page + seg_off(g, layer, kind, h);
    size_t data = (size_t)g.T * D * (fmt <= KV_FMT_BF16 ? 2 : fmt <= KV_FMT_INT8 ? 1 : 0);

    if (tid == 0)
        amax = 0;
    __syncthreads();
    unsigned my = 0;
    for (unsigned c = tid; c < D; c += blockDim.x) {
        float xv = load_elem(src, layer, t, h, c);
        x[c] = xv;
        uint32_t a = kvq_f2u(xv) & 0x7fffffff;
        if (a < 0x7f800000 && a > my)
            my = a;
    }
    atomicMax(&amax, my);
    __syncthreads();

    if (fmt == KV_FMT_F16 || fmt == KV_FMT_BF16) {
        uint16_t *o = (uint16_t *)seg + (size_t)t * D;
        for (unsigned c = tid; c < D; c += blockDim.x)
            o[c] = fmt == KV_FMT_F16 ? kvq_f16_enc(x[c]) : kvq_bf16_enc(x[c]);
    } else if (fmt <= KV_FMT_INT8) {
        float f;
        int mul;
        float s = kvq_token_scale(kvq_u2f(amax), fmt_qmax(fmt), src.static_scale, &f, &mul);
        uint8_t *q = seg + (size_t)t * D;
        if (tid == 0)
            ((float *)(seg + data))[t] = s;
        for (unsigned c = tid; c < D; c += blockDim.x) {
            /* __fmul_rn/__fdiv_rn: exactly the IEEE operation, never contracted or approximated */
            float y = mul ? __fmul_rn(x[c], f) : __fdiv_rn(x[c], f);
            if (!(s > 0.0f))
                q[c] = (fmt != KV_FMT_INT8 && isnan(x[c])) ? 0x7f : 0;
            else if (fmt == KV_FMT_INT8)
                q[c] = (uint8_t)(int8_t)(isnan(y) ? 0.0f
                                                  : rintf(y > 127.0f    ? 127.0f
                                                          : y < -127.0f ? -127.0f
                                                                        : y));
            else
                q[c] = kvq_fp8_enc(y, fmt == KV_FMT_FP8_E5M2);
        }
    } else { /* INT4 or KIVI values: per token, groups of 32 / G channels */
        unsigned gsz = fmt == KV_FMT_INT4 ? 32 : g.G, ng = D / gsz, per = 32 / bits;
        kv_sm16 *rec = (kv_sm16 *)(seg + (size_t)g.T * D * bits / 8) + (size_t)t * ng;
        for (unsigned gi = tid; gi < ng; gi += blockDim.x) {
            float mn = INFINITY, mx = -INFINITY;
            for (unsigned c = gi * gsz; c < (gi + 1) * gsz; c++) {
                if (isnan(x[c]))
                    continue;
                float cv = clamp16(x[c]);
                mn = cv < mn ? cv : mn;
                mx = cv > mx ? cv : mx;
            }
            float sv, mv;
            rec[gi] = kvq_asym_params(mn, mx, fmt_qmax(fmt), &sv, &mv);
            gs[gi] = sv;
            gm[gi] = mv;
        }
        __syncthreads();
        uint32_t *w = (uint32_t *)seg + (size_t)t * D / per;
        for (unsigned wi = tid; wi < D / per; wi += blockDim.x) {
            uint32_t word = 0;
            for (unsigned j = 0; j < per; j++) {
                unsigned c = wi * per + j;
                word |= asym_code(x[c], gs[c / gsz], gm[c / gsz], fmt_qmax(fmt)) << (bits * j);
            }
            w[wi] = word;
        }
    }
}

/* KIVI keys: block (token group, layer*head); per-channel min/max over the group's tokens. */
__global__ void kvq_quant_kivi_k(kv_layout l, seg_geom g, uint8_t *page, kv_src k, unsigned ntok)
{
    unsigned t0 = blockIdx.x * g.G, layer = blockIdx.y / g.H, h = blockIdx.y % g.H;
    unsigned t1 = t0 + g.G < ntok ? t0 + g.G : ntok, D = g.D, tid = threadIdx.x;
    int fmt = l.k_fmt;
    unsigned bits = fmt == KV_FMT_KIVI2 ? 2 : 4, per = 32 / bits;
    __shared__ float s[KV_MAX_HEAD_DIM], m[KV_MAX_HEAD_DIM];
    uint8_t *seg = page + seg_off(g, layer, 0, h);
    kv_sm16 *rec = (kv_sm16 *)(seg + (size_t)g.T * D * bits / 8) + (size_t)blockIdx.x * D;

    for (unsigned c = tid; c < D; c += blockDim.x) {
        float mn = INFINITY, mx = -INFINITY;
        for (unsigned t = t0; t < t1; t++) {
            float xv = load_elem(k, layer, t, h, c);
            if (isnan(xv))
                continue;
            xv = clamp16(xv);
            mn = xv < mn ? xv : mn;
            mx = xv > mx ? xv : mx;
        }
        float sv, mv;
        rec[c] = kvq_asym_params(mn, mx, fmt_qmax(fmt), &sv, &mv);
        s[c] = sv;
        m[c] = mv;
    }
    __syncthreads();
    for (unsigned t = t0; t < t1; t++) {
        uint32_t *w = (uint32_t *)seg + (size_t)t * D / per;
        for (unsigned wi = tid; wi < D / per; wi += blockDim.x) {
            uint32_t word = 0;
            for (unsigned j = 0; j < per; j++) {
                unsigned c = wi * per + j;
                word |= asym_code(load_elem(k, layer, t, h, c), s[c], m[c], fmt_qmax(fmt))
                        << (bits * j);
            }
            w[wi] = word;
        }
    }
}

__global__ void kvq_dequant_rows(kv_layout l, seg_geom g, const uint8_t *page, unsigned tok0,
                                 kv_dst k, kv_dst v, int skip_k, int skip_v)
{
    unsigned t = tok0 + blockIdx.x, layer = blockIdx.y / g.H, h = blockIdx.y % g.H;
    unsigned kind = blockIdx.z, D = g.D;
    if ((kind == 0 && skip_k) || (kind == 1 && skip_v))
        return;
    int fmt = kind ? l.v_fmt : l.k_fmt;
    const kv_dst &dst = kind ? v : k;
    const uint8_t *seg = page + seg_off(g, layer, kind, h);
    float *y = dst.base + (ptrdiff_t)layer * dst.layer_stride +
               (ptrdiff_t)(t - tok0) * dst.tok_stride + (ptrdiff_t)h * dst.head_stride;
    unsigned bits = fmt == KV_FMT_KIVI2 ? 2 : 4, per = 32 / bits;

    for (unsigned c = threadIdx.x; c < D; c += blockDim.x) {
        float out;
        if (fmt == KV_FMT_F16) {
            out = kvq_f16_dec(((const uint16_t *)seg)[(size_t)t * D + c]);
        } else if (fmt == KV_FMT_BF16) {
            out = kvq_u2f((uint32_t)((const uint16_t *)seg)[(size_t)t * D + c] << 16);
        } else if (fmt <= KV_FMT_INT8) {
            float s = ((const float *)(seg + (size_t)g.T * D))[t];
            uint8_t q = seg[(size_t)t * D + c];
            out = (fmt == KV_FMT_INT8 ? (float)(int8_t)q : kvq_fp8_dec(q, fmt == KV_FMT_FP8_E5M2)) *
                  s;
        } else {
            const kv_sm16 *rec = (const kv_sm16 *)(seg + (size_t)g.T * D * bits / 8);
            kv_sm16 r;
            if (kind == 0 && is_kivi(fmt))
                r = rec[(size_t)(t / g.G) * D + c];
            else if (fmt == KV_FMT_INT4)
                r = rec[(size_t)t * (D / 32) + c / 32];
            else
                r = rec[(size_t)t * (D / g.G) + c / g.G];
            uint32_t w = ((const uint32_t *)seg)[(size_t)t * D / per + c / per];
            unsigned q = (w >> (bits * (c % per))) & ((1u << bits) - 1);
            out = fmaf((float)q, kvq_f16_dec(r.scale), kvq_f16_dec(r.min));
        }
        y[c] = out;
    }
}

static bool is_kivi_host(int fmt)
{
    return fmt == KV_FMT_KIVI4 || fmt == KV_FMT_KIVI2;
}

static seg_geom geom(const kv_layout *l)
{
    seg_geom g;
    g.kseg = kv_seg_bytes(l->k_fmt, l);
    g.vseg = kv_seg_bytes(l->v_fmt, l);
    g.H = l->n_kv_heads;
    g.D = l->head_dim;
    g.T = l->page_tokens;
    g.G = l->group ? l->group : 1;
    return g;
}

#ifndef KVQ_HOST_EMU
static bool scale_ok(int fmt, float s)
{
    if (s == 0.0f)
        return true;
    return s > 0.0f && !isinf(s) &&
           (fmt == KV_FMT_FP8_E4M3 || fmt == KV_FMT_FP8_E5M2 || fmt == KV_FMT_INT8);
}

static bool src_ok(const kv_src *s, int fmt)
{
    return s && s->base && s->dtype >= KV_DT_F32 && s->dtype <= KV_DT_BF16 &&
           scale_ok(fmt, s->static_scale);
}

extern "C" int kv_quant_page_cuda(const struct kv_layout *l, void *page, const struct kv_src *k,
                                  const struct kv_src *v, unsigned ntok, cudaStream_t stream)
{
    if (kv_layout_check(l) != 0 || !page || ntok == 0 || ntok > l->page_tokens ||
        !src_ok(k, l->k_fmt) || !src_ok(v, l->v_fmt))
        return -EINVAL;
    seg_geom g = geom(l);
    if (cudaMemsetAsync(page, 0, kv_page_bytes(l), stream) != cudaSuccess)
        return -EIO;
    dim3 rows(ntok, (unsigned)l->n_layers * l->n_kv_heads, 2);
    kvq_quant_rows<<<rows, KVQ_THREADS, 0, stream>>>(*l, g, (uint8_t *)page, *k, *v);
    if (is_kivi_host(l->k_fmt)) {
        dim3 groups((ntok + g.G - 1) / g.G, (unsigned)l->n_layers * l->n_kv_heads);
        kvq_quant_kivi_k<<<groups, KVQ_THREADS, 0, stream>>>(*l, g, (uint8_t *)page, *k, ntok);
    }
    return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}

extern "C" int kv_dequant_page_cuda(const struct kv_layout *l, const void *page, unsigned tok0,
                                    unsigned ntok, const struct kv_dst *k, const struct kv_dst *v,
                                    cudaStream_t stream)
{
    if (kv_layout_check(l) != 0 || !page || ntok == 0 || tok0 >= l->page_tokens ||
        ntok > l->page_tokens - tok0 || (k && !k->base) || (v && !v->base))
        return -EINVAL;
    kv_dst none = {};
    dim3 rows(ntok, (unsigned)l->n_layers * l->n_kv_heads, 2);
    kvq_dequant_rows<<<rows, KVQ_THREADS, 0, stream>>>(*l, geom(l), (const uint8_t *)page, tok0,
                                                       k ? *k : none, v ? *v : none, !k, !v);
    return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}
#endif
