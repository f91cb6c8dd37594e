/*
 * test_spill_crash.c - kill -9 of a process that is spilling hard, then restart.
 *
 * A child opens the store, re-indexes it, and spills pages without pause into a small store,
 * invalidating its oldest page whenever the store is full, so writes and erases overlap on reused
 * slots. It reports over a pipe, in order: S seed (re-indexed at start), W seed (write completed),
 * I seed (invalidation asked), E seed (erase completed). The parent kills it with SIGKILL in the
 * middle of that, reopens the store and checks:
 *   - every page the scan reports restores and is bit-exact (nothing damaged is ever served);
 *   - every page written and not invalidated is there (S and W minus I);
 *   - no page whose erase completed is there;
 *   - the restarted child re-indexes exactly what the parent found.
 * Three rounds on the same store, for each backend.
 */
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include "spill_th.h"

#define SLOTS   24
#define MAXSEED 200000

struct rec_msg {
    char kind;
    uint64_t seed;
};

static void say(int fd, char kind, uint64_t seed)
{
    struct rec_msg r = {.kind = kind, .seed = seed};

    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(3);
}

struct child {
    int fd;
    uint64_t slot_seed[SLOTS];
    uint32_t fifo[SLOTS]; /* valid slots, oldest first */
    int head, len;
};

static void child_done(void *arg, const struct kv_spill_done *d)
{
    struct child *c = arg;

    if (d->op == KV_SPILL_OP_WRITE && d->res == 0) {
        say(c->fd, 'W', c->slot_seed[d->slot]);
        c->fifo[(c->head + c->len++) % SLOTS] = d->slot;
    } else if (d->op == KV_SPILL_OP_INVALIDATE && d->res == 0) {
        say(c->fd, 'E', c->slot_seed[d->slot]);
    } else if (d->op != KV_SPILL_OP_WRITE || d->res != 0) {
        _exit(4);
    }
}

static int child_scan(void *arg, uint32_t slot, const struct kv_spill_meta *m)
{
    struct child *c = arg;

    c->slot_seed[slot] = th_seed(m->hash);
    c->fifo[(c->head + c->len++) % SLOTS] = slot;
    say(c->fd, 'S', th_seed(m->hash));
    return 0;
}

static void child_run(const char *path, int sync, int fd, uint64_t seed)
{
    struct kv_layout l = th_layout(KV_FMT_FP8_E4M3, KV_FMT_KIVI2);
    size_t pb = kv_page_bytes(&l);
    uint8_t *page = malloc(pb);
    struct kv_spill_cfg cfg = {.path = path,
                               .bytes = KV_SPILL_ALIGN + SLOTS * (KV_SPILL_ALIGN + TH_MAX_PAGE),
                               .max_page_bytes = TH_MAX_PAGE,
                               .queue_depth = 8,
                               .force_sync = sync};
    static struct child c;
    struct kv_spill *s;
    struct pollfd pfd;
    char why[256];

    c.fd = fd;
    if (!page || kv_spill_open(&s, &cfg, why, sizeof why) || kv_spill_scan(s, child_scan, &c) < 0)
        _exit(2);
    pfd.fd = kv_spill_event_fd(s);
    pfd.events = POLLIN;
    for (;; seed++) {
        struct kv_spill_meta m = th_meta(&l, seed);
        int slot;

        th_fill(page, pb, seed);
        while ((slot = kv_spill_write(s, &m, page, NULL)) < 0) {
            if (slot == -ENOSPC && c.len > 0) {
                uint32_t old = c.fifo[c.head];
                c.head = (c.head + 1) % SLOTS;
                c.len--;
                say(fd, 'I', c.slot_seed[old]);
                if (kv_spill_invalidate(s, old))
                    _exit(5);
            } else if (slot != -ENOSPC && slot != -EBUSY) {
                _exit(6);
            }
            kv_spill_submit(s);
            poll(&pfd, 1, 100);
            kv_spill_reap(s, child_done, &c);
        }
        c.slot_seed[slot] = seed;
        kv_spill_reap(s, child_done, &c);
    }
}

struct seen {
    uint8_t S[MAXSEED], W[MAXSEED], I[MAXSEED], E[MAXSEED], P[MAXSEED];
};

static int parent_scan(void *arg, uint32_t slot, const struct kv_spill_meta *m)
{
    struct seen *v = arg;
    uint64_t seed = th_seed(m->hash);

    (void)slot;
    cr_assert(seed < MAXSEED);
    cr_assert_eq(v->P[seed], 0, "seed %lu in two slots", (unsigned long)seed);
    v->P[seed] = 1;
    return 0;
}

struct restore_acc {
    int bad;
    int n;
};

static void restore_done(void *arg, const struct kv_spill_done *d)
{
    struct restore_acc *a = arg;

    a->n++;
    if (d->res != 0)
        a->bad++;
}

static int scan_slots_cb(void *arg, uint32_t slot, const struct kv_spill_meta *m)
{
    uint64_t *slot_seed = arg;

    slot_seed[slot] = th_seed(m->hash) + 1;
    return 0;
}

static void crash_rounds(int sync)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    struct kv_layout l = th_layout(KV_FMT_FP8_E4M3, KV_FMT_KIVI2);
    size_t pb = kv_page_bytes(&l);
    struct seen *v = calloc(1, sizeof *v), *prev = calloc(1, sizeof *prev);
    uint8_t *want = malloc(pb), *got = malloc(pb);
    int had_prev = 0;

    th_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/store", dir);
    for (int round = 0; round < 3; round++) {
        int pfd[2], status, writes = 0;
        struct rec_msg r;
        pid_t pid;

        memset(v, 0, sizeof *v);
        cr_assert_eq(pipe(pfd), 0);
        pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(pfd[0]);
            child_run(path, sync, pfd[1], 1 + (uint64_t)round * 50000);
            _exit(1);
        }
        close(pfd[1]);
        /* let it spill and recycle the store several times, then kill it mid-flight */
        while (writes < 200 + 37 * round && read(pfd[0], &r, sizeof r) == (ssize_t)sizeof r) {
            cr_assert(r.seed < MAXSEED);
            writes += r.kind == 'W';
            (r.kind == 'S' ? v->S : r.kind == 'W' ? v->W : r.kind == 'I' ? v->I : v->E)[r.seed] = 1;
        }
        kill(pid, SIGKILL);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "child exited by itself (status %d)", status);
        while (read(pfd[0], &r, sizeof r) == (ssize_t)sizeof r) {
            cr_assert(r.seed < MAXSEED);
            (r.kind == 'S' ? v->S : r.kind == 'W' ? v->W : r.kind == 'I' ? v->I : v->E)[r.seed] = 1;
        }
        close(pfd[0]);
        cr_assert_geq(writes, 200, "the child did spill");
        if (had_prev) /* the child re-indexed what the previous restart found */
            cr_assert(memcmp(v->S, prev->P, MAXSEED) == 0, "round %d: re-index differs", round);

        struct kv_spill *s = th_open(path, sync, SLOTS, 8);
        static uint64_t slot_seed[SLOTS];
        struct restore_acc acc = {0};
        memset(slot_seed, 0, sizeof slot_seed);
        cr_assert_geq(kv_spill_scan(s, scan_slots_cb, slot_seed), 0);
        for (uint32_t sl = 0; sl < SLOTS; sl++) {
            if (!slot_seed[sl])
                continue;
            struct kv_spill_meta m = th_meta(&l, slot_seed[sl] - 1);
            parent_scan(v, sl, &m);
            cr_assert_eq(kv_spill_read(s, sl, m.hash, &l, got, NULL), 0);
            cr_assert_geq(kv_spill_drain(s, restore_done, &acc), 0);
            cr_assert_eq(acc.bad, 0, "round %d: a spilled page failed to verify", round);
            th_fill(want, pb, slot_seed[sl] - 1);
            cr_assert(memcmp(want, got, pb) == 0, "round %d: slot %u serves wrong bytes", round,
                      sl);
        }
        kv_spill_close(s);
        for (uint64_t i = 0; i < MAXSEED; i++) {
            if ((v->S[i] || v->W[i]) && !v->I[i])
                cr_assert(v->P[i], "round %d: page %lu written and kept, but lost", round,
                          (unsigned long)i);
            if (v->E[i])
                cr_assert(!v->P[i], "round %d: erased page %lu came back", round, (unsigned long)i);
        }
        memcpy(prev->P, v->P, MAXSEED);
        had_prev = 1;
    }
    free(v);
    free(prev);
    free(want);
    free(got);
    th_rmdir(dir);
}

Test(spill_crash, kill9_while_spilling_uring, .timeout = 120)
{
    crash_rounds(0);
}

Test(spill_crash, kill9_while_spilling_sync, .timeout = 120)
{
    crash_rounds(1);
}
