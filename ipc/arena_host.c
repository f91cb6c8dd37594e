/*
 * arena_host.c - the host-memory arena backend: a sealed memfd shared by every process.
 *
 * Daemon side (create): memfd_create -> ftruncate -> fallocate (pre-populate: pages exist before
 * any worker touches them, and a full tmpfs fails here rather than as SIGBUS later) -> seal
 * F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL -> mmap MAP_SHARED. The fd is what kvd sends to workers.
 *
 * Worker side (import): the fd is trusted only after fstat says it is exactly
 * welcome.arena_bytes long and F_GET_SEALS shows shrink, grow and seal-seal; then it is mapped
 * MAP_SHARED|MAP_POPULATE.
 *
 * Invariant: once sealed, no process holding the fd can change its size, so no mapping of the
 * arena can ever fault with SIGBUS (an unsealed memfd truncated by a worker kills the daemon on its
 * next access; measured in MEASURED.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"

#define HOST_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static int host_why(char *why, size_t whylen, int err, const char *what)
{
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "host arena: %s: %s", what, strerror(-err));
    return err;
}

static int host_create(struct kv_arena *a, size_t bytes, int device, char *why, size_t whylen)
{
    long pg = sysconf(_SC_PAGESIZE);
    void *base;
    int fd, ret;

    (void)device;
    if (bytes == 0 || pg <= 0 || bytes > ((size_t)1 << 62))
        return host_why(why, whylen, -EINVAL, "size out of range");
    bytes = (bytes + (size_t)pg - 1) / (size_t)pg * (size_t)pg;

    fd = memfd_create("kvd-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return host_why(why, whylen, -errno, "memfd_create");
    if (ftruncate(fd, (off_t)bytes) < 0) {
        ret = host_why(why, whylen, -errno, "ftruncate");
        goto err_close;
    }
    if (fallocate(fd, 0, 0, (off_t)bytes) < 0) {
        ret = host_why(why, whylen, -errno, "fallocate");
        goto err_close;
    }
    if (fcntl(fd, F_ADD_SEALS, HOST_SEALS) < 0) {
        ret = host_why(why, whylen, -errno, "F_ADD_SEALS");
        goto err_close;
    }
    base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        ret = host_why(why, whylen, -errno, "mmap");
        goto err_close;
    }
    a->fd = fd;
    a->bytes = bytes;
    a->base = base;
    a->device = -1;
    return 0;

err_close:
    close(fd);
    return ret;
}

static int host_import(struct kv_arena *a, const struct kvp_welcome *w, int fd, char *why,
                       size_t whylen)
{
    struct stat st;
    void *base;
    int seals;

    if (fd < 0)
        return host_why(why, whylen, -EBADF, "no arena fd received");
    if (fstat(fd, &st) < 0)
        return host_why(why, whylen, -errno, "fstat");
    if (!S_ISREG(st.st_mode))
        return host_why(why, whylen, -EINVAL, "arena fd is not a memfd");
    if (w->arena_bytes == 0 || st.st_size < 0 || (uint64_t)st.st_size != w->arena_bytes)
        return host_why(why, whylen, -EINVAL, "arena fd size differs from welcome");
    seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return host_why(why, whylen, -errno, "F_GET_SEALS (not a sealable memfd)");
    if ((seals & HOST_SEALS) != HOST_SEALS)
        return host_why(why, whylen, -EPERM, "arena memfd is not sealed against resizing");
    base = mmap(NULL, (size_t)w->arena_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                0);
    if (base == MAP_FAILED)
        return host_why(why, whylen, -errno, "mmap");
    a->fd = fd;
    a->bytes = (size_t)w->arena_bytes;
    a->base = base;
    a->device = -1;
    return 0;
}

static void host_close(struct kv_arena *a)
{
    if (a->base != NULL)
        munmap(a->base, a->bytes);
    if (a->fd >= 0)
        close(a->fd);
    a->base = NULL;
    a->fd = -1;
}

const struct kv_arena_ops kv_arena_host_ops = {
    .name = "host",
    .backend = KVP_BACKEND_HOST,
    .create = host_create,
    .import = host_import,
    .close = host_close,
};
