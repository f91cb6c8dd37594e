/*
 * spill_io.c - the spill store's I/O: staging buffers, the io_uring backend (registered file and
 * registered staging buffers when RLIMIT_MEMLOCK allows), the pread/pwrite fallback, page
 * conversion on the way in and out, and completion delivery.
 *
 * Invariants:
 *  1. Staging buffer i belongs to data op i; the zero block to every erase op (read-only).
 *  2. Every issued op completes exactly once through kv_spill_reap/drain: io_uring CQEs, or the
 *     `ready` ring for the sync path (whose results are computed in spill_io_issue). The eventfd is
 *     signalled for both, so kvd's loop wakes the same way.
 *  3. Submissions are batched: SQEs accumulate until qd/2 are pending or kv_spill_submit/reap.
 *  4. A direct read (op->direct, chosen by kv_spill_read) is still one request: a two-vector read,
 *     the header block into the op's staging buffer and the payload straight into the destination
 *     page, so the fault shim, completion counting and the short-read check are unchanged. It
 *     cannot use the registered buffers (the page is not one); the kernel pins the page instead.
 */
#include "spill_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef KVSPILL_HAVE_QUANT
#include "kv_quant.h"
#endif

int spill_bufs_alloc(struct kv_spill *s)
{
    size_t n = (size_t)s->qd * s->slot_bytes + 2 * KV_SPILL_ALIGN;
    struct spill_op *op;
    int err;

    s->mem = NULL;
#ifdef KVD_HAVE_CUDA
    /* pinned when CUDA can pin; pages are still moved with cudaMemcpy (device pointers work
     * with pageable staging too, only slower) */
    s->pinned = s->gpu && spill_cuda_host_alloc(&s->mem, n) == 0;
#else
    s->gpu = 0;
#endif
    if (!s->mem) {
        err = posix_memalign(&s->mem, KV_SPILL_ALIGN, n);
        if (err) {
            s->mem = NULL;
            return -err;
        }
    }
    s->mem_bytes = n;
    memset(s->mem, 0, n);
    s->zero = (uint8_t *)s->mem + (size_t)s->qd * s->slot_bytes;
    s->scan = (uint8_t *)s->zero + KV_SPILL_ALIGN;
    s->ops = calloc(2 * (size_t)s->qd, sizeof *s->ops);
    s->ready = calloc(2 * (size_t)s->qd, sizeof *s->ready);
    if (!s->ops || !s->ready) {
        spill_bufs_free(s);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < 2 * s->qd; i++) {
        op = &s->ops[i];
        if (i < s->qd) {
            op->buf = (uint8_t *)s->mem + (size_t)i * s->slot_bytes;
            op->buf_index = (int)i;
            op->next = s->free_data;
            s->free_data = op;
        } else {
            op->kind = SPILL_OP_ERASE;
            op->buf = s->zero;
            op->buf_index = (int)s->qd;
            op->next = s->free_erase;
            s->free_erase = op;
        }
    }
    return 0;
}

void spill_bufs_free(struct kv_spill *s)
{
#ifdef KVD_HAVE_CUDA
    if (s->pinned)
        spill_cuda_host_free(s->mem);
    else
        free(s->mem);
#else
    free(s->mem);
#endif
    s->mem = NULL;
    free(s->conv);
    s->conv = NULL;
    free(s->ops);
    s->ops = NULL;
    free(s->ready);
    s->ready = NULL;
}

int spill_io_init(struct kv_spill *s, int force_sync, char *why, size_t whylen)
{
    struct iovec iov[KV_SPILL_MAX_QD + 1];
    int err;

    s->backend = KV_SPILL_SYNC;
    s->file_ref = s->fd;
    if (force_sync) {
        snprintf(why, whylen, "spill: pread/pwrite path (force_sync)");
        return 0;
    }
    err = io_uring_queue_init(2 * s->qd, &s->ring, 0);
    if (err) {
        snprintf(why, whylen, "spill: io_uring refused (%s): using pread/pwrite", strerror(-err));
        return 0;
    }
    err = io_uring_register_eventfd(&s->ring, s->efd);
    if (err) {
        io_uring_queue_exit(&s->ring);
        snprintf(why, whylen, "spill: io_uring eventfd refused (%s): using pread/pwrite",
                 strerror(-err));
        return 0;
    }
    s->ring_ok = 1;
    s->backend = KV_SPILL_URING;
    if (io_uring_register_files(&s->ring, &s->fd, 1) == 0) {
        s->file_ref = 0;
        s->file_flags = IOSQE_FIXED_FILE;
    }
    for (unsigned i = 0; i <= s->qd; i++) {
        iov[i].iov_base = i < s->qd ? (uint8_t *)s->mem + (size_t)i * s->slot_bytes : s->zero;
        iov[i].iov_len = i < s->qd ? s->slot_bytes : KV_SPILL_ALIGN;
    }
    err = io_uring_register_buffers(&s->ring, iov, s->qd + 1);
    if (err) {
        snprintf(why, whylen,
                 "spill: cannot register %zu bytes of staging buffers (%s; raise LimitMEMLOCK): "
                 "io_uring without fixed buffers",
                 (size_t)s->qd * s->slot_bytes + KV_SPILL_ALIGN, strerror(-err));
        return 0;
    }
    s->fixed_bufs = 1;
    s->backend = KV_SPILL_URING_FIXED;
    return 0;
}

void spill_io_exit(struct kv_spill *s)
{
    if (s->ring_ok)
        io_uring_queue_exit(&s->ring); /* unregisters files and buffers */
    s->ring_ok = 0;
}

struct spill_op *spill_op_get(struct kv_spill *s, int kind)
{
    struct spill_op **head = kind == SPILL_OP_ERASE ? &s->free_erase : &s->free_data;
    struct spill_op *op = *head;

    if (!op)
        return NULL;
    *head = op->next;
    op->next = NULL;
    op->kind = kind;
    op->fault = 0;
    op->has_expect = 0;
    op->dst = NULL;
    op->direct = 0;
    return op;
}

void spill_op_put(struct kv_spill *s, struct spill_op *op)
{
    struct spill_op **head = op->kind == SPILL_OP_ERASE ? &s->free_erase : &s->free_data;

    op->next = *head;
    *head = op;
}

static void spill_ready_push(struct kv_spill *s, struct spill_op *op, int res)
{
    uint64_t one = 1;

    op->res = res;
    s->ready[(s->ready_head + s->ready_len++) % (2 * s->qd)] = op;
    if (write(s->efd, &one, sizeof one) < 0) {
        /* the counter cannot overflow at these rates; a failed signal only delays a reap */
    }
}

static int spill_sync_io(struct kv_spill *s, struct spill_op *op)
{
    off_t off = (off_t)spill_slot_off(s, op->slot);
    ssize_t n;

    do {
        if (op->kind == SPILL_OP_READ && op->direct)
            n = preadv(s->fd, op->iov, 2, off);
        else
            n = op->kind == SPILL_OP_READ ? pread(s->fd, op->buf, op->len, off)
                                          : pwrite(s->fd, op->buf, op->len, off);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (int)n;
}

void spill_io_issue(struct kv_spill *s, struct spill_op *op)
{
    struct io_uring_sqe *sqe;
    uint64_t off = spill_slot_off(s, op->slot);

    s->nreq++;
    if (op->kind == SPILL_OP_READ && op->direct) {
        op->iov[0] = (struct iovec){.iov_base = op->buf, .iov_len = KV_SPILL_ALIGN};
        op->iov[1] = (struct iovec){.iov_base = op->dst, .iov_len = op->len - KV_SPILL_ALIGN};
    }
    if (s->fail_at && s->nreq == s->fail_at) {
        op->fault = 1;
        s->st.faults_injected++;
    }
    s->inflight++;
    if (!s->ring_ok) {
        spill_ready_push(s, op, op->fault ? -EIO : spill_sync_io(s, op));
        return;
    }
    sqe = io_uring_get_sqe(&s->ring);
    if (!sqe) {
        kv_spill_submit(s);
        sqe = io_uring_get_sqe(&s->ring);
    }
    if (!sqe) { /* cannot happen: the ring holds 2*qd >= ops in flight; complete as busy */
        spill_ready_push(s, op, -EBUSY);
        return;
    }
    if (op->fault) {
        io_uring_prep_nop(sqe);
    } else if (op->kind == SPILL_OP_READ && op->direct) {
        io_uring_prep_readv(sqe, s->file_ref, op->iov, 2, off);
        sqe->flags |= s->file_flags;
    } else if (op->kind == SPILL_OP_READ) {
        if (s->fixed_bufs)
            io_uring_prep_read_fixed(sqe, s->file_ref, op->buf, op->len, off, op->buf_index);
        else
            io_uring_prep_read(sqe, s->file_ref, op->buf, op->len, off);
        sqe->flags |= s->file_flags;
    } else {
        if (s->fixed_bufs)
            io_uring_prep_write_fixed(sqe, s->file_ref, op->buf, op->len, off, op->buf_index);
        else
            io_uring_prep_write(sqe, s->file_ref, op->buf, op->len, off);
        sqe->flags |= s->file_flags;
    }
    io_uring_sqe_set_data(sqe, op);
    if (++s->unsubmitted >= (s->qd + 1) / 2)
        kv_spill_submit(s);
}

int kv_spill_submit(struct kv_spill *s)
{
    int r;

    if (!s->ring_ok || !s->unsubmitted)
        return 0;
    r = io_uring_submit(&s->ring);
    if (r < 0)
        return r; /* -EAGAIN/-EBUSY: SQEs stay queued, the next call retries */
    s->unsubmitted = (unsigned)r >= s->unsubmitted ? 0 : s->unsubmitted - (unsigned)r;
    return 0;
}

int kv_spill_reap(struct kv_spill *s, void (*done)(void *arg, const struct kv_spill_done *d),
                  void *arg)
{
    struct io_uring_cqe *cqe;
    struct spill_op *op;
    uint64_t v;
    int n = 0, res;

    if (read(s->efd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing signalled; completions are still checked below */
    }
    kv_spill_submit(s);
    for (;;) {
        if (s->ready_len) {
            op = s->ready[s->ready_head];
            s->ready_head = (s->ready_head + 1) % (2 * s->qd);
            s->ready_len--;
            res = op->res;
        } else if (s->ring_ok && io_uring_peek_cqe(&s->ring, &cqe) == 0) {
            op = io_uring_cqe_get_data(cqe);
            res = op->fault ? -EIO : cqe->res;
            io_uring_cqe_seen(&s->ring, cqe);
        } else {
            break;
        }
        s->inflight--;
        spill_complete(s, op, res, done, arg);
        n++;
    }
    kv_spill_submit(s);
    return n;
}

int kv_spill_drain(struct kv_spill *s, void (*done)(void *arg, const struct kv_spill_done *d),
                   void *arg)
{
    struct io_uring_cqe *cqe;
    int n = 0, r;

    while (s->inflight) {
        if (s->ring_ok && !s->ready_len) {
            r = kv_spill_submit(s);
            if (r == 0)
                r = io_uring_wait_cqe(&s->ring, &cqe);
            if (r < 0 && r != -EINTR && r != -EAGAIN)
                return r;
        }
        r = kv_spill_reap(s, done, arg);
        if (r < 0)
            return r;
        n += r;
    }
    return n;
}

static int spill_copy(struct kv_spill *s, void *dst, const void *src, size_t n)
{
#ifdef KVD_HAVE_CUDA
    if (s->gpu)
        return spill_cuda_copy(dst, src, n);
#else
    (void)s;
#endif
    memcpy(dst, src, n);
    return 0;
}

/* A host copy of a page that may live on a device (gpu staging), for the converters. */
static const void *spill_host_src(struct kv_spill *s, const void *src, size_t n, int *err)
{
    void *p;

    *err = 0;
    if (!s->gpu)
        return src;
    if (s->conv_bytes < n) {
        p = realloc(s->conv, n);
        if (!p) {
            *err = -ENOMEM;
            return NULL;
        }
        s->conv = p;
        s->conv_bytes = n;
    }
    *err = spill_copy(s, s->conv, src, n);
    return *err ? NULL : s->conv;
}

static int spill_convert(const struct kv_layout *dst_l, void *dst, const struct kv_layout *src_l,
                         const void *src)
{
#ifdef KVSPILL_HAVE_QUANT
    return kv_convert_page(src_l, src, dst_l, dst);
#else
    (void)dst_l, (void)dst, (void)src_l, (void)src;
    return -ENOTSUP; /* no converter in this build: wider pages are dropped, not spilled */
#endif
}

int spill_page_in(struct kv_spill *s, void *dst, const struct kv_layout *dst_l, const void *src,
                  const struct kv_layout *src_l, size_t src_bytes)
{
    const void *h;
    int err;

    if (dst_l->k_fmt == src_l->k_fmt && dst_l->v_fmt == src_l->v_fmt)
        return spill_copy(s, dst, src, src_bytes);
    h = spill_host_src(s, src, src_bytes, &err);
    return h ? spill_convert(dst_l, dst, src_l, h) : err;
}

int spill_page_out(struct kv_spill *s, void *dst, const struct kv_layout *dst_l, const void *src,
                   uint32_t src_bytes, int demoted)
{
    struct kv_layout st = *dst_l;
    size_t n = kv_page_bytes(dst_l);
    int err;

    if (!demoted)
        return spill_copy(s, dst, src, src_bytes);
    if (kv_fmt_bits(st.k_fmt) > 8)
        st.k_fmt = KV_FMT_FP8_E4M3;
    if (kv_fmt_bits(st.v_fmt) > 8)
        st.v_fmt = KV_FMT_FP8_E4M3;
    if (!s->gpu)
        return spill_convert(dst_l, dst, &st, src);
    if (s->conv_bytes < n) {
        void *p = realloc(s->conv, n);
        if (!p)
            return -ENOMEM;
        s->conv = p;
        s->conv_bytes = n;
    }
    err = spill_convert(dst_l, s->conv, &st, src);
    return err ? err : spill_copy(s, dst, s->conv, n);
}
