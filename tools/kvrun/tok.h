/*
 * tok.h - the byte-level BPE tokenizer of a GGUF model (tokenizer.ggml.model = "gpt2").
 *
 * Built from the file's vocabulary (tokenizer.ggml.tokens, token_type) and merges
 * (tokenizer.ggml.merges). Encoding: control tokens written literally in the text ("<|im_start|>")
 * become their ids; the rest is pre-tokenized as SmolLM's tokenizer does (every \p{N} code point
 * on its own, then the GPT-2 regex 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
 * \s+(?!\S)|\s+), each piece is mapped byte-to-unicode and merged by rank. The Hugging Face
 * `tokenizers` library built from the same vocabulary and merges gives the same ids
 * (tests/model/test_tokenizer.c checks it).
 *
 * A struct tok borrows strings from the struct gguf it was built from: keep that open.
 * Read-only after tok_init, so encode/decode may run concurrently.
 */
#ifndef KVRUN_TOK_H
#define KVRUN_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

#define TOK_MAX_VOCAB  (1u << 20)
#define TOK_MAX_TOKLEN 256 /* longest token string (bytes) */

struct tok {
    uint32_t n_vocab;
    const struct gguf_str *vocab; /* n_vocab token strings (byte-level unicode), borrowed */
    uint8_t *special;             /* n_vocab flags: control / user-defined token */
    uint32_t *vhash;              /* open addressing: token string -> id + 1 */
    uint32_t vmask;
    const struct gguf_str *merges; /* "left right" strings, borrowed; index = rank */
    uint32_t n_merges;
    uint32_t *mhash; /* merge string -> rank + 1 */
    uint32_t mmask;
    uint32_t *special_ids; /* special tokens, longest text first */
    uint32_t n_special;
    int32_t bos, eos;
    int add_bos;
    char byte_utf8[256][3]; /* byte -> its unicode stand-in, UTF-8 (1 or 2 bytes) + len */
    int16_t cp_byte[512];   /* stand-in code point -> byte, -1 if none */
};

/* 0, -EINVAL (missing or inconsistent tokenizer metadata; err says what), -ENOMEM. */
int tok_init(struct tok *t, const struct gguf *g, char *err, size_t errlen);
void tok_free(struct tok *t);

/* Encodes text[0, len) (UTF-8; invalid bytes become single-byte pieces, kept when the vocabulary
 * has a token for that byte and dropped otherwise: SmolLM2's lacks bytes that never occur in
 * UTF-8, such as 0xff, as Hugging Face's, which accepts only valid UTF-8). When add_bos and
 * the model asks for it, the BOS id comes first. *ids is malloc'd (caller frees), *n its count.
 * 0 or -ENOMEM (nothing allocated then). */
int tok_encode(const struct tok *t, const char *text, size_t len, int add_bos, int32_t **ids,
               size_t *n);

/* Bytes of token id (control tokens give their text) into buf; returns the byte count (may
 * exceed cap: then buf holds the first cap bytes), or -EINVAL for an id out of range. */
int tok_decode(const struct tok *t, int32_t id, char *buf, size_t cap);

#endif
