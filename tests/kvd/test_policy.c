/*
 * test_policy.c - the eviction policies against brute-force models: random add / remove / touch /
 * score sequences, after each of which victim() must be exactly the entry the model picks (LRU:
 * the oldest use; H2O: the lowest log2(1 + mass) + tick / 2^20, ties by the older use). Then
 * H2O's two promises on a real pool: attended pages outlive unattended ones, and mass ages.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "pool.h"

#define N_ENT 97

/* The model's victim among the linked entries (NULL if none). */
static struct pol_entry *model_victim(const struct pol_ops *ops, struct pol_entry *e, int n)
{
    struct pol_entry *best = NULL;
    double bk = 0;
    for (int i = 0; i < n; i++) {
        if (!e[i].linked)
            continue;
        double k = ops == &pol_h2o_ops ? log2(1.0 + (e[i].score > 0 ? e[i].score : 0)) +
                                             (double)e[i].tick / 1048576.0
                                       : 0.0; /* LRU: the tick alone */
        if (!best || k < bk || (k == bk && e[i].tick < best->tick)) {
            best = &e[i];
            bk = k;
        }
    }
    return best;
}

static void random_ops(const struct pol_ops *ops, unsigned seed)
{
    struct pol *p;
    struct pol_entry e[N_ENT];
    size_t linked = 0;

    memset(e, 0, sizeof(e));
    srand(seed);
    cr_assert_eq(ops->init(&p), 0);
    for (int step = 0; step < 40000; step++) {
        struct pol_entry *x = &e[rand() % N_ENT];
        switch (rand() % 5) {
        case 0:
        case 1:
            linked += !x->linked;
            ops->add(p, x);
            break;
        case 2:
            linked -= x->linked;
            ops->remove(p, x);
            break;
        case 3:
            ops->touch(p, x);
            break;
        default: { /* masses over 6 decades, and some a worker should never send */
            static const double odd[] = {0.0, -1.0, NAN, 1e-9};
            double m = rand() % 8 == 0 ? odd[rand() % 4] : pow(10.0, (rand() % 600) / 100.0 - 3);
            ops->score(p, x, m);
            break;
        }
        }
        cr_assert_eq(ops->count(p), linked, "%s step %d: count", ops->name, step);
        struct pol_entry *want = model_victim(ops, e, N_ENT), *got = ops->victim(p);
        cr_assert_eq(got, want, "%s step %d: victim %td, model %td", ops->name, step,
                     got ? got - e : -1, want ? want - e : -1);
    }
    /* drain through victim(): every linked entry comes out once, in model order */
    while (linked) {
        struct pol_entry *want = model_victim(ops, e, N_ENT), *got = ops->victim(p);
        cr_assert_eq(got, want);
        ops->remove(p, got);
        linked--;
    }
    cr_assert_null(ops->victim(p));
    ops->free(p);
}

Test(policy, lru_matches_its_model)
{
    for (unsigned s = 1; s <= 3; s++)
        random_ops(&pol_lru_ops, s);
}

Test(policy, h2o_matches_its_model)
{
    for (unsigned s = 1; s <= 3; s++)
        random_ops(&pol_h2o_ops, s);
}

Test(policy, names)
{
    cr_assert_eq(pol_find("lru"), &pol_lru_ops);
    cr_assert_eq(pol_find("h2o"), &pol_h2o_ops);
    cr_assert_null(pol_find("H2O"));
    cr_assert_str_eq(pol_names(), "lru,h2o");
}

Test(policy, h2o_mass_ages_since_last_use)
{
    struct pol *p;
    struct pol_entry a = {0}, c = {0};
    cr_assert_eq(pol_h2o_ops.init(&p), 0);
    pol_h2o_ops.add(p, &a);
    pol_h2o_ops.score(p, &a, 1000.0); /* a: a heavy hitter, used once, first */
    pol_h2o_ops.add(p, &c);
    cr_assert_eq(pol_h2o_ops.victim(p), &c, "fresh mass protects a from c, used later");
    /* log2(1001) ~ 9.97 half-lives: once c's last use is 10 * 2^20 uses after a's, recency
     * outweighs a's mass. Until then a stays. */
    for (long i = 0; i < 9L * 1048576; i++)
        pol_h2o_ops.touch(p, &c);
    cr_assert_eq(pol_h2o_ops.victim(p), &c, "9 half-lives later a still outweighs c");
    for (long i = 0; i < 1048576; i++)
        pol_h2o_ops.touch(p, &c);
    cr_assert_eq(pol_h2o_ops.victim(p), &a, "10 half-lives later unused mass has aged away");
    pol_h2o_ops.touch(p, &a); /* a use renews it */
    cr_assert_eq(pol_h2o_ops.victim(p), &c);
    pol_h2o_ops.free(p);
}

static const struct kv_layout L16 = {
    .n_layers = 2,
    .n_kv_heads = 2,
    .head_dim = 64,
    .page_tokens = 16,
    .k_fmt = KV_FMT_FP8_E4M3,
    .v_fmt = KV_FMT_FP8_E4M3,
};

Test(policy, h2o_pool_evicts_unattended_pages_first)
{
    struct kv_pool p;
    struct kv_ns *a;
    char why[256] = "";
    cr_assert_eq(kv_pool_init(&p, 1 << 20, 1 << 20, &pol_h2o_ops), 0);
    cr_assert_eq(kv_pool_ns_get(&p, "a", &L16, &a), 0);
    uint32_t cap = a->pages_per_chunk;
    struct kv_page **pg = calloc(cap, sizeof(*pg));
    float mass[16];
    for (int t = 0; t < 16; t++)
        mass[t] = 0.25f;
    for (uint32_t i = 0; i < cap; i++) { /* cap one-page chains, committed in order */
        uint8_t h[16] = {0}, none[16] = {0};
        memcpy(h, &i, sizeof(i));
        h[15] = 0x5a;
        cr_assert_eq(kv_pool_alloc(&p, a, 1, 1, &pg[i]), 0);
        struct kv_page *w;
        cr_assert_eq(kv_pool_commit(&p, pg[i], h, none, 16, &w), 0);
        if (i < cap / 2) /* the older half is attended (reported while still pinned) */
            cr_assert_eq(kv_pool_add_scores(&p, pg[i], mass, 16), 0);
        kv_pool_unref(&p, pg[i]);
    }
    /* LRU would now evict page 0; H2O evicts the oldest unattended page, cap / 2 */
    struct kv_page *held[4];
    for (uint32_t k = 0; k < 4; k++) { /* held (WRITING) so that each alloc must evict again */
        struct kv_page *fresh;
        cr_assert_eq(kv_pool_alloc(&p, a, 2, 1, &fresh), 0);
        held[k] = fresh;
        uint32_t got = 0;
        while (got < cap && pg[got] != fresh)
            got++;
        cr_assert_eq(got, cap / 2 + k, "evicted page %u, want %u", got, cap / 2 + k);
    }
    for (uint32_t k = 0; k < 4; k++)
        kv_pool_unref(&p, held[k]);
    cr_assert_eq(kv_pool_check(&p, why, sizeof(why)), 0, "%s", why);
    free(pg);
    kv_pool_free(&p);
}
