/*
 * kvc_hash.c - chained block hashes.
 *
 *   key = BLAKE2b-256("kvd-block-hash-v1" || ns name NUL-padded to 64 bytes || layout as 12
 *                      little-endian bytes || salt)
 *   h_i = BLAKE2b-128 keyed by key over (h_{i-1} || tokens of block i as little-endian int32),
 *         h_{-1} = 16 zero bytes (or the caller's parent, to extend a chain)
 *
 * Every field before the salt has a fixed size, so (ns, layout, salt) -> key is unambiguous. A
 * hash depends on every token before it, so it names the whole prefix; equal prefixes give equal
 * chains in every process, which is what lets workers share pages without talking to each other.
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "kvc_int.h"

static const char kvc_hash_domain[] = "kvd-block-hash-v1";

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

KVC_API int kvc_hasher_init(struct kvc_hasher *h, const char *ns, const struct kvc_layout *l,
                            const void *salt, size_t salt_len)
{
    crypto_generichash_state st;
    uint8_t name[KVP_MAX_NS_NAME] = {0};
    uint8_t lay[12];
    size_t n;

    if (h == NULL || ns == NULL || l == NULL || salt_len > KVC_SALT_MAX ||
        (salt_len > 0 && salt == NULL) || l->page_tokens == 0)
        return -EINVAL;
    n = strnlen(ns, KVP_MAX_NS_NAME);
    if (n == 0 || n > KVC_MAX_NS_NAME)
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    memcpy(name, ns, n);
    put_le16(lay + 0, l->n_layers);
    put_le16(lay + 2, l->n_kv_heads);
    put_le16(lay + 4, l->head_dim);
    put_le16(lay + 6, l->page_tokens);
    lay[8] = l->k_fmt;
    lay[9] = l->v_fmt;
    put_le16(lay + 10, l->group);

    crypto_generichash_init(&st, NULL, 0, sizeof(h->key));
    crypto_generichash_update(&st, (const uint8_t *)kvc_hash_domain, sizeof(kvc_hash_domain));
    crypto_generichash_update(&st, name, sizeof(name));
    crypto_generichash_update(&st, lay, sizeof(lay));
    if (salt_len > 0)
        crypto_generichash_update(&st, salt, salt_len);
    crypto_generichash_final(&st, h->key, sizeof(h->key));
    h->page_tokens = l->page_tokens;
    return 0;
}

KVC_API int kvc_hash_chain(const struct kvc_hasher *h, const int32_t *tokens, size_t n_tokens,
                           const struct kvc_hash *parent, struct kvc_hash *out, size_t out_cap)
{
    uint8_t buf[4 * 256];
    struct kvc_hash prev;
    size_t blocks, pt;

    if (h == NULL || h->page_tokens == 0 || h->page_tokens > KV_MAX_PAGE_TOKENS ||
        (n_tokens > 0 && tokens == NULL) || (out_cap > 0 && out == NULL))
        return -EINVAL;
    pt = h->page_tokens;
    blocks = n_tokens / pt;
    if (blocks > out_cap)
        blocks = out_cap;
    if (blocks > INT_MAX)
        blocks = INT_MAX;
    if (parent)
        prev = *parent;
    else
        memset(&prev, 0, sizeof(prev));
    for (size_t i = 0; i < blocks; i++) {
        crypto_generichash_state st;
        const int32_t *t = tokens + i * pt;

        crypto_generichash_init(&st, h->key, sizeof(h->key), KVC_HASH_BYTES);
        crypto_generichash_update(&st, prev.b, sizeof(prev.b));
        /* tokens as little-endian int32, in chunks of the local buffer */
        for (size_t j = 0; j < pt;) {
            size_t k = 0;
            for (; j < pt && k < sizeof(buf); j++, k += 4) {
                uint32_t v = (uint32_t)t[j];
                buf[k] = (uint8_t)v;
                buf[k + 1] = (uint8_t)(v >> 8);
                buf[k + 2] = (uint8_t)(v >> 16);
                buf[k + 3] = (uint8_t)(v >> 24);
            }
            crypto_generichash_update(&st, buf, k);
        }
        crypto_generichash_final(&st, out[i].b, KVC_HASH_BYTES);
        prev = out[i];
    }
    return (int)blocks;
}
