/*
 * model.h - a Llama-architecture causal LM loaded from GGUF, run on the CPU in f32.
 *
 * Forward pass as llama.cpp runs GGUF Llama weights: token embedding; per layer RMSNorm, Q/K/V
 * projections, RoPE on adjacent channel pairs (2i, 2i+1) with angle pos * base^(-2i/head_dim)
 * (the GGUF converter permutes Q/K rows for this "normal" mode), grouped-query attention through
 * kvcache_attend(), output projection, residual; RMSNorm, SwiGLU MLP (down(silu(gate) * up)),
 * residual; final RMSNorm and the output head (tied to the embedding when output.weight is
 * absent). Weights are dequantized to f32 once at load; matmuls go through mm.h, whose per-element
 * operation order does not depend on the batch, so a token's logits are the same bits whether it
 * is prefilled in a batch or decoded alone.
 *
 * A struct model is read-only after model_load: several sequences (struct kvcache) may run on one
 * model concurrently from different threads.
 */
#ifndef KVRUN_MODEL_H
#define KVRUN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "kvcache.h"
#include "tok.h"

#define MODEL_MAX_LAYERS 256
#define MODEL_MAX_DIM    16384
#define MODEL_MAX_FFN    65536
#define MODEL_MAX_VOCAB  (1u << 20)

struct model_cfg {
    uint32_t n_layers, dim, n_heads, n_kv_heads, head_dim, ffn, vocab, ctx;
    float eps, rope_base;
};

struct model_layer {
    float *attn_norm, *ffn_norm; /* [dim] */
    float *wq, *wk, *wv, *wo;    /* [out][in] */
    float *w_gate, *w_up, *w_down;
};

struct model {
    struct model_cfg cfg;
    struct gguf g;
    struct tok tok;
    float *embd;     /* [vocab][dim] */
    float *out_norm; /* [dim] */
    float *output;   /* [vocab][dim]; == embd when tied */
    struct model_layer *layers;
    float *inv_freq; /* [head_dim / 2] */
};

/* Loads a GGUF Llama model: 0, -EINVAL (not a supported model; err says why), -ENOMEM, -errno
 * from opening the file. */
int model_load(struct model *m, const char *path, char *err, size_t errlen);
void model_free(struct model *m);

/* The KV layout of this model for a storage format (page_tokens tokens per page, KIVI group). */
struct kv_layout model_kv_layout(const struct model *m, int fmt, unsigned page_tokens,
                                 unsigned group);

/*
 * Runs n tokens at positions c->n_tokens .. + n - 1, storing their K/V in c (completed pages in
 * the page format, the rest in the tail). If logits is not NULL, writes the logits of tokens
 * logits_from .. n - 1: (n - logits_from) rows of cfg.vocab floats.
 * 0, -EINVAL (n == 0, past the cache capacity, token id out of range), -ENOMEM, or an error of
 * the KV kernels. On error the cache is unchanged.
 */
int model_forward(const struct model *m, struct kvcache *c, const int32_t *tokens, unsigned n,
                  float *logits, unsigned logits_from);

/* Finds the model file: path if not NULL, else $KVRUN_MODEL, else the first *.gguf under
 * <root>/.venv/lib/python3*(slash)site-packages/<package>/ for root in ($KVD_SRC_DIR, the source
 * tree kvrun was built from, "."). Writes it to out; 0 or -ENOENT. */
int model_find(const char *path, char *out, size_t cap);

#endif
