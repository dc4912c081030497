/* lk_matmul.cuh: the GPU matmul family, y = x W^T for M rows of x (fp16).
 *
 * int4 weights (lk_quant.h format, nibbles interleaved within each 32-bit
 * word on upload, see lk_cuda_common.cuh) in three variants:
 *   LK_MM_LUT        1-4 rows: dequant through a byte -> half2 table in shared memory
 *   LK_MM_OPTIMIZED  1-4 rows: lop3/magic-number dequant, 16-byte loads, split-K
 *   LK_MM_BATCHED    5+ rows: tensor cores (mma.sync m16n8k16, fp32 accumulate),
 *                    cp.async pipeline, dequant to fp16 tiles in shared memory
 * and a bf16 path for quantization="none". lk_mm_choose() picks the variant
 * per (M, N, K, compute capability) from the table measured in
 * benchmarks/matmul_table.md; any variant can be forced and handles any M
 * (the 1-4 row kernels run larger M in groups of 4).
 *
 * Epilogues (mode): store fp16, store fp32, add into fp32 (the residual
 * stream, deterministic even with split-K), and SwiGLU: rows j and
 * hidden + j of W give out[j] = silu(x.Wj) * (x.W(hidden+j)).
 */
#pragma once

#include "lk_cuda_common.cuh"

#include <cuda.h> /* CUtensorMap */

enum { LK_MM_AUTO = 0, LK_MM_LUT = 1, LK_MM_OPTIMIZED = 2, LK_MM_BATCHED = 3, LK_MM_BF16 = 4 };
enum { LK_OUT_F16 = 0, LK_OUT_F32 = 1, LK_OUT_ADD_F32 = 2, LK_OUT_SWIGLU_F16 = 3, LK_OUT_QKV_ROPE = 4 };

/* LK_OUT_QKV_ROPE (GEMV path only): the qkv projection's epilogue applies the
 * rotary embedding (pairs i, i + head_dim/2 of a head are computed by one warp),
 * writes q (fp16, to out) and appends k and v to the KV cache at (slot, pos). */
typedef struct lk_rope_epi {
    const float *cos_t, *sin_t; /* [max_seq][head_dim/2] */
    const int *pos, *slot;      /* per row */
    half *kc, *vc;              /* this layer's caches [slot][kv_head][max_seq][head_dim] */
    int n_heads, n_kv, hd, max_seq;
} lk_rope_epi;

/* RMSNorm folded into a GEMV's prologue: the matmul's input is
 * rmsnorm(x) * w computed per block into shared memory from the fp32 residual
 * rows x (w == NULL: no norm, the fp16 input is used as given) */
typedef struct lk_norm_in {
    const float *x, *w;
    float eps;
} lk_norm_in;

typedef struct lk_dmat {
    const void *w;   /* q4: interleaved qs [N][K/2]; q4 tiled: lk_q4_tile layout; bf16: [N][K] */
    const half2 *p;  /* q4: params [N][K/128] as half2 {scale, min}; tiled: [N/16][K/128][16] */
    int N, K;
    int fmt;         /* LK_WFMT_* */
} lk_dmat;

/* tiled layout: up to this many rows run the small-batch kernel (in slices of 16) */
#define LK_TILED_SLICE_MAX 64

typedef struct lk_mm_ws {
    float *partial;   /* GEMV split-K partial sums */
    size_t partial_floats;
    int *counters;    /* per row-block arrival counters, zero between calls */
    int n_counters;
    float *tc_partial;/* tensor-core split-K partial tiles (NULL: no split) */
    size_t tc_partial_floats;
    int *tc_counters; /* per output tile, zero between calls */
    int tc_n_counters;
    float *tg_partial;/* tiled small-batch split-K partials (NULL: no split) */
    size_t tg_partial_floats;
    int *tg_counters; /* per block, zero between calls */
    int tg_n_counters;
} lk_mm_ws;

const char *lk_mm_variant_name(int v);

/* the variant auto-selection picks for this shape on this device */
int lk_mm_choose(int M, int N, int K, int cc_major, int cc_minor);
/* should an N x K int4 matrix of an engine decoding batch_size sequences be tiled? */
int lk_mm_prefer_tiled(int batch_size, int N, int K);

/* y = x W^T. x: [M][ldx] fp16. out: per mode, leading dimension ldo.
 * For LK_OUT_SWIGLU_F16, W has 2*hidden rows and out gets hidden columns. */
lk_status lk_cuda_matmul(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode, int variant,
                         const lk_mm_ws *ws, int sm_count, int cc_major, int cc_minor, cudaStream_t st);
/* the same with the input normalised in the prologue (requires lk_mm_fuses_norm; x unused) */
lk_status lk_cuda_matmul_norm(const lk_dmat *W, const lk_norm_in *nin, int M, void *out, int ldo, int mode,
                              int variant, const lk_mm_ws *ws, int sm_count, int cc_major, int cc_minor,
                              cudaStream_t st);
/* the same with the rotary epilogue (requires lk_mm_uses_gemv), and the norm prologue when nin != NULL */
lk_status lk_cuda_matmul_qkv_rope(const lk_dmat *W, const half *x, int M, int ldx, half *q_out, int ldo, int variant,
                                  const lk_rope_epi *re, const lk_norm_in *nin, const lk_mm_ws *ws, int sm_count,
                                  int cc_major, int cc_minor, cudaStream_t st);
/* can (W, M, variant) take its RMSNorm in the prologue (the row-interleaved GEMV, inputs fit shared memory)? */
int lk_mm_fuses_norm(const lk_dmat *W, int M, int variant, int cc_major, int cc_minor);
/* can (W, M, variant) fuse the rotary epilogue (the GEMV kernels: 1-4 rows interleaved, 1-LK_TILED_SLICE_MAX tiled)? */
int lk_mm_uses_gemv(const lk_dmat *W, int M, int variant, int cc_major, int cc_minor);

/* A layer's o projection (+ residual), FFN RMSNorm + gate_up + SwiGLU and down (+ residual) at one
 * row, as one kernel (k_ffn_fused: three GEMV phases with grid barriers between them) */
typedef struct lk_ffn_args {
    const void *o_w, *gu_w, *dn_w;     /* row-interleaved int4 weights */
    const half2 *o_p, *gu_p, *dn_p;    /* their scales/mins */
    const half *att;                   /* o's input [q_dim] */
    float *x;                          /* the residual [dim]: o and down add into it */
    half *ffn;                         /* SwiGLU output [hidden] */
    lk_norm_in norm;                   /* the FFN RMSNorm (x = the residual) */
    int q_dim, dim, hidden;
} lk_ffn_args;
/* can these matrices (o: dim x q_dim, gate_up: 2 hidden x dim, down: dim x hidden) run as one
 * k_ffn_fused launch at M rows with this variant? */
int lk_mm_ffn_fusable(const lk_dmat *o, const lk_dmat *gu, const lk_dmat *dn, int M, int variant, int cc_major,
                      int cc_minor);
/* the launch; bar: 64 zeroed unsigned ints of device memory for the grid barrier (zero again after) */
lk_status lk_cuda_ffn_fused(const lk_dmat *o, const lk_dmat *gu, const lk_dmat *dn, const half *att, float *x,
                            half *ffn, const lk_norm_in *nin, unsigned *bar, int sm_count, cudaStream_t st);

/* once per process: shared-memory limits of the tensor-core kernels */
lk_status lk_mm_init(void);
/* does the current device run the sm_90a wgmma kernel (int4 matmuls of 17+ rows)? */
int lk_mm_wgmma_ready(void);
/* a 2- or 3-D fp16 tensor map for bulk tensor copies: dims[0] contiguous elements, strides[i] the bytes between
 * steps of dimension i + 1, boxes of box[] elements, the 128-byte swizzle (box[0] = 64), and what lies past the
 * extent reads as zeros. what: its name, for the error. LK_E_UNSUPPORTED when the driver has no encoder */
lk_status lk_tmap_f16(CUtensorMap *m, const void *base, int rank, const uint64_t *dims, const uint64_t *strides,
                      const uint32_t *box, const char *what);
/* benchmarks only: force the one-row GEMV configuration (0 = automatic) */
void lk_mm_set_tune(int rr, int u, int s);
/* the same for the tiled small-batch kernel: warps along K per block (1, 2, 4, 8), groups per load
 * step of one-block units (1, or the default), K splits */
void lk_mm_set_tune_tiled(int wk, int g, int s);

/* repacks canonical q4 bytes into the interleaved layout, in place */
lk_status lk_q4_interleave(void *qs, size_t bytes, cudaStream_t st);
