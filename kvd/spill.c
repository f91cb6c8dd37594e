/*
 * spill.c - the spill store: slot allocation, O_DIRECT I/O through io_uring (or pread/pwrite),
 * completions for kvd's event loop, scan at start. Slot bytes: spill_slot.c. API: spill.h.
 *
 * File layout: [ superblock, 4 KiB ][ slot 0 ][ slot 1 ] ... each slot slot_bytes, 4 KiB aligned:
 * a header block then the payload (FP8 or narrower), padded to 4 KiB.
 *
 * Invariants:
 *  1. A slot is written only while FREE -> WRITING, and FREE means the disk copy does not verify
 *     (never written, erased, or garbage): a crash in the middle of a write leaves either the old
 *     non-verifying bytes or a torn image that fails its checksum, never a slot that verifies with
 *     other contents. A write that fails (or is short) is erased before its slot is reused.
 *  2. A slot leaves VALID only through an erase of its header block (ERASING), and is reused only
 *     after that erase completed; an erase that fails is retried, and after SPILL_ERASE_TRIES the
 *     slot is quarantined (BAD) for the life of the store object instead of being reused.
 *  3. Every staging buffer belongs to at most one data op; every request submitted has exactly one
 *     completion, delivered by reap (sync path: queued in `ready` and signalled on the eventfd).
 *  4. inflight == data ops busy + erase ops busy; the ring holds 2*qd entries >= inflight.
 *
 * Slot states and the function that takes each edge:
 *
 *   FREE --spill_write--> WRITING --spill_complete(ok)--> VALID
 *   WRITING --spill_complete(err)--> ERASING (internal)
 *   VALID --kv_spill_invalidate / read fails verification / scan cb drops--> ERASING
 *   ERASING --spill_complete(erase ok)--> FREE;  (erase failed SPILL_ERASE_TRIES times) --> BAD
 */
#include "spill.h"
#include "spill_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#define SPILL_SB_MAGIC    0x5353564bu /* "KVSS" */
#define SPILL_SB_VERSION  1u
#define SPILL_ERASE_TRIES 3
#define SPILL_SCAN_LOG    (1u << 16) /* log scan progress for stores with more slots */

/* Superblock: block 0 of the store. sum = BLAKE2b-128 (unkeyed) of the struct with sum zeroed. */
struct spill_sb {
    uint32_t magic;
    uint32_t version;
    uint32_t slot_bytes;
    uint32_t nslots;
    uint8_t key[KV_SPILL_KEY];
    uint8_t sum[16];
};

static void spill_why(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (!why || !len)
        return;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
}

static uint64_t spill_align(uint64_t n)
{
    return (n + KV_SPILL_ALIGN - 1) / KV_SPILL_ALIGN * KV_SPILL_ALIGN;
}

uint64_t spill_slot_off(const struct kv_spill *s, uint32_t slot)
{
    return KV_SPILL_ALIGN + (uint64_t)slot * s->slot_bytes;
}

static void spill_sb_sum(uint8_t out[16], const struct spill_sb *sb)
{
    struct spill_sb t = *sb;

    memset(t.sum, 0, sizeof t.sum);
    crypto_generichash(out, 16, (const unsigned char *)&t, sizeof t, NULL, 0);
}

/* 0 and the geometry when block 0 holds a valid superblock for this slot size, else -ENOENT. */
static int spill_sb_read(struct kv_spill *s, void *blk)
{
    struct spill_sb sb;
    uint8_t sum[16];
    ssize_t n = pread(s->fd, blk, KV_SPILL_ALIGN, 0);

    if (n < 0)
        return -errno;
    if (n < (ssize_t)KV_SPILL_ALIGN)
        return -ENOENT;
    memcpy(&sb, blk, sizeof sb);
    spill_sb_sum(sum, &sb);
    if (sb.magic != SPILL_SB_MAGIC || sb.version != SPILL_SB_VERSION ||
        memcmp(sum, sb.sum, sizeof sum) != 0 || sb.slot_bytes != s->slot_bytes || sb.nslots == 0 ||
        sb.nslots > KV_SPILL_MAX_SLOTS)
        return -ENOENT;
    s->nslots = sb.nslots;
    memcpy(s->key, sb.key, KV_SPILL_KEY);
    return 0;
}

static int spill_sb_write(struct kv_spill *s, void *blk)
{
    struct spill_sb sb;

    memset(&sb, 0, sizeof sb);
    sb.magic = SPILL_SB_MAGIC;
    sb.version = SPILL_SB_VERSION;
    sb.slot_bytes = s->slot_bytes;
    sb.nslots = s->nslots;
    memcpy(sb.key, s->key, KV_SPILL_KEY);
    spill_sb_sum(sb.sum, &sb);
    memset(blk, 0, KV_SPILL_ALIGN);
    memcpy(blk, &sb, sizeof sb);
    if (pwrite(s->fd, blk, KV_SPILL_ALIGN, 0) != (ssize_t)KV_SPILL_ALIGN)
        return errno ? -errno : -EIO;
    return fdatasync(s->fd) ? -errno : 0;
}

/* Size the file (or use the device), find or write the superblock. */
static int spill_geometry(struct kv_spill *s, const struct kv_spill_cfg *cfg, void *blk, char *why,
                          size_t whylen)
{
    struct stat st;
    uint64_t dev_bytes = 0, want;
    int blkdev, err;

    if (fstat(s->fd, &st))
        return -errno;
    blkdev = S_ISBLK(st.st_mode);
    if (blkdev && ioctl(s->fd, BLKGETSIZE64, &dev_bytes))
        return -errno;
    if (spill_sb_read(s, blk) == 0) {
        want = spill_slot_off(s, s->nslots);
        /* a truncated store: give it back its size; the lost slots read as zeroes (empty) */
        if (!blkdev && (uint64_t)st.st_size < want && ftruncate(s->fd, (off_t)want))
            return -errno;
        return 0;
    }
    want = blkdev ? dev_bytes : cfg->bytes;
    if (want < KV_SPILL_ALIGN + (uint64_t)s->slot_bytes) {
        spill_why(why, whylen, "spill: store of %" PRIu64 " bytes holds no %u-byte slot", want,
                  s->slot_bytes);
        return -ENOSPC;
    }
    s->nslots = (uint32_t)((want - KV_SPILL_ALIGN) / s->slot_bytes > KV_SPILL_MAX_SLOTS
                               ? KV_SPILL_MAX_SLOTS
                               : (want - KV_SPILL_ALIGN) / s->slot_bytes);
    randombytes_buf(s->key, KV_SPILL_KEY); /* new store id: old slots never verify */
    if (!blkdev) {
        want = spill_slot_off(s, s->nslots);
        if (ftruncate(s->fd, 0) || ftruncate(s->fd, (off_t)want))
            return -errno;
        if (!cfg->no_prealloc && fallocate(s->fd, 0, 0, (off_t)want)) {
            err = errno;
            if (err != EOPNOTSUPP)
                spill_why(why, whylen, "spill: store not preallocated (%s); spills may fail",
                          strerror(err));
        }
    }
    return spill_sb_write(s, blk);
}

/* Queue depth 8, or less so the registered staging buffers fit RLIMIT_MEMLOCK (at least 2). */
static unsigned spill_default_qd(uint32_t slot_bytes)
{
    struct rlimit rl;
    uint64_t fit;

    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 8;
    fit = rl.rlim_cur > KV_SPILL_ALIGN ? (rl.rlim_cur - KV_SPILL_ALIGN) / slot_bytes : 0;
    return fit < 2 ? 2 : fit > 8 ? 8 : (unsigned)fit;
}

static int spill_check_cfg(const struct kv_spill_cfg *cfg)
{
    if (!cfg || !cfg->path || !cfg->path[0] || cfg->max_page_bytes == 0 ||
        cfg->max_page_bytes > (1u << 30) || cfg->queue_depth > KV_SPILL_MAX_QD)
        return -EINVAL;
    return 0;
}

int kv_spill_open(struct kv_spill **sp, const struct kv_spill_cfg *cfg, char *why, size_t whylen)
{
    struct kv_spill *s;
    int err;

    if (!sp)
        return -EINVAL;
    *sp = NULL;
    if (why && whylen)
        why[0] = 0;
    err = spill_check_cfg(cfg);
    if (err)
        return err;
    if (sodium_init() < 0)
        return -ENOMEM;
    s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->fd = s->efd = -1;
    s->slot_bytes = (uint32_t)(KV_SPILL_ALIGN + spill_align(cfg->max_page_bytes));
    s->qd = cfg->queue_depth ? cfg->queue_depth : spill_default_qd(s->slot_bytes);
    s->gpu = cfg->gpu_staging;
    s->log = cfg->log;
    s->log_arg = cfg->log_arg;
    s->fail_at = cfg->fail_nth;

    s->fd = open(cfg->path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
    if (s->fd < 0) {
        err = -errno;
        if (err == -EINVAL) {
            spill_why(why, whylen, "spill: %s: the file system refuses O_DIRECT", cfg->path);
            err = -ENOTSUP;
        } else {
            spill_why(why, whylen, "spill: open %s: %s", cfg->path, strerror(errno));
        }
        goto err_free;
    }
    err = spill_bufs_alloc(s);
    if (err)
        goto err_close_fd;
    err = spill_geometry(s, cfg, s->scan, why, whylen);
    if (err) {
        if (why && !why[0])
            spill_why(why, whylen, "spill: %s: cannot set up the store: %s", cfg->path,
                      strerror(-err));
        goto err_bufs;
    }
    s->slots = calloc(s->nslots, sizeof *s->slots);
    s->free = malloc((size_t)s->nslots * sizeof *s->free);
    s->erase_q = malloc((size_t)s->nslots * sizeof *s->erase_q);
    if (!s->slots || !s->free || !s->erase_q) {
        err = -ENOMEM;
        goto err_slots;
    }
    for (uint32_t i = 0; i < s->nslots; i++)
        s->free[i] = s->nslots - 1 - i; /* pop from the end: slot 0 first */
    s->nfree = s->nslots;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        err = -errno;
        goto err_slots;
    }
    err = spill_io_init(s, cfg->force_sync, why, whylen);
    if (err)
        goto err_efd;
    *sp = s;
    return 0;

err_efd:
    close(s->efd);
err_slots:
    free(s->slots);
    free(s->free);
    free(s->erase_q);
err_bufs:
    spill_bufs_free(s);
err_close_fd:
    close(s->fd);
err_free:
    free(s);
    return err;
}

void kv_spill_close(struct kv_spill *s)
{
    if (!s)
        return;
    s->closing = 1;
    kv_spill_drain(s, NULL, NULL);
    spill_io_exit(s);
    close(s->efd);
    close(s->fd);
    spill_bufs_free(s);
    free(s->slots);
    free(s->free);
    free(s->erase_q);
    free(s);
}

int kv_spill_event_fd(struct kv_spill *s)
{
    return s->efd;
}

void kv_spill_fail_nth(struct kv_spill *s, uint64_t nth)
{
    s->fail_at = nth ? s->nreq + nth : 0;
}

void kv_spill_stats(const struct kv_spill *s, struct kv_spill_stats *st)
{
    *st = s->st;
    st->backend = s->backend;
    st->slot_bytes = s->slot_bytes;
    st->queue_depth = s->qd;
    st->slots_total = s->nslots;
    st->slots_used = s->nslots - s->nfree;
    st->inflight = s->inflight;
}

static void spill_slot_free(struct kv_spill *s, uint32_t slot)
{
    s->slots[slot].state = SPILL_FREE;
    s->slots[slot].erase_tries = 0;
    s->free[s->nfree++] = slot;
}

/* Start erasing a slot's header block (state must already be ERASING). Queued when every erase op
 * is busy; spill_erase_kick issues queued erases as ops come back. */
void spill_erase(struct kv_spill *s, uint32_t slot)
{
    struct spill_op *op = spill_op_get(s, SPILL_OP_ERASE);

    if (!op) {
        s->erase_q[(s->erase_head + s->erase_len++) % s->nslots] = slot;
        return;
    }
    op->slot = slot;
    op->cookie = NULL;
    op->len = KV_SPILL_ALIGN;
    spill_io_issue(s, op);
}

static void spill_erase_kick(struct kv_spill *s)
{
    while (s->erase_len) {
        struct spill_op *op = spill_op_get(s, SPILL_OP_ERASE);
        if (!op)
            return;
        op->slot = s->erase_q[s->erase_head];
        s->erase_head = (s->erase_head + 1) % s->nslots;
        s->erase_len--;
        op->cookie = NULL;
        op->len = KV_SPILL_ALIGN;
        spill_io_issue(s, op);
    }
}

static void spill_drop(struct kv_spill *s, uint32_t slot, int notify)
{
    s->slots[slot].state = SPILL_ERASING;
    s->slots[slot].notify = (uint8_t)notify;
    spill_erase(s, slot);
}

int kv_spill_write(struct kv_spill *s, const struct kv_spill_meta *m, const void *page,
                   void *cookie)
{
    struct kv_layout st;
    struct spill_op *op;
    size_t in_bytes, pay;
    uint16_t flags = 0;
    uint32_t slot;
    int err;

    if (!s->scanned || !m || !page || kv_layout_check(&m->layout) != 0 || m->ntok == 0 ||
        m->ntok > m->layout.page_tokens || memchr(m->ns, 0, KV_SPILL_NS) == NULL)
        return -EINVAL;
    in_bytes = kv_page_bytes(&m->layout);
    st = m->layout;
    if (kv_fmt_bits(st.k_fmt) > 8)
        st.k_fmt = KV_FMT_FP8_E4M3;
    if (kv_fmt_bits(st.v_fmt) > 8)
        st.v_fmt = KV_FMT_FP8_E4M3;
    if (st.k_fmt != m->layout.k_fmt || st.v_fmt != m->layout.v_fmt)
        flags |= KV_SPILL_F_DEMOTED;
    pay = kv_page_bytes(&st);
    if (pay == 0)
        return -EINVAL;
    if (pay > s->slot_bytes - KV_SPILL_ALIGN)
        return -E2BIG;
    if (s->nfree == 0) {
        s->st.dropped_full++;
        return -ENOSPC;
    }
    op = spill_op_get(s, SPILL_OP_WRITE);
    if (!op)
        return -EBUSY;
    err = spill_page_in(s, (uint8_t *)op->buf + KV_SPILL_ALIGN, &st, page, &m->layout, in_bytes);
    if (err) {
        spill_op_put(s, op);
        return err;
    }
    memset((uint8_t *)op->buf + KV_SPILL_ALIGN + pay, 0, spill_align(pay) - pay);
    slot = s->free[--s->nfree];
    s->slots[slot].state = SPILL_WRITING;
    s->slots[slot].pay = (uint32_t)pay;
    kv_spill_slot_encode(op->buf, slot, s->key, m, &st, (uint32_t)pay, flags, ++s->seq);
    if (flags)
        s->st.demotions++;
    op->slot = slot;
    op->cookie = cookie;
    op->len = (uint32_t)(KV_SPILL_ALIGN + spill_align(pay));
    spill_io_issue(s, op);
    return (int)slot;
}

/* The payload can be read straight into the destination page (no staging copy) when no conversion
 * can be needed (formats of 8 bits or fewer are stored as they are), the page is a host pointer
 * aligned for O_DIRECT, and its length is the slot's payload, a multiple of KV_SPILL_ALIGN (so the
 * read writes exactly the page, no padding past its end). */
static int spill_read_direct_ok(const struct kv_spill *s, uint32_t pay,
                                const struct kv_layout *dst_l, const void *dst)
{
    size_t n = kv_page_bytes(dst_l);

    return !s->gpu && kv_fmt_bits(dst_l->k_fmt) <= 8 && kv_fmt_bits(dst_l->v_fmt) <= 8 &&
           (uintptr_t)dst % KV_SPILL_ALIGN == 0 && n % KV_SPILL_ALIGN == 0 && n == pay;
}

int kv_spill_read(struct kv_spill *s, uint32_t slot, const uint8_t *expect_hash,
                  const struct kv_layout *dst_layout, void *dst_page, void *cookie)
{
    struct spill_op *op;

    if (slot >= s->nslots || s->slots[slot].state != SPILL_VALID || s->slots[slot].erase_pending ||
        !dst_page || !dst_layout || kv_layout_check(dst_layout) != 0)
        return -EINVAL;
    if (s->slots[slot].readers == UINT8_MAX)
        return -EBUSY;
    op = spill_op_get(s, SPILL_OP_READ);
    if (!op)
        return -EBUSY;
    s->slots[slot].readers++;
    op->slot = slot;
    op->cookie = cookie;
    op->dst = dst_page;
    op->dst_layout = *dst_layout;
    op->has_expect = expect_hash != NULL;
    if (expect_hash)
        memcpy(op->expect, expect_hash, KV_SPILL_HASH);
    op->len = (uint32_t)(KV_SPILL_ALIGN + spill_align(s->slots[slot].pay));
    op->direct = spill_read_direct_ok(s, s->slots[slot].pay, dst_layout, dst_page);
    if (op->direct)
        s->st.reads_direct++;
    spill_io_issue(s, op);
    return 0;
}

int kv_spill_invalidate(struct kv_spill *s, uint32_t slot)
{
    struct spill_slot *sl;

    if (slot >= s->nslots)
        return -EINVAL;
    sl = &s->slots[slot];
    if (sl->state != SPILL_VALID || sl->erase_pending)
        return -EINVAL;
    s->st.invalidations++;
    if (sl->readers) {
        sl->erase_pending = 1; /* erased by the last read's completion */
        return 0;
    }
    spill_drop(s, slot, 1);
    return 0;
}

/* The payload checksum of a direct read, over the page in place, compared with pay_sum of the
 * header block that kv_spill_slot_decode has already verified. */
static int spill_pay_ok(const struct kv_spill *s, const void *hdr_blk, const void *pay, size_t n)
{
    struct kv_spill_hdr h;
    uint8_t sum[16];

    memcpy(&h, hdr_blk, sizeof h);
    kv_spill_pay_sum(sum, s->key, pay, n);
    return sodium_memcmp(sum, h.pay_sum, sizeof h.pay_sum) == 0;
}

/* Verify a read's slot image and hand the page over (a direct read: verify the payload where it
 * landed, in dst). Returns 0 or a negative errno. */
static int spill_read_done(struct kv_spill *s, struct spill_op *op, uint16_t *flags)
{
    struct kv_spill_meta m;
    uint32_t pay;
    int err;

    err = kv_spill_slot_decode(op->buf, op->direct ? KV_SPILL_ALIGN : op->len, op->slot, s->key,
                               !op->direct, &m, &pay);
    if (err)
        return -EBADMSG;
    if (op->has_expect && memcmp(op->expect, m.hash, KV_SPILL_HASH) != 0)
        return -EBADMSG;
    if (memcmp(&m.layout, &op->dst_layout, sizeof m.layout) != 0)
        return -EBADMSG;
    if (op->direct) {
        if ((m.flags & KV_SPILL_F_DEMOTED) || pay != op->len - KV_SPILL_ALIGN ||
            !spill_pay_ok(s, op->buf, op->dst, pay))
            return -EBADMSG;
        *flags = m.flags;
        return 0;
    }
    err = spill_page_out(s, op->dst, &op->dst_layout, (uint8_t *)op->buf + KV_SPILL_ALIGN, pay,
                         m.flags & KV_SPILL_F_DEMOTED);
    if (err)
        return err;
    *flags = m.flags;
    return 0;
}

/* One request finished with `res` (bytes transferred or -errno; faults already applied). */
void spill_complete(struct kv_spill *s, struct spill_op *op, int res,
                    void (*done)(void *arg, const struct kv_spill_done *d), void *arg)
{
    struct kv_spill_done d = {.cookie = op->cookie, .slot = op->slot};
    struct spill_slot *sl = &s->slots[op->slot];
    int notify = 1;

    if (res >= 0 && (uint32_t)res != op->len) /* short: the disk filled, or the file ended */
        res = op->kind == SPILL_OP_READ ? -EIO : -ENOSPC;
    switch (op->kind) {
    case SPILL_OP_WRITE:
        d.op = KV_SPILL_OP_WRITE;
        if (res >= 0) {
            sl->state = SPILL_VALID;
            s->st.writes++;
            s->st.write_bytes += sl->pay;
            d.res = 0;
        } else {
            if (res == -ENOSPC || res == -EFBIG || res == -EDQUOT) {
                s->st.dropped_nospace++;
                res = -ENOSPC;
            } else {
                s->st.dropped_io++;
            }
            d.res = res;
            spill_drop(s, op->slot, 0); /* a torn image must not outlive the failure */
        }
        break;
    case SPILL_OP_READ:
        d.op = KV_SPILL_OP_READ;
        sl->readers--;
        if (res >= 0)
            res = spill_read_done(s, op, &d.flags);
        else
            s->st.read_errors++;
        if (res == 0) {
            s->st.reads++;
            s->st.read_bytes += sl->pay;
            if (d.flags & KV_SPILL_F_DEMOTED)
                s->st.restored_demoted++;

        } else if (res == -EBADMSG) {
            s->st.corrupt++;
        }
        d.res = res;
        if (sl->state == SPILL_VALID && (res != 0 || sl->erase_pending) && sl->readers == 0) {
            int asked = sl->erase_pending;
            sl->erase_pending = 0;
            spill_drop(s, op->slot, asked);
        } else if (res != 0 && sl->state == SPILL_VALID) {
            sl->erase_pending = 1; /* other readers first; never served again */
        }
        break;
    default: /* SPILL_OP_ERASE */
        d.op = KV_SPILL_OP_INVALIDATE;
        notify = sl->notify;
        /* the disk may be too full to rewrite even a header block: punching the slot out of
         * the file erases it without allocating (it then reads as zeroes) */
        if (res < 0 && fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                 (off_t)spill_slot_off(s, op->slot), s->slot_bytes) == 0)
            res = 0;
        d.res = res < 0 ? res : 0;
        if (res >= 0) {
            spill_slot_free(s, op->slot);
        } else if (++sl->erase_tries < SPILL_ERASE_TRIES) {
            notify = 0;
            spill_op_put(s, op);
            spill_erase(s, d.slot);
            op = NULL;
        } else {
            sl->state = SPILL_BAD; /* quarantined: may still verify on disk, never reused */
        }
        break;
    }
    if (op)
        spill_op_put(s, op);
    spill_erase_kick(s);
    if (done && notify && !s->closing)
        done(arg, &d);
}

int kv_spill_scan(struct kv_spill *s,
                  int (*cb)(void *arg, uint32_t slot, const struct kv_spill_meta *m), void *arg)
{
    struct kv_spill_meta m;
    uint32_t pay, nvalid = 0, step = s->nslots / 10 ? s->nslots / 10 : 1;
    char line[128];
    int err = 0, r;

    if (s->scanned)
        return -EALREADY;
    s->nfree = 0;
    s->st.scan_valid = s->st.scan_corrupt = 0;
    for (uint32_t i = 0; i < s->nslots; i++) {
        if (s->log && s->nslots > SPILL_SCAN_LOG && i % step == 0) {
            snprintf(line, sizeof line, "spill: scanning slot %u of %u (%u valid so far)", i,
                     s->nslots, nvalid);
            s->log(s->log_arg, line);
        }
        s->slots[i].state = SPILL_FREE;
        if (err) { /* stopped: the rest stays free */
            s->free[s->nfree++] = i;
            continue;
        }
        ssize_t n = pread(s->fd, s->scan, KV_SPILL_ALIGN, (off_t)spill_slot_off(s, i));
        if (n < 0) {
            err = -errno;
            s->free[s->nfree++] = i;
            continue;
        }
        if (n < (ssize_t)KV_SPILL_ALIGN)
            memset((uint8_t *)s->scan + n, 0, KV_SPILL_ALIGN - (size_t)n);
        r = kv_spill_slot_decode(s->scan, KV_SPILL_ALIGN, i, s->key, 0, &m, &pay);
        if (r == 0 && pay > s->slot_bytes - KV_SPILL_ALIGN)
            r = -EBADMSG;
        if (r == -EBADMSG)
            s->st.scan_corrupt++;
        if (r) {
            s->free[s->nfree++] = i;
            continue;
        }
        if (m.seq >= s->seq)
            s->seq = m.seq;
        r = cb ? cb(arg, i, &m) : 0;
        if (r < 0) {
            err = r;
            s->free[s->nfree++] = i;
            continue;
        }
        s->slots[i].state = SPILL_VALID;
        s->slots[i].pay = pay;
        if (r > 0) {
            s->st.invalidations++;
            spill_drop(s, i, 0);
        } else {
            nvalid++;
        }
    }
    /* reuse low slots first: reverse so the stack pops the lowest */
    for (uint32_t a = 0, b = s->nfree ? s->nfree - 1 : 0; a < b; a++, b--) {
        uint32_t t = s->free[a];
        s->free[a] = s->free[b];
        s->free[b] = t;
    }
    s->st.scan_valid = nvalid;
    s->scanned = 1;
    if (s->log && s->nslots > SPILL_SCAN_LOG) {
        snprintf(line, sizeof line, "spill: scan done: %u valid, %" PRIu64 " damaged, %u slots",
                 nvalid, s->st.scan_corrupt, s->nslots);
        s->log(s->log_arg, line);
    }
    kv_spill_submit(s);
    return err ? err : (int)nvalid;
}
