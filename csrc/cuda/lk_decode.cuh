/* lk_decode.cuh: the layers of a one-row decode step as one persistent kernel
 * (lk_decode.cu; docs/ARCHITECTURE.md, "Persistent decode").
 *
 * One block per SM for the whole step. Each block's producer warp streams the
 * block's share of every layer's int4 weights (qkv, o, gate_up, down, in the
 * order they are used) through a ring of shared-memory slots with bulk copies,
 * independent of the data dependencies; the 8 consumer warps run the phases
 * (RMSNorm + qkv + rotary + KV append, attention, o + residual, RMSNorm +
 * gate_up + SwiGLU, down + residual) with a grid barrier between phases. The
 * weights of the next phases are thus in flight while a phase waits for its
 * inputs, which kernel boundaries do not allow.
 */
#pragma once

#include "lk_cuda_common.cuh"
#include "lk_matmul.cuh"

typedef struct lk_pd_args {
    /* layer 0's matrices (row-interleaved int4) and norms; layer l is at + l * layer_stride bytes */
    const unsigned char *qkv_w, *o_w, *gu_w, *dn_w;
    const unsigned char *qkv_p, *o_p, *gu_p, *dn_p;
    const unsigned char *attn_norm, *ffn_norm; /* float [dim] */
    size_t layer_stride;
    int n_layers;
    float *x;            /* [dim] fp32 residual (in and out) */
    half *q, *att, *ffn; /* scratch: rotated q [q_dim], attention output [q_dim], SwiGLU [hidden] */
    half *kc, *vc;       /* layer 0's caches [slot][kv_head][max_seq][head_dim]; + l * kv_layer elements */
    size_t kv_layer;
    const int *slot, *pos; /* device [1] */
    const float *cos_t, *sin_t;
    float *part;    /* attention partials [n_heads][max_chunks][head_dim + 2] */
    int max_chunks;
    unsigned *sync; /* [64], zero between launches: grid-barrier arrivals at 0, exits at 32 */
    int *head_cnt;  /* [n_heads], zero between launches */
    int dim, hidden, n_heads, n_kv, head_dim, max_seq;
    float eps, scale_log2; /* RMSNorm epsilon; log2(e) / sqrt(head_dim) */
    unsigned long long *trace; /* LLAMA_KERNEL_PD_TRACE=1 (debugging aid): [layer][16 events][block] times, or NULL */
} lk_pd_args;

/* nonzero when the persistent kernel takes this model on this device: sm_90+, row-interleaved int4,
 * the Llama 3.2 1B or 3B shapes (head_dim 64 / hidden size 2048, or 128 / 3072; intermediate size
 * 8192); the caller checks that every layer sits at the same stride. why: the first unmet condition */
int lk_pd_supported(const lk_dmat *qkv, const lk_dmat *o, const lk_dmat *gu, const lk_dmat *dn, int n_heads, int n_kv,
                    int head_dim, int cc_major, const char **why);
lk_status lk_pd_run(const lk_pd_args *a, int sm_count, cudaStream_t st);
