/*
 * proto.h - the kvd wire protocol: every message that crosses a process boundary, defined once.
 *
 * Two channels connect a worker to kvd:
 *
 *  1. The side channel: a unix SOCK_SEQPACKET socket at <run_dir>/kvd.sock. The worker connects and
 *     sends a kvp_hello; kvd checks the peer's credentials (SO_PEERCRED), answers with a
 * kvp_welcome that carries the arena descriptor as SCM_RIGHTS (memfd or CUDA VMM fd) and a one-time
 * attach token. The socket then stays open for the life of the client: kvd watches it (and a pidfd
 * of the peer) to release a dead worker's leases at once.
 *
 *  2. The request channel: ZeroMQ, DEALER in the worker, ROUTER in kvd, at ipc://<run_dir>/kvd.zmq.
 *     A frame is a kvp_hdr followed by the op's body; a message is one frame, or up to
 *     KVP_MAX_PARTS frames as its parts, each a request of its own (kvd likewise sends the replies
 *     of one drain to one client as the parts of one message). The first request must be ATTACH
 *     with the token. Requests carry a sequence number echoed in the reply, so a client may
 *     pipeline many requests. kvd also PUBlishes events at ipc://<run_dir>/kvd.pub (hints only).
 *
 * Structs here are fixed-size with explicit padding; both ends run on one host, so they are sent in
 * host byte order. Every decoder (ipc/proto.c) checks the frame length, magic, version, op and
 * every count against the limits below before it reads an element.
 */
#ifndef KVP_PROTO_H
#define KVP_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "kv_format.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KVP_MAGIC   0x3144564bu /* "KVD1" */
#define KVP_VERSION 1

/* Named limits: every count and length from a peer is checked against one of these. */
#define KVP_HASH_BYTES     16         /* block hash: 128-bit keyed BLAKE2b */
#define KVP_MAX_FRAME      (1u << 22) /* 4 MiB: largest frame kvd accepts from an attached client */
#define KVP_MAX_FRAME_PRE  256u       /* largest frame from a client that has not attached */
#define KVP_MAX_CHAIN      4096u      /* hashes in one LOOKUP (4096 pages x 16+ tokens) */
#define KVP_MAX_BATCH      4096u      /* pages in one ALLOC/COMMIT/RELEASE */
#define KVP_MAX_SCORE_ENTS 4096u      /* page entries in one SCORES report */
#define KVP_MAX_NS_NAME    64u        /* namespace name, NUL-padded, [A-Za-z0-9._:-] */
#define KVP_MAX_WAIT_MS    30000u     /* longest bounded wait for a pending page */
#define KVP_MAX_LIST       4096u      /* entries in one admin listing reply */
#define KVP_MAX_PARTS      64u        /* request frames in one ZeroMQ message (kvc_submitv) */
#define KVP_ADMIN_MAX_ARG  256u       /* argument bytes of an ADMIN request */

/* ---- status codes --------------------------------------------------------------------------- */
/* X(name, value, errno the client maps it to, text). "client:" codes are the sender's fault,
 * "server:" codes are kvd's state. One table generates the enum and kvp_status_str(). */
#define KVP_STATUS_MAP(X)                                                                          \
    X(OK, 0, 0, "ok")                                                                              \
    X(E_MALFORMED, 1, EPROTO, "client error: malformed or truncated frame")                        \
    X(E_VERSION, 2, EPROTONOSUPPORT, "client error: unsupported protocol version")                 \
    X(E_OP, 3, EOPNOTSUPP, "client error: unknown opcode")                                         \
    X(E_TOOBIG, 4, E2BIG, "client error: count or length over limit")                              \
    X(E_NOT_ATTACHED, 5, ENOTCONN, "client error: not attached")                                   \
    X(E_BAD_TOKEN, 6, EACCES, "client error: bad attach token or peer mismatch")                   \
    X(E_LAYOUT, 7, EINVAL, "client error: invalid layout or layout differs from namespace")        \
    X(E_NOT_HELD, 8, EBADF, "client error: page not held by sender")                               \
    X(E_STATE, 9, EINVAL, "client error: page in wrong state for this operation")                  \
    X(E_PERM, 10, EPERM, "client error: permission denied")                                        \
    X(E_INVAL, 11, EINVAL, "client error: invalid argument")                                       \
    X(E_NOSPC, 32, ENOSPC, "server: pool full, every page pinned")                                 \
    X(E_NOMEM, 33, ENOMEM, "server: out of memory")                                                \
    X(E_BUSY, 34, EBUSY, "server: busy, retry")                                                    \
    X(E_TIMEDOUT, 35, ETIMEDOUT, "server: wait timed out")                                         \
    X(E_NOENT, 36, ENOENT, "server: no such entry")                                                \
    X(E_IO, 37, EIO, "server: I/O error")                                                          \
    X(E_INTERNAL, 38, EFAULT, "server: internal error")

enum kvp_status {
#define KVP_ST_ENUM(name, val, err, str) KVP_##name = val,
    KVP_STATUS_MAP(KVP_ST_ENUM)
#undef KVP_ST_ENUM
};

/* Text for a status code ("unknown status" for others). */
const char *kvp_status_str(int status);
/* Negative errno a client returns for a status; 0 for KVP_OK; -EPROTO for unknown codes. */
int kvp_status_errno(int status);
/* Status code for a negative errno from inside kvd (-ENOSPC -> KVP_E_NOSPC, ...). */
int kvp_status_from_errno(int neg_errno);

/* ---- side channel --------------------------------------------------------------------------- */
enum kvp_backend { KVP_BACKEND_HOST = 1, KVP_BACKEND_CUDA_VMM = 2, KVP_BACKEND_CUDA_LEGACY = 3 };

struct kvp_hello {
    uint32_t magic;
    uint16_t version;
    uint16_t flags;
    uint32_t pid; /* informational; kvd trusts SO_PEERCRED */
    uint32_t reserved;
};
_Static_assert(sizeof(struct kvp_hello) == 16, "wire struct");

struct kvp_welcome {
    uint32_t magic;
    uint16_t version;
    uint16_t status; /* enum kvp_status; on error nothing else is valid, no fd */
    uint32_t client_id;
    uint32_t backend; /* enum kvp_backend */
    uint64_t arena_bytes;
    uint8_t token[16];         /* one-time attach token for the request channel */
    uint8_t gpu_uuid[16];      /* CUDA backends: device UUID; zero for host */
    uint8_t legacy_handle[64]; /* KVP_BACKEND_CUDA_LEGACY: cudaIpcMemHandle_t bytes */
    uint32_t features;         /* KVP_FEAT_*: what this kvd takes beyond the first protocol
                                * (a kvd from before a feature sends 0 here, as it was reserved) */
    uint8_t reserved[4];       /* zero; pads the struct to the documented 128 bytes */
};
#define KVP_FEAT_MULTIPART 1u /* a request message may carry up to KVP_MAX_PARTS frames */
_Static_assert(sizeof(struct kvp_welcome) == 128, "wire struct");

/* ---- request channel ------------------------------------------------------------------------ */
#define KVP_OP_MAP(X)                                                                              \
    X(ATTACH, 1)                                                                                   \
    X(DETACH, 2)                                                                                   \
    X(PING, 3)                                                                                     \
    X(LOOKUP, 4)                                                                                   \
    X(ALLOC, 5)                                                                                    \
    X(COMMIT, 6)                                                                                   \
    X(RELEASE, 7)                                                                                  \
    X(SCORES, 8)                                                                                   \
    X(STATS, 9)                                                                                    \
    X(ADMIN, 10)

enum kvp_op {
#define KVP_OP_ENUM(name, val) KVP_OP_##name = val,
    KVP_OP_MAP(KVP_OP_ENUM)
#undef KVP_OP_ENUM
        KVP_OP_MAX = 10
};
const char *kvp_op_name(int op);

struct kvp_hdr {
    uint32_t magic;
    uint8_t version;
    uint8_t op;      /* enum kvp_op; replies carry the request's op */
    uint16_t status; /* requests: 0; replies: enum kvp_status */
    uint32_t seq;    /* chosen by the client, echoed in the reply */
    uint32_t count;  /* number of body elements, meaning per op */
};
_Static_assert(sizeof(struct kvp_hdr) == 16, "wire struct");

/* ATTACH request body. count = 0. */
struct kvp_attach {
    uint8_t token[16];
    char ns[KVP_MAX_NS_NAME];
    struct kv_layout layout;
    uint32_t flags;
};
_Static_assert(sizeof(struct kvp_attach) == 96, "wire struct");

/* ATTACH reply body. */
struct kvp_attach_rep {
    uint32_t client_id;
    uint32_t ns_id;
    uint64_t page_bytes;
    uint64_t arena_bytes;
    uint32_t heartbeat_ms; /* send a request (PING if idle) at least this often */
    uint32_t max_batch;
};
_Static_assert(sizeof(struct kvp_attach_rep) == 32, "wire struct");

/* A page as kvd hands it out: in LOOKUP, ALLOC and COMMIT replies. */
struct kvp_page {
    uint32_t page_id;
    uint16_t ntok;   /* tokens in the page (page_tokens unless a compressed variant) */
    uint16_t flags;  /* KVP_PAGE_* */
    uint64_t offset; /* byte offset of the page in the arena */
};
_Static_assert(sizeof(struct kvp_page) == 16, "wire struct");
#define KVP_PAGE_DEDUP   1u /* COMMIT: another client committed this hash first; use this page */
#define KVP_PAGE_DEMOTED 2u /* page came back from the spill tier converted from FP8 */
#define KVP_PAGE_BUSY                                                                              \
    4u /* ALLOC with hashes: another client already writes (or committed)                          \
        * this hash; release the page and LOOKUP with WAIT instead */

/* LOOKUP request: kvp_lookup, then count hashes of KVP_HASH_BYTES (the chain, first block first).
 */
struct kvp_lookup {
    uint32_t flags;   /* KVP_LOOKUP_* */
    uint32_t wait_ms; /* KVP_LOOKUP_WAIT: longest wait for a pending page, <= KVP_MAX_WAIT_MS */
};
_Static_assert(sizeof(struct kvp_lookup) == 8, "wire struct");
#define KVP_LOOKUP_PIN  1u /* take a read lease on every page returned */
#define KVP_LOOKUP_WAIT 2u /* if the chain stops at a pending page, wait for its commit */

/* LOOKUP reply: kvp_lookup_rep, then count (= n_hit) kvp_page. */
struct kvp_lookup_rep {
    uint32_t n_hit;
    uint32_t next; /* state of block n_hit: KVP_NEXT_* */
};
_Static_assert(sizeof(struct kvp_lookup_rep) == 8, "wire struct");
enum { KVP_NEXT_END = 0, KVP_NEXT_MISS = 1, KVP_NEXT_PENDING = 2 };

/* ALLOC request: kvp_alloc, then (if KVP_ALLOC_HASHES) count hashes the pages will hold, which
 * makes those hashes "pending" for other clients' lookups. count = pages wanted.
 * Reply: count kvp_page, each under a write lease. All or nothing. */
struct kvp_alloc {
    uint32_t flags;
    uint32_t reserved;
};
_Static_assert(sizeof(struct kvp_alloc) == 8, "wire struct");
#define KVP_ALLOC_HASHES 1u

/* COMMIT request: count kvp_commit entries. Reply: count kvp_page: the page to use for each entry
 * (the same page, or with KVP_PAGE_DEDUP the page that won, under a read lease; the loser is
 * freed). Entries are validated together first: on a client error nothing is committed. */
struct kvp_commit {
    uint32_t page_id;
    uint16_t ntok;
    uint16_t flags;
    uint8_t hash[KVP_HASH_BYTES];
    uint8_t parent[KVP_HASH_BYTES]; /* all zero for the first block of a chain */
};
_Static_assert(sizeof(struct kvp_commit) == 40, "wire struct");

/* RELEASE request: count uint32_t page ids (read or write leases). Validated together first.
 * Reply: count = number released, no body. */

/* SCORES request: count entries, each a kvp_score_ent followed by ntok float32 attention masses
 * (already summed over the query heads sharing a KV head and over the layers the worker reports).
 * The client must hold a lease on each page. Reply: count = entries applied, no body. */
struct kvp_score_ent {
    uint32_t page_id;
    uint16_t ntok;
    uint16_t flags;
};
_Static_assert(sizeof(struct kvp_score_ent) == 8, "wire struct");

/* ADMIN request: uint32 sub-command, then its argument (at most 256 bytes). Reply: the header
 * (count = entries of a listing) and the sub-command's body. Read-only sub-commands are open to
 * every attached client; the ones marked (admin) need root, kvd's uid or the admin group (E_PERM).
 * Listings that may be long take a kvp_admin_range argument and answer with a kvp_admin_list
 * followed by count entries; ask again from next while next < total. Kept by the operations work
 * (kvd/admin.c, tools/kvctl). */
enum kvp_admin {
    KVP_ADMIN_CHECK = 1,       /* (admin) verify the pool's invariants: OK or E_INTERNAL */
    KVP_ADMIN_FAULT = 2,       /* (admin) int32 n: n more allocations succeed, then fail */
    KVP_ADMIN_STATUS = 3,      /* no argument; reply: kvp_admin_status */
    KVP_ADMIN_CLIENTS = 4,     /* kvp_admin_range; reply: kvp_admin_list + kvp_admin_client[] */
    KVP_ADMIN_CHAINS = 5,      /* kvp_admin_range; reply: kvp_admin_list + kvp_admin_chain[] */
    KVP_ADMIN_SHOW = 6,        /* kvp_admin_key; reply: kvp_admin_show + kvp_admin_page[], each
                                  followed by its ntok float32 scores (scored) */
    KVP_ADMIN_POOL = 7,        /* kvp_admin_range; reply: kvp_admin_list + kvp_admin_ns[] */
    KVP_ADMIN_EVICT = 8,       /* (admin) kvp_admin_key: remove that prefix and everything that
                                  extends it from the pool and the spill tier; reply:
                                  kvp_admin_evict (E_NOENT: unknown hash) */
    KVP_ADMIN_POLICY_GET = 9,  /* reply: kvp_admin_policy */
    KVP_ADMIN_POLICY_SET = 10, /* (admin) NUL-terminated policy name; reply: kvp_admin_policy */
    KVP_ADMIN_SPILL = 11,      /* reply: kvp_admin_spill */
    KVP_ADMIN_CONFIG = 12,     /* reply: the effective configuration as INI text (not terminated) */
    KVP_ADMIN_LATENCY = 13,    /* reply: kvp_admin_latency */
};

/* kvctl attaches to this reserved namespace (layout: 1 layer, 1 KV head, head_dim 32, 16 tokens,
 * FP8 E4M3 K and V); it holds no pages, and kvd leaves it out of namespace listings and counts. */
#define KVP_ADMIN_NS "kvd.admin"

/* Argument of listings: entries from `start`, at most `max` of them (0: as many as fit). */
struct kvp_admin_range {
    uint32_t start;
    uint32_t max;
};
_Static_assert(sizeof(struct kvp_admin_range) == 8, "wire struct");

struct kvp_admin_list {
    uint32_t total; /* entries that exist now */
    uint32_t next;  /* index after the last entry returned */
};
_Static_assert(sizeof(struct kvp_admin_list) == 8, "wire struct");

/* Argument of SHOW and EVICT: a block hash (names a whole prefix) in namespace ns_id (0: any). */
struct kvp_admin_key {
    uint8_t hash[KVP_HASH_BYTES];
    uint32_t ns_id;
    uint32_t flags; /* 0 */
};
_Static_assert(sizeof(struct kvp_admin_key) == 24, "wire struct");

struct kvp_admin_status {
    char version[16];  /* kvd's version, NUL-terminated */
    char backend[16];  /* arena backend name */
    char policy[32];   /* current eviction policy */
    char run_dir[128]; /* truncated to fit, NUL-terminated */
    char state_dir[128];
    uint32_t pid;
    uint32_t metrics_port; /* bound port of the metrics endpoint, 0 when off */
    uint64_t uptime_ms;
    uint64_t arena_bytes;
    uint64_t chunk_bytes;
    uint32_t nchunks;
    uint32_t nchunks_free;
    uint32_t clients;
    uint32_t namespaces;
    uint64_t watchdog_ms; /* systemd watchdog interval, 0 when none */
    uint32_t admin;       /* 1 if the asking client may run admin sub-commands */
    uint32_t reserved;
};
_Static_assert(sizeof(struct kvp_admin_status) == 384, "wire struct");

struct kvp_admin_client {
    uint32_t id;
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
    uint8_t state; /* 1 hello, 2 welcomed, 3 attached */
    uint8_t admin;
    uint8_t pidfd; /* death is seen through a pidfd */
    uint8_t reserved;
    uint32_t ns_id;  /* 0 before ATTACH */
    uint64_t leases; /* leases held (a page may be leased more than once) */
    uint64_t pages;  /* distinct pages leased */
    uint64_t requests;
    uint64_t age_ms;
    uint64_t idle_ms; /* since the last request */
    char ns[KVP_MAX_NS_NAME];
};
_Static_assert(sizeof(struct kvp_admin_client) == 128, "wire struct");

enum { KVP_TIER_POOL = 1, KVP_TIER_WRITING = 2, KVP_TIER_SPILL = 3 };

/* One chain: a prefix that nothing extends (a leaf of the prefix tree), named by its last hash. */
struct kvp_admin_chain {
    uint8_t hash[KVP_HASH_BYTES];
    uint32_t ns_id;
    uint32_t pages; /* blocks from the root to this leaf that are in the pool */
    uint64_t tokens;
    uint32_t refs;   /* leases on the chain's pages, all clients */
    uint32_t pinned; /* pages of the chain with at least one lease */
    uint64_t hits;   /* lookups that returned the leaf */
    float score;     /* attention mass reported for the chain's tokens, summed */
    uint8_t tier;    /* KVP_TIER_* of the leaf */
    uint8_t k_fmt;
    uint8_t v_fmt;
    uint8_t reserved;
};
_Static_assert(sizeof(struct kvp_admin_chain) == 56, "wire struct");

struct kvp_admin_show {
    uint32_t ns_id;
    uint32_t npages; /* kvp_admin_page entries that follow (root first) */
    uint64_t page_bytes;
    uint64_t tokens;
    struct kv_layout layout;
    uint32_t flags; /* KVP_SHOW_* */
    char ns[KVP_MAX_NS_NAME];
};
_Static_assert(sizeof(struct kvp_admin_show) == 104, "wire struct");
#define KVP_SHOW_TRUNCATED                                                                         \
    1u                      /* the chain was longer than one reply holds: the leaf end is kept     \
                             */
#define KVP_SHOW_SPILLED 2u /* the hash is in the spill tier only: no pages follow */

struct kvp_admin_page {
    uint8_t hash[KVP_HASH_BYTES];
    uint32_t page_id;
    uint16_t ntok;
    uint8_t tier;  /* KVP_TIER_* */
    uint8_t flags; /* KVP_PAGE_DEMOTED */
    uint64_t offset;
    uint32_t refs;
    uint32_t n_children;
    uint64_t hits;
    float score_sum; /* reported attention mass over the page's tokens */
    float score_max;
    float k_scale_min, k_scale_max, k_scale_mean; /* per-token/group scales in the page (host */
    float v_scale_min, v_scale_max, v_scale_mean; /* arena, scaled formats); NaN when unknown */
    uint16_t nscores; /* float32 scores that follow this entry (0 or ntok) */
    uint16_t reserved[3];
};
_Static_assert(sizeof(struct kvp_admin_page) == 88, "wire struct");

struct kvp_admin_ns {
    char name[KVP_MAX_NS_NAME];
    uint32_t id;
    uint32_t nclients;
    struct kv_layout layout;
    uint32_t reserved;
    uint64_t page_bytes;
    uint32_t nchunks, npages, nfree, nwriting, ncommitted, npinned;
    uint64_t nspilled; /* SPILLED index records of the namespace */
};
_Static_assert(sizeof(struct kvp_admin_ns) == 128, "wire struct");

struct kvp_admin_evict {
    uint32_t evicted;       /* pages freed from the pool (not spilled: operator eviction purges) */
    uint32_t busy;          /* pages of the prefix left because a lease pins them */
    uint32_t spill_dropped; /* spill records of the prefix dropped (their slots erased) */
    uint32_t reserved;
};
_Static_assert(sizeof(struct kvp_admin_evict) == 16, "wire struct");

struct kvp_admin_policy {
    char current[32];
    char known[224]; /* comma-separated names */
};
_Static_assert(sizeof(struct kvp_admin_policy) == 256, "wire struct");

struct kvp_admin_spill {
    char state_dir[128];
    uint32_t enabled; /* a spill store is open */
    uint32_t backend; /* enum kv_spill_backend (kvd/spill.h), 0 without a store */
    uint64_t spilled; /* SPILLED records in the index */
    uint64_t writes, restores, dropped, checksum_failures; /* kvp_stats spill_* */
    uint64_t slot_bytes, slots_total, slots_used, inflight;
    uint64_t write_bytes, read_bytes, demotions, read_errors, invalidations;
};
_Static_assert(sizeof(struct kvp_admin_spill) == 248, "wire struct");

/* Request latency histogram: count[i] requests took <= bound_us[i] (cumulative only in metrics;
 * here per bucket), the last bucket is +Inf (bound 0). */
struct kvp_admin_latency {
    uint32_t nbuckets;
    uint32_t reserved;
    uint64_t bound_us[16];
    uint64_t count[16];
    double sum_s;
};
_Static_assert(sizeof(struct kvp_admin_latency) == 272, "wire struct");

/* STATS reply: one kvp_stats. */
#define KVP_STATS_MAP(X)                                                                           \
    X(clients)                                                                                     \
    X(namespaces)                                                                                  \
    X(pages_total)                                                                                 \
    X(pages_free)                                                                                  \
    X(pages_writing)                                                                               \
    X(pages_committed)                                                                             \
    X(pages_pinned)                                                                                \
    X(chunks_total)                                                                                \
    X(chunks_used)                                                                                 \
    X(lookups)                                                                                     \
    X(lookup_hits)                                                                                 \
    X(lookup_pages_hit)                                                                            \
    X(lookup_pending)                                                                              \
    X(allocs)                                                                                      \
    X(commits)                                                                                     \
    X(commit_dedups)                                                                               \
    X(releases)                                                                                    \
    X(evictions)                                                                                   \
    X(score_reports)                                                                               \
    X(errors_client)                                                                               \
    X(errors_server)                                                                               \
    X(released_by_detach)                                                                          \
    X(released_by_sidechannel)                                                                     \
    X(released_by_pidfd)                                                                           \
    X(released_by_heartbeat)                                                                       \
    X(leases_released_on_death)                                                                    \
    X(bytes_saved)                                                                                 \
    X(spill_writes)                                                                                \
    X(spill_restores)                                                                              \
    X(spill_dropped)                                                                               \
    X(spill_checksum_failures)

struct kvp_stats {
#define KVP_STATS_FIELD(name) uint64_t name;
    KVP_STATS_MAP(KVP_STATS_FIELD)
#undef KVP_STATS_FIELD
};

/* ---- codec (ipc/proto.c) -------------------------------------------------------------------- */
/* A decoded request or reply: pointers point into the frame, which must outlive the view.
 * Element arrays may be unaligned; read them with memcpy (kvp_get_* helpers below). */
struct kvp_msg {
    struct kvp_hdr hdr;
    const uint8_t *body; /* bytes after the header */
    size_t body_len;
    /* op-specific views, set by kvp_decode_request / kvp_decode_reply */
    union {
        struct kvp_attach attach;
        struct kvp_attach_rep attach_rep;
        struct kvp_lookup lookup;
        struct kvp_lookup_rep lookup_rep;
        struct kvp_alloc alloc;
        struct kvp_stats stats;
    } u;
    const uint8_t *elems; /* op's element array (hashes, pages, ids, commit or score entries) */
    size_t elems_len;     /* bytes of elems */
};

/* Check and decode a request frame. max_len is KVP_MAX_FRAME_PRE for unattached peers.
 * Returns KVP_OK or a client status code; on error msg->hdr.seq/op are filled in when the header
 * itself was readable (so the error reply can echo them). Never reads past buf[len). */
int kvp_decode_request(const void *buf, size_t len, size_t max_len, struct kvp_msg *msg);

/* Check and decode a reply frame for the given request op and seq. Returns KVP_OK, a status code
 * carried by the reply, or KVP_E_MALFORMED for a frame that does not parse. */
int kvp_decode_reply(const void *buf, size_t len, struct kvp_msg *msg);

/* Write a header into buf (>= sizeof(struct kvp_hdr)). */
void kvp_put_hdr(void *buf, int op, int status, uint32_t seq, uint32_t count);

/* Side channel: decode a hello / welcome of exactly the right size. Return KVP_OK or an error. */
int kvp_decode_hello(const void *buf, size_t len, struct kvp_hello *out);
int kvp_decode_welcome(const void *buf, size_t len, struct kvp_welcome *out);

/* Score entries are variable length: iterate them. *pos starts at 0. Returns 1 and fills ent and
 * scores (unaligned float array) for the next entry, 0 at the end, or -1 if malformed. Entries
 * were fully checked by kvp_decode_request, so -1 only happens on frames that skipped it. */
int kvp_next_score(const struct kvp_msg *msg, size_t *pos, struct kvp_score_ent *ent,
                   const uint8_t **scores);

#ifdef __cplusplus
}
#endif
#endif
