/*
 * kvshare.h - kvrun as a kvd worker: a sequence's full pages live in kvd's shared arena.
 *
 * The namespace is the model plus the storage layout (kvshare_ns_name). A prefill hashes the
 * prompt's full pages (kvc_hash_chain), leases the longest cached prefix (LOOKUP PIN|WAIT), and for
 * the rest allocates arena pages with their hashes: pages another worker is already writing come
 * back BUSY, are released and waited for, so N workers starting together compute each page once.
 * Pages it owns are written IN PLACE by model_forward (kvcache_set_page points the cache at them)
 * and committed in chunks; a DEDUP reply swaps in the winner's page, whose bytes are the same
 * because every worker computes a page from the same prefix with the same operation order.
 *
 * Invariants:
 *  1. The last prompt token is never taken from the cache (at most (n - 1) / page_tokens pages are
 *     looked up), so a prefill always produces its logits.
 *  2. Inside kvshare_prefill the cache holds whole pages only (n_tokens == n_pages * page_tokens,
 *     empty tail) until the final forward of the uncached suffix.
 *  3. held[i] is a read lease on the page the cache's page i points at, for i < n_held; the page
 *     pointers stay valid while the lease is held (kvshare_close releases them).
 *  4. Full pages are always read in stored (quantized) form, cached or just written (kvcache.h's
 *     visibility rule), so logits after a hit are bit-identical to a miss.
 *
 * On any kvd error the functions return it; the caller resets the cache and runs without kvd
 * (the cache is an optimization). Not thread-safe (one libkvclient handle).
 */
#ifndef KVRUN_KVSHARE_H
#define KVRUN_KVSHARE_H

#include <stddef.h>
#include <stdint.h>

#include "kvclient.h"
#include "model.h"

#define KVSHARE_CHUNK_PAGES 4 /* pages computed per forward pass, then committed */
#define KVSHARE_WAIT_MS     10000u

struct kvshare_stats {
    unsigned pages_hit;       /* full pages leased from the cache */
    unsigned pages_computed;  /* full pages this worker computed and committed */
    unsigned pages_dedup;     /* commits answered with another worker's page */
    unsigned busy_waits;      /* lookups repeated because another worker wrote the next page */
    unsigned pages_published; /* pages completed after the prompt (decode) and committed */
    unsigned tokens_skipped;  /* prompt tokens whose K/V came from the cache */
    unsigned tokens_computed; /* prompt tokens this worker ran through the model */
    unsigned score_reports;   /* kvc_scores calls */
};

struct kvshare {
    struct kvc *c;
    size_t page_bytes;
    unsigned max_pages;
    unsigned n_held;        /* leases in held[0 .. n_held): the sequence's first pages */
    struct kvc_page *held;  /* [max_pages] */
    struct kvc_hash *chain; /* [max_pages] hashes of the sequence's full pages */
    struct kvshare_stats st;
};

/* "<model file stem>.<k fmt>.p<page_tokens>", reduced to kvd's name characters. */
void kvshare_ns_name(const char *model_path, const struct kv_layout *lay, char *out, size_t cap);

/* Attach to kvd at run_dir (NULL: $KVD_RUN_DIR, else /run/kvd) for sequences of up to max_tokens.
 * 0 or kvc_open's errors (-ENOENT / -ECONNREFUSED: kvd not running), -ENOMEM. */
int kvshare_open(struct kvshare *s, const char *run_dir, const char *ns,
                 const struct kv_layout *lay, unsigned max_tokens);
/* Release every lease and detach. Safe on a zeroed struct. */
void kvshare_close(struct kvshare *s);

/* Prefill ids[0 .. n) into the EMPTY cache c through kvd (see above) and write the logits of the
 * last token (cfg.vocab floats). 0, -EINVAL, or an error of model_forward or libkvclient; on error
 * the leases taken are released and c must be reset before it is used again. */
int kvshare_prefill(struct kvshare *s, const struct model *m, struct kvcache *c, const int32_t *ids,
                    unsigned n, float *logits);

/* Commit the cache's full pages past the held prefix (completed while decoding; ids[0 ..
 * c->n_tokens) are the sequence's tokens) so that a later turn of the conversation finds them on
 * any worker. Pages another worker holds (BUSY) end the publication. 0 or a libkvclient error. */
int kvshare_publish(struct kvshare *s, struct kvcache *c, const int32_t *ids);

/* One kvc_scores batch with the attention mass accumulated in c->scores for the held pages, then
 * zero c->scores; with nothing to report, a kvc_ping (kvd drops a client silent for 3 heartbeats,
 * so a decoding worker calls this every few tokens). 0 or a libkvclient error. */
int kvshare_report_scores(struct kvshare *s, struct kvcache *c);

#endif
