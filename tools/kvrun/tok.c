/*
 * tok.c - byte-level BPE (see tok.h).
 *
 * Invariants: vhash/mhash are power-of-two open-addressing tables at most half full, so a probe
 * always ends on an empty slot; every string they reference lies inside the GGUF buffer (checked
 * by gguf_parse). Merging works on one pre-tokenized piece at a time: symbols are [start, len)
 * spans of the piece's byte-level string, adjacent and covering it, at every step.
 */
#include "tok.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_unicode.h"

enum { CL_OTHER = 0, CL_SPACE, CL_LETTER, CL_NUMBER };

static uint32_t hash_bytes(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

/* Looks up p[0, n) in a table of 1-based indices into strs; returns the index or -1. */
static int64_t table_find(const uint32_t *tab, uint32_t mask, const struct gguf_str *strs,
                          const char *p, size_t n)
{
    for (uint32_t i = hash_bytes(p, n) & mask;; i = (i + 1) & mask) {
        uint32_t v = tab[i];
        if (!v)
            return -1;
        const struct gguf_str *s = &strs[v - 1];
        if (s->len == n && memcmp(s->p, p, n) == 0)
            return v - 1;
    }
}

/* Builds a table over strs[0, n); duplicates keep the first (lowest) index. */
static uint32_t *table_build(const struct gguf_str *strs, uint32_t n, uint32_t *mask)
{
    uint32_t size = 16;
    while (size < 2 * (uint64_t)n)
        size <<= 1;
    uint32_t *tab = calloc(size, sizeof(*tab));
    if (!tab)
        return NULL;
    *mask = size - 1;
    for (uint32_t k = 0; k < n; k++) {
        if (table_find(tab, *mask, strs, strs[k].p, strs[k].len) >= 0)
            continue;
        uint32_t i = hash_bytes(strs[k].p, strs[k].len) & *mask;
        while (tab[i])
            i = (i + 1) & *mask;
        tab[i] = k + 1;
    }
    return tab;
}

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0])
            hi = mid;
        else if (cp > r[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

static int cp_class(uint32_t cp)
{
    /* Unicode White_Space, the \s of the regex crates */
    if ((cp >= 9 && cp <= 13) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
        (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
        cp == 0x205f || cp == 0x3000)
        return CL_SPACE;
    if (in_ranges(tok_uni_letter, sizeof(tok_uni_letter) / sizeof(tok_uni_letter[0]), cp))
        return CL_LETTER;
    if (in_ranges(tok_uni_number, sizeof(tok_uni_number) / sizeof(tok_uni_number[0]), cp))
        return CL_NUMBER;
    return CL_OTHER;
}

/* Decodes one UTF-8 code point at s[0, n); returns its byte length (>= 1). Invalid or truncated
 * sequences give one byte and code point 0xFFFD (class other). */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xe0) == 0xc0)
        len = 2, v = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        len = 3, v = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        len = 4, v = c & 0x07, min = 0x10000;
    else
        goto bad;
    if (len > n)
        goto bad;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            goto bad;
        v = v << 6 | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        goto bad;
    *cp = v;
    return len;
bad:
    *cp = 0xfffd;
    return 1;
}

static size_t utf8_put(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xc0 | cp >> 6); /* stand-ins are < 0x800 */
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static void byte_map_init(struct tok *t)
{
    int n = 0;
    memset(t->cp_byte, 0xff, sizeof(t->cp_byte));
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        uint32_t cp = printable ? (uint32_t)b : 256u + n++;
        size_t l = utf8_put(cp, t->byte_utf8[b]);
        t->byte_utf8[b][2] = (char)l;
        t->cp_byte[cp] = (int16_t)b;
    }
}

void tok_free(struct tok *t)
{
    free(t->special);
    free(t->vhash);
    free(t->mhash);
    free(t->special_ids);
    memset(t, 0, sizeof(*t));
}

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err)
        snprintf(err, errlen, "tokenizer: %s", msg);
    return -EINVAL;
}

int tok_init(struct tok *t, const struct gguf *g, char *err, size_t errlen)
{
    const struct gguf_kv *toks, *types, *merges;
    struct gguf_str model;
    uint32_t v;
    int rc;

    memset(t, 0, sizeof(*t));
    if (gguf_get_str(g, "tokenizer.ggml.model", &model) || model.len != 4 ||
        memcmp(model.p, "gpt2", 4))
        return fail(err, errlen, "tokenizer.ggml.model is not \"gpt2\" (byte-level BPE)");
    toks = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_T_STR);
    types = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_T_I32);
    merges = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_T_STR);
    if (!toks || !merges)
        return fail(err, errlen, "tokenizer.ggml.tokens or .merges missing or not strings");
    if (toks->n == 0 || toks->n > TOK_MAX_VOCAB || merges->n > TOK_MAX_VOCAB)
        return fail(err, errlen, "vocabulary or merge count out of range");
    if (types && types->n != toks->n)
        return fail(err, errlen, "tokenizer.ggml.token_type length differs from the vocabulary");
    t->n_vocab = (uint32_t)toks->n;
    t->vocab = toks->strs;
    t->merges = merges->strs;
    t->n_merges = (uint32_t)merges->n;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if (t->vocab[i].len == 0 || t->vocab[i].len > TOK_MAX_TOKLEN)
            return fail(err, errlen, "a token string is empty or too long");
    for (uint32_t i = 0; i < t->n_merges; i++)
        if (!memchr(t->merges[i].p, ' ', t->merges[i].len))
            return fail(err, errlen, "a merge has no space separator");
    t->bos = t->eos = -1;
    if (gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v) == 0 && v < t->n_vocab)
        t->bos = (int32_t)v;
    if (gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v) == 0 && v < t->n_vocab)
        t->eos = (int32_t)v;
    if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos) != 0)
        t->add_bos = 0;
    t->add_bos = t->add_bos && t->bos >= 0;

    rc = -ENOMEM;
    t->special = calloc(t->n_vocab, 1);
    t->special_ids = calloc(t->n_vocab, sizeof(*t->special_ids));
    t->vhash = table_build(t->vocab, t->n_vocab, &t->vmask);
    t->mhash = table_build(t->merges, t->n_merges, &t->mmask);
    if (!t->special || !t->special_ids || !t->vhash || !t->mhash)
        goto err_free;
    for (uint32_t i = 0; types && i < t->n_vocab; i++) {
        int32_t ty = gguf_arr_i32(types, i);
        if (ty == 3 || ty == 4) { /* control, user-defined: matched literally in the text */
            t->special[i] = 1;
            t->special_ids[t->n_special++] = i;
        }
    }
    /* longest first (insertion sort: a handful of tokens) */
    for (uint32_t i = 1; i < t->n_special; i++)
        for (uint32_t j = i;
             j > 0 && t->vocab[t->special_ids[j]].len > t->vocab[t->special_ids[j - 1]].len; j--) {
            uint32_t x = t->special_ids[j];
            t->special_ids[j] = t->special_ids[j - 1];
            t->special_ids[j - 1] = x;
        }
    byte_map_init(t);
    return 0;

err_free:
    tok_free(t);
    return rc;
}

struct out {
    int32_t *ids;
    size_t n, cap;
};

static int out_push(struct out *o, int32_t id)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        int32_t *p = realloc(o->ids, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        o->ids = p;
        o->cap = cap;
    }
    o->ids[o->n++] = id;
    return 0;
}

struct sym {
    uint32_t start, len;
};

/* BPE of one piece: bytes s[0, n). */
static int bpe_piece(const struct tok *t, const uint8_t *s, size_t n, struct out *o)
{
    char *str = malloc(n * 2 + 1), *key = malloc(n * 2 + 2);
    struct sym *sy = malloc(n * sizeof(*sy));
    size_t len = 0, ns = n;
    int rc = -ENOMEM;

    if (!str || !key || !sy)
        goto out_free;
    for (size_t i = 0; i < n; i++) {
        size_t l = (size_t)t->byte_utf8[s[i]][2];
        memcpy(str + len, t->byte_utf8[s[i]], l);
        sy[i].start = (uint32_t)len;
        sy[i].len = (uint32_t)l;
        len += l;
    }
    while (ns > 1) {
        int64_t best = -1;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            size_t kl = sy[i].len + 1 + sy[i + 1].len;
            memcpy(key, str + sy[i].start, sy[i].len);
            key[sy[i].len] = ' ';
            memcpy(key + sy[i].len + 1, str + sy[i + 1].start, sy[i + 1].len);
            int64_t r = table_find(t->mhash, t->mmask, t->merges, key, kl);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                bi = i;
            }
        }
        if (best < 0)
            break;
        sy[bi].len += sy[bi + 1].len;
        memmove(&sy[bi + 1], &sy[bi + 2], (ns - bi - 2) * sizeof(*sy));
        ns--;
    }
    for (size_t i = 0; i < ns; i++) {
        int64_t id = table_find(t->vhash, t->vmask, t->vocab, str + sy[i].start, sy[i].len);
        if (id >= 0) {
            if ((rc = out_push(o, (int32_t)id)))
                goto out_free;
            continue;
        }
        /* no token for the merged symbol: fall back to its single bytes' tokens */
        for (uint32_t b = 0; b < sy[i].len;) {
            uint32_t cp;
            size_t l = utf8_next((const uint8_t *)str + sy[i].start + b, sy[i].len - b, &cp);
            id = table_find(t->vhash, t->vmask, t->vocab, str + sy[i].start + b, l);
            if (id >= 0 && (rc = out_push(o, (int32_t)id)))
                goto out_free;
            b += (uint32_t)l;
        }
    }
    rc = 0;
out_free:
    free(str);
    free(key);
    free(sy);
    return rc;
}

/* Length in code points of the regex match at cps[i] (cps[i, end) holds no \p{N} code point
 * after the digit split, but the rules are written in full). */
static size_t regex_match(const uint32_t *cps, const uint8_t *cls, size_t i, size_t end)
{
    uint32_t c = cps[i];
    size_t j;

    if (c == '\'' && i + 1 < end) {
        uint32_t a = cps[i + 1], b = i + 2 < end ? cps[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd')
            return 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
            return 3;
    }
    j = i;
    if (c == ' ' && i + 1 < end && cls[i + 1] != CL_SPACE)
        j = i + 1;
    if (cls[j] != CL_SPACE) {
        int k = cls[j];
        while (j < end && cls[j] == k)
            j++;
        return j - i;
    }
    for (j = i; j < end && cls[j] == CL_SPACE; j++)
        ;
    if (j == end || j - i == 1)
        return j - i;
    return j - i - 1;
}

static int encode_text(const struct tok *t, const uint8_t *s, size_t n, struct out *o)
{
    uint32_t *cps = malloc((n + 1) * sizeof(*cps));
    size_t *off = malloc((n + 1) * sizeof(*off));
    uint8_t *cls = malloc(n + 1);
    size_t m = 0;
    int rc = -ENOMEM;

    if (!cps || !off || !cls)
        goto out_free;
    for (size_t p = 0; p < n;) {
        off[m] = p;
        p += utf8_next(s + p, n - p, &cps[m]);
        cls[m] = (uint8_t)cp_class(cps[m]);
        m++;
    }
    off[m] = n;
    for (size_t i = 0; i < m;) {
        if (cls[i] == CL_NUMBER) { /* digits split: each number code point alone */
            if ((rc = bpe_piece(t, s + off[i], off[i + 1] - off[i], o)))
                goto out_free;
            i++;
            continue;
        }
        size_t end = i;
        while (end < m && cls[end] != CL_NUMBER)
            end++;
        while (i < end) {
            size_t l = regex_match(cps, cls, i, end);
            if ((rc = bpe_piece(t, s + off[i], off[i + l] - off[i], o)))
                goto out_free;
            i += l;
        }
    }
    rc = 0;
out_free:
    free(cps);
    free(off);
    free(cls);
    return rc;
}

int tok_encode(const struct tok *t, const char *text, size_t len, int add_bos, int32_t **ids,
               size_t *n)
{
    struct out o = {0};
    const uint8_t *s = (const uint8_t *)text;
    size_t seg = 0;
    int rc = 0;

    if (add_bos && t->add_bos && (rc = out_push(&o, t->bos)))
        goto err_free;
    for (size_t p = 0; p <= len; p++) {
        uint32_t hit = UINT32_MAX;
        for (uint32_t k = 0; p < len && k < t->n_special; k++) {
            const struct gguf_str *sp = &t->vocab[t->special_ids[k]];
            if (sp->len <= len - p && memcmp(s + p, sp->p, sp->len) == 0) {
                hit = t->special_ids[k];
                break;
            }
        }
        if (hit == UINT32_MAX && p < len)
            continue;
        if (p > seg && (rc = encode_text(t, s + seg, p - seg, &o)))
            goto err_free;
        if (hit != UINT32_MAX) {
            if ((rc = out_push(&o, (int32_t)hit)))
                goto err_free;
            p += t->vocab[hit].len - 1;
            seg = p + 1;
        }
    }
    if (!o.ids && (rc = out_push(&o, 0)) == 0)
        o.n = 0; /* empty text: a valid, empty allocation */
    if (rc)
        goto err_free;
    *ids = o.ids;
    *n = o.n;
    return 0;
err_free:
    free(o.ids);
    return rc;
}

int tok_decode(const struct tok *t, int32_t id, char *buf, size_t cap)
{
    const struct gguf_str *s;
    size_t n = 0;

    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return -EINVAL;
    s = &t->vocab[id];
    if (t->special[id]) {
        memcpy(buf, s->p, s->len < cap ? s->len : cap);
        return (int)s->len;
    }
    for (size_t p = 0; p < s->len;) {
        uint32_t cp;
        p += utf8_next((const uint8_t *)s->p + p, s->len - p, &cp);
        int b = cp < 512 ? t->cp_byte[cp] : -1;
        if (b < 0)
            continue; /* not a byte stand-in: cannot appear in a byte-level vocabulary */
        if (n < cap)
            buf[n] = (char)b;
        n++;
    }
    return (int)n;
}
