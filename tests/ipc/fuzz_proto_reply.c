/*
 * fuzz_proto_reply.c - libFuzzer target: kvp_decode_reply on arbitrary bytes (what a client sees
 * from a confused or hostile daemon). A decoded reply's element arrays must lie inside the frame
 * and match its count; an error status must be the one the header carries.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kvp_msg m;
    int st = kvp_decode_reply(data, size, &m);
    uint8_t x = 0;

    if (st != KVP_OK) {
        if (st != KVP_E_MALFORMED && st != KVP_E_VERSION && st != m.hdr.status)
            abort();
        return 0;
    }
    if (size < sizeof(struct kvp_hdr) || m.body != data + sizeof(struct kvp_hdr))
        abort();
    if (m.elems != NULL) {
        if (m.elems < m.body || m.elems + m.elems_len != m.body + m.body_len)
            abort();
        for (size_t i = 0; i < m.elems_len; i++)
            x ^= m.elems[i];
    }
    switch (m.hdr.op) {
    case KVP_OP_LOOKUP:
        if (m.u.lookup_rep.n_hit != m.hdr.count ||
            m.elems_len != (size_t)m.hdr.count * sizeof(struct kvp_page))
            abort();
        break;
    case KVP_OP_ALLOC:
    case KVP_OP_COMMIT:
        if (m.hdr.count > KVP_MAX_BATCH ||
            m.elems_len != (size_t)m.hdr.count * sizeof(struct kvp_page))
            abort();
        break;
    default:
        break;
    }
    sink = x;
    return 0;
}
