/*
 * fuzz_gguf.c - libFuzzer target for kvrun's GGUF reader (the model file is input): parse, then
 * use what a successful parse promises is safe: the tokenizer built from the metadata (and an
 * encode/decode through it), typed getters, and dequantizing every tensor.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gguf g;
    struct tok t;
    char err[256];
    uint32_t u;
    float f;
    struct gguf_str s;
    static float out[1 << 16];

    if (gguf_parse(&g, data, size, err, sizeof(err)) != 0)
        return 0;
    (void)gguf_get_u32(&g, "llama.block_count", &u);
    (void)gguf_get_f32(&g, "llama.rope.freq_base", &f);
    (void)gguf_get_str(&g, "general.architecture", &s);
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const struct gguf_tensor *tn = &g.tensors[i];
        unsigned blk = gguf_type_block(tn->type);
        uint64_t n = tn->n_elements < (1 << 16) ? tn->n_elements : (1 << 16) / blk * blk;
        gguf_dequant(tn->type, tn->data, out, n);
    }
    if (tok_init(&t, &g, err, sizeof(err)) == 0) {
        static const char text[] = "ab abc <|im_start|> 12 x\xff\xc3 it's  \n";
        int32_t *ids;
        size_t n;
        char buf[64];
        if (tok_encode(&t, text, sizeof(text) - 1, 1, &ids, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                (void)tok_decode(&t, ids[i], buf, sizeof(buf));
            free(ids);
        }
        tok_free(&t);
    }
    gguf_close(&g);
    return 0;
}
