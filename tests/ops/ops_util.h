/*
 * ops_util.h - helpers for the operations tests: run a program and capture its output (optionally
 * as another uid), fetch a URL from a local HTTP port, fill a namespace with a known chain, and
 * paths of the built binaries (KVT_KVD, OPS_KVCTL, KVD_SRC_DIR, KVD_BIN_DIR from the test env).
 */
#ifndef OPS_UTIL_H
#define OPS_UTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "kvclient.h"
#include "kvt.h"

struct ops_out {
    char *text; /* stdout, NUL-terminated (malloc'd) */
    size_t len;
    int status; /* exit status 0..255, 128+signal, or -errno */
};

/* Run argv (argv[0] a path) with extra environment entries env (NULL-terminated, or NULL), as uid
 * (or -1 to keep ours), for at most timeout_ms. stdout is captured, stderr inherited. */
int ops_run(const char *const *argv, const char *const *env, uid_t uid, int timeout_ms,
            struct ops_out *out);
void ops_out_free(struct ops_out *o);

/* kvctl -r run_dir ARGS... (NULL-terminated). */
int ops_kvctl(const struct kvt_kvd *k, struct ops_out *out, ...);
int ops_kvctl_as(const struct kvt_kvd *k, uid_t uid, struct ops_out *out, ...);

/* GET/POST path on 127.0.0.1:port; body (malloc'd) without headers, *code the HTTP status. */
int ops_http(unsigned port, const char *method, const char *path, int *code, char **body);

/* The chain every test commits: n pages in namespace "ops", tokens from seed 7. FP8 scales in
 * each page are set to k_scale (keys) and v_scale (values). Leaves the pages leased by c. */
struct ops_chain {
    struct kvc_hash hash[8];
    struct kvc_page page[8];
    unsigned n;
};
int ops_fill_chain(struct kvc *c, unsigned n, float k_scale, float v_scale, struct ops_chain *ch);

/* Hex of a hash (33 bytes). */
void ops_hex(const struct kvc_hash *h, char *out);

/* kvt_kvd_start with the metrics endpoint on a free port, plus extra (NULL-terminated or NULL). */
int ops_kvd_start(struct kvt_kvd *k, const char *const *extra);

#endif
