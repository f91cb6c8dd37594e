/*
 * test_spill_basic.c - spill store on a real file with O_DIRECT, through io_uring and through the
 * pread/pwrite path (every test runs on both): round trip, restart, invalidate-then-restart, a
 * store that fills up, damaged, misplaced, torn and truncated slots, queue limits, the eventfd.
 */
#include <poll.h>
#include <sys/stat.h>

#include "spill_th.h"

struct env {
    char dir[PATH_MAX];
    char path[PATH_MAX + 16];
    struct kv_layout l;
    size_t pb;
    struct th_rec rec;
    uint8_t *pages; /* TH_MAX_OPS/16 pages of pb bytes, read destinations */
};

static struct env *env_new(void)
{
    struct env *e = calloc(1, sizeof *e);

    cr_assert_not_null(e);
    th_tmpdir(e->dir, sizeof e->dir);
    snprintf(e->path, sizeof e->path, "%s/store", e->dir);
    e->l = th_layout(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
    e->pb = kv_page_bytes(&e->l);
    e->pages = calloc(256, e->pb);
    cr_assert_not_null(e->pages);
    return e;
}

static void env_free(struct env *e)
{
    th_rmdir(e->dir);
    free(e->pages);
    free(e);
}

/* Spill pages with seeds [first, first+n), cookies = seed; returns after all completed. */
static void spill_seeds(struct kv_spill *s, struct env *e, uint64_t first, int n, int32_t *slots)
{
    uint8_t *page = malloc(e->pb);

    cr_assert_not_null(page);
    for (int i = 0; i < n; i++) {
        struct kv_spill_meta m = th_meta(&e->l, first + (uint64_t)i);
        th_fill(page, e->pb, first + (uint64_t)i);
        int slot = kv_spill_write(s, &m, page, th_cookie((int)(first + (uint64_t)i)));
        if (slot == -EBUSY) { /* queue depth reached: let completions come back */
            cr_assert_gt(kv_spill_drain(s, th_done, &e->rec), 0);
            slot = kv_spill_write(s, &m, page, th_cookie((int)(first + (uint64_t)i)));
        }
        cr_assert(slot >= 0, "write %d: %s", i, strerror(-slot));
        if (slots)
            slots[i] = slot;
    }
    free(page);
    cr_assert(kv_spill_drain(s, th_done, &e->rec) >= 0);
    for (int i = 0; i < n; i++)
        cr_assert_eq(e->rec.res[first + (uint64_t)i], 0, "write of seed %d failed: %s",
                     (int)(first + (uint64_t)i), strerror(-e->rec.res[first + (uint64_t)i]));
}

/* Restore slot into e->pages[idx]; returns the completion's res. */
static int restore(struct kv_spill *s, struct env *e, uint32_t slot, uint64_t seed, int idx)
{
    struct kv_spill_meta m = th_meta(&e->l, seed);
    int rc = kv_spill_read(s, slot, m.hash, &e->l, e->pages + (size_t)idx * e->pb, th_cookie(idx));

    if (rc)
        return rc;
    e->rec.seen[idx] = 0;
    cr_assert(kv_spill_drain(s, th_done, &e->rec) >= 0);
    cr_assert_eq(e->rec.seen[idx], 1, "one completion per read");
    cr_assert_eq(e->rec.op[idx], KV_SPILL_OP_READ);
    return e->rec.res[idx];
}

static void assert_page(struct env *e, int idx, uint64_t seed)
{
    uint8_t *want = malloc(e->pb);

    th_fill(want, e->pb, seed);
    cr_assert(memcmp(want, e->pages + (size_t)idx * e->pb, e->pb) == 0,
              "restored page %d differs from seed %d", idx, (int)seed);
    free(want);
}

struct scan_acc {
    int n;
    uint32_t slot[256];
    struct kv_spill_meta m[256];
};

static int scan_cb(void *arg, uint32_t slot, const struct kv_spill_meta *m)
{
    struct scan_acc *a = arg;

    cr_assert(a->n < 256);
    a->slot[a->n] = slot;
    a->m[a->n++] = *m;
    return 0;
}

static void raw_rw(const char *path, int write_, void *buf, size_t n, off_t off)
{
    int fd = open(path, O_RDWR);
    ssize_t r;

    cr_assert(fd >= 0);
    r = write_ ? pwrite(fd, buf, n, off) : pread(fd, buf, n, off);
    cr_assert_eq(r, (ssize_t)n, "raw %s", write_ ? "write" : "read");
    close(fd);
}

static off_t slot_off(struct kv_spill *s, uint32_t slot)
{
    struct kv_spill_stats st;

    kv_spill_stats(s, &st);
    return (off_t)KV_SPILL_ALIGN + (off_t)slot * st.slot_bytes;
}

#define BOTH(name)                                                                                 \
    static void name(int sync);                                                                    \
    Test(spill_basic, name##_uring)                                                                \
    {                                                                                              \
        name(0);                                                                                   \
    }                                                                                              \
    Test(spill_basic, name##_sync)                                                                 \
    {                                                                                              \
        name(1);                                                                                   \
    }                                                                                              \
    static void name(int sync)

BOTH(roundtrip)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 64, 4);
    struct kv_spill_stats st;
    int32_t slots[20];

    kv_spill_stats(s, &st);
    cr_assert_eq(st.backend, sync ? KV_SPILL_SYNC : KV_SPILL_URING_FIXED);
    cr_assert_eq(kv_spill_scan(s, scan_cb, &(struct scan_acc){0}), 0, "new store is empty");
    spill_seeds(s, e, 1, 20, slots);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(restore(s, e, (uint32_t)slots[i], 1 + (uint64_t)i, i), 0);
        cr_assert_eq(e->rec.flags[i], 0, "an FP8 page is not demoted");
        assert_page(e, i, 1 + (uint64_t)i);
    }
    kv_spill_stats(s, &st);
    cr_assert_eq(st.writes, 20);
    cr_assert_eq(st.reads, 20);
    cr_assert_eq(st.demotions, 0);
    cr_assert_eq(st.slots_used, 20);
    cr_assert_eq(st.inflight, 0);
    kv_spill_close(s);
    env_free(e);
}

BOTH(restart_reindexes)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 64, 4);
    struct scan_acc a = {0};

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 100, 10, NULL);
    kv_spill_close(s);

    s = th_open(e->path, sync, 64, 4);
    cr_assert_eq(kv_spill_scan(s, scan_cb, &a), 10);
    cr_assert_eq(a.n, 10);
    for (int i = 0; i < a.n; i++) {
        uint64_t seed = th_seed(a.m[i].hash);
        struct kv_spill_meta want = th_meta(&e->l, seed);
        cr_assert(seed >= 100 && seed < 110);
        cr_assert_str_eq(a.m[i].ns, "test-ns");
        cr_assert(memcmp(&a.m[i].layout, &e->l, sizeof e->l) == 0);
        cr_assert(memcmp(a.m[i].parent, want.parent, 16) == 0);
        cr_assert_eq(a.m[i].ntok, e->l.page_tokens);
        cr_assert_eq(restore(s, e, a.slot[i], seed, i), 0);
        assert_page(e, i, seed);
    }
    /* new writes go to free slots, never over re-indexed ones */
    spill_seeds(s, e, 200, 5, NULL);
    for (int i = 0; i < a.n; i++)
        cr_assert_eq(restore(s, e, a.slot[i], th_seed(a.m[i].hash), i), 0);
    kv_spill_close(s);
    env_free(e);
}

BOTH(evicted_chain_stays_gone)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 64, 4);
    struct scan_acc a = {0};
    int32_t slots[10];

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 10, slots); /* one chain: seed i's parent is seed i-1 */
    for (int i = 4; i < 10; i++)     /* operator evicts the chain from block 5 on */
        cr_assert_eq(kv_spill_invalidate(s, (uint32_t)slots[i]), 0);
    cr_assert_eq(kv_spill_invalidate(s, (uint32_t)slots[4]), -EINVAL, "already erasing");
    cr_assert_eq(kv_spill_read(s, (uint32_t)slots[5], NULL, &e->l, e->pages, th_cookie(0)), -EINVAL,
                 "an invalidated slot is not readable");
    kv_spill_drain(s, th_done, &e->rec);
    cr_assert_eq(e->rec.invalidates, 6);
    cr_assert_eq(e->rec.inval_err, 0);
    kv_spill_close(s);

    s = th_open(e->path, sync, 64, 4);
    cr_assert_eq(kv_spill_scan(s, scan_cb, &a), 4);
    for (int i = 0; i < a.n; i++)
        cr_assert(th_seed(a.m[i].hash) <= 4, "evicted block %d came back",
                  (int)th_seed(a.m[i].hash));
    kv_spill_close(s);
    env_free(e);
}

BOTH(store_fills_up)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 8, 4);
    struct kv_spill_meta m = th_meta(&e->l, 99);
    struct kv_spill_stats st;
    int32_t slots[8];

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 8, slots);
    uint8_t *p99 = e->pages + 2 * e->pb;
    th_fill(p99, e->pb, 99);
    cr_assert_eq(kv_spill_write(s, &m, p99, th_cookie(99)), -ENOSPC);
    kv_spill_stats(s, &st);
    cr_assert_eq(st.dropped_full, 1);
    cr_assert_eq(st.slots_used, 8);
    /* still serving: restores work, and a slot freed by invalidation is reused */
    cr_assert_eq(restore(s, e, (uint32_t)slots[3], 4, 0), 0);
    assert_page(e, 0, 4);
    cr_assert_eq(kv_spill_invalidate(s, (uint32_t)slots[3]), 0);
    kv_spill_drain(s, th_done, &e->rec);
    cr_assert_eq(kv_spill_write(s, &m, p99, th_cookie(99)), slots[3]);
    kv_spill_drain(s, th_done, &e->rec);
    cr_assert_eq(e->rec.res[99], 0);
    cr_assert_eq(restore(s, e, (uint32_t)slots[3], 99, 1), 0);
    assert_page(e, 1, 99);
    kv_spill_close(s);
    env_free(e);
}

BOTH(damaged_payload_is_dropped)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 16, 4);
    struct kv_spill_stats st;
    struct scan_acc a = {0};
    int32_t slots[3];
    uint8_t b;

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 3, slots);
    raw_rw(e->path, 0, &b, 1, slot_off(s, (uint32_t)slots[1]) + KV_SPILL_ALIGN + 1000);
    b ^= 0x10;
    raw_rw(e->path, 1, &b, 1, slot_off(s, (uint32_t)slots[1]) + KV_SPILL_ALIGN + 1000);
    cr_assert_eq(restore(s, e, (uint32_t)slots[1], 2, 0), -EBADMSG, "damaged page served");
    cr_assert_eq(restore(s, e, (uint32_t)slots[1], 2, 0), -EINVAL, "dropped slot still readable");
    cr_assert_eq(restore(s, e, (uint32_t)slots[2], 3, 1), 0);
    assert_page(e, 1, 3);
    kv_spill_stats(s, &st);
    cr_assert_eq(st.corrupt, 1);
    cr_assert_eq(st.reads, 1);
    kv_spill_close(s);
    s = th_open(e->path, sync, 16, 4);
    cr_assert_eq(kv_spill_scan(s, scan_cb, &a), 2, "the dropped slot was erased");
    kv_spill_close(s);
    env_free(e);
}

BOTH(wrong_hash_is_not_served)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 16, 4);
    struct kv_layout other = th_layout(KV_FMT_INT8, KV_FMT_INT8);
    int32_t slots[2];

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 2, slots);
    cr_assert_eq(restore(s, e, (uint32_t)slots[0], 77, 0), -EBADMSG);
    cr_assert_eq(kv_spill_read(s, (uint32_t)slots[1], NULL, &other, e->pages, th_cookie(1)), 0);
    kv_spill_drain(s, th_done, &e->rec);
    cr_assert_eq(e->rec.res[1], -EBADMSG, "a page is restored only into its own layout");
    kv_spill_close(s);
    env_free(e);
}

BOTH(damaged_header_at_start)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 16, 4);
    struct kv_spill_stats st;
    struct scan_acc a = {0};
    uint8_t b;
    off_t off;

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 3, NULL);
    off = slot_off(s, 0) + 40; /* inside the namespace name */
    kv_spill_close(s);
    raw_rw(e->path, 0, &b, 1, off);
    b ^= 1;
    raw_rw(e->path, 1, &b, 1, off);
    s = th_open(e->path, sync, 16, 4);
    cr_assert_eq(kv_spill_scan(s, scan_cb, &a), 2);
    kv_spill_stats(s, &st);
    cr_assert_eq(st.scan_corrupt, 1);
    for (int i = 0; i < a.n; i++)
        cr_assert_neq(a.slot[i], 0);
    /* the damaged slot is free again and gets reused */
    spill_seeds(s, e, 50, 1, NULL);
    kv_spill_close(s);
    env_free(e);
}

BOTH(misplaced_write_is_caught)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 16, 4);
    struct kv_spill_stats st;
    struct scan_acc a = {0};
    uint8_t *img;
    size_t n;

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 2, NULL);
    kv_spill_stats(s, &st);
    n = st.slot_bytes;
    img = malloc(n);
    raw_rw(e->path, 0, img, n, slot_off(s, 0));
    cr_assert_eq(kv_spill_slot_decode(img, n, 1, (uint8_t[KV_SPILL_KEY]){0}, 1, NULL, NULL),
                 -EBADMSG);
    raw_rw(e->path, 1, img, n, slot_off(s, 1)); /* slot 0's image lands at slot 1 */
    kv_spill_close(s);
    s = th_open(e->path, sync, 16, 4);
    cr_assert_eq(kv_spill_scan(s, scan_cb, &a), 1);
    cr_assert_eq(a.slot[0], 0);
    kv_spill_stats(s, &st);
    cr_assert_eq(st.scan_corrupt, 1);
    free(img);
    kv_spill_close(s);
    env_free(e);
}

/* A crash in the middle of a spill leaves a mix of the old and new image: never served. */
BOTH(torn_write_never_verifies)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 4, 4);
    struct kv_spill_stats st;
    struct scan_acc a;
    uint8_t *A, *B, *T;
    int32_t slot;
    size_t n, half;

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 1, &slot);
    kv_spill_stats(s, &st);
    n = st.slot_bytes;
    half = KV_SPILL_ALIGN + e->pb / 2;
    A = malloc(n), B = malloc(n), T = malloc(n);
    raw_rw(e->path, 0, A, n, slot_off(s, 0));
    kv_spill_invalidate(s, (uint32_t)slot);
    kv_spill_drain(s, th_done, &e->rec);
    spill_seeds(s, e, 2, 1, &slot);
    cr_assert_eq(slot, 0, "the erased slot is reused");
    raw_rw(e->path, 0, B, n, slot_off(s, 0));
    kv_spill_close(s);

    for (int variant = 0; variant < 2; variant++) {
        /* 0: new header + half the new payload; 1: old header + half the new payload */
        memcpy(T, A, n);
        memcpy(T, B, variant == 0 ? half : 0);
        memcpy(T + KV_SPILL_ALIGN, B + KV_SPILL_ALIGN, half - KV_SPILL_ALIGN);
        raw_rw(e->path, 1, T, n, (off_t)KV_SPILL_ALIGN);
        s = th_open(e->path, sync, 4, 4);
        memset(&a, 0, sizeof a);
        int nv = kv_spill_scan(s, scan_cb, &a);
        cr_assert(nv == 0 || nv == 1);
        if (nv == 1)
            cr_assert_eq(restore(s, e, 0, th_seed(a.m[0].hash), 0), -EBADMSG,
                         "torn slot (variant %d) served", variant);
        kv_spill_close(s);
    }
    free(A), free(B), free(T);
    env_free(e);
}

BOTH(truncated_store_keeps_the_rest)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 16, 4);
    struct scan_acc a = {0};
    struct stat sb;
    off_t cut, full;
    int32_t slots[6];

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 6, slots);
    cut = slot_off(s, 3) + 100;
    kv_spill_close(s);
    cr_assert_eq(stat(e->path, &sb), 0);
    full = sb.st_size;
    cr_assert_eq(truncate(e->path, cut), 0);
    s = th_open(e->path, sync, 16, 4);
    cr_assert_eq(kv_spill_scan(s, scan_cb, &a), 3);
    for (int i = 0; i < a.n; i++) {
        cr_assert(a.slot[i] < 3);
        cr_assert_eq(restore(s, e, a.slot[i], th_seed(a.m[i].hash), i), 0);
        assert_page(e, i, th_seed(a.m[i].hash));
    }
    cr_assert_eq(stat(e->path, &sb), 0);
    cr_assert_eq(sb.st_size, full, "the store regains its size");
    spill_seeds(s, e, 10, 10, NULL);
    kv_spill_close(s);

    /* truncated to less than a superblock: a fresh store */
    cr_assert_eq(truncate(e->path, 100), 0);
    s = th_open(e->path, sync, 16, 4);
    cr_assert_eq(kv_spill_scan(s, NULL, NULL), 0);
    kv_spill_close(s);
    env_free(e);
}

BOTH(other_geometry_starts_fresh)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 16, 4);
    struct kv_spill_cfg cfg = {
        .path = e->path, .bytes = 1 << 20, .max_page_bytes = 8192, .force_sync = sync};
    char why[256];

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 4, NULL);
    kv_spill_close(s);
    cr_assert_eq(kv_spill_open(&s, &cfg, why, sizeof why), 0, "%s", why);
    cr_assert_eq(kv_spill_scan(s, NULL, NULL), 0, "slots of another geometry never verify");
    kv_spill_close(s);
    env_free(e);
}

BOTH(queue_depth_and_eventfd)
{
    struct env *e = env_new();
    struct kv_spill *s = th_open(e->path, sync, 16, 2);
    struct kv_spill_meta m = th_meta(&e->l, 1);
    struct pollfd pfd = {.fd = kv_spill_event_fd(s), .events = POLLIN};
    int got = 0;

    kv_spill_scan(s, NULL, NULL);
    th_fill(e->pages, e->pb, 1);
    cr_assert_geq(kv_spill_write(s, &m, e->pages, th_cookie(1)), 0);
    cr_assert_geq(kv_spill_write(s, &m, e->pages, th_cookie(2)), 0);
    cr_assert_eq(kv_spill_write(s, &m, e->pages, th_cookie(3)), -EBUSY);
    cr_assert_eq(kv_spill_submit(s), 0);
    while (got < 2) {
        cr_assert_eq(poll(&pfd, 1, 10000), 1, "event fd never became readable");
        int n = kv_spill_reap(s, th_done, &e->rec);
        cr_assert_geq(n, 0);
        got += n;
    }
    cr_assert_eq(e->rec.res[1], 0);
    cr_assert_eq(e->rec.res[2], 0);
    cr_assert_eq(kv_spill_reap(s, th_done, &e->rec), 0);
    cr_assert_eq(poll(&pfd, 1, 0), 0, "event fd drained");
    kv_spill_close(s);
    env_free(e);
}

Test(spill_basic, bad_arguments)
{
    struct env *e = env_new();
    struct kv_spill_cfg cfg = {.path = e->path, .bytes = 1 << 20, .max_page_bytes = 0};
    struct kv_spill *s = (struct kv_spill *)1;
    struct kv_spill_meta m;
    char why[128];

    cr_assert_eq(kv_spill_open(&s, &cfg, why, sizeof why), -EINVAL);
    cr_assert_null(s);
    cfg.max_page_bytes = TH_MAX_PAGE;
    cfg.bytes = 8192;
    cr_assert_eq(kv_spill_open(&s, &cfg, why, sizeof why), -ENOSPC);
    s = th_open(e->path, 0, 4, 4);
    m = th_meta(&e->l, 1);
    cr_assert_eq(kv_spill_write(s, &m, e->pages, NULL), -EINVAL, "write before scan");
    cr_assert_eq(kv_spill_scan(s, NULL, NULL), 0);
    cr_assert_eq(kv_spill_scan(s, NULL, NULL), -EALREADY);
    m.layout.head_dim = 0;
    cr_assert_eq(kv_spill_write(s, &m, e->pages, NULL), -EINVAL);
    m = th_meta(&e->l, 1);
    m.ntok = 0;
    cr_assert_eq(kv_spill_write(s, &m, e->pages, NULL), -EINVAL);
    m = th_meta(&e->l, 1);
    m.layout.n_layers = 8; /* 18 KiB page > max_page_bytes */
    cr_assert_eq(kv_spill_write(s, &m, e->pages, NULL), -E2BIG);
    cr_assert_eq(kv_spill_read(s, 3, NULL, &e->l, e->pages, NULL), -EINVAL, "free slot");
    cr_assert_eq(kv_spill_read(s, 1000, NULL, &e->l, e->pages, NULL), -EINVAL);
    cr_assert_eq(kv_spill_invalidate(s, 1000), -EINVAL);
    kv_spill_close(s);
    env_free(e);
}

/* The fuzz seeds are slot images built independently (Python hashlib.blake2b, struct.pack) from
 * the format described in spill.h: the C decoder must accept them, so the documented format and
 * the code agree. */
Test(spill_basic, fuzz_seeds_match_documented_format)
{
    static const char *names[] = {"fp8_full", "demoted_header", "mixed_resign"};
    const char *src = getenv("KVD_SRC_DIR");
    uint8_t key[KV_SPILL_KEY];
    char path[PATH_MAX];

    cr_assert_not_null(src, "KVD_SRC_DIR not set");
    memset(key, 0x42, sizeof key);
    for (size_t i = 0; i < 3; i++) {
        static uint8_t buf[65536];
        struct kv_spill_meta m;
        uint32_t slot, pay;
        snprintf(path, sizeof path, "%s/tests/fuzz/seeds/fuzz_spill_slot/%s", src, names[i]);
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "%s", path);
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        cr_assert_gt(n, 5 + KV_SPILL_ALIGN);
        memcpy(&slot, buf, 4);
        cr_assert_eq(kv_spill_slot_decode(buf + 5, n - 5, slot, key, buf[4] & 1, &m, &pay), 0, "%s",
                     names[i]);
        cr_assert_str_eq(m.ns, "fuzz-ns");
        cr_assert_eq(m.ntok, 16);
        cr_assert_eq(kv_spill_slot_decode(buf + 5, n - 5, slot + 1, key, 0, &m, &pay), -EBADMSG);
        buf[5 + KV_SPILL_ALIGN + 7] ^= 1; /* one payload bit */
        cr_assert_eq(kv_spill_slot_decode(buf + 5, n - 5, slot, key, 1, &m, &pay), -EBADMSG);
    }
}

/* An env whose pages take the direct restore path: FP8, a page length that is a multiple of
 * KV_SPILL_ALIGN, destinations aligned to it. */
static struct env *env_new_aligned(void)
{
    struct env *e = env_new();

    free(e->pages);
    e->pages = NULL;
    for (unsigned t = 1; t <= 64 && !e->pages; t++) {
        e->l = th_layout(KV_FMT_FP8_E4M3, KV_FMT_FP8_E4M3);
        e->l.page_tokens = (uint16_t)t;
        e->pb = kv_page_bytes(&e->l);
        if (kv_layout_check(&e->l) == 0 && e->pb % KV_SPILL_ALIGN == 0 && e->pb <= TH_MAX_PAGE)
            e->pages = aligned_alloc(KV_SPILL_ALIGN, 256 * e->pb);
    }
    cr_assert_not_null(e->pages, "no FP8 test layout with a 4 KiB-multiple page");
    return e;
}

BOTH(direct_restore_into_aligned_page)
{
    struct env *e = env_new_aligned();
    struct kv_spill *s = th_open(e->path, sync, 16, 4);
    struct kv_spill_meta m = th_meta(&e->l, 3);
    struct kv_spill_stats st;
    uint8_t *odd = malloc(e->pb + 64);
    int32_t slots[3];

    cr_assert_not_null(odd);
    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 3, slots);
    memset(e->pages, 0xee, 2 * e->pb);
    cr_assert_eq(restore(s, e, (uint32_t)slots[0], 1, 0), 0);
    assert_page(e, 0, 1);
    cr_assert_eq(restore(s, e, (uint32_t)slots[1], 2, 1), 0);
    assert_page(e, 1, 2);
    kv_spill_stats(s, &st);
    cr_assert_eq(st.reads_direct, 2, "aligned pages skip the staging buffer");
    /* a misaligned destination still restores, through the staging buffer */
    cr_assert_eq(kv_spill_read(s, (uint32_t)slots[2], m.hash, &e->l, odd + 64, th_cookie(2)), 0);
    cr_assert(kv_spill_drain(s, th_done, &e->rec) >= 0);
    cr_assert_eq(e->rec.res[2], 0);
    th_fill(e->pages, e->pb, 3);
    cr_assert(memcmp(odd + 64, e->pages, e->pb) == 0, "staged restore differs");
    kv_spill_stats(s, &st);
    cr_assert_eq(st.reads, 3);
    cr_assert_eq(st.reads_direct, 2);
    free(odd);
    kv_spill_close(s);
    env_free(e);
}

BOTH(direct_damaged_payload_is_dropped)
{
    struct env *e = env_new_aligned();
    struct kv_spill *s = th_open(e->path, sync, 16, 4);
    struct kv_spill_stats st;
    struct scan_acc a = {0};
    int32_t slots[3];
    uint8_t b;
    off_t off;

    kv_spill_scan(s, NULL, NULL);
    spill_seeds(s, e, 1, 3, slots);
    off = slot_off(s, (uint32_t)slots[1]) + KV_SPILL_ALIGN + (off_t)e->pb - 1; /* last byte */
    raw_rw(e->path, 0, &b, 1, off);
    b ^= 0x01;
    raw_rw(e->path, 1, &b, 1, off);
    cr_assert_eq(restore(s, e, (uint32_t)slots[1], 2, 0), -EBADMSG, "damaged page served");
    cr_assert_eq(restore(s, e, (uint32_t)slots[1], 2, 0), -EINVAL, "dropped slot still readable");
    kv_spill_stats(s, &st);
    cr_assert_eq(st.corrupt, 1);
    cr_assert_eq(st.reads_direct, 1, "the damaged read took the direct path");
    cr_assert_eq(restore(s, e, (uint32_t)slots[2], 3, 1), 0);
    assert_page(e, 1, 3);
    kv_spill_stats(s, &st);
    cr_assert_eq(st.reads, 1);
    cr_assert_eq(st.reads_direct, 2);
    kv_spill_close(s);
    s = th_open(e->path, sync, 16, 4);
    cr_assert_eq(kv_spill_scan(s, scan_cb, &a), 2, "the dropped slot was erased");
    kv_spill_close(s);
    env_free(e);
}
