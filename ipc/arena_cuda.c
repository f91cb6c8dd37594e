/*
 * arena_cuda.c - GPU arena backends: CUDA virtual memory shared as a POSIX fd (default) and legacy
 * cudaIpcMemHandle (fallback). Compiled only when KVD_HAVE_CUDA.
 *
 * Driver-API functions are reached through cudaGetDriverEntryPointByVersion, never linked, so the
 * binaries load (and fall back to the host arena) on machines without an NVIDIA driver. Without a
 * driver cudaGetDeviceCount fails with error 35 rather than 100: any error there means "no device".
 *
 * VMM export (create):  granularity -> cuMemCreate(POSIX fd handle type) -> cuMemAddressReserve ->
 *                       cuMemMap -> cuMemSetAccess(rw, this device) ->
 * cuMemExportToShareableHandle. VMM import:           find the device with the welcome's UUID ->
 * cuMemImportFromShareableHandle -> reserve -> map -> set access. Legacy:               cudaMalloc
 * + cudaIpcGetMemHandle / cudaIpcOpenMemHandle (which refuses a handle from its own process and
 * maps the whole allocation).
 *
 * Invariants:
 *  1. One arena per GPU; importers select the device by UUID, never by ordinal (ordinals differ
 *     between processes with different CUDA_VISIBLE_DEVICES).
 *  2. The exporter keeps the allocation (handle and mapping) alive until kv_arena_close; importers
 *     hold their own reference through the imported handle.
 *  3. On any error everything acquired so far is released (goto chain) and a->priv is NULL.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "arena.h"

#define CUDA_ENTRY_VERSION 12000 /* ABI of the driver entry points we call */

typedef CUresult (*pfn_granularity)(size_t *, const CUmemAllocationProp *,
                                    CUmemAllocationGranularity_flags);
typedef CUresult (*pfn_create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                               unsigned long long);
typedef CUresult (*pfn_reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
typedef CUresult (*pfn_map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                            unsigned long long);
typedef CUresult (*pfn_set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
typedef CUresult (*pfn_export)(void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType,
                               unsigned long long);
typedef CUresult (*pfn_import)(CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType);
typedef CUresult (*pfn_unmap)(CUdeviceptr, size_t);
typedef CUresult (*pfn_addr_free)(CUdeviceptr, size_t);
typedef CUresult (*pfn_release)(CUmemGenericAllocationHandle);
typedef CUresult (*pfn_dev_get)(CUdevice *, int);
typedef CUresult (*pfn_dev_attr)(int *, CUdevice_attribute, CUdevice);

struct cuda_drv {
    pfn_granularity granularity;
    pfn_create create;
    pfn_reserve reserve;
    pfn_map map;
    pfn_set_access set_access;
    pfn_export export_fd;
    pfn_import import_fd;
    pfn_unmap unmap;
    pfn_addr_free addr_free;
    pfn_release release;
    pfn_dev_get dev_get;
    pfn_dev_attr dev_attr;
};

struct cuda_priv {
    struct cuda_drv drv;
    CUmemGenericAllocationHandle handle; /* VMM: allocation handle (0 for legacy) */
    int mapped;                          /* VMM: base is reserved and mapped */
};

static int cuda_why(char *why, size_t whylen, int err, const char *fmt, const char *what, int code)
{
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, fmt, what, code);
    return err;
}

static int cuda_rt_err(cudaError_t e)
{
    switch (e) {
    case cudaErrorMemoryAllocation:
        return -ENOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
        return -ENODEV;
    default:
        return -EIO;
    }
}

static int cuda_drv_err(CUresult r)
{
    switch (r) {
    case CUDA_ERROR_OUT_OF_MEMORY:
        return -ENOMEM;
    case CUDA_ERROR_NOT_SUPPORTED:
        return -ENOTSUP;
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_INVALID_DEVICE:
        return -ENODEV;
    default:
        return -EIO;
    }
}

#define CUDA_RT(call, what)                                                                        \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            ret = cuda_why(why, whylen, cuda_rt_err(e_), "cuda: %s failed (error %d)", what,       \
                           (int)e_);                                                               \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

#define CUDA_DRV(call, what)                                                                       \
    do {                                                                                           \
        CUresult r_ = (call);                                                                      \
        if (r_ != CUDA_SUCCESS) {                                                                  \
            ret = cuda_why(why, whylen, cuda_drv_err(r_), "cuda: %s failed (CUresult %d)", what,   \
                           (int)r_);                                                               \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static int cuda_sym(const char *name, void **fp, char *why, size_t whylen)
{
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    cudaError_t e =
        cudaGetDriverEntryPointByVersion(name, fp, CUDA_ENTRY_VERSION, cudaEnableDefault, &q);

    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || *fp == NULL)
        return cuda_why(why, whylen, e != cudaSuccess ? cuda_rt_err(e) : -ENOSYS,
                        "cuda: driver entry point %s unavailable (%d)", name,
                        e != cudaSuccess ? (int)e : (int)q);
    return 0;
}

static int cuda_load(struct cuda_drv *d, char *why, size_t whylen)
{
    const struct {
        const char *name;
        void **fp;
    } tab[] = {
        {"cuMemGetAllocationGranularity", (void **)&d->granularity},
        {"cuMemCreate", (void **)&d->create},
        {"cuMemAddressReserve", (void **)&d->reserve},
        {"cuMemMap", (void **)&d->map},
        {"cuMemSetAccess", (void **)&d->set_access},
        {"cuMemExportToShareableHandle", (void **)&d->export_fd},
        {"cuMemImportFromShareableHandle", (void **)&d->import_fd},
        {"cuMemUnmap", (void **)&d->unmap},
        {"cuMemAddressFree", (void **)&d->addr_free},
        {"cuMemRelease", (void **)&d->release},
        {"cuDeviceGet", (void **)&d->dev_get},
        {"cuDeviceGetAttribute", (void **)&d->dev_attr},
    };

    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        int ret = cuda_sym(tab[i].name, tab[i].fp, why, whylen);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int kv_cuda_probe(char *why, size_t whylen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);

    if (e != cudaSuccess) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "no CUDA device: cudaGetDeviceCount failed: %s (error %d)",
                     cudaGetErrorString(e), (int)e);
        return -ENODEV;
    }
    if (n <= 0) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "no CUDA device: cudaGetDeviceCount found none");
        return -ENODEV;
    }
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "%d CUDA device(s)", n);
    return n;
}

/* Make `device` current (with its primary context) and copy its UUID. */
static int cuda_use_device(int device, uint8_t uuid[16], char *why, size_t whylen)
{
    struct cudaDeviceProp prop;
    int ret = kv_cuda_probe(why, whylen);

    if (ret < 0)
        return ret;
    if (device < 0 || device >= ret)
        return cuda_why(why, whylen, -ENODEV, "cuda: %s %d does not exist", "device", device);
    ret = 0;
    CUDA_RT(cudaSetDevice(device), "cudaSetDevice");
    CUDA_RT(cudaFree(NULL), "context creation");
    CUDA_RT(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    memcpy(uuid, prop.uuid.bytes, 16);
out:
    return ret;
}

/* Ordinal of the local device whose UUID is `uuid`, made current. */
static int cuda_find_device(const uint8_t uuid[16], char *why, size_t whylen)
{
    int n = kv_cuda_probe(why, whylen);

    for (int d = 0; d < n; d++) {
        struct cudaDeviceProp prop;

        if (cudaGetDeviceProperties(&prop, d) != cudaSuccess)
            continue;
        if (memcmp(prop.uuid.bytes, uuid, 16) == 0) {
            uint8_t dummy[16];
            int ret = cuda_use_device(d, dummy, why, whylen);
            return ret < 0 ? ret : d;
        }
    }
    if (n < 0)
        return n;
    return cuda_why(why, whylen, -ENODEV, "cuda: %s among %d local devices",
                    "no GPU with the arena's UUID", n);
}

static void vmm_prop(CUmemAllocationProp *p, CUdevice dev)
{
    memset(p, 0, sizeof(*p));
    p->type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p->location.id = dev;
    p->requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
}

/* Reserve, map and enable read/write access; on success base and mapped are set. */
static int vmm_map(struct kv_arena *a, struct cuda_priv *p, CUdevice dev, size_t gran, char *why,
                   size_t whylen)
{
    CUmemAccessDesc acc = {.location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev},
                           .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CUdeviceptr ptr = 0;
    int ret = 0;

    CUDA_DRV(p->drv.reserve(&ptr, a->bytes, gran, 0, 0), "cuMemAddressReserve");
    CUDA_DRV(p->drv.map(ptr, a->bytes, 0, p->handle, 0), "cuMemMap");
    CUDA_DRV(p->drv.set_access(ptr, a->bytes, &acc, 1), "cuMemSetAccess");
    a->base = (void *)(uintptr_t)ptr;
    p->mapped = 1;
    return 0;
out:
    if (ptr != 0) {
        p->drv.unmap(ptr, a->bytes); /* harmless if the map step itself failed */
        p->drv.addr_free(ptr, a->bytes);
    }
    return ret;
}

static void vmm_close(struct kv_arena *a)
{
    struct cuda_priv *p = a->priv;

    if (p != NULL) {
        if (p->mapped) {
            p->drv.unmap((CUdeviceptr)(uintptr_t)a->base, a->bytes);
            p->drv.addr_free((CUdeviceptr)(uintptr_t)a->base, a->bytes);
        }
        if (p->handle != 0)
            p->drv.release(p->handle);
        free(p);
    }
    if (a->fd >= 0)
        close(a->fd);
    a->priv = NULL;
    a->base = NULL;
    a->fd = -1;
}

/* Common VMM preamble: driver entry points, device handle, support check, granularity. */
static int vmm_begin(struct kv_arena *a, int device, CUdevice *dev, size_t *gran, char *why,
                     size_t whylen)
{
    struct cuda_priv *p = calloc(1, sizeof(*p));
    CUmemAllocationProp prop;
    int vmm = 0, posix = 0, ret;

    if (p == NULL)
        return -ENOMEM;
    a->priv = p;
    ret = cuda_load(&p->drv, why, whylen);
    if (ret < 0)
        goto out;
    CUDA_DRV(p->drv.dev_get(dev, device), "cuDeviceGet");
    CUDA_DRV(p->drv.dev_attr(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, *dev),
             "cuDeviceGetAttribute(VMM)");
    CUDA_DRV(p->drv.dev_attr(&posix,
                             CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, *dev),
             "cuDeviceGetAttribute(POSIX fd handles)");
    if (!vmm || !posix) {
        ret = cuda_why(why, whylen, -ENOTSUP, "cuda: %s (device %d)",
                       "no virtual memory management with POSIX fd handles", device);
        goto out;
    }
    vmm_prop(&prop, *dev);
    CUDA_DRV(p->drv.granularity(gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
             "cuMemGetAllocationGranularity");
    return 0;
out:
    vmm_close(a);
    return ret;
}

static int vmm_create(struct kv_arena *a, size_t bytes, int device, char *why, size_t whylen)
{
    CUmemAllocationProp prop;
    struct cuda_priv *p;
    CUdevice dev;
    size_t gran = 0;
    int fd = -1, ret;

    if (bytes == 0)
        return cuda_why(why, whylen, -EINVAL, "cuda: %s (%d)", "empty arena", 0);
    ret = cuda_use_device(device, a->gpu_uuid, why, whylen);
    if (ret < 0)
        return ret;
    ret = vmm_begin(a, device, &dev, &gran, why, whylen);
    if (ret < 0)
        return ret;
    p = a->priv;
    a->device = device;
    a->bytes = (bytes + gran - 1) / gran * gran;
    vmm_prop(&prop, dev);
    CUDA_DRV(p->drv.create(&p->handle, a->bytes, &prop, 0), "cuMemCreate");
    ret = vmm_map(a, p, dev, gran, why, whylen);
    if (ret < 0)
        goto out;
    CUDA_DRV(p->drv.export_fd(&fd, p->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
             "cuMemExportToShareableHandle");
    a->fd = fd;
    return 0;
out:
    vmm_close(a);
    return ret;
}

static int vmm_import(struct kv_arena *a, const struct kvp_welcome *w, int fd, char *why,
                      size_t whylen)
{
    struct cuda_priv *p;
    CUdevice dev;
    size_t gran = 0;
    int device, ret;

    if (fd < 0)
        return cuda_why(why, whylen, -EBADF, "cuda: %s (%d)", "no arena fd received", fd);
    device = cuda_find_device(w->gpu_uuid, why, whylen);
    if (device < 0)
        return device;
    ret = vmm_begin(a, device, &dev, &gran, why, whylen);
    if (ret < 0)
        return ret;
    p = a->priv;
    if (w->arena_bytes == 0 || w->arena_bytes % gran != 0) {
        ret = cuda_why(why, whylen, -EINVAL, "cuda: %s %d",
                       "arena size is not a multiple of "
                       "the allocation granularity",
                       (int)gran);
        goto out;
    }
    a->device = device;
    a->bytes = (size_t)w->arena_bytes;
    CUDA_DRV(p->drv.import_fd(&p->handle, (void *)(uintptr_t)fd,
                              CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
             "cuMemImportFromShareableHandle");
    ret = vmm_map(a, p, dev, gran, why, whylen);
    if (ret < 0)
        goto out;
    a->fd = fd;
    return 0;
out:
    vmm_close(a); /* a->fd is still -1: the caller closes fd */
    return ret;
}

static int legacy_create(struct kv_arena *a, size_t bytes, int device, char *why, size_t whylen)
{
    cudaIpcMemHandle_t h;
    void *ptr = NULL;
    int ret;

    _Static_assert(sizeof(h) == sizeof(a->legacy_handle), "cudaIpcMemHandle_t is 64 bytes");
    if (bytes == 0)
        return cuda_why(why, whylen, -EINVAL, "cuda: %s (%d)", "empty arena", 0);
    ret = cuda_use_device(device, a->gpu_uuid, why, whylen);
    if (ret < 0)
        return ret;
    CUDA_RT(cudaMalloc(&ptr, bytes), "cudaMalloc");
    CUDA_RT(cudaIpcGetMemHandle(&h, ptr), "cudaIpcGetMemHandle");
    memcpy(a->legacy_handle, &h, sizeof(h));
    a->base = ptr;
    a->bytes = bytes;
    a->device = device;
    return 0;
out:
    if (ptr != NULL)
        cudaFree(ptr);
    return ret;
}

static int legacy_import(struct kv_arena *a, const struct kvp_welcome *w, int fd, char *why,
                         size_t whylen)
{
    cudaIpcMemHandle_t h;
    void *ptr = NULL;
    int device, ret = 0;

    device = cuda_find_device(w->gpu_uuid, why, whylen);
    if (device < 0)
        return device;
    memcpy(&h, w->legacy_handle, sizeof(h));
    CUDA_RT(cudaIpcOpenMemHandle(&ptr, h, cudaIpcMemLazyEnablePeerAccess), "cudaIpcOpenMemHandle");
    a->base = ptr;
    a->bytes = (size_t)w->arena_bytes;
    a->device = device;
    if (fd >= 0)
        close(fd); /* legacy arenas travel as handle bytes; an fd is not expected */
    a->fd = -1;
    return 0;
out:
    return ret;
}

static void legacy_close(struct kv_arena *a)
{
    if (a->base != NULL) {
        cudaSetDevice(a->device);
        if (a->imported)
            cudaIpcCloseMemHandle(a->base);
        else
            cudaFree(a->base);
    }
    if (a->fd >= 0)
        close(a->fd);
    a->base = NULL;
    a->fd = -1;
}

const struct kv_arena_ops kv_arena_cuda_vmm_ops = {
    .name = "cuda_vmm",
    .backend = KVP_BACKEND_CUDA_VMM,
    .create = vmm_create,
    .import = vmm_import,
    .close = vmm_close,
};

const struct kv_arena_ops kv_arena_cuda_legacy_ops = {
    .name = "cuda_legacy",
    .backend = KVP_BACKEND_CUDA_LEGACY,
    .create = legacy_create,
    .import = legacy_import,
    .close = legacy_close,
};
