/*
 * test_client_hash.c - the block-hash chain: the spec (checked against an independent computation
 * with libsodium), determinism, key separation by namespace / layout / salt, the prefix property,
 * chain extension, and argument checks.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "kvclient.h"

#define PT 16

static struct kvc_layout lay(void)
{
    struct kvc_layout l = {.n_layers = 2,
                           .n_kv_heads = 2,
                           .head_dim = 64,
                           .page_tokens = PT,
                           .k_fmt = KVC_FMT_FP8_E4M3,
                           .v_fmt = KVC_FMT_FP8_E4M3};
    return l;
}

static void tokens(int32_t *t, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        t[i] = (int32_t)((seed * 2654435761u) ^ (uint32_t)(i * 40503u)) & 0x1ffff;
}

static void chain(const char *ns, struct kvc_layout l, const char *salt, const int32_t *t, size_t n,
                  struct kvc_hash *out, size_t cap, int expect)
{
    struct kvc_hasher h;
    cr_assert_eq(kvc_hasher_init(&h, ns, &l, salt, salt ? strlen(salt) : 0), 0);
    cr_assert_eq(kvc_hash_chain(&h, t, n, NULL, out, cap), expect);
}

/* The documented construction, written out independently of the library. */
Test(client_hash, matches_spec)
{
    int32_t t[3 * PT];
    struct kvc_hash got[3];
    uint8_t key[32], prev[16] = {0}, want[16];
    uint8_t name[64] = "ns.spec";
    struct kvc_layout l = lay();
    uint8_t lb[12] = {2, 0, 2, 0, 64, 0, PT, 0, KVC_FMT_FP8_E4M3, KVC_FMT_FP8_E4M3, 0, 0};
    crypto_generichash_state st;

    cr_assert_geq(sodium_init(), 0);
    tokens(t, 3 * PT, 7);
    t[5] = -3; /* negative token ids are hashed as their two's-complement bytes */
    chain("ns.spec", l, "tenant-a", t, 3 * PT, got, 3, 3);

    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)"kvd-block-hash-v1", 18);
    crypto_generichash_update(&st, name, 64);
    crypto_generichash_update(&st, lb, 12);
    crypto_generichash_update(&st, (const uint8_t *)"tenant-a", 8);
    crypto_generichash_final(&st, key, 32);
    for (int b = 0; b < 3; b++) {
        uint8_t msg[16 + 4 * PT];
        memcpy(msg, prev, 16);
        for (int i = 0; i < PT; i++) {
            uint32_t v = (uint32_t)t[b * PT + i];
            for (int k = 0; k < 4; k++)
                msg[16 + 4 * i + k] = (uint8_t)(v >> (8 * k));
        }
        crypto_generichash(want, 16, msg, sizeof(msg), key, 32);
        cr_assert_arr_eq(got[b].b, want, 16, "block %d differs from the spec", b);
        memcpy(prev, want, 16);
    }
}

Test(client_hash, deterministic)
{
    int32_t t[8 * PT];
    struct kvc_hash a[8], b[8];

    tokens(t, 8 * PT, 1);
    chain("ns", lay(), NULL, t, 8 * PT, a, 8, 8);
    chain("ns", lay(), NULL, t, 8 * PT, b, 8, 8);
    cr_assert_arr_eq(a, b, sizeof(a));
    for (int i = 1; i < 8; i++)
        cr_assert(memcmp(&a[i], &a[i - 1], 16) != 0);
}

Test(client_hash, key_separation)
{
    int32_t t[2 * PT];
    struct kvc_hash base[2], other[2];
    struct kvc_layout l;

    tokens(t, 2 * PT, 2);
    chain("ns", lay(), NULL, t, 2 * PT, base, 2, 2);

    chain("ns2", lay(), NULL, t, 2 * PT, other, 2, 2);
    cr_assert(memcmp(base, other, sizeof(base)) != 0, "namespace must change the chain");
    chain("ns", lay(), "salt", t, 2 * PT, other, 2, 2);
    cr_assert(memcmp(base, other, sizeof(base)) != 0, "salt must change the chain");
    for (int field = 0; field < 6; field++) {
        l = lay();
        switch (field) {
        case 0:
            l.n_layers++;
            break;
        case 1:
            l.n_kv_heads++;
            break;
        case 2:
            l.head_dim += 32;
            break;
        case 3:
            l.k_fmt = KVC_FMT_INT8;
            break;
        case 4:
            l.v_fmt = KVC_FMT_F16;
            break;
        case 5:
            l.group = 4;
            break;
        }
        chain("ns", l, NULL, t, 2 * PT, other, 2, 2);
        cr_assert(memcmp(&base[0], &other[0], 16) != 0, "layout field %d must change the key",
                  field);
    }
    /* different salts differ from each other too */
    chain("ns", lay(), "salt2", t, 2 * PT, base, 2, 2);
    cr_assert(memcmp(base, other, sizeof(base)) != 0);
}

Test(client_hash, prefix_property)
{
    int32_t t[6 * PT + 5];
    struct kvc_hash full[6], part[3], changed[6];

    tokens(t, 6 * PT + 5, 3);
    chain("ns", lay(), NULL, t, 6 * PT + 5, full, 6, 6); /* the partial tail is not hashed */
    chain("ns", lay(), NULL, t, 3 * PT + 1, part, 3, 3);
    cr_assert_arr_eq(part, full, sizeof(part));

    /* A token changed in block 4 changes hashes 4.. and none before. */
    t[4 * PT + 3] ^= 1;
    chain("ns", lay(), NULL, t, 6 * PT, changed, 6, 6);
    cr_assert_arr_eq(changed, full, 4 * sizeof(struct kvc_hash));
    cr_assert(memcmp(&changed[4], &full[4], 16) != 0);
    cr_assert(memcmp(&changed[5], &full[5], 16) != 0);
}

Test(client_hash, extend_with_parent)
{
    int32_t t[5 * PT];
    struct kvc_hash full[5], ext[5];
    struct kvc_hasher h;

    tokens(t, 5 * PT, 4);
    cr_assert_eq(kvc_hasher_init(&h, "ns",
                                 &(struct kvc_layout){.n_layers = 2,
                                                      .n_kv_heads = 2,
                                                      .head_dim = 64,
                                                      .page_tokens = PT,
                                                      .k_fmt = 3,
                                                      .v_fmt = 3},
                                 NULL, 0),
                 0);
    cr_assert_eq(kvc_hash_chain(&h, t, 5 * PT, NULL, full, 5), 5);
    cr_assert_eq(kvc_hash_chain(&h, t, 2 * PT, NULL, ext, 5), 2);
    cr_assert_eq(kvc_hash_chain(&h, t + 2 * PT, 3 * PT, &ext[1], ext + 2, 3), 3);
    cr_assert_arr_eq(ext, full, sizeof(full));
    /* out_cap limits the output; fewer tokens than a page give none */
    cr_assert_eq(kvc_hash_chain(&h, t, 5 * PT, NULL, ext, 2), 2);
    cr_assert_eq(kvc_hash_chain(&h, t, PT - 1, NULL, ext, 5), 0);
    cr_assert_eq(kvc_hash_chain(&h, NULL, 0, NULL, NULL, 0), 0);
}

Test(client_hash, bad_arguments)
{
    struct kvc_hasher h;
    struct kvc_layout l = lay();
    int32_t t[PT] = {0};
    struct kvc_hash out[1];
    char longname[80];

    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    cr_assert_eq(kvc_hasher_init(NULL, "ns", &l, NULL, 0), -EINVAL);
    cr_assert_eq(kvc_hasher_init(&h, NULL, &l, NULL, 0), -EINVAL);
    cr_assert_eq(kvc_hasher_init(&h, "", &l, NULL, 0), -EINVAL);
    cr_assert_eq(kvc_hasher_init(&h, longname, &l, NULL, 0), -EINVAL);
    cr_assert_eq(kvc_hasher_init(&h, "ns", &l, NULL, 3), -EINVAL);
    cr_assert_eq(kvc_hasher_init(&h, "ns", &l, t, 65), -EINVAL);
    l.page_tokens = 0;
    cr_assert_eq(kvc_hasher_init(&h, "ns", &l, NULL, 0), -EINVAL);
    l = lay();
    cr_assert_eq(kvc_hasher_init(&h, "ns", &l, NULL, 0), 0);
    cr_assert_eq(kvc_hash_chain(NULL, t, PT, NULL, out, 1), -EINVAL);
    cr_assert_eq(kvc_hash_chain(&h, NULL, PT, NULL, out, 1), -EINVAL);
    cr_assert_eq(kvc_hash_chain(&h, t, PT, NULL, NULL, 1), -EINVAL);
}
