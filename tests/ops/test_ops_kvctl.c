/*
 * test_ops_kvctl.c - every kvctl command against a real kvd holding a known chain, in text and in
 * --json form (the JSON parsed and its values checked), plus exit codes and the admin right
 * checked with privileges dropped.
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops_util.h"
#include "proto.h"

static struct kvt_kvd kvd;
static struct kvc *cli;
static struct ops_chain chain;
static char leaf_hex[33], root_hex[33];

static void setup(void)
{
    cr_assert_eq(ops_kvd_start(&kvd, NULL), 0, "kvd did not start");
    cr_assert_eq(kvt_open(&kvd, "ops", &cli), 0);
    cr_assert_eq(ops_fill_chain(cli, 3, 0.5f, 0.25f, &chain), 0);
    float mass[16];
    for (int i = 0; i < 16; i++)
        mass[i] = 0.125f * (float)i;
    struct kvc_score sc = {.page_id = chain.page[0].id, .ntok = 16, .mass = mass};
    cr_assert_eq(kvc_scores(cli, &sc, 1), 0);
    ops_hex(&chain.hash[2], leaf_hex);
    ops_hex(&chain.hash[0], root_hex);
}

static void teardown(void)
{
    kvc_close(cli);
    kvt_kvd_cleanup(&kvd);
}

TestSuite(ops_kvctl, .init = setup, .fini = teardown, .timeout = 60);

/* Run kvctl --json CMD..., expect exit 0 and parse stdout. */
static json_object *kvctl_json(const char *a, const char *b, const char *c)
{
    struct ops_out o;
    cr_assert_eq(ops_kvctl(&kvd, &o, "--json", a, b, c, NULL), 0);
    cr_assert_eq(o.status, 0, "kvctl --json %s exited %d: %s", a, o.status, o.text);
    json_object *j = json_tokener_parse(o.text);
    cr_assert_not_null(j, "kvctl --json %s printed no JSON: %s", a, o.text);
    ops_out_free(&o);
    return j;
}

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    cr_assert(json_object_object_get_ex(o, key, &v), "no key '%s' in %s", key,
              json_object_to_json_string(o));
    return v;
}

static int64_t geti(json_object *o, const char *key)
{
    return json_object_get_int64(get(o, key));
}

static json_object *kvctl_json_at(struct kvt_kvd *k, const char *cmd)
{
    struct ops_out o;
    cr_assert_eq(ops_kvctl(k, &o, "--json", cmd, NULL), 0);
    cr_assert_eq(o.status, 0, "kvctl --json %s exited %d: %s", cmd, o.status, o.text);
    json_object *j = json_tokener_parse(o.text);
    cr_assert_not_null(j, "%s", o.text);
    ops_out_free(&o);
    return j;
}

/* Run kvctl CMD... in text form; returns the output (caller frees), asserts the exit status. */
static char *kvctl_text(int want, const char *a, const char *b, const char *c)
{
    struct ops_out o;
    cr_assert_eq(ops_kvctl(&kvd, &o, a, b, c, NULL), 0);
    cr_assert_eq(o.status, want, "kvctl %s exited %d, want %d: %s", a, o.status, want, o.text);
    return o.text;
}

Test(ops_kvctl, status)
{
    json_object *j = kvctl_json("status", NULL, NULL);
    cr_expect_eq(geti(j, "pid"), kvd.pid);
    cr_expect_eq(geti(j, "namespaces"), 1, "kvctl's own namespace must not count");
    cr_expect_geq(geti(j, "clients"), 2);
    cr_expect_eq(geti(get(j, "pages"), "committed"), 3);
    cr_expect_eq(geti(get(j, "pages"), "pinned"), 3);
    cr_expect_gt(geti(j, "metrics_port"), 0);
    cr_expect_str_eq(json_object_get_string(get(j, "policy")), "lru");
    cr_expect_str_eq(json_object_get_string(get(j, "run_dir")), kvd.run_dir);
    json_object_put(j);
    char *t = kvctl_text(0, "status", NULL, NULL);
    cr_expect(strstr(t, "3 committed, 3 pinned") != NULL, "%s", t);
    cr_expect(strstr(t, kvd.run_dir) != NULL, "%s", t);
    free(t);
}

Test(ops_kvctl, stats)
{
    json_object *j = kvctl_json("stats", NULL, NULL);
    cr_expect_eq(geti(j, "commits"), 3);
    cr_expect_eq(geti(j, "allocs"), 3);
    cr_expect_eq(geti(j, "score_reports"), 1);
    json_object *lat = get(j, "latency"), *b = get(lat, "buckets");
    int64_t sum = 0;
    for (size_t i = 0; i < json_object_array_length(b); i++)
        sum += geti(json_object_array_get_idx(b, i), "count");
    cr_expect_eq(sum, geti(lat, "count"));
    cr_expect_geq(sum, 5, "attach, alloc, commit, scores and stats were timed");
    json_object_put(j);
    char *t = kvctl_text(0, "stats", NULL, NULL);
    cr_expect(strstr(t, "commits") && strstr(t, "+Inf"), "%s", t);
    free(t);
}

Test(ops_kvctl, clients)
{
    json_object *j = kvctl_json("clients", NULL, NULL);
    json_object *me = NULL;
    for (size_t i = 0; i < json_object_array_length(j); i++)
        if (geti(json_object_array_get_idx(j, i), "pid") == getpid())
            me = json_object_array_get_idx(j, i);
    cr_assert_not_null(me, "our pid is not listed: %s", json_object_to_json_string(j));
    cr_expect_str_eq(json_object_get_string(get(me, "namespace")), "ops");
    cr_expect_eq(geti(me, "leases"), 3);
    cr_expect_eq(geti(me, "pages"), 3);
    cr_expect_eq(geti(me, "uid"), (int64_t)getuid());
    json_object_put(j);
    char pid[32];
    snprintf(pid, sizeof(pid), " %d ", (int)getpid());
    char *t = kvctl_text(0, "clients", NULL, NULL);
    cr_expect(strstr(t, pid) && strstr(t, "ops") && strstr(t, "LEASES"), "%s", t);
    free(t);
}

Test(ops_kvctl, ls)
{
    json_object *j = kvctl_json("ls", NULL, NULL);
    cr_assert_eq(json_object_array_length(j), 1, "one chain: %s", json_object_to_json_string(j));
    json_object *c = json_object_array_get_idx(j, 0);
    cr_expect_str_eq(json_object_get_string(get(c, "hash")), leaf_hex);
    cr_expect_str_eq(json_object_get_string(get(c, "namespace")), "ops");
    cr_expect_str_eq(json_object_get_string(get(c, "tier")), "pool");
    cr_expect_str_eq(json_object_get_string(get(c, "k_format")), "fp8_e4m3");
    cr_expect_eq(geti(c, "pages"), 3);
    cr_expect_eq(geti(c, "tokens"), 48);
    cr_expect_eq(geti(c, "refs"), 3);
    /* 0.125 * (0 + 1 + ... + 15) */
    cr_expect_float_eq(json_object_get_double(get(c, "score")), 15.0, 1e-4);
    json_object_put(j);
    char *t = kvctl_text(0, "ls", NULL, NULL);
    cr_expect(strstr(t, leaf_hex) && strstr(t, "fp8_e4m3"), "%s", t);
    free(t);
}

Test(ops_kvctl, show)
{
    json_object *j = kvctl_json("show", leaf_hex, NULL);
    json_object *pages = get(j, "pages");
    cr_assert_eq(json_object_array_length(pages), 3);
    cr_expect_eq(geti(j, "tokens"), 48);
    json_object *p0 = json_object_array_get_idx(pages, 0);
    cr_expect_str_eq(json_object_get_string(get(p0, "hash")), root_hex, "root first");
    cr_expect_eq(geti(p0, "page_id"), chain.page[0].id);
    json_object *sc = get(p0, "scores");
    cr_assert_eq(json_object_array_length(sc), 16);
    cr_expect_float_eq(json_object_get_double(json_object_array_get_idx(sc, 3)), 0.375, 1e-6);
    cr_expect_float_eq(json_object_get_double(get(get(p0, "k_scale"), "min")), 0.5, 1e-6);
    cr_expect_float_eq(json_object_get_double(get(get(p0, "k_scale"), "max")), 0.5, 1e-6);
    cr_expect_float_eq(json_object_get_double(get(get(p0, "v_scale"), "mean")), 0.25, 1e-6);
    cr_expect_eq(json_object_array_length(get(json_object_array_get_idx(pages, 1), "scores")), 0);
    json_object_put(j);
    char *t = kvctl_text(0, "show", leaf_hex, NULL);
    cr_expect(strstr(t, "per-token attention mass") && strstr(t, "0.5/0.5/0.5"), "%s", t);
    free(t);
    t = kvctl_text(5, "show", "00000000000000000000000000000000", NULL);
    free(t);
    t = kvctl_text(2, "show", "nothex", NULL);
    free(t);
}

Test(ops_kvctl, pages)
{
    json_object *j = kvctl_json("pages", NULL, NULL);
    json_object *ns = get(j, "namespaces");
    cr_assert_eq(json_object_array_length(ns), 1, "%s", json_object_to_json_string(j));
    json_object *n = json_object_array_get_idx(ns, 0);
    cr_expect_str_eq(json_object_get_string(get(n, "name")), "ops");
    cr_expect_eq(geti(n, "committed"), 3);
    cr_expect_eq(geti(n, "pinned"), 3);
    cr_expect_eq(geti(n, "committed") + geti(n, "free") + geti(n, "writing"), geti(n, "pages"));
    cr_expect_eq(geti(get(j, "pool"), "committed"), 3);
    json_object_put(j);
    char *t = kvctl_text(0, "pages", NULL, NULL);
    cr_expect(strstr(t, "COMMITTED") && strstr(t, "2x2x64x16"), "%s", t);
    free(t);
}

Test(ops_kvctl, policy)
{
    json_object *j = kvctl_json("policy", "get", NULL);
    cr_expect_str_eq(json_object_get_string(get(j, "policy")), "lru");
    cr_expect_geq(json_object_array_length(get(j, "known")), 1);
    json_object_put(j);
    j = kvctl_json("policy", "set", "h2o");
    cr_expect_str_eq(json_object_get_string(get(j, "policy")), "h2o");
    cr_expect_eq(json_object_array_length(get(j, "known")), 2);
    json_object_put(j);
    j = kvctl_json("policy", "set", "lru");
    cr_expect_str_eq(json_object_get_string(get(j, "policy")), "lru");
    json_object_put(j);
    free(kvctl_text(1, "policy", "set", "no-such-policy"));
    free(kvctl_text(2, "policy", "frob", NULL));
    char *t = kvctl_text(0, "policy", "get", NULL);
    cr_expect(strstr(t, "policy lru") != NULL, "%s", t);
    free(t);
}

Test(ops_kvctl, spill_and_config)
{
    json_object *j = kvctl_json("spill", NULL, NULL);
    cr_expect_eq(geti(j, "spilled_pages"), 0);
    cr_expect_eq(geti(j, "checksum_failures"), 0);
    cr_expect_str_eq(json_object_get_string(get(j, "state_dir")), kvd.state_dir);
    json_object_put(j);
    j = kvctl_json("config", NULL, NULL);
    cr_expect_str_eq(json_object_get_string(get(j, "arena_size")), "67108864");
    cr_expect_str_eq(json_object_get_string(get(j, "run_dir")), kvd.run_dir);
    json_object_put(j);
    char *t = kvctl_text(0, "config", NULL, NULL);
    cr_expect(strstr(t, "[kvd]") && strstr(t, "heartbeat_ms = 60000"), "%s", t);
    free(t);
    t = kvctl_text(0, "spill", NULL, NULL);
    cr_expect(strstr(t, "checksum failures") != NULL, "%s", t);
    free(t);
}

Test(ops_kvctl, top)
{
    struct ops_out o;
    cr_assert_eq(
        ops_kvctl(&kvd, &o, "--json", "top", "--iterations", "2", "--interval", "0.1", NULL), 0);
    cr_assert_eq(o.status, 0, "%s", o.text);
    int lines = 0;
    char *save = NULL;
    for (char *l = strtok_r(o.text, "\n", &save); l; l = strtok_r(NULL, "\n", &save), lines++) {
        json_object *j = json_tokener_parse(l);
        cr_assert_not_null(j, "not JSON: %s", l);
        cr_expect_eq(geti(get(j, "pages"), "committed"), 3);
        json_object_put(j);
    }
    cr_expect_eq(lines, 2);
    ops_out_free(&o);
    char *t = kvctl_text(0, "top", "-n", "1");
    cr_expect(strstr(t, "lookups/s") && strstr(t, "NAMESPACE"), "%s", t);
    free(t);
}

Test(ops_kvctl, evict)
{
    char mid[33];
    ops_hex(&chain.hash[1], mid);
    /* pinned: nothing may go */
    struct ops_out o;
    cr_assert_eq(ops_kvctl(&kvd, &o, "--json", "evict", mid, NULL), 0);
    cr_expect_eq(o.status, 1, "%s", o.text);
    json_object *j = json_tokener_parse(o.text);
    cr_assert_not_null(j, "%s", o.text);
    cr_expect_eq(geti(j, "evicted"), 0);
    cr_expect_eq(geti(j, "pinned_left"), 2);
    json_object_put(j);
    ops_out_free(&o);
    /* released: the middle and the leaf go, the root stays */
    cr_assert_eq(kvc_release_pages(cli, chain.page, chain.n), 0);
    j = kvctl_json("evict", mid, NULL);
    cr_expect_eq(geti(j, "evicted"), 2);
    cr_expect_eq(geti(j, "pinned_left"), 0);
    cr_expect_eq(geti(j, "spill_dropped"), 0, "nothing of it was on disk");
    json_object_put(j);
    j = kvctl_json("ls", NULL, NULL);
    cr_assert_eq(json_object_array_length(j), 1);
    cr_expect_str_eq(json_object_get_string(get(json_object_array_get_idx(j, 0), "hash")),
                     root_hex);
    cr_expect_eq(geti(json_object_array_get_idx(j, 0), "pages"), 1);
    json_object_put(j);
    free(kvctl_text(5, "evict", mid, NULL));
    char *t = kvctl_text(0, "evict", root_hex, NULL);
    cr_expect(strstr(t, "evicted 1 pages") != NULL, "%s", t);
    free(t);
    struct kvc_stats st;
    cr_assert_eq(kvc_stats(cli, &st), 0);
    cr_expect_eq(st.pages_committed, 0);
    cr_expect_eq(st.evictions, 3);
}

Test(ops_kvctl, usage_and_unreachable)
{
    free(kvctl_text(2, "no-such-command", NULL, NULL));
    free(kvctl_text(2, "status", "extra", NULL));
    struct ops_out o;
    const char *argv[] = {
        getenv("OPS_KVCTL"), "-r", "/nonexistent/kvd", "-t", "500", "status", NULL};
    cr_assert_eq(ops_run(argv, NULL, (uid_t)-1, 20000, &o), 0);
    cr_expect_eq(o.status, 3, "kvd not running: exit 3, got %d", o.status);
    ops_out_free(&o);
}

/* A user outside kvd's admin group may read but not change anything. Runs kvctl as nobody, which
 * the client group lets in; as non-root the test cannot drop privileges and skips. */
Test(ops_kvctl, admin_right_needs_admin_group)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to run kvctl as another uid");
    const uid_t nobody = 65534;
    struct kvt_kvd k2;
    const char *extra[] = {"--set", "client_group=65534", NULL};
    cr_assert_eq(ops_kvd_start(&k2, extra), 0);
    chmod(k2.base, 0711);
    struct ops_out o;
    cr_assert_eq(ops_kvctl_as(&k2, nobody, &o, "--json", "status", NULL), 0);
    cr_expect_eq(o.status, 0, "read-only command as nobody: %d %s", o.status, o.text);
    json_object *j = json_tokener_parse(o.text);
    cr_expect(j && !json_object_get_boolean(get(j, "admin")), "%s", o.text);
    json_object_put(j);
    ops_out_free(&o);
    cr_assert_eq(ops_kvctl_as(&k2, nobody, &o, "policy", "set", "lru", NULL), 0);
    cr_expect_eq(o.status, 4, "policy set as nobody: exit 4, got %d", o.status);
    ops_out_free(&o);
    cr_assert_eq(ops_kvctl_as(&k2, nobody, &o, "evict", root_hex, NULL), 0);
    cr_expect_eq(o.status, 4, "evict as nobody: exit 4, got %d", o.status);
    ops_out_free(&o);
    kvt_kvd_cleanup(&k2);
}

/* Pool pressure spills the chain; kvctl shows it in the spill tier and evict purges it there. */
Test(ops_kvctl, spill_tier_listing_and_purge)
{
    struct kvt_kvd k2;
    struct kvc *c2;
    struct ops_chain ch;
    const char *extra[] = {"--arena-size", "8M", NULL};
    char leaf[33];

    cr_assert_eq(ops_kvd_start(&k2, extra), 0);
    cr_assert_eq(kvt_open(&k2, "ops", &c2), 0);
    cr_assert_eq(ops_fill_chain(c2, 3, 0.5f, 0.25f, &ch), 0);
    cr_assert_eq(kvc_release_pages(c2, ch.page, 3), 0);
    ops_hex(&ch.hash[2], leaf);
    struct ops_out o;
    cr_assert_eq(ops_kvctl(&k2, &o, "--json", "spill", NULL), 0);
    json_object *j = json_tokener_parse(o.text);
    cr_assert_not_null(j, "%s", o.text);
    int enabled = json_object_get_boolean(get(j, "enabled"));
    cr_expect_gt(geti(j, "slots_total"), enabled ? 0 : -1);
    json_object_put(j);
    ops_out_free(&o);
    if (!enabled) {
        kvc_close(c2);
        kvt_kvd_cleanup(&k2);
        cr_skip_test("no spill store here");
    }
    /* fill the pool with other pages (released at once) until the chain is evicted */
    struct kvc_hash h[64];
    struct kvc_page pg[64];
    struct kvc_commit cm[64];
    struct kvc_stats st = {0};
    for (uint32_t round = 0; round < 200 && st.evictions < 3; round++) {
        for (int i = 0; i < 64; i++) {
            memset(&h[i], 0, sizeof(h[i]));
            h[i].b[0] = 0xee;
            memcpy(h[i].b + 1, &round, 4);
            h[i].b[5] = (uint8_t)i;
        }
        cr_assert_eq(kvc_alloc(c2, 64, h, pg), 0);
        for (int i = 0; i < 64; i++)
            cm[i] = (struct kvc_commit){.page_id = pg[i].id, .ntok = 16, .hash = h[i]};
        cr_assert_eq(kvc_commit(c2, cm, 64, pg), 0);
        cr_assert_eq(kvc_release_pages(c2, pg, 64), 0);
        cr_assert_eq(kvc_stats(c2, &st), 0);
    }
    cr_assert_geq(st.evictions, 3, "the pool never filled");
    long end = kvt_now_ms() + 10000, spilled = 0;
    while (kvt_now_ms() < end) {
        cr_assert_eq(ops_kvctl(&k2, &o, "--json", "spill", NULL), 0);
        j = json_tokener_parse(o.text);
        cr_assert_not_null(j, "%s", o.text);
        spilled = geti(j, "spilled_pages");
        json_object_put(j);
        ops_out_free(&o);
        if (spilled >= 3)
            break;
        usleep(50000);
    }
    cr_assert_geq(spilled, 3, "the chain's pages were not spilled");
    j = kvctl_json_at(&k2, "ls");
    int found = 0;
    for (size_t i = 0; i < json_object_array_length(j); i++) {
        json_object *c = json_object_array_get_idx(j, i);
        found |= !strcmp(json_object_get_string(get(c, "hash")), leaf) &&
                 !strcmp(json_object_get_string(get(c, "tier")), "spill");
    }
    cr_expect(found, "the spilled leaf is not listed with tier spill");
    json_object_put(j);
    cr_assert_eq(ops_kvctl(&k2, &o, "--json", "evict", leaf, NULL), 0);
    cr_expect_eq(o.status, 0, "%s", o.text);
    j = json_tokener_parse(o.text);
    cr_assert_not_null(j, "%s", o.text);
    cr_expect_eq(geti(j, "spill_dropped"), 1, "the leaf's record goes");
    cr_expect_eq(geti(j, "evicted"), 0);
    json_object_put(j);
    ops_out_free(&o);
    cr_assert_eq(ops_kvctl(&k2, &o, "show", leaf, NULL), 0);
    cr_expect_eq(o.status, 5, "purged: no such hash any more");
    ops_out_free(&o);
    kvc_close(c2);
    kvt_kvd_cleanup(&k2);
}

/* top on a terminal (a pty from script(1)): it clears and redraws until q arrives on stdin. */
Test(ops_kvctl, top_on_a_terminal_quits_on_q)
{
    if (access("/usr/bin/script", X_OK) != 0)
        cr_skip_test("script(1) is not installed");
    char full[600];
    snprintf(full, sizeof(full),
             "{ sleep 1; printf q; } | /usr/bin/script -qec \"'%s' -r '%s' top -i 0.2\" /dev/null",
             getenv("OPS_KVCTL"), kvd.run_dir);
    const char *argv[] = {"/bin/sh", "-c", full, NULL};
    struct ops_out o;
    cr_assert_eq(ops_run(argv, NULL, (uid_t)-1, 20000, &o), 0, "top did not quit on q");
    cr_expect_eq(o.status, 0, "%s", o.text);
    cr_expect(strstr(o.text, "\033[H\033[2J") != NULL, "no screen clear: %s", o.text);
    cr_expect(strstr(o.text, "(q quits)") != NULL, "%s", o.text);
    cr_expect(strstr(o.text, "3 committed") != NULL, "%s", o.text);
    ops_out_free(&o);
}
