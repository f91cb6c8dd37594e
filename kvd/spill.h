/*
 * spill.h - the spill tier: evicted pages in FP8 on local disk, restored on a hit, re-indexed after
 * a restart.
 *
 * A store is one file (or block device) opened with O_DIRECT and cut into fixed slots aligned to
 * 4 KiB. Each slot is self-describing: a header (magic, version, slot number, namespace, layout,
 * original formats, block hash, parent hash, token count, flags) and the page payload with its
 * scales; a keyed checksum covers both (BLAKE2b over the header, which holds an XXH3-128 of the
 * payload). The key is a random store id kept in the store's
 * superblock, so slots of an older store with another geometry never verify.
 *
 * The API is asynchronous and poll-driven, for kvd's single-threaded event loop:
 *
 *     struct kv_spill *s;
 *     kv_spill_open(&s, &cfg, why, sizeof why);        // may log a fallback in why
 *     kv_spill_scan(s, reindex_cb, daemon);             // once, at start: rebuild the index
 *     epoll_add(kv_spill_event_fd(s));                  // readable when completions are ready
 *     slot = kv_spill_write(s, &meta, page, cookie);    // eviction: >= 0 queued, < 0 drop victim
 *     kv_spill_read(s, slot, hash, &ns_layout, dst, cookie);   // lookup reached a SPILLED page
 *     kv_spill_submit(s);                               // once per loop turn, before epoll_wait
 *     // on the event fd:
 *     kv_spill_reap(s, done_cb, daemon);                // done_cb once per finished write/read
 *
 * Ownership: the caller owns `page` only for the duration of kv_spill_write (it is copied, and
 * converted to FP8 when wider, into a staging buffer before the call returns); `dst_page` of
 * kv_spill_read must stay valid and untouched by others until that read's completion is reaped.
 *
 * Errors: every function returns 0 (or a slot number) or a negative errno, never prints and never
 * touches errno. If a call that queues an operation returns an error, no completion is delivered
 * for it. Not thread-safe: one thread (kvd's loop) calls everything.
 *
 * Slot states (in memory; the disk holds only valid or invalid slots):
 *
 *   FREE --kv_spill_write--> WRITING --reap ok--> VALID --kv_spill_invalidate--> ERASING --reap-->
 * FREE
 *                                   \--reap err--> FREE         (reads keep a slot VALID; a read
 * that fails verification: VALID -> FREE)
 */
#ifndef KV_SPILL_H
#define KV_SPILL_H

#include <stddef.h>
#include <stdint.h>

#include "kv_format.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KV_SPILL_ALIGN     4096u /* slot, header and I/O alignment (O_DIRECT-safe) */
#define KV_SPILL_HASH      16u   /* block hash bytes (KVP_HASH_BYTES) */
#define KV_SPILL_NS        64u   /* namespace name bytes, NUL-padded (KVP_MAX_NS_NAME) */
#define KV_SPILL_MAX_QD    256u  /* largest queue depth */
#define KV_SPILL_MAX_SLOTS (1u << 24)

struct kv_spill; /* opaque; one per store */

/* meta.flags */
#define KV_SPILL_F_DEMOTED                                                                         \
    0x1u /* payload was converted to FP8 E4M3 from a wider format (lossy)                          \
          */

/* Description of a spilled page: travels with it into the slot and back out of a scan. */
struct kv_spill_meta {
    char ns[KV_SPILL_NS];        /* namespace name, NUL-padded */
    struct kv_layout layout;     /* the namespace's layout (formats as committed, not as stored) */
    uint8_t hash[KV_SPILL_HASH]; /* block hash */
    uint8_t parent[KV_SPILL_HASH]; /* parent block hash (zero for a chain root) */
    uint16_t ntok;                 /* tokens in the page (page_tokens, fewer for variants) */
    uint16_t flags;                /* KV_SPILL_F_*; set by the store, ignored by kv_spill_write */
    uint64_t seq;                  /* write sequence number (newer is larger); set by the store */
};

enum kv_spill_backend {
    KV_SPILL_URING_FIXED = 1, /* io_uring, registered file and registered staging buffers */
    KV_SPILL_URING = 2,       /* io_uring, registered file, plain buffers (memlock too small) */
    KV_SPILL_SYNC = 3,        /* pread/pwrite in the caller (io_uring refused, or force_sync) */
};

struct kv_spill_cfg {
    const char *path;        /* store file or block device; created (0600) if missing */
    uint64_t bytes;          /* store size for a new file (a block device uses its whole size) */
    uint32_t max_page_bytes; /* largest page payload after FP8 conversion; fixes the slot size */
    unsigned queue_depth;    /* reads+writes in flight (staging buffers); 0 = 8, or fewer (>= 2)
                                so qd x slot bytes fit RLIMIT_MEMLOCK */
    int force_sync;          /* 1: pread/pwrite path even when io_uring works */
    int no_prealloc;         /* 1: leave a new file sparse (disk full then shows up on writes) */
    int gpu_staging;         /* 1: page pointers may be device pointers; pinned staging (CUDA) */
    uint64_t fail_nth;       /* fault shim: the Nth I/O request (1-based) fails with -EIO; 0 off */
    void (*log)(void *arg, const char *line); /* optional: progress of a long scan */
    void *log_arg;
};

struct kv_spill_stats {
    int backend;          /* enum kv_spill_backend */
    uint32_t slot_bytes;  /* bytes per slot on disk (header block + payload) */
    uint32_t queue_depth; /* requests in flight at most (staging buffers) */
    uint32_t slots_total;
    uint32_t slots_used; /* WRITING + VALID + ERASING */
    uint32_t inflight;   /* I/O requests submitted or queued, not yet reaped */
    uint64_t writes;     /* pages written and verified by their completion */
    uint64_t write_bytes;
    uint64_t reads; /* pages restored (verified) */
    uint64_t read_bytes;
    uint64_t demotions;        /* pages converted to FP8 on the way out (lossy) */
    uint64_t restored_demoted; /* restores of a demoted page (converted back to the ns format) */
    uint64_t dropped_full;     /* writes refused: no free slot (-ENOSPC from kv_spill_write) */
    uint64_t dropped_nospace;  /* writes failed by the disk: ENOSPC/EFBIG/short write */
    uint64_t dropped_io;       /* writes failed with another I/O error */
    uint64_t read_errors;      /* reads failed with an I/O error (slot dropped) */
    uint64_t corrupt;          /* reads that failed verification (slot dropped, never served) */
    uint64_t invalidations;
    uint64_t scan_valid;   /* slots re-indexed by the last scan */
    uint64_t scan_corrupt; /* slots with a header that did not verify in the last scan */
    uint64_t faults_injected;
    uint64_t reads_direct; /* reads issued straight into the page (no staging copy) */
};

/* Which operation a completion belongs to. */
enum kv_spill_op { KV_SPILL_OP_WRITE = 1, KV_SPILL_OP_READ = 2, KV_SPILL_OP_INVALIDATE = 3 };

struct kv_spill_done {
    void *cookie; /* as passed to write/read; NULL for INVALIDATE */
    int op;       /* enum kv_spill_op */
    int res;      /* 0, or a negative errno: -EIO, -ENOSPC (disk full), -EBADMSG (verification) */
    uint32_t slot;
    uint16_t flags; /* READ: KV_SPILL_F_DEMOTED when the page came back from a lossy FP8 copy */
};

/* Open (or create) the store. The file is created and sized when missing or when its superblock
 * does not match (other slot size, damaged, truncated to nothing); a truncated store keeps the
 * slots that are still there. io_uring is tried first; when it is refused (EPERM/ENOSYS/ENOMEM at
 * setup) or force_sync is set, the pread/pwrite path is chosen and `why` says so in one line (also
 * when staging buffers could not be registered). Returns 0, -EINVAL (bad cfg), -ENOTSUP (the file
 * system refuses O_DIRECT, e.g. tmpfs), -ENOSPC (store too small for one slot), -ENOMEM, or the
 * errno of open/fallocate. On error *s is NULL and nothing is left open. */
int kv_spill_open(struct kv_spill **s, const struct kv_spill_cfg *cfg, char *why, size_t whylen);

/* Close the store: waits for I/O in flight (completions are discarded), frees everything.
 * Safe with NULL. */
void kv_spill_close(struct kv_spill *s);

/* An eventfd that becomes readable when completions are waiting (kvd adds it to its epoll set,
 * level-triggered). kv_spill_reap drains it. Owned by the store. */
int kv_spill_event_fd(struct kv_spill *s);

/* Rebuild the index: read every slot header, call cb for each slot whose header verifies (meta
 * as stored, flags include KV_SPILL_F_DEMOTED when demoted). cb returns 0 to keep the slot, 1 to
 * drop it (e.g. an older duplicate of a hash: the slot is invalidated on disk), or a negative errno
 * to stop the scan, which then returns that value. Slots that do not verify are freed and counted
 * (scan_corrupt); payloads are verified on restore. Call once, after open, before any write
 * (kv_spill_write fails with -EINVAL until then, so a slot from an earlier run is never overwritten
 * unseen); a second call returns -EALREADY.
 * Synchronous: it blocks for the time it takes to read one 4 KiB block per slot (progress goes to
 * cfg.log for stores over 64k slots). Returns the number of valid slots or a negative errno. */
int kv_spill_scan(struct kv_spill *s,
                  int (*cb)(void *arg, uint32_t slot, const struct kv_spill_meta *m), void *arg);

/* Queue a spill of one page (layout m->layout, kv_page_bytes bytes at `page`). Pages wider than
 * 8 bits are converted to FP8 E4M3 into the staging buffer (a lossy demotion, counted). Returns the
 * slot (>= 0) the page will occupy; its completion (op WRITE) says whether it landed. Errors (no
 * completion then): -ENOSPC no free slot (store full: drop the victim), -EBUSY queue depth
 * reached (try later or drop), -EINVAL bad layout or meta, -E2BIG page larger than max_page_bytes,
 * -ENOTSUP a format that cannot be converted in this build; -EINVAL also before kv_spill_scan. */
int kv_spill_write(struct kv_spill *s, const struct kv_spill_meta *m, const void *page,
                   void *cookie);

/* Queue a restore of `slot` into dst_page, a page of layout dst_layout (the namespace's). When
 * expect_hash is not NULL, the slot must hold that hash. On completion (op READ) res is 0 and
 * dst_page holds the page (converted back from FP8 if it was demoted; flags say so), or res < 0 and
 * dst_page holds garbage: -EBADMSG (checksum, header, slot number, hash or layout mismatch; the
 * slot is dropped and counted, never served) or -EIO. Errors (no completion): -EINVAL slot not
 * VALID or bad layout, -EBUSY queue depth reached. When no conversion can be needed (formats of 8
 * bits or fewer), dst_page is a host pointer aligned to KV_SPILL_ALIGN and its length a multiple
 * of it, the payload is read straight into dst_page and verified there (no staging copy). */
int kv_spill_read(struct kv_spill *s, uint32_t slot, const uint8_t *expect_hash,
                  const struct kv_layout *dst_layout, void *dst_page, void *cookie);

/* Erase a VALID slot on disk (its header block is overwritten with zeroes) so a restart never
 * brings its page back; the slot is reused after the erase completes (op INVALIDATE, cookie NULL;
 * callers may ignore it). A slot being read is erased after the read completes. Durable against a
 * kvd crash once its completion has been reaped. Returns 0 or -EINVAL (slot not VALID). */
int kv_spill_invalidate(struct kv_spill *s, uint32_t slot);

/* Submit queued requests to the kernel (one system call for a batch). Call once per loop turn,
 * before blocking. write/read also submit when a batch of queue_depth/2 has piled up. */
int kv_spill_submit(struct kv_spill *s);

/* Handle every completion that is ready, calling done once per WRITE, READ and INVALIDATE request;
 * never blocks. Returns the number of completions handled or a negative errno. done may call
 * kv_spill_write/read/invalidate. */
int kv_spill_reap(struct kv_spill *s, void (*done)(void *arg, const struct kv_spill_done *d),
                  void *arg);

/* Block until every request in flight has completed, handling them like kv_spill_reap (shutdown,
 * tests). Returns completions handled or a negative errno. */
int kv_spill_drain(struct kv_spill *s, void (*done)(void *arg, const struct kv_spill_done *d),
                   void *arg);

void kv_spill_stats(const struct kv_spill *s, struct kv_spill_stats *st);

/* Fault shim (tests): make the nth I/O request from now on fail with -EIO (0 turns it off). Every
 * write, read and erase submitted counts as one request; a failed request still completes through
 * kv_spill_reap. */
void kv_spill_fail_nth(struct kv_spill *s, uint64_t nth);

/* ---- slot format (exposed for tests and the fuzz target) --------------------------------------
 */

#define KV_SPILL_MAGIC   0x5053564bu /* "KVSP" */
#define KV_SPILL_VERSION 1u
#define KV_SPILL_KEY     32u

/* Fixed on-disk header at the start of each slot (rest of its 4 KiB block is zero). Little-endian
 * host order (the store is local). hdr_sum is BLAKE2b-128 keyed with the store key over the header
 * with hdr_sum zeroed; it covers pay_sum, the XXH3-128 of the payload seeded with the key's first
 * 8 bytes (little-endian u64), in XXH128 canonical (big-endian) byte order. */
struct kv_spill_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t hdr_bytes; /* sizeof(struct kv_spill_hdr) */
    uint32_t slot;      /* slot number this header was written for */
    uint32_t pay_bytes; /* payload bytes: kv_page_bytes(stored layout) */
    uint64_t seq;       /* store-wide write sequence number */
    char ns[KV_SPILL_NS];
    struct kv_layout layout;        /* stored layout (formats as on disk) */
    uint8_t orig_k_fmt, orig_v_fmt; /* namespace formats before demotion */
    uint16_t ntok;
    uint16_t flags; /* KV_SPILL_F_* */
    uint16_t pad;
    uint8_t hash[KV_SPILL_HASH];
    uint8_t parent[KV_SPILL_HASH];
    uint8_t pay_sum[16];
    uint8_t hdr_sum[16];
    uint32_t pad2;
};
_Static_assert(sizeof(struct kv_spill_hdr) == 176, "kv_spill_hdr is a disk struct");

/* Decode and verify one slot image (`len` bytes: the header block, then the payload if
 * with_payload). Checks magic, version, sizes, the header checksum, the slot number, the stored
 * layout and, when with_payload, the payload checksum. Fills m (meta as the namespace sees it) and
 * *pay_bytes. Returns 0, -ENOENT for an erased or never-written slot (all-zero magic), or -EBADMSG
 * for anything that does not verify. Reads at most len bytes of buf. */
int kv_spill_slot_decode(const void *buf, size_t len, uint32_t slot,
                         const uint8_t key[KV_SPILL_KEY], int with_payload, struct kv_spill_meta *m,
                         uint32_t *pay_bytes);

/* The payload checksum a slot header carries (pay_sum): XXH3-128 of the payload seeded with the
 * key's first 8 bytes, in canonical (big-endian) order. */
void kv_spill_pay_sum(uint8_t out[16], const uint8_t key[KV_SPILL_KEY], const void *p, size_t n);

/* Encode the header block for a payload already placed at buf + KV_SPILL_ALIGN; buf must hold
 * KV_SPILL_ALIGN + pay_bytes. stored is the on-disk layout, m the namespace's meta. */
void kv_spill_slot_encode(void *buf, uint32_t slot, const uint8_t key[KV_SPILL_KEY],
                          const struct kv_spill_meta *m, const struct kv_layout *stored,
                          uint32_t pay_bytes, uint16_t flags, uint64_t seq);

#ifdef __cplusplus
}
#endif
#endif
