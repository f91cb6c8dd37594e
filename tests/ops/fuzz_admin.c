/*
 * fuzz_admin.c - libFuzzer target for kvd's ADMIN op (kvd/admin.c): the sub-command and argument
 * bytes a client sends. Each input runs against a fresh pool holding one 4-page chain (hashes
 * {1}, {2}, {3}, {4}: easy for the fuzzer to hit, see the seeds) with scores and one pinned page,
 * as an admin client, so every sub-command, listings with any range, show/evict of any key and
 * policy switches are reached. After each request the pool's invariants must hold
 * (kv_pool_check) and the reply must have fitted the reply buffer. Replies go to kvd_send on a
 * daemon without sockets (ZeroMQ refuses them: ENOTSOCK), which is all this target needs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"

static struct kvd d;

static void build_pool(void)
{
    struct kv_layout l = {.n_layers = 1,
                          .n_kv_heads = 1,
                          .head_dim = 32,
                          .page_tokens = 16,
                          .k_fmt = KV_FMT_FP8_E4M3,
                          .v_fmt = KV_FMT_FP8_E4M3};
    struct kv_ns *ns;
    struct kv_page *pg[4], *win;
    uint8_t h[16] = {0}, parent[16] = {0};
    float mass[16];

    if (kv_pool_init(&d.pool, 1u << 20, 64u << 10, pol_find("lru")) != 0 ||
        kv_pool_ns_get(&d.pool, "fuzz", &l, &ns) != 0 || kv_pool_alloc(&d.pool, ns, 1, 4, pg) != 0)
        abort();
    for (int i = 0; i < 16; i++)
        mass[i] = (float)i;
    for (int i = 0; i < 4; i++) {
        memset(h, 0, sizeof(h));
        h[0] = (uint8_t)(i + 1);
        if (kv_pool_commit(&d.pool, pg[i], h, parent, 16, &win) != 0)
            abort();
        memcpy(parent, h, sizeof(h));
        kv_pool_add_scores(&d.pool, win, mass, 16);
        if (i != 1)
            kv_pool_unref(&d.pool, win); /* page 1 stays pinned */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct kv_client c;
    static int once;
    struct kvp_msg m;
    char why[200];
    uint8_t rid[5] = {0, 1, 2, 3, 4};

    if (!once) {
        once = 1;
        kv_log_init(KV_LOG_ERR - 1); /* quiet */
        kv_config_defaults(&d.cfg);
        d.reply_cap = 2 * sizeof(struct kvp_hdr) + sizeof(struct kvp_lookup_rep) +
                      (size_t)KVP_MAX_BATCH * sizeof(struct kvp_page) + sizeof(struct kvp_stats) +
                      65536;
        d.reply = malloc(d.reply_cap);
        d.cfg.max_clients = 1;
        d.clients = &c;
        d.metrics_fd = -1;
        d.epfd = -1;
        if (!d.reply)
            abort();
    }
    if (size < 4 || size > 4 + KVP_ADMIN_MAX_ARG)
        return 0; /* the codec refuses these before admin.c sees them */
    build_pool();
    memset(&c, 0, sizeof(c));
    c.id = 1;
    c.state = KV_CLIENT_ATTACHED;
    c.admin = 1;
    c.side_fd = c.pidfd = -1;
    d.nclients = 1;
    memset(&m, 0, sizeof(m));
    m.hdr.magic = KVP_MAGIC;
    m.hdr.version = KVP_VERSION;
    m.hdr.op = KVP_OP_ADMIN;
    m.body = data;
    m.body_len = size;
    kvd_admin_request(&d, &c, &m, rid, sizeof(rid));
    if (kv_pool_check(&d.pool, why, sizeof(why)) != 0) {
        fprintf(stderr, "pool invariant broken after an admin request: %s\n", why);
        abort();
    }
    kv_pool_free(&d.pool);
    return 0;
}
