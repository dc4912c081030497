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

lk_status lk_cuda_op_matmul(const float *x, int M, int K, const uint8_t *qs, const uint16_t *params,
                            const uint16_t *w_bf16, int N, int mode, int variant, float *y, int *variant_used,
                            const char **kernel) {
    (void)x, (void)M, (void)K, (void)qs, (void)params, (void)w_bf16, (void)N, (void)mode, (void)variant, (void)y,
        (void)variant_used, (void)kernel;
    return lk_cuda_check_usable();
}
lk_status lk_cuda_op_bench_matmul(int M, int N, int K, int mode, int variant, int bf16, int iters, const int tune[3],
                                  double *us) {
    (void)M, (void)N, (void)K, (void)mode, (void)variant, (void)bf16, (void)iters, (void)tune, (void)us;
    return lk_cuda_check_usable();
}
lk_status lk_cuda_op_attention(const float *q, int M, int n_heads, int n_kv, int hd, const float *k, const float *v,
                               int L, const int *pos, int kind, float *out, const char **kernel) {
    (void)q, (void)M, (void)n_heads, (void)n_kv, (void)hd, (void)k, (void)v, (void)L, (void)pos, (void)kind, (void)out,
        (void)kernel;
    return lk_cuda_check_usable();
}
lk_status lk_cuda_op_bench_attention(int B, int n_heads, int n_kv, int hd, int L, int kind, int iters, double *us) {
    (void)B, (void)n_heads, (void)n_kv, (void)hd, (void)L, (void)kind, (void)iters, (void)us;
    return lk_cuda_check_usable();
}
lk_status lk_cuda_op_rmsnorm(const float *x, int M, int dim, const float *w, float eps, float *out) {
    (void)x, (void)M, (void)dim, (void)w, (void)eps, (void)out;
    return lk_cuda_check_usable();
}
lk_status lk_cuda_op_rope_kv(const float *qkv, int M, int n_heads, int n_kv, int hd, const int *pos, const int *slot,
                             const float *cos_t, const float *sin_t, int max_seq, int n_slots, float *qkv_out,
                             float *kc, float *vc) {
    (void)qkv, (void)M, (void)n_heads, (void)n_kv, (void)hd, (void)pos, (void)slot, (void)cos_t, (void)sin_t,
        (void)max_seq, (void)n_slots, (void)qkv_out, (void)kc, (void)vc;
    return lk_cuda_check_usable();
}
lk_status lk_cuda_op_bench_norm_rope(int M, int dim, int n_heads, int n_kv, int hd, int iters, double us[3]) {
    (void)M, (void)dim, (void)n_heads, (void)n_kv, (void)hd, (void)iters, (void)us;
    return lk_cuda_check_usable();
}
lk_status lk_cuda_op_sample(const float *logits, int B, int V, const int *pos, float temperature, int top_k,
                            float top_p, float repetition_penalty, uint64_t seed, uint64_t seq_id0,
                            const uint32_t *seen, int32_t *out, int32_t *paths) {
    (void)logits, (void)B, (void)V, (void)pos, (void)temperature, (void)top_k, (void)top_p, (void)repetition_penalty,
        (void)seed, (void)seq_id0, (void)seen, (void)out, (void)paths;
    return lk_cuda_check_usable();
}
