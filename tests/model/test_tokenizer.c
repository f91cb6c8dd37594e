/*
 * test_tokenizer.c - kvrun's C tokenizer against Hugging Face `tokenizers` built from the same
 * GGUF vocabulary and merges (ref.py tokenize), on a varied text (tests/model/varied.txt: English,
 * contractions, digits, code, URLs, accented Latin, Greek, Cyrillic, CJK, Hangul, emoji, other
 * scripts' digits, tabs, runs of spaces, CRLF, blank lines, inline special tokens), and a
 * decode/encode round trip.
 */
#include "model_test.h"

Test(tokenizer, matches_hf_tokenizers_on_varied_text, .timeout = 120)
{
    struct model m;
    mt_load(&m);
    char args[8192], *ref, *text;
    FILE *f = fopen(KVRUN_TEST_DIR "/varied.txt", "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = malloc((size_t)len + 1);
    cr_assert_eq(fread(text, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    int32_t *ids;
    size_t n;
    cr_assert_eq(tok_encode(&m.tok, text, (size_t)len, 0, &ids, &n), 0);
    char *c_ids = mt_ids_str(ids, n);
    snprintf(args, sizeof(args), "tokenize --file '%s/varied.txt'", KVRUN_TEST_DIR);
    mt_ref(args, &ref);
    char *nl = strchr(ref, '\n');
    if (nl)
        *nl = 0;
    cr_log_info("%zu tokens", n);
    if (strcmp(c_ids, ref) != 0) {
        size_t i = 0;
        while (c_ids[i] && c_ids[i] == ref[i])
            i++;
        cr_assert_fail("C and HF differ from character %zu of the id list:\nC : %.120s\nHF: %.120s",
                       i, c_ids + (i > 40 ? i - 40 : 0), ref + (i > 40 ? i - 40 : 0));
    }
    /* decoding the ids gives the text back, byte for byte */
    char *back = malloc((size_t)len + 64);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int k = tok_decode(&m.tok, ids[i], back + o, (size_t)len + 64 - o);
        cr_assert_geq(k, 0);
        o += (size_t)k;
    }
    cr_assert_eq(o, (size_t)len);
    cr_assert_eq(memcmp(back, text, (size_t)len), 0);
    free(back);
    free(c_ids);
    free(ref);
    free(ids);
    free(text);
    model_free(&m);
}

/* Invalid UTF-8 the vocabulary can spell (truncated sequences, lone continuation bytes)
 * round-trips; bytes that never occur in UTF-8 and have no token here (0xff) are dropped, without a
 * crash. */
Test(tokenizer, invalid_utf8_is_kept_byte_for_byte)
{
    struct model m;
    mt_load(&m);
    int32_t *ff;
    size_t nff;
    cr_assert_eq(tok_encode(&m.tok, "a\xff\xfe b", 5, 0, &ff, &nff), 0);
    cr_assert_geq(nff, 2);
    free(ff);
    const char text[] = "ok \xe2\x82 broken \x82\x82 end \xc3";
    int32_t *ids;
    size_t n;
    char back[64];
    size_t o = 0;
    cr_assert_eq(tok_encode(&m.tok, text, sizeof(text) - 1, 0, &ids, &n), 0);
    for (size_t i = 0; i < n; i++)
        o += (size_t)tok_decode(&m.tok, ids[i], back + o, sizeof(back) - o);
    cr_assert_eq(o, sizeof(text) - 1);
    cr_assert_eq(memcmp(back, text, o), 0);
    free(ids);
    model_free(&m);
}
