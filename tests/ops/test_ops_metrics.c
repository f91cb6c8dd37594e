/*
 * test_ops_metrics.c - the Prometheus endpoint of a real kvd: fetched over HTTP, every line
 * parsed as text exposition 0.0.4, values checked against what the test did to the pool.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_format.h"
#include "ops_util.h"
#include "proto.h"

#define MAX_SAMPLES 512

struct sample {
    char name[96];
    char labels[160];
    double value;
};

struct scrape {
    struct sample s[MAX_SAMPLES];
    int n;
    char typed[MAX_SAMPLES][96]; /* families with a # TYPE line */
    int ntyped;
};

/* Parse the exposition; fails the test on a line that is not a comment or a sample. */
static void parse(char *text, struct scrape *sc)
{
    char *save = NULL;
    memset(sc, 0, sizeof(*sc));
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, "# TYPE ", 7) == 0) {
            char type[32];
            cr_assert_lt(sc->ntyped, MAX_SAMPLES);
            cr_assert_eq(sscanf(l + 7, "%95s %31s", sc->typed[sc->ntyped], type), 2, "%s", l);
            cr_assert(!strcmp(type, "gauge") || !strcmp(type, "counter") ||
                          !strcmp(type, "histogram"),
                      "type %s", type);
            sc->ntyped++;
            continue;
        }
        if (strncmp(l, "# HELP ", 7) == 0)
            continue;
        cr_assert_neq(l[0], '#', "unknown comment: %s", l);
        cr_assert_lt(sc->n, MAX_SAMPLES);
        struct sample *s = &sc->s[sc->n++];
        size_t nl = strcspn(l, "{ ");
        cr_assert(nl > 0 && nl < sizeof(s->name), "%s", l);
        memcpy(s->name, l, nl);
        for (size_t i = 0; i < nl; i++)
            cr_assert(s->name[i] == '_' || (s->name[i] >= 'a' && s->name[i] <= 'z') ||
                          (s->name[i] >= '0' && s->name[i] <= '9'),
                      "metric name %s", s->name);
        cr_assert(strncmp(s->name, "kvd_", 4) == 0, "%s", s->name);
        char *rest = l + nl;
        if (*rest == '{') {
            char *end = strchr(rest, '}');
            cr_assert_not_null(end, "%s", l);
            cr_assert_lt((size_t)(end - rest - 1), sizeof(s->labels));
            memcpy(s->labels, rest + 1, (size_t)(end - rest - 1));
            rest = end + 1;
        }
        char *e;
        cr_assert_eq(*rest, ' ', "%s", l);
        s->value = strtod(rest + 1, &e);
        cr_assert(*e == '\0' && e != rest + 1, "value of %s", l);
    }
}

static double val(const struct scrape *sc, const char *name, const char *labels)
{
    for (int i = 0; i < sc->n; i++)
        if (!strcmp(sc->s[i].name, name) && !strcmp(sc->s[i].labels, labels ? labels : ""))
            return sc->s[i].value;
    cr_assert_fail("no sample %s{%s}", name, labels ? labels : "");
    return NAN;
}

static unsigned metrics_port(struct kvc *c)
{
    struct kvp_admin_status st;
    size_t len;
    cr_assert_eq(kvc_admin(c, KVP_ADMIN_STATUS, NULL, 0, &st, sizeof(st), &len, NULL), 0);
    cr_assert_eq(len, sizeof(st));
    cr_assert_gt(st.metrics_port, 0);
    return st.metrics_port;
}

Test(ops_metrics, scrape_matches_the_pool, .timeout = 60)
{
    struct kvt_kvd k;
    struct kvc *c;
    struct ops_chain ch;
    struct scrape *sc = calloc(1, sizeof(*sc));
    char *body;
    int code;

    cr_assert_not_null(sc);
    cr_assert_eq(ops_kvd_start(&k, NULL), 0);
    cr_assert_eq(kvt_open(&k, "metrics", &c), 0);
    cr_assert_eq(ops_fill_chain(c, 2, 1.0f, 1.0f, &ch), 0);
    /* one lookup that hits both pages, one that misses */
    struct kvc_page got[2];
    uint32_t hit, next;
    cr_assert_eq(kvc_lookup(c, ch.hash, 2, 0, 0, got, &hit, &next), 0);
    cr_assert_eq(hit, 2);
    struct kvc_hash miss = {{1, 2, 3}};
    cr_assert_eq(kvc_lookup(c, &miss, 1, 0, 0, got, &hit, &next), 0);
    cr_assert_eq(hit, 0);

    unsigned port = metrics_port(c);
    cr_assert_eq(ops_http(port, "GET", "/metrics", &code, &body), 0);
    cr_assert_eq(code, 200);
    parse(body, sc);
    free(body);

    cr_expect_eq(val(sc, "kvd_pages", "state=\"committed\""), 2);
    cr_expect_eq(val(sc, "kvd_pages", "state=\"pinned\""), 2);
    cr_expect_eq(val(sc, "kvd_lookups_total", NULL), 2);
    cr_expect_eq(val(sc, "kvd_lookup_hits_total", NULL), 1);
    cr_expect_eq(val(sc, "kvd_lookup_misses_total", NULL), 1);
    cr_expect_eq(val(sc, "kvd_lookup_pages_hit_total", NULL), 2);
    cr_expect_eq(val(sc, "kvd_committed_pages_total", NULL), 2);
    cr_expect_eq(val(sc, "kvd_evictions_total", NULL), 0);
    cr_expect_eq(val(sc, "kvd_namespaces", NULL), 1);
    cr_expect_geq(val(sc, "kvd_clients", NULL), 1);
    cr_expect_eq(val(sc, "kvd_arena_bytes", NULL), 64 << 20);
    cr_expect_eq(val(sc, "kvd_checksum_failures_total", NULL), 0);
    cr_expect_eq(val(sc, "kvd_spills_total", NULL), 0);
    cr_expect_eq(val(sc, "kvd_restores_total", NULL), 0);
    struct kvc_layout cl = kvt_layout();
    const struct kv_layout *l = (const struct kv_layout *)(const void *)&cl;
    double seg = (double)kv_seg_bytes(KV_FMT_FP8_E4M3, l) * l->n_layers * l->n_kv_heads;
    cr_expect_eq(val(sc, "kvd_resident_bytes", "format=\"fp8_e4m3\",kind=\"k\""), 2 * seg);
    cr_expect_eq(val(sc, "kvd_resident_bytes", "format=\"fp8_e4m3\",kind=\"v\""), 2 * seg);
    cr_expect_eq(val(sc, "kvd_resident_bytes", "format=\"int8\",kind=\"k\""), 0);

    /* the histogram: cumulative buckets, +Inf equals _count */
    double prev = 0, inf = val(sc, "kvd_request_duration_seconds_bucket", "le=\"+Inf\"");
    int buckets = 0;
    for (int i = 0; i < sc->n; i++) {
        if (strcmp(sc->s[i].name, "kvd_request_duration_seconds_bucket") != 0)
            continue;
        cr_expect_geq(sc->s[i].value, prev, "buckets must not decrease");
        prev = sc->s[i].value;
        buckets++;
    }
    cr_expect_geq(buckets, 5);
    cr_expect_eq(inf, val(sc, "kvd_request_duration_seconds_count", NULL));
    cr_expect_geq(inf, 6, "attach, alloc, commit, 2 lookups and the admin status were timed");
    cr_expect_geq(val(sc, "kvd_request_duration_seconds_sum", NULL), 0);
    /* every sample belongs to a typed family */
    for (int i = 0; i < sc->n; i++) {
        int ok = 0;
        for (int t = 0; t < sc->ntyped && !ok; t++) {
            size_t n = strlen(sc->typed[t]);
            ok = strncmp(sc->s[i].name, sc->typed[t], n) == 0 &&
                 (sc->s[i].name[n] == '\0' || sc->s[i].name[n] == '_');
        }
        cr_expect(ok, "%s has no # TYPE", sc->s[i].name);
    }

    /* other paths and methods */
    cr_assert_eq(ops_http(port, "GET", "/nope", &code, &body), 0);
    cr_expect_eq(code, 404);
    free(body);
    cr_assert_eq(ops_http(port, "POST", "/metrics", &code, &body), 0);
    cr_expect_eq(code, 405);
    free(body);

    /* counters move: release and evict through kvctl's admin op, scrape again */
    cr_assert_eq(kvc_release_pages(c, ch.page, 2), 0);
    struct kvp_admin_key key = {.ns_id = 0};
    memcpy(key.hash, ch.hash[0].b, 16);
    struct kvp_admin_evict ev;
    cr_assert_eq(kvc_admin(c, KVP_ADMIN_EVICT, &key, sizeof(key), &ev, sizeof(ev), NULL, NULL), 0);
    cr_expect_eq(ev.evicted, 2);
    cr_assert_eq(ops_http(port, "GET", "/metrics", &code, &body), 0);
    parse(body, sc);
    free(body);
    cr_expect_eq(val(sc, "kvd_evictions_total", NULL), 2);
    cr_expect_eq(val(sc, "kvd_pages", "state=\"committed\""), 0);
    cr_expect_eq(val(sc, "kvd_resident_bytes", "format=\"fp8_e4m3\",kind=\"k\""), 0);

    kvc_close(c);
    kvt_kvd_cleanup(&k);
    free(sc);
}

Test(ops_metrics, off_when_empty, .timeout = 30)
{
    struct kvt_kvd k;
    struct kvc *c;
    struct kvp_admin_status st;
    const char *extra[] = {"--set", "metrics_listen=", NULL};

    cr_assert_eq(ops_kvd_start(&k, extra), 0);
    cr_assert_eq(kvt_open(&k, "metrics", &c), 0);
    cr_assert_eq(kvc_admin(c, KVP_ADMIN_STATUS, NULL, 0, &st, sizeof(st), NULL, NULL), 0);
    cr_expect_eq(st.metrics_port, 0);
    kvc_close(c);
    kvt_kvd_cleanup(&k);
}
