/*
 * gguf.c - GGUF v3 parsing with every count, length and offset checked (see gguf.h).
 *
 * Invariants kept by the parser (a cursor over buf[0, len)):
 *   1. a read of n bytes happens only after rd_need() has checked pos + n <= len without overflow;
 *   2. an allocation sized by a count happens only after the count is checked against its named
 *      limit and against the bytes left (each element takes at least one byte on disk);
 *   3. tensor data: offset aligned, offset + n_bytes <= len - data_off, n_elements a multiple of
 *      the type's block size and ne[0] too (rows are whole blocks).
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct rd {
    const uint8_t *buf;
    size_t len, pos;
    char *err;
    size_t errlen;
};

static int rd_fail(struct rd *r, const char *fmt, ...)
{
    if (r->err && r->errlen) {
        int n = snprintf(r->err, r->errlen, "gguf: ");
        va_list ap;
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < r->errlen)
            vsnprintf(r->err + n, r->errlen - n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static int rd_need(struct rd *r, uint64_t n, const char *what)
{
    if (n > r->len - r->pos)
        return rd_fail(r, "truncated file: %s needs %llu bytes at offset %zu, file has %zu", what,
                       (unsigned long long)n, r->pos, r->len);
    return 0;
}

static int rd_u32(struct rd *r, uint32_t *v, const char *what)
{
    int rc = rd_need(r, 4, what);
    if (rc)
        return rc;
    memcpy(v, r->buf + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(struct rd *r, uint64_t *v, const char *what)
{
    int rc = rd_need(r, 8, what);
    if (rc)
        return rc;
    memcpy(v, r->buf + r->pos, 8);
    r->pos += 8;
    return 0;
}

static int rd_str(struct rd *r, struct gguf_str *s, const char *what)
{
    uint64_t n;
    int rc = rd_u64(r, &n, what);
    if (rc)
        return rc;
    if (n > GGUF_MAX_STR)
        return rd_fail(r, "%s: string length %llu at offset %zu exceeds the limit %u", what,
                       (unsigned long long)n, r->pos - 8, GGUF_MAX_STR);
    rc = rd_need(r, n, what);
    if (rc)
        return rc;
    s->p = (const char *)r->buf + r->pos;
    s->len = (uint32_t)n;
    r->pos += n;
    return 0;
}

/* On-disk size of a fixed-size scalar type, 0 for STR/ARR/unknown. */
static unsigned vtype_size(uint32_t t)
{
    switch (t) {
    case GGUF_T_U8:
    case GGUF_T_I8:
    case GGUF_T_BOOL:
        return 1;
    case GGUF_T_U16:
    case GGUF_T_I16:
        return 2;
    case GGUF_T_U32:
    case GGUF_T_I32:
    case GGUF_T_F32:
        return 4;
    case GGUF_T_U64:
    case GGUF_T_I64:
    case GGUF_T_F64:
        return 8;
    default:
        return 0;
    }
}

static int rd_value(struct rd *r, struct gguf_kv *kv)
{
    int rc;
    unsigned sz;

    kv->val = r->buf + r->pos;
    kv->n = 1;
    if (kv->type == GGUF_T_STR) {
        kv->strs = calloc(1, sizeof(*kv->strs));
        if (!kv->strs)
            return -ENOMEM;
        return rd_str(r, kv->strs, "string value");
    }
    if (kv->type == GGUF_T_ARR) {
        if ((rc = rd_u32(r, &kv->arr_type, "array type")) ||
            (rc = rd_u64(r, &kv->n, "array length")))
            return rc;
        kv->val = r->buf + r->pos;
        if (kv->n > GGUF_MAX_ARR || kv->n > r->len - r->pos)
            return rd_fail(r, "array length %llu at offset %zu exceeds the limit or the file",
                           (unsigned long long)kv->n, r->pos - 8);
        if (kv->arr_type == GGUF_T_STR) {
            /* invariant 2: each string takes >= 8 bytes, n <= bytes left was checked */
            kv->strs = calloc(kv->n ? kv->n : 1, sizeof(*kv->strs));
            if (!kv->strs)
                return -ENOMEM;
            for (uint64_t i = 0; i < kv->n; i++)
                if ((rc = rd_str(r, &kv->strs[i], "array string")))
                    return rc;
            return 0;
        }
        sz = vtype_size(kv->arr_type);
        if (!sz)
            return rd_fail(r, "unsupported array element type %u at offset %zu", kv->arr_type,
                           r->pos - 12);
        if ((rc = rd_need(r, kv->n * sz, "array data")))
            return rc;
        r->pos += kv->n * sz;
        return 0;
    }
    sz = vtype_size(kv->type);
    if (!sz)
        return rd_fail(r, "unknown value type %u at offset %zu", kv->type, r->pos - 4);
    if ((rc = rd_need(r, sz, "scalar value")))
        return rc;
    r->pos += sz;
    return 0;
}

static const struct {
    const char *name;
    unsigned block, bytes;
} ttypes[] = {
    [GGUF_TT_F32] = {"f32", 1, 4},     [GGUF_TT_F16] = {"f16", 1, 2},
    [GGUF_TT_Q4_0] = {"q4_0", 32, 18}, [GGUF_TT_Q4_1] = {"q4_1", 32, 20},
    [GGUF_TT_Q8_0] = {"q8_0", 32, 34},
};
#define N_TTYPES (sizeof(ttypes) / sizeof(ttypes[0]))

unsigned gguf_type_block(uint32_t type)
{
    return type < N_TTYPES ? ttypes[type].block : 0;
}

const char *gguf_type_name(uint32_t type)
{
    return type < N_TTYPES && ttypes[type].name ? ttypes[type].name : "?";
}

uint64_t gguf_type_bytes(uint32_t type, uint64_t n)
{
    unsigned b = gguf_type_block(type);
    if (!b || n % b)
        return 0;
    return n / b * ttypes[type].bytes; /* n <= GGUF_MAX_ELEMENTS: no overflow */
}

static int rd_tensor(struct rd *r, struct gguf_tensor *t, uint64_t idx)
{
    int rc;
    uint64_t n = 1;

    if ((rc = rd_str(r, &t->name, "tensor name")) || (rc = rd_u32(r, &t->n_dims, "tensor dims")))
        return rc;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return rd_fail(r, "tensor %llu (%.*s): %u dimensions (1..%d allowed)",
                       (unsigned long long)idx, (int)t->name.len, t->name.p, t->n_dims,
                       GGUF_MAX_DIMS);
    for (unsigned d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims && (rc = rd_u64(r, &t->ne[d], "tensor shape")))
            return rc;
        if (t->ne[d] == 0 || t->ne[d] > GGUF_MAX_ELEMENTS || n > GGUF_MAX_ELEMENTS / t->ne[d])
            return rd_fail(r, "tensor %llu (%.*s): dimension %u = %llu is zero or too large",
                           (unsigned long long)idx, (int)t->name.len, t->name.p, d,
                           (unsigned long long)t->ne[d]);
        n *= t->ne[d];
    }
    t->n_elements = n;
    if ((rc = rd_u32(r, &t->type, "tensor type")) || (rc = rd_u64(r, &t->offset, "tensor offset")))
        return rc;
    unsigned blk = gguf_type_block(t->type);
    if (!blk)
        return rd_fail(r, "tensor %llu (%.*s): unsupported tensor type %u", (unsigned long long)idx,
                       (int)t->name.len, t->name.p, t->type);
    if (t->ne[0] % blk)
        return rd_fail(r,
                       "tensor %llu (%.*s): row length %llu is not a multiple of the %s block %u",
                       (unsigned long long)idx, (int)t->name.len, t->name.p,
                       (unsigned long long)t->ne[0], gguf_type_name(t->type), blk);
    t->n_bytes = gguf_type_bytes(t->type, n);
    return 0;
}

void gguf_close(struct gguf *g)
{
    if (g->kv) {
        for (uint64_t i = 0; i < g->n_kv; i++)
            free(g->kv[i].strs);
        free(g->kv);
    }
    free(g->tensors);
    if (g->mapped && g->buf)
        munmap((void *)g->buf, g->len);
    memset(g, 0, sizeof(*g));
}

int gguf_parse(struct gguf *g, const void *buf, size_t len, char *err, size_t errlen)
{
    struct rd r = {.buf = buf, .len = len, .err = err, .errlen = errlen};
    uint32_t magic;
    int rc;

    memset(g, 0, sizeof(*g));
    g->buf = buf;
    g->len = len;
    if (err && errlen)
        err[0] = 0;
    if ((rc = rd_u32(&r, &magic, "magic")))
        goto err_free;
    if (magic != GGUF_MAGIC) {
        rc = rd_fail(&r, "not a GGUF file (bad magic 0x%08x)", magic);
        goto err_free;
    }
    if ((rc = rd_u32(&r, &g->version, "version")))
        goto err_free;
    if (g->version != 3 && g->version != 2) {
        rc = rd_fail(&r, "unsupported GGUF version %u (2 or 3 expected)", g->version);
        goto err_free;
    }
    if ((rc = rd_u64(&r, &g->n_tensors, "tensor count")) ||
        (rc = rd_u64(&r, &g->n_kv, "metadata count")))
        goto err_free;
    /* invariant 2: a kv takes >= 12 bytes, a tensor info >= 24 */
    if (g->n_tensors > GGUF_MAX_TENSORS || g->n_kv > GGUF_MAX_KV) {
        rc = rd_fail(&r, "tensor count %llu or metadata count %llu exceeds the limit (%u, %u)",
                     (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv,
                     GGUF_MAX_TENSORS, GGUF_MAX_KV);
        g->n_tensors = g->n_kv = 0;
        goto err_free;
    }
    if (g->n_tensors > (len - r.pos) / 24 || g->n_kv > (len - r.pos) / 12) {
        rc = rd_fail(&r,
                     "truncated file: %llu tensors and %llu metadata entries cannot fit in the "
                     "%zu bytes left",
                     (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv, len - r.pos);
        g->n_tensors = g->n_kv = 0;
        goto err_free;
    }
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof(*g->kv));
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof(*g->tensors));
    if (!g->kv || !g->tensors) {
        rc = -ENOMEM;
        goto err_free;
    }
    g->alignment = 32;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        struct gguf_kv *kv = &g->kv[i];
        if ((rc = rd_str(&r, &kv->key, "metadata key")) ||
            (rc = rd_u32(&r, &kv->type, "metadata type")) || (rc = rd_value(&r, kv)))
            goto err_free;
        if (kv->key.len == 17 && memcmp(kv->key.p, "general.alignment", 17) == 0) {
            uint32_t a;
            if (kv->type != GGUF_T_U32) {
                rc = rd_fail(&r, "general.alignment has type %u, u32 expected", kv->type);
                goto err_free;
            }
            memcpy(&a, kv->val, 4);
            if (a == 0 || a > GGUF_MAX_ALIGN || (a & (a - 1))) {
                rc = rd_fail(&r, "general.alignment %u is not a power of two <= %u", a,
                             GGUF_MAX_ALIGN);
                goto err_free;
            }
            g->alignment = a;
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if ((rc = rd_tensor(&r, &g->tensors[i], i)))
            goto err_free;
    g->data_off = (r.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->data_off > len && g->n_tensors) {
        rc = rd_fail(&r, "truncated file: data section at %zu is past the end (%zu)", g->data_off,
                     len);
        goto err_free;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];
        size_t room = len - g->data_off;
        if (t->offset % g->alignment || t->offset > room || t->n_bytes > room - t->offset) {
            rc = rd_fail(&r,
                         "tensor %llu (%.*s): data [%llu, +%llu) is misaligned or past the end of "
                         "the file (data section holds %zu bytes)",
                         (unsigned long long)i, (int)t->name.len, t->name.p,
                         (unsigned long long)t->offset, (unsigned long long)t->n_bytes, room);
            goto err_free;
        }
        t->data = g->buf + g->data_off + t->offset;
    }
    return 0;

err_free:
    g->mapped = 0;
    gguf_close(g);
    return rc;
}

int gguf_open(struct gguf *g, const char *path, char *err, size_t errlen)
{
    struct stat st;
    void *p;
    int fd, rc;

    memset(g, 0, sizeof(*g));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        if (err)
            snprintf(err, errlen, "gguf: cannot open %s: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        if (err)
            snprintf(err, errlen, "gguf: cannot stat %s: %s", path, strerror(-rc));
        goto out_close;
    }
    if (st.st_size == 0) {
        rc = -EINVAL;
        if (err)
            snprintf(err, errlen, "gguf: %s is empty", path);
        goto out_close;
    }
    p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        if (err)
            snprintf(err, errlen, "gguf: cannot map %s: %s", path, strerror(-rc));
        goto out_close;
    }
    rc = gguf_parse(g, p, st.st_size, err, errlen);
    if (rc) {
        munmap(p, st.st_size);
        goto out_close;
    }
    g->mapped = 1;
out_close:
    close(fd);
    return rc;
}

static int str_eq(const struct gguf_str *s, const char *c)
{
    size_t n = strlen(c);
    return s->len == n && memcmp(s->p, c, n) == 0;
}

const struct gguf_kv *gguf_find_kv(const struct gguf *g, const char *key)
{
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (str_eq(&g->kv[i].key, key))
            return &g->kv[i];
    return NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name)
{
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (str_eq(&g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

/* Integer value of a scalar kv as int64 (u64 above INT64_MAX rejected). */
static int kv_int(const struct gguf_kv *kv, int64_t *out)
{
    const uint8_t *v = kv->val;
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
    } u;
    memcpy(&u, v, vtype_size(kv->type) ? vtype_size(kv->type) : 1);
    switch (kv->type) {
    case GGUF_T_U8:
        *out = u.u8;
        return 0;
    case GGUF_T_I8:
        *out = u.i8;
        return 0;
    case GGUF_T_U16:
        *out = u.u16;
        return 0;
    case GGUF_T_I16:
        *out = u.i16;
        return 0;
    case GGUF_T_U32:
        *out = u.u32;
        return 0;
    case GGUF_T_I32:
        *out = u.i32;
        return 0;
    case GGUF_T_U64:
        if (u.u64 > INT64_MAX)
            return -EINVAL;
        *out = (int64_t)u.u64;
        return 0;
    case GGUF_T_I64:
        *out = u.i64;
        return 0;
    default:
        return -EINVAL;
    }
}

int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    int64_t v;
    if (!kv)
        return -ENOENT;
    if (kv_int(kv, &v) || v < 0 || v > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_f32(const struct gguf *g, const char *key, float *out)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv)
        return -ENOENT;
    if (kv->type == GGUF_T_F32) {
        memcpy(out, kv->val, 4);
        return 0;
    }
    if (kv->type == GGUF_T_F64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
        return 0;
    }
    return -EINVAL;
}

int gguf_get_bool(const struct gguf *g, const char *key, int *out)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv)
        return -ENOENT;
    if (kv->type != GGUF_T_BOOL)
        return -EINVAL;
    *out = kv->val[0] != 0;
    return 0;
}

int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv)
        return -ENOENT;
    if (kv->type != GGUF_T_STR)
        return -EINVAL;
    *out = kv->strs[0];
    return 0;
}

const struct gguf_kv *gguf_get_arr(const struct gguf *g, const char *key, uint32_t arr_type)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv || kv->type != GGUF_T_ARR || kv->arr_type != arr_type)
        return NULL;
    return kv;
}

int32_t gguf_arr_i32(const struct gguf_kv *kv, uint64_t i)
{
    int32_t v;
    memcpy(&v, kv->val + i * 4, 4);
    return v;
}

static float f16_to_f32(uint16_t h)
{
    uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    float f;
    if (e == 0x1f) {
        bits = s | 0x7f800000u | (m << 13);
    } else if (e == 0) {
        f = (float)m * (1.0f / 16777216.0f); /* m * 2^-24, exact */
        return s ? -f : f;
    } else {
        bits = s | ((e + 112) << 23) | (m << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

void gguf_dequant(uint32_t type, const void *src, float *dst, uint64_t n)
{
    const uint8_t *p = src;
    switch (type) {
    case GGUF_TT_F32:
        memcpy(dst, p, n * 4);
        return;
    case GGUF_TT_F16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = f16_to_f32(ld16(p + 2 * i));
        return;
    case GGUF_TT_Q4_0:
        for (uint64_t b = 0; b < n / 32; b++, p += 18, dst += 32) {
            float d = f16_to_f32(ld16(p));
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)((p[2 + j] & 0xf) - 8) * d;
                dst[j + 16] = (float)((p[2 + j] >> 4) - 8) * d;
            }
        }
        return;
    case GGUF_TT_Q4_1:
        for (uint64_t b = 0; b < n / 32; b++, p += 20, dst += 32) {
            float d = f16_to_f32(ld16(p)), m = f16_to_f32(ld16(p + 2));
            for (int j = 0; j < 16; j++) {
                dst[j] = (float)(p[4 + j] & 0xf) * d + m;
                dst[j + 16] = (float)(p[4 + j] >> 4) * d + m;
            }
        }
        return;
    case GGUF_TT_Q8_0:
        for (uint64_t b = 0; b < n / 32; b++, p += 34, dst += 32) {
            float d = f16_to_f32(ld16(p));
            for (int j = 0; j < 32; j++)
                dst[j] = (float)(int8_t)p[2 + j] * d;
        }
        return;
    default:
        return;
    }
}
