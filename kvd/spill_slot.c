/*
 * spill_slot.c - encode and verify the self-describing spill slot (see spill.h for the header).
 *
 * Slot image: [ header block: struct kv_spill_hdr, zero padding to KV_SPILL_ALIGN ][ payload ]
 *
 * Invariants:
 *  1. hdr_sum = BLAKE2b-128(key, header with hdr_sum zeroed) (libsodium); pay_sum = XXH3-128 of
 *     the payload seeded with the key's first 8 bytes (libxxhash, canonical byte order). The
 *     header holds pay_sum and the slot number, so one verified header + payload pair can only be
 *     the bytes written for that slot of that store (the key is the store's random id). XXH3 and
 *     not BLAKE2b for the payload: BLAKE2b runs at ~0.5 GB/s here, a quarter of the disk, while
 *     the threat is torn, misplaced and rotten writes, not a forger who can already write kvd's
 *     state directory (docs/ARCHITECTURE.md, "Spill tier").
 *  2. A decoded slot is only reported when every field that later code indexes with is in range:
 *     stored and original layouts pass kv_layout_check, pay_bytes == kv_page_bytes(stored), ntok
 *     <= page_tokens, namespace NUL-terminated, demoted kinds stored as FP8 E4M3.
 *  3. The decoder reads at most `len` bytes and never trusts a length from the buffer before
 *     checking it against `len`.
 */
#include "spill.h"

#include <errno.h>
#include <string.h>

#include <sodium.h>
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h> /* libxxhash picks SSE2/AVX2/AVX-512 at run time: 3x over SSE2 here */
#define SLOT_XXH3_128 XXH3_128bits_withSeed_dispatch
#else
#define SLOT_XXH3_128 XXH3_128bits_withSeed
#endif

static void slot_sum(uint8_t out[16], const uint8_t key[KV_SPILL_KEY], const void *p, size_t n)
{
    crypto_generichash(out, 16, p, n, key, KV_SPILL_KEY);
}

void kv_spill_pay_sum(uint8_t out[16], const uint8_t key[KV_SPILL_KEY], const void *p, size_t n)
{
    XXH128_canonical_t c;
    uint64_t seed;

    memcpy(&seed, key, sizeof seed);
    XXH128_canonicalFromHash(&c, SLOT_XXH3_128(p, n, seed));
    memcpy(out, c.digest, 16);
}

static void slot_hdr_sum(uint8_t out[16], const uint8_t key[KV_SPILL_KEY],
                         const struct kv_spill_hdr *h)
{
    struct kv_spill_hdr t = *h;

    memset(t.hdr_sum, 0, sizeof t.hdr_sum);
    slot_sum(out, key, &t, sizeof t);
}

void kv_spill_slot_encode(void *buf, uint32_t slot, const uint8_t key[KV_SPILL_KEY],
                          const struct kv_spill_meta *m, const struct kv_layout *stored,
                          uint32_t pay_bytes, uint16_t flags, uint64_t seq)
{
    struct kv_spill_hdr h;

    memset(&h, 0, sizeof h);
    h.magic = KV_SPILL_MAGIC;
    h.version = KV_SPILL_VERSION;
    h.hdr_bytes = sizeof h;
    h.slot = slot;
    h.pay_bytes = pay_bytes;
    h.seq = seq;
    memcpy(h.ns, m->ns, KV_SPILL_NS);
    h.ns[KV_SPILL_NS - 1] = 0;
    h.layout = *stored;
    h.orig_k_fmt = m->layout.k_fmt;
    h.orig_v_fmt = m->layout.v_fmt;
    h.ntok = m->ntok;
    h.flags = flags;
    memcpy(h.hash, m->hash, KV_SPILL_HASH);
    memcpy(h.parent, m->parent, KV_SPILL_HASH);
    kv_spill_pay_sum(h.pay_sum, key, (const uint8_t *)buf + KV_SPILL_ALIGN, pay_bytes);
    slot_hdr_sum(h.hdr_sum, key, &h);
    memset(buf, 0, KV_SPILL_ALIGN);
    memcpy(buf, &h, sizeof h);
}

static int slot_demotion_ok(int orig, int stored, int demoted)
{
    if (orig == stored)
        return 1;
    return demoted && stored == KV_FMT_FP8_E4M3 && kv_fmt_bits(orig) > 8;
}

int kv_spill_slot_decode(const void *buf, size_t len, uint32_t slot,
                         const uint8_t key[KV_SPILL_KEY], int with_payload, struct kv_spill_meta *m,
                         uint32_t *pay_bytes)
{
    struct kv_spill_hdr h;
    struct kv_layout orig;
    uint8_t sum[16];
    int demoted;

    if (len < KV_SPILL_ALIGN)
        return -EBADMSG;
    memcpy(&h, buf, sizeof h);
    if (h.magic == 0)
        return -ENOENT;
    if (h.magic != KV_SPILL_MAGIC || h.version != KV_SPILL_VERSION || h.hdr_bytes != sizeof h)
        return -EBADMSG;
    slot_hdr_sum(sum, key, &h);
    if (sodium_memcmp(sum, h.hdr_sum, sizeof sum) != 0)
        return -EBADMSG;
    if (h.slot != slot)
        return -EBADMSG; /* a write that landed in the wrong place */
    if (h.flags & ~KV_SPILL_F_DEMOTED || h.pad || h.pad2 || h.ns[KV_SPILL_NS - 1] != 0)
        return -EBADMSG;
    if (kv_layout_check(&h.layout) != 0 || kv_page_bytes(&h.layout) != h.pay_bytes)
        return -EBADMSG;
    orig = h.layout;
    orig.k_fmt = h.orig_k_fmt;
    orig.v_fmt = h.orig_v_fmt;
    demoted = !!(h.flags & KV_SPILL_F_DEMOTED);
    if (kv_layout_check(&orig) != 0 || !slot_demotion_ok(orig.k_fmt, h.layout.k_fmt, demoted) ||
        !slot_demotion_ok(orig.v_fmt, h.layout.v_fmt, demoted) ||
        (demoted && orig.k_fmt == h.layout.k_fmt && orig.v_fmt == h.layout.v_fmt))
        return -EBADMSG;
    if (h.ntok == 0 || h.ntok > h.layout.page_tokens)
        return -EBADMSG;
    if (with_payload) {
        if (len - KV_SPILL_ALIGN < h.pay_bytes)
            return -EBADMSG;
        kv_spill_pay_sum(sum, key, (const uint8_t *)buf + KV_SPILL_ALIGN, h.pay_bytes);
        if (sodium_memcmp(sum, h.pay_sum, sizeof sum) != 0)
            return -EBADMSG;
    }
    if (m) {
        memset(m, 0, sizeof *m);
        memcpy(m->ns, h.ns, KV_SPILL_NS);
        m->layout = orig;
        memcpy(m->hash, h.hash, KV_SPILL_HASH);
        memcpy(m->parent, h.parent, KV_SPILL_HASH);
        m->ntok = h.ntok;
        m->flags = h.flags;
        m->seq = h.seq;
    }
    if (pay_bytes)
        *pay_bytes = h.pay_bytes;
    return 0;
}
