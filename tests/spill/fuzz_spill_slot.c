/*
 * fuzz_spill_slot.c - libFuzzer target for the spill slot decoder (kv_spill_slot_decode), the code
 * that reads bytes from a store file a restarted kvd did not write itself.
 *
 * Input: u32 slot, u8 control, then the slot image. control bit 0: verify the payload too; bit 1:
 * re-sign the image with the fuzz key first (correct hdr_sum and pay_sum), so the fuzzer also gets
 * past the checksums into the field checks. Properties checked on every accepted slot: the layouts
 * are valid, the payload size matches the stored layout and fits in the input, ntok is in range,
 * the namespace is NUL-terminated.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <xxhash.h>

#include "spill.h"

static const uint8_t fuzz_key[KV_SPILL_KEY] = {
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42};

static void resign(uint8_t *img, size_t len)
{
    struct kv_spill_hdr h;

    memcpy(&h, img, sizeof h);
    if (len - KV_SPILL_ALIGN >= h.pay_bytes) {
        XXH128_canonical_t c;
        uint64_t seed;
        memcpy(&seed, fuzz_key, sizeof seed);
        XXH128_canonicalFromHash(&c,
                                 XXH3_128bits_withSeed(img + KV_SPILL_ALIGN, h.pay_bytes, seed));
        memcpy(h.pay_sum, c.digest, 16);
    }
    memset(h.hdr_sum, 0, sizeof h.hdr_sum);
    crypto_generichash(h.hdr_sum, 16, (const uint8_t *)&h, sizeof h, fuzz_key, KV_SPILL_KEY);
    memcpy(img, &h, sizeof h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kv_spill_meta m;
    uint32_t slot, pay = 0;
    uint8_t ctl, *img;
    size_t len;
    int rc;

    if (size < 5)
        return 0;
    memcpy(&slot, data, 4);
    ctl = data[4];
    len = size - 5;
    img = malloc(len ? len : 1); /* exact size: ASan sees any read past the image */
    if (!img)
        return 0;
    memcpy(img, data + 5, len);
    if ((ctl & 2) && len >= KV_SPILL_ALIGN)
        resign(img, len);
    rc = kv_spill_slot_decode(img, len, slot, fuzz_key, ctl & 1, &m, &pay);
    if (rc == 0) {
        struct kv_layout st = m.layout;
        if (kv_layout_check(&m.layout) != 0 || m.ntok == 0 || m.ntok > m.layout.page_tokens ||
            m.ns[KV_SPILL_NS - 1] != 0 || pay == 0)
            abort();
        if (m.flags & KV_SPILL_F_DEMOTED) {
            if (kv_fmt_bits(st.k_fmt) > 8)
                st.k_fmt = KV_FMT_FP8_E4M3;
            if (kv_fmt_bits(st.v_fmt) > 8)
                st.v_fmt = KV_FMT_FP8_E4M3;
        }
        if (kv_page_bytes(&st) != pay)
            abort();
        if ((ctl & 1) && len - KV_SPILL_ALIGN < pay)
            abort();
    } else if (rc != -EBADMSG && rc != -ENOENT) {
        abort();
    }
    free(img);
    return 0;
}
