/* lk_cuda_stub.c: the CUDA entry points of a CPU-only build (compiled only
 * when setup.py found no nvcc or LLAMA_KERNEL_CUDA=0). */
#include "../lk_backend.h"
#include "../lk_cuda.h"

#include <stdio.h>

#define NOT_BUILT                                                                                             \
    "llama_kernel was built without CUDA (nvcc was not found at build time, or LLAMA_KERNEL_CUDA=0); install " \
    "the CUDA toolkit and reinstall (pip install --force-reinstall --no-build-isolation .), or use device=\"cpu\""

void lk_cuda_query(lk_cuda_info *info) {
    memset(info, 0, sizeof *info);
    snprintf(info->error, sizeof info->error, "%s", NOT_BUILT);
}

const char *lk_cuda_archs(void) { return ""; }

lk_status lk_cuda_check_usable(void) { return lk_fail(LK_E_UNSUPPORTED, "%s", NOT_BUILT); }

lk_status lk_cuda_backend_create(const lk_config *c, const lk_engine_opts *o, const lk_weights_layout *wl,
                                 lk_backend **out) {
    (void)c, (void)o, (void)wl;
    *out = NULL;
    return lk_cuda_check_usable();
}
