/* sweep_hash.h - the hash of a full 2^32-input FP8 sweep (shared by the golden generator and the
 * test). 64-bit words, multiply-xorshift; bytes in input order; lengths are multiples of 8. */
#ifndef KV_SWEEP_HASH_H
#define KV_SWEEP_HASH_H
#include <stdint.h>
#include <string.h>

struct kvq_sweep {
    uint64_t h;
};

static inline void kvq_sweep_init(struct kvq_sweep *s)
{
    s->h = 0xcbf29ce484222325ull;
}

static inline void kvq_sweep_add(struct kvq_sweep *s, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        s->h = (s->h ^ w) * 0x100000001b3ull;
        s->h ^= s->h >> 29;
    }
}
#endif
