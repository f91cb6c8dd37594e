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
#include <unistd.h>

#include <criterion/criterion.h>

#include "arena.h"

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
