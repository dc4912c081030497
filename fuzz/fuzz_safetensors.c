/* libFuzzer harness: the safetensors header reader on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>

#include "../csrc/lk_safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lk_st_file f;
    if (lk_st_parse(data, size, "fuzz", &f) == LK_OK) {
        /* touch every tensor's bytes: they must lie inside the input */
        volatile unsigned sum = 0;
        for (size_t i = 0; i < f.n_tensors; i++)
            if (f.tensors[i].nbytes) sum += ((const uint8_t *)f.tensors[i].data)[f.tensors[i].nbytes - 1];
        lk_st_close(&f);
    }
    return 0;
}
