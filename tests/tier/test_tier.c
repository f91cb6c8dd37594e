/*
 * test_tier.c - the spill tier inside a real kvd: evicted pages go to disk through the spill store
 * and come back byte-exact on a lookup; a restarted kvd serves what was spilled before; a damaged
 * slot is dropped and counted, never served; a truncated store still starts; kill -9 in the middle
 * of heavy spilling loses only counted pages.
 *
 * The arena is one 4 MiB chunk of the tests' small FP8 layout (481 pages), so writing more than
 * that evicts. FP8 pages are spilled as they are, so restored bytes must equal what was written.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvt.h"

#define CHAIN 200

static struct kvt_kvd kvd;
static const char *const args[] = {"--arena-size",   "4M",    "--chunk-size",       "4M", "--set",
                                   "spill_size=64M", "--set", "spill_page_max=64K", NULL};

static void setup(void)
{
    cr_assert_eq(kvt_kvd_start(&kvd, args), 0, "kvd did not start");
}

static void teardown(void)
{
    if (getenv("KVT_VERBOSE"))
        kvt_kvd_dump_log(&kvd);
    kvt_kvd_cleanup(&kvd);
}

static struct kvc *open_client(void)
{
    struct kvc *c = NULL;
    int rc = kvt_open(&kvd, "tier", &c);
    cr_assert_eq(rc, 0, "kvc_open: %s", kvc_strerror(rc));
    return c;
}

/* Write a chain of n pages for prompt `seed`, commit it, release it. */
static void write_chain(struct kvc *c, unsigned seed, uint32_t n, struct kvc_hash *chain)
{
    struct kvc_info info;
    kvc_get_info(c, &info);
    uint32_t pt = info.layout.page_tokens;
    int32_t *tok = calloc((size_t)n * pt, sizeof(*tok));
    struct kvc_page *pg = calloc(n, sizeof(*pg)), *got = calloc(n, sizeof(*got));
    struct kvc_commit *e = calloc(n, sizeof(*e));
    kvt_tokens(tok, (size_t)n * pt, seed);
    cr_assert_eq(kvc_hash_chain(kvc_get_hasher(c), tok, (size_t)n * pt, NULL, chain, n), (int)n);
    /* in batches, as a worker would, so eviction can make room between them */
    for (uint32_t b = 0; b < n; b += 50) {
        uint32_t k = n - b < 50 ? n - b : 50;
        int rc = kvc_alloc(c, k, chain + b, pg + b);
        cr_assert_eq(rc, 0, "alloc at %u: %s", b, kvc_strerror(rc));
        for (uint32_t i = b; i < b + k; i++) {
            kvt_fill_page(kvc_page_ptr(c, &pg[i]), info.page_bytes, &chain[i]);
            e[i] = (struct kvc_commit){.page_id = pg[i].id, .ntok = (uint16_t)pt, .hash = chain[i]};
            if (i)
                e[i].parent = chain[i - 1];
        }
        cr_assert_eq(kvc_commit(c, e + b, k, got + b), 0);
        cr_assert_eq(kvc_release_pages(c, got + b, k), 0);
    }
    free(tok);
    free(pg);
    free(got);
    free(e);
}

/* Look the chain up (pinned), check every page returned byte for byte, release. */
static uint32_t read_chain(struct kvc *c, const struct kvc_hash *chain, uint32_t n)
{
    struct kvc_info info;
    struct kvc_page *pg = calloc(n, sizeof(*pg));
    uint32_t hit = 0, next = 0;
    kvc_get_info(c, &info);
    int rc = kvc_lookup(c, chain, n, KVC_LOOKUP_PIN, 0, pg, &hit, &next);
    cr_log_info("lookup of %u pages: %u hit, next %u", n, hit, next);
    cr_assert_eq(rc, 0, "lookup: %s", kvc_strerror(rc));
    for (uint32_t i = 0; i < hit; i++) {
        size_t bad = kvt_check_page(kvc_page_ptr(c, &pg[i]), info.page_bytes, &chain[i]);
        cr_assert_eq(bad, 0, "page %u of the chain differs at byte %zu", i, bad - 1);
    }
    if (hit)
        cr_assert_eq(kvc_release_pages(c, pg, hit), 0);
    free(pg);
    return hit;
}

static int spilled_at_least(const struct kvc_stats *s, void *arg)
{
    return s->spill_writes >= *(uint64_t *)arg;
}

static struct kvc_stats stats(struct kvc *c)
{
    struct kvc_stats s;
    cr_assert_eq(kvc_stats(c, &s), 0);
    return s;
}

Test(tier, evicted_pages_come_back_byte_exact, .init = setup, .fini = teardown, .timeout = 60)
{
    struct kvc *c = open_client();
    struct kvc_hash a[CHAIN], b[450];
    write_chain(c, 1, CHAIN, a);
    write_chain(c, 2, 450, b); /* 650 pages > 481: A's tail (leaves first) is evicted */
    struct kvc_stats s = stats(c);
    cr_assert_geq(s.evictions, 650 - 481, "evictions %llu", (unsigned long long)s.evictions);
    uint64_t want = 1;
    cr_assert_eq(kvt_stats_until(c, spilled_at_least, &want, 10000, &s), 0, "nothing spilled");
    /* the whole of A comes back: its head from memory, its tail from disk */
    cr_assert_eq(read_chain(c, a, CHAIN), CHAIN);
    s = stats(c);
    cr_assert_gt(s.spill_restores, 0);
    cr_assert_eq(s.spill_checksum_failures, 0);
    kvc_close(c);
}

Test(tier, restart_serves_what_was_spilled, .init = setup, .fini = teardown, .timeout = 90)
{
    struct kvc *c = open_client();
    struct kvc_hash a[CHAIN], b[481];
    write_chain(c, 3, CHAIN, a);
    write_chain(c, 4, 481, b); /* fills the arena: every page of A goes to disk */
    uint64_t want = CHAIN;
    struct kvc_stats s;
    cr_assert_eq(kvt_stats_until(c, spilled_at_least, &want, 20000, &s), 0,
                 "only %llu pages spilled", (unsigned long long)s.spill_writes);
    kvc_close(c);
    cr_assert_eq(kvt_kvd_stop(&kvd), 0);
    cr_assert_eq(kvt_kvd_restart(&kvd), 0);
    c = open_client();
    cr_assert_eq(read_chain(c, a, CHAIN), CHAIN, "the restarted kvd restores the spilled chain");
    kvc_close(c);
}

/* Find the store file and damage the payload of every slot holding page `victim` of the chain:
 * simplest is to flip bytes in the middle of every written slot after the first few. */
static void damage_store(const char *path, off_t from)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0, "open %s", path);
    struct stat st;
    fstat(fd, &st);
    uint8_t junk[512];
    memset(junk, 0x5a, sizeof(junk));
    for (off_t off = from; off + (off_t)sizeof(junk) < st.st_size; off += 1 << 20)
        cr_assert_eq(pwrite(fd, junk, sizeof(junk), off), (ssize_t)sizeof(junk));
    fsync(fd);
    close(fd);
}

Test(tier, damaged_slot_is_dropped_never_served, .init = setup, .fini = teardown, .timeout = 90)
{
    struct kvc *c = open_client();
    struct kvc_hash a[CHAIN], b[481];
    write_chain(c, 5, CHAIN, a);
    write_chain(c, 6, 481, b);
    uint64_t want = CHAIN;
    struct kvc_stats s;
    cr_assert_eq(kvt_stats_until(c, spilled_at_least, &want, 20000, &s), 0);
    kvc_close(c);
    cr_assert_eq(kvt_kvd_stop(&kvd), 0);
    char path[160];
    snprintf(path, sizeof(path), "%s/kvd.spill", kvd.state_dir);
    damage_store(path, 3 << 20); /* payload bytes of slots a few MiB in */
    cr_assert_eq(kvt_kvd_restart(&kvd), 0);
    c = open_client();
    uint32_t hit = read_chain(c, a, CHAIN); /* every page returned was checked byte for byte */
    s = stats(c);
    cr_assert_lt(hit, CHAIN, "a damaged slot ends the chain");
    cr_assert_gt(s.spill_checksum_failures, 0, "and is counted");
    kvc_close(c);
}

Test(tier, truncated_store_still_starts, .init = setup, .fini = teardown, .timeout = 90)
{
    struct kvc *c = open_client();
    struct kvc_hash a[CHAIN], b[481];
    write_chain(c, 7, CHAIN, a);
    write_chain(c, 8, 481, b);
    uint64_t want = CHAIN;
    struct kvc_stats s;
    cr_assert_eq(kvt_stats_until(c, spilled_at_least, &want, 20000, &s), 0);
    kvc_close(c);
    cr_assert_eq(kvt_kvd_stop(&kvd), 0);
    char path[160];
    snprintf(path, sizeof(path), "%s/kvd.spill", kvd.state_dir);
    cr_assert_eq(truncate(path, 5 << 20), 0);
    cr_assert_eq(kvt_kvd_restart(&kvd), 0, "kvd starts on a truncated store");
    c = open_client();
    uint32_t hit = read_chain(c, a, CHAIN); /* what is served verifies */
    cr_assert_lt(hit, CHAIN);
    /* and it still spills and serves new work */
    struct kvc_hash d[100];
    write_chain(c, 9, 100, d);
    cr_assert_eq(read_chain(c, d, 100), 100);
    kvc_close(c);
}

Test(tier, kill9_during_spilling_loses_only_counted_pages, .init = setup, .fini = teardown,
     .timeout = 120)
{
    struct kvc *c = open_client();
    struct kvc_hash a[CHAIN], b[481];
    write_chain(c, 10, CHAIN, a);
    write_chain(c, 11, 481, b); /* heavy spilling under way */
    kvt_kvd_kill(&kvd);         /* no drain, no clean close */
    kvc_close(c);
    cr_assert_eq(kvt_kvd_restart(&kvd), 0);
    c = open_client();
    /* whatever prefix of A survived is served byte-exact (read_chain checks every page) */
    uint32_t hit = read_chain(c, a, CHAIN);
    cr_log_info("after kill -9: %u of %u pages of the chain served", hit, CHAIN);
    kvc_close(c);
}

Test(tier, full_store_drops_victims_and_keeps_serving, .fini = teardown, .timeout = 60)
{
    static const char *const small[] = {
        "--arena-size",  "4M",    "--chunk-size",       "4M", "--set",
        "spill_size=1M", "--set", "spill_page_max=64K", NULL};
    cr_assert_eq(kvt_kvd_start(&kvd, small), 0);
    struct kvc *c = open_client();
    struct kvc_hash a[CHAIN], b[450];
    write_chain(c, 12, CHAIN, a);
    write_chain(c, 13, 450, b); /* 169 victims, a store of about 14 slots */
    struct kvc_stats s = stats(c);
    cr_assert_geq(s.evictions, 169);
    cr_assert_gt(s.spill_dropped, 100, "victims beyond the store are dropped and counted (%llu)",
                 (unsigned long long)s.spill_dropped);
    cr_assert_eq(read_chain(c, b, 450), 450, "and kvd keeps serving");
    kvc_close(c);
}

Test(tier, clean_stop_writes_resident_pages_for_a_warm_start, .init = setup, .fini = teardown,
     .timeout = 60)
{
    struct kvc *c = open_client();
    struct kvc_hash a[100];
    write_chain(c, 14, 100, a); /* fits in memory: nothing evicted, nothing spilled */
    struct kvc_stats s = stats(c);
    cr_assert_eq(s.spill_writes, 0);
    kvc_close(c);
    cr_assert_eq(kvt_kvd_stop(&kvd), 0); /* SIGTERM: resident pages go to the store */
    cr_assert_eq(kvt_kvd_restart(&kvd), 0);
    c = open_client();
    cr_assert_eq(read_chain(c, a, 100), 100, "the next kvd starts warm");
    s = stats(c);
    cr_assert_eq(s.spill_restores, 100);
    kvc_close(c);
}

Test(tier, no_flush_when_spill_on_stop_is_off, .fini = teardown, .timeout = 60)
{
    static const char *const off[] = {"--arena-size",
                                      "4M",
                                      "--chunk-size",
                                      "4M",
                                      "--set",
                                      "spill_size=64M",
                                      "--set",
                                      "spill_page_max=64K",
                                      "--set",
                                      "spill_on_stop=false",
                                      NULL};
    cr_assert_eq(kvt_kvd_start(&kvd, off), 0);
    struct kvc *c = open_client();
    struct kvc_hash a[50];
    write_chain(c, 15, 50, a);
    kvc_close(c);
    cr_assert_eq(kvt_kvd_stop(&kvd), 0);
    cr_assert_eq(kvt_kvd_restart(&kvd), 0);
    c = open_client();
    cr_assert_eq(read_chain(c, a, 50), 0, "nothing was kept");
    kvc_close(c);
}

/* F16 pages go to disk as FP8 (a lossy demotion) and come back converted to F16, flagged DEMOTED
 * and within FP8's error; an exact commit of the same hash then replaces the demoted copy. */
#include "kv_quant.h"

static void f16_page(const struct kvc_layout *l, const struct kvc_hash *h, void *page, float *k)
{
    size_t n = (size_t)l->n_layers * l->page_tokens * l->n_kv_heads * l->head_dim;
    uint64_t seed;
    memcpy(&seed, h->b, sizeof(seed));
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        k[i] = (float)((int64_t)(seed >> 40) - (1 << 23)) / (float)(1 << 23); /* [-1, 1) */
    }
    ptrdiff_t hd = l->head_dim, tok = (ptrdiff_t)l->n_kv_heads * hd;
    struct kv_src s = {.base = k,
                       .dtype = KV_DT_F32,
                       .layer_stride = l->page_tokens * tok,
                       .tok_stride = tok,
                       .head_stride = hd};
    cr_assert_eq(kv_quant_page((const struct kv_layout *)l, page, &s, &s, l->page_tokens), 0);
}

Test(tier, wide_pages_come_back_demoted_then_exact_commit_replaces, .fini = teardown, .timeout = 60)
{
    cr_assert_eq(kvt_kvd_start(&kvd, args), 0);
    struct kvc_opts o = KVC_OPTS_INIT;
    struct kvc *c;
    o.run_dir = kvd.run_dir;
    o.ns = "tier-f16";
    o.layout = kvt_layout();
    o.layout.k_fmt = o.layout.v_fmt = KVC_FMT_F16;
    cr_assert_eq(kvc_open(&o, &c), 0);
    const struct kvc_layout *l = &o.layout;
    size_t nel = (size_t)l->n_layers * l->page_tokens * l->n_kv_heads * l->head_dim;
    float *orig = malloc(nel * sizeof(float)), *back = malloc(nel * sizeof(float));
    struct kvc_info info;
    kvc_get_info(c, &info);
    /* 16 KiB pages: 256 fit. Chain A (NA pages), then chain B pushes A's tail to disk. */
    enum { NA = 100, NB = 250 };
    static struct kvc_hash chain[NA], other[NB];
    static int32_t tok[NB * 16];
    kvt_tokens(tok, NA * 16, 16);
    kvc_hash_chain(kvc_get_hasher(c), tok, NA * 16, NULL, chain, NA);
    kvt_tokens(tok, NB * 16, 17);
    kvc_hash_chain(kvc_get_hasher(c), tok, NB * 16, NULL, other, NB);
    for (int which = 0; which < 2; which++) {
        struct kvc_hash *h = which ? other : chain;
        for (uint32_t i = 0; i < (which ? NB : NA); i++) {
            struct kvc_page pg, got;
            cr_assert_eq(kvc_alloc(c, 1, &h[i], &pg), 0, "page %u", i);
            f16_page(l, &h[i], kvc_page_ptr(c, &pg), orig);
            struct kvc_commit e = {.page_id = pg.id, .ntok = 16, .hash = h[i]};
            if (i)
                e.parent = h[i - 1];
            cr_assert_eq(kvc_commit(c, &e, 1, &got), 0);
            cr_assert_eq(kvc_release_pages(c, &got, 1), 0);
        }
    }
    static struct kvc_page pages[NA];
    uint32_t hit, next;
    cr_assert_eq(kvc_lookup(c, chain, NA, KVC_LOOKUP_PIN, 0, pages, &hit, &next), 0);
    cr_assert_eq(hit, NA, "all of A comes back");
    struct kvc_page first = pages[NA - 1]; /* A's leaf went to disk first */
    cr_assert(first.flags & KVC_PAGE_DEMOTED, "flagged as demoted");
    /* within FP8 E4M3's error: 3 mantissa bits round to within 2^-4 relative, and the per-token
     * scale maps the token's largest magnitude (<= 1) to 448, so subnormal steps are at most
     * 2^-9 / 448 of it */
    void *scratch = malloc(info.page_bytes);
    f16_page(l, &chain[NA - 1], scratch, orig);
    free(scratch);
    ptrdiff_t hd = l->head_dim, tk = (ptrdiff_t)l->n_kv_heads * hd;
    struct kv_dst dk = {
        .base = back, .layer_stride = l->page_tokens * tk, .tok_stride = tk, .head_stride = hd};
    cr_assert_eq(
        kv_dequant_page((const struct kv_layout *)l, kvc_page_ptr(c, &first), 0, 16, &dk, NULL), 0);
    for (size_t i = 0; i < nel; i++)
        cr_assert_leq(fabsf(back[i] - orig[i]), 0.0625f * fabsf(orig[i]) + 1e-5f,
                      "element %zu: %g vs %g", i, back[i], orig[i]);
    cr_assert_eq(kvc_release_pages(c, pages, NA), 0);

    /* an exact commit of the same hash replaces the demoted copy */
    struct kvc_page pg, got;
    cr_assert_eq(kvc_alloc(c, 1, NULL, &pg), 0);
    f16_page(l, &chain[NA - 1], kvc_page_ptr(c, &pg), orig);
    struct kvc_commit e = {
        .page_id = pg.id, .ntok = 16, .hash = chain[NA - 1], .parent = chain[NA - 2]};
    cr_assert_eq(kvc_commit(c, &e, 1, &got), 0);
    cr_assert_eq(got.id, pg.id, "the exact page won");
    cr_assert(!(got.flags & (KVC_PAGE_DEMOTED | KVC_PAGE_DEDUP)));
    cr_assert_eq(kvc_release_pages(c, &got, 1), 0);
    cr_assert_eq(kvc_lookup(c, chain, NA, 0, 0, pages, &hit, &next), 0);
    cr_assert_eq(hit, NA);
    first = pages[NA - 1];
    cr_assert_eq(first.id, pg.id);
    cr_assert(!(first.flags & KVC_PAGE_DEMOTED));
    free(orig);
    free(back);
    kvc_close(c);
}

/* Operator eviction purges a prefix from memory and disk alike: after a restart (which re-indexes
 * the store, and after a clean stop that writes resident pages to it) the chain stays gone, while
 * another chain in the same store comes back. */
#include "proto.h"

Test(tier, evicted_then_restart_stays_gone, .init = setup, .fini = teardown, .timeout = 90)
{
    struct kvc *c = open_client();
    struct kvc_hash a[CHAIN], b[481], k[60];
    write_chain(c, 20, CHAIN, a);
    write_chain(c, 21, 481, b); /* A goes to disk */
    uint64_t want = CHAIN;
    struct kvc_stats s;
    cr_assert_eq(kvt_stats_until(c, spilled_at_least, &want, 20000, &s), 0);
    write_chain(c, 22, 60, k); /* a chain that must survive */
    struct kvc_info info;
    kvc_get_info(c, &info);
    struct kvp_admin_key key = {.ns_id = info.ns_id};
    memcpy(key.hash, a[0].b, sizeof(key.hash)); /* the whole of A: its first block and all after */
    struct kvp_admin_evict ev;
    size_t len = 0;
    cr_assert_eq(kvc_admin(c, KVP_ADMIN_EVICT, &key, sizeof(key), &ev, sizeof(ev), &len, NULL), 0);
    cr_assert_geq(ev.spill_dropped + ev.evicted, CHAIN, "dropped %u + evicted %u", ev.spill_dropped,
                  ev.evicted);
    cr_assert_eq(read_chain(c, a, CHAIN), 0, "gone at once");
    kvc_close(c);
    cr_assert_eq(kvt_kvd_stop(&kvd), 0);
    cr_assert_eq(kvt_kvd_restart(&kvd), 0);
    c = open_client();
    cr_assert_eq(read_chain(c, a, CHAIN), 0, "and stays gone after a restart");
    cr_assert_eq(read_chain(c, k, 60), 60, "while the other chain comes back");
    kvc_close(c);
}
