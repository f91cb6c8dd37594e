/*
 * kvctl.c - kvctl: look inside a running kvd and steer it. main(), the connection, the command
 * table and the commands about the daemon as a whole (status, stats, top); the listings live in
 * kvctl_cmd.c.
 *
 * kvctl is an ordinary libkvclient client: it attaches to the reserved namespace KVP_ADMIN_NS
 * (which holds no pages) and speaks the ADMIN op through kvc_admin(). kvd decides what it may do:
 * read-only commands work for every client kvd accepts, changing ones (evict, policy set) need
 * root, kvd's uid or kvd's admin_group.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "kvctl.h"

#ifndef KVD_VERSION
#define KVD_VERSION "0.1.0"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvctl [options] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  status             daemon, arena and pool at a glance\n"
            "  stats              every counter and the request latency histogram\n"
            "  clients            connected clients: pid, uid, namespace, leases, pages\n"
            "  ls                 chains (prefixes nothing extends): hash, tokens, pages, tier,\n"
            "                     format, refs, score\n"
            "  show HASH          one prefix: its pages, scale summary, per-token scores\n"
            "  pages              the pool by state, per namespace\n"
            "  evict HASH         evict a prefix and everything that extends it (admin)\n"
            "  policy get         current eviction policy and the known ones\n"
            "  policy set NAME    switch the eviction policy (admin)\n"
            "  spill              spill tier: usage and errors\n"
            "  config             kvd's effective configuration\n"
            "  top                live view, refreshed every --interval seconds; q quits\n"
            "\n"
            "options:\n"
            "  -r, --run-dir DIR  kvd's runtime directory (default $KVD_RUN_DIR, else /run/kvd,\n"
            "                     else $XDG_RUNTIME_DIR/kvd)\n"
            "  -j, --json         machine-readable output (top: one JSON object per refresh)\n"
            "  -t, --timeout MS   per request (default 5000)\n"
            "      --ns NAME      show/evict: the namespace of HASH (default: search all)\n"
            "  -n, --iterations N top: stop after N refreshes\n"
            "  -i, --interval S   top: seconds between refreshes (default 1)\n"
            "  -V, --version\n"
            "  -h, --help\n"
            "\n"
            "exit status: 0 ok, 1 kvd answered with an error, 2 usage, 3 kvd not reachable,\n"
            "4 permission denied, 5 no such hash.\n");
}

int kvctl_fail(const char *what, int err)
{
    fprintf(stderr, "kvctl: %s: %s\n", what, kvc_strerror(err));
    switch (-err) {
    case EPERM:
    case EACCES:
        return KVCTL_EPERM;
    case ENOENT:
        return KVCTL_ENOENT;
    case ETIMEDOUT:
    case ESHUTDOWN:
    case ENOTCONN:
    case ECONNREFUSED:
    case ECONNRESET:
        return KVCTL_ECONNECT;
    default:
        return KVCTL_EFAIL;
    }
}

int kvctl_admin(struct kvctl *k, uint32_t sub, const void *arg, size_t arg_len, size_t *len,
                uint32_t *count)
{
    int rc = kvc_admin(k->c, sub, arg, arg_len, k->buf, KVCTL_BUF, len, count);
    if (rc == 0)
        return 0;
    return kvctl_fail("request failed", rc);
}

static const char *default_run_dir(char *buf, size_t cap)
{
    const char *e = getenv("KVD_RUN_DIR"), *x = getenv("XDG_RUNTIME_DIR");
    struct stat st;

    if (e && *e)
        return e;
    if (geteuid() != 0 && x && *x) {
        snprintf(buf, cap, "%s/kvd/kvd.sock", x);
        if (stat(buf, &st) == 0 && stat("/run/kvd/kvd.sock", &st) != 0) {
            snprintf(buf, cap, "%s/kvd", x);
            return buf;
        }
    }
    return "/run/kvd";
}

static int kvctl_connect(struct kvctl *k)
{
    struct kvc_opts o = KVC_OPTS_INIT;
    char what[300];
    int rc;

    o.run_dir = k->run_dir;
    o.ns = KVP_ADMIN_NS;
    o.layout = (struct kvc_layout){.n_layers = 1,
                                   .n_kv_heads = 1,
                                   .head_dim = 32,
                                   .page_tokens = 16,
                                   .k_fmt = KVC_FMT_FP8_E4M3,
                                   .v_fmt = KVC_FMT_FP8_E4M3};
    o.timeout_ms = k->timeout_ms;
    rc = kvc_open(&o, &k->c);
    if (rc == 0)
        return 0;
    snprintf(what, sizeof(what), "cannot attach to kvd at %s", k->run_dir);
    rc = kvctl_fail(what, rc);
    return rc == KVCTL_EPERM ? KVCTL_EPERM : KVCTL_ECONNECT;
}

/* ---- status ---------------------------------------------------------------------------------- */

static double ratio(uint64_t a, uint64_t b)
{
    return b ? (double)a / (double)b : 0.0;
}

static json_object *status_json(const struct kvp_admin_status *s, const struct kvc_stats *st)
{
    json_object *o = json_object_new_object(), *p = json_object_new_object();
    kvctl_jset(o, "version", kvctl_jstr(s->version));
    kvctl_jset(o, "pid", kvctl_ju(s->pid));
    kvctl_jset(o, "uptime_ms", kvctl_ju(s->uptime_ms));
    kvctl_jset(o, "backend", kvctl_jstr(s->backend));
    kvctl_jset(o, "policy", kvctl_jstr(s->policy));
    kvctl_jset(o, "run_dir", kvctl_jstr(s->run_dir));
    kvctl_jset(o, "state_dir", kvctl_jstr(s->state_dir));
    kvctl_jset(o, "arena_bytes", kvctl_ju(s->arena_bytes));
    kvctl_jset(o, "chunk_bytes", kvctl_ju(s->chunk_bytes));
    kvctl_jset(o, "chunks", kvctl_ju(s->nchunks));
    kvctl_jset(o, "chunks_free", kvctl_ju(s->nchunks_free));
    kvctl_jset(o, "clients", kvctl_ju(s->clients));
    kvctl_jset(o, "namespaces", kvctl_ju(s->namespaces));
    kvctl_jset(o, "metrics_port", kvctl_ju(s->metrics_port));
    kvctl_jset(o, "watchdog_ms", kvctl_ju(s->watchdog_ms));
    kvctl_jset(o, "admin", json_object_new_boolean(s->admin != 0));
    kvctl_jset(p, "total", kvctl_ju(st->pages_total));
    kvctl_jset(p, "free", kvctl_ju(st->pages_free));
    kvctl_jset(p, "writing", kvctl_ju(st->pages_writing));
    kvctl_jset(p, "committed", kvctl_ju(st->pages_committed));
    kvctl_jset(p, "pinned", kvctl_ju(st->pages_pinned));
    kvctl_jset(o, "pages", p);
    kvctl_jset(o, "lookups", kvctl_ju(st->lookups));
    kvctl_jset(o, "hit_ratio", json_object_new_double(ratio(st->lookup_hits, st->lookups)));
    kvctl_jset(o, "evictions", kvctl_ju(st->evictions));
    return o;
}

static void status_text(const struct kvp_admin_status *s, const struct kvc_stats *st)
{
    char b1[32], b2[32], b3[32];
    printf("kvd %s, pid %u, up %s\n", s->version, s->pid, kvctl_dur(b1, sizeof(b1), s->uptime_ms));
    printf("run dir      %s\n", s->run_dir);
    printf("state dir    %s\n", s->state_dir);
    printf("arena        %s %s in %u chunks of %s (%u free)\n",
           kvctl_bytes(b2, sizeof(b2), s->arena_bytes), s->backend, s->nchunks,
           kvctl_bytes(b3, sizeof(b3), s->chunk_bytes), s->nchunks_free);
    printf("policy       %s\n", s->policy);
    printf("clients      %u in %u namespaces%s\n", s->clients, s->namespaces,
           s->admin ? " (you are an admin)" : "");
    printf("pages        %llu total: %llu free, %llu writing, %llu committed, %llu pinned\n",
           (unsigned long long)st->pages_total, (unsigned long long)st->pages_free,
           (unsigned long long)st->pages_writing, (unsigned long long)st->pages_committed,
           (unsigned long long)st->pages_pinned);
    printf("lookups      %llu, hit ratio %.1f%%, %llu evictions\n", (unsigned long long)st->lookups,
           100.0 * ratio(st->lookup_hits, st->lookups), (unsigned long long)st->evictions);
    if (s->metrics_port)
        printf("metrics      port %u, /metrics\n", s->metrics_port);
    else
        printf("metrics      off\n");
    if (s->watchdog_ms)
        printf("watchdog     %llu ms\n", (unsigned long long)s->watchdog_ms);
}

static int fetch_status(struct kvctl *k, struct kvp_admin_status *s, struct kvc_stats *st)
{
    size_t len;
    int rc = kvctl_admin(k, KVP_ADMIN_STATUS, NULL, 0, &len, NULL);
    if (rc)
        return rc;
    if (len != sizeof(*s)) {
        fprintf(stderr, "kvctl: unexpected status reply (%zu bytes)\n", len);
        return KVCTL_EFAIL;
    }
    memcpy(s, k->buf, sizeof(*s));
    rc = kvc_stats(k->c, st);
    return rc ? kvctl_fail("stats", rc) : 0;
}

static int cmd_status(struct kvctl *k, int argc, char **argv)
{
    struct kvp_admin_status s;
    struct kvc_stats st;
    int rc;
    (void)argv;
    if (argc != 0)
        return KVCTL_EUSAGE;
    rc = fetch_status(k, &s, &st);
    if (rc)
        return rc;
    if (k->json)
        kvctl_jprint(status_json(&s, &st));
    else
        status_text(&s, &st);
    return 0;
}

/* ---- stats ----------------------------------------------------------------------------------- */

static int cmd_stats(struct kvctl *k, int argc, char **argv)
{
    struct kvc_stats st;
    struct kvp_stats ws;
    struct kvp_admin_latency lat;
    size_t len;
    int rc;
    (void)argv;
    if (argc != 0)
        return KVCTL_EUSAGE;
    rc = kvc_stats(k->c, &st);
    if (rc)
        return kvctl_fail("stats", rc);
    memcpy(&ws, &st, sizeof(ws)); /* libkvclient mirrors kvp_stats field for field */
    rc = kvctl_admin(k, KVP_ADMIN_LATENCY, NULL, 0, &len, NULL);
    if (rc)
        return rc;
    if (len != sizeof(lat) || ((struct kvp_admin_latency *)(void *)k->buf)->nbuckets > 16) {
        fprintf(stderr, "kvctl: unexpected latency reply\n");
        return KVCTL_EFAIL;
    }
    memcpy(&lat, k->buf, sizeof(lat));
    uint64_t total = 0;
    for (unsigned i = 0; i < lat.nbuckets; i++)
        total += lat.count[i];
    if (k->json) {
        json_object *o = json_object_new_object(), *l = json_object_new_object();
        json_object *b = json_object_new_array();
#define KVCTL_JSTAT(name) kvctl_jset(o, #name, kvctl_ju(ws.name));
        KVP_STATS_MAP(KVCTL_JSTAT)
#undef KVCTL_JSTAT
        for (unsigned i = 0; i < lat.nbuckets; i++) {
            json_object *e = json_object_new_object();
            kvctl_jset(e, "le_us", i + 1 < lat.nbuckets ? kvctl_ju(lat.bound_us[i]) : NULL);
            kvctl_jset(e, "count", kvctl_ju(lat.count[i]));
            json_object_array_add(b, e);
        }
        kvctl_jset(l, "count", kvctl_ju(total));
        kvctl_jset(l, "sum_s", json_object_new_double(lat.sum_s));
        kvctl_jset(l, "buckets", b);
        kvctl_jset(o, "latency", l);
        kvctl_jprint(o);
        return 0;
    }
    static const char *const hs[] = {"COUNTER", ">VALUE"};
    struct kvctl_table *t = kvctl_table_new(2, hs);
    char v[32];
#define KVCTL_TSTAT(name)                                                                          \
    snprintf(v, sizeof(v), "%llu", (unsigned long long)ws.name);                                   \
    kvctl_table_row(t, (const char *const[]){#name, v});
    KVP_STATS_MAP(KVCTL_TSTAT)
#undef KVCTL_TSTAT
    kvctl_table_print(t);
    kvctl_table_free(t);
    printf("\nrequest latency: %llu requests, mean %.1f us\n", (unsigned long long)total,
           total ? lat.sum_s * 1e6 / (double)total : 0.0);
    static const char *const lh[] = {">LE_US", ">COUNT"};
    t = kvctl_table_new(2, lh);
    for (unsigned i = 0; i < lat.nbuckets; i++) {
        char le[32], n[32];
        if (i + 1 < lat.nbuckets)
            snprintf(le, sizeof(le), "%llu", (unsigned long long)lat.bound_us[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        snprintf(n, sizeof(n), "%llu", (unsigned long long)lat.count[i]);
        kvctl_table_row(t, (const char *const[]){le, n});
    }
    kvctl_table_print(t);
    kvctl_table_free(t);
    return 0;
}

/* ---- top ------------------------------------------------------------------------------------- */

static volatile sig_atomic_t top_stop;

static void on_sigint(int sig)
{
    (void)sig;
    top_stop = 1;
}

static int cmd_top(struct kvctl *k, int argc, char **argv)
{
    struct termios saved, raw;
    int tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO) && !k->json;
    struct kvc_stats prev = {0};
    struct timespec t0;
    int rc = 0;
    (void)argv;

    if (argc != 0)
        return KVCTL_EUSAGE;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        tty = 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long it = 0; !top_stop && (k->iterations <= 0 || it < k->iterations); it++) {
        struct kvp_admin_status s;
        struct kvc_stats st;
        struct timespec t1;
        rc = fetch_status(k, &s, &st);
        if (rc)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        double lps = it && dt > 0 ? (double)(st.lookups - prev.lookups) / dt : 0;
        double cps = it && dt > 0 ? (double)(st.commits - prev.commits) / dt : 0;
        t0 = t1;
        if (k->json) {
            json_object *o = status_json(&s, &st);
            kvctl_jset(o, "lookups_per_s", json_object_new_double(lps));
            kvctl_jset(o, "commits_per_s", json_object_new_double(cps));
            printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
            json_object_put(o);
        } else {
            if (tty)
                printf("\033[H\033[2J");
            status_text(&s, &st);
            printf("rate         %.1f lookups/s, %.1f commits/s\n\n", lps, cps);
            rc = kvctl_clients_table(k);
            if (rc)
                break;
            if (tty)
                printf("\n(q quits)\n");
        }
        fflush(stdout);
        prev = st;
        if (k->iterations > 0 && it + 1 >= k->iterations)
            break;
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        int wait_ms = (int)(k->interval_s * 1000);
        if (tty && poll(&pfd, 1, wait_ms) > 0) {
            char ch;
            if (read(STDIN_FILENO, &ch, 1) == 1 && (ch == 'q' || ch == 'Q'))
                break;
        } else if (!tty) {
            struct timespec ts = {.tv_sec = wait_ms / 1000, .tv_nsec = (wait_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (tty)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------------ */

struct command {
    const char *name;
    int (*fn)(struct kvctl *k, int argc, char **argv);
};

static const struct command commands[] = {
    {"status", cmd_status},
    {"stats", cmd_stats},
    {"clients", kvctl_cmd_clients},
    {"ls", kvctl_cmd_ls},
    {"show", kvctl_cmd_show},
    {"pages", kvctl_cmd_pages},
    {"evict", kvctl_cmd_evict},
    {"policy", kvctl_cmd_policy},
    {"spill", kvctl_cmd_spill},
    {"config", kvctl_cmd_config},
    {"top", cmd_top},
};

static const char *opt_value(int argc, char **argv, int *i)
{
    char *eq = strchr(argv[*i], '=');
    if (eq && argv[*i][1] == '-')
        return eq + 1;
    if (*i + 1 >= argc) {
        fprintf(stderr, "kvctl: %s needs a value\n", argv[*i]);
        exit(KVCTL_EUSAGE);
    }
    return argv[++*i];
}

static int is_opt(const char *a, const char *s, const char *l)
{
    size_t n = strlen(l);
    return (s && strcmp(a, s) == 0) || strcmp(a, l) == 0 || (strncmp(a, l, n) == 0 && a[n] == '=');
}

int main(int argc, char **argv)
{
    static char rdbuf[512];
    struct kvctl k = {.timeout_ms = 5000, .interval_s = 1.0};
    char **pos = calloc((size_t)argc + 1, sizeof(char *));
    int npos = 0, rc;

    if (!pos)
        return KVCTL_EFAIL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (is_opt(a, "-j", "--json")) {
            k.json = 1;
        } else if (is_opt(a, "-r", "--run-dir")) {
            k.run_dir = opt_value(argc, argv, &i);
        } else if (is_opt(a, "-t", "--timeout")) {
            k.timeout_ms = atoi(opt_value(argc, argv, &i));
        } else if (is_opt(a, NULL, "--ns")) {
            k.ns = opt_value(argc, argv, &i);
        } else if (is_opt(a, "-n", "--iterations")) {
            k.iterations = atol(opt_value(argc, argv, &i));
        } else if (is_opt(a, "-i", "--interval")) {
            k.interval_s = atof(opt_value(argc, argv, &i));
        } else if (is_opt(a, "-h", "--help")) {
            usage(stdout);
            {
                rc = 0;
                goto out;
            }
        } else if (is_opt(a, "-V", "--version")) {
            printf("kvctl %s\n", KVD_VERSION);
            {
                rc = 0;
                goto out;
            }
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "kvctl: unknown option '%s'\n", a);
            usage(stderr);
            {
                rc = KVCTL_EUSAGE;
                goto out;
            }
        } else {
            pos[npos++] = argv[i];
        }
    }
    if (npos == 0) {
        usage(stderr);
        {
            rc = KVCTL_EUSAGE;
            goto out;
        }
    }
    if (k.timeout_ms <= 0 || k.interval_s <= 0 || k.interval_s > 3600) {
        fprintf(stderr, "kvctl: --timeout and --interval must be positive\n");
        {
            rc = KVCTL_EUSAGE;
            goto out;
        }
    }
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(pos[0], commands[i].name) == 0)
            cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "kvctl: unknown command '%s'\n", pos[0]);
        usage(stderr);
        {
            rc = KVCTL_EUSAGE;
            goto out;
        }
    }
    if (!k.run_dir)
        k.run_dir = default_run_dir(rdbuf, sizeof(rdbuf));
    k.buf = malloc(KVCTL_BUF);
    if (!k.buf) {
        rc = KVCTL_EFAIL;
        goto out;
    }
    rc = kvctl_connect(&k);
    if (rc == 0) {
        rc = cmd->fn(&k, npos - 1, pos + 1);
        if (rc == KVCTL_EUSAGE) {
            fprintf(stderr, "kvctl: wrong arguments for '%s'\n", cmd->name);
            usage(stderr);
        }
        kvc_close(k.c);
    }
out:
    free(k.buf);
    free(pos);
    return rc;
}
