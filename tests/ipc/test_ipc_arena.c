/*
 * test_ipc_arena.c - the host arena across real processes: export over a socketpair to a child
 * that maps it and writes a pattern; a child cannot resize the sealed memfd; import refuses fds
 * that are the wrong size or not sealed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "arena.h"
#include "sock.h"

#define ARENA_BYTES ((size_t)(1u << 20) + 100) /* rounded up to whole pages by create */

static struct kvp_welcome welcome_for(const struct kv_arena *a)
{
    struct kvp_welcome w;

    memset(&w, 0, sizeof(w));
    w.magic = KVP_MAGIC;
    w.version = KVP_VERSION;
    w.status = KVP_OK;
    w.client_id = 1;
    w.backend = (uint32_t)a->backend;
    w.arena_bytes = a->bytes;
    memcpy(w.gpu_uuid, a->gpu_uuid, sizeof(w.gpu_uuid));
    return w;
}

static void create_host(struct kv_arena *a)
{
    char why[256] = "";
    int ret = kv_arena_create(a, KVP_BACKEND_HOST, ARENA_BYTES, -1, why, sizeof(why));

    cr_assert_eq(ret, 0, "create: %d %s", ret, why);
    cr_assert_eq(a->backend, KVP_BACKEND_HOST);
    cr_assert_eq(a->bytes % (size_t)sysconf(_SC_PAGESIZE), 0);
    cr_assert_geq(a->bytes, ARENA_BYTES);
    cr_assert_geq(a->fd, 0);
    cr_assert_not_null(a->base);
}

static int fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* Child side: receive welcome + fd, import, run `act`, report a status byte. */
static int child_import(int sock, struct kv_arena *out)
{
    struct kvp_welcome w;
    char why[256];
    int fd = -1;
    ssize_t n = kv_sock_recv(sock, &w, sizeof(w), &fd);

    if (n != (ssize_t)sizeof(w) || kvp_decode_welcome(&w, sizeof(w), &w) != KVP_OK)
        return -EPROTO;
    return kv_arena_import(out, &w, fd, why, sizeof(why));
}

Test(arena_host, export_to_child_process)
{
    struct kv_arena a = {0};
    struct kvp_welcome w;
    int sv[2], st;
    char ack = 0;
    pid_t pid;

    create_host(&a);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct kv_arena mine;
        uint8_t *p;

        /* Forget the inherited mapping: only the received fd may give access to the arena. */
        munmap(a.base, a.bytes);
        close(a.fd);
        close(sv[0]);
        if (child_import(sv[1], &mine) != 0)
            _exit(2);
        if (!mine.imported || mine.bytes != a.bytes)
            _exit(3);
        p = mine.base;
        for (size_t i = 0; i < mine.bytes; i++)
            p[i] = (uint8_t)(i * 31 + 7);
        kv_arena_close(&mine);
        if (write(sv[1], "k", 1) != 1)
            _exit(4);
        _exit(0);
    }
    close(sv[1]);
    w = welcome_for(&a);
    cr_assert_eq(kv_sock_send(sv[0], &w, sizeof(w), a.fd), 0);
    cr_assert_eq(read(sv[0], &ack, 1), 1, "child did not finish");
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    for (size_t i = 0; i < a.bytes; i++) {
        uint8_t v = ((uint8_t *)a.base)[i];
        if (v != (uint8_t)(i * 31 + 7))
            cr_assert_fail("byte %zu is %u", i, v);
    }
    kv_arena_close(&a);
    cr_assert_eq(a.fd, -1);
    cr_assert_null(a.base);
}

/* A worker holding the fd cannot shrink, grow or reseal it; the daemon keeps using its mapping. */
Test(arena_host, child_cannot_resize)
{
    struct kv_arena a = {0};
    struct kvp_welcome w;
    int sv[2], st;
    pid_t pid;

    create_host(&a);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = -1;

        close(sv[0]);
        if (kv_sock_recv(sv[1], &w, sizeof(w), &fd) != (ssize_t)sizeof(w) || fd < 0)
            _exit(2);
        if (ftruncate(fd, 0) == 0 || errno != EPERM)
            _exit(3);
        if (ftruncate(fd, (off_t)a.bytes * 2) == 0 || errno != EPERM)
            _exit(4);
        if (fallocate(fd, 0, 0, (off_t)a.bytes * 2) == 0 || errno != EPERM)
            _exit(5);
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0 || errno != EPERM)
            _exit(6);
        _exit(0);
    }
    close(sv[1]);
    w = welcome_for(&a);
    cr_assert_eq(kv_sock_send(sv[0], &w, sizeof(w), a.fd), 0);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    /* Every page is still there: touching the whole arena must not SIGBUS. */
    memset(a.base, 0x5a, a.bytes);
    cr_assert_eq(((uint8_t *)a.base)[a.bytes - 1], 0x5a);
    kv_arena_close(&a);
}

Test(arena_host, import_rejects_wrong_size)
{
    struct kv_arena a = {0}, b = {0};
    struct kvp_welcome w;
    char why[256] = "";
    int fd;

    create_host(&a);
    w = welcome_for(&a);
    w.arena_bytes += 4096;
    fd = dup(a.fd);
    cr_assert_eq(kv_arena_import(&b, &w, fd, why, sizeof(why)), -EINVAL);
    cr_assert(strstr(why, "size") != NULL, "why: %s", why);
    cr_assert_eq(fd_is_open(fd), 0, "import owns the fd, also on error");
    cr_assert_null(b.base);
    cr_assert_eq(b.fd, -1);

    w.arena_bytes = a.bytes / 2;
    cr_assert_eq(kv_arena_import(&b, &w, dup(a.fd), why, sizeof(why)), -EINVAL);
    kv_arena_close(&a);
}

Test(arena_host, import_rejects_unsealed)
{
    struct kv_arena b = {0};
    struct kvp_welcome w;
    char why[256] = "", path[64] = "/tmp/kvipc-arena-XXXXXX";
    int fd;

    memset(&w, 0, sizeof(w));
    w.backend = KVP_BACKEND_HOST;
    w.arena_bytes = 1 << 20;

    fd = memfd_create("unsealed", MFD_CLOEXEC); /* no sealing allowed at all */
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 1 << 20), 0);
    cr_assert_eq(kv_arena_import(&b, &w, fd, why, sizeof(why)), -EPERM, "why: %s", why);
    cr_assert_eq(fd_is_open(fd), 0);

    fd = memfd_create("half-sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 1 << 20), 0);
    cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0); /* can still grow and be resealed */
    cr_assert_eq(kv_arena_import(&b, &w, fd, why, sizeof(why)), -EPERM, "why: %s", why);
    cr_assert(strstr(why, "sealed") != NULL, "why: %s", why);

    cr_assert_not_null(mkdtemp(path));
    strcat(path, "/f");
    fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, 1 << 20), 0);
    unlink(path);
    *strrchr(path, '/') = '\0';
    rmdir(path);
    cr_assert_lt(kv_arena_import(&b, &w, fd, why, sizeof(why)), 0, "a plain file is not an arena");

    cr_assert_eq(kv_arena_import(&b, &w, -1, why, sizeof(why)), -EBADF);
    cr_assert_null(b.base);
}

Test(arena_host, bad_arguments_and_close)
{
    struct kv_arena a, z;
    struct kvp_welcome w;
    char why[128] = "";

    if (!fd_is_open(0))
        cr_assert_eq(open("/dev/null", O_RDONLY), 0);
    memset(&z, 0, sizeof(z));
    kv_arena_close(&z); /* zeroed: fd is 0 there, and must not be closed */
    cr_assert(fd_is_open(0));
    cr_assert_eq(kv_arena_create(&a, KVP_BACKEND_HOST, 0, -1, why, sizeof(why)), -EINVAL);
    cr_assert_eq(a.fd, -1);
    cr_assert_null(a.ops);
    cr_assert_eq(kv_arena_create(&a, 77, 4096, -1, why, sizeof(why)), -ENOTSUP);
    cr_assert(why[0] != '\0');
    memset(&w, 0, sizeof(w));
    w.backend = 77;
    cr_assert_eq(kv_arena_import(&a, &w, -1, why, sizeof(why)), -ENOTSUP);

    create_host(&a);
    kv_arena_close(&a);
    kv_arena_close(&a); /* twice is fine */
    cr_assert_eq(a.fd, -1);
}

#ifndef KVD_HAVE_CUDA
Test(arena_host, auto_without_cuda_is_host)
{
    struct kv_arena a;
    char why[256] = "";

    cr_assert_eq(kv_cuda_probe(why, sizeof(why)), -ENOTSUP);
    cr_assert_eq(kv_arena_create(&a, 0, ARENA_BYTES, -1, why, sizeof(why)), 0);
    cr_assert_eq(a.backend, KVP_BACKEND_HOST);
    cr_assert(strstr(why, "without CUDA") != NULL, "why: %s", why);
    kv_arena_close(&a);
}
#endif
