/*
 * config.h - kvd's configuration: one table of keys (name, type, default, documentation) drives
 * the INI parser (inih), the command-line overrides, `kvd --print-config` and the example file.
 * Precedence: built-in default < config file < command line.
 */
#ifndef KVD_CONFIG_H
#define KVD_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define KV_PATH_MAX 256

/* X(key, type, field, default, doc). Types: STR (char[KV_PATH_MAX]), SIZE (bytes, K/M/G suffix),
 * UINT, BOOL. The INI section is [kvd]. */
#define KV_CONFIG_MAP(X)                                                                           \
    X("run_dir", STR, run_dir, "",                                                                 \
      "directory for the sockets and the lock; empty: $RUNTIME_DIRECTORY, else /run/kvd as root, " \
      "else $XDG_RUNTIME_DIR/kvd")                                                                 \
    X("state_dir", STR, state_dir, "",                                                             \
      "directory for the spill store; empty: $STATE_DIRECTORY, else /var/lib/kvd as root, else "   \
      "$HOME/.local/state/kvd")                                                                    \
    X("arena_size", SIZE, arena_size, "256M", "bytes of KV pages in the arena")                    \
    X("chunk_size", SIZE, chunk_size, "4M",                                                        \
      "the arena is carved into chunks of this size, each given to one namespace on demand")       \
    X("backend", STR, backend, "auto",                                                             \
      "arena backend: auto (CUDA if a device is present), host, cuda")                             \
    X("device", UINT, device, "0", "CUDA device ordinal for the cuda backend")                     \
    X("policy", STR, policy, "lru",                                                                \
      "page eviction policy: lru, or h2o (the lowest attention mass workers reported, aged since " \
      "the page's last use)")                                                                      \
    X("heartbeat_ms", UINT, heartbeat_ms, "10000",                                                 \
      "a client silent for 3 heartbeats is dropped (fallback; death is normally seen at once "     \
      "through its pidfd and side channel)")                                                       \
    X("attach_timeout_ms", UINT, attach_timeout_ms, "5000",                                        \
      "a side-channel client that has not sent ATTACH by then is dropped")                         \
    X("max_clients", UINT, max_clients, "256", "most clients attached at once")                    \
    X("max_waiters", UINT, max_waiters, "4096", "most lookups waiting for a pending page at once") \
    X("client_group", STR, client_group, "",                                                       \
      "group (name or gid) whose members may attach; empty: only kvd's own uid and root")          \
    X("admin_group", STR, admin_group, "",                                                         \
      "group allowed to run admin operations (evict, policy set); empty: only kvd's uid and root") \
    X("socket_mode", UINT, socket_mode, "0660", "mode of the sockets (octal)")                     \
    X("log_level", STR, log_level, "info", "error, warning, notice, info or debug")                \
    X("metrics_listen", STR, metrics_listen, "127.0.0.1:9477",                                     \
      "address:port of the Prometheus metrics endpoint (HTTP); port 0 picks a free port; "         \
      "empty disables it")                                                                         \
    X("spill_path", STR, spill_path, "",                                                           \
      "spill store file or block device; empty: <state_dir>/kvd.spill; none: no spill tier")       \
    X("spill_size", SIZE, spill_size, "1G", "size of a new spill store file; 0 disables the tier") \
    X("spill_page_max", SIZE, spill_page_max, "512K",                                              \
      "largest page (after conversion to FP8) a slot holds; fixes the slot size of a new store")   \
    X("spill_queue_depth", UINT, spill_queue_depth, "0",                                           \
      "spill reads and writes in flight; 0: as many as fit RLIMIT_MEMLOCK, at most 8")             \
    X("spill_sync", BOOL, spill_sync, "false",                                                     \
      "use pread/pwrite instead of io_uring (chosen automatically when io_uring is refused)")      \
    X("spill_on_stop", BOOL, spill_on_stop, "true",                                                \
      "on a clean stop, write resident pages to the spill store so the next start is warm")        \
    X("fault_injection", BOOL, fault_injection, "false",                                           \
      "allow tests to inject allocation failures through the admin protocol (never in "            \
      "production)")

struct kv_config {
    char run_dir[KV_PATH_MAX];
    char state_dir[KV_PATH_MAX];
    uint64_t arena_size;
    uint64_t chunk_size;
    char backend[KV_PATH_MAX];
    uint64_t device;
    char policy[KV_PATH_MAX];
    uint64_t heartbeat_ms;
    uint64_t attach_timeout_ms;
    uint64_t max_clients;
    uint64_t max_waiters;
    char client_group[KV_PATH_MAX];
    char admin_group[KV_PATH_MAX];
    uint64_t socket_mode;
    char log_level[KV_PATH_MAX];
    char metrics_listen[KV_PATH_MAX];
    char spill_path[KV_PATH_MAX];
    uint64_t spill_size;
    uint64_t spill_page_max;
    uint64_t spill_queue_depth;
    uint64_t spill_sync;
    uint64_t spill_on_stop;
    uint64_t fault_injection;
};

/* Fill every key with its default. */
void kv_config_defaults(struct kv_config *c);
/* Set one key from a string. 0, or -ENOENT (unknown key) / -EINVAL (bad value); err gets a line. */
int kv_config_set(struct kv_config *c, const char *key, const char *value, char *err, size_t len);
/* Parse an INI file into c. 0 or -errno; err gets "file:line: reason". */
int kv_config_load(struct kv_config *c, const char *path, char *err, size_t len);
/* Fill empty run_dir/state_dir from the environment as documented. */
void kv_config_resolve_dirs(struct kv_config *c);
/* Write c as an INI file with each key's documentation (the example config is made this way). */
void kv_config_print(const struct kv_config *c, FILE *f, int with_docs);
/* Parse "64M" style sizes. 0 or -EINVAL. */
int kv_parse_size(const char *s, uint64_t *out);

#endif
