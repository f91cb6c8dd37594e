/*
 * kvdemo - several worker processes share one long prefix through kvd.
 *
 * Each worker is a real process with its own libkvclient handle. All of them start together on
 * the same "system prompt" followed by a question of their own. A worker hashes its full pages,
 * looks up the longest cached prefix (waiting on pages another worker is writing), "computes" the
 * KV of the pages it missed (a deterministic synthetic KV that depends on the whole prefix, so a
 * page's bytes are a function of its hash), quantizes it straight into arena pages in the
 * namespace's format, commits them, and then checks every page it got from the cache byte for byte
 * against what it would have computed. The parent prints what was shared.
 *
 * usage: kvdemo [--run-dir DIR] [--workers N] [--prefix-tokens T] [--question-tokens Q]
 *               [--format fp8_e4m3|...]
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_format.h"
#include "kv_quant.h"
#include "kvclient.h"

struct result { /* one per worker, in shared memory */
    int rc;
    uint32_t pages;    /* full pages in the worker's prompt */
    uint32_t hit;      /* pages found in the cache */
    uint32_t computed; /* pages it computed and committed */
    uint32_t dedup;    /* commits that found the page already there */
    uint32_t verified; /* cached pages whose bytes equal a local computation */
    double ms;         /* wall time of the worker's prefill */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Synthetic "model": K/V of a page as a function of its block hash (so of the whole prefix).
 * Keys get a few outlier channels, as real keys do. Costs real time, like a prefill would. */
static void compute_page(const struct kv_layout *l, const struct kvc_hash *h, float *k, float *v)
{
    uint64_t seed;
    memcpy(&seed, h->b, sizeof(seed));
    size_t n = (size_t)l->n_layers * l->page_tokens * l->n_kv_heads * l->head_dim;
    for (size_t i = 0; i < n; i++) {
        double u1 = (splitmix(&seed) >> 11) * 0x1.0p-53, u2 = (splitmix(&seed) >> 11) * 0x1.0p-53;
        double g = sqrt(-2 * log(u1 + 1e-300)) * cos(2 * M_PI * u2);
        unsigned ch = (unsigned)(i % l->head_dim);
        k[i] = (float)(g * (ch % 17 == 3 ? 8.0 : 1.0));
        v[i] = (float)(g * 0.5);
    }
}

static int quantize_page(const struct kv_layout *l, const struct kvc_hash *h, void *page, float *k,
                         float *v)
{
    compute_page(l, h, k, v);
    ptrdiff_t hd = l->head_dim, tok = (ptrdiff_t)l->n_kv_heads * hd;
    struct kv_src ks = {.base = k,
                        .dtype = KV_DT_F32,
                        .layer_stride = l->page_tokens * tok,
                        .tok_stride = tok,
                        .head_stride = hd};
    struct kv_src vs = ks;
    vs.base = v;
    return kv_quant_page(l, page, &ks, &vs, l->page_tokens);
}

static int worker(int id, const char *run_dir, const struct kv_layout *l, const int32_t *prompt,
                  size_t n_tokens, struct result *res)
{
    struct kvc_opts o = KVC_OPTS_INIT;
    struct kvc *c;
    int rc;
    double t0 = now_ms();

    o.run_dir = run_dir;
    o.ns = "kvdemo";
    memcpy(&o.layout, l, sizeof(*l));
    rc = kvc_open(&o, &c);
    if (rc) {
        fprintf(stderr, "worker %d: cannot attach to kvd at %s: %s\n", id, run_dir,
                kvc_strerror(rc));
        return rc;
    }
    uint32_t n = (uint32_t)(n_tokens / l->page_tokens);
    size_t page_bytes = kv_page_bytes(l);
    size_t nel = (size_t)l->n_layers * l->page_tokens * l->n_kv_heads * l->head_dim;
    struct kvc_hash *chain = calloc(n, sizeof(*chain));
    struct kvc_page *got = calloc(n, sizeof(*got)), *fresh = calloc(n, sizeof(*fresh));
    struct kvc_commit *ents = calloc(n, sizeof(*ents));
    float *k = malloc(nel * sizeof(float)), *v = malloc(nel * sizeof(float));
    uint8_t *mine = malloc(page_bytes);
    uint32_t hit = 0, next = 0;

    if (!chain || !got || !fresh || !ents || !k || !v || !mine) {
        rc = -ENOMEM;
        goto out;
    }
    kvc_hash_chain(kvc_get_hasher(c), prompt, n_tokens, NULL, chain, n);
    res->pages = n;
    while (hit < n) {
        uint32_t h = 0;
        /* the longest cached prefix, waiting on pages someone else is writing */
        rc = kvc_lookup(c, chain + hit, n - hit, KVC_LOOKUP_PIN | KVC_LOOKUP_WAIT, 5000, got + hit,
                        &h, &next);
        if (rc)
            goto out;
        res->hit += h;
        hit += h;
        if (hit == n)
            break;
        /* claim the rest: pages another worker already writes come back BUSY */
        uint32_t want = n - hit;
        rc = kvc_alloc(c, want, chain + hit, fresh);
        if (rc)
            goto out;
        uint32_t mine_n = 0;
        while (mine_n < want && !(fresh[mine_n].flags & KVC_PAGE_BUSY))
            mine_n++;
        if (mine_n < want)
            kvc_release_pages(c, fresh + mine_n, want - mine_n);
        if (mine_n == 0)
            continue; /* someone else computes the next page: wait for it */
        for (uint32_t i = 0; i < mine_n; i++) {
            uint32_t b = hit + i;
            rc = quantize_page(l, &chain[b], kvc_page_ptr(c, &fresh[i]), k, v);
            if (rc)
                goto out;
            ents[i] = (struct kvc_commit){
                .page_id = fresh[i].id, .ntok = l->page_tokens, .hash = chain[b]};
            if (b > 0)
                ents[i].parent = chain[b - 1];
        }
        rc = kvc_commit(c, ents, mine_n, got + hit);
        if (rc)
            goto out;
        for (uint32_t i = 0; i < mine_n; i++)
            res->dedup += (got[hit + i].flags & KVC_PAGE_DEDUP) != 0;
        res->computed += mine_n;
        hit += mine_n;
    }
    res->ms = now_ms() - t0;
    /* read the shared pages in place and check them against our own computation */
    for (uint32_t i = 0; i < n; i++) {
        quantize_page(l, &chain[i], mine, k, v);
        res->verified += memcmp(kvc_page_ptr(c, &got[i]), mine, page_bytes) == 0;
    }
    kvc_release_pages(c, got, n);
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "worker %d: %s\n", id, kvc_strerror(rc));
    kvc_close(c);
    free(chain);
    free(got);
    free(fresh);
    free(ents);
    free(k);
    free(v);
    free(mine);
    return rc;
}

int main(int argc, char **argv)
{
    const char *run_dir = getenv("KVD_RUN_DIR");
    int workers = 4;
    size_t prefix = 1024, question = 48;
    const char *fmt = "fp8_e4m3";
    static const struct option opts[] = {
        {"run-dir", required_argument, 0, 'r'},
        {"workers", required_argument, 0, 'w'},
        {"prefix-tokens", required_argument, 0, 'p'},
        {"question-tokens", required_argument, 0, 'q'},
        {"format", required_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "r:w:p:q:f:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'r':
            run_dir = optarg;
            break;
        case 'w':
            workers = atoi(optarg);
            break;
        case 'p':
            prefix = strtoul(optarg, NULL, 10);
            break;
        case 'q':
            question = strtoul(optarg, NULL, 10);
            break;
        case 'f':
            fmt = optarg;
            break;
        default:
            fprintf(stderr, "usage: kvdemo [--run-dir DIR] [--workers N] [--prefix-tokens T] "
                            "[--question-tokens Q] [--format NAME]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    int f = kv_fmt_parse(fmt);
    if (workers < 1 || workers > 64 || f < 0 || prefix < 16 || prefix > 32768 || question > 4096) {
        fprintf(stderr,
                "kvdemo: bad arguments (workers 1..64, prefix 16..32768, a known format)\n");
        return 2;
    }
    /* the reference model's geometry: 30 layers, 3 KV heads of 64 channels, 16-token pages */
    struct kv_layout l = {.n_layers = 30,
                          .n_kv_heads = 3,
                          .head_dim = 64,
                          .page_tokens = 16,
                          .k_fmt = (uint8_t)f,
                          .v_fmt = (uint8_t)f,
                          .group = (f == KV_FMT_KIVI2 || f == KV_FMT_KIVI4) ? 16 : 0};
    struct result *res = mmap(NULL, sizeof(*res) * (size_t)workers, PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (res == MAP_FAILED)
        return 1;
    size_t n_tokens = prefix + question;
    int32_t *prompt = malloc(n_tokens * sizeof(int32_t) * (size_t)workers);
    for (int w = 0; w < workers; w++) {
        uint64_t s = 42; /* the shared system prompt */
        for (size_t i = 0; i < prefix; i++)
            prompt[(size_t)w * n_tokens + i] = (int32_t)(splitmix(&s) % 49152);
        s = 1000 + (uint64_t)w; /* this worker's question */
        for (size_t i = prefix; i < n_tokens; i++)
            prompt[(size_t)w * n_tokens + i] = (int32_t)(splitmix(&s) % 49152);
    }
    printf("kvdemo: %d workers, shared prefix %zu tokens + %zu-token questions, %s pages of %zu "
           "KiB (30 layers x 3 KV heads x 64, 16 tokens)\n",
           workers, prefix, question, fmt, kv_page_bytes(&l) >> 10);
    /* fork before any ZeroMQ context exists: each worker makes its own */
    for (int w = 0; w < workers; w++) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(worker(w, run_dir, &l, prompt + (size_t)w * n_tokens, n_tokens, &res[w]) ? 1 : 0);
        if (pid < 0)
            return 1;
    }
    int failed = 0;
    for (int w = 0; w < workers; w++) {
        int st;
        wait(&st);
        failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    uint32_t pages = 0, hit = 0, computed = 0, verified = 0, dedup = 0;
    printf("\n%-8s %8s %8s %9s %9s %10s\n", "worker", "pages", "cached", "computed", "verified",
           "prefill ms");
    for (int w = 0; w < workers; w++) {
        printf("%-8d %8u %8u %9u %9u %10.1f\n", w, res[w].pages, res[w].hit, res[w].computed,
               res[w].verified, res[w].ms);
        pages += res[w].pages;
        hit += res[w].hit;
        computed += res[w].computed;
        verified += res[w].verified;
        dedup += res[w].dedup;
    }
    size_t pb = kv_page_bytes(&l);
    printf(
        "\npages needed %u, computed %u, served from the cache %u (%.0f%%), dedup at commit %u\n",
        pages, computed, hit, pages ? 100.0 * hit / pages : 0.0, dedup);
    printf("KV bytes resident %.1f MiB vs %.1f MiB without sharing; %.1f MiB saved\n",
           (double)(pages - hit) * pb / 1048576, (double)pages * pb / 1048576,
           (double)hit * pb / 1048576);
    printf("cached pages read in place and byte-identical to a local computation: %u of %u\n",
           verified, pages);
    if (failed || verified != pages) {
        fprintf(stderr, "kvdemo: FAILED (%d workers failed)\n", failed);
        return 1;
    }
    return 0;
}
