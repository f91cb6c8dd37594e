/*
 * share.c - kvrun with kvd: attach/fallback, prefill through the cache, and `kvrun share`.
 *
 * `kvrun share` (the README's command 1): the parent loads the model once, then forks (before
 * any ZeroMQ context exists; each child attaches on its own) N worker processes that start
 * together, each answering its own question after one long shared system prompt, in SmolLM2's
 * chat template. The prompts differ only after the system block, so its full pages are computed
 * once (BUSY + LOOKUP WAIT) and read in place by everyone. Each worker decodes greedily,
 * reporting attention mass to kvd after the prefill and every SCORE_EVERY tokens, and publishes
 * the pages its answer completed. Then a fresh process continues conversation 0 (worker 0's
 * question and answer plus a follow-up) and finds it in kvd. The parent measures the cold time
 * to first token of the same prompts without kvd, and reads kvd's page counts for the report.
 */
#include "share.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SHARE_MAX_WORKERS 16
#define SHARE_MAX_GEN     64
#define SCORE_EVERY       8

int share_attach(struct kvshare *s, const char *run_dir, const char *model_path,
                 const struct kv_layout *lay, unsigned max_tokens)
{
    char ns[KVC_MAX_NS_NAME + 1];
    int rc;

    kvshare_ns_name(model_path, lay, ns, sizeof(ns));
    if ((rc = kvshare_open(s, run_dir, ns, lay, max_tokens)) == 0)
        return 1;
    fprintf(stderr, "kvrun: kvd at %s unreachable (%s): running without the shared cache\n",
            run_dir ? run_dir : "$KVD_RUN_DIR or /run/kvd", kvc_strerror(rc));
    return 0;
}

int share_prefill(struct kvshare *s, const struct model *m, struct kvcache *c, const int32_t *ids,
                  unsigned n, float *logits)
{
    int rc;

    if (s->c) {
        if ((rc = kvshare_prefill(s, m, c, ids, n, logits)) == 0)
            return 0;
        fprintf(stderr, "kvrun: kvd: %s: running without the shared cache\n", kvc_strerror(rc));
        kvshare_close(s);
        kvcache_reset(c);
    }
    return model_forward(m, c, ids, n, logits, n - 1);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int argmax(const float *v, unsigned n)
{
    int b = 0;
    for (unsigned i = 1; i < n; i++)
        if (v[i] > v[b])
            b = (int)i;
    return b;
}

struct conv { /* one conversation's outcome, in memory shared with the parent */
    int rc;
    unsigned prompt, skipped, computed, full_pages, dedup, waits, published, reports;
    double ttft_ms;
    unsigned n_gen;
    int32_t gen[SHARE_MAX_GEN];
};

/* One worker: prefill through kvd, greedy decode with score reports, publish. In a child. */
static int run_conv(const struct model *m, const struct share_opts *o, const struct kv_layout *lay,
                    const int32_t *ids, unsigned n, struct conv *r)
{
    struct kvshare s;
    struct kvcache c;
    int32_t *seq = malloc(((size_t)n + o->n_gen + 1) * sizeof(*seq));
    float *lg = malloc(m->cfg.vocab * sizeof(float));
    int rc = -ENOMEM;

    memset(&s, 0, sizeof(s));
    if (!seq || !lg || (rc = kvcache_init(&c, lay, n + o->n_gen + 1)))
        goto out_free;
    if ((rc = kvcache_enable_scores(&c)))
        goto out_cache;
    memcpy(seq, ids, n * sizeof(*seq));
    if (!share_attach(&s, o->run_dir, o->model_path, lay, n + o->n_gen + 1)) {
        rc = -ENOTCONN;
        goto out_cache;
    }
    double t0 = now_ms();
    if ((rc = share_prefill(&s, m, &c, ids, n, lg)))
        goto out_close;
    r->ttft_ms = now_ms() - t0;
    r->prompt = n;
    r->skipped = s.st.tokens_skipped;
    r->computed = s.st.tokens_computed ? s.st.tokens_computed : n;
    r->dedup = s.st.pages_dedup;
    r->waits = s.st.busy_waits;
    kvshare_report_scores(&s, &c);
    for (unsigned i = 0; i < o->n_gen && !rc; i++) {
        int32_t next = argmax(lg, m->cfg.vocab);
        r->gen[r->n_gen++] = next;
        seq[n + i] = next;
        if (next == m->tok.eos)
            break;
        rc = model_forward(m, &c, &next, 1, lg, 0);
        if (!rc && (i + 1) % SCORE_EVERY == 0)
            kvshare_report_scores(&s, &c);
    }
    kvshare_report_scores(&s, &c);
    if (!rc)
        rc = kvshare_publish(&s, &c, seq);
    r->full_pages = c.n_pages;
    r->published = s.st.pages_published;
    r->reports = s.st.score_reports;
out_close:
    kvshare_close(&s);
out_cache:
    kvcache_free(&c);
out_free:
    free(seq);
    free(lg);
    r->rc = rc;
    return rc;
}

/* Time to first token of ids without kvd (the parent, alone on the machine). */
static double cold_ttft(const struct model *m, const struct kv_layout *lay, const int32_t *ids,
                        unsigned n)
{
    struct kvcache c;
    float *lg = malloc(m->cfg.vocab * sizeof(float));
    double t = -1;

    if (lg && kvcache_init(&c, lay, n) == 0) {
        double t0 = now_ms();
        if (model_forward(m, &c, ids, n, lg, n - 1) == 0)
            t = now_ms() - t0;
        kvcache_free(&c);
    }
    free(lg);
    return t;
}

static int encode(const struct model *m, const char *a, const char *b, const char *c, int bos,
                  int32_t **ids, size_t *n)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *t = malloc(la + lb + lc + 1);
    int rc;

    if (!t)
        return -ENOMEM;
    memcpy(t, a, la);
    memcpy(t + la, b, lb);
    memcpy(t + la + lb, c, lc + 1);
    rc = tok_encode(&m->tok, t, la + lb + lc, bos, ids, n);
    free(t);
    return rc;
}

static void answer_text(const struct model *m, const struct conv *r, char *out, size_t cap)
{
    size_t o = 0;
    char piece[256];
    for (unsigned i = 0; i < r->n_gen && o + 1 < cap; i++) {
        if (r->gen[i] == m->tok.eos)
            break;
        int pl = tok_decode(&m->tok, r->gen[i], piece, sizeof(piece));
        for (int j = 0; j < pl && j < (int)sizeof(piece) && o + 1 < cap; j++)
            out[o++] = piece[j] == '\n' ? ' ' : piece[j];
    }
    out[o] = 0;
}

/* Fork one worker per conversation [from, to) and wait for all of them. */
static int run_workers(const struct model *m, const struct share_opts *o,
                       const struct kv_layout *lay, int32_t *const *ids, const size_t *n,
                       struct conv *res, unsigned from, unsigned to)
{
    int failed = 0;
    for (unsigned w = from; w < to; w++) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(run_conv(m, o, lay, ids[w], (unsigned)n[w], &res[w]) ? 1 : 0);
        if (pid < 0)
            return -errno;
    }
    for (unsigned w = from; w < to; w++) {
        int st;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
            failed++;
    }
    return failed ? -EIO : 0;
}

int share_demo(struct model *m, const struct share_opts *o)
{
    const unsigned N = o->workers, P = o->page_tokens;
    struct kv_layout lay = model_kv_layout(m, o->fmt, o->page_tokens, o->group);
    char *qs = strdup(o->questions), *q[SHARE_MAX_WORKERS + 2], *save = NULL, *sys = NULL;
    int32_t *ids[SHARE_MAX_WORKERS + 1] = {0}, *sys_ids = NULL;
    size_t n[SHARE_MAX_WORKERS + 1] = {0}, n_sys = 0;
    unsigned nq = 0;
    struct conv *res = MAP_FAILED;
    double cold0 = 0, coldN = 0, wall = 0, t0;
    int rc = -EINVAL;

    if (!qs || N < 1 || N > SHARE_MAX_WORKERS || o->n_gen > SHARE_MAX_GEN)
        goto out_free;
    for (char *t = strtok_r(qs, "\n", &save); t && nq < SHARE_MAX_WORKERS + 2;
         t = strtok_r(NULL, "\n", &save))
        if (*t)
            q[nq++] = t;
    if (nq < N + 1) {
        fprintf(stderr,
                "kvrun share: need %u questions (one per worker; the last line is the "
                "follow-up)\n",
                N + 1);
        goto out_free;
    }
    rc = -ENOMEM;
    sys = malloc(o->system_len + 64);
    res = mmap(NULL, sizeof(*res) * (N + 1), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
               0);
    if (!sys || res == MAP_FAILED)
        goto out_free;
    memset(res, 0, sizeof(*res) * (N + 1));
    snprintf(sys, o->system_len + 64, "<|im_start|>system\n%.*s<|im_end|>\n<|im_start|>user\n",
             (int)o->system_len, o->system);
    for (unsigned w = 0; w < N; w++)
        if ((rc = encode(m, sys, q[w], "<|im_end|>\n<|im_start|>assistant\n", 1, &ids[w], &n[w])))
            goto out_free;
    if ((rc = tok_encode(&m->tok, sys, strlen(sys), 1, &sys_ids, &n_sys)))
        goto out_free;
    printf("kvrun share: %u workers start together, each answers its own question after one "
           "shared system prompt of %zu tokens;\nKV in kvd as %s pages of %u tokens (%zu KiB); "
           "then a new worker continues worker 0's conversation.\n\n",
           N, n_sys, kv_fmt_name(o->fmt), P, kv_page_bytes(&lay) >> 10);
    fflush(stdout);
    cold0 = cold_ttft(m, &lay, ids[0], (unsigned)n[0]);
    t0 = now_ms();
    rc = run_workers(m, o, &lay, ids, n, res, 0, N);
    wall = now_ms() - t0;
    if (rc)
        goto out_report;
    /* conversation 0 goes on: its prompt, worker 0's answer, a follow-up question */
    {
        int32_t *tail;
        size_t nt;
        const struct conv *r0 = &res[0];
        int ended = r0->n_gen && r0->gen[r0->n_gen - 1] == m->tok.eos;
        if ((rc = encode(m, ended ? "\n" : "<|im_end|>\n", "<|im_start|>user\n", q[nq - 1], 0,
                         &tail, &nt)))
            goto out_report;
        int32_t *t2;
        size_t n2;
        rc = encode(m, "", "", "<|im_end|>\n<|im_start|>assistant\n", 0, &t2, &n2);
        size_t tot = n[0] + r0->n_gen + nt + (rc ? 0 : n2);
        ids[N] = rc ? NULL : malloc(tot * sizeof(int32_t));
        if (ids[N]) {
            memcpy(ids[N], ids[0], n[0] * sizeof(int32_t));
            memcpy(ids[N] + n[0], r0->gen, r0->n_gen * sizeof(int32_t));
            memcpy(ids[N] + n[0] + r0->n_gen, tail, nt * sizeof(int32_t));
            memcpy(ids[N] + n[0] + r0->n_gen + nt, t2, n2 * sizeof(int32_t));
            n[N] = tot;
        }
        free(tail);
        if (!rc)
            free(t2);
        if (!rc && !ids[N])
            rc = -ENOMEM;
        if (rc)
            goto out_report;
    }
    rc = run_workers(m, o, &lay, ids, n, res, N, N + 1);
    if (rc)
        goto out_report;
    coldN = cold_ttft(m, &lay, ids[N], (unsigned)n[N]);

out_report:;
    /* kvd's view, from a handle opened now that no more forks follow */
    struct kvshare s;
    struct kvc_stats ks = {0};
    int have_stats =
        share_attach(&s, o->run_dir, o->model_path, &lay, P) && kvc_stats(s.c, &ks) == 0;
    kvshare_close(&s);
    unsigned skipped = 0, computed = 0, prompt = 0, pages_sum = 0, reports = 0;
    char ans[56];
    printf("%-6s %-44.44s %6s %6s %8s %7s  %s\n", "worker", "question", "prompt", "cached",
           "computed", "TTFT ms", "answer (greedy)");
    for (unsigned w = 0; w <= N; w++) {
        const struct conv *r = &res[w];
        if (!r->prompt)
            continue;
        answer_text(m, r, ans, sizeof(ans));
        char qb[48];
        snprintf(qb, sizeof(qb), "%s%s", w == N ? "(0, follow-up) " : "",
                 w == N ? q[nq - 1] : q[w]);
        printf("%-6u %-44.44s %6u %6u %8u %7.0f  %s\n", w, qb, r->prompt, r->skipped, r->computed,
               r->ttft_ms, ans);
        skipped += r->skipped;
        computed += r->computed;
        prompt += r->prompt;
        pages_sum += r->full_pages;
        reports += r->reports;
    }
    if (rc) {
        fprintf(stderr, "kvrun share: a worker failed (%s)\n", strerror(-rc));
        goto out_free;
    }
    size_t pb = kv_page_bytes(&lay);
    printf("\nprefill tokens: %u computed, %u skipped (served from kvd) of %u: %.0f%% not "
           "recomputed\n",
           computed, skipped, prompt, 100.0 * skipped / prompt);
    printf("phase 1 (%u workers together): %.0f ms wall; time to first token without the cache "
           "(question 0, alone): %.0f ms\n",
           N, wall, cold0);
    printf("time to first token of the follow-up on another worker: %.0f ms from kvd vs %.0f ms "
           "without the cache (%.1fx)\n",
           res[N].ttft_ms, coldN, coldN / res[N].ttft_ms);
    if (have_stats)
        printf("KV bytes resident in kvd: %.1f MiB (%llu pages) vs %.1f MiB (%u pages) without "
               "sharing\n",
               (double)ks.pages_committed * pb / 1048576, (unsigned long long)ks.pages_committed,
               (double)pages_sum * pb / 1048576, pages_sum);
    printf("attention-mass reports sent to kvd: %u batches (%llu recorded by kvd)\n", reports,
           have_stats ? (unsigned long long)ks.score_reports : 0ull);
out_free:
    for (unsigned w = 0; w <= SHARE_MAX_WORKERS; w++)
        free(ids[w]);
    free(sys_ids);
    free(sys);
    free(qs);
    if (res != MAP_FAILED)
        munmap(res, sizeof(*res) * (N + 1));
    return rc;
}
