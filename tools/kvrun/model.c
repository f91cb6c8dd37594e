/*
 * model.c - loading a GGUF Llama model and its forward pass (see model.h).
 *
 * Invariants: after model_load every weight the forward pass reads exists with the shape the
 * configuration implies (checked against the tensor table, not trusted from names); head_dim is a
 * multiple of 32 (page formats) and n_heads a multiple of n_kv_heads. model_forward touches the
 * cache's visible state (n_tokens, n_pages, tail) only after every layer succeeded.
 */
#include "model.h"

#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_quant.h"
#include "mm.h"

#ifndef KVRUN_SRC_DIR
#define KVRUN_SRC_DIR "."
#endif

__attribute__((format(printf, 3, 4))) static int load_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    va_list ap;
    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* Dequantizes tensor `name`, which must hold ne1 rows of ne0 elements, into a new f32 array. */
static int load_tensor(struct model *m, const char *name, uint64_t ne0, uint64_t ne1, float **out,
                       char *err, size_t errlen)
{
    const struct gguf_tensor *t = gguf_find_tensor(&m->g, name);

    if (!t)
        return load_err(err, errlen, "model: tensor %s missing", name);
    if (t->ne[0] != ne0 || t->n_elements != ne0 * ne1)
        return load_err(err, errlen,
                        "model: tensor %s holds %llu elements in rows of %llu; %llu rows of %llu "
                        "expected",
                        name, (unsigned long long)t->n_elements, (unsigned long long)t->ne[0],
                        (unsigned long long)ne1, (unsigned long long)ne0);
    if (t->type != GGUF_TT_F32 && t->type != GGUF_TT_F16 && t->type != GGUF_TT_Q4_0 &&
        t->type != GGUF_TT_Q4_1 && t->type != GGUF_TT_Q8_0)
        return load_err(err, errlen, "model: tensor %s has unsupported type %u", name, t->type);
    *out = malloc(ne0 * ne1 * sizeof(float));
    if (!*out)
        return -ENOMEM;
    gguf_dequant(t->type, t->data, *out, ne0 * ne1);
    return 0;
}

static int get_u32(const struct model *m, const char *arch, const char *key, uint32_t *v, char *err,
                   size_t errlen)
{
    char full[128];
    snprintf(full, sizeof(full), "%s.%s", arch, key);
    if (gguf_get_u32(&m->g, full, v))
        return load_err(err, errlen, "model: metadata %s missing or not an integer", full);
    return 0;
}

void model_free(struct model *m)
{
    if (m->layers) {
        for (uint32_t l = 0; l < m->cfg.n_layers; l++) {
            struct model_layer *L = &m->layers[l];
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->wq);
            free(L->wk);
            free(L->wv);
            free(L->wo);
            free(L->w_gate);
            free(L->w_up);
            free(L->w_down);
        }
        free(m->layers);
    }
    if (m->output != m->embd)
        free(m->output);
    free(m->embd);
    free(m->out_norm);
    free(m->inv_freq);
    tok_free(&m->tok);
    gguf_close(&m->g);
    memset(m, 0, sizeof(*m));
}

int model_load(struct model *m, const char *path, char *err, size_t errlen)
{
    struct model_cfg *c = &m->cfg;
    struct gguf_str arch_s;
    char arch[32], name[96];
    int rc;

    memset(m, 0, sizeof(*m));
    if ((rc = gguf_open(&m->g, path, err, errlen)))
        return rc;
    rc = -EINVAL;
    if (gguf_get_str(&m->g, "general.architecture", &arch_s) || arch_s.len != 5 ||
        memcmp(arch_s.p, "llama", 5)) {
        load_err(err, errlen, "model: %s: general.architecture is not \"llama\"", path);
        goto err_free;
    }
    snprintf(arch, sizeof(arch), "llama");
    if ((rc = get_u32(m, arch, "block_count", &c->n_layers, err, errlen)) ||
        (rc = get_u32(m, arch, "embedding_length", &c->dim, err, errlen)) ||
        (rc = get_u32(m, arch, "feed_forward_length", &c->ffn, err, errlen)) ||
        (rc = get_u32(m, arch, "attention.head_count", &c->n_heads, err, errlen)) ||
        (rc = get_u32(m, arch, "context_length", &c->ctx, err, errlen)))
        goto err_free;
    if (gguf_get_u32(&m->g, "llama.attention.head_count_kv", &c->n_kv_heads))
        c->n_kv_heads = c->n_heads;
    if (gguf_get_f32(&m->g, "llama.attention.layer_norm_rms_epsilon", &c->eps))
        c->eps = 1e-5f;
    if (gguf_get_f32(&m->g, "llama.rope.freq_base", &c->rope_base))
        c->rope_base = 10000.0f;
    rc = -EINVAL;
    if (c->n_layers == 0 || c->n_layers > MODEL_MAX_LAYERS || c->dim == 0 ||
        c->dim > MODEL_MAX_DIM || c->ffn == 0 || c->ffn > MODEL_MAX_FFN || c->n_heads == 0 ||
        c->n_kv_heads == 0 || c->n_heads % c->n_kv_heads || c->dim % c->n_heads ||
        (c->dim / c->n_heads) % 32 || c->ffn % 32 || c->n_kv_heads > KV_MAX_KV_HEADS ||
        c->dim / c->n_heads > KV_MAX_HEAD_DIM || !(c->eps > 0) || !(c->rope_base > 0)) {
        load_err(err, errlen,
                 "model: %s: unsupported dimensions (layers %u, dim %u, heads %u/%u, ffn %u)", path,
                 c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->ffn);
        goto err_free;
    }
    c->head_dim = c->dim / c->n_heads;
    if ((rc = tok_init(&m->tok, &m->g, err, errlen)))
        goto err_free;
    c->vocab = m->tok.n_vocab;

    const uint64_t D = c->dim, KV = (uint64_t)c->n_kv_heads * c->head_dim, F = c->ffn;
    if ((rc = load_tensor(m, "token_embd.weight", D, c->vocab, &m->embd, err, errlen)) ||
        (rc = load_tensor(m, "output_norm.weight", D, 1, &m->out_norm, err, errlen)))
        goto err_free;
    if (gguf_find_tensor(&m->g, "output.weight")) {
        if ((rc = load_tensor(m, "output.weight", D, c->vocab, &m->output, err, errlen)))
            goto err_free;
    } else {
        m->output = m->embd;
    }
    rc = -ENOMEM;
    m->layers = calloc(c->n_layers, sizeof(*m->layers));
    m->inv_freq = malloc(c->head_dim / 2 * sizeof(float));
    if (!m->layers || !m->inv_freq)
        goto err_free;
    for (uint32_t i = 0; i < c->head_dim / 2; i++)
        m->inv_freq[i] = (float)pow((double)c->rope_base, -2.0 * i / c->head_dim);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        struct model_layer *L = &m->layers[l];
        const struct {
            const char *n;
            uint64_t ne0, ne1;
            float **dst;
        } w[] = {
            {"attn_norm", D, 1, &L->attn_norm}, {"ffn_norm", D, 1, &L->ffn_norm},
            {"attn_q", D, D, &L->wq},           {"attn_k", D, KV, &L->wk},
            {"attn_v", D, KV, &L->wv},          {"attn_output", D, D, &L->wo},
            {"ffn_gate", D, F, &L->w_gate},     {"ffn_up", D, F, &L->w_up},
            {"ffn_down", F, D, &L->w_down},
        };
        for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
            snprintf(name, sizeof(name), "blk.%u.%s.weight", l, w[i].n);
            if ((rc = load_tensor(m, name, w[i].ne0, w[i].ne1, w[i].dst, err, errlen)))
                goto err_free;
        }
    }
    return 0;

err_free:
    model_free(m);
    return rc;
}

struct kv_layout model_kv_layout(const struct model *m, int fmt, unsigned page_tokens,
                                 unsigned group)
{
    struct kv_layout l = {
        .n_layers = (uint16_t)m->cfg.n_layers,
        .n_kv_heads = (uint16_t)m->cfg.n_kv_heads,
        .head_dim = (uint16_t)m->cfg.head_dim,
        .page_tokens = (uint16_t)page_tokens,
        .k_fmt = (uint8_t)fmt,
        .v_fmt = (uint8_t)fmt,
        .group = (uint16_t)((fmt == KV_FMT_KIVI4 || fmt == KV_FMT_KIVI2) ? group : 0),
    };
    return l;
}

static void rmsnorm(float *o, const float *x, const float *w, unsigned n, float eps)
{
    double ss = 0;
    for (unsigned i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float s = (float)(1.0 / sqrt(ss / n + eps));
    for (unsigned i = 0; i < n; i++)
        o[i] = x[i] * s * w[i];
}

/* Rotates heads of one token at position pos: pairs (2i, 2i+1). */
static void rope(float *v, unsigned n_heads, unsigned D, unsigned pos, const float *inv_freq)
{
    for (unsigned i = 0; i < D / 2; i++) {
        double a = (double)pos * inv_freq[i];
        float cs = (float)cos(a), sn = (float)sin(a);
        for (unsigned h = 0; h < n_heads; h++) {
            float *p = v + (size_t)h * D + 2 * i, x0 = p[0], x1 = p[1];
            p[0] = x0 * cs - x1 * sn;
            p[1] = x0 * sn + x1 * cs;
        }
    }
}

int model_forward(const struct model *m, struct kvcache *c, const int32_t *tokens, unsigned n,
                  float *logits, unsigned logits_from)
{
    const struct model_cfg *cf = &m->cfg;
    const unsigned P = c->lay.page_tokens, D = cf->dim, HD = cf->head_dim, H = cf->n_heads;
    const unsigned KVD = cf->n_kv_heads * HD, F = cf->ffn, L = cf->n_layers;
    const unsigned n0 = c->n_tokens, r0 = c->n_pages * P, tail_n = n0 - r0, nr = tail_n + n;
    const unsigned end = n0 + n, full_end = end / P, new_r0 = full_end * P;
    const size_t tail_layer = (size_t)P * KVD;
    float *x = NULL, *xn = NULL, *q = NULL, *kw = NULL, *vw = NULL, *att = NULL, *tmp = NULL;
    float *g = NULL, *u = NULL, *ntk = NULL, *ntv = NULL;
    const uint8_t **pages = NULL;
    int rc = -EINVAL;

    if (n == 0 || n > c->max_tokens - n0 || logits_from > n || c->lay.n_layers != L ||
        c->lay.n_kv_heads != cf->n_kv_heads || c->lay.head_dim != HD)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= cf->vocab)
            return -EINVAL;
    rc = -ENOMEM;
    x = malloc((size_t)n * D * sizeof(float));
    xn = malloc((size_t)n * D * sizeof(float));
    q = malloc((size_t)n * D * sizeof(float));
    att = malloc((size_t)n * D * sizeof(float));
    tmp = malloc((size_t)n * D * sizeof(float));
    kw = malloc((size_t)nr * KVD * sizeof(float));
    vw = malloc((size_t)nr * KVD * sizeof(float));
    g = malloc((size_t)n * F * sizeof(float));
    u = malloc((size_t)n * F * sizeof(float));
    ntk = malloc(L * tail_layer * sizeof(float));
    ntv = malloc(L * tail_layer * sizeof(float));
    pages = malloc(((size_t)full_end + 1) * sizeof(*pages));
    if (!x || !xn || !q || !att || !tmp || !kw || !vw || !g || !u || !ntk || !ntv || !pages)
        goto out_free;
    for (unsigned p = 0; p < full_end; p++)
        pages[p] = kvcache_page(c, p);
    for (unsigned i = 0; i < n; i++)
        memcpy(x + (size_t)i * D, m->embd + (size_t)tokens[i] * D, D * sizeof(float));

    for (unsigned l = 0; l < L; l++) {
        const struct model_layer *W = &m->layers[l];
        for (unsigned i = 0; i < n; i++)
            rmsnorm(xn + (size_t)i * D, x + (size_t)i * D, W->attn_norm, D, cf->eps);
        mm_matmul(q, D, xn, D, W->wq, n, D, D);
        mm_matmul(kw + (size_t)tail_n * KVD, KVD, xn, D, W->wk, n, KVD, D);
        mm_matmul(vw + (size_t)tail_n * KVD, KVD, xn, D, W->wv, n, KVD, D);
        memcpy(kw, c->tail_k + l * tail_layer, (size_t)tail_n * KVD * sizeof(float));
        memcpy(vw, c->tail_v + l * tail_layer, (size_t)tail_n * KVD * sizeof(float));
        for (unsigned i = 0; i < n; i++) {
            rope(q + (size_t)i * D, H, HD, n0 + i, m->inv_freq);
            rope(kw + (size_t)(tail_n + i) * KVD, cf->n_kv_heads, HD, n0 + i, m->inv_freq);
        }
        /* pages completed by this call: this layer's segments, quantized from f32 */
        for (unsigned p = c->n_pages; p < full_end; p++) {
            size_t row0 = (size_t)(p * P - r0) * KVD;
            uint8_t *pg = kvcache_page(c, p);
            for (unsigned h = 0; h < cf->n_kv_heads; h++) {
                rc = kv_quant_seg(&c->lay, 0, pg + kv_seg_offset(&c->lay, l, 0, h),
                                  kw + row0 + (size_t)h * HD, KV_DT_F32, KVD, P, 0.0f);
                if (!rc)
                    rc = kv_quant_seg(&c->lay, 1, pg + kv_seg_offset(&c->lay, l, 1, h),
                                      vw + row0 + (size_t)h * HD, KV_DT_F32, KVD, P, 0.0f);
                if (rc)
                    goto out_free;
            }
        }
        rc = kvcache_attend(&c->lay, l, H, pages, full_end, kw, vw, r0, nr, q, n0, n, att,
                            c->scores);
        if (rc)
            goto out_free;
        mm_matmul(tmp, D, att, D, W->wo, n, D, D);
        for (size_t i = 0; i < (size_t)n * D; i++)
            x[i] += tmp[i];
        for (unsigned i = 0; i < n; i++)
            rmsnorm(xn + (size_t)i * D, x + (size_t)i * D, W->ffn_norm, D, cf->eps);
        mm_matmul(g, F, xn, D, W->w_gate, n, F, D);
        mm_matmul(u, F, xn, D, W->w_up, n, F, D);
        for (size_t i = 0; i < (size_t)n * F; i++)
            g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        mm_matmul(tmp, D, g, F, W->w_down, n, D, F);
        for (size_t i = 0; i < (size_t)n * D; i++)
            x[i] += tmp[i];
        memcpy(ntk + l * tail_layer, kw + (size_t)(new_r0 - r0) * KVD,
               (size_t)(end - new_r0) * KVD * sizeof(float));
        memcpy(ntv + l * tail_layer, vw + (size_t)(new_r0 - r0) * KVD,
               (size_t)(end - new_r0) * KVD * sizeof(float));
    }
    if (logits) {
        unsigned nl = n - logits_from;
        for (unsigned i = 0; i < nl; i++)
            rmsnorm(xn + (size_t)i * D, x + (size_t)(logits_from + i) * D, m->out_norm, D, cf->eps);
        mm_matmul(logits, cf->vocab, xn, D, m->output, nl, cf->vocab, D);
    }
    for (unsigned l = 0; l < L; l++) {
        memcpy(c->tail_k + l * tail_layer, ntk + l * tail_layer,
               (size_t)(end - new_r0) * KVD * sizeof(float));
        memcpy(c->tail_v + l * tail_layer, ntv + l * tail_layer,
               (size_t)(end - new_r0) * KVD * sizeof(float));
    }
    c->n_tokens = end;
    c->n_pages = full_end;
    rc = 0;
out_free:
    free(x);
    free(xn);
    free(q);
    free(att);
    free(tmp);
    free(kw);
    free(vw);
    free(g);
    free(u);
    free(ntk);
    free(ntv);
    free(pages);
    return rc;
}

int model_find(const char *path, char *out, size_t cap)
{
    const char *roots[3] = {getenv("KVD_SRC_DIR"), KVRUN_SRC_DIR, "."};
    const char *env = getenv("KVRUN_MODEL");
    char pat[4096];
    int rc = -ENOENT;

    if (path || (env && *env)) {
        snprintf(out, cap, "%s", path ? path : env);
        return 0;
    }
    for (int i = 0; i < 3 && rc; i++) {
        glob_t gl;
        if (!roots[i])
            continue;
        snprintf(pat, sizeof(pat), "%s/.venv/lib/python3*/site-packages/*/*.gguf", roots[i]);
        if (glob(pat, 0, NULL, &gl) == 0 && gl.gl_pathc > 0) {
            snprintf(out, cap, "%s", gl.gl_pathv[0]);
            rc = 0;
        }
        globfree(&gl);
    }
    return rc;
}
