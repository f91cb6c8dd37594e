/*
 * arena.c - backend selection for the shared page arena (arena.h).
 *
 * Invariants:
 *  1. An arena is either closed (ops == NULL, fd == -1, base == NULL) or fully set up by one
 *     backend; kv_arena_create/kv_arena_import leave it closed on every error.
 *  2. kv_arena_import owns the fd it is given from the moment it is called: on success the arena
 *     holds it, on error it has been closed. Backends' import() never close it on error.
 *  3. Automatic selection (backend 0): CUDA VMM when kv_cuda_probe finds a device, CUDA legacy if
 *     VMM creation fails on that device, host memory when there is no device (and `why` says why).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"

static void arena_reset(struct kv_arena *a)
{
    memset(a, 0, sizeof(*a));
    a->fd = -1;
    a->device = -1;
}

static const struct kv_arena_ops *arena_ops_for(int backend)
{
    switch (backend) {
    case KVP_BACKEND_HOST:
        return &kv_arena_host_ops;
#ifdef KVD_HAVE_CUDA
    case KVP_BACKEND_CUDA_VMM:
        return &kv_arena_cuda_vmm_ops;
    case KVP_BACKEND_CUDA_LEGACY:
        return &kv_arena_cuda_legacy_ops;
#endif
    default:
        return NULL;
    }
}

static int arena_create_with(struct kv_arena *a, const struct kv_arena_ops *ops, size_t bytes,
                             int device, char *why, size_t whylen)
{
    int ret;

    arena_reset(a);
    a->ops = ops;
    a->backend = ops->backend;
    ret = ops->create(a, bytes, device, why, whylen);
    if (ret < 0)
        arena_reset(a);
    else if (why != NULL && whylen > 0)
        why[0] = '\0'; /* `why` explains failures and fallbacks only */
    return ret;
}

#ifndef KVD_HAVE_CUDA
int kv_cuda_probe(char *why, size_t whylen)
{
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "kvd was built without CUDA");
    return -ENOTSUP;
}
#endif

int kv_arena_create(struct kv_arena *a, int backend, size_t bytes, int device, char *why,
                    size_t whylen)
{
    const struct kv_arena_ops *ops;
    char reason[192] = "";
    int ret;

    if (why != NULL && whylen > 0)
        why[0] = '\0';
    if (backend != 0) {
        ops = arena_ops_for(backend);
        if (ops == NULL) {
            arena_reset(a);
            if (why != NULL && whylen > 0)
                snprintf(why, whylen, "arena backend %d is not built in", backend);
            return -ENOTSUP;
        }
        return arena_create_with(a, ops, bytes, device, why, whylen);
    }

    ret = kv_cuda_probe(reason, sizeof(reason));
#ifdef KVD_HAVE_CUDA
    if (ret > 0) {
        char vmm_reason[192] = "";

        ret = arena_create_with(a, &kv_arena_cuda_vmm_ops, bytes, device < 0 ? 0 : device,
                                vmm_reason, sizeof(vmm_reason));
        if (ret == 0)
            return 0;
        ret = arena_create_with(a, &kv_arena_cuda_legacy_ops, bytes, device < 0 ? 0 : device,
                                reason, sizeof(reason));
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "%s; fallback: %s", vmm_reason,
                     ret == 0 ? "using legacy CUDA IPC" : reason);
        return ret;
    }
#endif
    ret = arena_create_with(a, &kv_arena_host_ops, bytes, -1, why, whylen);
    if (ret == 0 && why != NULL && whylen > 0)
        snprintf(why, whylen, "%s; using host arena", reason);
    return ret;
}

int kv_arena_import(struct kv_arena *a, const struct kvp_welcome *w, int fd, char *why,
                    size_t whylen)
{
    const struct kv_arena_ops *ops = arena_ops_for((int)w->backend);
    int ret;

    arena_reset(a);
    if (why != NULL && whylen > 0)
        why[0] = '\0';
    if (ops == NULL) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "arena backend %u is not built in", (unsigned)w->backend);
        ret = -ENOTSUP;
        goto err_close_fd;
    }
    a->ops = ops;
    a->backend = ops->backend;
    a->imported = 1;
    memcpy(a->gpu_uuid, w->gpu_uuid, sizeof(a->gpu_uuid));
    memcpy(a->legacy_handle, w->legacy_handle, sizeof(a->legacy_handle));
    ret = ops->import(a, w, fd, why, whylen);
    if (ret < 0) {
        arena_reset(a);
        goto err_close_fd;
    }
    if (why != NULL && whylen > 0)
        why[0] = '\0';
    return 0;

err_close_fd:
    if (fd >= 0)
        close(fd);
    return ret;
}

void kv_arena_close(struct kv_arena *a)
{
    if (a->ops != NULL && a->ops->close != NULL)
        a->ops->close(a);
    arena_reset(a);
}
