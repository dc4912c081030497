/* lk_quant.h: THE definition of the int4 weight format, with its scalar
 * reference quantize/dequantize. Every other piece of code (CPU and CUDA
 * kernels, the NumPy mirror in llama_kernel/quant.py, the memory estimate)
 * follows this header; the Python side reads the constants from the
 * extension instead of restating them.
 *
 * A weight matrix W[n][k] (n outputs, k inputs; y = x W^T) with k a multiple
 * of LK_Q4_GROUP is stored as
 *   qs     uint8  [n][k/2]             byte j of row r: W[r][2j] in bits 0-3,
 *                                      W[r][2j+1] in bits 4-7
 *   params lk_q4_params [n][k/G]       per group of G consecutive inputs:
 *                                      fp16 scale and fp16 min
 * and dequantizes as  W[r][c] = q * scale + min,  q in 0..15.
 *
 * Asymmetric (min/max) groups of 128 were chosen by measurement
 * (benchmarks/quant_error.py): at the same 0.25 bits of overhead per weight,
 * asymmetric G=128 has 20-45% lower error than symmetric G=64 on Gaussian,
 * heavy-tailed and outlier-column weight statistics.
 *
 * Quantization of one group, in float32 arithmetic (the NumPy mirror does
 * exactly the same operations and is bit-identical):
 *   lo = min(w), hi = max(w)
 *   scale = fp16((hi - lo) / 15);  if scale == 0: scale = fp16(1)
 *   min = fp16(lo);  inv = 1 / scale
 *   q = clamp(floor((w - min) * inv + 0.5), 0, 15)
 * (floor is done as truncation, which is the same after the clamp.)
 */
#ifndef LK_QUANT_H
#define LK_QUANT_H

#include "lk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_Q4_GROUP 128
#define LK_Q4_VERSION 1 /* bump when the layout above changes */

typedef struct lk_q4_params {
    uint16_t scale; /* fp16 bits */
    uint16_t min;   /* fp16 bits */
} lk_q4_params;

#if defined(__cplusplus)
static_assert(sizeof(lk_q4_params) == 4, "lk_q4_params must be 4 bytes");
#else
_Static_assert(sizeof(lk_q4_params) == 4, "lk_q4_params must be 4 bytes");
_Static_assert(LK_Q4_GROUP % 32 == 0, "group must be a multiple of 32 (kernels load 16 bytes)");
#endif

static inline size_t lk_q4_qs_bytes(size_t n, size_t k) { return n * (k / 2); }
static inline size_t lk_q4_params_bytes(size_t n, size_t k) { return n * (k / LK_Q4_GROUP) * sizeof(lk_q4_params); }

/* Quantizes one row of k floats (k % LK_Q4_GROUP == 0). Returns 0, or -1 when
 * a value is not finite or a group's range overflows fp16 (then the caller
 * reports the tensor). */
int lk_q4_quantize_row_ref(const float *w, int64_t k, uint8_t *qs, lk_q4_params *params);

/* The GPU's tensor-core ("tiled") arrangement of the same bytes, made at upload
 * (n % 16 == 0, k % 128 == 0). The matrix is cut into tiles of 16 rows x 64
 * inputs, tile (rb, kt) at byte (rb * k/64 + kt) * 512, row blocks outermost.
 * In a tile, lane l (g = l / 4, t = l % 4) owns 16 bytes: word kb (0..3) holds
 * its mma.m16n8k16 A fragment of k16 step kb, nibbles 0..7 =
 *   W[g][c], W[g+8][c], W[g][c+2], W[g+8][c+2],
 *   W[g][c+1], W[g+8][c+1], W[g][c+3], W[g+8][c+3]   with c = 16 t + 4 kb
 * (columns within the tile), so that one lop3 with the fp16 magic number gives
 * a0 = {W[g][c], W[g][c+1]} and the others likewise. The k16 steps are a
 * permutation of the tile's 64 columns (the mma sums over k in any order):
 * lane t's columns are the contiguous 16t..16t+15, so the matching B operand
 * (x) is two 16-byte loads per lane. Params: [n/16][k/128][16] (row block,
 * group, row).
 * Threaded; out buffers must not alias the input. */
void lk_q4_tile(const uint8_t *qs, const lk_q4_params *params, int64_t n, int64_t k, uint8_t *out_qs,
                lk_q4_params *out_params);
void lk_q4_dequantize_row_ref(const uint8_t *qs, const lk_q4_params *params, int64_t k, float *out);

#ifdef __cplusplus
}
#endif

#endif /* LK_QUANT_H */
