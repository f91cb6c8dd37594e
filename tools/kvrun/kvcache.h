/*
 * kvcache.h - kvrun's KV cache of one sequence: full pages in kvd's page format, and a private
 * f32 tail.
 *
 * Full pages are laid out exactly as kvd pages (kernels/kv_format.h: kv_page_bytes,
 * kv_seg_offset) and quantized with kernels/kv_quant.h, so a later phase can point them at pages
 * in the shared arena instead of this process's buffer. The partial last page (fewer than
 * page_tokens tokens) stays private, in f32, for every layer.
 *
 * Visibility rule (what makes a cache hit bit-identical to a miss): the token at position t, in
 * page p = t / page_tokens, attends to
 *   - positions in pages 0 .. p-1 in their STORED form (dequantized page bytes), and
 *   - positions p * page_tokens .. t of its own page in f32.
 * This is exactly what decoding sees (its own page is still the private tail), and a prefill of
 * many tokens follows the same rule, so the K/V written into a page never depend on how the
 * tokens were batched, and neither do the logits.
 */
#ifndef KVRUN_KVCACHE_H
#define KVRUN_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "kv_format.h"

struct kvcache {
    struct kv_layout lay; /* the namespace layout: formats, page_tokens, group */
    size_t page_bytes;
    unsigned max_tokens; /* capacity in tokens (multiple of page_tokens) */
    unsigned n_tokens;   /* tokens whose K/V are stored (pages + tail) */
    unsigned n_pages;    /* full pages (n_tokens / page_tokens after a forward) */
    uint8_t *pages;      /* max_tokens / page_tokens pages of page_bytes (owned) */
    uint8_t **ptr;       /* per page: NULL (use pages) or a page elsewhere (kvd's arena) */
    float *scores;       /* NULL, or [max_tokens] attention mass per cached token (H2O) */
    float *tail_k;       /* [n_layers][page_tokens][n_kv_heads][head_dim] f32 (owned) */
    float *tail_v;
};

/* Allocates a cache for up to max_tokens tokens (rounded up to whole pages).
 * 0, -EINVAL (invalid layout), -ENOMEM. */
int kvcache_init(struct kvcache *c, const struct kv_layout *lay, unsigned max_tokens);
void kvcache_free(struct kvcache *c);
/* Forgets every token (the buffers stay). */
void kvcache_reset(struct kvcache *c);
/* Page i (i < max_tokens / page_tokens): c->ptr[i] when set, else the private buffer's page. */
uint8_t *kvcache_page(const struct kvcache *c, unsigned i);
/* Points page i at p (a page in kvd's arena, valid while its lease is held), or back at the
 * private buffer when p is NULL. model_forward writes pages it completes through kvcache_page, so
 * a page pointed at a freshly allocated arena page is filled in place. */
void kvcache_set_page(struct kvcache *c, unsigned i, uint8_t *p);
/* Turns on score accumulation: every forward pass then ADDS, for each token in a full page that a
 * query attends to in stored form, its attention probability summed over query heads and layers to
 * c->scores[token]. The caller reads and zeroes them. 0 or -ENOMEM. */
int kvcache_enable_scores(struct kvcache *c);

/*
 * Attention of one layer for n_q consecutive query tokens at positions q0 .. q0 + n_q - 1,
 * following the visibility rule above. The function boundary a later phase points at kvd's
 * arena (and at kernels/attn.h's paged kernel).
 *   pages:  page pointers in context order; every page before the last query's page is present
 *   rk, rv: f32 K and V of positions r0 .. r0 + n_r - 1, [n_r][n_kv_heads][head_dim], covering
 *           from the first query's page start to the last query; r0 a multiple of page_tokens
 *   q, out: [n_q][n_q_heads][head_dim]
 *   scores: NULL, or per token of the pages: attention mass ADDED (summed over query heads) for
 *           positions attended in stored form (scores[t] for t < own page start)
 * 0, -EINVAL (geometry), -ENOMEM, or the dequantizer's error.
 */
int kvcache_attend(const struct kv_layout *l, unsigned layer, unsigned n_q_heads,
                   const uint8_t *const *pages, unsigned n_pages, const float *rk, const float *rv,
                   unsigned r0, unsigned n_r, const float *q, unsigned q0, unsigned n_q, float *out,
                   float *scores);
/* The same function computed simply (per query, two-pass softmax over the dequantized pages): the
 * check for the paged kernel, and what kvcache_attend runs when $KVRUN_SIMPLE_ATTN is set. */
int kvcache_attend_simple(const struct kv_layout *l, unsigned layer, unsigned n_q_heads,
                          const uint8_t *const *pages, unsigned n_pages, const float *rk,
                          const float *rv, unsigned r0, unsigned n_r, const float *q, unsigned q0,
                          unsigned n_q, float *out);

#endif
