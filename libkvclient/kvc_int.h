/*
 * kvc_int.h - libkvclient internals shared by kvc_core.c (connection) and kvc_req.c (requests).
 *
 * Invariants:
 *  1. state says which error every call returns: ATTACHED (calls proceed), DEAD (kvd went away,
 *     -ESHUTDOWN), DETACHED (not connected, -ENOTCONN). forked (set in the child by the atfork
 *     handler) overrides all of them with -ECHILD, and then no ZeroMQ function is called again.
 *  2. A request in flight owns exactly one slot, slots[seq % KVC_MAX_INFLIGHT], until its reply is
 *     processed or the connection is dropped. A slot whose caller gave up (sync timeout) is
 *     ABANDONED: its late reply is consumed, and leases it carries are released.
 *  3. Every request handed to kvc_submit is handed back exactly once by kvc_complete, through the
 *     done queue, unless kvc_close drops it.
 *  4. zsock/zctx are created in the process that uses them and never used after a fork.
 */
#ifndef KVC_INT_H
#define KVC_INT_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "arena.h"
#include "kvclient.h"
#include "proto.h"

enum kvc_state { KVC_ST_DETACHED = 0, KVC_ST_ATTACHED = 1, KVC_ST_DEAD = 2 };
enum kvc_slot_state { KVC_SLOT_FREE = 0, KVC_SLOT_BUSY = 1, KVC_SLOT_ABANDONED = 2 };

#define KVC_RUN_DIR_MAX        96 /* sun_path is 108 bytes; "/kvd.sock" and "/kvd.zmq" must fit */
#define KVC_SALT_MAX           64
#define KVC_DEFAULT_TIMEOUT_MS 5000
#define KVC_CLOSE_TIMEOUT_MS   200

struct kvc_slot {
    uint32_t seq;
    uint8_t state;  /* enum kvc_slot_state */
    uint8_t op;     /* enum kvp_op of the request */
    uint8_t sync;   /* a synchronous call waits for it: not queued for kvc_complete */
    uint8_t leases; /* a successful reply carries leases (ALLOC, COMMIT, LOOKUP with PIN) */
    uint32_t count;
    struct kvc_req *req; /* NULL when abandoned */
};

struct kvc {
    /* options, fixed for the handle's life */
    char run_dir[KVC_RUN_DIR_MAX];
    char ns[KVP_MAX_NS_NAME];
    struct kv_layout layout;
    uint8_t salt[KVC_SALT_MAX];
    size_t salt_len;
    int timeout_ms;
    struct kvc_hasher hasher;

    /* connection */
    int state;           /* enum kvc_state */
    volatile int forked; /* set by the atfork child handler */
    pid_t pid;           /* process that opened the handle */
    int side_fd;         /* side-channel socket, -1 when closed */
    void *zctx;          /* ZeroMQ context and DEALER socket, NULL when closed */
    void *zsock;
    int zfd; /* the DEALER's ZMQ_FD (its notification fd), -1 when closed */
    struct kv_arena arena;
    int have_arena;
    struct kvp_welcome welcome;
    struct kvp_attach_rep rep;

    /* requests */
    uint32_t next_seq;
    uint32_t n_busy; /* slots BUSY with a caller's request (sync or async) */
    int sync_done;   /* the synchronous request in progress has completed */
    struct kvc_req *done_head, *done_tail;
    uint32_t n_done;
    struct kvc_slot slots[KVC_MAX_INFLIGHT];

    /* the synchronous kvc_admin call in progress (at most one: calls on a handle are serial) */
    uint32_t adm_sub;
    const void *adm_arg;
    size_t adm_arg_len;
    void *adm_out;
    size_t adm_cap, adm_len;

    struct kvc *reg_next; /* registry of open handles, for the fork handler */
};

/* 0 if calls may proceed, else the error invariant 1 names. */
int kvc_int_usable(const struct kvc *c);
/* Complete every in-flight request with err, free all slots, mark the handle DEAD. */
void kvc_int_fail_all(struct kvc *c, int err);
/* Send one request frame (sync: wait with kvc_int_wait). Returns 0 and *seq, or -errno. */
int kvc_int_send(struct kvc *c, struct kvc_req *r, int sync);
/* Wait for the synchronous request r (sent with sync=1) for up to timeout_ms. */
int kvc_int_wait(struct kvc *c, struct kvc_req *r, int timeout_ms);
/* Monotonic milliseconds. */
uint64_t kvc_int_now_ms(void);
/* Process one reply frame as if it had arrived on the socket (the fuzz target's entry point). */
void kvc_int_handle_frame(struct kvc *c, const void *buf, size_t len);

#endif
