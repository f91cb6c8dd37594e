/*
 * fuzz_client_reply.c - libFuzzer target: any bytes as a reply frame to a client with one request
 * of every kind in flight. A reply from a broken or hostile daemon must never write past the
 * caller's output arrays, never hand out a page outside the arena, and finish a request only with
 * 0 or a negative errno and counts within what was asked.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvc_int.h"

#define NOPS  10
#define COUNT 8

static const uint8_t ops[NOPS] = {KVP_OP_ATTACH, KVP_OP_PING,   KVP_OP_LOOKUP,  KVP_OP_LOOKUP,
                                  KVP_OP_ALLOC,  KVP_OP_COMMIT, KVP_OP_RELEASE, KVP_OP_SCORES,
                                  KVP_OP_STATS,  KVP_OP_ADMIN};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct kvc c; /* zsock NULL: orphan releases fail to send, harmlessly */
    static uint8_t arena[1u << 20];
    struct kvc_req req[NOPS];
    struct kvc_page *pages[NOPS];
    struct kvc_stats *stats = malloc(sizeof(*stats));
    uint8_t *adm = malloc(64);

    memset(&c, 0, sizeof(c));
    c.state = KVC_ST_ATTACHED;
    c.side_fd = -1;
    c.arena.bytes = sizeof(arena);
    c.arena.base = arena;
    c.have_arena = 1;
    c.rep.page_bytes = 8704;
    c.adm_out = adm;
    c.adm_cap = 64;
    for (int i = 0; i < NOPS; i++) {
        uint32_t seq = (uint32_t)i + 1;
        struct kvc_slot *s = &c.slots[seq & (KVC_MAX_INFLIGHT - 1)];
        pages[i] = malloc(COUNT * sizeof(struct kvc_page)); /* exact size: ASan sees overflows */
        memset(&req[i], 0, sizeof(req[i]));
        req[i].op = ops[i];
        req[i].count = ops[i] == KVP_OP_STATS || ops[i] == KVP_OP_PING ? 0 : COUNT;
        req[i].flags = i == 3 ? KVC_LOOKUP_PIN : 0;
        req[i].pages = pages[i];
        req[i].stats = stats;
        req[i].result = 1; /* "not finished" */
        *s = (struct kvc_slot){.seq = seq,
                               .state = KVC_SLOT_BUSY,
                               .op = ops[i],
                               .count = req[i].count,
                               .req = &req[i],
                               .leases =
                                   ops[i] == KVP_OP_ALLOC || ops[i] == KVP_OP_COMMIT || i == 3};
        c.n_busy++;
    }
    /* the same slot table also holds an abandoned request, whose late reply is consumed */
    c.slots[(NOPS + 1) & (KVC_MAX_INFLIGHT - 1)] = (struct kvc_slot){.seq = NOPS + 1,
                                                                     .state = KVC_SLOT_ABANDONED,
                                                                     .op = KVP_OP_LOOKUP,
                                                                     .count = COUNT,
                                                                     .leases = 1};

    kvc_int_handle_frame(&c, data, size);

    for (int i = 0; i < NOPS; i++) {
        const struct kvc_req *r = &req[i];
        if (r->result == 1)
            continue; /* not the request this frame answered */
        if (r->result > 0)
            abort();
        if (r->result == 0) {
            if (r->op != KVP_OP_ADMIN && r->n_out > COUNT) /* ADMIN: a listing's length */
                abort();
            if (r->op == KVP_OP_LOOKUP || r->op == KVP_OP_ALLOC || r->op == KVP_OP_COMMIT) {
                if (r->op != KVP_OP_LOOKUP && r->n_out != COUNT)
                    abort(); /* all or nothing */
                for (uint32_t k = 0; k < r->n_out; k++)
                    if (kvc_page_ptr(&c, &r->pages[k]) == NULL)
                        abort(); /* a page outside the arena was handed out */
                if (r->op == KVP_OP_LOOKUP && r->next > KVC_NEXT_PENDING)
                    abort();
            }
        }
    }
    for (int i = 0; i < NOPS; i++)
        free(pages[i]);
    free(stats);
    free(adm);
    return 0;
}
