/*
 * kvctl_cmd.c - kvctl's listing and changing commands: clients, ls, show, pages, evict, policy,
 * spill, config. Every reply is checked against its declared sizes before a byte of it is used;
 * a reply that does not add up is reported as an error (exit 1), never printed half.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvctl.h"

#define LIST_MAX_ENTRIES (1u << 22) /* a sanity bound on any listing kvctl assembles */

static int bad_reply(const char *what)
{
    fprintf(stderr, "kvctl: malformed %s reply from kvd\n", what);
    return KVCTL_EFAIL;
}

/* Fetch a whole listing (every page of it) into a malloc'd array. */
static int fetch_list(struct kvctl *k, uint32_t sub, size_t esize, uint8_t **out, uint32_t *n)
{
    struct kvp_admin_range r = {0, 0};
    uint8_t *arr = NULL;
    uint32_t cnt = 0;
    int rc;

    for (;;) {
        struct kvp_admin_list l;
        size_t len;
        uint32_t count;
        rc = kvctl_admin(k, sub, &r, sizeof(r), &len, &count);
        if (rc)
            goto err;
        if (len < sizeof(l) || len != sizeof(l) + (size_t)count * esize ||
            cnt + count > LIST_MAX_ENTRIES) {
            rc = bad_reply("listing");
            goto err;
        }
        memcpy(&l, k->buf, sizeof(l));
        if (count) {
            uint8_t *na = realloc(arr, (size_t)(cnt + count) * esize);
            if (!na) {
                rc = kvctl_fail("listing", -ENOMEM);
                goto err;
            }
            arr = na;
            memcpy(arr + (size_t)cnt * esize, k->buf + sizeof(l), (size_t)count * esize);
            cnt += count;
        }
        if (l.next >= l.total || l.next <= r.start)
            break;
        r.start = l.next;
    }
    *out = arr;
    *n = cnt;
    return 0;
err:
    free(arr);
    return rc;
}

struct nslist {
    struct kvp_admin_ns *v;
    uint32_t n;
};

static int fetch_ns(struct kvctl *k, struct nslist *l)
{
    uint8_t *p = NULL;
    int rc = fetch_list(k, KVP_ADMIN_POOL, sizeof(struct kvp_admin_ns), &p, &l->n);
    l->v = (struct kvp_admin_ns *)(void *)p;
    for (uint32_t i = 0; rc == 0 && i < l->n; i++)
        l->v[i].name[KVP_MAX_NS_NAME - 1] = '\0';
    return rc;
}

static const char *ns_name(const struct nslist *l, uint32_t id)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (l->v[i].id == id)
            return l->v[i].name;
    return "?";
}

/* --ns NAME or id -> id; 0 when not given. -1 when unknown. */
static long ns_resolve(struct kvctl *k, const struct nslist *l)
{
    char *end;
    if (!k->ns)
        return 0;
    for (uint32_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].name, k->ns) == 0)
            return l->v[i].id;
    long v = strtol(k->ns, &end, 10);
    return *end == '\0' && v > 0 ? v : -1;
}

static void fmt_pair(char *buf, size_t cap, int k_fmt, int v_fmt)
{
    if (k_fmt == v_fmt)
        snprintf(buf, cap, "%s", kvctl_fmt(k_fmt));
    else
        snprintf(buf, cap, "%s/%s", kvctl_fmt(k_fmt), kvctl_fmt(v_fmt));
}

/* ---- clients --------------------------------------------------------------------------------- */

static const char *client_state(int s)
{
    return s == 3 ? "attached" : s == 2 ? "welcomed" : s == 1 ? "hello" : "?";
}

static int clients_fetch(struct kvctl *k, struct kvp_admin_client **v, uint32_t *n)
{
    uint8_t *p = NULL;
    int rc = fetch_list(k, KVP_ADMIN_CLIENTS, sizeof(struct kvp_admin_client), &p, n);
    *v = (struct kvp_admin_client *)(void *)p;
    for (uint32_t i = 0; rc == 0 && i < *n; i++)
        (*v)[i].ns[KVP_MAX_NS_NAME - 1] = '\0';
    return rc;
}

int kvctl_clients_table(struct kvctl *k)
{
    static const char *const hs[] = {">ID",     ">PID",   ">UID",      ">GID", "STATE", "NAMESPACE",
                                     ">LEASES", ">PAGES", ">REQUESTS", ">AGE", ">IDLE", "ADMIN"};
    struct kvp_admin_client *v;
    uint32_t n;
    int rc = clients_fetch(k, &v, &n);
    if (rc)
        return rc;
    struct kvctl_table *t = kvctl_table_new(12, hs);
    for (uint32_t i = 0; i < n; i++) {
        char c[9][32];
        snprintf(c[0], 32, "%u", v[i].id);
        snprintf(c[1], 32, "%d", v[i].pid);
        snprintf(c[2], 32, "%u", v[i].uid);
        snprintf(c[3], 32, "%u", v[i].gid);
        snprintf(c[4], 32, "%llu", (unsigned long long)v[i].leases);
        snprintf(c[5], 32, "%llu", (unsigned long long)v[i].pages);
        snprintf(c[6], 32, "%llu", (unsigned long long)v[i].requests);
        kvctl_dur(c[7], 32, v[i].age_ms);
        kvctl_dur(c[8], 32, v[i].idle_ms);
        kvctl_table_row(t, (const char *const[]){c[0], c[1], c[2], c[3], client_state(v[i].state),
                                                 v[i].ns[0] ? v[i].ns : "-", c[4], c[5], c[6], c[7],
                                                 c[8], v[i].admin ? "yes" : "no"});
    }
    kvctl_table_print(t);
    kvctl_table_free(t);
    free(v);
    return 0;
}

int kvctl_cmd_clients(struct kvctl *k, int argc, char **argv)
{
    struct kvp_admin_client *v;
    uint32_t n;
    int rc;
    (void)argv;
    if (argc != 0)
        return KVCTL_EUSAGE;
    if (!k->json)
        return kvctl_clients_table(k);
    rc = clients_fetch(k, &v, &n);
    if (rc)
        return rc;
    json_object *a = json_object_new_array();
    for (uint32_t i = 0; i < n; i++) {
        json_object *o = json_object_new_object();
        kvctl_jset(o, "id", kvctl_ju(v[i].id));
        kvctl_jset(o, "pid", json_object_new_int(v[i].pid));
        kvctl_jset(o, "uid", kvctl_ju(v[i].uid));
        kvctl_jset(o, "gid", kvctl_ju(v[i].gid));
        kvctl_jset(o, "state", kvctl_jstr(client_state(v[i].state)));
        kvctl_jset(o, "namespace", v[i].ns[0] ? kvctl_jstr(v[i].ns) : NULL);
        kvctl_jset(o, "ns_id", kvctl_ju(v[i].ns_id));
        kvctl_jset(o, "leases", kvctl_ju(v[i].leases));
        kvctl_jset(o, "pages", kvctl_ju(v[i].pages));
        kvctl_jset(o, "requests", kvctl_ju(v[i].requests));
        kvctl_jset(o, "age_ms", kvctl_ju(v[i].age_ms));
        kvctl_jset(o, "idle_ms", kvctl_ju(v[i].idle_ms));
        kvctl_jset(o, "admin", json_object_new_boolean(v[i].admin));
        kvctl_jset(o, "pidfd", json_object_new_boolean(v[i].pidfd));
        json_object_array_add(a, o);
    }
    kvctl_jprint(a);
    free(v);
    return 0;
}

/* ---- ls -------------------------------------------------------------------------------------- */

int kvctl_cmd_ls(struct kvctl *k, int argc, char **argv)
{
    static const char *const hs[] = {"HASH",    "NAMESPACE", "TIER",  "FORMAT", ">PAGES",
                                     ">TOKENS", ">REFS",     ">HITS", ">SCORE"};
    struct kvp_admin_chain *v;
    struct nslist nl = {0};
    uint8_t *p = NULL;
    uint32_t n;
    long only;
    int rc;
    (void)argv;

    if (argc != 0)
        return KVCTL_EUSAGE;
    rc = fetch_ns(k, &nl);
    if (rc == 0)
        rc = fetch_list(k, KVP_ADMIN_CHAINS, sizeof(struct kvp_admin_chain), &p, &n);
    if (rc) {
        free(nl.v);
        return rc;
    }
    v = (struct kvp_admin_chain *)(void *)p;
    only = ns_resolve(k, &nl);
    json_object *a = k->json ? json_object_new_array() : NULL;
    struct kvctl_table *t = k->json ? NULL : kvctl_table_new(9, hs);
    for (uint32_t i = 0; i < n; i++) {
        char hex[33], fmt[40], c[5][32];
        if (only && (long)v[i].ns_id != only)
            continue;
        kvctl_hex(hex, v[i].hash);
        if (a) {
            json_object *o = json_object_new_object();
            kvctl_jset(o, "hash", kvctl_jstr(hex));
            kvctl_jset(o, "namespace", kvctl_jstr(ns_name(&nl, v[i].ns_id)));
            kvctl_jset(o, "ns_id", kvctl_ju(v[i].ns_id));
            kvctl_jset(o, "tier", kvctl_jstr(kvctl_tier(v[i].tier)));
            kvctl_jset(o, "k_format", kvctl_jstr(kvctl_fmt(v[i].k_fmt)));
            kvctl_jset(o, "v_format", kvctl_jstr(kvctl_fmt(v[i].v_fmt)));
            kvctl_jset(o, "pages", kvctl_ju(v[i].pages));
            kvctl_jset(o, "tokens", kvctl_ju(v[i].tokens));
            kvctl_jset(o, "refs", kvctl_ju(v[i].refs));
            kvctl_jset(o, "pinned", kvctl_ju(v[i].pinned));
            kvctl_jset(o, "hits", kvctl_ju(v[i].hits));
            kvctl_jset(o, "score", json_object_new_double(v[i].score));
            json_object_array_add(a, o);
            continue;
        }
        fmt_pair(fmt, sizeof(fmt), v[i].k_fmt, v[i].v_fmt);
        snprintf(c[0], 32, "%u", v[i].pages);
        snprintf(c[1], 32, "%llu", (unsigned long long)v[i].tokens);
        snprintf(c[2], 32, "%u", v[i].refs);
        snprintf(c[3], 32, "%llu", (unsigned long long)v[i].hits);
        snprintf(c[4], 32, "%.4g", (double)v[i].score);
        kvctl_table_row(t,
                        (const char *const[]){hex, ns_name(&nl, v[i].ns_id), kvctl_tier(v[i].tier),
                                              fmt, c[0], c[1], c[2], c[3], c[4]});
    }
    if (a) {
        kvctl_jprint(a);
    } else {
        kvctl_table_print(t);
        kvctl_table_free(t);
    }
    free(v);
    free(nl.v);
    return 0;
}

/* ---- show ------------------------------------------------------------------------------------ */

static int key_arg(struct kvctl *k, const char *hash, struct kvp_admin_key *key)
{
    struct nslist nl = {0};
    long id;
    int rc;

    memset(key, 0, sizeof(*key));
    if (kvctl_parse_hash(hash, key->hash) != 0) {
        fprintf(stderr, "kvctl: '%s' is not a hash (32 hex digits, as `kvctl ls` shows)\n", hash);
        return KVCTL_EUSAGE;
    }
    if (!k->ns)
        return 0;
    rc = fetch_ns(k, &nl);
    if (rc)
        return rc;
    id = ns_resolve(k, &nl);
    free(nl.v);
    if (id < 0) {
        fprintf(stderr, "kvctl: no namespace '%s'\n", k->ns);
        return KVCTL_ENOENT;
    }
    key->ns_id = (uint32_t)id;
    return 0;
}

static json_object *scale_json(float mn, float mean, float mx)
{
    json_object *o = json_object_new_object();
    kvctl_jset(o, "min", kvctl_jnum(mn));
    kvctl_jset(o, "mean", kvctl_jnum(mean));
    kvctl_jset(o, "max", kvctl_jnum(mx));
    return o;
}

static const char *scale_text(char *buf, size_t cap, float mn, float mean, float mx)
{
    if (isnan(mn))
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.3g/%.3g/%.3g", (double)mn, (double)mean, (double)mx);
    return buf;
}

int kvctl_cmd_show(struct kvctl *k, int argc, char **argv)
{
    static const char *const hs[] = {">#",
                                     "HASH",
                                     ">PAGE",
                                     "TIER",
                                     ">TOKENS",
                                     ">REFS",
                                     ">HITS",
                                     ">KIDS",
                                     ">SCORE",
                                     "K-SCALE min/mean/max",
                                     "V-SCALE min/mean/max"};
    struct kvp_admin_key key;
    struct kvp_admin_show s;
    size_t len, pos;
    uint32_t count;
    char hex[33], fmt[40], pb[32];
    int rc;

    if (argc != 1)
        return KVCTL_EUSAGE;
    rc = key_arg(k, argv[0], &key);
    if (rc)
        return rc;
    rc = kvc_admin(k->c, KVP_ADMIN_SHOW, &key, sizeof(key), k->buf, KVCTL_BUF, &len, &count);
    if (rc == -ENOENT) {
        fprintf(stderr, "kvctl: no prefix %s%s%s in kvd\n", argv[0], k->ns ? " in " : "",
                k->ns ? k->ns : "");
        return KVCTL_ENOENT;
    }
    if (rc)
        return kvctl_fail("show", rc);
    if (len < sizeof(s))
        return bad_reply("show");
    memcpy(&s, k->buf, sizeof(s));
    s.ns[KVP_MAX_NS_NAME - 1] = '\0';
    /* validate the whole body before printing anything */
    pos = sizeof(s);
    for (uint32_t i = 0; i < s.npages; i++) {
        struct kvp_admin_page e;
        if (len - pos < sizeof(e))
            return bad_reply("show");
        memcpy(&e, k->buf + pos, sizeof(e));
        if (e.nscores > KV_MAX_PAGE_TOKENS || len - pos - sizeof(e) < (size_t)e.nscores * 4)
            return bad_reply("show");
        pos += sizeof(e) + (size_t)e.nscores * 4;
    }
    if (pos != len || count != s.npages)
        return bad_reply("show");
    fmt_pair(fmt, sizeof(fmt), s.layout.k_fmt, s.layout.v_fmt);
    json_object *o = NULL, *pages = NULL;
    struct kvctl_table *t = NULL;
    if (k->json) {
        json_object *l = json_object_new_object();
        o = json_object_new_object();
        pages = json_object_new_array();
        kvctl_jset(o, "hash", kvctl_jstr(argv[0]));
        kvctl_jset(o, "namespace", kvctl_jstr(s.ns));
        kvctl_jset(o, "ns_id", kvctl_ju(s.ns_id));
        kvctl_jset(o, "tier", kvctl_jstr((s.flags & KVP_SHOW_SPILLED) ? "spill" : "pool"));
        kvctl_jset(o, "truncated", json_object_new_boolean(s.flags & KVP_SHOW_TRUNCATED));
        kvctl_jset(o, "tokens", kvctl_ju(s.tokens));
        kvctl_jset(o, "page_bytes", kvctl_ju(s.page_bytes));
        kvctl_jset(l, "n_layers", kvctl_ju(s.layout.n_layers));
        kvctl_jset(l, "n_kv_heads", kvctl_ju(s.layout.n_kv_heads));
        kvctl_jset(l, "head_dim", kvctl_ju(s.layout.head_dim));
        kvctl_jset(l, "page_tokens", kvctl_ju(s.layout.page_tokens));
        kvctl_jset(l, "k_format", kvctl_jstr(kvctl_fmt(s.layout.k_fmt)));
        kvctl_jset(l, "v_format", kvctl_jstr(kvctl_fmt(s.layout.v_fmt)));
        kvctl_jset(l, "group", kvctl_ju(s.layout.group));
        kvctl_jset(o, "layout", l);
    } else {
        printf("prefix %s: namespace %s (id %u), %s\n", argv[0], s.ns, s.ns_id,
               (s.flags & KVP_SHOW_SPILLED) ? "in the spill tier only" : "in the pool");
        printf("layout %u layers x %u KV heads x %u dims, %u tokens per page, %s, %s per page\n",
               s.layout.n_layers, s.layout.n_kv_heads, s.layout.head_dim, s.layout.page_tokens, fmt,
               kvctl_bytes(pb, sizeof(pb), s.page_bytes));
        printf("%u pages, %llu tokens%s\n\n", s.npages, (unsigned long long)s.tokens,
               (s.flags & KVP_SHOW_TRUNCATED) ? " (only the pages nearest the end fit)" : "");
        t = kvctl_table_new(11, hs);
    }
    pos = sizeof(s);
    for (uint32_t i = 0; i < s.npages; i++) {
        struct kvp_admin_page e;
        memcpy(&e, k->buf + pos, sizeof(e));
        const uint8_t *sc = k->buf + pos + sizeof(e);
        pos += sizeof(e) + (size_t)e.nscores * 4;
        kvctl_hex(hex, e.hash);
        if (o) {
            json_object *p = json_object_new_object(), *ss = json_object_new_array();
            kvctl_jset(p, "index", kvctl_ju(i));
            kvctl_jset(p, "hash", kvctl_jstr(hex));
            kvctl_jset(p, "page_id", kvctl_ju(e.page_id));
            kvctl_jset(p, "offset", kvctl_ju(e.offset));
            kvctl_jset(p, "tier", kvctl_jstr(kvctl_tier(e.tier)));
            kvctl_jset(p, "tokens", kvctl_ju(e.ntok));
            kvctl_jset(p, "refs", kvctl_ju(e.refs));
            kvctl_jset(p, "hits", kvctl_ju(e.hits));
            kvctl_jset(p, "children", kvctl_ju(e.n_children));
            kvctl_jset(p, "demoted", json_object_new_boolean(e.flags & KVP_PAGE_DEMOTED));
            kvctl_jset(p, "score_sum", json_object_new_double(e.score_sum));
            kvctl_jset(p, "score_max", json_object_new_double(e.score_max));
            kvctl_jset(p, "k_scale", scale_json(e.k_scale_min, e.k_scale_mean, e.k_scale_max));
            kvctl_jset(p, "v_scale", scale_json(e.v_scale_min, e.v_scale_mean, e.v_scale_max));
            for (unsigned j = 0; j < e.nscores; j++) {
                float f;
                memcpy(&f, sc + (size_t)j * 4, 4);
                json_object_array_add(ss, json_object_new_double(f));
            }
            kvctl_jset(p, "scores", ss);
            json_object_array_add(pages, p);
            continue;
        }
        char c[7][32], ks[64], vs[64];
        snprintf(c[0], 32, "%u", i);
        snprintf(c[1], 32, "%u", e.page_id);
        snprintf(c[2], 32, "%u", e.ntok);
        snprintf(c[3], 32, "%u", e.refs);
        snprintf(c[4], 32, "%llu", (unsigned long long)e.hits);
        snprintf(c[5], 32, "%u", e.n_children);
        snprintf(c[6], 32, "%.4g", (double)e.score_sum);
        kvctl_table_row(
            t, (const char *const[]){
                   c[0], hex, c[1], kvctl_tier(e.tier), c[2], c[3], c[4], c[5], c[6],
                   scale_text(ks, sizeof(ks), e.k_scale_min, e.k_scale_mean, e.k_scale_max),
                   scale_text(vs, sizeof(vs), e.v_scale_min, e.v_scale_mean, e.v_scale_max)});
    }
    if (o) {
        kvctl_jset(o, "pages", pages);
        kvctl_jprint(o);
        return 0;
    }
    kvctl_table_print(t);
    kvctl_table_free(t);
    /* per-token scores, one line per page that has any */
    int header = 0;
    pos = sizeof(s);
    for (uint32_t i = 0; i < s.npages; i++) {
        struct kvp_admin_page e;
        memcpy(&e, k->buf + pos, sizeof(e));
        const uint8_t *sc = k->buf + pos + sizeof(e);
        pos += sizeof(e) + (size_t)e.nscores * 4;
        if (!e.nscores)
            continue;
        if (!header++)
            printf("\nper-token attention mass:\n");
        printf("%4u:", i);
        for (unsigned j = 0; j < e.nscores; j++) {
            float f;
            memcpy(&f, sc + (size_t)j * 4, 4);
            printf(" %.3g", (double)f);
        }
        printf("\n");
    }
    if (!header)
        printf("\nno attention scores reported for this prefix\n");
    return 0;
}

/* ---- pages ----------------------------------------------------------------------------------- */

int kvctl_cmd_pages(struct kvctl *k, int argc, char **argv)
{
    static const char *const hs[] = {"NAMESPACE", ">ID",      "LAYOUT",  "FORMAT",   ">PAGE",
                                     ">CHUNKS",   ">PAGES",   ">FREE",   ">WRITING", ">COMMITTED",
                                     ">PINNED",   ">SPILLED", ">CLIENTS"};
    struct nslist nl = {0};
    struct kvc_stats st;
    int rc;
    (void)argv;

    if (argc != 0)
        return KVCTL_EUSAGE;
    rc = kvc_stats(k->c, &st);
    if (rc)
        return kvctl_fail("stats", rc);
    rc = fetch_ns(k, &nl);
    if (rc)
        return rc;
    if (k->json) {
        json_object *o = json_object_new_object(), *a = json_object_new_array();
        json_object *tot = json_object_new_object();
        kvctl_jset(tot, "total", kvctl_ju(st.pages_total));
        kvctl_jset(tot, "free", kvctl_ju(st.pages_free));
        kvctl_jset(tot, "writing", kvctl_ju(st.pages_writing));
        kvctl_jset(tot, "committed", kvctl_ju(st.pages_committed));
        kvctl_jset(tot, "pinned", kvctl_ju(st.pages_pinned));
        kvctl_jset(tot, "chunks_total", kvctl_ju(st.chunks_total));
        kvctl_jset(tot, "chunks_used", kvctl_ju(st.chunks_used));
        kvctl_jset(o, "pool", tot);
        for (uint32_t i = 0; i < nl.n; i++) {
            const struct kvp_admin_ns *e = &nl.v[i];
            json_object *n = json_object_new_object();
            kvctl_jset(n, "name", kvctl_jstr(e->name));
            kvctl_jset(n, "id", kvctl_ju(e->id));
            kvctl_jset(n, "k_format", kvctl_jstr(kvctl_fmt(e->layout.k_fmt)));
            kvctl_jset(n, "v_format", kvctl_jstr(kvctl_fmt(e->layout.v_fmt)));
            kvctl_jset(n, "n_layers", kvctl_ju(e->layout.n_layers));
            kvctl_jset(n, "n_kv_heads", kvctl_ju(e->layout.n_kv_heads));
            kvctl_jset(n, "head_dim", kvctl_ju(e->layout.head_dim));
            kvctl_jset(n, "page_tokens", kvctl_ju(e->layout.page_tokens));
            kvctl_jset(n, "page_bytes", kvctl_ju(e->page_bytes));
            kvctl_jset(n, "chunks", kvctl_ju(e->nchunks));
            kvctl_jset(n, "pages", kvctl_ju(e->npages));
            kvctl_jset(n, "free", kvctl_ju(e->nfree));
            kvctl_jset(n, "writing", kvctl_ju(e->nwriting));
            kvctl_jset(n, "committed", kvctl_ju(e->ncommitted));
            kvctl_jset(n, "pinned", kvctl_ju(e->npinned));
            kvctl_jset(n, "spilled", kvctl_ju(e->nspilled));
            kvctl_jset(n, "clients", kvctl_ju(e->nclients));
            json_object_array_add(a, n);
        }
        kvctl_jset(o, "namespaces", a);
        kvctl_jprint(o);
        free(nl.v);
        return 0;
    }
    printf("pool: %llu pages: %llu free, %llu writing, %llu committed, %llu pinned; "
           "%llu of %llu chunks used\n\n",
           (unsigned long long)st.pages_total, (unsigned long long)st.pages_free,
           (unsigned long long)st.pages_writing, (unsigned long long)st.pages_committed,
           (unsigned long long)st.pages_pinned, (unsigned long long)st.chunks_used,
           (unsigned long long)st.chunks_total);
    struct kvctl_table *t = kvctl_table_new(13, hs);
    for (uint32_t i = 0; i < nl.n; i++) {
        const struct kvp_admin_ns *e = &nl.v[i];
        char c[12][40];
        snprintf(c[0], 40, "%u", e->id);
        snprintf(c[1], 40, "%ux%ux%ux%u", e->layout.n_layers, e->layout.n_kv_heads,
                 e->layout.head_dim, e->layout.page_tokens);
        fmt_pair(c[2], 40, e->layout.k_fmt, e->layout.v_fmt);
        kvctl_bytes(c[3], 40, e->page_bytes);
        snprintf(c[4], 40, "%u", e->nchunks);
        snprintf(c[5], 40, "%u", e->npages);
        snprintf(c[6], 40, "%u", e->nfree);
        snprintf(c[7], 40, "%u", e->nwriting);
        snprintf(c[8], 40, "%u", e->ncommitted);
        snprintf(c[9], 40, "%u", e->npinned);
        snprintf(c[10], 40, "%llu", (unsigned long long)e->nspilled);
        snprintf(c[11], 40, "%u", e->nclients);
        kvctl_table_row(t, (const char *const[]){e->name, c[0], c[1], c[2], c[3], c[4], c[5], c[6],
                                                 c[7], c[8], c[9], c[10], c[11]});
    }
    kvctl_table_print(t);
    kvctl_table_free(t);
    free(nl.v);
    return 0;
}

/* ---- evict, policy --------------------------------------------------------------------------- */

int kvctl_cmd_evict(struct kvctl *k, int argc, char **argv)
{
    struct kvp_admin_key key;
    struct kvp_admin_evict ev;
    size_t len;
    int rc;

    if (argc != 1)
        return KVCTL_EUSAGE;
    rc = key_arg(k, argv[0], &key);
    if (rc)
        return rc;
    rc = kvc_admin(k->c, KVP_ADMIN_EVICT, &key, sizeof(key), k->buf, KVCTL_BUF, &len, NULL);
    if (rc == -ENOENT) {
        fprintf(stderr, "kvctl: no prefix %s in the pool\n", argv[0]);
        return KVCTL_ENOENT;
    }
    if (rc == -EPERM) {
        fprintf(stderr, "kvctl: evict needs kvd's admin group (or root, or kvd's user)\n");
        return KVCTL_EPERM;
    }
    if (rc)
        return kvctl_fail("evict", rc);
    if (len != sizeof(ev))
        return bad_reply("evict");
    memcpy(&ev, k->buf, sizeof(ev));
    if (k->json) {
        json_object *o = json_object_new_object();
        kvctl_jset(o, "hash", kvctl_jstr(argv[0]));
        kvctl_jset(o, "evicted", kvctl_ju(ev.evicted));
        kvctl_jset(o, "spill_dropped", kvctl_ju(ev.spill_dropped));
        kvctl_jset(o, "pinned_left", kvctl_ju(ev.busy));
        kvctl_jprint(o);
    } else {
        printf("evicted %u pages", ev.evicted);
        if (ev.spill_dropped)
            printf(", dropped %u spilled pages", ev.spill_dropped);
        if (ev.busy)
            printf("; %u pages stay because clients hold leases on them", ev.busy);
        printf("\n");
    }
    return ev.busy ? KVCTL_EFAIL : 0;
}

int kvctl_cmd_policy(struct kvctl *k, int argc, char **argv)
{
    struct kvp_admin_policy p;
    size_t len;
    int rc;

    if (argc == 1 && strcmp(argv[0], "get") == 0) {
        rc = kvctl_admin(k, KVP_ADMIN_POLICY_GET, NULL, 0, &len, NULL);
    } else if (argc == 2 && strcmp(argv[0], "set") == 0) {
        size_t n = strlen(argv[1]) + 1;
        if (n > sizeof(p.current)) {
            fprintf(stderr, "kvctl: policy name too long\n");
            return KVCTL_EUSAGE;
        }
        rc = kvc_admin(k->c, KVP_ADMIN_POLICY_SET, argv[1], n, k->buf, KVCTL_BUF, &len, NULL);
        if (rc == -EINVAL) {
            fprintf(stderr, "kvctl: kvd knows no policy '%s' (see `kvctl policy get`)\n", argv[1]);
            return KVCTL_EFAIL;
        }
        if (rc == -EPERM) {
            fprintf(stderr, "kvctl: policy set needs kvd's admin group (or root, or kvd's user)\n");
            return KVCTL_EPERM;
        }
        if (rc)
            return kvctl_fail("policy set", rc);
    } else {
        return KVCTL_EUSAGE;
    }
    if (rc)
        return rc;
    if (len != sizeof(p))
        return bad_reply("policy");
    memcpy(&p, k->buf, sizeof(p));
    p.current[sizeof(p.current) - 1] = p.known[sizeof(p.known) - 1] = '\0';
    if (k->json) {
        json_object *o = json_object_new_object(), *a = json_object_new_array();
        char *save = NULL;
        kvctl_jset(o, "policy", kvctl_jstr(p.current));
        for (char *tok = strtok_r(p.known, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            json_object_array_add(a, kvctl_jstr(tok));
        kvctl_jset(o, "known", a);
        kvctl_jprint(o);
    } else {
        printf("policy %s (known: %s)\n", p.current, p.known);
    }
    return 0;
}

/* ---- spill, config --------------------------------------------------------------------------- */

static const char *spill_backend(uint32_t b)
{
    switch (b) {
    case 1:
        return "io_uring, fixed buffers";
    case 2:
        return "io_uring";
    case 3:
        return "pread/pwrite";
    default:
        return "no store";
    }
}

int kvctl_cmd_spill(struct kvctl *k, int argc, char **argv)
{
    struct kvp_admin_spill s;
    size_t len;
    int rc;
    (void)argv;

    if (argc != 0)
        return KVCTL_EUSAGE;
    rc = kvctl_admin(k, KVP_ADMIN_SPILL, NULL, 0, &len, NULL);
    if (rc)
        return rc;
    if (len != sizeof(s))
        return bad_reply("spill");
    memcpy(&s, k->buf, sizeof(s));
    s.state_dir[sizeof(s.state_dir) - 1] = '\0';
    if (k->json) {
        json_object *o = json_object_new_object();
        kvctl_jset(o, "state_dir", kvctl_jstr(s.state_dir));
        kvctl_jset(o, "enabled", json_object_new_boolean(s.enabled));
        kvctl_jset(o, "backend", kvctl_jstr(spill_backend(s.backend)));
        kvctl_jset(o, "slot_bytes", kvctl_ju(s.slot_bytes));
        kvctl_jset(o, "slots_total", kvctl_ju(s.slots_total));
        kvctl_jset(o, "slots_used", kvctl_ju(s.slots_used));
        kvctl_jset(o, "inflight", kvctl_ju(s.inflight));
        kvctl_jset(o, "write_bytes", kvctl_ju(s.write_bytes));
        kvctl_jset(o, "read_bytes", kvctl_ju(s.read_bytes));
        kvctl_jset(o, "demotions", kvctl_ju(s.demotions));
        kvctl_jset(o, "read_errors", kvctl_ju(s.read_errors));
        kvctl_jset(o, "invalidations", kvctl_ju(s.invalidations));
        kvctl_jset(o, "spilled_pages", kvctl_ju(s.spilled));
        kvctl_jset(o, "writes", kvctl_ju(s.writes));
        kvctl_jset(o, "restores", kvctl_ju(s.restores));
        kvctl_jset(o, "dropped", kvctl_ju(s.dropped));
        kvctl_jset(o, "checksum_failures", kvctl_ju(s.checksum_failures));
        kvctl_jprint(o);
        return 0;
    }
    char b1[32], b2[32], b3[32];
    printf("spill tier   %s (%s), state dir %s\n", s.enabled ? "on" : "off",
           spill_backend(s.backend), s.state_dir);
    if (s.enabled)
        printf("store        %llu of %llu slots used (%s each, %s in all), %llu I/O in flight\n",
               (unsigned long long)s.slots_used, (unsigned long long)s.slots_total,
               kvctl_bytes(b1, sizeof(b1), s.slot_bytes),
               kvctl_bytes(b2, sizeof(b2), s.slot_bytes * s.slots_total),
               (unsigned long long)s.inflight);
    printf("pages        %llu spilled (on disk only)\n", (unsigned long long)s.spilled);
    printf("traffic      %llu written (%s), %llu restored (%s), %llu converted to FP8\n",
           (unsigned long long)s.writes, kvctl_bytes(b1, sizeof(b1), s.write_bytes),
           (unsigned long long)s.restores, kvctl_bytes(b3, sizeof(b3), s.read_bytes),
           (unsigned long long)s.demotions);
    printf("errors       %llu victims dropped, %llu checksum failures, %llu read errors\n",
           (unsigned long long)s.dropped, (unsigned long long)s.checksum_failures,
           (unsigned long long)s.read_errors);
    return 0;
}

int kvctl_cmd_config(struct kvctl *k, int argc, char **argv)
{
    size_t len;
    int rc;
    (void)argv;

    if (argc != 0)
        return KVCTL_EUSAGE;
    rc = kvctl_admin(k, KVP_ADMIN_CONFIG, NULL, 0, &len, NULL);
    if (rc)
        return rc;
    if (len >= KVCTL_BUF)
        return bad_reply("config");
    k->buf[len] = '\0';
    if (!k->json) {
        fwrite(k->buf, 1, len, stdout);
        return 0;
    }
    /* INI lines "key = value"; comments and the section header are skipped */
    json_object *o = json_object_new_object();
    char *save = NULL;
    for (char *line = strtok_r((char *)k->buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (line[0] == '#' || line[0] == ';' || line[0] == '[' || !eq)
            continue;
        char *ke = eq, *v = eq + 1;
        while (ke > line && ke[-1] == ' ')
            ke--;
        *ke = '\0';
        while (*v == ' ')
            v++;
        kvctl_jset(o, line, kvctl_jstr(v));
    }
    kvctl_jprint(o);
    return 0;
}
