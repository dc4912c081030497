/* lk_kernels.cuh: launchers for the non-matmul kernels of the CUDA backend.
 *
 * Shapes: rows r < M; tok/slot/pos are device int32 [M]. X float32 [M][dim],
 * H fp16 [M][dim], QKV fp16 [M][qkv_dim] (q heads, then k, then v), ATT fp16
 * [M][q_dim]. KV cache fp16 [layer][slot][kv_head][max_seq][head_dim].
 */
#pragma once

#include "lk_cuda_common.cuh"
#include "lk_matmul.cuh"

typedef struct lk_attn_args {
    const half *qkv;     /* [M][qkv_ld], rotated q */
    int qkv_ld;
    half *out;           /* [M][n_heads * head_dim] */
    const half *kc, *vc; /* this layer's caches: [slot][kv_head][max_seq][head_dim] */
    const int *slot, *pos;
    int M, n_heads, n_kv, head_dim, max_seq;
    float scale;
    /* prefill: rows are positions p0 .. p0+M-1 of slot `pslot` (host-known) */
    int p0, pslot;
    /* prefill of a packed chunk (lk_attention_prefill_blocks): n_qblk query blocks, each {first row, rows (at
     * most 64), position of the first row, slot}, rows consecutive positions of one slot; else nullptr */
    const int4 *qblk;
    int n_qblk;
    /* decode split-KV workspace */
    float *part;
    int *counters; /* [rows][n_kv], zero between calls */
    int splits;
    int min_chunk; /* decode: fewest positions per split (set by lk_attention_decode) */
    int one_split; /* decode: rows of at most this many positions take one split (set there too) */
    /* decode: nonzero when the kernel just before this one in the stream wrote, of what this call
     * reads, only q and the K/V rows at position pos[r] of each row r's slot (slots distinct), and
     * every kernel before it has finished (as in the engine's step: the qkv matmul precedes). The
     * K/V rows before pos[r] of a block's first tile are then copied before the PDL wait. */
    int prefetch;
    int trigger; /* decode: the next kernel may launch once this one's blocks have waited (set there) */
    /* decode: at least pos[r] + 1 for every row (host-known bound), 0 if unknown. Only picks the kernel
     * (lk_attention_decode_tc): every kernel is correct at any length */
    int max_len;
} lk_attn_args;

lk_status lk_embed(const lk_dmat *E, const int *tok, int M, int dim, float *x, cudaStream_t st);
/* tok[0..B) into dst, a device pointer of mapped host memory (a stream-ordered kernel, no copy engine) */
lk_status lk_tokens_out(const int *tok, int *dst, int B, cudaStream_t st);
lk_status lk_rmsnorm(const float *x, const float *w, int M, int dim, float eps, half *h, cudaStream_t st);
/* final norm of rows src0.. into h rows 0.. */
lk_status lk_rope_kv(half *qkv, int qkv_ld, const int *slot, const int *pos, int M, int n_heads, int n_kv, int head_dim,
                     const float *cos_t, const float *sin_t, half *kc, half *vc, int max_seq, cudaStream_t st);

lk_status lk_attention_plain(const lk_attn_args *a, cudaStream_t st);
/* one warp per (row, query head): rows of many slots at short positions (packed prefill chunks) */
lk_status lk_attention_rows(const lk_attn_args *a, cudaStream_t st);
lk_status lk_attention_decode(const lk_attn_args *a, cudaStream_t st);
/* the flash prefill kernel over a->qblk's n_qblk query blocks (several prompts' runs in one launch) */
lk_status lk_attention_prefill_blocks(const lk_attn_args *a, cudaStream_t st);
/* 1 when lk_attention_decode runs the tensor-core kernel for M rows of at most max_len positions (0:
 * unknown), else 0: the CUDA backend keys its step graphs by this too */
int lk_attention_decode_tc(int head_dim, int M, int n_kv, int max_len);
lk_status lk_attention_prefill(const lk_attn_args *a, cudaStream_t st);
lk_status lk_attention_init(void); /* shared-memory attributes, once per process */

typedef struct lk_samp_params {
    float temperature;
    int32_t top_k;
    float top_p;
    float repetition_penalty;
    uint64_t seed;
    uint64_t seq_id0;
} lk_samp_params;

/* the sampler's paths: greedy, the split (the row's blocks' candidates or masses: top-k, top-p without top-k,
 * temperature alone), the top-k window of one pass over the weights, the top-k list from passes over the
 * vocabulary, the draw over the vocabulary */
enum {
    LK_SAMP_PATH_GREEDY = 0,
    LK_SAMP_PATH_SPLIT = 1,
    LK_SAMP_PATH_WINDOW = 2,
    LK_SAMP_PATH_LIST = 3,
    LK_SAMP_PATH_VOCAB = 4
};

/* optional device memory of lk_sample (zeroed once; each launch leaves the counts as the next one needs them) */
typedef struct lk_samp_scratch {
    unsigned long long *keys; /* [LK_SAMP_KEYS] the blocks' argmax keys (NULL: one block a row) */
    int *arrive;              /* [B] blocks of the row done */
    /* the sampler split (NULL: none; lk_kernels.cu): block j of the rows' LK_SAMP_KEYS hands on the tokens of its
     * slice at or above a threshold that keeps at least top_k of them: values and ids [j * LK_SAMP_BCAND ..],
     * their number (-1: more than LK_SAMP_BCAND, or a NaN), the largest logit of the slice left out (NaN: none)
     * and the slice's mass (sum of exp((l - its largest) / T)) */
    float *cand_v;
    int *cand_i;
    int *cand_n;
    float *cand_lo;
    float *cand_s;
    float *cand_c; /* the candidates' share of cand_s */
    int *path; /* [B] or NULL: the path each row took (LK_SAMP_PATH_*; tests) */
    int *host_tok;            /* mapped pinned [2][host_stride]: row b's token goes to slot (host_count[b] & 1); NULL: none */
    int *host_count;          /* [B] tokens written so far, per row */
    int host_stride;
} lk_samp_scratch;

/* points the split's arrays of s (cand_*) into LK_SAMP_CAND_BYTES of device memory at base */
void lk_samp_scratch_place(lk_samp_scratch *s, void *base);

/* samples rows 0..B-1 of logits (overwritten); tok[b] = token, slot[b] = b, pos[b] += 1, seen updated; sc may be
 * NULL */
lk_status lk_sample(float *logits, int V, int B, const lk_samp_params *params_dev, uint32_t *seen, int *tok, int *slot,
                    int *pos, const lk_samp_scratch *sc, cudaStream_t st);
/* marks tokens_dev[0..n) in one sequence's seen bitmap */
/* seen[rows_dev[i]] (rows of `words` words) gets token tokens_dev[i], i < n */
lk_status lk_seen_add(uint32_t *seen, int words, const int *tokens_dev, const int *rows_dev, int n, int V,
                      cudaStream_t st);
