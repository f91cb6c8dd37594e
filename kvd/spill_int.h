/*
 * spill_int.h - private state of the spill store, shared by spill.c (slots, API) and spill_io.c
 * (buffers, io_uring / pread-pwrite backends, completions). Not for use outside kvd/spill*.c.
 */
#ifndef KV_SPILL_INT_H
#define KV_SPILL_INT_H

#include <liburing.h>

#include "spill.h"

enum spill_state { SPILL_FREE = 0, SPILL_WRITING, SPILL_VALID, SPILL_ERASING, SPILL_BAD };
enum spill_kind { SPILL_OP_WRITE = 1, SPILL_OP_READ, SPILL_OP_ERASE };

struct spill_slot {
    uint32_t pay;          /* payload bytes on disk (WRITING, VALID) */
    uint8_t state;         /* enum spill_state */
    uint8_t readers;       /* reads in flight */
    uint8_t erase_pending; /* erase once the last reader is done */
    uint8_t erase_tries;
    uint8_t notify; /* deliver an INVALIDATE completion when the erase finishes */
};

struct spill_op {
    int kind;      /* enum spill_kind */
    int fault;     /* fault shim: complete with -EIO */
    int res;       /* sync path: result waiting in `ready` */
    int buf_index; /* registered buffer index */
    void *buf;     /* staging buffer (data ops) or the zero block (erases) */
    uint32_t slot;
    uint32_t len; /* bytes to transfer, multiple of KV_SPILL_ALIGN */
    void *cookie;
    void *dst;                   /* read: destination page */
    int direct;                  /* read: payload goes straight into dst (header into buf) */
    struct iovec iov[2];         /* direct read: header block, payload (kept until completion) */
    struct kv_layout dst_layout; /* read: the namespace's layout */
    uint8_t expect[KV_SPILL_HASH];
    int has_expect;
    struct spill_op *next; /* free list */
};

struct kv_spill {
    int fd, efd;
    unsigned qd;
    uint32_t slot_bytes, nslots;
    uint8_t key[KV_SPILL_KEY]; /* store id: keys every slot checksum */
    int backend;               /* enum kv_spill_backend */
    int gpu;                   /* pages may be device pointers: copies go through cudaMemcpy */
    int pinned;                /* staging is pinned CUDA host memory (cudaHostAlloc) */
    int closing;
    int scanned; /* kv_spill_scan ran: the free list reflects the disk */
    void (*log)(void *arg, const char *line);
    void *log_arg;
    uint64_t seq;     /* last write sequence number */
    uint64_t nreq;    /* I/O requests issued so far (fault shim counter) */
    uint64_t fail_at; /* nreq value that fails, 0 = none */

    struct spill_slot *slots;
    uint32_t *free; /* stack of FREE slots */
    uint32_t nfree;
    uint32_t *erase_q; /* ring of ERASING slots waiting for an erase op */
    uint32_t erase_head, erase_len;

    void *mem; /* qd staging buffers, then the zero block, then the scan block */
    size_t mem_bytes;
    void *zero; /* KV_SPILL_ALIGN zero bytes, source of erases */
    void *scan; /* KV_SPILL_ALIGN bytes for synchronous header reads */
    void *conv; /* host scratch page for conversions of device pages (gpu only) */
    size_t conv_bytes;
    struct spill_op *ops; /* qd data ops, then qd erase ops */
    struct spill_op *free_data, *free_erase;
    uint32_t inflight;

    struct io_uring ring;
    int ring_ok;
    int fixed_bufs;
    int file_ref;   /* fd or registered file index */
    int file_flags; /* IOSQE_FIXED_FILE when registered */
    unsigned unsubmitted;
    struct spill_op **ready; /* completed, not yet reaped (sync path) */
    unsigned ready_head, ready_len;

    struct kv_spill_stats st;
};

uint64_t spill_slot_off(const struct kv_spill *s, uint32_t slot);
void spill_erase(struct kv_spill *s, uint32_t slot);
void spill_complete(struct kv_spill *s, struct spill_op *op, int res,
                    void (*done)(void *arg, const struct kv_spill_done *d), void *arg);

int spill_bufs_alloc(struct kv_spill *s);
void spill_bufs_free(struct kv_spill *s);
int spill_io_init(struct kv_spill *s, int force_sync, char *why, size_t whylen);
void spill_io_exit(struct kv_spill *s);
struct spill_op *spill_op_get(struct kv_spill *s, int kind);
void spill_op_put(struct kv_spill *s, struct spill_op *op);
void spill_io_issue(struct kv_spill *s, struct spill_op *op);
int spill_page_in(struct kv_spill *s, void *dst, const struct kv_layout *dst_l, const void *src,
                  const struct kv_layout *src_l, size_t src_bytes);
int spill_page_out(struct kv_spill *s, void *dst, const struct kv_layout *dst_l, const void *src,
                   uint32_t src_bytes, int demoted);

#ifdef KVD_HAVE_CUDA
int spill_cuda_host_alloc(void **p, size_t n);
void spill_cuda_host_free(void *p);
int spill_cuda_copy(void *dst, const void *src, size_t n);
#endif

#endif
