/* libFuzzer harness: encode and decode arbitrary bytes with a real tokenizer
 * (FUZZ_TOKENIZER=path/to/tokenizer.json, default tests/data/tiny_tokenizer.json).
 * The first byte picks the options; the rest is the text, and also read as ids. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../csrc/lk_tokenizer.h"

static lk_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *path = getenv("FUZZ_TOKENIZER");
    if (!path) path = "tests/data/tiny_tokenizer.json";
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_tokenizer_text: cannot open %s (set FUZZ_TOKENIZER)\n", path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = (char *)malloc((size_t)n);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) return 1;
    fclose(f);
    if (lk_tokenizer_load(buf, (size_t)n, &tok) != LK_OK) {
        fprintf(stderr, "fuzz_tokenizer_text: %s\n", lk_last_error());
        return 1;
    }
    free(buf);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tok || size < 1) return 0;
    const int opts = data[0];
    char *text = (char *)malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    lk_ids ids = {0}, ends = {0};
    lk_bytes raw = {0}, fixed = {0};
    if (lk_tok_encode(tok, text, size - 1, opts & 1, opts & 2, &ids) == LK_OK &&
        lk_tok_decode_bytes(tok, ids.v, ids.n, opts & 4, &raw) == LK_OK && !(opts & 7) && size > 1) {
        /* plain encode -> decode gives the text back byte for byte when it is valid UTF-8 */
        lk_utf8_repair((const uint8_t *)text, size - 1, &fixed);
        if (fixed.n == size - 1 && memcmp(fixed.v, text, size - 1) == 0 &&
            (raw.n != size - 1 || memcmp(raw.v, text, size - 1) != 0))
            __builtin_trap();
    }
    lk_tok_pretokenize(text, size - 1, &ends);
    /* the bytes as ids: decode must reject or handle every value */
    int32_t idbuf[64];
    size_t nid = size / 4 > 64 ? 64 : size / 4;
    memcpy(idbuf, data, nid * 4);
    raw.n = 0;
    lk_tok_decode_bytes(tok, idbuf, nid, opts & 8, &raw);
    lk_ids_free(&ids);
    lk_ids_free(&ends);
    lk_bytes_free(&raw);
    lk_bytes_free(&fixed);
    free(text);
    return 0;
}
