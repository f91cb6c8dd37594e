/*
 * arena.h - the shared page arena and its backends.
 *
 * kvd creates one arena (per device) and exports it; workers import it and read/write pages in
 * place. Backends coexist at run time, so they sit behind one small ops table:
 *
 *   host        memfd, sealed against shrink/grow/seal, pre-populated with fallocate, exported as
 *               the fd itself over SCM_RIGHTS.
 *   cuda_vmm    cuMemCreate with POSIX fd handles (the default on a GPU); fd over SCM_RIGHTS.
 *   cuda_legacy cudaMalloc + cudaIpcGetMemHandle; handle bytes in the welcome message.
 *
 * All functions return 0 or a negative errno and never print; `why` (when non-NULL) receives a
 * one-line human explanation of a failure or a fallback.
 */
#ifndef KV_ARENA_H
#define KV_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kv_arena;

struct kv_arena_ops {
    const char *name;
    int backend; /* enum kvp_backend */
    /* daemon side: allocate `bytes`, fill a->base, a->fd (or -1), a->gpu_uuid, a->legacy_handle */
    int (*create)(struct kv_arena *a, size_t bytes, int device, char *why, size_t whylen);
    /* worker side: map an exported arena described by w (fd is the SCM_RIGHTS fd or -1) */
    int (*import)(struct kv_arena *a, const struct kvp_welcome *w, int fd, char *why,
                  size_t whylen);
    void (*close)(struct kv_arena *a);
};

struct kv_arena {
    const struct kv_arena_ops *ops;
    int backend; /* enum kvp_backend */
    int fd;      /* exportable fd (host memfd / VMM fd), -1 if none; owned */
    size_t bytes;
    void *base;   /* host pointer (host) or device pointer (CUDA) */
    int device;   /* CUDA device ordinal, -1 for host */
    int imported; /* 1 on the worker side */
    uint8_t gpu_uuid[16];
    uint8_t legacy_handle[64];
    void *priv; /* backend state */
};

extern const struct kv_arena_ops kv_arena_host_ops;
#ifdef KVD_HAVE_CUDA
extern const struct kv_arena_ops kv_arena_cuda_vmm_ops;
extern const struct kv_arena_ops kv_arena_cuda_legacy_ops;
#endif

/* Number of usable CUDA devices, or a negative errno: -ENODEV when the toolkit is present but there
 * is no device or no driver (any cudaGetDeviceCount error counts as "no device"), -ENOTSUP when kvd
 * was built without CUDA. `why` says which. */
int kv_cuda_probe(char *why, size_t whylen);

/* Daemon side. backend = 0 picks automatically: CUDA VMM when a device is present, else host.
 * On error nothing is left allocated. */
int kv_arena_create(struct kv_arena *a, int backend, size_t bytes, int device, char *why,
                    size_t whylen);
/* Worker side: import what a welcome describes. Takes ownership of fd (closed on error too). */
int kv_arena_import(struct kv_arena *a, const struct kvp_welcome *w, int fd, char *why,
                    size_t whylen);
/* Unmap and free; safe on a zeroed or already closed arena. */
void kv_arena_close(struct kv_arena *a);

#ifdef __cplusplus
}
#endif
#endif
