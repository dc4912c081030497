/* lk_model.h: where every byte of a loaded model lives.
 *
 * One function lays out the weights (lk_weights_layout) and one the
 * run-time buffers of each backend (lk_plan_memory); the loader, both
 * backends and estimate_memory() all use them, so the estimate and what
 * the engine allocates cannot drift apart. memory_usage() reports what the
 * backends really allocated (counted at the allocation), which tests compare
 * against the plan.
 *
 * All weights of a model sit in one block (host for the CPU backend, one
 * device allocation for CUDA) at the offsets given here.
 */
#ifndef LK_MODEL_H
#define LK_MODEL_H

#include "lk_config.h"
#include "lk_quant.h"
#include "lk_safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* LK_WFMT_Q4_TILED: the same int4 bytes in the GPU's tensor-core arrangement (lk_q4_tile) */
typedef enum { LK_WFMT_BF16 = 0, LK_WFMT_Q4 = 1, LK_WFMT_Q4_TILED = 2 } lk_wfmt;
typedef enum { LK_DEV_CPU = 0, LK_DEV_CUDA = 1 } lk_device;

#define LK_ALIGN 256 /* every tensor starts on this boundary (16-byte loads, cache lines) */
#define LK_SPLITK_MAX 8 /* CUDA GEMV: at most this many K splits ... */
#define LK_GEMV_ROWS 4  /* ... of at most this many rows per launch (split-K workspace size) */
#define LK_TC_COUNTERS 4096 /* CUDA tensor-core split-K: output tiles that may be split */
#define LK_TILED_SPLIT_MAX 16 /* CUDA tiled small-batch matmul: at most this many K splits */
#define LK_SAMP_KEYS 64 /* CUDA sampler: argmax keys of the blocks sharing rows' argmax pass (rows x blocks a row) */
#define LK_SAMP_BCAND 128 /* CUDA sampler: top-k candidates each of those blocks may hand on (value, id) */
/* the CUDA sampler split's scratch: each block's candidates (values, ids), their count, its largest logit left
 * out, its mass and the candidates' share (lk_samp_scratch_place) */
#define LK_SAMP_CAND_BYTES ((size_t)LK_SAMP_KEYS * ((size_t)LK_SAMP_BCAND * 8 + 16))

/* A linear layer's weight W[n][k] (y = x W^T), in the block at `off`;
 * q4 matrices also have params at `off_params` (see lk_quant.h). */
typedef struct lk_mat {
    int32_t n, k;
    int32_t fmt; /* lk_wfmt */
    size_t off, off_params;
} lk_mat;

typedef struct lk_layer_layout {
    size_t attn_norm, ffn_norm; /* float32 [dim] */
    lk_mat qkv;     /* [q_dim + 2 kv_dim, dim]: wq rows, then wk, then wv */
    lk_mat o;       /* [dim, q_dim] */
    lk_mat gate_up; /* [2 hidden, dim]: w_gate rows, then w_up rows */
    lk_mat down;    /* [dim, hidden] */
} lk_layer_layout;

typedef struct lk_weights_layout {
    lk_mat embed;       /* [vocab, dim]; rows looked up by token id */
    lk_mat lm_head;     /* [vocab, dim]; the same bytes as embed when tied */
    size_t final_norm;  /* float32 [dim] */
    lk_layer_layout *layers; /* [n_layers], owned */
    size_t total;       /* bytes of the whole block */
    /* parts, for memory reports */
    size_t bytes_layers, bytes_embed, bytes_lm_head, bytes_norms;
} lk_weights_layout;

lk_status lk_weights_layout_make(const lk_config *c, int fmt, lk_weights_layout *out);
void lk_weights_layout_free(lk_weights_layout *l);
size_t lk_mat_bytes(const lk_mat *m); /* data + params */

/* What an engine is built with (the binding fills it from Python kwargs). */
typedef struct lk_engine_opts {
    int32_t device;          /* lk_device */
    int32_t quant;           /* lk_wfmt */
    int32_t max_seq_len;     /* KV-cache positions per sequence */
    int32_t batch_size;      /* sequences decoded together */
    int32_t prefill_chunk;   /* max tokens in one forward (longer prompts are chunked) */
    int32_t flash_attention; /* CUDA: 1 = flash kernels, 0 = plain kernels */
    int32_t cuda_graphs;     /* CUDA: capture the decode step */
    int32_t n_threads;       /* CPU: 0 = OpenMP default */
    int32_t matmul_variant;  /* CUDA: 0 = auto, else force lk_mm_variant */
} lk_engine_opts;

/* Bytes of everything an engine allocates, by part. */
typedef struct lk_mem_plan {
    size_t weights;        /* the weight block (all parts below) */
    size_t weights_layers; /* per-layer matrices + norms */
    size_t weights_embed;  /* embedding (and LM head when tied) */
    size_t weights_lm_head;/* untied LM head */
    size_t kv_per_token;   /* one position of one sequence, all layers, K and V */
    size_t kv_cache;       /* kv_per_token * max_seq_len * batch_size */
    size_t rope;           /* cos/sin table */
    size_t activations;    /* per-forward buffers (prefill_chunk rows) */
    size_t workspace;      /* sampling, attention partials, scratch */
    size_t total;
} lk_mem_plan;

/* Validates opts against the config and fills the plan for opts->device. */
lk_status lk_plan_memory(const lk_config *c, const lk_engine_opts *o, lk_mem_plan *p);
lk_status lk_opts_validate(const lk_config *c, const lk_engine_opts *o);

/* Rows of logits the backends keep (the .logits() path computes in groups). */
static inline int32_t lk_logit_rows(const lk_engine_opts *o) { return o->batch_size > 8 ? o->batch_size : 8; }

/* ---- CPU activation layout (float32 everywhere, fp16 KV cache) ---------- */
typedef struct lk_cpu_layout {
    size_t x, h, qkv, att, ffn, logits, scores, rows; /* offsets */
    size_t total;
    int32_t n_score_threads;
} lk_cpu_layout;
void lk_cpu_layout_make(const lk_config *c, const lk_engine_opts *o, int n_threads, lk_cpu_layout *l);

/* ---- CUDA activation layout (fp32 residual, fp16 elsewhere) -------------- */
typedef struct lk_cuda_layout {
    size_t tok, slot, pos, x, h, qkv, att, ffn, logits, seen, attn_part, attn_cnt, samp, samp_keys, samp_counts, samp_cand, mm_ws, mm_counters, tc_ws, tc_counters,
        grid_bar, persist, qblk;
    size_t tc_ws_floats;
    size_t activations; /* tok .. ffn, logits */
    size_t workspace;   /* seen, attn partials, sampling scratch, matmul split-K */
    size_t total;
    int32_t attn_splits; /* split-KV partitions per (row, head) in decode */
} lk_cuda_layout;
void lk_cuda_layout_make(const lk_config *c, const lk_engine_opts *o, lk_cuda_layout *l);

/* ---- filling the weight block (lk_loader.c) ------------------------------ */
typedef struct lk_load_hooks {
    /* called after each tensor with bytes done/total (may be NULL) */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    /* polled between tensors; nonzero stops the load with LK_E_INTERRUPTED */
    int (*check)(void *ctx);
    void *ctx;
} lk_load_hooks;

/* Does the checkpoint have an LM head of its own? (untied iff present) */
int lk_checkpoint_has_lm_head(const lk_st_set *set);

/* Converts the checkpoint `set` into `block` (wl->total bytes) in format
 * wl's format: checks every tensor's presence, dtype and shape against the
 * config, quantizes (threaded) or converts to bf16. With set == NULL, fills
 * the block with random weights drawn from `seed` instead (synthetic
 * models: N(0, 0.02) matrices, norms near 1). */
lk_status lk_weights_load(const lk_config *c, const lk_weights_layout *wl, const lk_st_set *set, uint64_t seed,
                          unsigned char *block, const lk_load_hooks *hooks);

#ifdef __cplusplus
}
#endif

#endif /* LK_MODEL_H */
