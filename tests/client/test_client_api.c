/*
 * test_client_api.c - the parts of the public API that need no daemon: kvc_strerror for every
 * documented code, argument checks of kvc_open and of calls on a NULL handle, connecting to a run
 * directory where no kvd listens, and the shared library exporting only kvc_* symbols.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvclient.h"

static const int documented[] = {
    0,      EINVAL, E2BIG,           ENOMEM,     ENOENT, ECONNREFUSED, ECONNRESET, ENAMETOOLONG,
    EACCES, EPERM,  ESHUTDOWN,       ENOTCONN,   ECHILD, ETIMEDOUT,    EAGAIN,     ENOSPC,
    EBUSY,  EPROTO, EPROTONOSUPPORT, EOPNOTSUPP, EBADF,  EIO,          EFAULT,     ENODEV,
};

Test(client_api, strerror_every_code)
{
    size_t n = sizeof(documented) / sizeof(documented[0]);

    for (size_t i = 0; i < n; i++) {
        const char *s = kvc_strerror(-documented[i]);
        cr_assert_not_null(s);
        cr_assert_gt(strlen(s), 4, "code %d", documented[i]);
        cr_assert_str_eq(kvc_strerror(documented[i]), s, "sign must not matter");
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(s, kvc_strerror(-documented[j]), "codes %d and %d share a text",
                              documented[i], documented[j]);
    }
    cr_assert_not_null(strstr(kvc_strerror(-ESHUTDOWN), "kvc_reconnect"));
    cr_assert_not_null(kvc_strerror(-99999));
    cr_assert_not_null(kvc_strerror(-2147483647 - 1));
}

static struct kvc_opts opts(const char *dir)
{
    struct kvc_opts o = KVC_OPTS_INIT;
    o.run_dir = dir;
    o.ns = "ns";
    o.layout = (struct kvc_layout){.n_layers = 2,
                                   .n_kv_heads = 2,
                                   .head_dim = 64,
                                   .page_tokens = 16,
                                   .k_fmt = KVC_FMT_FP8_E4M3,
                                   .v_fmt = KVC_FMT_FP8_E4M3};
    return o;
}

Test(client_api, open_bad_arguments)
{
    struct kvc *c = (struct kvc *)0x1;
    struct kvc_opts o = opts("/nonexistent");
    char dir[200];

    cr_assert_eq(kvc_open(NULL, &c), -EINVAL);
    cr_assert_eq(kvc_open(&o, NULL), -EINVAL);
    o.ns = "bad name";
    cr_assert_eq(kvc_open(&o, &c), -EINVAL);
    o = opts("/nonexistent");
    o.layout.head_dim = 33; /* not a multiple of 32 */
    cr_assert_eq(kvc_open(&o, &c), -EINVAL);
    o = opts("/nonexistent");
    o.layout.k_fmt = 99;
    cr_assert_eq(kvc_open(&o, &c), -EINVAL);
    o = opts("/nonexistent");
    o.flags = 1;
    cr_assert_eq(kvc_open(&o, &c), -EINVAL);
    memset(dir, 'd', sizeof(dir) - 1);
    dir[0] = '/';
    dir[sizeof(dir) - 1] = '\0';
    o = opts(dir);
    cr_assert_eq(kvc_open(&o, &c), -ENAMETOOLONG);
    cr_assert_eq(c, (struct kvc *)0x1, "*out untouched on error");
}

Test(client_api, no_daemon)
{
    char tmpl[] = "/tmp/kvc-api.XXXXXX", path[64];
    struct kvc *c = NULL;
    struct kvc_opts o;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int s;

    cr_assert_not_null(mkdtemp(tmpl));
    o = opts(tmpl);
    cr_assert_eq(kvc_open(&o, &c), -ENOENT);
    /* a stale socket file with nobody listening */
    snprintf(path, sizeof(path), "%s/kvd.sock", tmpl);
    strcpy(sa.sun_path, path);
    s = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    cr_assert_geq(s, 0);
    cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(s);
    cr_assert_eq(kvc_open(&o, &c), -ECONNREFUSED);
    cr_assert_null(c);
    unlink(path);
    rmdir(tmpl);
}

Test(client_api, null_handle)
{
    struct kvc_page p[1];
    struct kvc_stats st;
    struct kvc_req r = {.op = KVC_OP_PING}, *done;
    uint32_t a, b;
    struct kvc_hash h = {{0}};

    kvc_close(NULL);
    cr_assert_eq(kvc_ping(NULL), -EINVAL);
    cr_assert_eq(kvc_stats(NULL, &st), -EINVAL);
    cr_assert_eq(kvc_lookup(NULL, &h, 1, 0, 0, p, &a, &b), -EINVAL);
    cr_assert_eq(kvc_alloc(NULL, 1, NULL, p), -EINVAL);
    cr_assert_eq(kvc_release(NULL, &a, 1), -EINVAL);
    cr_assert_eq(kvc_submit(NULL, &r), -EINVAL);
    cr_assert_eq(kvc_complete(NULL, 0, &done), -EINVAL);
    cr_assert_eq(kvc_reconnect(NULL), -EINVAL);
    cr_assert_null(kvc_page_ptr(NULL, p));
    cr_assert_null(kvc_get_hasher(NULL));
    cr_assert_eq(kvc_inflight(NULL), 0);
}

/* The shared library exports the API and nothing of what it links in. */
Test(client_api, exports_only_kvc)
{
    const char *lib = getenv("KVC_SHARED_LIB");
    void *h;

    cr_assert_not_null(lib, "KVC_SHARED_LIB not set by the test registration");
    h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(h, "%s", dlerror());
    cr_assert_not_null(dlsym(h, "kvc_open"));
    cr_assert_not_null(dlsym(h, "kvc_hash_chain"));
    cr_assert_not_null(dlsym(h, "kvc_strerror"));
    cr_assert_null(dlsym(h, "kvp_decode_reply"), "kvipc must stay internal");
    cr_assert_null(dlsym(h, "kv_arena_import"), "kvipc must stay internal");
    cr_assert_null(dlsym(h, "kv_page_bytes"), "kvkernels must stay internal");
    cr_assert_null(dlsym(h, "kvc_int_usable"), "internal helpers must stay hidden");
    dlclose(h);
}
