/*
 * fuzz_proto_side.c - libFuzzer target: the side-channel decoders (kvp_decode_hello,
 * kvp_decode_welcome) on arbitrary bytes. Accepted messages must be exactly the wire size and
 * carry the magic, the version and (welcome) a known backend and a non-zero arena size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kvp_hello h;
    struct kvp_welcome w;
    int st;

    if (kvp_decode_hello(data, size, &h) == KVP_OK &&
        (size != sizeof(h) || h.magic != KVP_MAGIC || h.version != KVP_VERSION))
        abort();
    st = kvp_decode_welcome(data, size, &w);
    if (st == KVP_OK &&
        (size != sizeof(w) || w.magic != KVP_MAGIC || w.status != KVP_OK || w.arena_bytes == 0 ||
         w.backend < KVP_BACKEND_HOST || w.backend > KVP_BACKEND_CUDA_LEGACY))
        abort();
    if (st != KVP_OK && size == sizeof(w) && memcmp(data, &(uint32_t){KVP_MAGIC}, 4) == 0 &&
        st != KVP_E_MALFORMED && st != KVP_E_VERSION && st != w.status)
        abort();
    return 0;
}
