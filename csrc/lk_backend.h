/* lk_backend.h: the small table of ops through which the engine runs a
 * model on either backend.
 *
 * The engine (lk_engine.c) owns the layer structure and the generation
 * loop; a backend owns the weights, the KV cache and the per-forward buffers
 * and implements each op over them. Buffers are named by role, not passed
 * as pointers, so each backend picks its own dtypes (CPU: float32; CUDA:
 * float32 residual, fp16 elsewhere).
 *
 * A forward works on M "rows". Row i is one token: tok[i] at position
 * pos[i] of sequence slot[i] (slot < batch_size, pos < max_seq_len). A
 * prefill chunk is M consecutive positions of one slot; a decode step is
 * one row per slot. The ops of one layer are
 *
 *   rmsnorm(ATTN)  H   = norm(X)
 *   matmul(QKV)    QKV = H Wqkv^T
 *   rope_kv        rotate q and k of each row; write k, v at (slot, pos)
 *   attention      ATT = softmax(q K^T / sqrt(d)) V over positions <= pos
 *   matmul(O)      X  += ATT Wo^T
 *   rmsnorm(FFN)   H   = norm(X)
 *   matmul(GATE_UP) FFN = silu(H Wg^T) * (H Wu^T)
 *   matmul(DOWN)   X  += FFN Wd^T
 *
 * All ops run in order on one stream (CUDA) or synchronously (CPU); none
 * allocates. Sampling reads logits rows 0..B-1 and advances rows 0..B-1
 * (tok = sampled token, pos += 1), so a decode step needs no host input and
 * can be captured as a CUDA graph.
 */
#ifndef LK_BACKEND_H
#define LK_BACKEND_H

#include <string.h>

#include "lk_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LK_W_QKV = 0, LK_W_O = 1, LK_W_GATE_UP = 2, LK_W_DOWN = 3 } lk_wid;
typedef enum { LK_NORM_ATTN = 0, LK_NORM_FFN = 1 } lk_norm_which;

typedef struct lk_sampling {
    float temperature;        /* <= 0: greedy (argmax, lowest id on ties) */
    int32_t top_k;            /* 0: off */
    float top_p;              /* >= 1: off */
    float repetition_penalty; /* 1: off */
    uint64_t seed;
} lk_sampling;

typedef struct lk_backend lk_backend;

typedef struct lk_backend_ops {
    const char *name;
    void (*destroy)(lk_backend *be);
    /* optional: called (under the engine lock) before each engine call's ops;
     * CUDA makes the engine's device current for the calling thread */
    lk_status (*enter)(lk_backend *be);
    /* host memory (wl->total bytes) the loader fills with the weight block */
    unsigned char *(*weights_host)(lk_backend *be);
    /* the block is complete: CUDA uploads it and frees the host copy */
    lk_status (*weights_commit)(lk_backend *be);
    lk_status (*set_rows)(lk_backend *be, int M, const int32_t *tok, const int32_t *slot, const int32_t *pos);
    lk_status (*embed)(lk_backend *be, int M);
    lk_status (*rmsnorm)(lk_backend *be, int M, int layer, int which);
    lk_status (*matmul)(lk_backend *be, int M, int layer, int wid);
    lk_status (*rope_kv)(lk_backend *be, int M, int layer);
    lk_status (*attention)(lk_backend *be, int M, int layer);
    /* final norm of X rows [src0, src0+n), LM head into LOGITS rows [dst0, dst0+n) */
    lk_status (*logits)(lk_backend *be, int src0, int n, int dst0);
    lk_status (*read_logits)(lk_backend *be, int row0, int n, float *out);
    /* repetition-penalty history of slots slot0 .. slot0 + B - 1: slot slot0 + b := its prompt, the lens[b]
     * tokens at tokens + offs[b] (one call for a batch: the CUDA backend uploads them together) */
    lk_status (*seen_reset)(lk_backend *be, int slot0, int B, const int32_t *tokens, const int64_t *offs,
                            const int32_t *lens);
    /* sampling parameters for the following sample() calls; row b draws with
     * sequence id seq_id0 + b and the position it samples for */
    lk_status (*set_sampling)(lk_backend *be, const lk_sampling *sp, uint64_t seq_id0);
    lk_status (*sample)(lk_backend *be, int B);
    /* copy the B current row tokens to host buffer `which` (0 or 1), then wait for it */
    lk_status (*tokens_fetch)(lk_backend *be, int B, int which);
    lk_status (*tokens_wait)(lk_backend *be, int B, int which, int32_t *out);
    /* optional (NULL): run step(ctx) as a CUDA graph captured once per key */
    lk_status (*graph_run)(lk_backend *be, int key, lk_status (*step)(void *ctx), void *ctx);
    lk_status (*sync)(lk_backend *be);
    /* what the backend really allocated, by part (fields of lk_mem_plan) */
    void (*memory)(lk_backend *be, lk_mem_plan *used);
    /* optional (NULL): a layer's o projection, FFN RMSNorm, gate_up and down as one op; *done = 0
     * when it does not apply to these rows (the engine then runs the four ops) */
    lk_status (*ffn_block)(lk_backend *be, int M, int layer, int *done);
    /* optional (NULL): every layer of M rows as one op, after embed; *done = 0 when it does not apply
     * (the engine then runs the layers op by op) */
    lk_status (*decode_layers)(lk_backend *be, int M, int *done);
} lk_backend_ops;

struct lk_backend {
    const lk_backend_ops *ops;
    const lk_config *cfg;       /* owned by the engine */
    const lk_engine_opts *opts; /* owned by the engine */
    const lk_weights_layout *wl;/* owned by the engine */
};

/* The parts of memory() that every backend reports the same way: the
 * weights (from the layout), the KV cache and the rotary tables. Zeroes the
 * rest; the backend adds activations, workspace and total. */
static inline void lk_backend_memory_common(const lk_backend *be, lk_mem_plan *u, size_t kv_bytes,
                                            size_t rope_bytes) {
    memset(u, 0, sizeof *u);
    u->weights = be->wl->total;
    u->weights_layers = be->wl->bytes_layers + be->wl->bytes_norms;
    u->weights_embed = be->wl->bytes_embed;
    u->weights_lm_head = be->wl->bytes_lm_head;
    u->kv_cache = kv_bytes;
    u->kv_per_token = kv_bytes / ((size_t)be->opts->max_seq_len * (size_t)be->opts->batch_size);
    u->rope = rope_bytes;
}

/* Creating a backend allocates everything it will ever use (weights, KV
 * cache, buffers), so that a model that does not fit fails before any
 * weight is read. The engine then fills weights_host() and calls
 * weights_commit(). */
lk_status lk_cpu_backend_create(const lk_config *c, const lk_engine_opts *o, const lk_weights_layout *wl,
                                lk_backend **out);
lk_status lk_cuda_backend_create(const lk_config *c, const lk_engine_opts *o, const lk_weights_layout *wl,
                                 lk_backend **out);

#ifdef __cplusplus
}
#endif

#endif /* LK_BACKEND_H */
