/*
 * test_kvd.c - kvrun as a kvd worker, against a real kvd (tests/common/kvt) and real processes.
 *
 * For every storage format: a first process (`kvrun logits --kvd`) computes a 2.6-page prompt and
 * commits its full pages to kvd; then this process (a second one, the model loaded here) looks the
 * prompt up, gets both pages from kvd, prefills only the rest, and its next-token logits are
 * bit-identical (memcmp) to computing from scratch without kvd, as are the first process's.
 * The second process then decodes until its third page is full and publishes it: a new lookup
 * finds all three pages, the third holding the bytes it computed.
 * Also: three processes started together on one prompt compute each page once (kvd's commit
 * count), and kvrun without a reachable kvd says so and still answers.
 */
#include <sys/stat.h>

#include "kvshare.h"
#include "kvt.h"
#include "model_test.h"

static const int fmts[] = {KV_FMT_F16,  KV_FMT_BF16, KV_FMT_FP8_E4M3, KV_FMT_FP8_E5M2,
                           KV_FMT_INT8, KV_FMT_INT4, KV_FMT_KIVI4,    KV_FMT_KIVI2};

/* about 85 tokens: two full pages of 32 and a partial third */
static const char *prompt =
    "Shared prefixes are cached as pages: a worker that finds the pages of its system prompt in "
    "the cache skips their prefill, reads them in place from the arena, and computes only the "
    "tokens that follow. The daemon keeps one copy of each page, however many workers read it, "
    "and the logits do not change, which is";

static float *read_logits(const char *path, unsigned vocab)
{
    float *v = malloc(vocab * sizeof(float));
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "no logits file %s", path);
    cr_assert_eq(fread(v, sizeof(float), vocab, f), vocab, "short logits file %s", path);
    fclose(f);
    return v;
}

/* Runs `kvrun logits` on prompt with the given run dir (NULL: --no-kvd); returns its exit code. */
static int spawn_kvrun(struct kvt_proc *p, const char *run_dir, const char *fmt, const char *out)
{
    const char *argv[] = {KVRUN_BIN, "logits", "--format",
                          fmt,       "--text", prompt,
                          "--out",   out,      run_dir ? "--kvd" : "--no-kvd",
                          run_dir,   NULL};
    return kvt_spawn(p, argv);
}

Test(model_kvd, second_process_reuses_prefix_bit_identical_every_format, .timeout = 240)
{
    struct model m;
    struct kvt_kvd kvd = {0};
    mt_load(&m);
    cr_assert_eq(kvt_kvd_start(&kvd, NULL), 0, "kvd did not start");
    int32_t *ids;
    size_t n;
    cr_assert_eq(tok_encode(&m.tok, prompt, strlen(prompt), 1, &ids, &n), 0);
    cr_assert(n > 64 && n < 96, "prompt must span 2 full pages and a partial one (%zu)", n);
    float *lg = malloc(m.cfg.vocab * sizeof(float));
    for (size_t k = 0; k < sizeof(fmts) / sizeof(fmts[0]); k++) {
        const char *name = kv_fmt_name(fmts[k]);
        struct kv_layout lay = model_kv_layout(&m, fmts[k], 32, 32);
        struct kvcache c;
        char out[160];
        struct kvt_proc p;

        /* from scratch, no kvd, in this process */
        cr_assert_eq(kvcache_init(&c, &lay, (unsigned)n), 0);
        cr_assert_eq(model_forward(&m, &c, ids, (unsigned)n, lg, (unsigned)n - 1), 0);
        kvcache_free(&c);
        float *ref = malloc(m.cfg.vocab * sizeof(float));
        memcpy(ref, lg, m.cfg.vocab * sizeof(float));

        /* process 1 computes and commits */
        snprintf(out, sizeof(out), "%s/logits.%s", kvd.base, name);
        cr_assert_eq(spawn_kvrun(&p, kvd.run_dir, name, out), 0);
        int st = kvt_wait(&p, 120000);
        kvt_proc_free(&p);
        cr_assert_eq(st, 0, "%s: kvrun logits --kvd exited %d", name, st);
        float *first = read_logits(out, m.cfg.vocab);
        cr_assert_eq(memcmp(first, ref, m.cfg.vocab * sizeof(float)), 0,
                     "%s: logits of the computing process differ from no kvd", name);

        /* process 2 (this one) reuses the prefix */
        struct kvshare s;
        char ns[64];
        char path[4096];
        cr_assert_eq(model_find(NULL, path, sizeof(path)), 0);
        kvshare_ns_name(path, &lay, ns, sizeof(ns));
        cr_assert_eq(kvshare_open(&s, kvd.run_dir, ns, &lay, 128), 0, "%s: attach", name);
        cr_assert_eq(kvcache_init(&c, &lay, 128), 0);
        cr_assert_eq(kvcache_enable_scores(&c), 0);
        memset(lg, 0, m.cfg.vocab * sizeof(float));
        cr_assert_eq(kvshare_prefill(&s, &m, &c, ids, (unsigned)n, lg), 0, "%s: prefill", name);
        cr_assert_eq(s.st.pages_hit, 2, "%s: %u pages from kvd, 2 expected", name, s.st.pages_hit);
        cr_assert_eq(s.st.pages_computed, 0, "%s", name);
        cr_assert_eq(s.st.tokens_computed, n - 64, "%s", name);
        cr_assert(kvcache_page(&c, 0) != c.pages, "%s: page 0 is not read from the arena", name);
        cr_assert_eq(memcmp(lg, ref, m.cfg.vocab * sizeof(float)), 0,
                     "%s: logits after a kvd hit differ from computing from scratch", name);
        /* the suffix attended to the cached pages: mass reported to kvd in one batch */
        cr_assert_eq(kvshare_report_scores(&s, &c), 0);
        cr_assert_eq(s.st.score_reports, 1, "%s: no score report", name);
        /* decode until the third page is full, publish it: a new lookup finds all three */
        int32_t seq[128];
        memcpy(seq, ids, n * sizeof(*seq));
        while (c.n_tokens < 96) {
            int32_t next = 0;
            for (unsigned v = 1; v < m.cfg.vocab; v++)
                next = lg[v] > lg[next] ? (int32_t)v : next;
            seq[c.n_tokens] = next;
            cr_assert_eq(model_forward(&m, &c, &next, 1, lg, 0), 0);
        }
        cr_assert_eq(kvshare_publish(&s, &c, seq), 0, "%s: publish", name);
        cr_assert_eq(s.st.pages_published, 1, "%s: %u pages published", name, s.st.pages_published);
        struct kvc_hash ch[3];
        struct kvc_page got[3];
        uint32_t hit = 0, next_state = 0;
        cr_assert_eq(kvc_hash_chain(kvc_get_hasher(s.c), seq, 96, NULL, ch, 3), 3);
        cr_assert_eq(kvc_lookup(s.c, ch, 3, 0, 0, got, &hit, &next_state), 0);
        cr_assert_eq(hit, 3, "%s: %u of 3 pages found after publishing", name, hit);
        cr_assert_eq(memcmp(kvc_page_ptr(s.c, &got[2]), c.pages + 2 * c.page_bytes, c.page_bytes),
                     0, "%s: published page bytes differ", name);
        kvcache_free(&c);
        kvshare_close(&s);
        free(first);
        free(ref);
    }
    free(lg);
    free(ids);
    model_free(&m);
    kvt_kvd_cleanup(&kvd);
}

static int commits_at_least(const struct kvc_stats *s, void *arg)
{
    return s->commits >= *(uint64_t *)arg;
}

Test(model_kvd, workers_started_together_compute_each_page_once, .timeout = 240)
{
    struct model m;
    struct kvt_kvd kvd = {0};
    struct kvt_proc p[3];
    char out[3][160];
    mt_load(&m);
    cr_assert_eq(kvt_kvd_start(&kvd, NULL), 0, "kvd did not start");
    for (int i = 0; i < 3; i++) {
        snprintf(out[i], sizeof(out[i]), "%s/logits.%d", kvd.base, i);
        cr_assert_eq(spawn_kvrun(&p[i], kvd.run_dir, "int8", out[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        int st = kvt_wait(&p[i], 180000);
        kvt_proc_free(&p[i]);
        cr_assert_eq(st, 0, "worker %d exited %d", i, st);
    }
    float *a = read_logits(out[0], m.cfg.vocab);
    for (int i = 1; i < 3; i++) {
        float *b = read_logits(out[i], m.cfg.vocab);
        cr_assert_eq(memcmp(a, b, m.cfg.vocab * sizeof(float)), 0, "worker %d's logits differ", i);
        free(b);
    }
    struct kvc *c;
    struct kvc_stats st;
    uint64_t two = 2;
    cr_assert_eq(kvt_open(&kvd, "probe", &c), 0);
    cr_assert_eq(kvt_stats_until(c, commits_at_least, &two, 2000, &st), 0);
    /* 2 full pages in the prompt, each computed and committed by exactly one worker */
    cr_assert_eq(st.commits, 2, "pages committed %llu times: computed more than once",
                 (unsigned long long)st.commits);
    cr_assert_eq(st.commit_dedups, 0);
    cr_assert_eq(st.pages_committed, 2);
    kvc_close(c);
    free(a);
    model_free(&m);
    kvt_kvd_cleanup(&kvd);
}

Test(model_kvd, unreachable_kvd_runs_without_cache, .timeout = 120)
{
    struct model m;
    mt_load(&m);
    model_free(&m);
    char dir[] = "/tmp/kvrun-nokvd.XXXXXX", out[96], run[96];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(out, sizeof(out), "%s/logits", dir);
    snprintf(run, sizeof(run), "%s/no-such-run-dir", dir);
    struct kvt_proc p;
    cr_assert_eq(spawn_kvrun(&p, run, "fp8_e4m3", out), 0);
    int st = kvt_wait(&p, 120000);
    kvt_proc_free(&p);
    cr_assert_eq(st, 0, "kvrun failed without kvd (%d)", st);
    struct stat sb;
    cr_assert_eq(stat(out, &sb), 0);
    cr_assert_gt(sb.st_size, 0);
    unlink(out);
    rmdir(dir);
}
