/*
 * kvt.h - helpers for tests that run the real kvd: start/stop/restart a daemon in its own temp
 * dir, spawn worker programs (fork + exec, so no ZeroMQ state crosses the fork), read their output
 * with a timeout. Paths come from the environment the test registration sets: KVT_KVD (the kvd
 * binary) and KVT_WORKER (tests/multiproc's worker). All return 0 or a negative errno.
 */
#ifndef KVT_H
#define KVT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kvclient.h"

struct kvt_kvd {
    pid_t pid;     /* running daemon, or 0 */
    char base[64]; /* mkdtemp dir holding everything below */
    char run_dir[96];
    char state_dir[96];
    char log_path[96];     /* daemon stdout+stderr */
    const char *extra[16]; /* extra command-line arguments, NULL-terminated (kept for restarts) */
};

/* Make a temp dir and start kvd there (64M arena, 4M chunks, 60 s heartbeat, debug log) with
 * extra arguments (NULL-terminated list, or NULL). Waits until kvd.sock accepts (10 s). */
int kvt_kvd_start(struct kvt_kvd *k, const char *const *extra);
/* Start it again in the same dirs (after a stop or kill). */
int kvt_kvd_restart(struct kvt_kvd *k);
/* SIGTERM and wait (10 s, then SIGKILL). Returns the exit status (0..255), 128+signal, or -errno.
 */
int kvt_kvd_stop(struct kvt_kvd *k);
/* SIGKILL and reap. */
void kvt_kvd_kill(struct kvt_kvd *k);
/* Stop if running and remove the temp dir. */
void kvt_kvd_cleanup(struct kvt_kvd *k);
/* Print the daemon's log to stderr (for a failing test). */
void kvt_kvd_dump_log(const struct kvt_kvd *k);

/* The small layout every multi-process test uses (2 layers, 2 heads, dim 64, 16 tokens, FP8). */
struct kvc_layout kvt_layout(void);
/* kvc_open on k's run dir with kvt_layout() and namespace ns. */
int kvt_open(const struct kvt_kvd *k, const char *ns, struct kvc **out);

/* A spawned process with pipes to its stdin and from its stdout (stderr is inherited). */
struct kvt_proc {
    pid_t pid;
    int in_fd;  /* write end of its stdin, -1 when closed */
    int out_fd; /* read end of its stdout */
    char buf[512];
    size_t len;
};
/* fork + exec argv (argv[0] is the path); before exec the child only dup2s and execs. */
int kvt_spawn(struct kvt_proc *p, const char *const *argv);
/* The worker with arguments (NULL-terminated), after "KVT_WORKER run_dir ns". */
int kvt_spawn_worker(struct kvt_proc *p, const struct kvt_kvd *k, const char *ns,
                     const char *const *args);
/* Read one line (without '\n') within timeout_ms. Returns its length, -ETIMEDOUT, or -EPIPE. */
int kvt_read_line(struct kvt_proc *p, char *line, size_t cap, int timeout_ms);
/* Write a line to its stdin. */
int kvt_send_line(struct kvt_proc *p, const char *line);
/* Wait for exit within timeout_ms (SIGKILL after). Exit status, 128+signal, or -ETIMEDOUT. */
int kvt_wait(struct kvt_proc *p, int timeout_ms);
/* Close pipes; kill and reap if still running. */
void kvt_proc_free(struct kvt_proc *p);

/* Deterministic tokens of a prompt, and the byte pattern a page for block hash h holds. */
void kvt_tokens(int32_t *t, size_t n, unsigned seed);
void kvt_fill_page(void *page, size_t bytes, const struct kvc_hash *h);
/* 0 if the page holds the pattern of h, else the index of the first bad byte + 1. */
size_t kvt_check_page(const void *page, size_t bytes, const struct kvc_hash *h);

/* Poll kvc_stats until pred(stats, arg) holds or timeout_ms passes. 0, -ETIMEDOUT or an error. */
int kvt_stats_until(struct kvc *c, int (*pred)(const struct kvc_stats *, void *), void *arg,
                    int timeout_ms, struct kvc_stats *last);

long kvt_now_ms(void);

#endif
