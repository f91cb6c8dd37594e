/*
 * kvc_err.c - kvc_strerror: what each return value of libkvclient means to a worker.
 * One table lists every errno the API documents with the library's own explanation; anything else
 * falls back to the C library's description.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "kvc_int.h"

#define KVC_ERR_MAP(X)                                                                             \
    X(0, "success")                                                                                \
    X(EINVAL, "invalid argument, or layout differs from the namespace's")                          \
    X(E2BIG, "count or size over its limit")                                                       \
    X(ENOMEM, "out of memory")                                                                     \
    X(ENOENT, "kvd is not running here (no socket), no such entry, or nothing in flight")          \
    X(ECONNREFUSED, "kvd is not accepting connections")                                            \
    X(ECONNRESET, "kvd closed the connection during the handshake")                                \
    X(ENAMETOOLONG, "kvd run directory path too long")                                             \
    X(EACCES, "kvd refused this client (credentials or attach token)")                             \
    X(EPERM, "kvd refused this client: permission denied")                                         \
    X(ESHUTDOWN, "kvd went away: keep serving without the cache, then kvc_reconnect")              \
    X(ENOTCONN, "not attached to kvd: kvc_reconnect first")                                        \
    X(ECHILD, "handle belongs to the parent process: open a new one after fork")                   \
    X(ETIMEDOUT, "kvd did not answer in time")                                                     \
    X(EAGAIN, "too many requests in flight: complete some first")                                  \
    X(ENOSPC, "kvd page pool is full and every page is pinned")                                    \
    X(EBUSY, "kvd is busy: retry")                                                                 \
    X(EPROTO, "protocol error: malformed frame or reply")                                          \
    X(EPROTONOSUPPORT, "kvd speaks another protocol version")                                      \
    X(EOPNOTSUPP, "kvd does not know this operation")                                              \
    X(EBADF, "page not held by this client")                                                       \
    X(EIO, "kvd I/O error")                                                                        \
    X(EFAULT, "kvd internal error")                                                                \
    X(ENODEV, "no usable device for kvd's CUDA arena in this process")

KVC_API const char *kvc_strerror(int err)
{
    const char *s;

    if (err == INT_MIN)
        return "unknown error";
    if (err < 0)
        err = -err;
    switch (err) {
#define KVC_ERR_CASE(code, text)                                                                   \
    case code:                                                                                     \
        return text;
        KVC_ERR_MAP(KVC_ERR_CASE)
#undef KVC_ERR_CASE
    default:
        s = strerrordesc_np(err);
        return s ? s : "unknown error";
    }
}
