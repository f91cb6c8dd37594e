/*
 * bench_spill.c - kvbench-spill: spill write and restore read throughput of the spill store,
 * side by side in one run on one file system with its floors: fio (same block size = slot size,
 * same queue depth, O_DIRECT, io_uring with fixed buffers and registered file) and a plain
 * O_DIRECT pwrite/pread loop. Each figure is the median of --reps runs; read the ratios.
 *
 *   kvbench-spill [--dir DIR] [--mib 512] [--qd 4] [--reps 3]
 *                 [--layers 32 --kv-heads 8 --head-dim 128 --page-tokens 16]
 *
 * Pages: by default 32 layers x 8 KV heads x head_dim 128 x 16 tokens in FP8 E4M3 (a Llama-3-8B
 * page, 1056 KiB); the spill path includes the header, the checksum of header and payload and the
 * copy into the staging buffer; the restore path the checksum verification and the copy out. Also
 * prints the time to restore one 4096-token prefix (256 such pages), for the restore-vs-recompute
 * comparison with the reference worker.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "spill.h"

#define NPAGES_SRC 4

struct bench {
    const char *dir;
    unsigned mib, qd, reps;
    struct kv_layout l;
    size_t pb;
    uint32_t slot_bytes;
    uint32_t n;
    uint32_t prefix_pages; /* pages of a 4096-token prefix */
    uint8_t *src[NPAGES_SRC];
    uint8_t *dst;
    int errors;
};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds (user + system, every thread: io-wq workers count) used by this process so far. */
static double cpu_now(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static double json_num(const char *from, const char *key)
{
    const char *p = strstr(from, key);

    p = p ? strchr(p, ':') : NULL;
    return p ? strtod(p + 1, NULL) : -1;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_d);
    return v[n / 2];
}

static void on_done(void *arg, const struct kv_spill_done *d)
{
    struct bench *b = arg;

    if (d->res != 0)
        b->errors++;
}

static void wait_some(struct kv_spill *s, struct bench *b)
{
    struct pollfd p = {.fd = kv_spill_event_fd(s), .events = POLLIN};

    kv_spill_submit(s);
    if (kv_spill_reap(s, on_done, b) == 0) {
        poll(&p, 1, 1000);
        kv_spill_reap(s, on_done, b);
    }
}

/* One store run: returns write and read throughput in bytes/s of slot data moved. */
static int store_run(struct bench *b, int sync, double *wbps, double *rbps, double *prefix_s,
                     double *wcpu, double *rcpu)
{
    char path[4096], why[256];
    struct kv_spill_cfg cfg = {.path = path,
                               .bytes = KV_SPILL_ALIGN + (uint64_t)b->n * b->slot_bytes,
                               .max_page_bytes = (uint32_t)b->pb,
                               .queue_depth = b->qd,
                               .force_sync = sync};
    struct kv_spill *s;
    double t0, c0;
    int rc;

    snprintf(path, sizeof path, "%s/kvbench-spill.store", b->dir);
    unlink(path);
    rc = kv_spill_open(&s, &cfg, why, sizeof why);
    if (rc) {
        fprintf(stderr, "kvbench-spill: open: %s (%s)\n", strerror(-rc), why);
        return rc;
    }
    kv_spill_scan(s, NULL, NULL);
    c0 = cpu_now();
    t0 = now();
    for (uint32_t i = 0; i < b->n; i++) {
        struct kv_spill_meta m = {.layout = b->l, .ntok = b->l.page_tokens};
        snprintf(m.ns, sizeof m.ns, "bench");
        memcpy(m.hash, &i, sizeof i);
        while ((rc = kv_spill_write(s, &m, b->src[i % NPAGES_SRC], NULL)) == -EBUSY)
            wait_some(s, b);
        if (rc < 0) {
            fprintf(stderr, "kvbench-spill: write: %s\n", strerror(-rc));
            break;
        }
    }
    kv_spill_drain(s, on_done, b);
    *wbps = (double)b->n * b->slot_bytes / (now() - t0);
    *wcpu = (cpu_now() - c0) / ((double)b->n * b->slot_bytes / 1e9);
    c0 = cpu_now();
    t0 = now();
    for (uint32_t i = 0; i < b->n; i++) {
        uint8_t h[KV_SPILL_HASH] = {0};
        memcpy(h, &i, sizeof i);
        while ((rc = kv_spill_read(s, i, h, &b->l, b->dst + (size_t)(i % b->qd) * b->pb, NULL)) ==
               -EBUSY)
            wait_some(s, b);
        if (rc < 0) {
            fprintf(stderr, "kvbench-spill: read: %s\n", strerror(-rc));
            break;
        }
    }
    kv_spill_drain(s, on_done, b);
    *rbps = (double)b->n * b->slot_bytes / (now() - t0);
    *rcpu = (cpu_now() - c0) / ((double)b->n * b->slot_bytes / 1e9);
    /* one 4096-token prefix, as a lookup would restore it: its pages in chain order */
    t0 = now();
    for (uint32_t i = 0; i < b->prefix_pages && i < b->n; i++) {
        uint8_t h[KV_SPILL_HASH] = {0};
        memcpy(h, &i, sizeof i);
        while ((rc = kv_spill_read(s, i, h, &b->l, b->dst + (size_t)(i % b->qd) * b->pb, NULL)) ==
               -EBUSY)
            wait_some(s, b);
        if (rc < 0)
            break;
    }
    kv_spill_drain(s, on_done, b);
    *prefix_s = now() - t0;
    kv_spill_close(s);
    unlink(path);
    return 0;
}

/* Plain O_DIRECT pwrite then pread loop over the same bytes, queue depth 1. */
static int loop_run(struct bench *b, double *wbps, double *rbps)
{
    char path[4096];
    uint64_t bytes = (uint64_t)b->n * b->slot_bytes;
    void *buf;
    double t0;
    int fd;

    snprintf(path, sizeof path, "%s/kvbench-spill.loop", b->dir);
    unlink(path);
    fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0600);
    if (fd < 0 || posix_memalign(&buf, 4096, b->slot_bytes))
        return -errno;
    memcpy(buf, b->src[0], b->pb);
    if (fallocate(fd, 0, 0, (off_t)bytes))
        return -errno;
    t0 = now();
    for (uint32_t i = 0; i < b->n; i++)
        if (pwrite(fd, buf, b->slot_bytes, (off_t)i * b->slot_bytes) != (ssize_t)b->slot_bytes)
            return -EIO;
    *wbps = (double)bytes / (now() - t0);
    t0 = now();
    for (uint32_t i = 0; i < b->n; i++)
        if (pread(fd, buf, b->slot_bytes, (off_t)i * b->slot_bytes) != (ssize_t)b->slot_bytes)
            return -EIO;
    *rbps = (double)bytes / (now() - t0);
    close(fd);
    free(buf);
    unlink(path);
    return 0;
}

/* fio with the same block size, queue depth, O_DIRECT and io_uring; bytes/s or -1. */
static double fio_run(struct bench *b, const char *rw, double *cpu)
{
    char cmd[8192], out[1 << 16], path[4096];
    const char *p;
    size_t n;
    FILE *f;

    snprintf(path, sizeof path, "%s/kvbench-spill.fio", b->dir);
    if (strcmp(rw, "write") == 0)
        unlink(path); /* a fresh, preallocated file, like the store's and the loop's */
    snprintf(cmd, sizeof cmd,
             "fio --name=spill --filename=%s --size=%llu --bs=%u --iodepth=%u --direct=1 "
             "--ioengine=io_uring --fixedbufs=1 --registerfiles=1 --rw=%s --numjobs=1 "
             "--output-format=json 2>/dev/null",
             path, (unsigned long long)b->n * b->slot_bytes, b->slot_bytes, b->qd, rw);
    f = popen(cmd, "r");
    if (!f)
        return -1;
    n = fread(out, 1, sizeof out - 1, f);
    out[n] = 0;
    pclose(f);
    p = strstr(out, strcmp(rw, "write") == 0 ? "\"write\" : {" : "\"read\" : {");
    if (!p)
        return -1;
    /* fio's own CPU: (usr + sys)% of the job's runtime, per GB moved */
    *cpu = (json_num(out, "\"usr_cpu\"") + json_num(out, "\"sys_cpu\"")) / 100.0 *
           json_num(out, "\"job_runtime\"") / 1e3 / ((double)b->n * b->slot_bytes / 1e9);
    return json_num(p, "\"bw_bytes\"");
}

static void row(const char *what, double w, double r, double fw, double fr)
{
    printf("%-34s %8.2f GB/s %6.2fx   %8.2f GB/s %6.2fx\n", what, w / 1e9, fw > 0 ? w / fw : 0,
           r / 1e9, fr > 0 ? r / fr : 0);
}

int main(int argc, char **argv)
{
    struct bench b = {.dir = getenv("KVD_BIN_DIR"), .mib = 512, .qd = 4, .reps = 3};
    unsigned layers = 32, heads = 8, dim = 128, ptok = 16;
    double sw[16], sr[16], yw[16], yr[16], lw[16], lr[16], fw[16], fr[16], sp[16], yp[16];
    double cfw[16], cfr[16], csw[16], csr[16], cyw[16], cyr[16];
    struct statfs sfs;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir"))
            b.dir = argv[i + 1];
        else if (!strcmp(argv[i], "--mib"))
            b.mib = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--qd"))
            b.qd = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps"))
            b.reps = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers"))
            layers = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv-heads"))
            heads = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--head-dim"))
            dim = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--page-tokens"))
            ptok = (unsigned)atoi(argv[i + 1]);
    }
    if (!b.dir)
        b.dir = ".";
    if (b.reps < 1 || b.reps > 15 || b.qd < 1 || b.qd > KV_SPILL_MAX_QD || b.mib < 16) {
        fprintf(stderr, "usage: kvbench-spill [--dir DIR] [--mib >=16] [--qd 1..256] "
                        "[--reps 1..15] [--layers 32 --kv-heads 8 --head-dim 128 "
                        "--page-tokens 16]\n");
        return 2;
    }
    if (statfs(b.dir, &sfs) == 0 && sfs.f_type == 0x01021994) {
        fprintf(stderr, "kvbench-spill: %s is tmpfs (no real O_DIRECT): use --dir on a disk\n",
                b.dir);
        return 2;
    }
    b.l = (struct kv_layout){.n_layers = (uint16_t)layers,
                             .n_kv_heads = (uint16_t)heads,
                             .head_dim = (uint16_t)dim,
                             .page_tokens = (uint16_t)ptok,
                             .k_fmt = KV_FMT_FP8_E4M3,
                             .v_fmt = KV_FMT_FP8_E4M3};
    b.pb = kv_page_bytes(&b.l);
    if (b.pb == 0) {
        fprintf(stderr, "kvbench-spill: invalid page geometry\n");
        return 2;
    }
    b.slot_bytes =
        (uint32_t)(KV_SPILL_ALIGN + (b.pb + KV_SPILL_ALIGN - 1) / KV_SPILL_ALIGN * KV_SPILL_ALIGN);
    b.n = (uint32_t)(((uint64_t)b.mib << 20) / b.slot_bytes);
    b.prefix_pages = 4096 / b.l.page_tokens;
    for (int i = 0; i < NPAGES_SRC; i++) {
        b.src[i] = malloc(b.pb);
        for (size_t j = 0; j < b.pb; j++)
            b.src[i][j] = (uint8_t)(rand() >> 7);
    }
    /* restores land in pages laid out as kvd's arena lays them out: 4 KiB-aligned whenever the
     * page size is a multiple of 4 KiB (chunks are 4 KiB multiples), which lets the store read
     * the payload straight into the page */
    b.dst = aligned_alloc(4096, ((size_t)b.qd * b.pb + 4095) / 4096 * 4096);

    printf("kvbench-spill: %u pages of %zu B (slot %u B), %.0f MiB, qd %u, %u reps, dir %s\n", b.n,
           b.pb, b.slot_bytes, (double)b.n * b.slot_bytes / (1 << 20), b.qd, b.reps, b.dir);
    for (unsigned r = 0; r < b.reps; r++) {
        fw[r] = fio_run(&b, "write", &cfw[r]);
        fr[r] = fio_run(&b, "read", &cfr[r]);
        if (store_run(&b, 0, &sw[r], &sr[r], &sp[r], &csw[r], &csr[r]) ||
            store_run(&b, 1, &yw[r], &yr[r], &yp[r], &cyw[r], &cyr[r]) ||
            loop_run(&b, &lw[r], &lr[r]))
            return 1;
    }
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/kvbench-spill.fio", b.dir);
        unlink(path);
    }
    double FW = median(fw, b.reps), FR = median(fr, b.reps);
    printf("%-34s %13s %7s   %13s %7s\n", "median of runs", "write", "vs fio", "read", "vs fio");
    row("fio io_uring O_DIRECT (floor)", FW, FR, FW, FR);
    row("spill store, io_uring", median(sw, b.reps), median(sr, b.reps), FW, FR);
    row("spill store, pread/pwrite path", median(yw, b.reps), median(yr, b.reps), FW, FR);
    row("plain O_DIRECT pwrite/pread loop", median(lw, b.reps), median(lr, b.reps), FW, FR);
    printf("CPU seconds per GB moved (write / read): fio %.3f / %.3f, spill io_uring %.3f / %.3f, "
           "spill pread/pwrite %.3f / %.3f\n",
           median(cfw, b.reps), median(cfr, b.reps), median(csw, b.reps), median(csr, b.reps),
           median(cyw, b.reps), median(cyr, b.reps));
    printf("restore of one 4096-token prefix (%u pages, %.0f MiB): %.1f ms io_uring, %.1f ms "
           "pread/pwrite (compare with recomputing it)\n",
           b.prefix_pages, (double)b.prefix_pages * b.pb / (1 << 20), median(sp, b.reps) * 1e3,
           median(yp, b.reps) * 1e3);
    if (b.errors)
        printf("kvbench-spill: %d operations failed\n", b.errors);
    return b.errors ? 1 : 0;
}
