/* lk_cuda.h: what the core and the binding may ask of the CUDA side without
 * including CUDA headers. In a CPU-only build these come from
 * lk_cuda_stub.c and report that CUDA is not built in. */
#ifndef LK_CUDA_H
#define LK_CUDA_H

#include "lk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_cuda_info {
    int compiled;        /* CUDA code is built into this extension */
    int runtime_version; /* e.g. 13000 */
    int driver_version;  /* 0 when no driver */
    int device_count;
    int device;          /* the device used (0) */
    char device_name[256];
    int cc_major, cc_minor;
    int sm_count;
    int arch_supported;  /* machine code or PTX for this device is built in */
    int wgmma;           /* the Hopper (sm_90a) wgmma matmul (17+ rows) runs on this device */
    size_t free_bytes, total_bytes;
    char error[512];     /* why no device is usable, if so */
} lk_cuda_info;

void lk_cuda_query(lk_cuda_info *info);
/* the archs compiled in, e.g. "80;86;89;90" (+ "+PTX"), or "" */
const char *lk_cuda_archs(void);
/* LK_OK when device 0 can run this build, else a message with the fix */
lk_status lk_cuda_check_usable(void);

/* ---- single ops on host arrays, for tests and benchmarks (lk_cuda_ops.cu) ----
 * matmul: y[M][n_out] (float32) from x[M][K] (rounded to fp16) and W: canonical
 * int4 (qs [N][K/2], params [N][K/128][2] fp16 bits) or bf16 [N][K] (qs NULL).
 * mode: 0 store, 1 add into y (y holds the residual on entry), 2 SwiGLU
 * (n_out = N/2). variant: 0 auto, 1 lut, 2 optimized, 3 batched. *kernel (when not NULL): the name of
 * the last kernel the matmul launched (a static string; tests check which kernel ran). */
lk_status lk_cuda_op_matmul(const float *x, int M, int K, const uint8_t *qs, const uint16_t *params,
                            const uint16_t *w_bf16, int N, int mode, int variant, float *y, int *variant_used,
                            const char **kernel);
/* median microseconds of one call, weights rotated through enough copies to defeat L2 */
/* tune: {weight rows per warp, chunks in flight, K splits} of the one-row GEMV, 0 = automatic */
lk_status lk_cuda_op_bench_matmul(int M, int N, int K, int mode, int variant, int bf16, int iters, const int tune[3],
                                  double *us);
/* attention for one sequence: q [M][n_heads*hd], k and v [n_kv][L][hd] (positions 0..L-1), query i at
 * position pos[i]; kind 0 plain, 1 split-KV decode, 2 flash prefill (pos must be consecutive). kernel
 * (may be NULL): the name of the kernel launched last. */
lk_status lk_cuda_op_attention(const float *q, int M, int n_heads, int n_kv, int hd, const float *k, const float *v,
                               int L, const int *pos, int kind, float *out, const char **kernel);
/* median microseconds: B sequences of context L, `kind` as above (prefill: L queries per sequence) */
lk_status lk_cuda_op_bench_attention(int B, int n_heads, int n_kv, int hd, int L, int kind, int iters, double *us);
/* the engine's RMSNorm (k_rmsnorm): out [M][dim] = fp16(x * rsqrt(mean x^2 + eps) * w), as float32 */
lk_status lk_cuda_op_rmsnorm(const float *x, int M, int dim, const float *w, float eps, float *out);
/* the engine's rotary + KV append (k_rope_kv): qkv [M][(n_heads + 2 n_kv) hd] (rounded to fp16; q heads, k
 * heads, v heads), row i at position pos[i] of slot slot[i], tables cos_t / sin_t [max_seq][hd/2]. Out:
 * qkv_out (q heads rotated in place, k and v as given), kc and vc [n_slots][n_kv][max_seq][hd] (rotated k and v
 * at each row's slot and position, zero elsewhere); all float32 */
lk_status lk_cuda_op_rope_kv(const float *qkv, int M, int n_heads, int n_kv, int hd, const int *pos, const int *slot,
                             const float *cos_t, const float *sin_t, int max_seq, int n_slots, float *qkv_out,
                             float *kc, float *vc);
/* median microseconds over M prefill rows: us[0] k_rmsnorm (dim), us[1] k_rope_kv, us[2] a device-to-device copy
 * moving the RMSNorm's bytes (6 M dim: the card's copy rate for comparison) */
lk_status lk_cuda_op_bench_norm_rope(int M, int dim, int n_heads, int n_kv, int hd, int iters, double us[3]);
/* the GPU sampler: logits [B][V], row b samples for position pos[b] + 1; seen [B][ceil(V/32)] or NULL; paths
 * [B] or NULL: the path each row took (lk_kernels.cuh, LK_SAMP_PATH_*) */
lk_status lk_cuda_op_sample(const float *logits, int B, int V, const int *pos, float temperature, int top_k,
                            float top_p, float repetition_penalty, uint64_t seed, uint64_t seq_id0,
                            const uint32_t *seen, int32_t *out, int32_t *paths);

#ifdef __cplusplus
}
#endif
#endif /* LK_CUDA_H */
