/*
 * server.c - kvd's event loop, sockets, side channel, ZAP handler and client lifetimes.
 * See server.h for the event sources. Request handlers live in ops.c.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <sodium.h>

#include "log.h"
#include "mem.h"

enum { SRC_ZMQ = 1, SRC_ZAP, SRC_LISTEN, SRC_SIDE, SRC_PIDFD, SRC_SIGNAL, SRC_METRICS, SRC_SPILL };

/* epoll data: tag (8 bits) | slot (24 bits) | client id (32 bits). The id makes an event that
 * arrives for a slot freed and reused within one epoll batch recognizably stale. */
#define EV(tag, slot)      (((uint64_t)(tag) << 56) | ((uint64_t)(slot) << 32))
#define EVC(tag, slot, id) (EV(tag, slot) | (uint32_t)(id))

uint64_t kv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int ep_add(struct kvd *d, int fd, uint64_t data)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};
    return epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

static int resolve_group(const char *s, gid_t *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s && *end == '\0') {
        *out = (gid_t)v;
        return 0;
    }
    struct group *g = getgrnam(s);
    if (!g)
        return -ENOENT;
    *out = g->gr_gid;
    return 0;
}

/* May this peer attach? kvd's own uid and root always; otherwise membership of client_group. */
static int peer_allowed(struct kvd *d, int fd, const struct kv_peer *p, int *admin)
{
    int in_client = 0, in_admin = 0;
    if (p->uid == 0 || p->uid == geteuid()) {
        *admin = 1;
        return 1;
    }
    if (d->have_client_gid)
        in_client =
            p->gid == d->client_gid || (fd >= 0 && kv_sock_peer_in_group(fd, d->client_gid) == 1);
    if (d->have_admin_gid)
        in_admin =
            p->gid == d->admin_gid || (fd >= 0 && kv_sock_peer_in_group(fd, d->admin_gid) == 1);
    *admin = in_admin;
    return in_client || in_admin;
}

void kvd_publish(struct kvd *d, const char *topic, const char *fmt, ...)
{
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "%s ", topic);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    if (d->pub)
        zmq_send(d->pub, buf, strlen(buf), ZMQ_DONTWAIT);
}

/* A reply held back during a drain. */
struct kvd_out {
    zmq_msg_t msg;
    uint64_t key; /* the routing id's first 8 bytes, zero-padded: most ids are 5 bytes */
    uint8_t rid[KV_RID_MAX];
    uint8_t rid_len;
    uint8_t sent;
};

static int same_peer(const struct kvd_out *a, const struct kvd_out *b)
{
    return a->key == b->key && a->rid_len == b->rid_len &&
           (a->rid_len <= 8 || memcmp(a->rid + 8, b->rid + 8, a->rid_len - 8u) == 0);
}

static void send_now(struct kvd *d, const uint8_t *rid, size_t rid_len, const void *buf, size_t len)
{
    /* ROUTER_MANDATORY: an unknown or gone peer gives EHOSTUNREACH instead of a silent drop */
    if (zmq_send(d->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(d->router, buf, len, ZMQ_DONTWAIT) < 0)
        kv_debug("reply dropped: %s", zmq_strerror(zmq_errno()));
}

/* Send the held replies: those to one peer as the parts of one message, in the order they were
 * made (a client takes each part as a reply frame; replies carry their request's seq). ZeroMQ
 * flushes a pipe, and wakes its I/O thread, once per message, not per part: one wake-up per
 * client per drain instead of one per reply. Where the I/O thread shares kvd's core, each wake-up
 * preempted the request loop: measured, that was most of kvd's cost per request. */
static void flush_out(struct kvd *d)
{
    for (uint32_t i = 0; i < d->nout; i++) {
        struct kvd_out *o = &d->out[i];
        if (o->sent)
            continue;
        uint32_t last = i;
        for (uint32_t j = i + 1; j < d->nout; j++)
            if (same_peer(&d->out[j], o))
                last = j;
        int ok = zmq_send(d->router, o->rid, o->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0;
        if (!ok)
            kv_debug("replies dropped: %s", zmq_strerror(zmq_errno()));
        for (uint32_t j = i; j <= last; j++) {
            struct kvd_out *x = &d->out[j];
            if (x->sent || !same_peer(x, o))
                continue;
            x->sent = 1;
            /* on success the message is ZeroMQ's; a failed part ends the message (libzmq drops
             * what it had of it) */
            if (ok &&
                zmq_msg_send(&x->msg, d->router, (j < last ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) >= 0)
                continue;
            ok = 0;
            zmq_msg_close(&x->msg);
        }
    }
    d->nout = 0;
}

void kvd_send(struct kvd *d, const uint8_t *rid, size_t rid_len, const void *buf, size_t len)
{
    /* large replies (admin listings) go at once: holding a batch of them could pin much memory */
    if (d->corked && rid_len <= KV_RID_MAX && len <= 65536) {
        if (d->nout == KVD_OUT_BATCH)
            flush_out(d);
        struct kvd_out *o = &d->out[d->nout];
        if (zmq_msg_init_size(&o->msg, len) == 0) {
            memcpy(zmq_msg_data(&o->msg), buf, len);
            memcpy(o->rid, rid, rid_len);
            o->rid_len = (uint8_t)rid_len;
            o->key = 0;
            memcpy(&o->key, rid, rid_len < 8 ? rid_len : 8);
            o->sent = 0;
            d->nout++;
            return;
        }
    }
    send_now(d, rid, rid_len, buf, len);
}

/* ---- clients --------------------------------------------------------------------------------- */

/* Routing ids are short byte strings (libzmq's own: 5 bytes). FNV-1a picks the home slot; a
 * peer cannot flood one bucket, since the ROUTER, not the peer, chooses the id unless the peer
 * sets one, and a peer gets one entry only after ATTACH. */
static uint32_t rid_hash(const uint8_t *rid, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ rid[i]) * 16777619u;
    return h;
}

int kvd_rid_find(struct kvd *d, const uint8_t *rid, size_t len)
{
    for (uint32_t i = rid_hash(rid, len) & (d->rid_cap - 1);; i = (i + 1) & (d->rid_cap - 1)) {
        int32_t slot = d->rid_map[i];
        if (slot < 0)
            return -1;
        const struct kv_client *c = &d->clients[slot];
        if (c->rid_len == len && memcmp(c->rid, rid, len) == 0)
            return slot;
    }
}

void kvd_rid_add(struct kvd *d, uint32_t slot)
{
    const struct kv_client *c = &d->clients[slot];
    uint32_t i = rid_hash(c->rid, c->rid_len) & (d->rid_cap - 1);
    while (d->rid_map[i] >= 0)
        i = (i + 1) & (d->rid_cap - 1);
    d->rid_map[i] = (int32_t)slot;
}

static void rid_remove(struct kvd *d, uint32_t slot)
{
    const struct kv_client *c = &d->clients[slot];
    uint32_t i = rid_hash(c->rid, c->rid_len) & (d->rid_cap - 1);
    while (d->rid_map[i] != (int32_t)slot) {
        if (d->rid_map[i] < 0)
            return;
        i = (i + 1) & (d->rid_cap - 1);
    }
    /* backward-shift deletion keeps every probe chain intact */
    for (uint32_t j = i;;) {
        j = (j + 1) & (d->rid_cap - 1);
        if (d->rid_map[j] < 0)
            break;
        const struct kv_client *o = &d->clients[d->rid_map[j]];
        uint32_t home = rid_hash(o->rid, o->rid_len) & (d->rid_cap - 1);
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            d->rid_map[i] = d->rid_map[j];
            i = j;
        }
    }
    d->rid_map[i] = -1;
}

static struct kv_client *client_alloc(struct kvd *d)
{
    for (uint32_t i = 0; i < d->cfg.max_clients; i++)
        if (d->clients[i].state == KV_CLIENT_FREE)
            return &d->clients[i];
    return NULL;
}

static void close_fd(struct kvd *d, int *fd)
{
    if (*fd >= 0) {
        epoll_ctl(d->epfd, EPOLL_CTL_DEL, *fd, NULL);
        close(*fd);
        *fd = -1;
    }
}

static const char *const gone_names[] = {
    [KV_GONE_DETACH] = "detached",
    [KV_GONE_SIDECHANNEL] = "side channel closed",
    [KV_GONE_PIDFD] = "process exited",
    [KV_GONE_HEARTBEAT] = "heartbeats missed",
    [KV_GONE_ATTACH_TIMEOUT] = "never attached",
    [KV_GONE_SHUTDOWN] = "shutdown",
};

void kvd_client_gone(struct kvd *d, struct kv_client *c, enum kv_release_why why)
{
    uint64_t leases = c->leases.total;

    /* drop every lease; a WRITING page whose write lease goes is freed */
    kv_leases_foreach(&c->leases, s)
    {
        struct kv_page *pg = kv_pool_page_by_id(&d->pool, s->id);
        for (uint32_t k = 0; pg && k < s->count; k++)
            kv_pool_unref(&d->pool, pg);
    }
    kv_leases_free(&c->leases);
    if (leases)
        d->pool_gen++;
    /* its parked lookups go with it */
    for (uint32_t i = 0; i < d->nwaiters;) {
        if (d->waiters[i].client_id == c->id) {
            kv_free(d->waiters[i].frame);
            d->waiters[i] = d->waiters[--d->nwaiters];
        } else {
            i++;
        }
    }
    switch (why) {
    case KV_GONE_DETACH:
        d->st.released_by_detach++;
        break;
    case KV_GONE_SIDECHANNEL:
        d->st.released_by_sidechannel++;
        break;
    case KV_GONE_PIDFD:
        d->st.released_by_pidfd++;
        break;
    case KV_GONE_HEARTBEAT:
        d->st.released_by_heartbeat++;
        break;
    default:
        break;
    }
    if (why != KV_GONE_DETACH && why != KV_GONE_SHUTDOWN)
        d->st.leases_released_on_death += leases;
    if (c->state == KV_CLIENT_ATTACHED || leases)
        kv_info("client %u (pid %d) gone: %s, %llu leases released", c->id, (int)c->peer.pid,
                gone_names[why], (unsigned long long)leases);
    if (c->ns)
        c->ns->nclients--;
    if (c->state == KV_CLIENT_ATTACHED)
        rid_remove(d, (uint32_t)(c - d->clients));
    close_fd(d, &c->side_fd);
    close_fd(d, &c->pidfd);
    memset(c, 0, sizeof(*c));
    c->side_fd = c->pidfd = -1;
    d->nclients--;
}

static void side_accept(struct kvd *d)
{
    for (;;) {
        int fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                kv_warn("accept: %s", strerror(errno));
            return;
        }
        struct kv_peer peer;
        struct kvp_welcome w = {.magic = KVP_MAGIC, .version = KVP_VERSION};
        int admin = 0;
        struct kv_client *c;

        if (kv_sock_peer(fd, &peer) != 0) {
            close(fd);
            continue;
        }
        if (!peer_allowed(d, fd, &peer, &admin)) {
            kv_notice("refused side channel from pid %d uid %u gid %u: not in the client group",
                      (int)peer.pid, (unsigned)peer.uid, (unsigned)peer.gid);
            w.status = KVP_E_PERM;
            kv_sock_send(fd, &w, sizeof(w), -1);
            d->st.errors_client++;
            close(fd);
            continue;
        }
        c = client_alloc(d);
        if (!c) {
            kv_warn("refused pid %d: max_clients (%llu) reached", (int)peer.pid,
                    (unsigned long long)d->cfg.max_clients);
            w.status = KVP_E_BUSY;
            kv_sock_send(fd, &w, sizeof(w), -1);
            close(fd);
            continue;
        }
        memset(c, 0, sizeof(*c));
        c->id = ++d->next_client_id;
        c->state = KV_CLIENT_HELLO;
        c->admin = (uint8_t)admin;
        c->peer = peer;
        snprintf(c->pid_text, sizeof(c->pid_text), "%d", (int)peer.pid);
        c->side_fd = fd;
        c->pidfd = -1;
        c->created_ms = c->last_seen_ms = kv_now_ms();
        d->nclients++;
        uint32_t slot = (uint32_t)(c - d->clients);
        if (ep_add(d, fd, EVC(SRC_SIDE, slot, c->id)) != 0) {
            kvd_client_gone(d, c, KV_GONE_SHUTDOWN);
            continue;
        }
        if (peer.pid > 0) {
            c->pidfd = kv_pidfd_open(peer.pid);
            if (c->pidfd >= 0 && ep_add(d, c->pidfd, EVC(SRC_PIDFD, slot, c->id)) != 0)
                close_fd(d, &c->pidfd);
        }
    }
}

/* The client's hello arrived (or the socket closed). */
static void side_readable(struct kvd *d, struct kv_client *c)
{
    uint8_t buf[64];
    int fd = -1;
    ssize_t n = kv_sock_recv(c->side_fd, buf, sizeof(buf), &fd);
    struct kvp_hello hello;

    if (fd >= 0)
        close(fd); /* clients never send fds */
    if (n == -EAGAIN || n == -EINTR)
        return;
    if (n <= 0) {
        kvd_client_gone(d, c, KV_GONE_SIDECHANNEL);
        return;
    }
    if (c->state != KV_CLIENT_HELLO || kvp_decode_hello(buf, (size_t)n, &hello) != KVP_OK) {
        /* only one hello is expected; anything else is a protocol error: drop the client */
        kv_notice("client %u (pid %d): unexpected side-channel message, closing", c->id,
                  (int)c->peer.pid);
        d->st.errors_client++;
        kvd_client_gone(d, c, KV_GONE_SIDECHANNEL);
        return;
    }
    struct kvp_welcome w = {
        .magic = KVP_MAGIC,
        .version = KVP_VERSION,
        .status = KVP_OK,
        .client_id = c->id,
        .backend = (uint32_t)d->arena.backend,
        .arena_bytes = d->arena.bytes,
        .features = KVP_FEAT_MULTIPART,
    };
    randombytes_buf(c->token, sizeof(c->token));
    memcpy(w.token, c->token, sizeof(w.token));
    memcpy(w.gpu_uuid, d->arena.gpu_uuid, sizeof(w.gpu_uuid));
    memcpy(w.legacy_handle, d->arena.legacy_handle, sizeof(w.legacy_handle));
    int rc = kv_sock_send(c->side_fd, &w, sizeof(w), d->arena.fd);
    if (rc < 0) {
        kv_notice("client %u: welcome failed: %s", c->id, strerror(-rc));
        kvd_client_gone(d, c, KV_GONE_SIDECHANNEL);
        return;
    }
    c->state = KV_CLIENT_WELCOMED;
}

/* ---- ZAP: authenticate ZeroMQ peers -------------------------------------------------------- */

/* The peer address of an ipc peer ends in ":uid:gid:pid" (libzmq reads SO_PEERCRED). */
static int parse_ipc_peer(const char *addr, size_t len, struct kv_peer *p)
{
    char buf[128];
    if (len >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, addr, len);
    buf[len] = '\0';
    char *c3 = strrchr(buf, ':');
    if (!c3)
        return -EINVAL;
    *c3 = '\0';
    char *c2 = strrchr(buf, ':');
    if (!c2)
        return -EINVAL;
    *c2 = '\0';
    char *c1 = strrchr(buf, ':');
    if (!c1)
        return -EINVAL;
    p->uid = (uid_t)strtoul(c1 + 1, NULL, 10);
    p->gid = (gid_t)strtoul(c2 + 1, NULL, 10);
    p->pid = (pid_t)strtol(c3 + 1, NULL, 10);
    return 0;
}

/* ZMQ_FD is edge-triggered: the fd only signals commands (a new message, a peer) arriving for the
 * socket, and any call on the socket may consume that signal, so a socket must be drained until
 * nothing is readable after every wake-up and every send, or the loop stalls. The drain loops
 * (router_drain, zap_handle) receive with ZMQ_DONTWAIT until EAGAIN, and that EAGAIN is the
 * proof: in libzmq a non-blocking receive that finds no message processes every pending command
 * of the socket (socket_base_t::recv -> process_commands(0, false)) and tries once more before it
 * gives up, which is what a ZMQ_EVENTS query without POLLIN proves too. Asking ZMQ_EVENTS as well,
 * before and after, cost two more poll() syscalls per wake-up and told nothing new. Replies sent
 * during a drain are followed by its final receive, so the rule holds for them as well. */
static void zap_handle(struct kvd *d)
{
    for (;;) {
        zmq_msg_t part[8];
        int nparts = 0, more = 1;
        while (more && nparts < 8) {
            zmq_msg_init(&part[nparts]);
            if (zmq_msg_recv(&part[nparts], d->zap, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&part[nparts]);
                if (nparts == 0 && zmq_errno() == EINTR)
                    continue;
                if (nparts == 0)
                    return; /* EAGAIN: drained (see above) */
                break;
            }
            more = zmq_msg_more(&part[nparts]);
            nparts++;
        }
        while (more) { /* drain an over-long request */
            zmq_msg_t x;
            zmq_msg_init(&x);
            zmq_msg_recv(&x, d->zap, 0);
            more = zmq_msg_more(&x);
            zmq_msg_close(&x);
        }
        const char *status = "400", *text = "bad request";
        char uid_text[32] = "";
        struct kv_peer peer;
        int admin;
        if (nparts >= 6 &&
            parse_ipc_peer(zmq_msg_data(&part[3]), zmq_msg_size(&part[3]), &peer) == 0) {
            if (peer_allowed(d, -1, &peer, &admin)) {
                status = "200";
                text = "OK";
                /* the same text as kv_client.pid_text: dispatch compares them */
                snprintf(uid_text, sizeof(uid_text), "%d", (int)peer.pid);
            } else {
                status = "400";
                text = "peer not allowed";
                kv_notice("refused ZeroMQ peer pid %d uid %u", (int)peer.pid, (unsigned)peer.uid);
            }
        }
        zmq_send(d->zap, "1.0", 3, ZMQ_SNDMORE);
        if (nparts >= 2)
            zmq_send(d->zap, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ZMQ_SNDMORE);
        else
            zmq_send(d->zap, "", 0, ZMQ_SNDMORE);
        zmq_send(d->zap, status, 3, ZMQ_SNDMORE);
        zmq_send(d->zap, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(d->zap, uid_text, strlen(uid_text), ZMQ_SNDMORE);
        zmq_send(d->zap, "", 0, 0);
        for (int i = 0; i < nparts; i++)
            zmq_msg_close(&part[i]);
    }
}

/* ---- request socket -------------------------------------------------------------------------- */

static void router_drain(struct kvd *d)
{
    d->corked = 1; /* replies are held back (kvd_send) and go out before the final receive */
    for (;;) {
        zmq_msg_t rid, body;
        zmq_msg_init(&rid);
        if (zmq_msg_recv(&rid, d->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&rid);
            if (zmq_errno() == EINTR)
                continue;
            if (d->nout) { /* sends may consume the fd's signal: receive once more after them */
                flush_out(d);
                continue;
            }
            d->corked = 0;
            return; /* EAGAIN with nothing sent since: drained (see above zap_handle) */
        }
        zmq_msg_init(&body);
        if (!zmq_msg_more(&rid) || zmq_msg_recv(&body, d->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&rid);
            zmq_msg_close(&body);
            continue;
        }
        const char *uid = zmq_msg_gets(&body, "User-Id");
        int ours = zmq_msg_size(&rid) <= KV_RID_MAX; /* kvd's ROUTER assigns ids: else not ours */
        if (ours)
            kvd_handle_request(d, zmq_msg_data(&rid), zmq_msg_size(&rid), uid, zmq_msg_data(&body),
                               zmq_msg_size(&body));
        else
            d->st.errors_client++;
        /* further parts: one request each (kvc_submitv), at most KVP_MAX_PARTS in a message; the
         * parts past that get one typed error and are dropped */
        uint32_t parts = 1;
        for (int more = zmq_msg_more(&body); more; parts++) {
            zmq_msg_t x;
            int rc;
            zmq_msg_init(&x);
            while ((rc = zmq_msg_recv(&x, d->router, 0)) < 0 && zmq_errno() == EINTR)
                ;         /* a message's parts arrive together: the rest is there */
            if (rc < 0) { /* ETERM: kvd is stopping */
                zmq_msg_close(&x);
                break;
            }
            more = zmq_msg_more(&x);
            if (ours && parts < KVP_MAX_PARTS) {
                kvd_handle_request(d, zmq_msg_data(&rid), zmq_msg_size(&rid), uid, zmq_msg_data(&x),
                                   zmq_msg_size(&x));
            } else if (ours && parts == KVP_MAX_PARTS) {
                uint8_t rep[sizeof(struct kvp_hdr)];
                kvp_put_hdr(rep, 0, KVP_E_MALFORMED, 0, 0);
                d->st.errors_client++;
                kvd_send(d, zmq_msg_data(&rid), zmq_msg_size(&rid), rep, sizeof(rep));
            }
            zmq_msg_close(&x);
        }
        zmq_msg_close(&rid);
        zmq_msg_close(&body);
    }
}

/* ---- start / run / stop ---------------------------------------------------------------------- */

static int make_dir(const char *path, mode_t mode)
{
    char tmp[KV_PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -errno;
            *p = '/';
        }
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int lock_run_dir(struct kvd *d)
{
    char path[KV_PATH_MAX + 16], pid[32];
    snprintf(path, sizeof(path), "%s/kvd.lock", d->cfg.run_dir);
    d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (d->lock_fd < 0) {
        kv_err("cannot open %s: %s", path, strerror(errno));
        return -errno;
    }
    if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int n = (int)pread(d->lock_fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        kv_err("another kvd (pid %s) is serving %s; refusing to start", n > 0 ? pid : "?",
               d->cfg.run_dir);
        close(d->lock_fd);
        d->lock_fd = -1;
        return -EADDRINUSE;
    }
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(d->lock_fd, 0) != 0 || pwrite(d->lock_fd, pid, (size_t)n, 0) != n)
        kv_warn("cannot write pid to %s", path);
    return 0;
}

static int zmq_setup(struct kvd *d)
{
    int one = 1, zero = 0;
    d->zctx = zmq_ctx_new();
    if (!d->zctx)
        return -ENOMEM;
    /* ZAP handler first: the ROUTER's handshakes ask it */
    d->zap = zmq_socket(d->zctx, ZMQ_REP);
    if (!d->zap || zmq_bind(d->zap, "inproc://zeromq.zap.01") != 0)
        goto err;
    d->router = zmq_socket(d->zctx, ZMQ_ROUTER);
    if (!d->router)
        goto err;
    zmq_setsockopt(d->router, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
    zmq_setsockopt(d->router, ZMQ_ZAP_DOMAIN, "kvd", 3);
    zmq_setsockopt(d->router, ZMQ_LINGER, &zero, sizeof(zero));
    /* The lock file guarantees no other kvd serves this run dir, so a stale socket file is ours
     * to remove; a second bind would otherwise silently steal the endpoint. */
    unlink(d->zmq_ep + 6);
    if (zmq_bind(d->router, d->zmq_ep) != 0)
        goto err;
    chmod(d->zmq_ep + 6, (mode_t)d->cfg.socket_mode);
    d->pub = zmq_socket(d->zctx, ZMQ_PUB);
    if (d->pub) {
        zmq_setsockopt(d->pub, ZMQ_LINGER, &zero, sizeof(zero));
        unlink(d->pub_ep + 6);
        if (zmq_bind(d->pub, d->pub_ep) != 0) {
            zmq_close(d->pub);
            d->pub = NULL;
        } else {
            chmod(d->pub_ep + 6, (mode_t)d->cfg.socket_mode);
        }
    }
    size_t sz = sizeof(int);
    zmq_getsockopt(d->router, ZMQ_FD, &d->router_fd, &sz);
    sz = sizeof(int);
    zmq_getsockopt(d->zap, ZMQ_FD, &d->zap_fd, &sz);
    return 0;
err:
    kv_err("ZeroMQ setup failed: %s", zmq_strerror(zmq_errno()));
    return -EIO;
}

int kvd_start(struct kvd *d)
{
    char why[256] = "";
    int rc, backend = 0;
    sigset_t mask;

    d->epfd = d->listen_fd = d->sig_fd = d->lock_fd = -1;
    d->router_fd = d->zap_fd = d->metrics_fd = d->spill_fd = -1;
    if (sodium_init() < 0)
        return -EIO;
    if (d->cfg.client_group[0]) {
        if (resolve_group(d->cfg.client_group, &d->client_gid) != 0) {
            kv_err("client_group '%s' does not exist", d->cfg.client_group);
            return -EINVAL;
        }
        d->have_client_gid = 1;
    }
    if (d->cfg.admin_group[0]) {
        if (resolve_group(d->cfg.admin_group, &d->admin_gid) != 0) {
            kv_err("admin_group '%s' does not exist", d->cfg.admin_group);
            return -EINVAL;
        }
        d->have_admin_gid = 1;
    }
    const struct pol_ops *pol = pol_find(d->cfg.policy);
    if (!pol) {
        kv_err("unknown policy '%s' (known: %s)", d->cfg.policy, pol_names());
        return -EINVAL;
    }
    if (d->cfg.max_clients == 0 || d->cfg.max_clients > 65536) {
        kv_err("max_clients must be 1..65536");
        return -EINVAL;
    }
    rc = make_dir(d->cfg.run_dir, 0750);
    if (rc) {
        kv_err("cannot create run_dir %s: %s", d->cfg.run_dir, strerror(-rc));
        return rc;
    }
    if (d->have_client_gid && chown(d->cfg.run_dir, (uid_t)-1, d->client_gid) != 0)
        kv_warn("cannot give %s to group %u: %s", d->cfg.run_dir, (unsigned)d->client_gid,
                strerror(errno));
    rc = lock_run_dir(d);
    if (rc)
        return rc;
    snprintf(d->sock_path, sizeof(d->sock_path), "%s/kvd.sock", d->cfg.run_dir);
    snprintf(d->zmq_ep, sizeof(d->zmq_ep), "ipc://%s/kvd.zmq", d->cfg.run_dir);
    snprintf(d->pub_ep, sizeof(d->pub_ep), "ipc://%s/kvd.pub", d->cfg.run_dir);

    if (!strcmp(d->cfg.backend, "host"))
        backend = KVP_BACKEND_HOST;
    else if (!strcmp(d->cfg.backend, "cuda"))
        backend = KVP_BACKEND_CUDA_VMM;
    else if (strcmp(d->cfg.backend, "auto") != 0) {
        kv_err("unknown backend '%s' (auto, host, cuda)", d->cfg.backend);
        return -EINVAL;
    }
    /* populating a large arena takes a while: ask systemd for time (about 1 s per GiB) */
    kvd_notify_status(d, "populating a %llu MiB arena",
                      (unsigned long long)(d->cfg.arena_size >> 20));
    kvd_notify_extend(d, 10000000ull + (d->cfg.arena_size >> 30) * 1000000ull);
    rc = kv_arena_create(&d->arena, backend, d->cfg.arena_size, (int)d->cfg.device, why,
                         sizeof(why));
    if (rc) {
        kv_err("cannot create the arena (%llu bytes): %s", (unsigned long long)d->cfg.arena_size,
               why[0] ? why : strerror(-rc));
        return rc;
    }
    if (why[0])
        kv_notice("%s", why); /* e.g. "no CUDA device (...); using the host arena" */
    rc = kv_pool_init(&d->pool, d->arena.bytes, d->cfg.chunk_size, pol);
    if (rc) {
        kv_err("arena_size %llu / chunk_size %llu: need 1..65535 chunks of a 4 KiB multiple",
               (unsigned long long)d->cfg.arena_size, (unsigned long long)d->cfg.chunk_size);
        return rc;
    }
    rc = make_dir(d->cfg.state_dir, 0750);
    if (rc) {
        kv_err("cannot create state_dir %s: %s", d->cfg.state_dir, strerror(-rc));
        return rc;
    }
    rc = kvd_tier_open(d);
    if (rc)
        return rc;
    d->clients = calloc(d->cfg.max_clients, sizeof(*d->clients));
    d->waiters = calloc(d->cfg.max_waiters ? d->cfg.max_waiters : 1, sizeof(*d->waiters));
    d->reply_cap = 2 * sizeof(struct kvp_hdr) + sizeof(struct kvp_lookup_rep) +
                   (size_t)KVP_MAX_BATCH * sizeof(struct kvp_page) + sizeof(struct kvp_stats) +
                   65536;
    d->reply = malloc(d->reply_cap);
    d->out = calloc(KVD_OUT_BATCH, sizeof(*d->out));
    d->walk = calloc(KVP_MAX_CHAIN, sizeof(*d->walk));
    for (d->rid_cap = 16; d->rid_cap < 2 * d->cfg.max_clients;)
        d->rid_cap *= 2;
    d->rid_map = malloc(d->rid_cap * sizeof(*d->rid_map));
    if (!d->clients || !d->waiters || !d->reply || !d->out || !d->walk || !d->rid_map)
        return -ENOMEM;
    memset(d->rid_map, 0xff, d->rid_cap * sizeof(*d->rid_map));
    for (uint32_t i = 0; i < d->cfg.max_clients; i++)
        d->clients[i].side_fd = d->clients[i].pidfd = -1;

    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (d->epfd < 0)
        return -errno;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    d->sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    rc = zmq_setup(d);
    if (rc)
        return rc;
    d->listen_fd = kv_sock_listen(d->sock_path, (unsigned)d->cfg.socket_mode);
    if (d->listen_fd < 0) {
        kv_err("cannot listen on %s: %s", d->sock_path, strerror(-d->listen_fd));
        return d->listen_fd;
    }
    /* accept() runs until EAGAIN in the loop: the listening socket must not block */
    if (fcntl(d->listen_fd, F_SETFL, fcntl(d->listen_fd, F_GETFL) | O_NONBLOCK) != 0)
        return -errno;
    if (d->have_client_gid) {
        if (chown(d->sock_path, (uid_t)-1, d->client_gid) != 0 ||
            chown(d->zmq_ep + 6, (uid_t)-1, d->client_gid) != 0)
            kv_warn("cannot give the sockets to group %u: %s", (unsigned)d->client_gid,
                    strerror(errno));
    }
    if (ep_add(d, d->listen_fd, EV(SRC_LISTEN, 0)) || ep_add(d, d->sig_fd, EV(SRC_SIGNAL, 0)) ||
        ep_add(d, d->router_fd, EV(SRC_ZMQ, 0)) || ep_add(d, d->zap_fd, EV(SRC_ZAP, 0)) ||
        (d->spill_fd >= 0 && ep_add(d, d->spill_fd, EV(SRC_SPILL, 0))))
        return -errno;
    d->metrics_fd = -1;
    if (d->cfg.metrics_listen[0]) {
        rc = kvd_metrics_open(d);
        if (rc)
            kv_warn("metrics endpoint %s unavailable: %s; serving without it",
                    d->cfg.metrics_listen, strerror(-rc));
        else if (d->metrics_fd >= 0 && ep_add(d, d->metrics_fd, EV(SRC_METRICS, 0)) != 0)
            kv_warn("cannot poll the metrics endpoint: %s", strerror(errno));
    }
    kvd_notify_ready(d);
    kv_notice("serving %s: %s arena of %llu MiB in %u chunks, policy %s", d->cfg.run_dir,
              d->arena.ops ? d->arena.ops->name : "?", (unsigned long long)(d->arena.bytes >> 20),
              d->pool.nchunks, pol->name);
    return 0;
}

static void check_timeouts(struct kvd *d, uint64_t now)
{
    for (uint32_t i = 0; i < d->cfg.max_clients; i++) {
        struct kv_client *c = &d->clients[i];
        if (c->state == KV_CLIENT_FREE)
            continue;
        if (c->state != KV_CLIENT_ATTACHED && now - c->created_ms > d->cfg.attach_timeout_ms)
            kvd_client_gone(d, c, KV_GONE_ATTACH_TIMEOUT);
        else if (c->state == KV_CLIENT_ATTACHED && d->cfg.heartbeat_ms &&
                 now - c->last_seen_ms > 3 * d->cfg.heartbeat_ms)
            kvd_client_gone(d, c, KV_GONE_HEARTBEAT);
    }
}

static int next_timeout(struct kvd *d, uint64_t now)
{
    uint64_t t = 1000;
    for (uint32_t i = 0; i < d->nwaiters; i++) {
        uint64_t end = d->waiters[i].next_check_ms;
        uint64_t left = end > now ? end - now : 0;
        if (left < t)
            t = left;
    }
    return (int)t;
}

int kvd_run(struct kvd *d)
{
    struct epoll_event evs[64];
    uint64_t last_check = kv_now_ms();
    int zap_fired = 1; /* drain the ZAP socket once before the first wait */

    while (!d->stop) {
        uint64_t now = kv_now_ms();
        int timeout = next_timeout(d, now);
        uint64_t wd = kvd_notify_tick(d, now);
        if ((uint64_t)timeout > wd)
            timeout = (int)wd;
        int n = epoll_wait(d->epfd, evs, 64, timeout);
        if (n < 0 && errno != EINTR) {
            kv_err("epoll_wait: %s", strerror(errno));
            return -errno;
        }
        for (int i = 0; i < n; i++) {
            uint64_t ev = evs[i].data.u64;
            uint32_t tag = (uint32_t)(ev >> 56), slot = (uint32_t)(ev >> 32) & 0xffffff;
            uint32_t id = (uint32_t)ev;
            struct kv_client *c = slot < d->cfg.max_clients ? &d->clients[slot] : NULL;
            if (c && (c->state == KV_CLIENT_FREE || c->id != id))
                c = NULL; /* the slot's client went earlier in this batch */
            switch (tag) {
            case SRC_ZMQ:
                break; /* serviced below, every iteration */
            case SRC_ZAP:
                zap_fired = 1;
                break;
            case SRC_METRICS:
                kvd_metrics_service(d);
                break;
            case SRC_SPILL:
                kvd_tier_service(d);
                break;
            case SRC_LISTEN:
                side_accept(d);
                break;
            case SRC_SIDE:
                if (c)
                    side_readable(d, c);
                break;
            case SRC_PIDFD:
                if (c)
                    kvd_client_gone(d, c, KV_GONE_PIDFD);
                break;
            case SRC_SIGNAL: {
                struct signalfd_siginfo si;
                while (read(d->sig_fd, &si, sizeof(si)) == sizeof(si)) {
                    if (si.ssi_signo == SIGHUP)
                        d->reload = 1;
                    else
                        d->stop = 1;
                }
                break;
            }
            }
        }
        /* Only the ZAP handler uses the ZAP socket, and its drain ended on EAGAIN: until its fd
         * fires again nothing can be waiting there (handshakes are rare; requests are not). */
        if (zap_fired)
            zap_handle(d);
        zap_fired = 0;
        router_drain(d);
        now = kv_now_ms();
        if (d->nwaiters) {
            kvd_eval_waiters(d, now);
            /* its replies were sends: a send can consume the ZMQ_FD signal of a request that
             * arrived meanwhile, so look again before sleeping */
            router_drain(d);
        }
        kvd_tier_submit(d);
        if (now - last_check >= 200) {
            check_timeouts(d, now);
            last_check = now;
        }
        if (d->reload) {
            d->reload = 0;
            kvd_reload(d);
        }
    }
    kvd_notify_stopping(d);
    kv_notice("stopping");
    return 0;
}

void kvd_stop(struct kvd *d)
{
    kvd_metrics_close(d);
    for (uint32_t i = 0; d->clients && i < d->cfg.max_clients; i++)
        if (d->clients[i].state != KV_CLIENT_FREE)
            kvd_client_gone(d, &d->clients[i], KV_GONE_SHUTDOWN);
    if (d->router)
        zmq_close(d->router);
    if (d->pub)
        zmq_close(d->pub);
    if (d->zap)
        zmq_close(d->zap);
    if (d->zctx)
        zmq_ctx_term(d->zctx);
    if (d->listen_fd >= 0) {
        close(d->listen_fd);
        unlink(d->sock_path);
    }
    if (d->zmq_ep[0])
        unlink(d->zmq_ep + 6);
    if (d->pub_ep[0])
        unlink(d->pub_ep + 6);
    for (uint32_t i = 0; i < d->nwaiters; i++)
        kv_free(d->waiters[i].frame);
    kvd_tier_close(d);
    kv_pool_free(&d->pool);
    kv_arena_close(&d->arena);
    free(d->clients);
    free(d->waiters);
    free(d->reply);
    free(d->out);
    free(d->walk);
    free(d->rid_map);
    if (d->sig_fd >= 0)
        close(d->sig_fd);
    if (d->epfd >= 0)
        close(d->epfd);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
}
