/*
 * test_ipc_cuda.c - the CUDA arena backends up to the first call that needs a device. Built only
 * with CUDA. On a machine without a GPU (or without a driver) the probe must say -ENODEV with a
 * reason and automatic selection must fall back to the host arena; with a device, the VMM arena
 * must be chosen instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <cuda_runtime_api.h>

#include "arena.h"
#include "sock.h"

Test(arena_cuda, probe_and_auto_fallback)
{
    char why[256] = "", why2[256] = "";
    struct kv_arena a;
    int n = kv_cuda_probe(why, sizeof(why));

    cr_assert(why[0] != '\0', "probe must explain itself");
    cr_assert_eq(kv_arena_create(&a, 0, 1 << 20, -1, why2, sizeof(why2)), 0, "why: %s", why2);
    if (n > 0) {
        cr_assert_eq(a.backend, KVP_BACKEND_CUDA_VMM, "why: %s", why2);
        kv_arena_close(&a);
        return;
    }
    cr_assert_eq(n, -ENODEV, "probe: %d %s", n, why);
    cr_assert(strncmp(why, "no CUDA device", 14) == 0, "why: %s", why);
    cr_assert_eq(a.backend, KVP_BACKEND_HOST);
    cr_assert(strstr(why2, why) != NULL, "fallback reason '%s' must carry '%s'", why2, why);
    cr_assert(strstr(why2, "host arena") != NULL, "why: %s", why2);
    kv_arena_close(&a);
}

Test(arena_cuda, explicit_backends_without_device)
{
    struct kvp_welcome w;
    struct kv_arena a;
    char why[256] = "";
    int fd;

    if (kv_cuda_probe(NULL, 0) > 0)
        cr_skip_test("a CUDA device is present");
    cr_assert_eq(kv_arena_create(&a, KVP_BACKEND_CUDA_VMM, 1 << 20, 0, why, sizeof(why)), -ENODEV);
    cr_assert(why[0] != '\0');
    cr_assert_null(a.ops);
    cr_assert_eq(kv_arena_create(&a, KVP_BACKEND_CUDA_LEGACY, 1 << 20, 0, why, sizeof(why)),
                 -ENODEV);
    memset(&w, 0, sizeof(w));
    w.backend = KVP_BACKEND_CUDA_VMM;
    w.arena_bytes = 2 << 20;
    fd = memfd_create("not-a-gpu", MFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(kv_arena_import(&a, &w, fd, why, sizeof(why)), -ENODEV, "why: %s", why);
    cr_assert_eq(fcntl(fd, F_GETFD), -1, "import closed the fd it owns");
}

/*
 * Cross-process GPU arena: a child (forked before this process touches CUDA, since a CUDA context
 * must not cross fork) imports the arena the parent created, fills it with a byte, and the parent
 * reads it back from the device. Runs for both backends; skipped without a device.
 */
static void cross_process(int backend)
{
    struct kv_arena a;
    struct kvp_welcome w;
    char why[256] = "", ack = 0;
    int sv[2], st, n;
    pid_t pid;

    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct kv_arena mine;
        int fd = -1;

        close(sv[0]);
        if (kv_sock_recv(sv[1], &w, sizeof(w), &fd) != (ssize_t)sizeof(w))
            _exit(0); /* parent found no device and closed the socket */
        if (kvp_decode_welcome(&w, sizeof(w), &w) != KVP_OK)
            _exit(2);
        if (kv_arena_import(&mine, &w, fd, why, sizeof(why)) != 0)
            _exit(3);
        if (cudaMemset(mine.base, 0x5a, mine.bytes) != cudaSuccess ||
            cudaDeviceSynchronize() != cudaSuccess)
            _exit(4);
        kv_arena_close(&mine);
        _exit(write(sv[1], "k", 1) == 1 ? 0 : 5);
    }
    close(sv[1]);
    n = kv_cuda_probe(why, sizeof(why));
    if (n <= 0) {
        close(sv[0]);
        waitpid(pid, &st, 0);
        cr_skip_test("%s", why);
    }
    cr_assert_eq(kv_arena_create(&a, backend, 3u << 20, 0, why, sizeof(why)), 0, "why: %s", why);
    memset(&w, 0, sizeof(w));
    w.magic = KVP_MAGIC;
    w.version = KVP_VERSION;
    w.backend = (uint32_t)a.backend;
    w.arena_bytes = a.bytes;
    memcpy(w.gpu_uuid, a.gpu_uuid, sizeof(w.gpu_uuid));
    memcpy(w.legacy_handle, a.legacy_handle, sizeof(w.legacy_handle));
    cr_assert_eq(kv_sock_send(sv[0], &w, sizeof(w), a.fd), 0);
    cr_assert_eq(read(sv[0], &ack, 1), 1, "child failed");
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    {
        static uint8_t host[3u << 20];
        cr_assert_eq(cudaMemcpy(host, a.base, sizeof(host), cudaMemcpyDeviceToHost), cudaSuccess);
        for (size_t i = 0; i < sizeof(host); i++)
            if (host[i] != 0x5a)
                cr_assert_fail("byte %zu is %u", i, host[i]);
    }
    kv_arena_close(&a);
}

Test(arena_cuda, vmm_cross_process)
{
    cross_process(KVP_BACKEND_CUDA_VMM);
}

Test(arena_cuda, legacy_cross_process)
{
    cross_process(KVP_BACKEND_CUDA_LEGACY);
}
