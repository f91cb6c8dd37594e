/*
 * metrics.c - the Prometheus endpoint (text exposition 0.0.4 over HTTP, libmicrohttpd) and the
 * refresh of kvd's counters from the pool.
 *
 * Invariants:
 *  1. MHD runs without threads of its own (MHD_USE_EPOLL, external mode): every callback runs
 *     inside kvd's event loop, so the handler reads struct kvd without locks.
 *  2. d->metrics_fd is an epoll fd of our own that holds MHD's epoll fd and a timerfd. It is
 *     readable when MHD has socket work or when MHD's own timeout (idle connections) expires;
 *     kvd_metrics_service runs MHD once and re-arms the timer from MHD_get_timeout, so a
 *     level-triggered wake-up never spins and MHD's timeouts are honoured without a periodic tick.
 *  3. A scrape is computed from the live pool at request time (O(pages) for pinned pages); it
 *     never changes daemon state.
 *  4. The endpoint is loopback by default; it is read-only and serves only GET/HEAD /metrics.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "log.h"
#include "server.h"

#ifndef KVD_VERSION
#define KVD_VERSION "0.1.0"
#endif

#define METRICS_CONN_TIMEOUT_S 10u
#define METRICS_CONN_LIMIT     32u

struct metrics {
    struct MHD_Daemon *mhd;
    int ep;  /* our epoll: MHD's epoll fd + the timer */
    int tfd; /* timerfd for MHD's timeouts */
};

void kvd_stats_refresh(struct kvd *d)
{
    struct kv_pool_counts pc;
    kv_pool_counts(&d->pool, &pc);
    d->st.clients = d->nclients;
    d->st.namespaces = 0;
    for (uint32_t i = 0; i < d->pool.n_ns; i++) /* kvctl's reserved namespace is not one */
        d->st.namespaces += strcmp(d->pool.ns[i]->name, KVP_ADMIN_NS) != 0;
    d->st.pages_total = pc.pages_total;
    d->st.pages_free = pc.pages_free;
    d->st.pages_writing = pc.pages_writing;
    d->st.pages_committed = pc.pages_committed;
    d->st.pages_pinned = pc.pages_pinned;
    d->st.chunks_total = d->pool.nchunks;
    d->st.chunks_used = pc.chunks_used;
    d->st.evictions = d->pool.evictions;
    kvd_tier_stats(d);
}

/* ---- exposition ------------------------------------------------------------------------------ */

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
    family(f, name, type, help);
    fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

/* Bytes of resident pages (writing or committed) by storage format and K/V. */
static void bytes_by_format(FILE *f, const struct kvd *d)
{
    uint64_t bytes[KV_FMT_MAX_ID + 1][2];
    memset(bytes, 0, sizeof(bytes));
    for (uint32_t i = 0; i < d->pool.n_ns; i++) {
        const struct kv_ns *ns = d->pool.ns[i];
        const struct kv_layout *l = &ns->layout;
        uint64_t pages = (uint64_t)ns->ncommitted + ns->nwriting;
        uint64_t segs = (uint64_t)l->n_layers * l->n_kv_heads;
        if (l->k_fmt <= KV_FMT_MAX_ID)
            bytes[l->k_fmt][0] += pages * segs * kv_seg_bytes(l->k_fmt, l);
        if (l->v_fmt <= KV_FMT_MAX_ID)
            bytes[l->v_fmt][1] += pages * segs * kv_seg_bytes(l->v_fmt, l);
    }
    family(f, "kvd_resident_bytes", "gauge",
           "Bytes of pages in the pool (writing or committed), by storage format and K/V.");
    for (int fmt = 1; fmt <= KV_FMT_MAX_ID; fmt++)
        for (int k = 0; k < 2; k++)
            fprintf(f, "kvd_resident_bytes{format=\"%s\",kind=\"%s\"} %llu\n", kv_fmt_name(fmt),
                    k ? "v" : "k", (unsigned long long)bytes[fmt][k]);
}

static void latency(FILE *f, const struct kvd *d)
{
    static const uint64_t bounds[KVD_LAT_NBOUNDS] = {KVD_LAT_BOUNDS_US};
    uint64_t cum = 0;
    family(f, "kvd_request_duration_seconds", "histogram",
           "Time kvd spent handling one request, from receipt to reply.");
    for (unsigned i = 0; i < KVD_LAT_NBOUNDS; i++) {
        cum += d->lat_count[i];
        fprintf(f, "kvd_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                (double)bounds[i] * 1e-6, (unsigned long long)cum);
    }
    cum += d->lat_count[KVD_LAT_NBOUNDS];
    fprintf(f, "kvd_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    fprintf(f, "kvd_request_duration_seconds_sum %.9f\n", d->lat_sum_s);
    fprintf(f, "kvd_request_duration_seconds_count %llu\n", (unsigned long long)cum);
}

/* Write the whole exposition to f. */
static void metrics_write(FILE *f, struct kvd *d)
{
    const struct kvp_stats *s = &d->st;
    uint64_t spilled = 0;

    kvd_stats_refresh(d);
    for (size_t b = 0; b < d->pool.nbuckets; b++)
        for (const struct kv_inode *in = d->pool.buckets[b]; in; in = in->next)
            spilled += in->kind == KV_INODE_SPILLED;

    family(f, "kvd_info", "gauge", "Constant 1, labelled with the daemon's build and setup.");
    fprintf(f, "kvd_info{version=\"%s\",backend=\"%s\",policy=\"%s\"} 1\n", KVD_VERSION,
            d->arena.ops ? d->arena.ops->name : "none", d->pool.pol_ops->name);
    one(f, "kvd_arena_bytes", "gauge", "Bytes of the page arena.", d->arena.bytes);
    family(f, "kvd_chunks", "gauge", "Arena chunks by state.");
    fprintf(f, "kvd_chunks{state=\"used\"} %llu\nkvd_chunks{state=\"free\"} %llu\n",
            (unsigned long long)s->chunks_used,
            (unsigned long long)(s->chunks_total - s->chunks_used));
    one(f, "kvd_clients", "gauge", "Clients connected (side channel open).", s->clients);
    one(f, "kvd_namespaces", "gauge", "Namespaces known to the pool.", s->namespaces);
    family(f, "kvd_pages", "gauge",
           "Pages by state; pinned counts pages with a lease (a subset of writing + committed), "
           "spilled counts pages kept only in the spill tier.");
    fprintf(f,
            "kvd_pages{state=\"free\"} %llu\nkvd_pages{state=\"writing\"} %llu\n"
            "kvd_pages{state=\"committed\"} %llu\nkvd_pages{state=\"pinned\"} %llu\n"
            "kvd_pages{state=\"spilled\"} %llu\n",
            (unsigned long long)s->pages_free, (unsigned long long)s->pages_writing,
            (unsigned long long)s->pages_committed, (unsigned long long)s->pages_pinned,
            (unsigned long long)spilled);
    bytes_by_format(f, d);
    one(f, "kvd_lookups_total", "counter", "LOOKUP requests answered.", s->lookups);
    one(f, "kvd_lookup_hits_total", "counter", "Lookups that found at least one page.",
        s->lookup_hits);
    one(f, "kvd_lookup_misses_total", "counter", "Lookups that found no page.",
        s->lookups >= s->lookup_hits ? s->lookups - s->lookup_hits : 0);
    one(f, "kvd_lookup_pages_hit_total", "counter", "Pages returned by lookups.",
        s->lookup_pages_hit);
    one(f, "kvd_lookup_pending_total", "counter", "Lookups that met a page still being written.",
        s->lookup_pending);
    one(f, "kvd_saved_bytes_total", "counter", "Bytes of KV served from the cache by lookups.",
        s->bytes_saved);
    one(f, "kvd_allocated_pages_total", "counter", "Pages handed out for writing.", s->allocs);
    one(f, "kvd_committed_pages_total", "counter", "Pages committed.", s->commits);
    one(f, "kvd_commit_dedups_total", "counter",
        "Commits of a hash another client committed first.", s->commit_dedups);
    one(f, "kvd_released_pages_total", "counter", "Leases released explicitly.", s->releases);
    one(f, "kvd_score_reports_total", "counter", "Attention score reports applied.",
        s->score_reports);
    one(f, "kvd_evictions_total", "counter", "Pages evicted from the pool.", s->evictions);
    one(f, "kvd_spills_total", "counter", "Pages written to the spill tier.", s->spill_writes);
    one(f, "kvd_restores_total", "counter", "Pages restored from the spill tier.",
        s->spill_restores);
    one(f, "kvd_spill_dropped_total", "counter",
        "Victims dropped instead of spilled (disk full or I/O error).", s->spill_dropped);
    one(f, "kvd_checksum_failures_total", "counter",
        "Spill slots whose checksum or header did not verify (dropped, never served).",
        s->spill_checksum_failures);
    family(f, "kvd_errors_total", "counter", "Requests answered with an error, by whose fault.");
    fprintf(f, "kvd_errors_total{whose=\"client\"} %llu\nkvd_errors_total{whose=\"server\"} %llu\n",
            (unsigned long long)s->errors_client, (unsigned long long)s->errors_server);
    family(f, "kvd_clients_gone_total", "counter", "Clients dropped, by how kvd noticed.");
    fprintf(f,
            "kvd_clients_gone_total{why=\"detach\"} %llu\n"
            "kvd_clients_gone_total{why=\"sidechannel\"} %llu\n"
            "kvd_clients_gone_total{why=\"pidfd\"} %llu\n"
            "kvd_clients_gone_total{why=\"heartbeat\"} %llu\n",
            (unsigned long long)s->released_by_detach,
            (unsigned long long)s->released_by_sidechannel,
            (unsigned long long)s->released_by_pidfd, (unsigned long long)s->released_by_heartbeat);
    one(f, "kvd_leases_released_on_death_total", "counter",
        "Leases dropped because their client died.", s->leases_released_on_death);
    latency(f, d);
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned code, char *text, size_t len,
                                 const char *ctype)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, text, text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result metrics_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                       const char *method, const char *version, const char *upload,
                                       size_t *upload_size, void **state)
{
    struct kvd *d = cls;
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    (void)version;
    (void)upload;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        return send_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, NULL, 0, "text/plain");
    }
    if (*state == NULL) { /* first call for this request: headers only */
        *state = (void *)1;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/metrics") != 0) {
        f = open_memstream(&text, &len);
        if (!f)
            return MHD_NO;
        fprintf(f, "kvd %s: Prometheus metrics at /metrics\n", KVD_VERSION);
        if (fclose(f) != 0)
            return MHD_NO;
        return send_text(conn, strcmp(url, "/") == 0 ? MHD_HTTP_OK : MHD_HTTP_NOT_FOUND, text, len,
                         "text/plain; charset=utf-8");
    }
    f = open_memstream(&text, &len);
    if (!f)
        return MHD_NO;
    metrics_write(f, d);
    if (fclose(f) != 0) {
        free(text);
        return MHD_NO;
    }
    return send_text(conn, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8");
}

/* "host:port", "[v6]:port" or ":port" (all interfaces, IPv4). 0 or -EINVAL. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, int *v6)
{
    char host[KV_PATH_MAX];
    const char *colon = strrchr(s, ':');
    char *end;
    unsigned long port;

    if (!colon || colon - s >= (long)sizeof(host))
        return -EINVAL;
    port = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end || port > 65535)
        return -EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (host[0] == '[') {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        size_t n = strlen(host);
        if (n < 2 || host[n - 1] != ']')
            return -EINVAL;
        host[n - 1] = '\0';
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *v6 = 1;
        return inet_pton(AF_INET6, host + 1, &a->sin6_addr) == 1 ? 0 : -EINVAL;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *v6 = 0;
    if (host[0] == '\0')
        return 0;
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -EINVAL;
}

static void metrics_arm(struct metrics *m)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    struct itimerspec it;
    memset(&it, 0, sizeof(it));
    if (MHD_get_timeout(m->mhd, &ms) == MHD_YES) {
        it.it_value.tv_sec = (time_t)(ms / 1000);
        it.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
        if (ms == 0)
            it.it_value.tv_nsec = 1; /* work is ready now: 0 would disarm the timer */
    }
    timerfd_settime(m->tfd, 0, &it, NULL);
}

int kvd_metrics_open(struct kvd *d)
{
    struct sockaddr_storage ss;
    struct metrics *m;
    int v6 = 0, rc;
    const union MHD_DaemonInfo *info;

    d->metrics_fd = -1;
    d->metrics_port = 0;
    if (!d->cfg.metrics_listen[0])
        return 0;
    if (parse_listen(d->cfg.metrics_listen, &ss, &v6) != 0) {
        kv_err("metrics_listen '%s': want address:port ([v6]:port for IPv6)",
               d->cfg.metrics_listen);
        return -EINVAL;
    }
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->ep = m->tfd = -1;
    m->mhd = MHD_start_daemon(MHD_USE_EPOLL | (v6 ? MHD_USE_IPv6 : 0), 0, NULL, NULL,
                              metrics_handler, d, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_CONNECTION_TIMEOUT, METRICS_CONN_TIMEOUT_S,
                              MHD_OPTION_CONNECTION_LIMIT, METRICS_CONN_LIMIT, MHD_OPTION_END);
    if (!m->mhd) {
        /* libmicrohttpd does not say why; a bind of our own does (in use, not local, ...) */
        int probe = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        rc = -EADDRNOTAVAIL;
        if (probe >= 0) {
            if (bind(probe, (struct sockaddr *)&ss,
                     ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in)) != 0)
                rc = -errno;
            close(probe);
        }
        goto err_free;
    }
    info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    m->ep = epoll_create1(EPOLL_CLOEXEC);
    m->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (!info || m->ep < 0 || m->tfd < 0) {
        rc = -EIO;
        goto err_stop;
    }
    struct epoll_event e1 = {.events = EPOLLIN, .data.u32 = 1}, e2 = {.events = EPOLLIN};
    if (epoll_ctl(m->ep, EPOLL_CTL_ADD, info->epoll_fd, &e1) != 0 ||
        epoll_ctl(m->ep, EPOLL_CTL_ADD, m->tfd, &e2) != 0) {
        rc = -errno;
        goto err_stop;
    }
    info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_BIND_PORT);
    d->metrics_port = info ? info->port : 0;
    d->mhd = m;
    d->metrics_fd = m->ep;
    metrics_arm(m);
    kv_info("metrics endpoint on %s (port %u), path /metrics", d->cfg.metrics_listen,
            d->metrics_port);
    return 0;
err_stop:
    if (m->ep >= 0)
        close(m->ep);
    if (m->tfd >= 0)
        close(m->tfd);
    MHD_stop_daemon(m->mhd);
err_free:
    free(m);
    return rc;
}

void kvd_metrics_service(struct kvd *d)
{
    struct metrics *m = d->mhd;
    uint64_t ticks;

    if (!m)
        return;
    while (read(m->tfd, &ticks, sizeof(ticks)) == sizeof(ticks))
        ;
    MHD_run(m->mhd);
    metrics_arm(m);
}

void kvd_metrics_close(struct kvd *d)
{
    struct metrics *m = d->mhd;

    if (!m)
        return;
    MHD_stop_daemon(m->mhd);
    close(m->ep);
    close(m->tfd);
    free(m);
    d->mhd = NULL;
    d->metrics_fd = -1;
}
