/*
 * test_ipc_sock.c - unix-socket helpers on real sockets and real processes: fd passing (and
 * closing of extra fds), truncation, peer credentials (with a child that drops to nobody), the
 * listening-socket life cycle and pidfds.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "sock.h"

static char dir[64];

static void mkdir_tmp(void)
{
    strcpy(dir, "/tmp/kvipc-sock-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void rm_tmp(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        cr_log_warn("could not remove %s", dir);
}

TestSuite(sock, .init = mkdir_tmp, .fini = rm_tmp);

static void pair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

/* 1 if every write end of the pipe whose read end is rfd has been closed (read sees EOF). */
static int pipe_writers_gone(int rfd)
{
    char c;
    int fl = fcntl(rfd, F_GETFL);

    fcntl(rfd, F_SETFL, fl | O_NONBLOCK);
    return read(rfd, &c, 1) == 0;
}

Test(sock, fd_passing)
{
    int sv[2], p[2], got = -1;
    char buf[16] = {0}, c = 0;

    pair(sv);
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(kv_sock_send(sv[0], "hello", 5, p[1]), 0);
    cr_assert_eq(kv_sock_recv(sv[1], buf, sizeof(buf), &got), 5);
    cr_assert_str_eq(buf, "hello");
    cr_assert_geq(got, 0);
    cr_assert_neq(got, p[1]);
    cr_assert(fcntl(got, F_GETFD) & FD_CLOEXEC, "received fds are close-on-exec");
    cr_assert_eq(write(got, "z", 1), 1);
    cr_assert_eq(read(p[0], &c, 1), 1);
    cr_assert_eq(c, 'z');

    cr_assert_eq(kv_sock_send(sv[0], "x", 1, -1), 0);
    cr_assert_eq(kv_sock_recv(sv[1], buf, sizeof(buf), &got), 1);
    cr_assert_eq(got, -1, "no fd attached");
}

Test(sock, extra_fds_are_closed)
{
    int sv[2], a[2], b[2], got = -1, fds[2];
    char cbuf[CMSG_SPACE(2 * sizeof(int))] = {0}, buf[8];
    struct iovec iov = {.iov_base = "m", .iov_len = 1};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

    pair(sv);
    cr_assert_eq(pipe(a), 0);
    cr_assert_eq(pipe(b), 0);
    fds[0] = a[1];
    fds[1] = b[1];
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(fds));
    memcpy(CMSG_DATA(c), fds, sizeof(fds));
    cr_assert_eq(sendmsg(sv[0], &mh, 0), 1);
    close(a[1]);
    close(b[1]);

    cr_assert_eq(kv_sock_recv(sv[1], buf, sizeof(buf), &got), 1);
    cr_assert_geq(got, 0);
    cr_assert_eq(pipe_writers_gone(b[0]), 1, "the extra fd must have been closed");
    cr_assert_eq(pipe_writers_gone(a[0]), 0, "the first fd is kept");
    close(got);
    cr_assert_eq(pipe_writers_gone(a[0]), 1);
}

Test(sock, truncated_datagram)
{
    int sv[2], p[2], got = 123;
    char big[64] = {0}, small[8];

    pair(sv);
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(kv_sock_send(sv[0], big, sizeof(big), p[1]), 0);
    close(p[1]);
    cr_assert_eq(kv_sock_recv(sv[1], small, sizeof(small), &got), -EMSGSIZE);
    cr_assert_eq(got, -1);
    cr_assert_eq(pipe_writers_gone(p[0]), 1, "fd of a truncated datagram is closed");
}

Test(sock, orderly_close)
{
    int sv[2], got = 5;
    char buf[8];

    pair(sv);
    close(sv[0]);
    cr_assert_eq(kv_sock_recv(sv[1], buf, sizeof(buf), &got), 0);
    cr_assert_eq(got, -1);
    cr_assert_eq(kv_sock_send(sv[1], "x", 1, -1), -EPIPE, "no SIGPIPE, an error");
}

Test(sock, peer_creds_self)
{
    struct kv_peer peer;
    int sv[2];

    pair(sv);
    cr_assert_eq(kv_sock_peer(sv[0], &peer), 0);
    cr_assert_eq(peer.pid, getpid());
    cr_assert_eq(peer.uid, getuid());
    cr_assert_eq(peer.gid, getgid());
    cr_assert_eq(kv_sock_peer_in_group(sv[0], 0xfffffff0u), 0);
}

/* A child drops to uid/gid 65534 (groups {65534}) before connecting: kvd must see who it really
 * is. Only meaningful as root (CI runs as root; elsewhere it is skipped). */
Test(sock, peer_creds_dropped_child)
{
    char path[128];
    struct kv_peer peer;
    int ls, cs, st;
    char c;
    pid_t pid;

    if (geteuid() != 0)
        cr_skip_test("needs root to drop privileges");
    cr_assert_eq(chmod(dir, 0711), 0);
    snprintf(path, sizeof(path), "%s/side.sock", dir);
    ls = kv_sock_listen(path, 0666);
    cr_assert_geq(ls, 0, "listen: %s", strerror(-ls));

    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        gid_t g = 65534;
        int s;

        if (setgroups(1, &g) < 0 || setresgid(g, g, g) < 0 || setresuid(65534, 65534, 65534) < 0)
            _exit(2);
        s = kv_sock_connect(path);
        if (s < 0)
            _exit(3);
        if (kv_sock_send(s, "h", 1, -1) < 0)
            _exit(4);
        (void)!read(s, &c, 1); /* wait until the parent has looked */
        _exit(0);
    }
    cs = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(cs, 0);
    cr_assert_eq(read(cs, &c, 1), 1);
    cr_assert_eq(kv_sock_peer(cs, &peer), 0);
    cr_expect_eq(peer.pid, pid);
    cr_expect_eq(peer.uid, 65534);
    cr_expect_eq(peer.gid, 65534);
    cr_expect_eq(kv_sock_peer_in_group(cs, 65534), 1);
    cr_expect_eq(kv_sock_peer_in_group(cs, 0), 0, "root's group was dropped");
    close(cs);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    close(ls);
}

Test(sock, listen_life_cycle)
{
    char path[128], file[128];
    struct stat stt;
    int l1, l2, c, fd;

    snprintf(path, sizeof(path), "%s/kvd.sock", dir);
    l1 = kv_sock_listen(path, 0660);
    cr_assert_geq(l1, 0);
    cr_assert_eq(stat(path, &stt), 0);
    cr_assert_eq(stt.st_mode & 0777, 0660);
    cr_assert(fcntl(l1, F_GETFD) & FD_CLOEXEC);

    cr_assert_eq(kv_sock_listen(path, 0660), -EADDRINUSE, "a live socket is not stale");
    c = kv_sock_connect(path);
    cr_assert_geq(c, 0);
    close(c);

    close(l1); /* the socket file stays behind: stale */
    cr_assert_eq(stat(path, &stt), 0);
    l2 = kv_sock_listen(path, 0600);
    cr_assert_geq(l2, 0, "stale socket replaced: %s", strerror(-l2));
    close(l2);

    snprintf(file, sizeof(file), "%s/plain", dir);
    fd = open(file, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(kv_sock_listen(file, 0600), -EEXIST, "never unlinks a non-socket");
    cr_assert_eq(stat(file, &stt), 0);

    /* A live socket of another type at the path belongs to someone else: left alone. */
    {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int st = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/stream.sock", dir);
        cr_assert_eq(bind(st, (struct sockaddr *)&sa, sizeof(sa)), 0);
        cr_assert_eq(listen(st, 1), 0);
        cr_assert_eq(kv_sock_listen(sa.sun_path, 0600), -EADDRINUSE);
        cr_assert_eq(stat(sa.sun_path, &stt), 0);
        close(st);
    }
}

Test(sock, connect_errors)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/missing.sock", dir);
    cr_assert_eq(kv_sock_connect(path), -ENOENT);
    memset(path, 'a', sizeof(path) - 1);
    path[sizeof(path) - 1] = '\0';
    cr_assert_eq(kv_sock_connect(path), -ENAMETOOLONG);
    cr_assert_eq(kv_sock_listen(path, 0600), -ENAMETOOLONG);
}

Test(sock, pidfd_sees_exit)
{
    struct pollfd pfd;
    int fd, st;
    pid_t pid = fork();

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        usleep(50 * 1000);
        _exit(7);
    }
    fd = kv_pidfd_open(pid);
    if (fd == -ENOSYS)
        cr_skip_test("pidfd_open not supported by this kernel");
    cr_assert_geq(fd, 0, "pidfd_open: %s", strerror(-fd));
    cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    pfd = (struct pollfd){.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 10000), 1, "pidfd becomes readable when the child exits");
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert_eq(WEXITSTATUS(st), 7);
    close(fd);
    cr_assert_eq(kv_pidfd_open(-1), -EINVAL);
}
