/*
 * sock.c - unix SOCK_SEQPACKET helpers for the side channel (sock.h).
 *
 * Invariants:
 *  1. Every fd this module creates or receives is close-on-exec (SOCK_CLOEXEC, MSG_CMSG_CLOEXEC,
 *     pidfds are always CLOEXEC).
 *  2. kv_sock_recv never leaks a received fd: it keeps at most one (the first SCM_RIGHTS fd) and
 *     closes every other one; on any error return it has closed them all.
 *  3. Functions return 0, a byte count or a negative errno, retry EINTR, and never print.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "sock.h"

#define KV_SOCK_MAX_FDS 8 /* fds we make room for in one datagram; more is MSG_CTRUNC */

int kv_sock_send(int sock, const void *buf, size_t len, int fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    if (fd >= 0) {
        struct cmsghdr *c;

        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    do {
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EMSGSIZE;
}

ssize_t kv_sock_recv(int sock, void *buf, size_t len, int *fd)
{
    union {
        /* room for the fds and for SCM_CREDENTIALS, should the caller have set SO_PASSCRED */
        char buf[CMSG_SPACE(sizeof(int) * KV_SOCK_MAX_FDS) + CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    int kept = -1;
    ssize_t n;

    *fd = -1;
    memset(&ctl, 0, sizeof(ctl));
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    do {
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;

    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        size_t nfd;

        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int f;

            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (kept < 0)
                kept = f;
            else
                close(f);
        }
    }
    /* A truncated payload or control block means the peer sent something we cannot trust to be
     * whole: drop it entirely. (The kernel already released fds that did not fit.) */
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        if (kept >= 0)
            close(kept);
        return -EMSGSIZE;
    }
    *fd = kept;
    return n;
}

int kv_sock_peer(int sock, struct kv_peer *peer)
{
    struct ucred cr;
    socklen_t sl = sizeof(cr);

    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &sl) < 0)
        return -errno;
    if (sl != sizeof(cr))
        return -EPROTO;
    peer->pid = cr.pid;
    peer->uid = cr.uid;
    peer->gid = cr.gid;
    return 0;
}

int kv_sock_peer_in_group(int sock, gid_t gid)
{
    gid_t small[64];
    gid_t *groups = small;
    socklen_t sl = sizeof(small);
    int ret = 0;

    if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups, &sl) < 0) {
        if (errno != ERANGE)
            return -errno;
        /* sl now holds the size the kernel needs (NGROUPS_MAX bounds it at 256 KiB). */
        groups = malloc(sl);
        if (groups == NULL)
            return -ENOMEM;
        if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups, &sl) < 0) {
            ret = -errno;
            goto out_free;
        }
    }
    for (size_t i = 0; i < sl / sizeof(gid_t); i++) {
        if (groups[i] == gid) {
            ret = 1;
            break;
        }
    }
out_free:
    if (groups != small)
        free(groups);
    return ret;
}

static int sock_addr(const char *path, struct sockaddr_un *sa)
{
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, n);
    return 0;
}

static int sock_connect_addr(const struct sockaddr_un *sa)
{
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    int ret;

    if (s < 0)
        return -errno;
    ret = connect(s, (const struct sockaddr *)sa, sizeof(*sa));
    if (ret < 0 && errno == EINTR) {
        /* The connection attempt continues asynchronously; unix sockets finish it at once in
         * practice, but a retried connect() would fail with EALREADY, so report EINTR. */
        ret = -EINTR;
        goto err_close;
    }
    if (ret < 0) {
        ret = -errno;
        goto err_close;
    }
    return s;

err_close:
    close(s);
    return ret;
}

/* A socket file at path is stale when nobody accepts connections on it: remove it. A live one is
 * another daemon's (-EADDRINUSE); a path that is not a socket is left alone (-EEXIST). */
static int sock_clear_stale(const struct sockaddr_un *sa)
{
    struct stat st;
    int s;

    if (lstat(sa->sun_path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    s = sock_connect_addr(sa);
    if (s >= 0) {
        close(s);
        return -EADDRINUSE;
    }
    if (s == -EPROTOTYPE)
        return -EADDRINUSE; /* someone's stream or datagram socket: not ours to remove */
    if (s != -ECONNREFUSED && s != -ENOENT)
        return s;
    if (unlink(sa->sun_path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int kv_sock_listen(const char *path, unsigned mode)
{
    struct sockaddr_un sa;
    int s, ret;

    ret = sock_addr(path, &sa);
    if (ret < 0)
        return ret;
    ret = sock_clear_stale(&sa);
    if (ret < 0)
        return ret;
    s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        ret = -errno;
        goto err_close;
    }
    /* Permissions before listen(): until then every connect() is refused, so no peer can slip in
     * through a wider umask-derived mode. */
    if (chmod(path, mode) < 0) {
        ret = -errno;
        goto err_unlink;
    }
    if (listen(s, SOMAXCONN) < 0) {
        ret = -errno;
        goto err_unlink;
    }
    return s;

err_unlink:
    unlink(path);
err_close:
    close(s);
    return ret;
}

int kv_sock_connect(const char *path)
{
    struct sockaddr_un sa;
    int ret = sock_addr(path, &sa);

    if (ret < 0)
        return ret;
    return sock_connect_addr(&sa);
}

int kv_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0);

    return fd < 0 ? -errno : (int)fd;
#else
    (void)pid;
    return -ENOSYS;
#endif
}
