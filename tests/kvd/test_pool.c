/* Unit tests for the page pool: arena carving, allocation, commit/dedup, leaves-first eviction,
 * the prefix index, and allocation-failure injection through a whole operation. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "mem.h"
#include "pool.h"

static const struct kv_layout L16 = {
    .n_layers = 2,
    .n_kv_heads = 2,
    .head_dim = 64,
    .page_tokens = 16,
    .k_fmt = KV_FMT_FP8_E4M3,
    .v_fmt = KV_FMT_FP8_E4M3,
};
static const struct kv_layout L32 = {
    .n_layers = 4,
    .n_kv_heads = 2,
    .head_dim = 64,
    .page_tokens = 32,
    .k_fmt = KV_FMT_F16,
    .v_fmt = KV_FMT_F16,
};

static void hash_of(uint8_t h[16], unsigned i)
{
    memset(h, 0, 16);
    memcpy(h, &i, sizeof(i));
    h[15] = 0xa5; /* never the all-zero "no parent" hash */
}

static void check_ok(struct kv_pool *p)
{
    char why[256] = "";
    cr_assert_eq(kv_pool_check(p, why, sizeof(why)), 0, "pool check: %s", why);
}

/* commit a chain of n pages in ns; returns them pinned by client 1 */
static void commit_chain(struct kv_pool *p, struct kv_ns *ns, unsigned base, unsigned n,
                         struct kv_page **out)
{
    uint8_t prev[16] = {0};
    for (unsigned i = 0; i < n; i++) {
        struct kv_page *pg, *w;
        uint8_t h[16];
        cr_assert_eq(kv_pool_alloc(p, ns, 1, 1, &pg), 0);
        hash_of(h, base + i);
        cr_assert_eq(kv_pool_commit(p, pg, h, prev, ns->layout.page_tokens, &w), 0);
        cr_assert_eq(w, pg);
        memcpy(prev, h, 16);
        out[i] = pg;
    }
}

Test(pool, carving_gives_chunks_to_namespaces_on_demand)
{
    struct kv_pool p;
    struct kv_ns *a, *b, *again;
    cr_assert_eq(kv_pool_init(&p, 8 << 20, 1 << 20, &pol_lru_ops), 0);
    cr_assert_eq(p.nchunks, 8);
    cr_assert_eq(kv_pool_ns_get(&p, "a", &L16, &a), 0);
    cr_assert_eq(kv_pool_ns_get(&p, "b", &L32, &b), 0);
    cr_assert_eq(kv_pool_ns_get(&p, "a", &L16, &again), 0);
    cr_assert_eq(again, a);
    cr_assert_eq(kv_pool_ns_get(&p, "a", &L32, &again), -EEXIST, "a different layout is refused");
    cr_assert_eq(p.nfree_chunks, 8, "no chunk is taken before a page is needed");
    cr_assert_eq(a->page_bytes, kv_page_bytes(&L16));
    cr_assert_eq(a->pages_per_chunk, (1 << 20) / kv_page_bytes(&L16));

    struct kv_page *pa, *pb;
    cr_assert_eq(kv_pool_alloc(&p, a, 1, 1, &pa), 0);
    cr_assert_eq(kv_pool_alloc(&p, b, 1, 1, &pb), 0);
    cr_assert_eq(p.nfree_chunks, 6);
    cr_assert_neq(pa->chunk, pb->chunk,
                  "namespaces with different page sizes use their own chunks");
    /* offsets lie inside the arena and inside their chunk */
    uint64_t oa = kv_pool_page_offset(&p, pa), ob = kv_pool_page_offset(&p, pb);
    cr_assert_lt(oa + a->page_bytes, (uint64_t)8 << 20);
    cr_assert_eq(oa / (1 << 20), pa->chunk->idx);
    cr_assert_eq(ob / (1 << 20), pb->chunk->idx);
    cr_assert_eq(kv_pool_page_by_id(&p, pa->id), pa);
    cr_assert_null(kv_pool_page_by_id(&p, 0xffff0000u), "ids outside the arena name nothing");
    check_ok(&p);
    kv_pool_unref(&p, pa);
    kv_pool_unref(&p, pb);
    check_ok(&p);
    kv_pool_free(&p);
}

Test(pool, wholly_free_chunk_moves_to_another_namespace)
{
    struct kv_pool p;
    struct kv_ns *a, *b;
    struct kv_page *pg[64];
    cr_assert_eq(kv_pool_init(&p, 1 << 20, 1 << 20, &pol_lru_ops), 0); /* one chunk */
    kv_pool_ns_get(&p, "a", &L16, &a);
    kv_pool_ns_get(&p, "b", &L32, &b);
    cr_assert_eq(kv_pool_alloc(&p, a, 1, 1, pg), 0);
    cr_assert_eq(kv_pool_alloc(&p, b, 1, 1, pg + 1), -ENOSPC, "a's chunk has a pinned page");
    kv_pool_unref(&p, pg[0]); /* uncommitted: freed, chunk now wholly free */
    cr_assert_eq(kv_pool_alloc(&p, b, 1, 1, pg + 1), 0);
    cr_assert_eq(a->nchunks, 0);
    cr_assert_eq(b->nchunks, 1);
    check_ok(&p);
    kv_pool_free(&p);
}

Test(pool, alloc_is_all_or_nothing_and_enospc_when_pinned)
{
    struct kv_pool p;
    struct kv_ns *a;
    cr_assert_eq(kv_pool_init(&p, 1 << 20, 1 << 20, &pol_lru_ops), 0);
    kv_pool_ns_get(&p, "a", &L16, &a);
    uint32_t cap = a->pages_per_chunk;
    struct kv_page **pg = calloc(cap + 1, sizeof(*pg));
    cr_assert_eq(kv_pool_alloc(&p, a, 1, cap + 1, pg), -ENOSPC);
    cr_assert_eq(a->nwriting, 0, "nothing handed out on failure");
    cr_assert_eq(kv_pool_alloc(&p, a, 1, cap, pg), 0);
    struct kv_page *extra;
    cr_assert_eq(kv_pool_alloc(&p, a, 2, 1, &extra), -ENOSPC, "every page pinned: ENOSPC");
    check_ok(&p);
    for (uint32_t i = 0; i < cap; i++)
        kv_pool_unref(&p, pg[i]);
    check_ok(&p);
    free(pg);
    kv_pool_free(&p);
}

Test(pool, commit_indexes_and_dedups)
{
    struct kv_pool p;
    struct kv_ns *a;
    struct kv_page *x, *y, *w;
    uint8_t h[16], zero[16] = {0};
    kv_pool_init(&p, 1 << 20, 1 << 20, &pol_lru_ops);
    kv_pool_ns_get(&p, "a", &L16, &a);
    hash_of(h, 7);
    kv_pool_alloc(&p, a, 1, 1, &x);
    kv_pool_alloc(&p, a, 2, 1, &y);
    cr_assert_eq(kv_pool_set_pending(&p, x, h), 0);
    cr_assert_eq(kv_pool_set_pending(&p, y, h), -EEXIST, "one pending writer per hash");
    cr_assert_eq(kv_pool_page_of(kv_pool_find(&p, a->id, h)), x);
    cr_assert_eq(x->state, KV_PAGE_WRITING, "pending pages are WRITING in the index");
    cr_assert_eq(kv_pool_commit(&p, x, h, zero, 16, &w), 0);
    cr_assert_eq(w, x);
    cr_assert_eq(x->state, KV_PAGE_COMMITTED);
    cr_assert_eq(kv_pool_commit(&p, y, h, zero, 16, &w), 0);
    cr_assert_eq(w, x, "the second commit of a hash gets the first page");
    cr_assert_eq(y->state, KV_PAGE_FREE, "the loser is freed");
    cr_assert_eq(x->refs, 2, "the winner now holds both writers' leases");
    cr_assert_eq(kv_pool_commit(&p, x, h, zero, 16, &w), -EINVAL, "commit twice");
    check_ok(&p);
    kv_pool_unref(&p, x);
    kv_pool_unref(&p, x);
    check_ok(&p);
    kv_pool_free(&p);
}

Test(pool, commit_rejects_bad_token_counts_and_self_parent)
{
    struct kv_pool p;
    struct kv_ns *a;
    struct kv_page *x, *w;
    uint8_t h[16];
    kv_pool_init(&p, 1 << 20, 1 << 20, &pol_lru_ops);
    kv_pool_ns_get(&p, "a", &L16, &a);
    hash_of(h, 1);
    kv_pool_alloc(&p, a, 1, 1, &x);
    cr_assert_eq(kv_pool_commit(&p, x, h, (uint8_t[16]){0}, 0, &w), -EINVAL);
    cr_assert_eq(kv_pool_commit(&p, x, h, (uint8_t[16]){0}, 17, &w), -EINVAL);
    cr_assert_eq(kv_pool_commit(&p, x, h, h, 16, &w), -EINVAL);
    cr_assert_eq(x->state, KV_PAGE_WRITING, "a refused commit changes nothing");
    check_ok(&p);
    kv_pool_free(&p);
}

Test(pool, eviction_takes_leaves_first_and_never_pinned_pages)
{
    struct kv_pool p;
    struct kv_ns *a;
    kv_pool_init(&p, 1 << 20, 1 << 20, &pol_lru_ops);
    kv_pool_ns_get(&p, "a", &L16, &a);
    uint32_t cap = a->pages_per_chunk;
    cr_assert_geq(cap, 8);
    struct kv_page *chain[4];
    commit_chain(&p, a, 100, 4, chain);
    for (int i = 0; i < 4; i++)
        kv_pool_unref(&p, chain[i]);
    check_ok(&p);
    cr_assert_eq(chain[0]->n_children, 1);
    cr_assert(!chain[0]->pol.linked, "a page with a child is not evictable");
    cr_assert(chain[3]->pol.linked, "the unpinned leaf is");
    /* evict twice: the tail goes first, then its parent became the leaf */
    cr_assert_eq(kv_pool_evict_one(&p, a), 0);
    cr_assert_eq(chain[3]->state, KV_PAGE_FREE);
    cr_assert_eq(kv_pool_evict_one(&p, a), 0);
    cr_assert_eq(chain[2]->state, KV_PAGE_FREE);
    cr_assert_eq(chain[1]->state, KV_PAGE_COMMITTED, "the chain never loses its middle");
    /* pin the remaining leaf: nothing evictable */
    kv_pool_ref(&p, chain[1]);
    cr_assert_eq(kv_pool_evict_one(&p, a), -ENOENT);
    kv_pool_unref(&p, chain[1]);
    cr_assert_eq(p.evictions, 2);
    check_ok(&p);
    kv_pool_free(&p);
}

Test(pool, full_pool_evicts_lru_to_make_room)
{
    struct kv_pool p;
    struct kv_ns *a;
    kv_pool_init(&p, 1 << 20, 1 << 20, &pol_lru_ops);
    kv_pool_ns_get(&p, "a", &L16, &a);
    uint32_t cap = a->pages_per_chunk;
    struct kv_page **pg = calloc(cap, sizeof(*pg));
    /* cap independent one-page chains, all unpinned */
    for (uint32_t i = 0; i < cap; i++) {
        commit_chain(&p, a, 1000 + i, 1, &pg[i]);
        kv_pool_unref(&p, pg[i]);
    }
    kv_pool_touch(&p, pg[0]); /* page 0 becomes the most recently used */
    struct kv_page *fresh;
    cr_assert_eq(kv_pool_alloc(&p, a, 2, 1, &fresh), 0, "a full pool evicts");
    cr_assert_eq(fresh, pg[1], "the least recently used page (1) was evicted and reused");
    uint8_t h0[16];
    hash_of(h0, 1000);
    cr_assert_not_null(kv_pool_find(&p, a->id, h0), "the touched page stayed");
    check_ok(&p);
    free(pg);
    kv_pool_free(&p);
}

Test(pool, index_survives_growth)
{
    struct kv_pool p;
    struct kv_ns *a;
    kv_pool_init(&p, 8 << 20, 8 << 20, &pol_lru_ops);
    struct kv_layout tiny = L16;
    tiny.n_layers = 1;
    tiny.n_kv_heads = 1;
    kv_pool_ns_get(&p, "a", &tiny, &a);
    uint32_t n = 3000; /* beyond the initial 1024 buckets */
    cr_assert_geq(a->pages_per_chunk, n);
    for (uint32_t i = 0; i < n; i++) {
        struct kv_page *pg;
        commit_chain(&p, a, 50000 + i, 1, &pg);
    }
    cr_assert_gt(p.nbuckets, 1024);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t h[16];
        hash_of(h, 50000 + i);
        struct kv_page *pg = kv_pool_page_of(kv_pool_find(&p, a->id, h));
        cr_assert_not_null(pg);
        cr_assert_eq(memcmp(pg->in.hash, h, 16), 0);
    }
    uint8_t absent[16];
    hash_of(absent, 7);
    cr_assert_null(kv_pool_find(&p, a->id, absent));
    uint8_t h0[16];
    hash_of(h0, 50000);
    cr_assert_null(kv_pool_find(&p, a->id + 1, h0), "keys are per namespace");
    check_ok(&p);
    kv_pool_free(&p);
}

/* SQLite-style: fail the Nth allocation, N = 0, 1, 2, ... until the operation succeeds; every
 * failure must be a clean -ENOMEM with the pool consistent and unchanged. */
Test(pool, allocation_failures_leave_the_pool_consistent)
{
    for (long n = 0;; n++) {
        struct kv_pool p;
        struct kv_ns *a = NULL, *b = NULL;
        struct kv_page *pg[4];
        cr_assert_eq(kv_pool_init(&p, 4 << 20, 1 << 20, &pol_lru_ops), 0);
        kv_mem_fail_after(n);
        int step = 0, rc = kv_pool_ns_get(&p, "a", &L16, &a);
        if (rc == 0 && ++step)
            rc = kv_pool_alloc(&p, a, 1, 4, pg);
        if (rc == 0 && ++step)
            rc = kv_pool_ns_get(&p, "b", &L32, &b);
        kv_mem_fail_after(-1);
        check_ok(&p);
        if (rc == 0) {
            cr_assert_gt(n, 0, "at least one allocation was exercised");
            kv_pool_free(&p);
            break;
        }
        cr_assert_eq(rc, -ENOMEM, "n=%ld: %d", n, rc);
        if (step == 1)
            cr_assert_eq(a->nwriting, 0, "n=%ld: a failed alloc hands out nothing", n);
        if (step == 2)
            cr_assert_eq(p.n_ns, 1, "n=%ld: a failed namespace creation leaves no namespace", n);
        kv_pool_free(&p);
        cr_assert_lt(n, 100);
    }
}

/* A page that came back lossy from the spill tier is replaced by an exact commit of its hash when
 * nobody holds it; while it is pinned, the commit dedups to it as usual. */
Test(pool, exact_commit_replaces_a_demoted_page)
{
    struct kv_pool p;
    struct kv_ns *a;
    struct kv_page *chain[3], *x, *w;
    uint8_t h1[16], h0[16];
    kv_pool_init(&p, 1 << 20, 1 << 20, &pol_lru_ops);
    kv_pool_ns_get(&p, "a", &L16, &a);
    commit_chain(&p, a, 300, 3, chain); /* 300 <- 301 <- 302 */
    for (int i = 0; i < 3; i++)
        kv_pool_unref(&p, chain[i]);
    chain[1]->flags |= KVP_PAGE_DEMOTED; /* as the tier marks a restored FP8 copy */
    hash_of(h0, 300);
    hash_of(h1, 301);

    kv_pool_ref(&p, chain[1]); /* pinned: the commit dedups to the demoted page */
    kv_pool_alloc(&p, a, 2, 1, &x);
    cr_assert_eq(kv_pool_commit(&p, x, h1, h0, 16, &w), 0);
    cr_assert_eq(w, chain[1]);
    kv_pool_unref(&p, w);
    kv_pool_unref(&p, chain[1]);
    check_ok(&p);

    kv_pool_alloc(&p, a, 2, 1, &x); /* unpinned now: the exact copy takes its place */
    cr_assert_eq(kv_pool_commit(&p, x, h1, h0, 16, &w), 0);
    cr_assert_eq(w, x);
    cr_assert_eq(kv_pool_page_of(kv_pool_find(&p, a->id, h1)), x);
    cr_assert_eq(chain[1]->state, KV_PAGE_FREE);
    cr_assert_eq(chain[2]->parent, x, "the child moved to the exact page");
    cr_assert_eq(x->n_children, 1);
    cr_assert_eq(x->parent, chain[0]);
    cr_assert(!(x->flags & KVP_PAGE_DEMOTED));
    kv_pool_unref(&p, x);
    check_ok(&p);
    kv_pool_free(&p);
}
