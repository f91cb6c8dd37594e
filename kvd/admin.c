/*
 * admin.c - the admin part of the protocol (op ADMIN): operations for kvctl and tests.
 * Read-only sub-commands need an attached client; changing ones need the admin group.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "server.h"

static void admin_status(struct kvd *d, const struct kvp_msg *m, const uint8_t *rid,
                         size_t rid_len, int status)
{
    uint8_t rep[sizeof(struct kvp_hdr)];
    if (status >= 32)
        d->st.errors_server++;
    else if (status != KVP_OK)
        d->st.errors_client++;
    kvp_put_hdr(rep, KVP_OP_ADMIN, status, m->hdr.seq, 0);
    kvd_send(d, rid, rid_len, rep, sizeof(rep));
}

void kvd_admin_request(struct kvd *d, struct kv_client *c, const struct kvp_msg *m,
                       const uint8_t *rid, size_t rid_len)
{
    uint32_t sub;
    char why[200];

    if (m->body_len < 4) {
        admin_status(d, m, rid, rid_len, KVP_E_MALFORMED);
        return;
    }
    memcpy(&sub, m->body, 4);
    if (!c->admin) {
        admin_status(d, m, rid, rid_len, KVP_E_PERM);
        return;
    }
    switch (sub) {
    case KVP_ADMIN_CHECK:
        if (kv_pool_check(&d->pool, why, sizeof(why)) != 0) {
            kv_err("pool check failed: %s", why);
            admin_status(d, m, rid, rid_len, KVP_E_INTERNAL);
            return;
        }
        admin_status(d, m, rid, rid_len, KVP_OK);
        return;
    case KVP_ADMIN_FAULT: {
        int32_t n;
        if (!d->cfg.fault_injection) {
            admin_status(d, m, rid, rid_len, KVP_E_PERM);
            return;
        }
        if (m->body_len < 8) {
            admin_status(d, m, rid, rid_len, KVP_E_MALFORMED);
            return;
        }
        memcpy(&n, m->body + 4, 4);
        admin_status(d, m, rid, rid_len, KVP_OK); /* reply first: sending must not use the budget */
        kv_mem_fail_after(n);
        return;
    }
    default:
        admin_status(d, m, rid, rid_len, KVP_E_OP);
    }
}
