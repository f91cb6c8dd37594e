/*
 * bench_rpc.c - kvbench-rpc: what a request through libkvclient and kvd costs, next to its floor,
 * a raw ZeroMQ DEALER/ROUTER echo that answers each request with a reply of exactly the size kvd
 * would send (so both carry the same bytes over the same ipc:// transport), measured in one run.
 *
 *   1. round trips: lookup+pin of a 64-page chain (1048 B request, 1048 B reply), then its release
 *      (272 B / 16 B) measured on its own; p50 and p99 of each, beside the echo of the same sizes.
 *      kvd and echo blocks alternate so drift hits both alike.
 *   2. pipelined: 1, 4 and 8 client processes, each keeping 64 requests in flight; one operation
 *      is a lookup+pin and then the release of what it pinned. Operations per second, beside the
 *      same pattern against the echo.
 *   3. --big: 64 client processes x OPS operations each (default 10^5), counting every error
 *      (a failed call or a lookup that does not hit all 64 pages). Long: run it by hand, niced.
 *
 * kvbench-rpc starts its own kvd (64 MiB host arena) and echo server in a temp dir; clients and the
 * echo server are fresh exec()s of this binary, so no ZeroMQ context crosses a fork.
 *
 *   kvbench-rpc [--kvd PATH] [--iters N] [--ops N] [--trials N] [--cpus CLIENT SERVER |
 *               --unpinned] [--clients N] [--big [OPS]]
 *
 * --clients N: only the pipelined phase, with N clients (for profiling one configuration).
 *
 * By default clients run on CPU 0 and both servers on CPU 1 (see pin()).
 *
 * The machines are shared 2-vCPU VMs: throughput trials alternate kvd and echo and the medians
 * (and the median of the per-trial ratios) are printed; read the ratios.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "kvclient.h"
#include "proto.h"

#define CHAIN  64
#define DEPTH  64
#define NS     "bench"
#define MAXCLI 64

static const struct kvc_layout layout = {.n_layers = 2,
                                         .n_kv_heads = 2,
                                         .head_dim = 64,
                                         .page_tokens = 16,
                                         .k_fmt = KVC_FMT_FP8_E4M3,
                                         .v_fmt = KVC_FMT_FP8_E4M3};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "kvbench-rpc: %s: %s\n", what, rc < 0 ? kvc_strerror(rc) : "failed");
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[(int)(p * (n - 1) + 0.5)];
}

static void make_chain(struct kvc_hash *chain)
{
    struct kvc_hasher h;
    int32_t t[CHAIN * 16];

    for (int i = 0; i < CHAIN * 16; i++)
        t[i] = (int32_t)((i * 7919) % 32000);
    if (kvc_hasher_init(&h, NS, &layout, NULL, 0) < 0 ||
        kvc_hash_chain(&h, t, CHAIN * 16, NULL, chain, CHAIN) != CHAIN)
        die("hash", -EINVAL);
}

/* Client side on cpu_client, servers (kvd, echo) on cpu_server: both comparisons then cross the
 * same core boundary. Unpinned, a run is bimodal: whichever server happens to share the client's
 * core answers about twice as fast (MEASURED.md: 36 vs 72 us). -1: leave unpinned. */
static int cpu_client = -1, cpu_server = -1;

static void pin(int cpu)
{
    cpu_set_t set;
    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

/* ---- raw echo: frames sized like kvd's --------------------------------------------------- */

/* The reply kvd sends for this request: its size. */
static size_t reply_size(const uint8_t *req, size_t len)
{
    struct kvp_hdr h;
    if (len < sizeof(h))
        return sizeof(h);
    memcpy(&h, req, sizeof(h));
    if (h.op == KVP_OP_LOOKUP)
        return sizeof(h) + sizeof(struct kvp_lookup_rep) +
               (size_t)h.count * sizeof(struct kvp_page);
    return sizeof(h);
}

static int echo_server(const char *ep)
{
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
    static uint8_t rep[1 << 16];
    int zero = 0;

    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof(zero));
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof(zero));
    if (zmq_bind(s, ep) != 0)
        return 1;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        zmq_msg_t rid, body;
        zmq_msg_init(&rid);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&rid, s, 0) < 0 || zmq_msg_recv(&body, s, 0) < 0)
            break;
        size_t n = reply_size(zmq_msg_data(&body), zmq_msg_size(&body));
        memcpy(rep, zmq_msg_data(&body), sizeof(struct kvp_hdr)); /* echo the header (seq) */
        zmq_msg_send(&rid, s, ZMQ_SNDMORE);
        zmq_send(s, rep, n, 0);
        zmq_msg_close(&body);
    }
    return 0;
}

struct echo_cli {
    void *ctx, *sock;
    uint8_t look[16 + 8 + CHAIN * 16];
    uint8_t rel[16 + CHAIN * 4];
};

static void echo_open(struct echo_cli *e, const char *ep)
{
    int zero = 0;
    e->ctx = zmq_ctx_new();
    e->sock = zmq_socket(e->ctx, ZMQ_DEALER);
    zmq_setsockopt(e->sock, ZMQ_SNDHWM, &zero, sizeof(zero));
    zmq_setsockopt(e->sock, ZMQ_RCVHWM, &zero, sizeof(zero));
    zmq_setsockopt(e->sock, ZMQ_LINGER, &zero, sizeof(zero));
    if (zmq_connect(e->sock, ep) != 0)
        die("echo connect", -errno);
    memset(e->look, 0x5a, sizeof(e->look));
    memset(e->rel, 0x5a, sizeof(e->rel));
    kvp_put_hdr(e->look, KVP_OP_LOOKUP, 0, 0, CHAIN);
    kvp_put_hdr(e->rel, KVP_OP_RELEASE, 0, 0, CHAIN);
}

static void echo_send(struct echo_cli *e, int lookup, uint32_t seq)
{
    uint8_t *f = lookup ? e->look : e->rel;
    memcpy(f + offsetof(struct kvp_hdr, seq), &seq, sizeof(seq));
    if (zmq_send(e->sock, f, lookup ? sizeof(e->look) : sizeof(e->rel), 0) < 0)
        die("echo send", -errno);
}

/* Receive one reply; returns its op. */
static int echo_recv(struct echo_cli *e)
{
    uint8_t buf[16 + 8 + CHAIN * 16];
    struct kvp_hdr h;
    if (zmq_recv(e->sock, buf, sizeof(buf), 0) < (int)sizeof(h))
        die("echo recv", -errno);
    memcpy(&h, buf, sizeof(h));
    return h.op;
}

/* ---- kvd client ---------------------------------------------------------------------------- */

static struct kvc *kvd_open(const char *run_dir)
{
    struct kvc_opts o = KVC_OPTS_INIT;
    struct kvc *c;
    int rc;

    o.run_dir = run_dir;
    o.ns = NS;
    o.layout = layout;
    o.timeout_ms = 30000;
    rc = kvc_open(&o, &c);
    if (rc < 0)
        die("kvc_open", rc);
    return c;
}

/* ---- pipelined client (a separate process) --------------------------------------------------- */

struct slot {
    struct kvc_req r;
    struct kvc_page pages[CHAIN];
};

/* CPU seconds this process (all its threads) has used. */
static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

/* CPU seconds process pid (all its threads) has used: the sum of its threads' schedstat run
 * times (ns resolution, unlike /proc/pid/stat's ticks). */
static double proc_cpu_s(pid_t pid)
{
    char path[64];
    double sum = 0;
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char p2[400];
        unsigned long long ns;
        if (e->d_name[0] == '.')
            continue;
        snprintf(p2, sizeof(p2), "%s/%s/schedstat", path, e->d_name);
        FILE *f = fopen(p2, "r");
        if (f && fscanf(f, "%llu", &ns) == 1)
            sum += (double)ns * 1e-9;
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return sum;
}

/* What follows a finished request of one op (lookup+pin, then the release of what it pinned):
 * the release, the slot's next lookup, or nothing (NULL: the slot is done). */
static struct kvc_req *next_req(struct kvc_req *d, const struct kvc_hash *chain, long ops,
                                long *started, long *done_ops, long *errors)
{
    struct slot *sl = (struct slot *)d;
    if (d->op == KVC_OP_LOOKUP) {
        if (d->result < 0 || d->n_out != CHAIN)
            ++*errors;
        if (d->result >= 0 && d->n_out != 0) {
            sl->r = (struct kvc_req){.op = KVC_OP_RELEASE, .count = d->n_out, .pages = sl->pages};
            return &sl->r;
        }
    } else {
        *errors += d->result < 0;
    }
    ++*done_ops;
    if (*started >= ops)
        return NULL;
    ++*started;
    sl->r = (struct kvc_req){.op = KVC_OP_LOOKUP,
                             .flags = KVC_LOOKUP_PIN,
                             .count = CHAIN,
                             .hashes = chain,
                             .pages = sl->pages};
    return &sl->r;
}

/* One op = lookup+pin then release; DEPTH requests in flight. kind "kvd": each request its own
 * kvc_submit; "kvdv": the follow-ups of every completion at hand go in one kvc_submitv. Prints
 * "ops errors start_us end_us cpu_us" (CLOCK_MONOTONIC at "go" and at the last completion; cpu:
 * this client's CPU time over the run, all threads). */
static int client_main(const char *kind, const char *where, long ops)
{
    static struct slot s[DEPTH];
    struct kvc_hash chain[CHAIN];
    long started = 0, done_ops = 0, errors = 0;
    char go[16];
    double t0, c0;

    make_chain(chain);
    if (strncmp(kind, "kvd", 3) == 0) {
        struct kvc *c = kvd_open(where);
        struct kvc_req *d, *v[DEPTH];
        int batched = strcmp(kind, "kvdv") == 0;
        unsigned nv = 0;

        printf("ready\n");
        fflush(stdout);
        if (fgets(go, sizeof(go), stdin) == NULL)
            return 1;
        t0 = now_us();
        c0 = self_cpu_s();
        for (int i = 0; i < DEPTH && started < ops; i++, started++) {
            s[i].r = (struct kvc_req){.op = KVC_OP_LOOKUP,
                                      .flags = KVC_LOOKUP_PIN,
                                      .count = CHAIN,
                                      .hashes = chain,
                                      .pages = s[i].pages};
            v[nv++] = &s[i].r;
        }
        for (;;) {
            if (batched && nv) {
                if (kvc_submitv(c, v, nv) != (int)nv)
                    die("submitv", -EIO);
            } else {
                for (unsigned i = 0; i < nv; i++)
                    if (kvc_submit(c, v[i]) < 0)
                        die("submit", -EIO);
            }
            nv = 0;
            if (done_ops >= ops)
                break;
            int rc = kvc_complete(c, 30000, &d);
            if (rc < 0)
                die("complete", rc);
            do { /* batched: and whatever else has finished by now */
                struct kvc_req *n = next_req(d, chain, ops, &started, &done_ops, &errors);
                if (n)
                    v[nv++] = n;
            } while (batched && nv < DEPTH && kvc_complete(c, 0, &d) == 0);
        }
        printf("%ld %ld %.0f %.0f %.0f\n", done_ops, errors, t0, now_us(),
               (self_cpu_s() - c0) * 1e6);
        kvc_close(c);
    } else {
        struct echo_cli e;
        echo_open(&e, where);
        echo_send(&e, 1, 0); /* connect before the clock starts */
        echo_recv(&e);
        printf("ready\n");
        fflush(stdout);
        if (fgets(go, sizeof(go), stdin) == NULL)
            return 1;
        t0 = now_us();
        c0 = self_cpu_s();
        for (; started < DEPTH && started < ops; started++)
            echo_send(&e, 1, (uint32_t)started);
        while (done_ops < ops) {
            if (echo_recv(&e) == KVP_OP_LOOKUP) {
                echo_send(&e, 0, 0);
                continue;
            }
            done_ops++;
            if (started < ops) {
                echo_send(&e, 1, (uint32_t)started);
                started++;
            }
        }
        printf("%ld %ld %.0f %.0f %.0f\n", done_ops, errors, t0, now_us(),
               (self_cpu_s() - c0) * 1e6);
    }
    fflush(stdout);
    return 0;
}

/* ---- processes ------------------------------------------------------------------------------ */

struct proc {
    pid_t pid;
    FILE *out;
    int in;
};

static void spawn(struct proc *p, char *const argv[], int cpu)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
        die("pipe", -errno);
    p->pid = fork();
    if (p->pid < 0)
        die("fork", -errno);
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pin(cpu);
        dup2(in[0], 0);
        dup2(out[1], 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->in = in[1];
    p->out = fdopen(out[0], "r");
}

static void expect_ready(struct proc *p)
{
    char line[64];
    if (fgets(line, sizeof(line), p->out) == NULL || strncmp(line, "ready", 5) != 0)
        die("a child did not start", -EIO);
}

/* CPU per operation of one trial, in microseconds: the clients' (all of them) and the server's. */
struct trial_cpu {
    double client_us, server_us;
};

/* Run n pipelined clients of kind against where (served by process server); returns ops/s; adds
 * errors; fills *cpu. The time is each client's own, from its "go" to its last completion (the
 * longest of them): tearing a client down is not throughput, and kvc_close (a DETACH round trip,
 * unmapping the arena) took a few ms per client, ~5% of a 10^4-operation trial. */
static double run_clients(const char *kind, const char *where, pid_t server, int n, long ops,
                          long *errors, struct trial_cpu *cpu)
{
    static struct proc p[MAXCLI];
    char ops_s[32];
    double sum_ops = 0, client_us = 0, s0, first = 0, last = 0;

    snprintf(ops_s, sizeof(ops_s), "%ld", ops);
    for (int i = 0; i < n; i++) {
        char *argv[] = {"kvbench-rpc", "--client", (char *)kind, (char *)where, ops_s, NULL};
        spawn(&p[i], argv, cpu_client);
    }
    for (int i = 0; i < n; i++)
        expect_ready(&p[i]);
    s0 = proc_cpu_s(server);
    for (int i = 0; i < n; i++)
        if (write(p[i].in, "go\n", 3) != 3)
            die("go", -EIO);
    for (int i = 0; i < n; i++) {
        long d, e;
        double start, end, cus;
        if (fscanf(p[i].out, "%ld %ld %lf %lf %lf", &d, &e, &start, &end, &cus) != 5)
            die("client result", -EIO);
        sum_ops += (double)d;
        client_us += cus;
        if (i == 0 || start < first)
            first = start;
        if (i == 0 || end > last)
            last = end;
        *errors += e;
        waitpid(p[i].pid, NULL, 0);
        fclose(p[i].out);
        close(p[i].in);
    }
    if (cpu) {
        cpu->client_us = client_us / sum_ops;
        cpu->server_us = (proc_cpu_s(server) - s0) * 1e6 / sum_ops;
    }
    return sum_ops / ((last - first) / 1e6);
}

static pid_t start_kvd(const char *kvd, const char *dir, char *run_dir, size_t len)
{
    char state[200], sock[220];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    pid_t pid;

    snprintf(run_dir, len, "%s/run", dir);
    snprintf(state, sizeof(state), "%s/state", dir);
    pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pin(cpu_server);
        dup2(null, 1);
        dup2(null, 2);
        execl(kvd, kvd, "--run-dir", run_dir, "--state-dir", state, "--arena-size", "64M",
              "--chunk-size", "4M", "--heartbeat-ms", "60000", "--foreground", (char *)NULL);
        _exit(127);
    }
    snprintf(sock, sizeof(sock), "%s/kvd.sock", run_dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", sock);
    for (int i = 0; i < 1000; i++) {
        int s = socket(AF_UNIX, SOCK_SEQPACKET, 0);
        int ok = connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(s);
        if (ok)
            return pid;
        usleep(10000);
    }
    die("kvd did not start", -ETIMEDOUT);
    return -1;
}

static void commit_chain(struct kvc *c, const struct kvc_hash *chain)
{
    struct kvc_page p[CHAIN];
    struct kvc_commit e[CHAIN];
    int rc = kvc_alloc(c, CHAIN, chain, p);

    if (rc < 0)
        die("alloc", rc);
    for (int i = 0; i < CHAIN; i++) {
        e[i] = (struct kvc_commit){.page_id = p[i].id, .ntok = 16, .hash = chain[i]};
        if (i)
            e[i].parent = chain[i - 1];
    }
    if ((rc = kvc_commit(c, e, CHAIN, p)) < 0 || (rc = kvc_release_pages(c, p, CHAIN)) < 0)
        die("commit", rc);
}

int main(int argc, char **argv)
{
    const char *kvd = getenv("KVBENCH_KVD");
    long iters = 5000, ops = 10000, big = 0;
    int trials = 5, only = 0;
    char dir[] = "/tmp/kvbench-rpc.XXXXXX", run_dir[200], echo_ep[240];
    struct kvc_hash chain[CHAIN];
    struct proc echo;
    pid_t kvd_pid;

    if (argc >= 2 && strcmp(argv[1], "--echo-server") == 0 && argc == 3)
        return echo_server(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "--client") == 0 && argc == 5)
        return client_main(argv[2], argv[3], atol(argv[4]));
#ifdef KVBENCH_KVD
    if (kvd == NULL)
        kvd = KVBENCH_KVD;
#endif
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--kvd") == 0 && i + 1 < argc)
            kvd = argv[++i];
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = atol(argv[++i]);
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc)
            ops = atol(argv[++i]);
        else if (strcmp(argv[i], "--cpus") == 0 && i + 2 < argc) {
            cpu_client = atoi(argv[++i]);
            cpu_server = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--unpinned") == 0)
            cpu_client = cpu_server = -2;
        else if (strcmp(argv[i], "--trials") == 0 && i + 1 < argc)
            trials = atoi(argv[++i]);
        else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
            only = atoi(argv[++i]);
        else if (strcmp(argv[i], "--big") == 0)
            big = (i + 1 < argc && argv[i + 1][0] != '-') ? atol(argv[++i]) : 100000;
        else {
            fprintf(stderr, "usage: kvbench-rpc [--kvd PATH] [--iters N] [--ops N] [--trials N] "
                            "[--cpus CLIENT SERVER | --unpinned] [--clients N] [--big [OPS]]\n");
            return 2;
        }
    }
    if (trials < 1 || trials > 16 || iters < 10 || ops < 1 || only < 0 || only > MAXCLI)
        die("bad arguments", -EINVAL);
    if (kvd == NULL)
        die("no kvd binary (--kvd PATH)", -EINVAL);
    if (cpu_client == -1 && sysconf(_SC_NPROCESSORS_ONLN) >= 2)
        cpu_client = 0, cpu_server = 1;
    if (cpu_client < 0)
        cpu_client = cpu_server = -1;
    pin(cpu_client);
    if (mkdtemp(dir) == NULL)
        die("mkdtemp", -errno);
    signal(SIGPIPE, SIG_IGN);
    kvd_pid = start_kvd(kvd, dir, run_dir, sizeof(run_dir));
    snprintf(echo_ep, sizeof(echo_ep), "ipc://%s/echo.zmq", dir);
    {
        char *argv2[] = {"kvbench-rpc", "--echo-server", echo_ep, NULL};
        spawn(&echo, argv2, cpu_server);
        expect_ready(&echo);
    }
    make_chain(chain);
    struct kvc *c = kvd_open(run_dir);
    commit_chain(c, chain);

    if (big) {
        long errors = 0;
        double r = run_clients("kvd", run_dir, kvd_pid, MAXCLI, big, &errors, NULL);
        printf("kvbench-rpc --big: %d clients x %ld ops (lookup+pin of %d pages, then release), "
               "depth %d\n  %.0f ops/s, errors: %ld\n",
               MAXCLI, big, CHAIN, DEPTH, r, errors);
        goto out;
    }

    /* 1. round trips, kvd and echo alternating in blocks of 100 */
    if (!only) {
        double *lk = calloc((size_t)iters, sizeof(double)),
               *rl = calloc((size_t)iters, sizeof(double));
        double *el = calloc((size_t)iters, sizeof(double)),
               *er = calloc((size_t)iters, sizeof(double));
        struct kvc_page p[CHAIN];
        struct echo_cli e;
        uint32_t hit, next;
        long errors = 0;

        echo_open(&e, echo_ep);
        for (int w = 0; w < 200; w++) { /* warm both paths */
            echo_send(&e, 1, 0);
            echo_recv(&e);
            if (kvc_lookup(c, chain, CHAIN, KVC_LOOKUP_PIN, 0, p, &hit, &next) < 0 ||
                kvc_release_pages(c, p, hit) < 0)
                errors++;
        }
        for (long i = 0; i < iters; i += 100) {
            for (long k = i; k < i + 100 && k < iters; k++) {
                double t0 = now_us();
                int rc = kvc_lookup(c, chain, CHAIN, KVC_LOOKUP_PIN, 0, p, &hit, &next);
                double t1 = now_us();
                errors += rc < 0 || hit != CHAIN;
                rc = kvc_release_pages(c, p, hit);
                rl[k] = now_us() - t1;
                lk[k] = t1 - t0;
                errors += rc < 0;
            }
            for (long k = i; k < i + 100 && k < iters; k++) {
                double t0 = now_us();
                echo_send(&e, 1, 1);
                echo_recv(&e);
                double t1 = now_us();
                echo_send(&e, 0, 2);
                echo_recv(&e);
                er[k] = now_us() - t1;
                el[k] = t1 - t0;
            }
        }
        double a50 = pct(lk, (int)iters, .5), a99 = pct(lk, (int)iters, .99);
        double b50 = pct(el, (int)iters, .5), b99 = pct(el, (int)iters, .99);
        double c50 = pct(rl, (int)iters, .5), c99 = pct(rl, (int)iters, .99);
        double d50 = pct(er, (int)iters, .5), d99 = pct(er, (int)iters, .99);
        printf("kvbench-rpc: round trips over ipc://, %ld each, kvd and raw DEALER/ROUTER echo "
               "alternating; client cpu %d, servers cpu %d (-1: unpinned)\n",
               iters, cpu_client, cpu_server);
        printf("  %-44s %9s %9s\n", "", "p50 us", "p99 us");
        printf("  %-44s %9.1f %9.1f\n", "kvd lookup+pin, 64-page chain (1048/1048 B)", a50, a99);
        printf("  %-44s %9.1f %9.1f\n", "raw echo, same sizes", b50, b99);
        printf("  %-44s %8.2fx %8.2fx   (goal <= 1.3x)\n", "ratio", a50 / b50, a99 / b99);
        printf("  %-44s %9.1f %9.1f\n", "kvd release, 64 ids (272/16 B)", c50, c99);
        printf("  %-44s %9.1f %9.1f\n", "raw echo, same sizes", d50, d99);
        printf("  %-44s %8.2fx %8.2fx\n", "ratio", c50 / d50, c99 / d99);
        printf("  errors: %ld\n", errors);
        zmq_close(e.sock);
        zmq_ctx_term(e.ctx);
        free(lk), free(rl), free(el), free(er);
    }

    /* 2. pipelined throughput: trials alternate kvd and echo; medians are reported */
    printf("pipelined, depth %d per client, op = lookup+pin of %d pages then its release, %ld "
           "ops per client, median of %d alternating trials\n",
           DEPTH, CHAIN, ops, trials);
    double cpu[4][5];
    int ncpu = 0;
    printf("  kvd: one message per request (kvc_submit); kvd/v: the requests a client has ready "
           "together as one message (kvc_submitv); echo: one message per request\n");
    printf("  %-8s %11s %11s %11s %8s %8s\n", "clients", "kvd ops/s", "kvd/v ops/s", "echo ops/s",
           "kvd", "kvd/v");
    for (int n = only ? only : 1; n <= (only ? only : 8); n *= (n == 1 ? 4 : 2)) {
        double k[16], kv[16], e[16], r[16], rv[16];
        double kc[16], ks[16], ec[16], es[16];
        long ek = 0, ee = 0;
        for (int t = 0; t < trials; t++) {
            struct trial_cpu ck, ce;
            k[t] = run_clients("kvd", run_dir, kvd_pid, n, ops, &ek, &ck);
            e[t] = run_clients("echo", echo_ep, echo.pid, n, ops, &ee, &ce);
            kv[t] = run_clients("kvdv", run_dir, kvd_pid, n, ops, &ek, NULL);
            r[t] = k[t] / e[t];
            rv[t] = kv[t] / e[t];
            kc[t] = ck.client_us, ks[t] = ck.server_us;
            ec[t] = ce.client_us, es[t] = ce.server_us;
        }
        double km = pct(k, trials, .5), kvm = pct(kv, trials, .5), em = pct(e, trials, .5);
        printf("  %-8d %11.0f %11.0f %11.0f %7.2fx %7.2fx   (ratios to echo; goal >= 0.7x) "
               "errors %ld\n",
               n, km, kvm, em, pct(r, trials, .5), pct(rv, trials, .5), ek);
        cpu[ncpu][0] = n;
        cpu[ncpu][1] = pct(kc, trials, .5), cpu[ncpu][2] = pct(ec, trials, .5);
        cpu[ncpu][3] = pct(ks, trials, .5), cpu[ncpu][4] = pct(es, trials, .5);
        ncpu++;
    }
    printf(
        "CPU time per op (us, medians; clients: all client processes; server: all its threads)\n");
    printf("  %-8s %10s %10s %10s %10s %10s\n", "clients", "cli kvd", "cli echo", "srv kvd",
           "srv echo", "srv ratio");
    for (int i = 0; i < ncpu; i++)
        printf("  %-8.0f %10.2f %10.2f %10.2f %10.2f %9.2fx\n", cpu[i][0], cpu[i][1], cpu[i][2],
               cpu[i][3], cpu[i][4], cpu[i][3] / cpu[i][4]);
out:
    kvc_close(c);
    kill(echo.pid, SIGKILL);
    waitpid(echo.pid, NULL, 0);
    kill(kvd_pid, SIGTERM);
    waitpid(kvd_pid, NULL, 0);
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "kvbench-rpc: could not remove %s\n", dir);
    }
    return 0;
}
