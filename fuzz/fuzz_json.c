/* libFuzzer harness: the JSON parser on arbitrary bytes (not NUL-terminated). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../csrc/lk_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a heap copy of exactly `size` bytes, so ASan sees any read past the end */
    char *buf = (char *)malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    lk_json j;
    if (lk_json_parse(buf, size, &j) == LK_OK) {
        for (size_t i = 0; i < j.n_nodes; i++) {
            int64_t v;
            if (j.nodes[i].type == LK_JSON_NUMBER) {
                lk_json_int64(&j, &j.nodes[i], &v);
                (void)lk_json_double(&j, &j.nodes[i]);
            }
            if (j.nodes[i].type == LK_JSON_OBJECT) (void)lk_json_get(&j, &j.nodes[i], "model");
        }
        lk_json_free(&j);
    }
    free(buf);
    return 0;
}
