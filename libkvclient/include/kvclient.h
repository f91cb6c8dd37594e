/*
 * kvclient.h - libkvclient, the library an inference worker links to share KV pages through kvd.
 *
 * This header is the whole public API and its documentation. It is self-contained (C11 or C++),
 * needs only <stddef.h> and <stdint.h>, and exports nothing but kvc_* symbols (libkvclient.so.0).
 *
 * Usage (error handling shortened; every call returns 0 or a negative errno):
 *
 *     struct kvc_opts o = KVC_OPTS_INIT;            // defaults: $KVD_RUN_DIR or /run/kvd, 5 s
 *     o.ns = "llama3-8b";
 *     o.layout = (struct kvc_layout){.n_layers = 32, .n_kv_heads = 8, .head_dim = 128,
 *                                    .page_tokens = 16, .k_fmt = KVC_FMT_FP8_E4M3,
 *                                    .v_fmt = KVC_FMT_FP8_E4M3};
 *     struct kvc *c;
 *     if (kvc_open(&o, &c) < 0) { serve without the cache; }
 *
 *     struct kvc_hash chain[64];
 *     int n = kvc_hash_chain(kvc_get_hasher(c), tokens, n_tokens, NULL, chain, 64); // full pages
 * only struct kvc_page pages[64]; uint32_t hit, next; kvc_lookup(c, chain, n, KVC_LOOKUP_PIN |
 * KVC_LOOKUP_WAIT, 200, pages, &hit, &next);
 *     // pages[0..hit) are pinned: read them in place at kvc_page_ptr(c, &pages[i]).
 *     // For blocks hit..n: kvc_alloc(c, n - hit, chain + hit, fresh), write the KV into
 *     // kvc_page_ptr(c, &fresh[i]), then kvc_commit() them with their hashes; use the pages the
 *     // commit returns (a page flagged KVC_PAGE_DEDUP replaces yours).
 *     kvc_release_pages(c, pages, hit);             // when the sequence is done
 *     kvc_close(c);
 *
 * Errors a caller must expect from any call on a handle:
 *   -ESHUTDOWN  kvd went away (its side-channel socket closed) or was restarted. Every later call
 *               on the handle returns -ESHUTDOWN until kvc_reconnect() succeeds. Page pointers
 *               from before are invalid after a reconnect (the arena is imported again).
 *   -ENOTCONN   the handle is not attached: a kvc_reconnect() failed, kvd is still down.
 *   -ECHILD     the handle belongs to the parent of a fork(); the child must open its own.
 *               The library never touches the parent's sockets from the child.
 *   -ETIMEDOUT  no reply within kvc_opts.timeout_ms (plus wait_ms for a waiting lookup).
 *   -EINVAL     a bad argument (NULL pointer, zero or mismatched count, unknown flag).
 *   -E2BIG      a count over its limit (KVC_MAX_CHAIN, KVC_MAX_BATCH, 4 MiB frame).
 *   -EAGAIN     KVC_MAX_INFLIGHT asynchronous requests are in flight: kvc_complete some first.
 * Errors kvd reports map to errnos (client's fault: -EPROTO, -EPROTONOSUPPORT, -EOPNOTSUPP,
 * -EBADF page not held, -EACCES, -EPERM; kvd's state: -ENOSPC pool full and pinned, -ENOMEM,
 * -EBUSY, -ENOENT, -EIO, -EFAULT internal). kvc_strerror() explains each code.
 *
 * Ownership: the caller owns every array it passes and every output array; the library copies
 * inputs before a call returns (kvc_submit: before it returns, too) and writes outputs only during
 * the call (kvc_submit: until the request is handed back by kvc_complete). The handle owns the
 * arena mapping; pointers from kvc_page_ptr() are valid until kvc_close() or kvc_reconnect().
 *
 * Threads: a handle is NOT thread-safe: use one handle per thread, or serialize calls on a handle
 * yourself. Different handles are independent. kvc_hasher_init, kvc_hash_chain, kvc_strerror and
 * kvc_page_ptr on a handle no thread is changing are thread-safe. The library starts no threads of
 * its own besides ZeroMQ's I/O thread, never prints, never calls exit/abort, and leaves errno
 * alone (it may change errno as any libc call does).
 *
 * Liveness: kvd notices a dead worker through the side-channel socket and a pidfd, at once. It also
 * expects a request at least every kvc_info.heartbeat_ms; every call counts, kvc_ping() is the
 * cheap one for an idle worker.
 */
#ifndef KVCLIENT_H
#define KVCLIENT_H

#include <stddef.h>
#include <stdint.h>

#if defined(KVC_BUILDING)
#define KVC_API __attribute__((visibility("default")))
#else
#define KVC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define KVC_VERSION_MAJOR 0
#define KVC_VERSION_MINOR 1

/* Limits (equal to kvd's wire limits). */
#define KVC_HASH_BYTES   16
#define KVC_MAX_NS_NAME  63    /* characters of a namespace name, [A-Za-z0-9._:-] */
#define KVC_MAX_CHAIN    4096u /* hashes in one lookup */
#define KVC_MAX_BATCH    4096u /* pages in one alloc / commit / release / scores call */
#define KVC_MAX_WAIT_MS  30000u
#define KVC_MAX_INFLIGHT 1024u /* asynchronous requests in flight on one handle */

/* Page storage formats (values are kvd's on-disk/wire ids). */
enum kvc_fmt {
    KVC_FMT_F16 = 1,
    KVC_FMT_BF16 = 2,
    KVC_FMT_FP8_E4M3 = 3,
    KVC_FMT_FP8_E5M2 = 4,
    KVC_FMT_INT8 = 5,
    KVC_FMT_INT4 = 6,
    KVC_FMT_KIVI4 = 7,
    KVC_FMT_KIVI2 = 8
};

/* A namespace's page geometry; same 12 bytes as kvd's struct kv_layout. */
struct kvc_layout {
    uint16_t n_layers;    /* transformer layers in one page */
    uint16_t n_kv_heads;  /* KV heads per layer */
    uint16_t head_dim;    /* channels per head (multiple of 32) */
    uint16_t page_tokens; /* tokens in a full page */
    uint8_t k_fmt;        /* enum kvc_fmt of keys */
    uint8_t v_fmt;        /* enum kvc_fmt of values */
    uint16_t group;       /* KIVI group size; 0 when unused */
};

/* A 128-bit chained block hash: it names a whole prefix, not one block. */
struct kvc_hash {
    uint8_t b[KVC_HASH_BYTES];
};

/* A page kvd handed out (lookup, alloc, commit). 16 bytes, same as the wire. */
struct kvc_page {
    uint32_t id;     /* page id, used in commit / release / scores */
    uint16_t ntok;   /* tokens in the page */
    uint16_t flags;  /* KVC_PAGE_* */
    uint64_t offset; /* byte offset in the arena; see kvc_page_ptr() */
};
#define KVC_PAGE_DEDUP   1u /* commit: another client committed this hash first; use this page */
#define KVC_PAGE_DEMOTED 2u /* page came back from the spill tier converted to FP8 */
#define KVC_PAGE_BUSY                                                                              \
    4u /* alloc with hashes: another client already writes (or committed)                          \
        * this hash; release the page and kvc_lookup with WAIT instead */
#define KVC_PAGE_BUSY                                                                              \
    4u /* alloc with hashes: another client already writes (or has committed)                      \
        * this hash. Release the page and kvc_lookup() with KVC_LOOKUP_WAIT:                       \
        * N workers starting on one prompt then compute each page once. */

/* One page to commit. parent is the hash of the previous block (all zero for block 0). */
struct kvc_commit {
    uint32_t page_id;
    uint16_t ntok; /* tokens written (page_tokens for a full page) */
    uint16_t flags;
    struct kvc_hash hash;
    struct kvc_hash parent;
};

/* One score report: ntok float attention masses for page page_id (summed over the query heads of
 * a KV head and the layers reported). kvd stores them raw per page and token. */
struct kvc_score {
    uint32_t page_id;
    uint16_t ntok;
    uint16_t flags;
    const float *mass; /* ntok values; caller-owned, read during the call only */
};

/* Lookup flags. */
#define KVC_LOOKUP_PIN  1u /* take a read lease on every page returned (release it later) */
#define KVC_LOOKUP_WAIT 2u /* if the chain stops at a page being written, wait up to wait_ms */
/* Lookup "next": the state of block n_hit. */
enum { KVC_NEXT_END = 0, KVC_NEXT_MISS = 1, KVC_NEXT_PENDING = 2 };

enum kvc_backend { KVC_BACKEND_HOST = 1, KVC_BACKEND_CUDA_VMM = 2, KVC_BACKEND_CUDA_LEGACY = 3 };

/* kvd's counters, as of the STATS reply. Same fields and order as kvd's struct kvp_stats. */
struct kvc_stats {
    uint64_t clients, namespaces;
    uint64_t pages_total, pages_free, pages_writing, pages_committed, pages_pinned;
    uint64_t chunks_total, chunks_used;
    uint64_t lookups, lookup_hits, lookup_pages_hit, lookup_pending;
    uint64_t allocs, commits, commit_dedups, releases, evictions, score_reports;
    uint64_t errors_client, errors_server;
    uint64_t released_by_detach, released_by_sidechannel, released_by_pidfd, released_by_heartbeat,
        leases_released_on_death;
    uint64_t bytes_saved;
    uint64_t spill_writes, spill_restores, spill_dropped, spill_checksum_failures;
};

/* ---- connect -------------------------------------------------------------------------------- */

struct kvc_opts {
    const char *run_dir; /* kvd's runtime dir; NULL: $KVD_RUN_DIR, else /run/kvd */
    const char *ns;      /* namespace name (required) */
    struct kvc_layout layout;
    const void *salt; /* optional tenant salt for the block hash (copied), or NULL */
    size_t salt_len;  /* <= 64 */
    int timeout_ms;   /* per synchronous request; <= 0: 5000 */
    unsigned flags;   /* none defined: 0 */
};
#define KVC_OPTS_INIT                                                                              \
    {                                                                                              \
        NULL, NULL, {0, 0, 0, 0, 0, 0, 0}, NULL, 0, 5000, 0                                        \
    }

struct kvc;

/* Connect to kvd, import its page arena and attach to namespace opts->ns with opts->layout.
 * On success *out is a new handle (free it with kvc_close). On error *out is untouched and nothing
 * is left open. opts and its strings are copied.
 * Errors: -EINVAL (bad opts or layout), -ENAMETOOLONG (run_dir), -ENOENT / -ECONNREFUSED (kvd not
 * running), -ECONNRESET (kvd closed the side channel before welcoming us), -EPERM / -EACCES (kvd
 * refused this uid/gid), -EINVAL (layout differs from the namespace's), -ETIMEDOUT, -ENOMEM,
 * -EPROTO / -EPROTONOSUPPORT (not a kvd we understand), arena import errors (-ENODEV: a CUDA
 * arena and no usable device here). */
KVC_API int kvc_open(const struct kvc_opts *opts, struct kvc **out);

/* Detach (best effort, bounded by a short timeout), unmap the arena and free the handle. kvd
 * drops every lease the handle still holds. NULL is a no-op. Requests still in flight are dropped
 * without being completed. From a forked child this frees the child's memory only (see -ECHILD). */
KVC_API void kvc_close(struct kvc *c);

/* After -ESHUTDOWN: drop the old connection and arena, connect and attach again with the same
 * options. In-flight requests are completed with -ESHUTDOWN first (collect them with
 * kvc_complete). Leases of the old connection are gone. Errors: as kvc_open; on error the handle
 * stays usable for another kvc_reconnect() and other calls return -ENOTCONN. Also -ECHILD. */
KVC_API int kvc_reconnect(struct kvc *c);

struct kvc_info {
    uint32_t client_id; /* kvd's id for this client */
    uint32_t ns_id;
    uint64_t page_bytes; /* bytes of one page of the namespace's layout */
    uint64_t arena_bytes;
    void *arena_base; /* host pointer (HOST) or CUDA device pointer; owned by the handle */
    int backend;      /* enum kvc_backend */
    uint32_t heartbeat_ms;
    uint32_t max_batch;
    uint8_t gpu_uuid[16]; /* CUDA backends: the device's UUID */
    struct kvc_layout layout;
};
/* Fill *out. Errors: -EINVAL, -ENOTCONN, -ECHILD. */
KVC_API int kvc_get_info(const struct kvc *c, struct kvc_info *out);

/* Address of a page in this process: arena base + offset, a host pointer for the host arena or a
 * device pointer for a CUDA arena. NULL if the page does not lie inside the arena or the handle is
 * not attached. Valid until kvc_close() / kvc_reconnect(). */
KVC_API void *kvc_page_ptr(const struct kvc *c, const struct kvc_page *p);

/* ---- block hashes --------------------------------------------------------------------------- */

/* Key material of a chain: BLAKE2b-256 of (domain, ns name, layout, salt). Plain data. */
struct kvc_hasher {
    uint8_t key[32];
    uint32_t page_tokens;
};

/* Derive the key for namespace ns, layout l and an optional salt (salt_len <= 64). Two workers
 * share pages only if all three are equal. Errors: -EINVAL. Thread-safe. */
KVC_API int kvc_hasher_init(struct kvc_hasher *h, const char *ns, const struct kvc_layout *l,
                            const void *salt, size_t salt_len);

/* The hasher of an attached handle (from its kvc_opts), or NULL. Owned by the handle. */
KVC_API const struct kvc_hasher *kvc_get_hasher(const struct kvc *c);

/* Hash the full pages of tokens[0..n_tokens): out[i] = BLAKE2b-128 keyed by h->key over
 * (out[i-1] || page_tokens tokens of block i as little-endian int32), with out[-1] = *parent, or
 * 16 zero bytes when parent is NULL (pass the last hash of a chain to extend it). A trailing
 * partial page is not hashed. Writes at most out_cap hashes. Returns the number written, or
 * -EINVAL. Thread-safe. */
KVC_API int kvc_hash_chain(const struct kvc_hasher *h, const int32_t *tokens, size_t n_tokens,
                           const struct kvc_hash *parent, struct kvc_hash *out, size_t out_cap);

/* ---- synchronous requests (one round trip each; every call is a batch) ---------------------- */

/* Find the longest resident prefix of chain[0..n) (n <= KVC_MAX_CHAIN). pages must hold n
 * entries; pages[0..*n_hit) are filled. *next tells why the walk stopped (KVC_NEXT_*); with
 * KVC_LOOKUP_WAIT kvd holds the reply while block *n_hit is being written by another client, up to
 * wait_ms (<= KVC_MAX_WAIT_MS), then reports KVC_NEXT_PENDING. With KVC_LOOKUP_PIN every returned
 * page is under a read lease until released. Errors: the common ones, -E2BIG. */
KVC_API int kvc_lookup(struct kvc *c, const struct kvc_hash *chain, uint32_t n, unsigned flags,
                       uint32_t wait_ms, struct kvc_page *pages, uint32_t *n_hit, uint32_t *next);

/* Allocate n fresh pages under write leases, all or nothing. hashes (NULL or n entries) are the
 * hashes the pages will hold: other clients' waiting lookups then see them as pending. pages gets n
 * entries; a page flagged KVC_PAGE_BUSY means another client already writes (or wrote) that hash:
 * release it and wait for theirs with kvc_lookup(KVC_LOOKUP_WAIT) rather than computing it twice.
 * Errors: -ENOSPC (pool full, every page pinned), -E2BIG, the common ones. */
KVC_API int kvc_alloc(struct kvc *c, uint32_t n, const struct kvc_hash *hashes,
                      struct kvc_page *pages);

/* Commit n written pages (ents[i].page_id from kvc_alloc) under their hashes. pages gets n
 * entries: the same page under a read lease, or (KVC_PAGE_DEDUP) the page another client committed
 * first, under a read lease, while yours is freed. On a client error nothing is committed.
 * A GPU writer must synchronize its stream before committing. Errors: -EBADF (page not held),
 * -EINVAL (page not in the writing state), the common ones. */
KVC_API int kvc_commit(struct kvc *c, const struct kvc_commit *ents, uint32_t n,
                       struct kvc_page *pages);

/* Release n read or write leases by page id (all validated first). Errors: -EBADF (a page not
 * held: nothing released), the common ones. */
KVC_API int kvc_release(struct kvc *c, const uint32_t *page_ids, uint32_t n);
/* Same, from an array of pages as lookup/alloc/commit return them. */
KVC_API int kvc_release_pages(struct kvc *c, const struct kvc_page *pages, uint32_t n);

/* Report attention mass for n pages the handle holds a lease on (one batch, <= 4 MiB encoded).
 * Errors: -EBADF, -E2BIG, the common ones. */
KVC_API int kvc_scores(struct kvc *c, const struct kvc_score *ents, uint32_t n);

/* kvd's counters. */
KVC_API int kvc_stats(struct kvc *c, struct kvc_stats *out);

/* One empty round trip (heartbeat). */
KVC_API int kvc_ping(struct kvc *c);

/* Run kvd admin sub-command `sub` (kvd's ipc/proto.h, enum kvp_admin; kvctl's protocol) with an
 * argument of arg_len <= 256 bytes. The reply body is copied into out (cap bytes); *out_len gets
 * its full length and *count the reply's entry count (either may be NULL). Read-only sub-commands
 * work for every attached client, changing ones need kvd's admin group.
 * Errors: -EMSGSIZE (body longer than cap: out holds the first cap bytes, *out_len the length),
 * -EPERM (not an admin), -EOPNOTSUPP (unknown sub-command), -ENOENT, -E2BIG, the common ones. */
KVC_API int kvc_admin(struct kvc *c, uint32_t sub, const void *arg, size_t arg_len, void *out,
                      size_t cap, size_t *out_len, uint32_t *count);

/* ---- asynchronous requests ------------------------------------------------------------------ */
/* Keep many requests in flight: kvc_submit() sends and returns at once; kvc_complete() hands back
 * finished requests in the order their replies arrive. Synchronous calls may be mixed in: replies
 * to submitted requests that arrive meanwhile are queued for kvc_complete(). */

enum kvc_op {
    KVC_OP_PING = 3,
    KVC_OP_LOOKUP = 4,
    KVC_OP_ALLOC = 5,
    KVC_OP_COMMIT = 6,
    KVC_OP_RELEASE = 7,
    KVC_OP_SCORES = 8,
    KVC_OP_STATS = 9
};

/* A request. Caller-owned; it and its arrays must stay valid and unchanged from kvc_submit() until
 * kvc_complete() returns it. Set the "in" fields, zero the rest (e.g. start from {0}). */
struct kvc_req {
    /* in */
    int op;                           /* enum kvc_op */
    unsigned flags;                   /* LOOKUP: KVC_LOOKUP_*; others 0 */
    uint32_t wait_ms;                 /* LOOKUP with KVC_LOOKUP_WAIT */
    uint32_t count;                   /* entries of the op's input array */
    const struct kvc_hash *hashes;    /* LOOKUP: the chain; ALLOC: NULL or count hashes */
    const struct kvc_commit *commits; /* COMMIT */
    const uint32_t *page_ids;         /* RELEASE (NULL: ids taken from pages[0..count)) */
    const struct kvc_score *scores;   /* SCORES */
    struct kvc_page *pages;           /* out, count entries: LOOKUP, ALLOC, COMMIT; RELEASE: in */
    struct kvc_stats *stats;          /* out: STATS */
    void *user_data;                  /* yours */
    /* out, valid when kvc_complete returns the request */
    int result;     /* 0 or a negative errno (as the synchronous call would return) */
    uint32_t n_out; /* LOOKUP: pages hit; ALLOC/COMMIT: pages; RELEASE/SCORES: entries applied */
    uint32_t next;  /* LOOKUP: KVC_NEXT_* */
    uint32_t seq;   /* set by kvc_submit */
    /* private */
    struct kvc_req *priv_next;
};

/* Encode and send r. On success r is in flight until kvc_complete() returns it, also when kvd
 * dies (then with result -ESHUTDOWN). On error the request was not sent and the library keeps no
 * reference to it. Errors: -EINVAL, -E2BIG, -EAGAIN (KVC_MAX_INFLIGHT in flight: complete some),
 * -ESHUTDOWN, -ENOTCONN, -ECHILD, -ENOMEM. */
KVC_API int kvc_submit(struct kvc *c, struct kvc_req *r);

/* Submit reqs[0..n) (n <= KVC_MAX_SUBMITV) as the parts of one ZeroMQ message: one wake-up of
 * ZeroMQ's I/O thread, and of kvd, for all of them instead of one per request. Each is a request of
 * its own (own reply, own result; kvd does not make them atomic). Returns how many were submitted:
 * a prefix, ending before the first request that kvc_submit would refuse (that one's error is
 * returned when it is the first: nothing was submitted). A failure of the send itself submits
 * none. A kvd that does not announce KVP_FEAT_MULTIPART (older) gets one message per request,
 * with the same prefix rule. Errors: as kvc_submit, and -EINVAL for n > KVC_MAX_SUBMITV. */
#define KVC_MAX_SUBMITV 64
KVC_API int kvc_submitv(struct kvc *c, struct kvc_req *const *reqs, unsigned n);

/* Wait up to timeout_ms (0: poll, < 0: forever) for one finished request and return it in *done.
 * Errors: -ETIMEDOUT (none finished in time), -ENOENT (nothing in flight or queued), -ESHUTDOWN
 * (kvd gone and nothing left to hand back), -ENOTCONN, -ECHILD. */
KVC_API int kvc_complete(struct kvc *c, int timeout_ms, struct kvc_req **done);

/* Requests submitted and not yet handed back by kvc_complete(). */
KVC_API uint32_t kvc_inflight(const struct kvc *c);

/* ---- errors --------------------------------------------------------------------------------- */

/* Text for a return value of this library (0 or a negative errno; a positive errno is accepted
 * too). Static storage, thread-safe, never NULL. */
KVC_API const char *kvc_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
