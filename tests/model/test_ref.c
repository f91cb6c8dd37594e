/*
 * test_ref.c - kvrun's C forward pass against the independent Python reference (ref.py: gguf's
 * dequantizer, numpy in float64, no KV cache): logits of three fixed prompts, and greedy
 * generation, with the F16 page format (ref.py rounds stored positions to float16 the same way).
 *
 * Tolerance, derived: kvrun computes in f32 (unit roundoff u = 2^-24 = 6.0e-8), the reference in
 * float64 (exact by comparison). A dot product of K <= 1536 terms summed in 8 lanes has a
 * rounding error that behaves like a random walk of K/8 + 3 steps: ~sqrt(195) u = 8.3e-7 of its
 * magnitude. The residual stream passes ~60 blocks of ~4 such stages (240 stages), again adding
 * like a random walk: sqrt(240) * 8.3e-7 = 1.3e-5 relative. On logits of magnitude <= 20 that is
 * 2.6e-4; the tolerance takes 4x that for error amplification through the softmax and norms:
 * max |logit_C - logit_ref| <= 1e-3. Measured: 1.7e-5 (fifty times inside).
 * Greedy generation must give the same ids; that comparison only means something where the
 * reference's top-two margin exceeds the tolerance, which the test checks and reports.
 */
#include <math.h>

#include "model_test.h"

#define TOL   1e-3f
#define PAGE  32
#define N_GEN 12

static const char *prompts[3] = {
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n"
    "        return n\n    return",
    "In 1905, Albert Einstein published four papers that changed physics: the photoelectric "
    "effect, Brownian motion, special relativity, and the equivalence of mass and energy. The "
    "most famous equation from these papers is",
};

static int argmax(const float *v, unsigned n)
{
    int b = 0;
    for (unsigned i = 1; i < n; i++)
        if (v[i] > v[b])
            b = (int)i;
    return b;
}

Test(model_ref, logits_and_greedy_match_python, .timeout = 240)
{
    struct model m;
    mt_load(&m);
    const unsigned V = m.cfg.vocab;
    struct kv_layout lay = model_kv_layout(&m, KV_FMT_F16, PAGE, 0);
    char dir[] = "/tmp/kvrun_ref_XXXXXX", out_path[256], args[16384], *ids_s[3], *ref_out;
    int32_t *ids[3];
    size_t n[3];
    float *c_logits = malloc((size_t)3 * V * sizeof(float));

    cr_assert_not_null(mkdtemp(dir));
    snprintf(out_path, sizeof(out_path), "%s/ref.f32", dir);
    for (int p = 0; p < 3; p++) {
        struct kvcache c;
        cr_assert_eq(tok_encode(&m.tok, prompts[p], strlen(prompts[p]), 1, &ids[p], &n[p]), 0);
        ids_s[p] = mt_ids_str(ids[p], n[p]);
        cr_assert_eq(kvcache_init(&c, &lay, (unsigned)n[p] + N_GEN), 0);
        cr_assert_eq(model_forward(&m, &c, ids[p], (unsigned)n[p], c_logits + (size_t)p * V,
                                   (unsigned)n[p] - 1),
                     0);
        kvcache_free(&c);
    }
    cr_assert_gt(n[2], PAGE, "prompt 3 must cross a page boundary (%zu tokens)", n[2]);
    /* greedy generation in C from prompt 2 (crosses a page while decoding) */
    int32_t gen[N_GEN], tokv;
    {
        struct kvcache c;
        float *lg = malloc(V * sizeof(float));
        cr_assert_eq(kvcache_init(&c, &lay, (unsigned)n[1] + N_GEN), 0);
        cr_assert_eq(model_forward(&m, &c, ids[1], (unsigned)n[1], lg, (unsigned)n[1] - 1), 0);
        for (int i = 0; i < N_GEN; i++) {
            gen[i] = tokv = argmax(lg, V);
            cr_assert_eq(model_forward(&m, &c, &tokv, 1, lg, 0), 0);
        }
        cr_assert_gt(c.n_pages, 0);
        kvcache_free(&c);
        free(lg);
    }
    snprintf(args, sizeof(args), "logits --f16-pages %d --gen %d --out '%s' --ids '%s,%s,%s'", PAGE,
             N_GEN, out_path, ids_s[1], ids_s[0], ids_s[2]);
    mt_ref(args, &ref_out);

    float *r = malloc((size_t)3 * V * sizeof(float));
    FILE *f = fopen(out_path, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(r, sizeof(float), (size_t)3 * V, f), (size_t)3 * V);
    fclose(f);
    const int order[3] = {1, 0, 2}; /* ref.py got prompt 2 first (the generation prompt) */
    for (int k = 0; k < 3; k++) {
        const float *a = c_logits + (size_t)order[k] * V, *b = r + (size_t)k * V;
        float worst = 0;
        for (unsigned i = 0; i < V; i++)
            worst = fmaxf(worst, fabsf(a[i] - b[i]));
        cr_log_info("prompt %d (%zu tokens): max |C - ref| = %.3g", order[k] + 1, n[order[k]],
                    worst);
        cr_assert_leq(worst, TOL, "prompt %d: logits differ by %g > %g", order[k] + 1, worst, TOL);
        cr_assert_eq(argmax(a, V), argmax(b, V));
    }
    /* ref_out: greedy ids line, then the smallest top-2 margin */
    char *line2 = strchr(ref_out, '\n');
    cr_assert_not_null(line2);
    *line2++ = 0;
    char *c_gen = mt_ids_str(gen, N_GEN);
    double margin = atof(line2);
    cr_log_info("greedy %d tokens: C [%s] ref [%s], smallest top-2 margin %.4f", N_GEN, c_gen,
                ref_out, margin);
    cr_assert_gt(margin, TOL, "prompt has a top-2 margin %.4g below the tolerance: pick another",
                 margin);
    cr_assert_str_eq(c_gen, ref_out);

    for (int p = 0; p < 3; p++) {
        free(ids[p]);
        free(ids_s[p]);
    }
    free(c_gen);
    free(ref_out);
    free(r);
    free(c_logits);
    unlink(out_path);
    rmdir(dir);
    model_free(&m);
}
