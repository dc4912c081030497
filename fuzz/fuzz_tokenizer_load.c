/* libFuzzer harness: loading tokenizer.json from arbitrary bytes, then using
 * whatever loads (encode a sample, decode every id). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../csrc/lk_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = (char *)malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    lk_tokenizer *t = NULL;
    if (lk_tokenizer_load(buf, size, &t) == LK_OK) {
        static const char sample[] = "Hello world! It's 2024: <|eot_id|> caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 12345\n\n  x";
        lk_ids ids = {0};
        lk_bytes out = {0};
        if (lk_tok_encode(t, sample, sizeof sample - 1, 1, 1, &ids) == LK_OK)
            lk_tok_decode_bytes(t, ids.v, ids.n, 0, &out);
        int32_t n = lk_tok_n_ids(t);
        for (int32_t i = 0; i < n && i < 4096; i++) {
            size_t len;
            (void)lk_tok_string(t, i, &len);
            out.n = 0;
            lk_tok_decode_bytes(t, &i, 1, 1, &out);
        }
        lk_ids_free(&ids);
        lk_bytes_free(&out);
        lk_tokenizer_free(t);
    }
    free(buf);
    return 0;
}
