/*
 * kvc_core.c - libkvclient connection: side channel, arena import, ATTACH, reconnect, close, fork.
 *
 * A handle goes through these states (kvc_int.h, invariant 1):
 *
 *            kvc_open ok                     side channel closes (kvc_int_fail_all)
 *   (none) -------------> ATTACHED --------------------------------------------> DEAD
 *                            ^                                                     |
 *                            |   kvc_reconnect ok        kvc_reconnect fails       |
 *                            +------------------------ DETACHED <------------------+
 *
 * and, in the child of a fork(), "forked" (set by fork_child) overrides every state.
 *
 * Order of a connection (kvc_connect), undone in reverse by kvc_disconnect:
 *   side-channel socket, hello -> welcome + arena fd, arena import, ZeroMQ DEALER, ATTACH.
 * The side channel stays open for the client's life: its closing is how kvd learns we died and how
 * we learn kvd died.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "kvc_int.h"
#include "sock.h"

_Static_assert(sizeof(struct kvc_layout) == sizeof(struct kv_layout), "public layout mirror");
_Static_assert(offsetof(struct kvc_layout, page_tokens) == offsetof(struct kv_layout, page_tokens),
               "public layout mirror");
_Static_assert(offsetof(struct kvc_layout, k_fmt) == offsetof(struct kv_layout, k_fmt),
               "public layout mirror");
_Static_assert(offsetof(struct kvc_layout, group) == offsetof(struct kv_layout, group),
               "public layout mirror");
_Static_assert((int)KVC_FMT_FP8_E4M3 == (int)KV_FMT_FP8_E4M3 &&
                   (int)KVC_FMT_KIVI2 == (int)KV_FMT_KIVI2 && (int)KVC_FMT_F16 == (int)KV_FMT_F16 &&
                   (int)KVC_FMT_INT4 == (int)KV_FMT_INT4,
               "public format ids");
_Static_assert((int)KVC_BACKEND_HOST == (int)KVP_BACKEND_HOST &&
                   (int)KVC_BACKEND_CUDA_VMM == (int)KVP_BACKEND_CUDA_VMM &&
                   (int)KVC_BACKEND_CUDA_LEGACY == (int)KVP_BACKEND_CUDA_LEGACY,
               "public backend ids");
_Static_assert(KVC_MAX_NS_NAME + 1 == KVP_MAX_NS_NAME && KVC_MAX_CHAIN == KVP_MAX_CHAIN &&
                   KVC_MAX_BATCH == KVP_MAX_BATCH && KVC_MAX_WAIT_MS == KVP_MAX_WAIT_MS &&
                   KVC_HASH_BYTES == KVP_HASH_BYTES,
               "public limits");

/* ---- fork registry -------------------------------------------------------------------------- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static struct kvc *reg_head;
static int reg_atfork_rc;

static void fork_prepare(void)
{
    pthread_mutex_lock(&reg_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&reg_lock);
}

/* In the child: every handle belongs to the parent. Close our copy of each side channel so a
 * child that outlives its parent does not keep the parent's connection looking alive to kvd. */
static void fork_child(void)
{
    for (struct kvc *c = reg_head; c != NULL; c = c->reg_next) {
        c->forked = 1;
        if (c->side_fd >= 0)
            close(c->side_fd);
        c->side_fd = -1;
    }
    pthread_mutex_unlock(&reg_lock);
}

static void reg_init(void)
{
    reg_atfork_rc = -pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static int reg_add(struct kvc *c)
{
    pthread_once(&reg_once, reg_init);
    if (reg_atfork_rc < 0)
        return reg_atfork_rc;
    pthread_mutex_lock(&reg_lock);
    c->reg_next = reg_head;
    reg_head = c;
    pthread_mutex_unlock(&reg_lock);
    return 0;
}

static void reg_del(struct kvc *c)
{
    pthread_mutex_lock(&reg_lock);
    for (struct kvc **p = &reg_head; *p != NULL; p = &(*p)->reg_next) {
        if (*p == c) {
            *p = c->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
}

/* ---- helpers -------------------------------------------------------------------------------- */

uint64_t kvc_int_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int kvc_int_usable(const struct kvc *c)
{
    /* the atfork handler sets forked; no getpid() syscall on every request */
    if (c->forked)
        return -ECHILD;
    if (c->state == KVC_ST_DEAD)
        return -ESHUTDOWN;
    if (c->state != KVC_ST_ATTACHED)
        return -ENOTCONN;
    return 0;
}

static int ns_valid(const char *ns)
{
    size_t n = ns ? strnlen(ns, KVP_MAX_NS_NAME) : 0;

    if (n == 0 || n > KVC_MAX_NS_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = ns[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}

/* ---- connect / disconnect ------------------------------------------------------------------- */

/* Side channel: connect, hello, welcome with the arena fd, import the arena. */
static int side_open(struct kvc *c)
{
    char path[KVC_RUN_DIR_MAX + 16];
    struct kvp_hello hello = {.magic = KVP_MAGIC, .version = KVP_VERSION};
    uint8_t buf[sizeof(struct kvp_welcome)];
    struct pollfd pfd;
    int fd = -1, rc, st;
    ssize_t n;

    snprintf(path, sizeof(path), "%s/kvd.sock", c->run_dir);
    rc = kv_sock_connect(path);
    if (rc < 0)
        return rc;
    c->side_fd = rc;
    hello.pid = (uint32_t)getpid();
    rc = kv_sock_send(c->side_fd, &hello, sizeof(hello), -1);
    /* kvd refuses a peer at accept time: its welcome (with the reason) may already be queued
     * behind a closed socket, so read it before giving up on a failed hello */
    if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
        goto err_close_side;
    pfd = (struct pollfd){.fd = c->side_fd, .events = POLLIN};
    do
        rc = poll(&pfd, 1, c->timeout_ms);
    while (rc < 0 && errno == EINTR);
    if (rc <= 0) {
        rc = rc == 0 ? -ETIMEDOUT : -errno;
        goto err_close_side;
    }
    n = kv_sock_recv(c->side_fd, buf, sizeof(buf), &fd);
    if (n == -ECONNRESET) /* kvd closed before reading our hello: the error comes first, the */
        n = kv_sock_recv(c->side_fd, buf, sizeof(buf), &fd); /* queued welcome after it */
    if (n <= 0) {
        rc = n == 0 || n == -EPIPE ? -ECONNRESET : (int)n;
        goto err_close_fd;
    }
    st = kvp_decode_welcome(buf, (size_t)n, &c->welcome);
    if (st != KVP_OK) {
        rc = kvp_status_errno(st);
        goto err_close_fd;
    }
    rc = kv_arena_import(&c->arena, &c->welcome, fd, NULL, 0); /* takes fd */
    fd = -1;
    if (rc < 0)
        goto err_close_side;
    c->have_arena = 1;
    return 0;

err_close_fd:
    if (fd >= 0)
        close(fd);
err_close_side:
    close(c->side_fd);
    c->side_fd = -1;
    return rc;
}

static int zmq_open_dealer(struct kvc *c)
{
    char ep[KVC_RUN_DIR_MAX + 16];
    int zero = 0, rc;

    c->zctx = zmq_ctx_new();
    if (c->zctx == NULL)
        return errno ? -errno : -ENOMEM;
    zmq_ctx_set(c->zctx, ZMQ_BLOCKY, 0);
    c->zsock = zmq_socket(c->zctx, ZMQ_DEALER);
    if (c->zsock == NULL) {
        rc = -errno;
        goto err_ctx;
    }
    /* The in-flight table bounds what we queue, so ZeroMQ's high-water marks are not needed; with
     * them a dead kvd would block sends instead of being seen on the side channel. */
    zmq_setsockopt(c->zsock, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(c->zsock, ZMQ_SNDHWM, &zero, sizeof(zero));
    zmq_setsockopt(c->zsock, ZMQ_RCVHWM, &zero, sizeof(zero));
    snprintf(ep, sizeof(ep), "ipc://%s/kvd.zmq", c->run_dir);
    if (zmq_connect(c->zsock, ep) < 0) {
        rc = -errno;
        goto err_sock;
    }
    size_t fdlen = sizeof(c->zfd);
    if (zmq_getsockopt(c->zsock, ZMQ_FD, &c->zfd, &fdlen) < 0) {
        rc = -errno;
        goto err_sock;
    }
    return 0;

err_sock:
    zmq_close(c->zsock);
    c->zsock = NULL;
err_ctx:
    zmq_ctx_term(c->zctx);
    c->zctx = NULL;
    return rc;
}

static void kvc_disconnect(struct kvc *c, int detach)
{
    if (detach && c->state == KVC_ST_ATTACHED) {
        struct kvc_req r = {.op = KVP_OP_DETACH};
        if (kvc_int_send(c, &r, 1) == 0)
            kvc_int_wait(c, &r, KVC_CLOSE_TIMEOUT_MS);
    }
    if (c->zsock != NULL)
        zmq_close(c->zsock);
    if (c->zctx != NULL)
        zmq_ctx_term(c->zctx);
    c->zsock = c->zctx = NULL;
    c->zfd = -1;
    if (c->have_arena)
        kv_arena_close(&c->arena);
    memset(&c->arena, 0, sizeof(c->arena));
    c->arena.fd = -1;
    c->have_arena = 0;
    if (c->side_fd >= 0)
        close(c->side_fd);
    c->side_fd = -1;
    /* Late replies of the old connection must not match new requests. */
    memset(c->slots, 0, sizeof(c->slots));
    c->n_busy = 0;
    c->state = KVC_ST_DETACHED;
}

static int kvc_connect(struct kvc *c)
{
    struct kvc_req r = {.op = KVP_OP_ATTACH};
    int rc;

    rc = side_open(c);
    if (rc < 0)
        return rc;
    rc = zmq_open_dealer(c);
    if (rc < 0)
        goto err_disconnect;
    rc = kvc_int_send(c, &r, 1);
    if (rc == 0)
        rc = kvc_int_wait(c, &r, c->timeout_ms);
    if (rc == 0)
        rc = r.result;
    if (rc < 0)
        goto err_disconnect;
    if (c->rep.page_bytes == 0 || c->rep.page_bytes > c->arena.bytes ||
        c->rep.page_bytes != kv_page_bytes(&c->layout)) {
        rc = -EPROTO;
        goto err_disconnect;
    }
    c->state = KVC_ST_ATTACHED;
    return 0;

err_disconnect:
    kvc_disconnect(c, 0);
    return rc;
}

/* ---- public --------------------------------------------------------------------------------- */

KVC_API int kvc_open(const struct kvc_opts *o, struct kvc **out)
{
    const char *dir;
    struct kvc *c;
    int rc;

    if (o == NULL || out == NULL || !ns_valid(o->ns) || o->flags != 0 ||
        o->salt_len > KVC_SALT_MAX || (o->salt_len > 0 && o->salt == NULL))
        return -EINVAL;
    if (kv_layout_check((const struct kv_layout *)&o->layout) < 0)
        return -EINVAL;
    dir = o->run_dir ? o->run_dir : getenv("KVD_RUN_DIR");
    if (dir == NULL || dir[0] == '\0')
        dir = "/run/kvd";
    if (strlen(dir) >= KVC_RUN_DIR_MAX)
        return -ENAMETOOLONG;

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    strcpy(c->run_dir, dir);
    strncpy(c->ns, o->ns, sizeof(c->ns) - 1);
    memcpy(&c->layout, &o->layout, sizeof(c->layout));
    if (o->salt_len > 0)
        memcpy(c->salt, o->salt, o->salt_len);
    c->salt_len = o->salt_len;
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : KVC_DEFAULT_TIMEOUT_MS;
    c->side_fd = -1;
    c->zfd = -1;
    c->arena.fd = -1;
    c->pid = getpid();
    c->next_seq = 1;
    rc = kvc_hasher_init(&c->hasher, c->ns, &o->layout, c->salt, c->salt_len);
    if (rc < 0)
        goto err_free;
    rc = reg_add(c);
    if (rc < 0)
        goto err_free;
    rc = kvc_connect(c);
    if (rc < 0)
        goto err_unregister;
    *out = c;
    return 0;

err_unregister:
    reg_del(c);
err_free:
    free(c);
    return rc;
}

KVC_API void kvc_close(struct kvc *c)
{
    if (c == NULL)
        return;
    reg_del(c);
    /* A forked child owns none of this: leave the parent's sockets and mapping alone. */
    if (!c->forked && c->pid == getpid())
        kvc_disconnect(c, 1);
    free(c);
}

KVC_API int kvc_reconnect(struct kvc *c)
{
    if (c == NULL)
        return -EINVAL;
    if (c->forked || c->pid != getpid())
        return -ECHILD;
    kvc_int_fail_all(c, -ESHUTDOWN);
    kvc_disconnect(c, 0);
    return kvc_connect(c);
}

KVC_API int kvc_get_info(const struct kvc *c, struct kvc_info *out)
{
    int rc;

    if (c == NULL || out == NULL)
        return -EINVAL;
    rc = kvc_int_usable(c);
    if (rc < 0)
        return rc;
    memset(out, 0, sizeof(*out));
    out->client_id = c->rep.client_id;
    out->ns_id = c->rep.ns_id;
    out->page_bytes = c->rep.page_bytes;
    out->arena_bytes = c->arena.bytes;
    out->arena_base = c->arena.base;
    out->backend = c->arena.backend ? c->arena.backend : (int)c->welcome.backend;
    out->heartbeat_ms = c->rep.heartbeat_ms;
    out->max_batch = c->rep.max_batch;
    memcpy(out->gpu_uuid, c->welcome.gpu_uuid, sizeof(out->gpu_uuid));
    memcpy(&out->layout, &c->layout, sizeof(out->layout));
    return 0;
}

KVC_API void *kvc_page_ptr(const struct kvc *c, const struct kvc_page *p)
{
    if (c == NULL || p == NULL || c->state != KVC_ST_ATTACHED || c->forked || !c->have_arena)
        return NULL;
    if (p->offset > c->arena.bytes || c->rep.page_bytes > c->arena.bytes - p->offset)
        return NULL;
    return (uint8_t *)c->arena.base + p->offset;
}

KVC_API const struct kvc_hasher *kvc_get_hasher(const struct kvc *c)
{
    return c != NULL ? &c->hasher : NULL;
}
