/*
 * gguf.h - a GGUF v3 reader for kvrun (model file: metadata, tensor table, tensor data).
 *
 * The file is input: gguf_parse() checks every count, length, offset and size against the bytes
 * actually present and against the named limits below before it allocates or indexes anything,
 * and answers a malformed or truncated file with -EINVAL (or -ENOMEM) and a one-line message that
 * says what is wrong and at which byte offset. After a successful parse every pointer in the
 * structures points inside the buffer, every tensor's data lies inside the data section, and
 * every string array has been indexed, so accessors need no further checks.
 *
 * Ownership: gguf_parse() borrows the buffer (it must outlive the struct gguf); gguf_open()
 * maps the file read-only and gguf_close() unmaps it. Not thread-safe for concurrent close; all
 * accessors are read-only and may run concurrently.
 */
#ifndef KVRUN_GGUF_H
#define KVRUN_GGUF_H

#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC        0x46554747u /* "GGUF" little-endian */
#define GGUF_MAX_TENSORS  65536
#define GGUF_MAX_KV       65536
#define GGUF_MAX_DIMS     4
#define GGUF_MAX_STR      (1u << 20)   /* longest key or string value */
#define GGUF_MAX_ARR      (1u << 24)   /* longest array */
#define GGUF_MAX_ALIGN    (1u << 16)   /* general.alignment limit (power of two) */
#define GGUF_MAX_ELEMENTS (1ull << 40) /* elements in one tensor */

/* Metadata value types (on disk). */
enum gguf_vtype {
    GGUF_T_U8 = 0,
    GGUF_T_I8 = 1,
    GGUF_T_U16 = 2,
    GGUF_T_I16 = 3,
    GGUF_T_U32 = 4,
    GGUF_T_I32 = 5,
    GGUF_T_F32 = 6,
    GGUF_T_BOOL = 7,
    GGUF_T_STR = 8,
    GGUF_T_ARR = 9,
    GGUF_T_U64 = 10,
    GGUF_T_I64 = 11,
    GGUF_T_F64 = 12,
};

/* Tensor types (ggml ids) this reader can size and dequantize. */
enum gguf_ttype {
    GGUF_TT_F32 = 0,
    GGUF_TT_F16 = 1,
    GGUF_TT_Q4_0 = 2,
    GGUF_TT_Q4_1 = 3,
    GGUF_TT_Q8_0 = 8,
};

struct gguf_str {
    const char *p; /* not NUL-terminated; points into the file */
    uint32_t len;
};

struct gguf_kv {
    struct gguf_str key;
    uint32_t type;         /* enum gguf_vtype */
    uint32_t arr_type;     /* element type when type == GGUF_T_ARR */
    uint64_t n;            /* array length (1 for scalars) */
    const uint8_t *val;    /* scalar value or first array element (raw, little-endian) */
    struct gguf_str *strs; /* string values: n entries (owned), for STR and ARR of STR */
};

struct gguf_tensor {
    struct gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length; unused dims are 1 */
    uint32_t type;              /* enum gguf_ttype */
    uint64_t offset;            /* from the data section start */
    uint64_t n_elements;
    uint64_t n_bytes;
    const uint8_t *data;
};

struct gguf {
    const uint8_t *buf; /* whole file */
    size_t len;
    int mapped; /* buf is our mmap (gguf_open) */
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv, n_tensors;
    struct gguf_kv *kv;          /* n_kv entries (owned) */
    struct gguf_tensor *tensors; /* n_tensors entries (owned) */
    size_t data_off;             /* data section offset in buf */
};

/* Parses buf[0, len). 0, -EINVAL (malformed; err says why), -ENOMEM. On error *g holds nothing
 * to free. err may be NULL. */
int gguf_parse(struct gguf *g, const void *buf, size_t len, char *err, size_t errlen);
/* Maps and parses a file. Also -errno from open/fstat/mmap (err says which). */
int gguf_open(struct gguf *g, const char *path, char *err, size_t errlen);
/* Frees what gguf_parse/gguf_open made; safe on a zeroed struct. */
void gguf_close(struct gguf *g);

/* Lookups: NULL if absent. */
const struct gguf_kv *gguf_find_kv(const struct gguf *g, const char *key);
const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name);

/* Typed getters: 0, -ENOENT (absent), -EINVAL (wrong type or out of range). Integers of any
 * integer type are accepted when the value fits. */
int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out);
int gguf_get_f32(const struct gguf *g, const char *key, float *out);
int gguf_get_bool(const struct gguf *g, const char *key, int *out);
int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out);
/* An array of strings (out->strs, out->n) or of i32 (gguf_arr_i32). */
const struct gguf_kv *gguf_get_arr(const struct gguf *g, const char *key, uint32_t arr_type);
int32_t gguf_arr_i32(const struct gguf_kv *kv, uint64_t i);

/* Bytes of n elements of a tensor type (n a multiple of its block size), 0 if unknown/invalid. */
uint64_t gguf_type_bytes(uint32_t type, uint64_t n);
/* Elements per block of a tensor type, 0 if unknown. */
unsigned gguf_type_block(uint32_t type);
/* Dequantizes n elements (a multiple of the block size) starting at src to f32. */
void gguf_dequant(uint32_t type, const void *src, float *dst, uint64_t n);
/* Name of a tensor type ("q4_1"), or "?" */
const char *gguf_type_name(uint32_t type);

#endif
