/*
 * test_spill_faults.c - I/O errors and a full disk, on both backends.
 *
 * io_error_every_request: SQLite-style, the Nth I/O request fails with -EIO for N = 1, 2, 3, ...
 * until a run completes without a fault. Each run spills 8 pages, restores them, invalidates two,
 * closes, reopens and re-indexes. Whatever N hit, every page served is bit-exact, the failure is
 * counted, and the restarted store holds exactly the pages that were written, not dropped by a
 * failed restore, and not invalidated.
 *
 * io_uring_refused: a seccomp filter like the Docker/containerd default profiles makes
 * io_uring_setup fail with EPERM; the store must choose the pread/pwrite path and say so.
 *
 * memlock: without CAP_IPC_LOCK and with a small RLIMIT_MEMLOCK, registering the staging buffers
 * fails; the store keeps io_uring with plain buffers and says so, and the default queue depth
 * shrinks so the buffers fit.
 *
 * disk_full: a real EFBIG from RLIMIT_FSIZE (the kernel's write-size limit) on a sparse store:
 * writes past the limit fail, the victims are dropped and counted, restores keep working, and
 * spilling resumes once there is room again.
 */
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "spill_th.h"

#define NPAGES 8

struct outcome {
    int written[NPAGES + 1]; /* write completed with res 0 */
    int dropped[NPAGES + 1]; /* restore failed: slot dropped */
    int erased[NPAGES + 1];  /* invalidated */
    uint64_t faults;
    uint64_t dropped_io, read_errors, corrupt;
};

static void drain(struct kv_spill *s, struct th_rec *r)
{
    cr_assert_geq(kv_spill_drain(s, th_done, r), 0);
}

static void scenario(const char *path, int sync, uint64_t nth, struct outcome *o)
{
    struct kv_layout l = th_layout(KV_FMT_FP8_E5M2, KV_FMT_INT4);
    size_t pb = kv_page_bytes(&l);
    uint8_t *src = malloc(pb), *dst = calloc(NPAGES + 1, pb);
    struct th_rec *rec = calloc(1, sizeof *rec);
    struct kv_spill_cfg cfg = {.path = path,
                               .bytes = KV_SPILL_ALIGN + 16 * (KV_SPILL_ALIGN + TH_MAX_PAGE),
                               .max_page_bytes = TH_MAX_PAGE,
                               .queue_depth = 4,
                               .force_sync = sync,
                               .fail_nth = nth};
    struct kv_spill_stats st;
    struct kv_spill *s;
    int32_t slot[NPAGES + 1];
    char why[256];
    int rc;

    memset(o, 0, sizeof *o);
    unlink(path);
    rc = kv_spill_open(&s, &cfg, why, sizeof why);
    if (rc == -ENOTSUP)
        cr_skip_test("O_DIRECT refused here: %s", why);
    cr_assert_eq(rc, 0, "%s", why);
    cr_assert_eq(kv_spill_scan(s, NULL, NULL), 0);
    for (int i = 1; i <= NPAGES; i++) {
        struct kv_spill_meta m = th_meta(&l, (uint64_t)i);
        th_fill(src, pb, (uint64_t)i);
        slot[i] = kv_spill_write(s, &m, src, th_cookie(i));
        if (slot[i] == -EBUSY) {
            drain(s, rec);
            slot[i] = kv_spill_write(s, &m, src, th_cookie(i));
        }
        cr_assert_geq(slot[i], 0);
    }
    drain(s, rec);
    for (int i = 1; i <= NPAGES; i++) {
        cr_assert_eq(rec->seen[i], 1);
        cr_assert(rec->res[i] == 0 || rec->res[i] == -EIO, "write: %d", rec->res[i]);
        o->written[i] = rec->res[i] == 0;
    }
    for (int i = 1; i <= NPAGES; i++) {
        struct kv_spill_meta m = th_meta(&l, (uint64_t)i);
        if (!o->written[i])
            continue;
        rec->seen[i] = 0;
        rc = kv_spill_read(s, (uint32_t)slot[i], m.hash, &l, dst + (size_t)i * pb, th_cookie(i));
        if (rc == -EBUSY) {
            drain(s, rec);
            rc =
                kv_spill_read(s, (uint32_t)slot[i], m.hash, &l, dst + (size_t)i * pb, th_cookie(i));
        }
        cr_assert_eq(rc, 0);
    }
    drain(s, rec);
    for (int i = 1; i <= NPAGES; i++) {
        if (!o->written[i])
            continue;
        cr_assert_eq(rec->seen[i], 1);
        if (rec->res[i] == 0) {
            th_fill(src, pb, (uint64_t)i);
            cr_assert(memcmp(src, dst + (size_t)i * pb, pb) == 0, "N=%lu: page %d differs",
                      (unsigned long)nth, i);
        } else {
            cr_assert_eq(rec->res[i], -EIO, "read: %d", rec->res[i]);
            o->dropped[i] = 1;
        }
    }
    for (int i = 1; i <= 2; i++) {
        if (o->written[i] && !o->dropped[i]) {
            cr_assert_eq(kv_spill_invalidate(s, (uint32_t)slot[i]), 0);
            o->erased[i] = 1;
        }
    }
    drain(s, rec);
    cr_assert_eq(rec->inval_err, 0, "an erase is retried after an I/O error");
    kv_spill_stats(s, &st);
    o->faults = st.faults_injected;
    o->dropped_io = st.dropped_io;
    o->read_errors = st.read_errors;
    o->corrupt = st.corrupt;
    kv_spill_close(s);
    free(src);
    free(dst);
    free(rec);
}

struct present {
    int seen[NPAGES + 1];
    uint32_t slot[NPAGES + 1];
};

static int present_cb(void *arg, uint32_t slot, const struct kv_spill_meta *m)
{
    struct present *p = arg;
    uint64_t seed = th_seed(m->hash);

    cr_assert(seed >= 1 && seed <= NPAGES, "unknown page %lu", (unsigned long)seed);
    cr_assert_eq(p->seen[seed], 0, "page %lu twice", (unsigned long)seed);
    p->seen[seed] = 1;
    p->slot[seed] = slot;
    return 0;
}

static void restart_check(const char *path, int sync, const struct outcome *o, uint64_t nth)
{
    struct kv_layout l = th_layout(KV_FMT_FP8_E5M2, KV_FMT_INT4);
    size_t pb = kv_page_bytes(&l);
    uint8_t *want = malloc(pb), *got = malloc(pb);
    struct th_rec *rec = calloc(1, sizeof *rec);
    struct present p = {0};
    struct kv_spill *s = th_open(path, sync, 16, 4);

    cr_assert_geq(kv_spill_scan(s, present_cb, &p), 0);
    for (int i = 1; i <= NPAGES; i++) {
        int expect = o->written[i] && !o->dropped[i] && !o->erased[i];
        cr_assert_eq(p.seen[i], expect, "N=%lu: page %d %s after restart", (unsigned long)nth, i,
                     expect ? "missing" : "came back");
        if (!p.seen[i])
            continue;
        struct kv_spill_meta m = th_meta(&l, (uint64_t)i);
        cr_assert_eq(kv_spill_read(s, p.slot[i], m.hash, &l, got, th_cookie(i)), 0);
        cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
        cr_assert_eq(rec->res[i], 0);
        th_fill(want, pb, (uint64_t)i);
        cr_assert(memcmp(want, got, pb) == 0);
    }
    kv_spill_close(s);
    free(want);
    free(got);
    free(rec);
}

static void io_error_loop(int sync)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    struct outcome o;
    uint64_t n;
    int failed_writes = 0, failed_reads = 0;

    th_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/store", dir);
    for (n = 1; n < 1000; n++) {
        scenario(path, sync, n, &o);
        if (o.faults == 0)
            break; /* the run completed without reaching request N */
        cr_assert_eq(o.faults, 1);
        cr_assert_eq(o.corrupt, 0, "an I/O error is not a checksum failure");
        failed_writes += (int)o.dropped_io;
        failed_reads += (int)o.read_errors;
        restart_check(path, sync, &o, n);
    }
    /* 8 writes + 8 reads + 2 erases = 18 requests; every one of them failed once */
    cr_assert_eq(n, 19, "the loop covered %lu requests", (unsigned long)(n - 1));
    cr_assert_eq(failed_writes, NPAGES, "each failed write counted once");
    cr_assert_eq(failed_reads, NPAGES);
    restart_check(path, sync, &o, n);
    th_rmdir(dir);
}

Test(spill_faults, io_error_every_request_uring)
{
    io_error_loop(0);
}

Test(spill_faults, io_error_every_request_sync)
{
    io_error_loop(1);
}

static void disk_full(int sync)
{
    char dir[PATH_MAX], path[PATH_MAX + 16], why[256];
    struct kv_layout l = th_layout(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    size_t pb = kv_page_bytes(&l);
    uint8_t *src = malloc(pb), *dst = malloc(pb);
    struct th_rec *rec = calloc(1, sizeof *rec);
    struct kv_spill_cfg cfg = {.path = path,
                               .bytes = KV_SPILL_ALIGN + 16 * (KV_SPILL_ALIGN + TH_MAX_PAGE),
                               .max_page_bytes = TH_MAX_PAGE,
                               .queue_depth = 4,
                               .force_sync = sync,
                               .no_prealloc = 1};
    struct kv_spill_stats st;
    struct kv_spill *s;
    struct rlimit rl;
    int32_t slot[12];
    int rc;

    th_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/store", dir);
    rc = kv_spill_open(&s, &cfg, why, sizeof why);
    if (rc == -ENOTSUP)
        cr_skip_test("O_DIRECT refused here: %s", why);
    cr_assert_eq(rc, 0, "%s", why);
    kv_spill_scan(s, NULL, NULL);
    kv_spill_stats(s, &st);
    /* the file system takes nothing past the start of slot 3 */
    signal(SIGXFSZ, SIG_IGN);
    rl.rlim_cur = KV_SPILL_ALIGN + 3 * (rlim_t)st.slot_bytes;
    rl.rlim_max = RLIM_INFINITY;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    for (int i = 0; i < 6; i++) {
        struct kv_spill_meta m = th_meta(&l, (uint64_t)i);
        th_fill(src, pb, (uint64_t)i);
        slot[i] = kv_spill_write(s, &m, src, th_cookie(i));
        cr_assert_geq(slot[i], 0);
        cr_assert_geq(kv_spill_drain(s, th_done, rec), 0); /* in order: low slots first */
        cr_assert_eq(rec->res[i], slot[i] < 3 ? 0 : -ENOSPC, "write %d to slot %d: %d", i, slot[i],
                     rec->res[i]);
    }
    kv_spill_stats(s, &st);
    cr_assert_eq(st.dropped_nospace, 3);
    cr_assert_eq(st.writes, 3);
    cr_assert_eq(st.slots_used, 3, "dropped victims give their slots back");
    for (int i = 0; i < 3; i++) { /* still serving */
        struct kv_spill_meta m = th_meta(&l, (uint64_t)i);
        cr_assert_eq(kv_spill_read(s, (uint32_t)slot[i], m.hash, &l, dst, th_cookie(i)), 0);
        cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
        cr_assert_eq(rec->res[i], 0);
        th_fill(src, pb, (uint64_t)i);
        cr_assert(memcmp(src, dst, pb) == 0);
    }
    rl.rlim_cur = RLIM_INFINITY; /* space comes back */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    struct kv_spill_meta m = th_meta(&l, 10);
    th_fill(src, pb, 10);
    slot[10] = kv_spill_write(s, &m, src, th_cookie(10));
    cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
    cr_assert_eq(rec->res[10], 0);
    kv_spill_close(s);

    s = th_open(path, sync, 16, 4);
    cr_assert_eq(kv_spill_scan(s, NULL, NULL), 4, "the dropped victims do not come back");
    kv_spill_close(s);
    free(src);
    free(dst);
    free(rec);
    th_rmdir(dir);
}

Test(spill_faults, disk_full_uring)
{
    disk_full(0);
}

Test(spill_faults, disk_full_sync)
{
    disk_full(1);
}

Test(spill_faults, io_uring_refused_by_seccomp)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    char dir[PATH_MAX], path[PATH_MAX + 16], why[256];
    struct kv_layout l = th_layout(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    size_t pb = kv_page_bytes(&l);
    uint8_t *src = malloc(pb), *dst = malloc(pb);
    struct th_rec *rec = calloc(1, sizeof *rec);
    struct kv_spill_cfg cfg = {
        .path = path, .bytes = 1 << 20, .max_page_bytes = TH_MAX_PAGE, .queue_depth = 4};
    struct kv_spill_meta m = th_meta(&l, 5);
    struct kv_spill_stats st;
    struct kv_spill *s;
    int slot;

    th_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/store", dir);
    cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0, "seccomp: %s",
                 strerror(errno));
    cr_assert_eq(kv_spill_open(&s, &cfg, why, sizeof why), 0, "%s", why);
    kv_spill_stats(s, &st);
    cr_assert_eq(st.backend, KV_SPILL_SYNC);
    cr_assert(strstr(why, "io_uring refused") != NULL, "why: '%s'", why);
    kv_spill_scan(s, NULL, NULL);
    th_fill(src, pb, 5);
    slot = kv_spill_write(s, &m, src, th_cookie(0));
    cr_assert_geq(slot, 0);
    cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
    cr_assert_eq(kv_spill_read(s, (uint32_t)slot, m.hash, &l, dst, th_cookie(1)), 0);
    cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
    cr_assert_eq(rec->res[0], 0);
    cr_assert_eq(rec->res[1], 0);
    cr_assert(memcmp(src, dst, pb) == 0);
    kv_spill_close(s);
    free(src), free(dst), free(rec);
    th_rmdir(dir);
}

static void drop_ipc_lock(void)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];

    cr_assert_eq(syscall(SYS_capget, &h, d), 0);
    d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
    d[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
    cr_assert_eq(syscall(SYS_capset, &h, d), 0, "capset: %s", strerror(errno));
}

Test(spill_faults, memlock_too_small)
{
    char dir[PATH_MAX], path[PATH_MAX + 16], why[256];
    struct kv_spill_cfg cfg = {
        .path = path, .bytes = 1 << 20, .max_page_bytes = TH_MAX_PAGE, .queue_depth = 8};
    struct rlimit rl = {.rlim_cur = 128 << 10, .rlim_max = 128 << 10};
    struct kv_layout l = th_layout(KV_FMT_INT8, KV_FMT_INT8);
    size_t pb = kv_page_bytes(&l);
    uint8_t *src = malloc(pb), *dst = malloc(pb);
    struct th_rec *rec = calloc(1, sizeof *rec);
    struct kv_spill_meta m = th_meta(&l, 9);
    struct kv_spill_stats st;
    struct kv_spill *s;
    int slot;

    th_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/store", dir);
    drop_ipc_lock();
    cr_assert_eq(setrlimit(RLIMIT_MEMLOCK, &rl), 0);
    /* 8 x 20 KiB staging buffers do not fit 128 KiB */
    cr_assert_eq(kv_spill_open(&s, &cfg, why, sizeof why), 0, "%s", why);
    kv_spill_stats(s, &st);
    /* never fixed buffers over the limit; io_uring without them (or, seen once on this shared VM,
     * no io_uring at all, which then must say why) */
    cr_assert(st.backend == KV_SPILL_URING || st.backend == KV_SPILL_SYNC, "backend %d (%s)",
              st.backend, why);
    cr_assert(strstr(why, st.backend == KV_SPILL_URING ? "LimitMEMLOCK" : "io_uring refused"),
              "backend %d, why: '%s'", st.backend, why);
    kv_spill_scan(s, NULL, NULL);
    th_fill(src, pb, 9);
    slot = kv_spill_write(s, &m, src, th_cookie(0));
    cr_assert_geq(slot, 0);
    cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
    cr_assert_eq(kv_spill_read(s, (uint32_t)slot, m.hash, &l, dst, th_cookie(1)), 0);
    cr_assert_geq(kv_spill_drain(s, th_done, rec), 0);
    cr_assert_eq(rec->res[0], 0);
    cr_assert_eq(rec->res[1], 0);
    cr_assert(memcmp(src, dst, pb) == 0);
    kv_spill_close(s);

    /* the default queue depth is sized to the limit (locked memory is counted per user, so
     * other processes of this uid may still make the registration fail: not asserted) */
    cfg.queue_depth = 0;
    cr_assert_eq(kv_spill_open(&s, &cfg, why, sizeof why), 0, "%s", why);
    kv_spill_stats(s, &st);
    cr_assert_eq(st.queue_depth, (128 << 10) / st.slot_bytes);
    cr_assert_leq((uint64_t)st.queue_depth * st.slot_bytes + KV_SPILL_ALIGN, 128u << 10);
    kv_spill_close(s);
    free(src), free(dst), free(rec);
    th_rmdir(dir);
}
