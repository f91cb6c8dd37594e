/*
 * kvshare.c - kvrun's pages in kvd's shared arena (see kvshare.h for the protocol and invariants).
 */
#include "kvshare.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kvshare_ns_name(const char *model_path, const struct kv_layout *lay, char *out, size_t cap)
{
    const char *b = strrchr(model_path, '/');
    char stem[40];
    size_t n = 0;

    b = b ? b + 1 : model_path;
    for (; *b && n < sizeof(stem) - 1; b++) {
        if (strcmp(b, ".gguf") == 0)
            break;
        stem[n++] = (isalnum((unsigned char)*b) || strchr("._:-", *b)) ? *b : '_';
    }
    stem[n] = 0;
    snprintf(out, cap, "%s.%s.p%u", n ? stem : "model", kv_fmt_name(lay->k_fmt), lay->page_tokens);
}

int kvshare_open(struct kvshare *s, const char *run_dir, const char *ns,
                 const struct kv_layout *lay, unsigned max_tokens)
{
    struct kvc_opts o = KVC_OPTS_INIT;
    int rc;

    memset(s, 0, sizeof(*s));
    s->max_pages = max_tokens / lay->page_tokens + 1;
    s->page_bytes = kv_page_bytes(lay);
    s->held = calloc(s->max_pages, sizeof(*s->held));
    s->chain = calloc(s->max_pages, sizeof(*s->chain));
    if (!s->held || !s->chain) {
        rc = -ENOMEM;
        goto err_free;
    }
    o.run_dir = run_dir;
    o.ns = ns;
    _Static_assert(sizeof(o.layout) == sizeof(*lay), "kvc_layout is kv_layout on the wire");
    memcpy(&o.layout, lay, sizeof(*lay));
    if ((rc = kvc_open(&o, &s->c)))
        goto err_free;
    return 0;
err_free:
    free(s->held);
    free(s->chain);
    memset(s, 0, sizeof(*s));
    return rc;
}

void kvshare_close(struct kvshare *s)
{
    if (s->c && s->n_held)
        kvc_release_pages(s->c, s->held, s->n_held);
    kvc_close(s->c);
    free(s->held);
    free(s->chain);
    memset(s, 0, sizeof(*s));
}

/* Pages [hit, hit + n) of the cache now come from kvd: point the cache at them, note the leases. */
static void adopt(struct kvshare *s, struct kvcache *c, const struct kvc_page *pg, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        kvcache_set_page(c, s->n_held, kvc_page_ptr(s->c, &pg[i]));
        s->held[s->n_held++] = pg[i];
    }
    c->n_pages = s->n_held;
    c->n_tokens = s->n_held * c->lay.page_tokens;
}

/* Compute pages [s->n_held, + n) into the arena pages fresh[0 .. n) and commit them in chunks. On
 * error the pages not yet committed are released. */
static int compute_pages(struct kvshare *s, const struct model *m, struct kvcache *c,
                         const int32_t *ids, struct kvc_page *fresh, unsigned n)
{
    const unsigned P = c->lay.page_tokens;
    struct kvc_commit ents[KVSHARE_CHUNK_PAGES];
    struct kvc_page got[KVSHARE_CHUNK_PAGES];
    unsigned done = 0;
    int rc = 0;

    while (done < n) {
        unsigned k = n - done < KVSHARE_CHUNK_PAGES ? n - done : KVSHARE_CHUNK_PAGES;
        unsigned first = s->n_held;
        for (unsigned i = 0; i < k; i++)
            kvcache_set_page(c, first + i, kvc_page_ptr(s->c, &fresh[done + i]));
        /* writes the pages in place, reading the earlier ones in stored form */
        rc = model_forward(m, c, ids + (size_t)first * P, k * P, NULL, 0);
        for (unsigned i = 0; !rc && i < k; i++) {
            unsigned b = first + i;
            ents[i] = (struct kvc_commit){
                .page_id = fresh[done + i].id, .ntok = (uint16_t)P, .hash = s->chain[b]};
            if (b > 0)
                ents[i].parent = s->chain[b - 1];
        }
        if (!rc)
            rc = kvc_commit(s->c, ents, k, got);
        if (rc) {
            for (unsigned i = 0; i < k; i++)
                kvcache_set_page(c, first + i, NULL);
            c->n_pages = first;
            c->n_tokens = first * P;
            kvc_release_pages(s->c, fresh + done, n - done);
            return rc;
        }
        c->n_pages = first; /* adopt() advances it over the committed pages */
        for (unsigned i = 0; i < k; i++)
            s->st.pages_dedup += (got[i].flags & KVC_PAGE_DEDUP) != 0;
        adopt(s, c, got, k);
        s->st.pages_computed += k;
        s->st.tokens_computed += k * P;
        done += k;
    }
    return 0;
}

int kvshare_prefill(struct kvshare *s, const struct model *m, struct kvcache *c, const int32_t *ids,
                    unsigned n, float *logits)
{
    const unsigned P = c->lay.page_tokens;
    unsigned n_cache, start;
    struct kvc_page *fresh = NULL;
    int rc;

    if (!s->c || n == 0 || c->n_tokens || n > c->max_tokens || s->n_held)
        return -EINVAL;
    n_cache = (n - 1) / P; /* invariant 1 */
    if (n_cache >= s->max_pages)
        return -EINVAL;
    fresh = calloc(n_cache + 1, sizeof(*fresh));
    if (!fresh)
        return -ENOMEM;
    rc = kvc_hash_chain(kvc_get_hasher(s->c), ids, (size_t)n_cache * P, NULL, s->chain, n_cache);
    if (rc < 0)
        goto err_release;
    while (s->n_held < n_cache) {
        uint32_t h = 0, next = 0, want, mine = 0;
        rc = kvc_lookup(s->c, s->chain + s->n_held, n_cache - s->n_held,
                        KVC_LOOKUP_PIN | KVC_LOOKUP_WAIT, KVSHARE_WAIT_MS, fresh, &h, &next);
        if (rc)
            goto err_release;
        s->st.pages_hit += h;
        s->st.tokens_skipped += h * P;
        adopt(s, c, fresh, h);
        if (s->n_held == n_cache)
            break;
        /* claim the rest; pages another worker is writing come back BUSY */
        want = n_cache - s->n_held;
        if ((rc = kvc_alloc(s->c, want, s->chain + s->n_held, fresh)))
            goto err_release;
        while (mine < want && !(fresh[mine].flags & KVC_PAGE_BUSY))
            mine++;
        if (mine < want && (rc = kvc_release_pages(s->c, fresh + mine, want - mine))) {
            kvc_release_pages(s->c, fresh, mine);
            goto err_release;
        }
        if (mine == 0) {
            s->st.busy_waits++;
            continue; /* another worker computes the next page: wait for it */
        }
        if ((rc = compute_pages(s, m, c, ids, fresh, mine)))
            goto err_release;
    }
    start = c->n_tokens;
    rc = model_forward(m, c, ids + start, n - start, logits, n - start - 1);
    if (rc)
        goto err_release;
    s->st.tokens_computed += n - start;
    free(fresh);
    return 0;
err_release:
    if (s->n_held)
        kvc_release_pages(s->c, s->held, s->n_held);
    s->n_held = 0;
    free(fresh);
    return rc;
}

int kvshare_publish(struct kvshare *s, struct kvcache *c, const int32_t *ids)
{
    const unsigned P = c->lay.page_tokens;
    unsigned from = s->n_held, n = c->n_pages, want, mine = 0;
    struct kvc_page *pg = NULL, *got = NULL;
    struct kvc_commit *ents = NULL;
    int rc;

    if (!s->c || n <= from)
        return 0;
    if (n > s->max_pages)
        return -EINVAL;
    want = n - from;
    pg = calloc(want, sizeof(*pg));
    got = calloc(want, sizeof(*got));
    ents = calloc(want, sizeof(*ents));
    rc = -ENOMEM;
    if (!pg || !got || !ents)
        goto out_free;
    /* extend the chain from the held prefix's last hash */
    rc = kvc_hash_chain(kvc_get_hasher(s->c), ids + (size_t)from * P, (size_t)want * P,
                        from ? &s->chain[from - 1] : NULL, s->chain + from, want);
    if (rc < 0)
        goto out_free;
    if ((rc = kvc_alloc(s->c, want, s->chain + from, pg)))
        goto out_free;
    while (mine < want && !(pg[mine].flags & KVC_PAGE_BUSY))
        mine++;
    if (mine < want && (rc = kvc_release_pages(s->c, pg + mine, want - mine))) {
        kvc_release_pages(s->c, pg, mine);
        goto out_free;
    }
    for (unsigned i = 0; i < mine; i++) {
        unsigned b = from + i;
        memcpy(kvc_page_ptr(s->c, &pg[i]), kvcache_page(c, b), s->page_bytes);
        ents[i] =
            (struct kvc_commit){.page_id = pg[i].id, .ntok = (uint16_t)P, .hash = s->chain[b]};
        if (b > 0)
            ents[i].parent = s->chain[b - 1];
    }
    rc = 0;
    if (mine && (rc = kvc_commit(s->c, ents, mine, got))) {
        kvc_release_pages(s->c, pg, mine);
        goto out_free;
    }
    unsigned keep_tokens = c->n_tokens; /* adopt() sets both from the held pages */
    adopt(s, c, got, mine);
    c->n_pages = n;
    c->n_tokens = keep_tokens;
    s->st.pages_published += mine;
out_free:
    free(pg);
    free(got);
    free(ents);
    return rc;
}

int kvshare_report_scores(struct kvshare *s, struct kvcache *c)
{
    const unsigned P = c->lay.page_tokens;
    struct kvc_score *ents;
    uint32_t n = 0;
    int rc = 0;

    if (!s->c)
        return 0;
    if (!c->scores || !s->n_held)
        return kvc_ping(s->c); /* still a sign of life (kvd's heartbeat) */
    ents = calloc(s->n_held, sizeof(*ents));
    if (!ents)
        return -ENOMEM;
    for (unsigned i = 0; i < s->n_held; i++) {
        const float *mass = c->scores + (size_t)i * P;
        unsigned t = 0;
        while (t < P && mass[t] == 0.0f)
            t++;
        if (t < P)
            ents[n++] =
                (struct kvc_score){.page_id = s->held[i].id, .ntok = (uint16_t)P, .mass = mass};
    }
    if (!n)
        rc = kvc_ping(s->c);
    else if ((rc = kvc_scores(s->c, ents, n)) == 0)
        s->st.score_reports++;
    memset(c->scores, 0, (size_t)c->max_tokens * sizeof(float));
    free(ents);
    return rc;
}
