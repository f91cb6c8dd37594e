/*
 * server.h - the daemon: one single-threaded epoll loop owns the arena, the pool, the clients and
 * the ZeroMQ sockets. Nothing here is thread-safe; nothing needs to be.
 *
 * Event sources (epoll data = tag << 32 | slot):
 *   ZMQ     ROUTER request socket (ZMQ_FD, edge-triggered: drained until ZMQ_EVENTS has no POLLIN,
 *           again after every send)
 *   ZAP     inproc ZAP handler (REP): checks the uid/gid of every new ZeroMQ peer, names it by pid
 *   LISTEN  side-channel listening socket
 *   SIDE    a client's side-channel socket: closing = the client is gone
 *   PIDFD   a client's pidfd: readable = the process exited (forked children do not keep it open)
 *   SIGNAL  signalfd: SIGTERM/SIGINT stop, SIGHUP reloads
 */
#ifndef KVD_SERVER_H
#define KVD_SERVER_H

#include <stdint.h>
#include <sys/types.h>

#include "arena.h"
#include "config.h"
#include "leases.h"
#include "pool.h"
#include "proto.h"
#include "sock.h"

struct kv_spill;

#define KV_RID_MAX 64 /* ZeroMQ routing ids kvd accepts (libzmq's own are 5 bytes) */
/* Replies held back during one drain of the ROUTER, at most (see kvd_send). 16 keeps most of
 * the saving (one I/O-thread wake-up per 16 replies instead of per reply) while a client with a
 * deep pipeline gets its first replies, and works on them, before kvd is through the drain. */
#define KVD_OUT_BATCH 16

enum kv_client_state {
    KV_CLIENT_FREE = 0,
    KV_CLIENT_HELLO,
    KV_CLIENT_WELCOMED,
    KV_CLIENT_ATTACHED
};

enum kv_release_why {
    KV_GONE_DETACH,
    KV_GONE_SIDECHANNEL,
    KV_GONE_PIDFD,
    KV_GONE_HEARTBEAT,
    KV_GONE_ATTACH_TIMEOUT,
    KV_GONE_SHUTDOWN
};

struct kv_client {
    uint32_t id;             /* unique for the daemon's life; 0 in a free slot */
    uint8_t state;           /* enum kv_client_state */
    uint8_t admin;           /* may run admin operations */
    int side_fd;             /* side channel, -1 if none */
    int pidfd;               /* -1 if the peer's pid is unknown (heartbeats only) */
    struct kv_peer peer;     /* from SO_PEERCRED */
    char pid_text[12];       /* peer.pid in decimal, as zap_handle writes it into User-Id */
    uint8_t token[16];       /* attach token sent in the welcome */
    uint8_t rid[KV_RID_MAX]; /* ZeroMQ routing id, once attached */
    uint8_t rid_len;
    struct kv_ns *ns; /* once attached */
    uint64_t created_ms;
    uint64_t last_seen_ms;
    struct kv_leases leases;
    uint64_t requests;
};

struct kv_waiter {
    uint32_t client_id;
    uint32_t slot;
    uint64_t since_ms;      /* parked at */
    uint64_t deadline_ms;   /* the caller's wait for a pending page ends */
    uint64_t next_check_ms; /* look again then even if nothing changed (see kv_waiter_next) */
    uint8_t *frame;         /* copy of the LOOKUP request */
    size_t frame_len;
};

struct kvd {
    struct kv_config cfg;
    struct kv_arena arena;
    struct kv_pool pool;
    struct kvp_stats st;
    int epfd, listen_fd, sig_fd, lock_fd;
    void *zctx, *router, *zap, *pub;
    int router_fd, zap_fd;
    struct kv_client *clients; /* cfg.max_clients slots */
    uint32_t nclients;
    uint32_t next_client_id;
    struct kv_waiter *waiters;
    uint32_t nwaiters;
    uint64_t pool_gen;    /* bumped when a pending page commits or goes away */
    uint64_t waiters_gen; /* pool_gen when the waiters were last evaluated */
    gid_t client_gid, admin_gid;
    int have_client_gid, have_admin_gid;
    int stop, reload;
    uint8_t *reply;      /* reply buffer, reply_cap bytes */
    struct kvd_out *out; /* replies held back during a drain (server.c), KVD_OUT_BATCH */
    uint32_t nout;
    int corked;            /* inside a drain: kvd_send holds replies back */
    struct kv_page **walk; /* a LOOKUP's committed prefix (ops.c), KVP_MAX_CHAIN entries */
    int32_t *rid_map;      /* routing id -> attached client slot, open addressing, -1 empty */
    uint32_t rid_cap;      /* power of two, >= 2 x max_clients */
    size_t reply_cap;
    /* request latency histogram (ops.c), upper bounds in KVD_LAT_BOUNDS_US, last = +Inf */
    uint64_t lat_count[16];
    double lat_sum_s;
    /* metrics endpoint (metrics.c) */
    void *mhd;
    int metrics_fd;        /* fd to poll for the metrics server, -1 when disabled */
    unsigned metrics_port; /* bound port */
    /* spill tier (tier.c) */
    struct kv_spill *spill; /* NULL when disabled or unavailable */
    int spill_fd;           /* its completion eventfd, -1 without */
    uint64_t tier_dropped;  /* victims dropped instead of spilled (besides the store's count) */
    uint64_t tier_restored; /* pages restored from the store */
    /* SIGHUP (admin.c, kvd_reload): the configuration file and what it gave at start */
    const char *config_path;   /* NULL: started without -c */
    struct kv_config cfg_file; /* defaults < file; a key whose running value differs from it was
                                  set on the command line (or by kvctl) and keeps that value */
    /* systemd (notify.c) */
    uint64_t watchdog_ms; /* WATCHDOG_USEC / 1000, 0 when no watchdog */
    uint64_t last_watchdog_ms;
    char sock_path[KV_PATH_MAX + 16], zmq_ep[KV_PATH_MAX + 32], pub_ep[KV_PATH_MAX + 32];
};

#define KVD_LAT_BOUNDS_US 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000
#define KVD_LAT_NBOUNDS   12

/* metrics.c: start the Prometheus endpoint (cfg.metrics_listen); 0, or -errno (kvd logs and
 * goes on without metrics). Sets metrics_fd for the event loop. */
int kvd_metrics_open(struct kvd *d);
/* metrics.c: serve pending HTTP work; called when metrics_fd is readable. */
void kvd_metrics_service(struct kvd *d);
void kvd_metrics_close(struct kvd *d);
/* metrics.c: refresh d->st from the pool (also used by STATS). */
void kvd_stats_refresh(struct kvd *d);

/* notify.c: sd_notify when NOTIFY_SOCKET is set; no-ops otherwise. */
void kvd_notify_ready(struct kvd *d);
void kvd_notify_status(struct kvd *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kvd_notify_extend(struct kvd *d, uint64_t usec);
void kvd_notify_stopping(struct kvd *d);
/* notify.c: send WATCHDOG=1 when half the interval has passed; returns ms until the next one
 * (or 1000 without a watchdog). */
uint64_t kvd_notify_tick(struct kvd *d, uint64_t now_ms);

/* tier.c: open the spill store and re-index it (0 also when the tier is unavailable: kvd then
 * drops victims; a negative errno only for a failed re-index). Installs the pool hooks. */
int kvd_tier_open(struct kvd *d);
void kvd_tier_close(struct kvd *d);
void kvd_tier_service(struct kvd *d); /* reap completions */
void kvd_tier_submit(struct kvd *d);  /* push queued I/O, once per loop turn */
void kvd_tier_stats(struct kvd *d);   /* fill the spill_* counters of d->st */
/* tier.c: a lookup reached spill record `in` of ns: start its restore if it is not under way.
 * Returns 1 if the lookup must wait for it, 0 if it is a miss. *started counts restores begun. */
int kvd_tier_blocked(struct kvd *d, struct kv_ns *ns, struct kv_inode *in, int *started);

/* tier.c: the parent hash of a spill record. */
const uint8_t *kvd_tier_parent(struct kv_inode *in);
/* tier.c: operator eviction of the prefix `top` of namespace ns_id: drop every spill record whose
 * chain leads back to top (top included) and erase their slots, so a restart never brings them
 * back. Call before evicting the resident pages (their hashes link the records to top). Returns
 * the number of records dropped. */
int kvd_tier_evict_under(struct kvd *d, uint32_t ns_id, const uint8_t *top);

/* When a parked lookup must be looked at again although nothing changed in the pool: the first of
 * its caller's deadline (if still ahead) and the end of its wait for restores from disk. */
#define KVD_RESTORE_WAIT_MS 10000u
static inline uint64_t kv_waiter_next(const struct kv_waiter *w, uint64_t now)
{
    uint64_t restore_end = w->since_ms + KVD_RESTORE_WAIT_MS;
    if (w->deadline_ms > now && w->deadline_ms < restore_end)
        return w->deadline_ms;
    return restore_end > now ? restore_end : now;
}

/* server.c: the attached client with this routing id (its slot), or -1. O(1). */
int kvd_rid_find(struct kvd *d, const uint8_t *rid, size_t len);
/* server.c: index slot's routing id (at ATTACH); removed in kvd_client_gone. */
void kvd_rid_add(struct kvd *d, uint32_t slot);

/* Monotonic milliseconds. */
uint64_t kv_now_ms(void);

/* Start: lock the run dir, create the arena, bind sockets. 0 or -errno with a logged reason. */
int kvd_start(struct kvd *d);
/* Serve until SIGTERM/SIGINT. */
int kvd_run(struct kvd *d);
/* Release everything. */
void kvd_stop(struct kvd *d);

/* ops.c: handle one request frame from routing id rid. Sends the reply (or parks a waiter). */
void kvd_handle_request(struct kvd *d, const uint8_t *rid, size_t rid_len, const char *user_id,
                        const uint8_t *frame, size_t len);
/* ops.c: re-run parked lookups whose page committed or whose deadline passed. */
void kvd_eval_waiters(struct kvd *d, uint64_t now);
/* admin.c: handle an ADMIN request from attached client c. */
void kvd_admin_request(struct kvd *d, struct kv_client *c, const struct kvp_msg *m,
                       const uint8_t *rid, size_t rid_len);
/* admin.c: SIGHUP: re-read the configuration file, apply what can change at run time. */
void kvd_reload(struct kvd *d);
/* server.c: send a reply frame to rid (held back until the end of the drain, inside one). */
void kvd_send(struct kvd *d, const uint8_t *rid, size_t rid_len, const void *buf, size_t len);
/* server.c: drop a client and all its leases, attributing the release. */
void kvd_client_gone(struct kvd *d, struct kv_client *c, enum kv_release_why why);
/* server.c: publish an event (a hint; subscribers may miss it). */
void kvd_publish(struct kvd *d, const char *topic, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
