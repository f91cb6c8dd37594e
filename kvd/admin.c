/*
 * admin.c - the admin part of the protocol (op ADMIN): what kvctl and tests see of the daemon.
 *
 * Invariants:
 *  1. Read-only sub-commands (STATUS, CLIENTS, CHAINS, SHOW, POOL, POLICY_GET, SPILL, CONFIG,
 *     LATENCY) are open to every attached client and change nothing but counters. Changing ones
 *     (CHECK, FAULT, EVICT, POLICY_SET) need c->admin (root, kvd's uid or admin_group): E_PERM.
 *  2. Every reply fits d->reply (reply_cap bytes): listings stop early and say where to go on
 *     (kvp_admin_list.next); SHOW keeps the leaf end of a chain that does not fit.
 *  3. Listings are computed on request by walking the pool (O(pages)); nothing is cached, so an
 *     answer is always the state of the moment it was asked.
 *  4. EVICT purges: the prefix's spill records go first (kvd_tier_evict_under), then its resident
 *     pages through kv_pool_evict_page (nothing is spilled), leaves first, so a chain never
 *     loses its middle and pinned pages (and what they hold up) are never touched.
 *  5. POLICY_SET builds every namespace's new policy before it moves a single page: on -ENOMEM
 *     nothing changed. Moving keeps invariant 3 of pool.h (linked iff unpinned committed leaf).
 *  6. SIGHUP (kvd_reload) re-reads the configuration file and applies the keys a running daemon
 *     can change (log_level, policy, heartbeat_ms, attach_timeout_ms, client_group, admin_group);
 *     a key given on the command line keeps its value, as it did at start.
 */
#include <errno.h>
#include <grp.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "server.h"
#include "spill.h"

#ifndef KVD_VERSION
#define KVD_VERSION "0.1.0"
#endif

#define HDR sizeof(struct kvp_hdr)

struct adm {
    struct kvd *d;
    struct kv_client *c;
    const struct kvp_msg *m;
    const uint8_t *rid;
    size_t rid_len;
    const uint8_t *arg; /* argument after the sub-command */
    size_t arg_len;
};

static void admin_status(struct adm *a, int status)
{
    uint8_t rep[HDR];
    if (status >= 32)
        a->d->st.errors_server++;
    else if (status != KVP_OK)
        a->d->st.errors_client++;
    kvp_put_hdr(rep, KVP_OP_ADMIN, status, a->m->hdr.seq, 0);
    kvd_send(a->d, a->rid, a->rid_len, rep, sizeof(rep));
}

/* Send the body already written at d->reply + HDR. */
static void admin_reply(struct adm *a, uint32_t count, size_t body_len)
{
    kvp_put_hdr(a->d->reply, KVP_OP_ADMIN, KVP_OK, a->m->hdr.seq, count);
    kvd_send(a->d, a->rid, a->rid_len, a->d->reply, HDR + body_len);
}

static uint8_t *admin_body(struct adm *a)
{
    return a->d->reply + HDR;
}

static size_t admin_body_cap(struct adm *a)
{
    return a->d->reply_cap - HDR;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    memset(dst + n, 0, cap - n);
}

/* Milliseconds since this process started (from /proc: kvd keeps no start time of its own). */
static uint64_t uptime_ms(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    unsigned long long start = 0;
    struct timespec ts;

    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may hold spaces; fields after it are plain */
    if (!p || sscanf(p + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                     "%*d %*d %llu",
                     &start) != 1)
        return 0;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t st = start * 1000 / (uint64_t)sysconf(_SC_CLK_TCK);
    return now > st ? now - st : 0;
}

/* ---- pool walks ------------------------------------------------------------------------------ */

#define for_each_page(p, pg)                                                                       \
    for (uint32_t ci_ = 0; ci_ < (p)->nchunks; ci_++)                                              \
        for (struct kv_page *pg = (p)->chunks[ci_].ns ? (p)->chunks[ci_].pages : NULL;             \
             pg && pg < (p)->chunks[ci_].pages + (p)->chunks[ci_].npages; pg++)

#define for_each_spilled(p, in)                                                                    \
    for (size_t bi_ = 0; bi_ < (p)->nbuckets; bi_++)                                               \
        for (struct kv_inode *in = (p)->buckets[bi_]; in; in = in->next)                           \
            if (in->kind == KV_INODE_SPILLED)

static int is_chain_end(const struct kv_page *pg)
{
    return (pg->state == KV_PAGE_COMMITTED && pg->n_children == 0) ||
           (pg->state == KV_PAGE_WRITING && pg->in.kind == KV_INODE_PAGE);
}

static uint8_t page_tier(const struct kv_page *pg)
{
    return pg->state == KV_PAGE_WRITING ? KVP_TIER_WRITING : KVP_TIER_POOL;
}

static float page_score(const struct kv_page *pg, float *max)
{
    float sum = 0, mx = 0;
    for (unsigned t = 0; pg->scores && t < pg->ntok; t++) {
        sum += pg->scores[t];
        if (pg->scores[t] > mx)
            mx = pg->scores[t];
    }
    if (max)
        *max = mx;
    return sum;
}

static void chain_fill(struct kvp_admin_chain *e, const struct kv_page *leaf)
{
    const struct kv_ns *ns = leaf->chunk->ns;
    memset(e, 0, sizeof(*e));
    memcpy(e->hash, leaf->in.hash, KVP_HASH_BYTES);
    e->ns_id = ns->id;
    e->tier = page_tier(leaf);
    e->k_fmt = ns->layout.k_fmt;
    e->v_fmt = ns->layout.v_fmt;
    e->hits = leaf->hits;
    for (const struct kv_page *pg = leaf; pg; pg = pg->parent) {
        e->pages++;
        e->tokens += pg->ntok;
        e->refs += pg->refs;
        e->pinned += pg->refs > 0;
        e->score += page_score(pg, NULL);
    }
}

/* Find a hash in ns_id (0: every namespace). */
static struct kv_inode *find_key(struct kv_pool *p, const struct kvp_admin_key *k)
{
    if (k->ns_id)
        return kv_pool_find(p, k->ns_id, k->hash);
    for (uint32_t i = 0; i < p->n_ns; i++) {
        struct kv_inode *in = kv_pool_find(p, p->ns[i]->id, k->hash);
        if (in)
            return in;
    }
    return NULL;
}

/* ---- read-only sub-commands ------------------------------------------------------------------ */

static void adm_status(struct adm *a)
{
    struct kvd *d = a->d;
    struct kvp_admin_status s;

    kvd_stats_refresh(d);
    memset(&s, 0, sizeof(s));
    copy_str(s.version, sizeof(s.version), KVD_VERSION);
    copy_str(s.backend, sizeof(s.backend), d->arena.ops ? d->arena.ops->name : "?");
    copy_str(s.policy, sizeof(s.policy), d->pool.pol_ops ? d->pool.pol_ops->name : "?");
    copy_str(s.run_dir, sizeof(s.run_dir), d->cfg.run_dir);
    copy_str(s.state_dir, sizeof(s.state_dir), d->cfg.state_dir);
    s.pid = (uint32_t)getpid();
    s.metrics_port = d->metrics_fd >= 0 ? d->metrics_port : 0;
    s.uptime_ms = uptime_ms();
    s.arena_bytes = d->arena.bytes;
    s.chunk_bytes = d->pool.chunk_bytes;
    s.nchunks = d->pool.nchunks;
    s.nchunks_free = d->pool.nfree_chunks;
    s.clients = d->nclients;
    s.namespaces = (uint32_t)d->st.namespaces;
    s.watchdog_ms = d->watchdog_ms;
    s.admin = a->c->admin;
    memcpy(admin_body(a), &s, sizeof(s));
    admin_reply(a, 0, sizeof(s));
}

/* Parse a kvp_admin_range; returns the most entries of `size` bytes that fit after the list head.
 */
static int range_arg(struct adm *a, size_t size, struct kvp_admin_range *r, uint32_t *room)
{
    size_t fit = (admin_body_cap(a) - sizeof(struct kvp_admin_list)) / size;
    memset(r, 0, sizeof(*r));
    if (a->arg_len != 0 && a->arg_len != sizeof(*r))
        return KVP_E_MALFORMED;
    if (a->arg_len)
        memcpy(r, a->arg, sizeof(*r));
    if (fit > KVP_MAX_LIST)
        fit = KVP_MAX_LIST;
    *room = r->max && r->max < fit ? r->max : (uint32_t)fit;
    return KVP_OK;
}

static void list_reply(struct adm *a, uint32_t total, uint32_t start, uint32_t n, size_t size)
{
    struct kvp_admin_list l = {.total = total, .next = start + n};
    if (start > total)
        l.next = total;
    memcpy(admin_body(a), &l, sizeof(l));
    admin_reply(a, n, sizeof(l) + (size_t)n * size);
}

static void adm_clients(struct adm *a)
{
    struct kvd *d = a->d;
    struct kvp_admin_range r;
    uint32_t room, idx = 0, n = 0;
    uint8_t *out = admin_body(a) + sizeof(struct kvp_admin_list);
    uint64_t now = kv_now_ms();
    int st = range_arg(a, sizeof(struct kvp_admin_client), &r, &room);

    if (st != KVP_OK) {
        admin_status(a, st);
        return;
    }
    for (uint32_t i = 0; i < d->cfg.max_clients; i++) {
        const struct kv_client *c = &d->clients[i];
        struct kvp_admin_client e;
        if (c->state == KV_CLIENT_FREE)
            continue;
        if (idx++ < r.start || n >= room)
            continue;
        memset(&e, 0, sizeof(e));
        e.id = c->id;
        e.pid = (int32_t)c->peer.pid;
        e.uid = (uint32_t)c->peer.uid;
        e.gid = (uint32_t)c->peer.gid;
        e.state = c->state;
        e.admin = c->admin;
        e.pidfd = c->pidfd >= 0;
        e.ns_id = c->ns ? c->ns->id : 0;
        if (c->ns)
            copy_str(e.ns, sizeof(e.ns), c->ns->name);
        e.leases = c->leases.total;
        e.pages = c->leases.n;
        e.requests = c->requests;
        e.age_ms = now - c->created_ms;
        e.idle_ms = now - c->last_seen_ms;
        memcpy(out + (size_t)n++ * sizeof(e), &e, sizeof(e));
    }
    list_reply(a, idx, r.start, n, sizeof(struct kvp_admin_client));
}

static void adm_chains(struct adm *a)
{
    struct kv_pool *p = &a->d->pool;
    struct kvp_admin_range r;
    uint32_t room, idx = 0, n = 0;
    uint8_t *out = admin_body(a) + sizeof(struct kvp_admin_list);
    int st = range_arg(a, sizeof(struct kvp_admin_chain), &r, &room);

    if (st != KVP_OK) {
        admin_status(a, st);
        return;
    }
    for_each_page(p, pg)
    {
        struct kvp_admin_chain e;
        if (!is_chain_end(pg))
            continue;
        if (idx++ < r.start || n >= room)
            continue;
        chain_fill(&e, pg);
        memcpy(out + (size_t)n++ * sizeof(e), &e, sizeof(e));
    }
    for_each_spilled(p, in)
    {
        struct kvp_admin_chain e;
        struct kv_ns *ns = kv_pool_ns_by_id(p, in->ns_id);
        if (idx++ < r.start || n >= room)
            continue;
        memset(&e, 0, sizeof(e));
        memcpy(e.hash, in->hash, KVP_HASH_BYTES);
        e.ns_id = in->ns_id;
        e.tier = KVP_TIER_SPILL;
        e.k_fmt = ns ? ns->layout.k_fmt : 0;
        e.v_fmt = ns ? ns->layout.v_fmt : 0;
        memcpy(out + (size_t)n++ * sizeof(e), &e, sizeof(e));
    }
    list_reply(a, idx, r.start, n, sizeof(struct kvp_admin_chain));
}

static float half_to_float(uint16_t h)
{
    int e = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float v = e == 0    ? ldexpf((float)mant, -24)
              : e == 31 ? (mant ? NAN : INFINITY)
                        : ldexpf((float)(mant | 0x400), e - 25);
    return (h & 0x8000) ? -v : v;
}

/* min/max/mean of the scales of one kind (K or V) over a page in the host arena. The scale
 * records of each format are described in kv_format.h; formats without scales give NaN. */
static void page_scales(const struct kvd *d, const struct kv_ns *ns, const struct kv_page *pg,
                        unsigned kind, float out[3])
{
    const struct kv_layout *l = &ns->layout;
    int fmt = kind == KV_KIND_K ? l->k_fmt : l->v_fmt;
    size_t soff = kv_seg_scale_offset(fmt, l), nrec;
    double sum = 0;
    uint64_t cnt = 0;

    out[0] = out[1] = out[2] = NAN;
    if (d->arena.backend != KVP_BACKEND_HOST || !d->arena.base || soff == 0 || pg->ntok == 0)
        return;
    switch (fmt) {
    case KV_FMT_FP8_E4M3:
    case KV_FMT_FP8_E5M2:
    case KV_FMT_INT8:
        nrec = pg->ntok;
        break;
    case KV_FMT_INT4:
        nrec = (size_t)l->page_tokens * l->head_dim / 32;
        break;
    case KV_FMT_KIVI4:
    case KV_FMT_KIVI2:
        if (!l->group)
            return;
        nrec = kind == KV_KIND_K ? (size_t)l->page_tokens / l->group * l->head_dim
                                 : (size_t)l->page_tokens * (l->head_dim / l->group);
        break;
    default:
        return;
    }
    const uint8_t *page = (const uint8_t *)d->arena.base + kv_pool_page_offset(&d->pool, pg);
    for (unsigned ly = 0; ly < l->n_layers; ly++) {
        for (unsigned h = 0; h < l->n_kv_heads; h++) {
            const uint8_t *s = page + kv_seg_offset(l, ly, kind, h) + soff;
            for (size_t i = 0; i < nrec; i++) {
                float v;
                if (fmt == KV_FMT_FP8_E4M3 || fmt == KV_FMT_FP8_E5M2 || fmt == KV_FMT_INT8) {
                    memcpy(&v, s + i * 4, 4);
                } else {
                    uint16_t hv;
                    memcpy(&hv, s + i * 4, 2); /* struct kv_sm16: scale first */
                    v = half_to_float(hv);
                }
                if (!isfinite(v))
                    continue;
                if (cnt == 0 || v < out[0])
                    out[0] = v;
                if (cnt == 0 || v > out[1])
                    out[1] = v;
                sum += v;
                cnt++;
            }
        }
    }
    if (cnt)
        out[2] = (float)(sum / (double)cnt);
}

static void adm_show(struct adm *a)
{
    struct kvd *d = a->d;
    struct kvp_admin_key k;
    struct kvp_admin_show s;
    struct kv_inode *in;

    if (a->arg_len != sizeof(k)) {
        admin_status(a, KVP_E_MALFORMED);
        return;
    }
    memcpy(&k, a->arg, sizeof(k));
    in = find_key(&d->pool, &k);
    if (!in) {
        admin_status(a, KVP_E_NOENT);
        return;
    }
    struct kv_ns *ns = kv_pool_ns_by_id(&d->pool, in->ns_id);
    memset(&s, 0, sizeof(s));
    s.ns_id = in->ns_id;
    if (ns) {
        s.page_bytes = ns->page_bytes;
        s.layout = ns->layout;
        copy_str(s.ns, sizeof(s.ns), ns->name);
    }
    struct kv_page *leaf = kv_pool_page_of(in);
    if (!leaf || !ns) {
        s.flags = KVP_SHOW_SPILLED;
        memcpy(admin_body(a), &s, sizeof(s));
        admin_reply(a, 0, sizeof(s));
        return;
    }
    /* how many pages, from the leaf up, fit in one reply */
    size_t used = sizeof(s), per = sizeof(struct kvp_admin_page);
    struct kv_page *top = leaf;
    for (struct kv_page *pg = leaf; pg; pg = pg->parent) {
        size_t need = per + (pg->scores ? (size_t)pg->ntok * sizeof(float) : 0);
        if (used + need > admin_body_cap(a)) {
            s.flags |= KVP_SHOW_TRUNCATED;
            break;
        }
        used += need;
        s.npages++;
        s.tokens += pg->ntok;
        top = pg;
    }
    /* write them root first: walk up again and place each from the end */
    uint8_t *out = admin_body(a);
    size_t pos = used;
    uint32_t left = s.npages;
    for (struct kv_page *pg = leaf; left; pg = pg->parent, left--) {
        struct kvp_admin_page e;
        float kv[3];
        size_t ns_bytes = pg->scores ? (size_t)pg->ntok * sizeof(float) : 0;
        memset(&e, 0, sizeof(e));
        memcpy(e.hash, pg->in.hash, KVP_HASH_BYTES);
        e.page_id = pg->id;
        e.ntok = pg->ntok;
        e.tier = page_tier(pg);
        e.flags = pg->flags;
        e.offset = kv_pool_page_offset(&d->pool, pg);
        e.refs = pg->refs;
        e.n_children = pg->n_children;
        e.hits = pg->hits;
        e.score_sum = page_score(pg, &e.score_max);
        page_scales(d, ns, pg, KV_KIND_K, kv);
        e.k_scale_min = kv[0], e.k_scale_max = kv[1], e.k_scale_mean = kv[2];
        page_scales(d, ns, pg, KV_KIND_V, kv);
        e.v_scale_min = kv[0], e.v_scale_max = kv[1], e.v_scale_mean = kv[2];
        e.nscores = pg->scores ? pg->ntok : 0;
        pos -= per + ns_bytes;
        memcpy(out + pos, &e, sizeof(e));
        if (ns_bytes)
            memcpy(out + pos + per, pg->scores, ns_bytes);
    }
    (void)top;
    memcpy(out, &s, sizeof(s));
    admin_reply(a, s.npages, used);
}

static void adm_pool(struct adm *a)
{
    struct kv_pool *p = &a->d->pool;
    struct kvp_admin_range r;
    uint32_t room, n = 0;
    uint8_t *out = admin_body(a) + sizeof(struct kvp_admin_list);
    int st = range_arg(a, sizeof(struct kvp_admin_ns), &r, &room);

    if (st != KVP_OK) {
        admin_status(a, st);
        return;
    }
    uint32_t i;
    for (i = r.start; i < p->n_ns && n < room; i++) {
        const struct kv_ns *ns = p->ns[i];
        struct kvp_admin_ns e;
        if (strcmp(ns->name, KVP_ADMIN_NS) == 0)
            continue;
        memset(&e, 0, sizeof(e));
        copy_str(e.name, sizeof(e.name), ns->name);
        e.id = ns->id;
        e.nclients = ns->nclients;
        e.layout = ns->layout;
        e.page_bytes = ns->page_bytes;
        e.nchunks = ns->nchunks;
        e.npages = ns->npages;
        e.nfree = ns->nfree;
        e.nwriting = ns->nwriting;
        e.ncommitted = ns->ncommitted;
        for_each_page(p, pg) e.npinned += pg->chunk->ns == ns && pg->refs > 0;
        for_each_spilled(p, in) e.nspilled += in->ns_id == ns->id;
        memcpy(out + (size_t)n++ * sizeof(e), &e, sizeof(e));
    }
    struct kvp_admin_list l = {.total = p->n_ns, .next = i > p->n_ns ? p->n_ns : i};
    memcpy(admin_body(a), &l, sizeof(l));
    admin_reply(a, n, sizeof(l) + (size_t)n * sizeof(struct kvp_admin_ns));
}

static void policy_reply(struct adm *a)
{
    struct kvp_admin_policy pr;
    memset(&pr, 0, sizeof(pr));
    copy_str(pr.current, sizeof(pr.current), a->d->pool.pol_ops->name);
    copy_str(pr.known, sizeof(pr.known), pol_names());
    memcpy(admin_body(a), &pr, sizeof(pr));
    admin_reply(a, 0, sizeof(pr));
}

static uint64_t count_spilled(struct kv_pool *p)
{
    uint64_t n = 0;
    for_each_spilled(p, in) n++;
    return n;
}

static void adm_spill(struct adm *a)
{
    struct kvd *d = a->d;
    struct kvp_admin_spill s;

    memset(&s, 0, sizeof(s));
    copy_str(s.state_dir, sizeof(s.state_dir), d->cfg.state_dir);
    s.spilled = count_spilled(&d->pool);
    kvd_stats_refresh(d); /* the spill_* counters come from the tier */
    if (d->spill) {
        struct kv_spill_stats ss;
        kv_spill_stats(d->spill, &ss);
        s.enabled = 1;
        s.backend = (uint32_t)ss.backend;
        s.slot_bytes = ss.slot_bytes;
        s.slots_total = ss.slots_total;
        s.slots_used = ss.slots_used;
        s.inflight = ss.inflight;
        s.write_bytes = ss.write_bytes;
        s.read_bytes = ss.read_bytes;
        s.demotions = ss.demotions;
        s.read_errors = ss.read_errors;
        s.invalidations = ss.invalidations;
    }
    s.writes = d->st.spill_writes;
    s.restores = d->st.spill_restores;
    s.dropped = d->st.spill_dropped;
    s.checksum_failures = d->st.spill_checksum_failures;
    memcpy(admin_body(a), &s, sizeof(s));
    admin_reply(a, 0, sizeof(s));
}

static void adm_config(struct adm *a)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (!f) {
        admin_status(a, KVP_E_NOMEM);
        return;
    }
    kv_config_print(&a->d->cfg, f, 1);
    if (fclose(f) != 0 || !text) {
        free(text);
        admin_status(a, KVP_E_NOMEM);
        return;
    }
    if (len > admin_body_cap(a))
        len = admin_body_cap(a);
    memcpy(admin_body(a), text, len);
    free(text);
    admin_reply(a, 0, len);
}

static void adm_latency(struct adm *a)
{
    static const uint64_t bounds[KVD_LAT_NBOUNDS] = {KVD_LAT_BOUNDS_US};
    struct kvp_admin_latency l;

    memset(&l, 0, sizeof(l));
    l.nbuckets = KVD_LAT_NBOUNDS + 1;
    for (unsigned i = 0; i < KVD_LAT_NBOUNDS; i++)
        l.bound_us[i] = bounds[i];
    for (unsigned i = 0; i < l.nbuckets; i++)
        l.count[i] = a->d->lat_count[i];
    l.sum_s = a->d->lat_sum_s;
    memcpy(admin_body(a), &l, sizeof(l));
    admin_reply(a, 0, sizeof(l));
}

/* ---- changing sub-commands ------------------------------------------------------------------- */

/* Is pg the page `top` or a page that extends it? */
static int extends(const struct kv_page *pg, const struct kv_page *top)
{
    for (; pg; pg = pg->parent)
        if (pg == top)
            return 1;
    return 0;
}

static void adm_evict(struct adm *a)
{
    struct kvd *d = a->d;
    struct kv_pool *p = &d->pool;
    struct kvp_admin_key k;
    struct kvp_admin_evict ev = {0, 0, 0, 0};

    if (a->arg_len != sizeof(k)) {
        admin_status(a, KVP_E_MALFORMED);
        return;
    }
    memcpy(&k, a->arg, sizeof(k));
    struct kv_inode *in = find_key(p, &k);
    struct kv_page *top = kv_pool_page_of(in);
    if (!in || (top && top->state != KV_PAGE_COMMITTED)) {
        admin_status(a, in ? KVP_E_STATE : KVP_E_NOENT);
        return;
    }
    /* spill records under the prefix first: the resident pages' hashes link them to it */
    int dropped = kvd_tier_evict_under(d, in->ns_id, k.hash);
    ev.spill_dropped = dropped > 0 ? (uint32_t)dropped : 0;
    if (!top)
        goto out; /* the prefix was on disk only */
    /* leaves first, pass after pass, until nothing more comes loose (invariant 4). A freed
     * descriptor stays in its chunk, so comparing against top stays valid. */
    for (;;) {
        uint32_t before = ev.evicted;
        for_each_page(p, pg)
        {
            if (pg->state == KV_PAGE_COMMITTED && pg->n_children == 0 && pg->refs == 0 &&
                extends(pg, top) && kv_pool_evict_page(p, pg) == 0)
                ev.evicted++;
        }
        if (ev.evicted == before || top->state != KV_PAGE_COMMITTED)
            break;
    }
    if (top->state == KV_PAGE_COMMITTED)
        for_each_page(p, pg) ev.busy += pg->state == KV_PAGE_COMMITTED && extends(pg, top);
out:
    if (ev.evicted)
        d->pool_gen++;
    kv_notice("admin: client %u (pid %d) evicted %u pages and %u spill records, %u pinned pages "
              "left",
              a->c->id, (int)a->c->peer.pid, ev.evicted, ev.spill_dropped, ev.busy);
    kvd_publish(d, "evict", "admin %u %u %u", ev.evicted, ev.spill_dropped, ev.busy);
    memcpy(admin_body(a), &ev, sizeof(ev));
    admin_reply(a, 0, sizeof(ev));
}

/* Switch every namespace to policy `to` (invariant 5). 0, or -ENOMEM with nothing changed. */
static int policy_switch(struct kvd *d, const struct pol_ops *to)
{
    struct kv_pool *p = &d->pool;
    struct pol **fresh;

    if (to == p->pol_ops)
        return 0;
    fresh = kv_calloc(p->n_ns ? p->n_ns : 1, sizeof(*fresh));
    if (!fresh)
        return -ENOMEM;
    for (uint32_t i = 0; i < p->n_ns; i++) {
        if (to->init(&fresh[i]) != 0) {
            while (i--)
                to->free(fresh[i]);
            kv_free(fresh);
            return -ENOMEM;
        }
    }
    for (uint32_t i = 0; i < p->n_ns; i++) {
        struct kv_ns *ns = p->ns[i];
        for_each_page(p, pg)
        {
            if (pg->chunk->ns != ns || !pg->pol.linked)
                continue;
            p->pol_ops->remove(ns->pol, &pg->pol);
            to->add(fresh[i], &pg->pol);
        }
        p->pol_ops->free(ns->pol);
        ns->pol = fresh[i];
    }
    kv_free(fresh);
    kv_notice("eviction policy switched from %s to %s", p->pol_ops->name, to->name);
    p->pol_ops = to;
    copy_str(d->cfg.policy, sizeof(d->cfg.policy), to->name);
    kvd_publish(d, "policy", "%s", to->name);
    return 0;
}

static void adm_policy_set(struct adm *a)
{
    char name[32];
    const struct pol_ops *to;

    if (a->arg_len == 0 || a->arg_len > sizeof(name) || a->arg[a->arg_len - 1] != '\0') {
        admin_status(a, KVP_E_MALFORMED);
        return;
    }
    memcpy(name, a->arg, a->arg_len);
    to = pol_find(name);
    if (!to) {
        admin_status(a, KVP_E_INVAL);
        return;
    }
    if (to != a->d->pool.pol_ops)
        kv_notice("admin: client %u (pid %d) sets the eviction policy to %s", a->c->id,
                  (int)a->c->peer.pid, to->name);
    if (policy_switch(a->d, to) != 0) {
        admin_status(a, KVP_E_NOMEM);
        return;
    }
    policy_reply(a);
}

/* ---- SIGHUP ---------------------------------------------------------------------------------- */

/* Keys a running kvd can take from a changed file; the others wait for the next start. */
static int reload_key(struct kvd *d, const char *key, const struct kv_config *file)
{
    char err[200];
    int lvl;

    if (!strcmp(key, "log_level")) {
        lvl = kv_log_parse_level(file->log_level);
        if (lvl < 0)
            return -EINVAL;
        kv_log_init(lvl);
        copy_str(d->cfg.log_level, sizeof(d->cfg.log_level), file->log_level);
        return 0;
    }
    if (!strcmp(key, "policy")) {
        const struct pol_ops *to = pol_find(file->policy);
        return !to ? -EINVAL : policy_switch(d, to);
    }
    if (!strcmp(key, "client_group") || !strcmp(key, "admin_group")) {
        int admin = key[0] == 'a';
        const char *v = admin ? file->admin_group : file->client_group;
        gid_t gid = 0;
        if (v[0]) {
            struct kv_config probe = d->cfg; /* resolve through the same parser kvd uses */
            if (kv_config_set(&probe, key, v, err, sizeof(err)) != 0)
                return -EINVAL;
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (*end == '\0') {
                gid = (gid_t)n;
            } else {
                struct group *g = getgrnam(v);
                if (!g)
                    return -ENOENT;
                gid = g->gr_gid;
            }
        }
        if (admin) {
            d->admin_gid = gid;
            d->have_admin_gid = v[0] != '\0';
            copy_str(d->cfg.admin_group, sizeof(d->cfg.admin_group), v);
        } else {
            d->client_gid = gid;
            d->have_client_gid = v[0] != '\0';
            copy_str(d->cfg.client_group, sizeof(d->cfg.client_group), v);
        }
        return 0;
    }
    if (!strcmp(key, "heartbeat_ms")) {
        d->cfg.heartbeat_ms = file->heartbeat_ms;
        return 0;
    }
    if (!strcmp(key, "attach_timeout_ms")) {
        d->cfg.attach_timeout_ms = file->attach_timeout_ms;
        return 0;
    }
    return -EAGAIN; /* needs a restart */
}

#define RELOAD_EQ_STR(a, b)  (strcmp((a), (b)) == 0)
#define RELOAD_EQ_SIZE(a, b) ((a) == (b))
#define RELOAD_EQ_UINT(a, b) ((a) == (b))
#define RELOAD_EQ_BOOL(a, b) ((a) == (b))

void kvd_reload(struct kvd *d)
{
    struct kv_config file;
    char err[256];
    unsigned applied = 0, later = 0;

    sd_notify(0, "RELOADING=1");
    if (!d->config_path) {
        kv_notice("SIGHUP: kvd was started without a configuration file; nothing to reload");
        goto out;
    }
    kv_config_defaults(&file);
    if (kv_config_load(&file, d->config_path, err, sizeof(err)) != 0) {
        kv_err("SIGHUP: %s; keeping the running configuration", err);
        goto out;
    }
    /* A key is taken from the file when the file changed it and the command line did not set it
     * (the command line wins, as at start: it set the key iff the running value differs from
     * what the file gave at start). */
#define RELOAD_KEY(key, type, field, def, doc)                                                     \
    if (!RELOAD_EQ_##type(file.field, d->cfg_file.field)) {                                        \
        if (!RELOAD_EQ_##type(d->cfg.field, d->cfg_file.field)) {                                  \
            kv_notice("SIGHUP: '%s' was set on the command line or by kvctl; the file's value is " \
                      "ignored",                                                                   \
                      key);                                                                        \
        } else {                                                                                   \
            int rc_ = reload_key(d, key, &file);                                                   \
            if (rc_ == 0) {                                                                        \
                memcpy(&d->cfg_file.field, &file.field, sizeof(file.field));                       \
                applied++;                                                                         \
                kv_notice("SIGHUP: '%s' reloaded", key);                                           \
            } else if (rc_ == -EAGAIN) {                                                           \
                later++;                                                                           \
                kv_notice("SIGHUP: '%s' changed; it takes effect at the next start", key);         \
            } else {                                                                               \
                kv_err("SIGHUP: '%s': cannot apply the new value: %s", key, strerror(-rc_));       \
            }                                                                                      \
        }                                                                                          \
    }
    KV_CONFIG_MAP(RELOAD_KEY)
#undef RELOAD_KEY
    kv_notice("SIGHUP: %s reloaded: %u keys applied, %u need a restart", d->config_path, applied,
              later);
out:
    sd_notifyf(0, "READY=1\nSTATUS=serving %s (reloaded)", d->cfg.run_dir);
}

/* ---- dispatch -------------------------------------------------------------------------------- */

void kvd_admin_request(struct kvd *d, struct kv_client *c, const struct kvp_msg *m,
                       const uint8_t *rid, size_t rid_len)
{
    struct adm a = {.d = d, .c = c, .m = m, .rid = rid, .rid_len = rid_len};
    uint32_t sub;
    char why[200];

    if (m->body_len < 4) {
        admin_status(&a, KVP_E_MALFORMED);
        return;
    }
    memcpy(&sub, m->body, 4);
    a.arg = m->body + 4;
    a.arg_len = m->body_len - 4;
    switch (sub) { /* invariant 1: changing sub-commands need the admin right */
    case KVP_ADMIN_CHECK:
    case KVP_ADMIN_FAULT:
    case KVP_ADMIN_EVICT:
    case KVP_ADMIN_POLICY_SET:
        if (!c->admin) {
            admin_status(&a, KVP_E_PERM);
            return;
        }
        break;
    default:
        break;
    }
    switch (sub) {
    case KVP_ADMIN_CHECK:
        if (kv_pool_check(&d->pool, why, sizeof(why)) != 0) {
            kv_err("pool check failed: %s", why);
            admin_status(&a, KVP_E_INTERNAL);
            return;
        }
        admin_status(&a, KVP_OK);
        return;
    case KVP_ADMIN_FAULT: {
        int32_t n;
        if (!d->cfg.fault_injection) {
            admin_status(&a, KVP_E_PERM);
            return;
        }
        if (a.arg_len < 4) {
            admin_status(&a, KVP_E_MALFORMED);
            return;
        }
        memcpy(&n, a.arg, 4);
        admin_status(&a, KVP_OK); /* reply first: sending must not use the budget */
        kv_mem_fail_after(n);
        return;
    }
    case KVP_ADMIN_STATUS:
        adm_status(&a);
        return;
    case KVP_ADMIN_CLIENTS:
        adm_clients(&a);
        return;
    case KVP_ADMIN_CHAINS:
        adm_chains(&a);
        return;
    case KVP_ADMIN_SHOW:
        adm_show(&a);
        return;
    case KVP_ADMIN_POOL:
        adm_pool(&a);
        return;
    case KVP_ADMIN_EVICT:
        adm_evict(&a);
        return;
    case KVP_ADMIN_POLICY_GET:
        policy_reply(&a);
        return;
    case KVP_ADMIN_POLICY_SET:
        adm_policy_set(&a);
        return;
    case KVP_ADMIN_SPILL:
        adm_spill(&a);
        return;
    case KVP_ADMIN_CONFIG:
        adm_config(&a);
        return;
    case KVP_ADMIN_LATENCY:
        adm_latency(&a);
        return;
    default:
        admin_status(&a, KVP_E_OP);
    }
}
