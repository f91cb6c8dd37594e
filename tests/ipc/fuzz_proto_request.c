/*
 * fuzz_proto_request.c - libFuzzer target: kvp_decode_request on arbitrary bytes, under both the
 * attached and the pre-attach frame limit, plus kvp_next_score on arbitrary element bytes.
 * Beyond "no crash", it checks what a decoded request promises: element arrays exactly cover the
 * body, score entries walk to the end, the namespace name is a terminated legal string.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static volatile uint8_t sink;

static void touch(const uint8_t *p, size_t n)
{
    uint8_t x = 0;

    for (size_t i = 0; i < n; i++)
        x ^= p[i];
    sink = x;
}

static void check_scores(const struct kvp_msg *m)
{
    struct kvp_score_ent ent;
    const uint8_t *sc;
    size_t pos = 0;
    uint32_t n = 0;
    int r;

    while ((r = kvp_next_score(m, &pos, &ent, &sc)) == 1) {
        touch(sc, (size_t)ent.ntok * sizeof(float));
        n++;
    }
    if (r != 0 || pos != m->elems_len || n != m->hdr.count)
        abort();
}

static void check_ok(const uint8_t *data, size_t size, const struct kvp_msg *m)
{
    const struct kvp_hdr *h = &m->hdr;
    size_t expect = SIZE_MAX;

    if (m->body != data + sizeof(struct kvp_hdr) || m->body_len != size - sizeof(struct kvp_hdr))
        abort();
    if (m->elems != NULL &&
        (m->elems < m->body || m->elems + m->elems_len != m->body + m->body_len))
        abort();
    touch(m->elems ? m->elems : m->body, m->elems ? m->elems_len : 0);
    switch (h->op) {
    case KVP_OP_ATTACH:
        if (memchr(m->u.attach.ns, 0, KVP_MAX_NS_NAME) == NULL || m->u.attach.ns[0] == '\0')
            abort();
        return;
    case KVP_OP_LOOKUP:
        expect = (size_t)h->count * KVP_HASH_BYTES;
        if (h->count > KVP_MAX_CHAIN || m->u.lookup.wait_ms > KVP_MAX_WAIT_MS)
            abort();
        break;
    case KVP_OP_ALLOC:
        expect = (m->u.alloc.flags & KVP_ALLOC_HASHES) ? (size_t)h->count * KVP_HASH_BYTES : 0;
        break;
    case KVP_OP_COMMIT:
        expect = (size_t)h->count * sizeof(struct kvp_commit);
        break;
    case KVP_OP_RELEASE:
        expect = (size_t)h->count * sizeof(uint32_t);
        break;
    case KVP_OP_SCORES:
        check_scores(m);
        return;
    default:
        return;
    }
    if (m->elems_len != expect)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const size_t limits[2] = {KVP_MAX_FRAME, KVP_MAX_FRAME_PRE};
    struct kvp_msg m;

    for (int i = 0; i < 2; i++) {
        int st = kvp_decode_request(data, size, limits[i], &m);

        if (strcmp(kvp_status_str(st), "unknown status") == 0 || st >= KVP_E_NOSPC)
            abort(); /* a request decoder only answers with client codes */
        if (st == KVP_OK) {
            if (size > limits[i])
                abort();
            check_ok(data, size, &m);
        }
    }

    /* The iterator on its own must stay inside whatever bytes it is given. */
    memset(&m, 0, sizeof(m));
    m.elems = data;
    m.elems_len = size;
    {
        struct kvp_score_ent ent;
        const uint8_t *sc;
        size_t pos = 0;
        int r;

        while ((r = kvp_next_score(&m, &pos, &ent, &sc)) == 1) {
            if (pos > size)
                abort();
            touch(sc, (size_t)ent.ntok * sizeof(float));
        }
    }
    return 0;
}
