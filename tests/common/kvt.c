/*
 * kvt.c - test helpers: a real kvd in a temp dir, worker processes, line I/O with timeouts.
 * Used only by tests; failures are returned, never asserted here.
 */
#include "kvt.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

long kvt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -EINVAL;
}

/* Reap pid within timeout_ms. Exit code, or -ETIMEDOUT (still running). */
static int reap(pid_t pid, int timeout_ms)
{
    long end = kvt_now_ms() + timeout_ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return exit_code(status);
        if (r < 0)
            return -errno;
        if (kvt_now_ms() >= end)
            return -ETIMEDOUT;
        sleep_ms(5);
    }
}

static int sock_ready(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), rc;

    if (s < 0)
        return -errno;
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    rc = connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 0 : -errno;
    close(s);
    return rc;
}

static int kvd_launch(struct kvt_kvd *k)
{
    const char *kvd = getenv("KVT_KVD");
    const char *argv[40];
    char sock[128];
    int n = 0, logfd;
    long end;

    if (kvd == NULL)
        return -ENOENT;
    argv[n++] = kvd;
    argv[n++] = "--run-dir";
    argv[n++] = k->run_dir;
    argv[n++] = "--state-dir";
    argv[n++] = k->state_dir;
    argv[n++] = "--arena-size";
    argv[n++] = "64M";
    argv[n++] = "--chunk-size";
    argv[n++] = "4M";
    argv[n++] = "--heartbeat-ms";
    argv[n++] = "60000";
    argv[n++] = "--foreground";
    argv[n++] = "--log-level";
    argv[n++] = "debug";
    for (int i = 0; k->extra[i] != NULL && n < 38; i++)
        argv[n++] = k->extra[i]; /* later options override the defaults above */
    argv[n] = NULL;

    logfd = open(k->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0)
        return -errno;
    k->pid = fork();
    if (k->pid < 0) {
        k->pid = 0;
        close(logfd);
        return -errno;
    }
    if (k->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed or timed-out test leaves no daemon behind */
        dup2(logfd, 1);
        dup2(logfd, 2);
        execv(kvd, (char *const *)argv);
        _exit(127);
    }
    close(logfd);
    snprintf(sock, sizeof(sock), "%s/kvd.sock", k->run_dir);
    end = kvt_now_ms() + 10000;
    while (kvt_now_ms() < end) {
        if (sock_ready(sock) == 0)
            return 0;
        if (reap(k->pid, 0) != -ETIMEDOUT) { /* it exited */
            k->pid = 0;
            return -ECHILD;
        }
        sleep_ms(10);
    }
    kvt_kvd_kill(k);
    return -ETIMEDOUT;
}

int kvt_kvd_start(struct kvt_kvd *k, const char *const *extra)
{
    int i = 0;

    memset(k, 0, sizeof(*k));
    snprintf(k->base, sizeof(k->base), "/tmp/kvt.XXXXXX");
    if (mkdtemp(k->base) == NULL)
        return -errno;
    snprintf(k->run_dir, sizeof(k->run_dir), "%s/run", k->base);
    snprintf(k->state_dir, sizeof(k->state_dir), "%s/state", k->base);
    snprintf(k->log_path, sizeof(k->log_path), "%s/kvd.log", k->base);
    for (; extra != NULL && extra[i] != NULL && i < 15; i++)
        k->extra[i] = extra[i];
    k->extra[i] = NULL;
    return kvd_launch(k);
}

int kvt_kvd_restart(struct kvt_kvd *k)
{
    if (k->pid > 0)
        return -EBUSY;
    return kvd_launch(k);
}

int kvt_kvd_stop(struct kvt_kvd *k)
{
    int rc;

    if (k->pid <= 0)
        return -ESRCH;
    kill(k->pid, SIGTERM);
    rc = reap(k->pid, 10000);
    if (rc == -ETIMEDOUT) {
        kill(k->pid, SIGKILL);
        rc = reap(k->pid, 10000);
    }
    k->pid = 0;
    return rc;
}

void kvt_kvd_kill(struct kvt_kvd *k)
{
    if (k->pid <= 0)
        return;
    kill(k->pid, SIGKILL);
    reap(k->pid, 10000);
    k->pid = 0;
}

static void rm_tree(const char *path)
{
    char cmd[256];

    /* the path is our own mkdtemp name: no shell metacharacters */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "kvt: could not remove %s\n", path);
}

void kvt_kvd_cleanup(struct kvt_kvd *k)
{
    if (k->pid > 0)
        kvt_kvd_stop(k);
    if (k->base[0] && getenv("KVT_KEEP") == NULL)
        rm_tree(k->base);
    k->base[0] = '\0';
}

void kvt_kvd_dump_log(const struct kvt_kvd *k)
{
    char buf[4096];
    size_t n;
    FILE *f = fopen(k->log_path, "r");

    if (f == NULL)
        return;
    fprintf(stderr, "---- kvd log %s ----\n", k->log_path);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, stderr);
    fclose(f);
}

struct kvc_layout kvt_layout(void)
{
    struct kvc_layout l = {.n_layers = 2,
                           .n_kv_heads = 2,
                           .head_dim = 64,
                           .page_tokens = 16,
                           .k_fmt = KVC_FMT_FP8_E4M3,
                           .v_fmt = KVC_FMT_FP8_E4M3};
    return l;
}

int kvt_open(const struct kvt_kvd *k, const char *ns, struct kvc **out)
{
    struct kvc_opts o = KVC_OPTS_INIT;

    o.run_dir = k->run_dir;
    o.ns = ns;
    o.layout = kvt_layout();
    o.timeout_ms = 10000;
    return kvc_open(&o, out);
}

int kvt_spawn(struct kvt_proc *p, const char *const *argv)
{
    int in[2], out[2];

    memset(p, 0, sizeof(*p));
    p->in_fd = p->out_fd = -1;
    if (pipe2(in, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(out, O_CLOEXEC) < 0) {
        close(in[0]);
        close(in[1]);
        return -errno;
    }
    p->pid = fork();
    if (p->pid < 0) {
        int rc = -errno;
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return rc;
    }
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->in_fd = in[1];
    p->out_fd = out[0];
    return 0;
}

int kvt_spawn_worker(struct kvt_proc *p, const struct kvt_kvd *k, const char *ns,
                     const char *const *args)
{
    const char *argv[24];
    int n = 0;

    argv[n++] = getenv("KVT_WORKER");
    if (argv[0] == NULL)
        return -ENOENT;
    argv[n++] = k->run_dir;
    argv[n++] = ns;
    for (int i = 0; args != NULL && args[i] != NULL && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return kvt_spawn(p, argv);
}

int kvt_read_line(struct kvt_proc *p, char *line, size_t cap, int timeout_ms)
{
    long end = kvt_now_ms() + timeout_ms;

    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - p->buf);
            size_t c = n < cap - 1 ? n : cap - 1;
            memcpy(line, p->buf, c);
            line[c] = '\0';
            memmove(p->buf, nl + 1, p->len - n - 1);
            p->len -= n + 1;
            return (int)c;
        }
        long left = end - kvt_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno != EINTR)
            return -errno;
        if (rc <= 0)
            continue;
        if (p->len == sizeof(p->buf))
            p->len = 0; /* an over-long line: drop it */
        ssize_t r = read(p->out_fd, p->buf + p->len, sizeof(p->buf) - p->len);
        if (r == 0)
            return -EPIPE;
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r > 0)
            p->len += (size_t)r;
    }
}

int kvt_send_line(struct kvt_proc *p, const char *line)
{
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "%s\n", line);

    if (p->in_fd < 0)
        return -EPIPE;
    return write(p->in_fd, buf, (size_t)n) == n ? 0 : -EPIPE;
}

int kvt_wait(struct kvt_proc *p, int timeout_ms)
{
    int rc;

    if (p->pid <= 0)
        return -ESRCH;
    rc = reap(p->pid, timeout_ms);
    if (rc == -ETIMEDOUT) {
        kill(p->pid, SIGKILL);
        reap(p->pid, 10000);
    }
    p->pid = 0;
    return rc;
}

void kvt_proc_free(struct kvt_proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        reap(p->pid, 10000);
        p->pid = 0;
    }
    if (p->in_fd >= 0)
        close(p->in_fd);
    if (p->out_fd >= 0)
        close(p->out_fd);
    p->in_fd = p->out_fd = -1;
}

void kvt_tokens(int32_t *t, size_t n, unsigned seed)
{
    unsigned x = seed * 2654435761u + 1;

    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        t[i] = (int32_t)((x >> 8) % 128000u);
    }
}

static uint8_t pattern(const struct kvc_hash *h, size_t i)
{
    return (uint8_t)(h->b[i % KVC_HASH_BYTES] ^ (uint8_t)(i * 131u + (i >> 8) * 7u + 1u));
}

void kvt_fill_page(void *page, size_t bytes, const struct kvc_hash *h)
{
    uint8_t *p = page;

    for (size_t i = 0; i < bytes; i++)
        p[i] = pattern(h, i);
}

size_t kvt_check_page(const void *page, size_t bytes, const struct kvc_hash *h)
{
    const uint8_t *p = page;

    for (size_t i = 0; i < bytes; i++)
        if (p[i] != pattern(h, i))
            return i + 1;
    return 0;
}

int kvt_stats_until(struct kvc *c, int (*pred)(const struct kvc_stats *, void *), void *arg,
                    int timeout_ms, struct kvc_stats *last)
{
    long end = kvt_now_ms() + timeout_ms;

    for (;;) {
        int rc = kvc_stats(c, last);
        if (rc < 0)
            return rc;
        if (pred(last, arg))
            return 0;
        if (kvt_now_ms() >= end)
            return -ETIMEDOUT;
        sleep_ms(20);
    }
}
