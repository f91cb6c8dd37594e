/* kvctl_out.c - kvctl's output: aligned text tables, human units, hashes, json-c shorthands. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvctl.h"

struct kvctl_table {
    int ncols;
    char **headers;
    char **cells; /* nrows * ncols */
    size_t nrows, cap;
};

static char *dup_or_die(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) {
        fprintf(stderr, "kvctl: out of memory\n");
        exit(KVCTL_EFAIL);
    }
    return d;
}

struct kvctl_table *kvctl_table_new(int ncols, const char *const *headers)
{
    struct kvctl_table *t = calloc(1, sizeof(*t));
    if (!t || !(t->headers = calloc((size_t)ncols, sizeof(char *)))) {
        fprintf(stderr, "kvctl: out of memory\n");
        exit(KVCTL_EFAIL);
    }
    t->ncols = ncols;
    for (int i = 0; i < ncols; i++)
        t->headers[i] = dup_or_die(headers[i]);
    return t;
}

void kvctl_table_row(struct kvctl_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **n = realloc(t->cells, cap * (size_t)t->ncols * sizeof(char *));
        if (!n) {
            fprintf(stderr, "kvctl: out of memory\n");
            exit(KVCTL_EFAIL);
        }
        t->cells = n;
        t->cap = cap;
    }
    for (int i = 0; i < t->ncols; i++)
        t->cells[t->nrows * (size_t)t->ncols + (size_t)i] = dup_or_die(cells[i]);
    t->nrows++;
}

void kvctl_table_print(struct kvctl_table *t)
{
    size_t w[32] = {0};
    int nc = t->ncols < 32 ? t->ncols : 32;

    for (int c = 0; c < nc; c++) {
        const char *h = t->headers[c] + (t->headers[c][0] == '>');
        w[c] = strlen(h);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t l = strlen(t->cells[r * (size_t)t->ncols + (size_t)c]);
            if (l > w[c])
                w[c] = l;
        }
    }
    for (size_t r = 0; r <= t->nrows; r++) {
        for (int c = 0; c < nc; c++) {
            int right = t->headers[c][0] == '>';
            const char *s =
                r == 0 ? t->headers[c] + right : t->cells[(r - 1) * (size_t)t->ncols + (size_t)c];
            int last = c == nc - 1;
            if (right)
                printf("%*s%s", (int)w[c], s, last ? "" : "  ");
            else if (last)
                printf("%s", s);
            else
                printf("%-*s  ", (int)w[c], s);
        }
        printf("\n");
    }
}

void kvctl_table_free(struct kvctl_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    for (int i = 0; i < t->ncols; i++)
        free(t->headers[i]);
    free(t->cells);
    free(t->headers);
    free(t);
}

const char *kvctl_bytes(char *buf, size_t cap, uint64_t b)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%llu B", (unsigned long long)b);
    else
        snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

const char *kvctl_dur(char *buf, size_t cap, uint64_t ms)
{
    uint64_t s = ms / 1000;
    if (s < 60)
        snprintf(buf, cap, "%llu.%01llus", (unsigned long long)s,
                 (unsigned long long)(ms % 1000 / 100));
    else if (s < 3600)
        snprintf(buf, cap, "%llum%02llus", (unsigned long long)(s / 60),
                 (unsigned long long)(s % 60));
    else if (s < 86400)
        snprintf(buf, cap, "%lluh%02llum", (unsigned long long)(s / 3600),
                 (unsigned long long)(s % 3600 / 60));
    else
        snprintf(buf, cap, "%llud%02lluh", (unsigned long long)(s / 86400),
                 (unsigned long long)(s % 86400 / 3600));
    return buf;
}

const char *kvctl_hex(char *buf, const uint8_t *hash)
{
    for (int i = 0; i < KVP_HASH_BYTES; i++)
        snprintf(buf + 2 * i, 3, "%02x", hash[i]);
    return buf;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int kvctl_parse_hash(const char *s, uint8_t *hash)
{
    if (strlen(s) != 2 * KVP_HASH_BYTES)
        return -EINVAL;
    for (int i = 0; i < KVP_HASH_BYTES; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        hash[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

const char *kvctl_fmt(int fmt)
{
    const char *n = kv_fmt_name(fmt);
    return n ? n : "?";
}

const char *kvctl_tier(int tier)
{
    switch (tier) {
    case KVP_TIER_POOL:
        return "pool";
    case KVP_TIER_WRITING:
        return "writing";
    case KVP_TIER_SPILL:
        return "spill";
    default:
        return "?";
    }
}

void kvctl_jset(json_object *o, const char *key, json_object *v)
{
    json_object_object_add(o, key, v);
}

json_object *kvctl_ju(uint64_t v)
{
    return json_object_new_uint64(v);
}

json_object *kvctl_jstr(const char *s)
{
    return json_object_new_string(s ? s : "");
}

json_object *kvctl_jnum(double v)
{
    return isfinite(v) ? json_object_new_double(v) : NULL;
}

void kvctl_jprint(json_object *o)
{
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}
