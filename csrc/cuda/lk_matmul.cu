/* lk_matmul.cu: the int4 matmul variants, the bf16 path and the dispatcher
 * (see lk_matmul.cuh). Only the configurations that are used are
 * instantiated: GEMV for 1-4 rows x {1, 2} weight rows per warp x {lop3, LUT},
 * three tensor-core tile shapes, and the bf16 kernels. */
#include "lk_matmul.cuh"
#include "lk_wgmma.cuh"

#include <cuda.h> /* CUtensorMap (the encoder comes through cudaGetDriverEntryPointByVersion) */
#include <cudaTypedefs.h>

#include <stdio.h>
#include <stdlib.h>

#include "../lk_model.h"
#include "../lk_quant.h"

const char *lk_mm_variant_name(int v) {
    switch (v) {
    case LK_MM_LUT: return "lut";
    case LK_MM_OPTIMIZED: return "optimized";
    case LK_MM_BATCHED: return "batched";
    case LK_MM_BF16: return "bf16";
    default: return "auto";
    }
}

/* The dispatch table, measured with benchmarks/bench_matmul.py (the numbers
 * behind each threshold are in benchmarks/NOTES.md, "int4 matmul" and
 * "Second session"; raw logs in benchmarks/results/).
 * 1-4 rows are memory-bound GEMVs: the lop3 kernel beat the LUT kernel on
 * every decode shape on H100/H200 (sm_90); from 5 rows on, tensor cores win. */
int lk_mm_choose(int M, int N, int K, int cc_major, int cc_minor) {
    (void)N, (void)K, (void)cc_major, (void)cc_minor;
    return M <= 4 ? LK_MM_OPTIMIZED : LK_MM_BATCHED;
}

/* Which layout a matrix gets at load (auto variant). Measured (benchmarks/NOTES.md):
 * with one sequence the row-interleaved GEMV wins on H100 (v9: gate_up 13.8 us vs
 * 17.1 tiled inside the decode step, LM head 52 vs 54; on H200, v7, the tiled LM
 * head was faster); from 2 rows on, tiled wins everywhere (M = 4: gate_up 24.3 ->
 * 11.5 us). Rechecked at one sequence in session 14 (v52, H100): every matrix tiled 1,665 vs
 * 1,844 tok/s (the tiled kernels ~7-8 us a call, plus a separate RMSNorm kernel twice a layer). */
int lk_mm_prefer_tiled(int batch_size, int N, int K) {
    (void)K;
    return N % 16 == 0 && batch_size >= 2;
}


/* ---- epilogue ---------------------------------------------------------------- */
/* LK_OUT_ADD_F32 with the residual loads batched: what the launchers of the tiled small-batch, wgmma and
 * register-A kernels pass for LK_OUT_ADD_F32 unless LLAMA_KERNEL_ADD_EPI=0 (add_mode). epi_store does
 * `out[i] += v` for each output: a load, an add and a store in a branch of its own, and the store may alias
 * the next load (ldo unknown), so a thread's residual loads run one L2 round trip after another (in the o and
 * down epilogue of a 256-wide wgmma block, 128 of them, ~20 us; the PTX shows each ld.global.f32 right after
 * the previous st.global.f32). The batched epilogues issue a chunk's loads before its stores: the same adds,
 * the same sums bit for bit. Measured (benchmarks/NOTES.md, v64, H100). epi_store adds for this mode too. */
enum { LK_OUT_ADD_F32_BATCHED = 16 };
/* the register-A prefill kernel's epilogues through shared memory and the tensor memory accelerator (launch_ra,
 * tma_epi): the block's outputs go to shared memory in boxes of 128 bytes x 128 tokens, then one bulk copy a
 * box adds them into the residual (LK_OUT_ADD_F32: a reduce-add, no residual load in the SM) or stores them
 * (LK_OUT_F32, LK_OUT_F16, LK_OUT_SWIGLU_F16) */
enum { LK_OUT_ADD_F32_TMA = 17, LK_OUT_F32_TMA = 18, LK_OUT_F16_TMA = 19, LK_OUT_SWIGLU_F16_TMA = 20 };

__device__ __forceinline__ void epi_store(void *out, int ldo, int mode, int m, int j, float v) {
    size_t i = (size_t)m * ldo + j;
    if (mode == LK_OUT_F16 || mode == LK_OUT_SWIGLU_F16) ((half *)out)[i] = __float2half(v);
    else if (mode == LK_OUT_F32) ((float *)out)[i] = v;
    else ((float *)out)[i] += v;
}

/* LK_OUT_ADD_F32_BATCHED: CH outputs, residual address at(q) (NULL: past M or n_out) plus v(q), their CH loads
 * issued before their stores */
template <int CH, class At, class V>
__device__ __forceinline__ void add_chunk(const At &at, const V &v) {
    float r[CH];
#pragma unroll
    for (int q = 0; q < CH; q++) {
        const float *p = at(q);
        r[q] = p ? *p : 0.0f;
    }
#pragma unroll
    for (int q = 0; q < CH; q++) {
        float *p = at(q);
        if (p) *p = r[q] + v(q);
    }
}

__device__ __forceinline__ uint32_t h2u(half2 v) { return *reinterpret_cast<uint32_t *>(&v); }

/* one word of the tiled layout (lk_q4_tile: 8 weights of rows g and g + 8) with its rows' scale/min pa (row g)
 * and pb (row g + 8) -> the four dequantized half2 in the mma A-fragment order: row g, row g + 8, row g,
 * row g + 8 (the word's first input pair, then its second) */
__device__ __forceinline__ void dequant_tile_word(uint32_t w, half2 pa, half2 pb, uint32_t (&o)[4]) {
    const half2 sa = __half2half2(__low2half(pa)), ma = __half2half2(__high2half(pa));
    const half2 sb = __half2half2(__low2half(pb)), mb = __half2half2(__high2half(pb));
    half2 q[4];
    lk_dequant8(w, q);
    o[0] = h2u(__hfma2(q[0], sa, ma));
    o[1] = h2u(__hfma2(q[1], sb, mb));
    o[2] = h2u(__hfma2(q[2], sa, ma));
    o[3] = h2u(__hfma2(q[3], sb, mb));
}

__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* ============================================================================
 * GEMV for 1-4 rows: one warp per output (RR = weight rows it reads: 2 for
 * SwiGLU pairs or two consecutive rows), lanes across K in 16-byte chunks
 * (32 weights, one quarter of a group). Split-K over gridDim.y for the
 * residual-add outputs; the last block of a row range sums the splits in a
 * fixed order, so results are deterministic.
 * ==========================================================================*/
#define GEMV_WARPS 8
#define GEMV_NORM_BLOCKS 2 /* blocks an SM of a GEMV with the RMSNorm prologue (each reads the x rows once) */
#define LUT_STRIDE 257

/* x rows in the GEMV's shared memory are swizzled: 16-byte piece q of chunk c (32 halves) sits at piece
 * q ^ xsw(c) of the chunk. A warp reads 32 consecutive chunks (a lane's 64 bytes, one piece at a time):
 * unswizzled, a quarter-warp's 8 pieces fall on 2 bank groups (4-way conflict), swizzled on 8 */
__device__ __forceinline__ int xsw(int c) { return (c >> 1) & 3; }
/* the swizzled index of element e of a row */
__device__ __forceinline__ int xsw_idx(int e) { return (e & ~31) | ((((e >> 3) & 3) ^ xsw(e >> 5)) << 3) | (e & 7); }

/* x chunk (32 halves) of row m as 16 half2, and its sum; sw: the chunk's swizzle (0 for x in global
 * memory) */
template <bool LUT>
__device__ __forceinline__ float load_x_chunk(const half *__restrict__ x, int ldx, int m, int c, half2 xv[16],
                                              int sw = 0) {
    const uint4 *xp = reinterpret_cast<const uint4 *>(x + (size_t)m * ldx + (size_t)c * 32);
#pragma unroll
    for (int q = 0; q < 4; q++) {
        uint4 t = xp[q ^ sw];
        xv[4 * q + 0] = *reinterpret_cast<half2 *>(&t.x);
        xv[4 * q + 1] = *reinterpret_cast<half2 *>(&t.y);
        xv[4 * q + 2] = *reinterpret_cast<half2 *>(&t.z);
        xv[4 * q + 3] = *reinterpret_cast<half2 *>(&t.w);
    }
    half2 t8[8];
#pragma unroll
    for (int i = 0; i < 8; i++) t8[i] = __hadd2(xv[2 * i], xv[2 * i + 1]);
#pragma unroll
    for (int i = 0; i < 4; i++) t8[i] = __hadd2(t8[2 * i], t8[2 * i + 1]);
    float2 f0 = __half22float2(__hadd2(t8[0], t8[1])), f1 = __half22float2(__hadd2(t8[2], t8[3]));
    if (LUT) {
        /* byte k of an interleaved word holds elements (0,2), (4,6), (1,3), (5,7) */
#pragma unroll
        for (int wd = 0; wd < 4; wd++) {
            half2 a = xv[4 * wd], b = xv[4 * wd + 1], cc = xv[4 * wd + 2], d = xv[4 * wd + 3];
            xv[4 * wd + 0] = __lows2half2(a, b);
            xv[4 * wd + 1] = __lows2half2(cc, d);
            xv[4 * wd + 2] = __highs2half2(a, b);
            xv[4 * wd + 3] = __highs2half2(cc, d);
        }
    }
    return f0.x + f0.y + f1.x + f1.y;
}

/* dot of one 16-byte weight chunk (scale/min pv) with one x chunk */
template <bool LUT>
__device__ __forceinline__ void dequant_chunk(uint4 wv, const half2 *lt, half2 q[16]) {
    const uint32_t wd4[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int wd = 0; wd < 4; wd++) {
        if (LUT) {
#pragma unroll
            for (int k = 0; k < 4; k++) q[4 * wd + k] = lt[(wd4[wd] >> (8 * k)) & 0xffu];
        } else {
            lk_dequant8(wd4[wd], &q[4 * wd]);
        }
    }
}


/* RMSNorm prologue pieces: the sum of squares of 4 inputs; 4 normalised, weighted inputs as fp16 (inputs
 * 4i..4i+3, at their swizzled place when sw) */
__device__ __forceinline__ void store_normed4(half2 *dst, int i, float4 v, float4 g, float inv, bool sw) {
    const int p = (sw ? xsw_idx(4 * i) : 4 * i) >> 1;
    normed4(v, g, inv, dst[p], dst[p + 1]);
}

/* GEMV for 1-4 rows. A warp owns RR weight rows (RR consecutive outputs, or
 * RR/2 SwiGLU pairs) at a time; lanes stride over K in 16-byte chunks (32
 * weights, a quarter of a group), U chunks per lane in flight before any is
 * used. Warps loop over row sets (grid-stride), so few long-lived warps keep
 * RR*U loads in flight each. Split-K (gridDim.y > 1, residual add only, the
 * grid then covers each row set once): partials, and the last block of a row
 * range sums the splits in a fixed order, so results are deterministic. */
/* grid-wide barrier of a kernel whose nblk blocks are all resident (k_ffn_fused sizes its grid by the
 * occupancy query): bar[0] counts arrivals, bar[32] is the generation; the last block to arrive
 * resets the count and moves the generation on. The fences and acquire/release accesses make every
 * write before the barrier visible to every block after it (as cooperative groups' grid sync). */
__device__ __forceinline__ void grid_barrier(unsigned *bar, int nblk) {
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned *count = bar, *gen = bar + 32, g, prev, cur;
        asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(g) : "l"(gen) : "memory");
        __threadfence();
        asm volatile("atom.acq_rel.gpu.add.u32 %0, [%1], 1;" : "=r"(prev) : "l"(count) : "memory");
        if (prev == (unsigned)nblk - 1) {
            asm volatile("st.relaxed.gpu.u32 [%0], 0;" ::"l"(count) : "memory");
            asm volatile("st.release.gpu.u32 [%0], %1;" ::"l"(gen), "r"(g + 1) : "memory");
        } else {
            do {
                asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(cur) : "l"(gen) : "memory");
            } while (cur == g);
        }
        __threadfence();
    }
    __syncthreads();
}

/* The GEMV itself, for the kernel below (its grid) and for the phases of k_ffn_fused (nblk blocks,
 * this one bid; bar: the grid barrier that replaces the PDL wait, NULL for the first phase).
 * xmode: bit 0 swizzles x in shared memory (xsw), bit 1 copies x rows without the norm prologue into
 * shared memory first (the caller gives M K halves of it): a warp's direct 64-byte-a-lane reads of x
 * from global memory touch 16 L1 lines each (GEMV_XS in launch_gemv); bit 4 triggers the next kernel right
 * after the PDL wait (GEMV_TRIGGER); bit 5 lets PF take its lean loop (GEMV_LEAN).
 * HD: centred weights and the fp16 chunk dot (dot_chunk_c) instead of dot_chunk (GEMV_HDOT).
 * PF: the next chunk step always in flight, across units too (one row; GEMV_PF in launch_gemv) */
template <int M, int RR, int U, bool LUT, bool HD = false, bool PF = false>
__device__ __forceinline__ void gemv_body(const uint4 *__restrict__ W, const half2 *__restrict__ P,
                                          const half *__restrict__ x, int ldx, int K, int n_out, int hidden, void *out,
                                          int ldo, int mode, float *__restrict__ partial, int *__restrict__ counters,
                                          const lk_rope_epi &re, const lk_norm_in &nin, int nblk, int bid,
                                          unsigned *bar, int xmode) {
    __shared__ half2 lut[LUT ? 8 * LUT_STRIDE : 1];
    __shared__ int is_last;
    extern __shared__ __align__(16) half x_norm[]; /* [M][K] when nin.w or xs & 2 */
    const bool swz = xmode & 1;
    const bool x_sh = nin.w || (xmode & 2); /* the prologue puts x in x_norm */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bool swiglu = mode == LK_OUT_SWIGLU_F16, rope = mode == LK_OUT_QKV_ROPE;
    /* pairs: SwiGLU (row j with row hidden + j) and rope (dim i with dim i + head_dim/2) */
    const bool paired = swiglu || rope;
    const int outs = paired ? RR / 2 : RR;
    const int half_hd = re.hd / 2;
    const int chunks = K >> 5, groups = K >> 7;
    const int S = bar ? 1 : gridDim.y, s = bar ? 0 : blockIdx.y;
    const int per = (chunks + S - 1) / S, c0 = s * per, c1 = min(chunks, c0 + per);
    /* rope: n_out rows = n_out / 2 pairs, RR / 2 pairs per unit */
    const int units = rope ? n_out / RR : (n_out + outs - 1) / outs;
    /* the weight rows of a unit (RR consecutive outputs, or RR/2 SwiGLU/rotary pairs) */
    auto unit_rows = [&](int unit, int rows[RR], bool ok[RR], int &head, int &i0) {
        const int j0 = unit * outs;
        head = 0;
        i0 = 0;
        if (rope) {
            head = unit / (half_hd / outs);
            i0 = (unit % (half_hd / outs)) * outs;
        }
#pragma unroll
        for (int r = 0; r < RR; r++) {
            const int o = paired ? (r < RR / 2 ? r : r - RR / 2) : r;
            if (rope) rows[r] = head * re.hd + i0 + o + (r < RR / 2 ? 0 : half_hd);
            else rows[r] = swiglu ? (r < RR / 2 ? j0 + o : hidden + j0 + o) : j0 + r;
            ok[r] = rope ? rows[r] < n_out : j0 + o < n_out;
        }
    };
    /* every warp's first chunks are loaded before the PDL wait and the norm prologue. Measured (H100,
     * benchmarks/NOTES.md): 1-2 rows a warp v20, qkv 5.93 -> 5.50 us, o/down 5.88 -> 5.66; 4 rows a warp
     * (gate_up, LM head) lost alone (v20, 13.47 -> 14.78 us) but won once the kernel before it triggers
     * right after its wait (v54: batch 1 1,831/1,837 -> 1,940/1,938 tok/s, 3B 806/808 -> 854/854); 4 rows
     * are held to 128 registers (2 blocks an SM) by the launch bounds */
    float acc[RR][M];
    int j0 = 0;
    bool ok[RR];
    /* one row, 1-2 weight rows per warp: lane 0 reads the epilogue's inputs (the residual it adds to,
     * or the position, slot and rotary cos/sin) before the K loop, so their latency overlaps it */
    constexpr bool EARLY = M == 1 && RR <= 2;
    float ea[RR][M], eb[RR][M];
    int epos[M], eslot[M];
    bool early = false;
    auto load_epilogue = [&](int head, int i0) {
        early = false;
        if (!EARLY || S != 1 || lane != 0) return;
        if (rope) {
#pragma unroll
            for (int m = 0; m < M; m++) {
                epos[m] = re.pos[m];
                eslot[m] = re.slot[m];
                if (head < re.n_heads + re.n_kv)
#pragma unroll
                    for (int o = 0; o < RR / 2; o++) {
                        ea[o][m] = re.cos_t[(size_t)epos[m] * half_hd + i0 + o];
                        eb[o][m] = re.sin_t[(size_t)epos[m] * half_hd + i0 + o];
                    }
            }
        } else if (mode == LK_OUT_ADD_F32) {
#pragma unroll
            for (int r = 0; r < RR; r++)
#pragma unroll
                for (int m = 0; m < M; m++)
                    if (ok[r]) ea[r][m] = ((const float *)out)[(size_t)m * ldo + j0 + r];
        }
        early = true;
    };
    /* the warp's sums of a unit, then (no split) its outputs */
    auto finish_unit = [&](int head, int i0) {
#pragma unroll
        for (int r = 0; r < RR; r++)
#pragma unroll
            for (int m = 0; m < M; m++) acc[r][m] = lk_warp_sum(acc[r][m]);
        if (S == 1 && lane == 0 && rope) {
#pragma unroll
            for (int m = 0; m < M; m++) {
                const int p = EARLY && early ? epos[m] : re.pos[m], sl = EARLY && early ? eslot[m] : re.slot[m];
#pragma unroll
                for (int o = 0; o < RR / 2; o++) {
                    const int i = i0 + o;
                    const float a = acc[o][m], b = acc[o + RR / 2][m];
                    if (head >= re.n_heads + re.n_kv) { /* v: no rotation */
                        half *d = re.vc + (((size_t)sl * re.n_kv + (head - re.n_heads - re.n_kv)) * re.max_seq + p) * re.hd;
                        d[i] = __float2half(a);
                        d[i + half_hd] = __float2half(b);
                        continue;
                    }
                    const float c = EARLY && early ? ea[o][m] : re.cos_t[(size_t)p * half_hd + i];
                    const float sn = EARLY && early ? eb[o][m] : re.sin_t[(size_t)p * half_hd + i];
                    const half na = __float2half(a * c - b * sn), nb = __float2half(b * c + a * sn);
                    if (head < re.n_heads) {
                        half *d = (half *)out + (size_t)m * ldo + (size_t)head * re.hd;
                        d[i] = na;
                        d[i + half_hd] = nb;
                    } else {
                        half *d = re.kc + (((size_t)sl * re.n_kv + (head - re.n_heads)) * re.max_seq + p) * re.hd;
                        d[i] = na;
                        d[i + half_hd] = nb;
                    }
                }
            }
        } else if (S == 1 && lane == 0) {
            if (swiglu) {
#pragma unroll
                for (int o = 0; o < RR / 2; o++)
                    if (ok[o])
#pragma unroll
                        for (int m = 0; m < M; m++)
                            epi_store(out, ldo, mode, m, j0 + o, lk_silu(acc[o][m]) * acc[o + RR / 2][m]);
            } else {
#pragma unroll
                for (int r = 0; r < RR; r++)
                    if (ok[r])
#pragma unroll
                        for (int m = 0; m < M; m++) {
                            if (EARLY && early && mode == LK_OUT_ADD_F32)
                                ((float *)out)[(size_t)m * ldo + j0 + r] = ea[r][m] + acc[r][m];
                            else
                                epi_store(out, ldo, mode, m, j0 + r, acc[r][m]);
                        }
            }
        }
    };
    /* after the PDL wait: the RMSNorm prologue (this block normalises the x rows into shared
     * memory) and the LUT; the caller may put loads that do not depend on the previous kernel first */
    auto prologue = [&]() {
        if (bar) {
            grid_barrier(bar, nblk);
        } else {
            lk_pdl_prologue();
            if (xmode & 16) lk_pdl_trigger();
        }
        /* one row with K <= 4096: x and the norm weights are read once, into registers, both before
         * the block barrier (one L2 round trip instead of two); same sums in the same order as the
         * general form below, so the results are identical */
        constexpr int XR = 4;
        if (M == 1 && nin.w && (K >> 2) <= XR * GEMV_WARPS * 32) {
            __shared__ float red1[GEMV_WARPS];
            const int K4 = K >> 2;
            const float4 *xr = reinterpret_cast<const float4 *>(nin.x), *wr = reinterpret_cast<const float4 *>(nin.w);
            float4 xv[XR], gv[XR];
#pragma unroll
            for (int j = 0; j < XR; j++) {
                const int i = threadIdx.x + j * GEMV_WARPS * 32;
                if (i < K4) {
                    xv[j] = xr[i];
                    gv[j] = wr[i];
                }
            }
            float ss = 0.0f;
#pragma unroll
            for (int j = 0; j < XR; j++) {
                const float4 v = xv[j];
                if (threadIdx.x + j * GEMV_WARPS * 32 < K4) ss += sumsq4(v);
            }
            const float t = lk_block_sum_bar<GEMV_WARPS>(ss, red1, warp, [] { __syncthreads(); });
            const float inv = rsqrtf(t / (float)K + nin.eps);
            half2 *dst = reinterpret_cast<half2 *>(x_norm);
#pragma unroll
            for (int j = 0; j < XR; j++) {
                const int i = threadIdx.x + j * GEMV_WARPS * 32;
                if (i < K4) store_normed4(dst, i, xv[j], gv[j], inv, swz);
            }
        } else if (nin.w) {
            /* the RMSNorm kernel's work, per block: x rows are L2-resident (8 KB each at 1B) */
            __shared__ float red[M][GEMV_WARPS];
            const int K4 = K >> 2;
            float ss[M];
#pragma unroll
            for (int m = 0; m < M; m++) {
                ss[m] = 0.0f;
                const float4 *xr = reinterpret_cast<const float4 *>(nin.x + (size_t)m * K);
                for (int i = threadIdx.x; i < K4; i += blockDim.x) ss[m] += sumsq4(xr[i]);
                ss[m] = lk_warp_sum(ss[m]);
                if (lane == 0) red[m][warp] = ss[m];
            }
            __syncthreads();
#pragma unroll
            for (int m = 0; m < M; m++) {
                float t = 0.0f;
#pragma unroll
                for (int w = 0; w < GEMV_WARPS; w++) t += red[m][w];
                const float inv = rsqrtf(t / (float)K + nin.eps);
                const float4 *xr = reinterpret_cast<const float4 *>(nin.x + (size_t)m * K);
                const float4 *wr = reinterpret_cast<const float4 *>(nin.w);
                half2 *dst = reinterpret_cast<half2 *>(x_norm + (size_t)m * K);
                for (int i = threadIdx.x; i < K4; i += blockDim.x) store_normed4(dst, i, xr[i], wr[i], inv, swz);
            }
        } else if (xmode & 2) {
            /* the block's K range of each x row, 16 bytes a thread at a time (coalesced), to its
             * (swizzled) place; XB pieces a thread loaded before any is stored, so the copy of a long row
             * (K = 8,192: 4 pieces a thread) waits for L2 once (a plain loop compiled to one load, store
             * and branch a piece: batch 1 +0.8%, benchmarks/NOTES.md v55) */
            constexpr int XB = 4;
            const int n16 = (c1 - c0) * 4, tot = M * n16;
            uint4 *dst = reinterpret_cast<uint4 *>(x_norm);
            for (int t0 = threadIdx.x; t0 < tot; t0 += XB * blockDim.x) {
                uint4 v[XB];
                int at[XB]; /* each piece's index in x_norm; -1 past the end */
#pragma unroll
                for (int j = 0; j < XB; j++) {
                    const int t = t0 + j * blockDim.x;
                    at[j] = -1;
                    if (t < tot) {
                        const int m = M == 1 ? 0 : t / n16, u = t - m * n16, c = c0 + (u >> 2), q = u & 3;
                        v[j] = reinterpret_cast<const uint4 *>(x + (size_t)m * ldx)[4 * c + q];
                        at[j] = m * (K / 8) + 4 * c + (swz ? q ^ xsw(c) : q);
                    }
                }
#pragma unroll
                for (int j = 0; j < XB; j++)
                    if (at[j] >= 0) dst[at[j]] = v[j];
            }
        }
        if (x_sh) {
            __syncthreads();
            x = x_norm;
            ldx = K;
        }
        if (LUT) {
            for (int i = threadIdx.x; i < 8 * LUT_STRIDE; i += blockDim.x) {
                int b = (i % LUT_STRIDE) & 255;
                lut[i] = __halves2half2(__int2half_rn(b & 15), __int2half_rn(b >> 4));
            }
            __syncthreads();
        }
    };
    /* U chunks per weight row from chunk c on (zeros past the row set or the split's range) */
    auto load_item = [&](const int (&rows)[RR], const bool (&okr)[RR], int c, uint4 (&wv)[U][RR], half2 (&pv)[U][RR]) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < RR; r++) {
                const int cc = c + 32 * u;
                if (okr[r] && cc < c1) {
                    wv[u][r] = ld_stream(W + (size_t)rows[r] * chunks + cc);
                    pv[u][r] = P[(size_t)rows[r] * groups + (cc >> 2)];
                } else {
                    wv[u][r] = make_uint4(0, 0, 0, 0);
                    pv[u][r] = __float2half2_rn(0.0f);
                }
            }
    };
    auto compute_item = [&](int c, const uint4 (&wv)[U][RR], const half2 (&pv)[U][RR], const half2 *lt) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int cc = c + 32 * u;
            if (cc >= c1) break;
#pragma unroll
            for (int m = 0; m < M; m++) {
                half2 xv[16];
                const float xs = load_x_chunk<LUT>(x, ldx, m, cc, xv, x_sh && swz ? xsw(cc) : 0);
#pragma unroll
                for (int r = 0; r < RR; r++) {
                    half2 q[16];
                    const float2 sm = __half22float2(pv[u][r]);
                    if constexpr (HD) {
                        const uint32_t wd4[4] = {wv[u][r].x, wv[u][r].y, wv[u][r].z, wv[u][r].w};
#pragma unroll
                        for (int wd = 0; wd < 4; wd++) lk_dequant8_z<8>(wd4[wd], &q[4 * wd]);
                        acc[r][m] += sm.x * dot_chunk_c(q, xv) + fmaf(8.0f, sm.x, sm.y) * xs;
                    } else {
                        dequant_chunk<LUT>(wv[u][r], lt, q);
                        acc[r][m] += sm.x * dot_chunk(q, xv) + sm.y * xs;
                    }
                }
            }
        }
    };
    {
        /* the warp's first row set: its first chunks go out before the PDL wait and the norm
         * prologue (weights do not depend on the previous kernel), so their latency overlaps the
         * previous kernel (which triggered this one right after its own wait) and the prologue
         * instead of following them */
        const int first = bid * GEMV_WARPS + warp, gs = nblk * GEMV_WARPS;
        int rows0[RR] = {}, head0 = 0, i00 = 0;
        bool ok0[RR] = {};
        uint4 w0[U][RR];
        half2 p0[U][RR];
        if (first < units) {
            unit_rows(first, rows0, ok0, head0, i00);
            load_item(rows0, ok0, c0 + lane, w0, p0);
        }
        prologue();
        const half2 *lt = lut + (lane & 7) * LUT_STRIDE;
        /* a unit's start: its outputs' index, zeroed sums, the epilogue's inputs */
        auto begin_unit = [&](int unit, int head, int i0) {
            j0 = unit * outs;
#pragma unroll
            for (int r = 0; r < RR; r++)
#pragma unroll
                for (int m = 0; m < M; m++) acc[r][m] = 0.0f;
            load_epilogue(head, i0);
        };
        if constexpr (PF) {
            /* PF: the step after the one being computed is always in flight, across the units of
             * the grid-stride loop too (the LM head's warps walk ~15 units each); w0 / p0 hold the step being
             * computed. A warp-uniform step count: load_item zeros and compute_item skips chunks past c1 */
            const int steps = (c1 - c0 + 32 * U - 1) / (32 * U);
            int rows[RR], head = head0, i0 = i00;
#pragma unroll
            for (int r = 0; r < RR; r++) {
                rows[r] = rows0[r];
                ok[r] = ok0[r];
            }
            /* the step loaded in wn / pn becomes the one computed next */
            auto take = [&](const uint4 (&wn)[U][RR], const half2 (&pn)[U][RR]) {
#pragma unroll
                for (int u = 0; u < U; u++)
#pragma unroll
                    for (int r = 0; r < RR; r++) {
                        w0[u][r] = wn[u][r];
                        p0[u][r] = pn[u][r];
                    }
            };
            /* lean (xmode bit 5, GEMV_LEAN in launch_gemv): where every lane has the same whole chunk steps (no
             * split, K a multiple of 1,024 U), the same loads and sums without the general loop's per-chunk
             * predicates and zero fills, and a unit's row addresses made once, not at each step's loads. Rows
             * past n_out read the unit's first row: their sums are never stored. Same chunks, same order: same
             * bits. Measured (H200, NOTES v84): the LM head alone 6% fewer instructions, 44.4 -> 41.7 us; inside
             * the decode step no change */
            if ((xmode & 32) && S == 1 && chunks % (32 * U) == 0) {
                const uint4 *wa[RR]; /* the unit whose steps are loading: row r at the lane's first chunk */
                const half2 *pa[RR]; /* and its group */
                auto point = [&](const int (&rr)[RR], const bool (&okr)[RR]) {
#pragma unroll
                    for (int r = 0; r < RR; r++) {
                        const size_t row = (size_t)(okr[r] ? rr[r] : rr[0]);
                        wa[r] = W + row * chunks + lane;
                        pa[r] = P + row * groups + (lane >> 2);
                    }
                };
                /* step k's chunks (unit's chunk lane + 32 (k U + u)) and groups into wn / pn */
                auto load_step = [&](int k, uint4 (&wn)[U][RR], half2 (&pn)[U][RR]) {
#pragma unroll
                    for (int u = 0; u < U; u++)
#pragma unroll
                        for (int r = 0; r < RR; r++) {
                            wn[u][r] = ld_stream(wa[r] + 32 * (k * U + u));
                            pn[u][r] = pa[r][8 * (k * U + u)];
                        }
                };
                point(rows, ok);
                for (int unit = first; unit < units; unit += gs) {
                    begin_unit(unit, head, i0);
                    const bool more = unit + gs < units;
                    for (int k = 0; k + 1 < steps; k++) {
                        uint4 wn[U][RR];
                        half2 pn[U][RR];
                        load_step(k + 1, wn, pn);
                        compute_item(lane + k * 32 * U, w0, p0, lt);
                        take(wn, pn);
                    }
                    int nhead = 0, ni0 = 0;
                    bool nok[RR] = {};
                    uint4 wn[U][RR];
                    half2 pn[U][RR];
                    if (more) {
                        unit_rows(unit + gs, rows, nok, nhead, ni0);
                        point(rows, nok);
                        load_step(0, wn, pn);
                    }
                    compute_item(lane + (steps - 1) * 32 * U, w0, p0, lt);
                    if (more) take(wn, pn);
                    finish_unit(head, i0);
#pragma unroll
                    for (int r = 0; r < RR; r++) ok[r] = nok[r];
                    head = nhead;
                    i0 = ni0;
                }
            } else {
                for (int unit = first; unit < units; unit += gs) {
                    begin_unit(unit, head, i0);
                    int nrows[RR] = {}, nhead = 0, ni0 = 0;
                    bool nok[RR] = {};
                    const bool more = unit + gs < units;
                    for (int k = 0; k < steps; k++) {
                        uint4 wn[U][RR];
                        half2 pn[U][RR];
                        const bool next = k + 1 < steps || more;
                        if (k + 1 < steps) {
                            load_item(rows, ok, c0 + lane + (k + 1) * 32 * U, wn, pn);
                        } else if (more) {
                            unit_rows(unit + gs, nrows, nok, nhead, ni0);
                            load_item(nrows, nok, c0 + lane, wn, pn);
                        }
                        compute_item(c0 + lane + k * 32 * U, w0, p0, lt);
                        if (next) take(wn, pn);
                    }
                    finish_unit(head, i0);
#pragma unroll
                    for (int r = 0; r < RR; r++) {
                        rows[r] = nrows[r];
                        ok[r] = nok[r];
                    }
                    head = nhead;
                    i0 = ni0;
                }
            }
        } else {
            /* one row set: chunk steps, then the warp's sums and outputs (pre: its first step is in w0/p0) */
            auto run_unit = [&](int unit, const int (&rows)[RR], int head, int i0, bool pre) {
                begin_unit(unit, head, i0);
                int c = c0 + lane;
                if (pre) {
                    if (c < c1) compute_item(c, w0, p0, lt);
                    c += 32 * U;
                }
                for (; c < c1; c += 32 * U) {
                    uint4 wv[U][RR];
                    half2 pv[U][RR];
                    load_item(rows, ok, c, wv, pv);
                    compute_item(c, wv, pv, lt);
                }
                finish_unit(head, i0);
            };
            if (first < units) {
#pragma unroll
                for (int r = 0; r < RR; r++) ok[r] = ok0[r];
                run_unit(first, rows0, head0, i00, true);
            }
            for (int unit = first + gs; unit < units; unit += gs) {
                int rows[RR], head, i0;
                unit_rows(unit, rows, ok, head, i0);
                run_unit(unit, rows, head, i0, false);
            }
        }
    }
    if (S == 1) return;
    /* split-K (residual add only; each warp had at most one unit) */
    const bool had = bid * GEMV_WARPS + warp < units;
    if (lane == 0 && had)
#pragma unroll
        for (int r = 0; r < RR; r++)
            if (ok[r])
#pragma unroll
                for (int m = 0; m < M; m++) partial[((size_t)s * M + m) * n_out + j0 + r] = acc[r][m];
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int prev = atomicAdd(&counters[bid], 1);
        is_last = prev == S - 1;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    if (lane == 0 && had) {
#pragma unroll
        for (int r = 0; r < RR; r++) {
            if (!ok[r]) continue;
#pragma unroll
            for (int m = 0; m < M; m++) {
                float v = 0.0f;
                for (int t = 0; t < S; t++) v += __ldcg(&partial[((size_t)t * M + m) * n_out + j0 + r]);
                epi_store(out, ldo, mode, m, j0 + r, v);
            }
        }
    }
    if (threadIdx.x == 0) counters[bid] = 0;
}

template <int M, int RR, int U, bool LUT, bool HD = false, bool PF = false>
__global__ void __launch_bounds__(GEMV_WARPS * 32, RR > 2 ? 2 : 0)
    k_gemv_q4(const uint4 *__restrict__ W, const half2 *__restrict__ P, const half *__restrict__ x, int ldx, int K,
              int n_out, int hidden, void *out, int ldo, int mode, float *__restrict__ partial,
              int *__restrict__ counters, lk_rope_epi re, lk_norm_in nin, int xmode) {
    gemv_body<M, RR, U, LUT, HD, PF>(W, P, x, ldx, K, n_out, hidden, out, ldo, mode, partial, counters, re, nin,
                                     gridDim.x, blockIdx.x, nullptr, xmode);
    lk_pdl_trigger();
}

/* One launch for a layer's o projection (+ residual), FFN RMSNorm + gate_up + SwiGLU and down
 * (+ residual) at one row: the three GEMVs as phases of one grid, a grid barrier between them
 * instead of a kernel boundary, and each phase's first weight chunks loaded before its barrier.
 * Rows per warp as matmul_impl picks them for these shapes (o and down 1, gate_up 4); 2 chunks in
 * flight per lane; the default chunk dot (HD), so the results match the separate kernels bit for
 * bit. */
__global__ void __launch_bounds__(GEMV_WARPS * 32, 2) k_ffn_fused(lk_ffn_args a, unsigned *bar) {
    lk_rope_epi re = {};
    re.hd = 2;
    const lk_norm_in none = {nullptr, nullptr, 0.0f};
    const uint4 *o_w = (const uint4 *)a.o_w, *gu_w = (const uint4 *)a.gu_w, *dn_w = (const uint4 *)a.dn_w;
    gemv_body<1, 1, 2, false, true>(o_w, a.o_p, a.att, a.q_dim, a.q_dim, a.dim, 0, a.x, a.dim, LK_OUT_ADD_F32,
                                    nullptr, nullptr, re, none, gridDim.x, blockIdx.x, nullptr, 1);
    gemv_body<1, 4, 2, false, true>(gu_w, a.gu_p, nullptr, a.dim, a.dim, a.hidden, a.hidden, a.ffn, a.hidden,
                                    LK_OUT_SWIGLU_F16, nullptr, nullptr, re, a.norm, gridDim.x, blockIdx.x, bar, 1);
    gemv_body<1, 1, 2, false, true>(dn_w, a.dn_p, a.ffn, a.hidden, a.hidden, a.dim, 0, a.x, a.dim, LK_OUT_ADD_F32,
                                    nullptr, nullptr, re, none, gridDim.x, blockIdx.x, bar, 1);
    lk_pdl_trigger();
}

/* ============================================================================
 * Tensor-core int4 matmul for 5+ rows: BM x BN output tiles, BK = 64,
 * 3-stage cp.async pipeline for x and the packed weights, weights
 * dequantized (lop3 + scale/min) into an fp16 tile, ldmatrix + mma.sync
 * m16n8k16 with fp32 accumulation, epilogue through shared memory.
 * ==========================================================================*/
#define TC_BK 64
#define TC_STAGES 3
#define TC_PAD 8

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem, bool pred) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = pred ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(s), "l"(gmem), "r"(n));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *smem) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* ============================================================================
 * Tiled layout (lk_q4_tile), 1-32 rows a launch (matmul_impl slices up to 64):
 * tensor cores at batch size.
 * Weights are the mma A operand (16 rows x k16), the tokens the B operand (n8
 * tiles), so a 16-row block of W is read once for all tokens. Each lane loads
 * its 16 bytes of a 16x64 tile, which are its A fragments for four k16 steps,
 * and two 16-byte loads of x for the same 16 (contiguous) inputs of a token.
 * The fragments keep the magic-number values (1024 + q for rows g, 1024 + 16 q
 * for rows g + 8): no subtraction per weight; per group the accumulators are
 * corrected with the token sums of x (one more mma against ones) and scaled:
 *   out += s * (C - 1024 X) / {1|16} + min * X.
 * A block's 8 warps (16 for 1B down, all along K) are WU row blocks ("units": one 16-row block, or two for
 * SwiGLU / rotary pairs, or two consecutive ones on LM-head-wide plain matrices: tiled_duo) x WK warps along K,
 * summed through shared memory; the
 * next group's weights are loaded before the current group is used (two in
 * flight per lane). K is split across blocks (gridDim.y) only when a benchmark
 * forces it (lk_mm_set_tune_tiled; measured slower, engines have no workspace
 * for it): then the last block of a row range sums the splits in order and
 * runs the epilogue (deterministic).
 * ==========================================================================*/
#define TG_WARPS 8
/* groups per load step of a one-block unit: G groups in flight while G are used (SwiGLU / rotary
 * pairs read two blocks, so one group of each already doubles the bytes in flight) */
#ifndef TG_GROUPS_1
#define TG_GROUPS_1 2
#endif

/* x fragments of one 64-input tile for token m: lane t's inputs 16t..16t+15 (zero past M) */
__device__ __forceinline__ void ld_xfrag(const half *__restrict__ x, int ldx, int m, int M, int k, uint4 &lo,
                                         uint4 &hi) {
    if (m < M) {
        const uint4 *p = reinterpret_cast<const uint4 *>(x + (size_t)m * ldx + k);
        lo = __ldg(p);
        hi = __ldg(p + 1);
    } else {
        lo = hi = make_uint4(0, 0, 0, 0);
    }
}

__device__ __forceinline__ uint32_t u4_word(const uint4 &v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

__device__ __forceinline__ void tile_frag(uint32_t w, uint32_t a[4]) {
    const uint32_t LO = 0x000f000fu, HI = 0x00f000f0u, EX = 0x64006400u;
    a[0] = lk_lop3_and_or(w, LO, EX);      /* rows g:     1024 + q      */
    a[1] = lk_lop3_and_or(w, HI, EX);      /* rows g + 8: 1024 + 16 q   */
    const uint32_t w8 = w >> 8;
    a[2] = lk_lop3_and_or(w8, LO, EX);
    a[3] = lk_lop3_and_or(w8, HI, EX);
}

/* one rotary pair of the qkv output of token row m (sums a, b of dims d and d + hd/2 of head `head`): q rotated
 * into out, k rotated into the cache, v into the cache as is (tiled, wgmma and register-A epilogues), in two
 * halves: rope_load reads the row's position and slot and, for q and k heads, the angle's cos/sin; rope_store
 * rotates and stores (rope_pair_store: both). An epilogue that loads a chunk of pairs before storing any saves
 * an L2 round trip a pair: the compiler cannot move a load above a store that might alias it (session 27: the
 * register-A kernel's qkv epilogue issued its cos/sin loads one pair at a time) */
struct rope_ld {
    float cs, sn;
    int p, sl;
};

__device__ __forceinline__ rope_ld rope_load(const lk_rope_epi &re, int hd, int m, int head, int d) {
    rope_ld l;
    l.p = re.pos[m];
    l.sl = re.slot[m];
    l.cs = 1.0f;
    l.sn = 0.0f;
    if (head < re.n_heads + re.n_kv) {
        l.cs = re.cos_t[(size_t)l.p * (hd / 2) + d];
        l.sn = re.sin_t[(size_t)l.p * (hd / 2) + d];
    }
    return l;
}

__device__ __forceinline__ void rope_store(const lk_rope_epi &re, int hd, void *out, int ldo, int m, int head, int d,
                                           float a, float b, const rope_ld &l) {
    const int hh = hd / 2;
    if (head >= re.n_heads + re.n_kv) { /* v: no rotation */
        half *dst = re.vc + (((size_t)l.sl * re.n_kv + (head - re.n_heads - re.n_kv)) * re.max_seq + l.p) * hd;
        dst[d] = __float2half(a);
        dst[d + hh] = __float2half(b);
    } else {
        half *dst = head < re.n_heads ? (half *)out + (size_t)m * ldo + (size_t)head * hd
                                      : re.kc + (((size_t)l.sl * re.n_kv + (head - re.n_heads)) * re.max_seq + l.p) * hd;
        dst[d] = __float2half(a * l.cs - b * l.sn);
        dst[d + hh] = __float2half(b * l.cs + a * l.sn);
    }
}

__device__ __forceinline__ void rope_pair_store(const lk_rope_epi &re, int hd, void *out, int ldo, int m, int head, int d,
                                                float a, float b) {
    rope_store(re, hd, out, ldo, m, head, d, a, b, rope_load(re, hd, m, head, d));
}

/* CH rotary pairs, every load before the first store. item(q) gives pair q: whether it is in range, its row m,
 * head and dim d, and its two values */
struct rope_item {
    bool ok;
    int m, head, d;
    float a, b;
};

template <int CH, class Item>
__device__ __forceinline__ void rope_chunk(const lk_rope_epi &re, int hd, void *out, int ldo, const Item &item) {
    rope_ld l[CH];
#pragma unroll
    for (int q = 0; q < CH; q++) {
        const rope_item it = item(q);
        l[q] = it.ok ? rope_load(re, hd, it.m, it.head, it.d) : rope_ld{1.0f, 0.0f, 0, 0};
    }
#pragma unroll
    for (int q = 0; q < CH; q++) {
        const rope_item it = item(q);
        if (it.ok) rope_store(re, hd, out, ldo, it.m, it.head, it.d, it.a, it.b, l[q]);
    }
}

/* the fp32 output (residual) a lane's accumulator e of token tile nt stands for, in the 16-row block rb: token row
 * 8 nt + 2 t + (e & 1), weight row rb * 16 + g (+ 8 for e >= 2); NULL past M or n_out */
__device__ __forceinline__ float *tiled_out_at(void *out, int ldo, int M, int n_out, int rb, int g, int t, int nt,
                                               int e) {
    const int m = 8 * nt + 2 * t + (e & 1), row = rb * 16 + g + (e >= 2 ? 8 : 0);
    return m < M && row < n_out ? (float *)out + (size_t)m * ldo + row : nullptr;
}

/* lane's outputs: rows g, g + 8 of each row block, tokens 2t, 2t + 1 (+ 8 per n8 tile) */
template <int NT, int NB>
__device__ __forceinline__ void tiled_epilogue(const float (&acc)[NB][NT][4], const int (&rb)[NB], int g, int t, int M,
                                               int N, int n_out, void *out, int ldo, int mode, const lk_rope_epi &re) {
    const bool swiglu = mode == LK_OUT_SWIGLU_F16, rope = mode == LK_OUT_QKV_ROPE;
    if constexpr (NB == 1) {
        if (mode == LK_OUT_ADD_F32_BATCHED) { /* (see epi_store) 8 residual loads (two n8 tiles), then 8 stores */
            constexpr int CT = NT < 2 ? NT : 2;
            auto at = [&](int nt, int e) { return tiled_out_at(out, ldo, M, n_out, rb[0], g, t, nt, e); };
#pragma unroll
            for (int c0 = 0; c0 < NT; c0 += CT)
                add_chunk<4 * CT>([&](int q) { return at(c0 + q / 4, q & 3); },
                                  [&](int q) { return acc[0][c0 + q / 4][q & 3]; });
            return;
        }
    }
    if (rope) { /* rotary pair: dim i of block 0 with dim i + head_dim/2 of block 1 */
        const int head = rb[0] * 16 / re.hd, i0 = rb[0] * 16 - head * re.hd + g;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) /* an n8 tile's 4 pairs a chunk */
            rope_chunk<4>(re, re.hd, out, ldo, [&](int e) {
                const int m = 8 * nt + 2 * t + (e & 1);
                return rope_item{m < M, m, head, i0 + (e >= 2 ? 8 : 0), acc[0][nt][e], acc[NB - 1][nt][e]};
            });
        return;
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int m = 8 * nt + 2 * t + (e & 1);
            if (m >= M) continue;
            const int r = g + (e >= 2 ? 8 : 0);
            const int row = rb[0] * 16 + r;
            if (row < n_out)
                epi_store(out, ldo, mode, m, row, swiglu ? lk_silu(acc[0][nt][e]) * acc[NB - 1][nt][e] : acc[0][nt][e]);
        }
    (void)N;
}

template <int NT, bool PAIR, int G, int NW, bool DUO = false, int MINB = 0>
__global__ void __launch_bounds__(NW * 32, MINB ? MINB : NW > 8 || NT * (PAIR || DUO ? 2 : 1) >= 8 ? 1 : 2)
    k_gemv_tiled(const uint4 *__restrict__ W, const half2 *__restrict__ P, const half *__restrict__ x, int ldx, int M,
                 int K, int N, int n_out, int hidden, void *out, int ldo, int mode, int WK, float *__restrict__ partial,
                 int *__restrict__ counters, lk_rope_epi re, int early) {
    static_assert(!(PAIR && DUO), "a unit is a pair or a duo, not both");
    constexpr int NB = PAIR || DUO ? 2 : 1, NE = NB * NT * 4;
    __shared__ float red[NW][NE][32]; /* WK > 1: each warp's sums, summed by warp wk = 0 */
    __shared__ int is_last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int WU = NW / WK, wu = warp / WK, wk = warp % WK;
    const int KT = K >> 6, groups = K >> 7;
    const int S = gridDim.y, s = blockIdx.y;
    const int bper = (groups + S - 1) / S, bg0 = s * bper, bg1 = min(groups, bg0 + bper);
    const int wper = (max(0, bg1 - bg0) + WK - 1) / WK, g0 = bg0 + wk * wper, g1 = min(bg1, g0 + wper);
    const bool swiglu = mode == LK_OUT_SWIGLU_F16;
    const int half_blocks = PAIR && !swiglu ? (re.hd / 2) / 16 : 1;
    const int units = DUO ? N / 32 : !PAIR ? (N + 15) / 16 : swiglu ? (n_out + 15) / 16 : N / 32;
    const int stride = gridDim.x * WU;
    const uint32_t ONES = 0x3c003c00u;
    const uint32_t ones[4] = {ONES, ONES, ONES, ONES};

    /* the 16-row blocks of a unit: one, two consecutive (DUO: plain outputs, N a multiple of 32), a SwiGLU pair
     * (j, hidden + j) or a rotary pair (dims i, i + hd/2) */
    auto blocks_of = [&](int unit, int (&rb)[NB]) {
        if (DUO) {
            rb[0] = 2 * unit;
            rb[NB - 1] = 2 * unit + 1;
        } else if (!PAIR) {
            rb[0] = unit;
        } else if (swiglu) {
            rb[0] = unit;
            rb[NB - 1] = unit + hidden / 16;
        } else {
            const int head = unit / half_blocks, j = unit % half_blocks;
            rb[0] = head * (re.hd / 16) + j;
            rb[NB - 1] = rb[0] + half_blocks;
        }
    };
    /* G groups (weights and scale/min) of a unit from grp on; zeros past the warp's range */
    auto load = [&](int unit, int grp, uint4 (&wv)[G][NB][2], half2 (&pv)[G][NB][2]) {
        int rb[NB];
        blocks_of(unit, rb);
#pragma unroll
        for (int j = 0; j < G; j++) {
            const bool in = grp + j < g1;
#pragma unroll
            for (int b = 0; b < NB; b++) {
#pragma unroll
                for (int kk = 0; kk < 2; kk++)
                    wv[j][b][kk] = in ? ld_stream(W + ((size_t)rb[b] * KT + (size_t)(grp + j) * 2 + kk) * 32 + lane)
                                      : make_uint4(0, 0, 0, 0);
                pv[j][b][0] = in ? P[((size_t)rb[b] * groups + grp + j) * 16 + g] : __float2half2_rn(0.0f);
                pv[j][b][1] = in ? P[((size_t)rb[b] * groups + grp + j) * 16 + g + 8] : __float2half2_rn(0.0f);
            }
        }
    };

    /* a unit's outputs: a duo's two blocks each as a unit of one */
    auto epilogue = [&](const float (&acc)[NB][NT][4], const int (&rb)[NB]) {
        if constexpr (DUO) {
#pragma unroll
            for (int b = 0; b < NB; b++)
                tiled_epilogue<NT, 1>(reinterpret_cast<const float(&)[1][NT][4]>(acc[b]),
                                      reinterpret_cast<const int(&)[1]>(rb[b]), g, t, M, N, n_out, out, ldo, mode, re);
        } else {
            tiled_epilogue<NT, NB>(acc, rb, g, t, M, N, n_out, out, ldo, mode, re);
        }
    };

    uint4 wc[G][NB][2], wn[G][NB][2];
    half2 pc[G][NB][2], pn[G][NB][2];
#pragma unroll
    for (int j = 0; j < G; j++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            wn[j][b][0] = wn[j][b][1] = wc[j][b][0] = wc[j][b][1] = make_uint4(0, 0, 0, 0);
            pn[j][b][0] = pn[j][b][1] = pc[j][b][0] = pc[j][b][1] = __float2half2_rn(0.0f);
        }
    /* early (TILED_EARLY in launch_gemv_tiled): bit 0, the warp's first weights go out before the PDL wait
     * (they do not depend on the previous kernel), so their DRAM latency overlaps its tail; bit 1, the next
     * kernel is triggered right after the wait instead of after the main loop */
    const bool first = blockIdx.x * WU + wu < units && g0 < g1;
    if ((early & 1) && first) load(blockIdx.x * WU + wu, g0, wc, pc);
    lk_pdl_prologue();
    if (early & 2) lk_pdl_trigger();
    if (!(early & 1) && first) load(blockIdx.x * WU + wu, g0, wc, pc);
    float acc[NB][NT][4] = {};
    for (int ub = blockIdx.x * WU; ub < units; ub += stride) {
        const int unit = ub + wu;
#pragma unroll
        for (int b = 0; b < NB; b++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[b][nt][e] = 0.0f;
        if (unit < units) {
            for (int grp = g0; grp < g1; grp += G) {
                /* the next G groups of this warp (or the first of its next unit) go in flight first */
                const int nu = grp + G < g1 ? unit : unit + stride, ngr = grp + G < g1 ? grp + G : g0;
                if (nu < units) load(nu, ngr, wn, pn);
#pragma unroll
                for (int j = 0; j < G; j++) {
                    if (grp + j >= g1) break;
                    float c[NB][NT][4], cx[NT][4];
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            cx[nt][e] = 0.0f;
#pragma unroll
                            for (int b = 0; b < NB; b++) c[b][nt][e] = 0.0f;
                        }
#pragma unroll
                    for (int kk = 0; kk < 2; kk++) {
                        /* x: two 16-byte loads per n8 tile for the four k16 steps, or (4+ tiles, to
                         * save registers) one 8-byte load per tile and step */
                        constexpr bool XK = NT >= 4;
                        uint4 xf[XK ? 1 : NT][2];
                        const int k0 = (grp + j) * 128 + kk * 64 + 16 * t;
                        if (!XK)
#pragma unroll
                            for (int nt = 0; nt < (XK ? 1 : NT); nt++)
                                ld_xfrag(x, ldx, 8 * nt + g, M, k0, xf[nt][0], xf[nt][1]);
#pragma unroll
                        for (int kb = 0; kb < 4; kb++) {
                            /* B fragment of step kb: inputs 4 kb .. 4 kb + 3 of the lane's 16 */
                            uint32_t b0[NT], b1[NT];
#pragma unroll
                            for (int nt = 0; nt < NT; nt++) {
                                if (XK) {
                                    const int m = 8 * nt + g;
                                    const uint2 v = m < M ? __ldg(reinterpret_cast<const uint2 *>(x + (size_t)m * ldx + k0 + 4 * kb))
                                                          : make_uint2(0, 0);
                                    b0[nt] = v.x;
                                    b1[nt] = v.y;
                                } else {
                                    b0[nt] = u4_word(xf[XK ? 0 : nt][kb >> 1], 2 * (kb & 1));
                                    b1[nt] = u4_word(xf[XK ? 0 : nt][kb >> 1], 2 * (kb & 1) + 1);
                                }
                            }
#pragma unroll
                            for (int b = 0; b < NB; b++) {
                                uint32_t a[4];
                                tile_frag(u4_word(wc[j][b][kk], kb), a);
#pragma unroll
                                for (int nt = 0; nt < NT; nt++) mma16816(c[b][nt], a, b0[nt], b1[nt]);
                            }
#pragma unroll
                            for (int nt = 0; nt < NT; nt++) mma16816(cx[nt], ones, b0[nt], b1[nt]);
                        }
                    }
                    /* correct and scale this group: rows g (c[0], c[1]) and g + 8 (c[2], c[3], values x16) */
#pragma unroll
                    for (int b = 0; b < NB; b++) {
                        const float2 pg = __half22float2(pc[j][b][0]), p8 = __half22float2(pc[j][b][1]);
#pragma unroll
                        for (int nt = 0; nt < NT; nt++)
#pragma unroll
                            for (int e = 0; e < 4; e++) {
                                const float X = cx[nt][e];
                                const float2 sm = e < 2 ? pg : p8;
                                const float q = e < 2 ? c[b][nt][e] - 1024.0f * X : (c[b][nt][e] - 1024.0f * X) * 0.0625f;
                                acc[b][nt][e] += sm.x * q + sm.y * X;
                            }
                    }
                }
#pragma unroll
                for (int j = 0; j < G; j++)
#pragma unroll
                    for (int b = 0; b < NB; b++) {
                        wc[j][b][0] = wn[j][b][0];
                        wc[j][b][1] = wn[j][b][1];
                        pc[j][b][0] = pn[j][b][0];
                        pc[j][b][1] = pn[j][b][1];
                    }
            }
        }
        /* one-block units adding into the residual: the unit's residual values are loaded before the K slices are
         * summed, so their L2 round trip overlaps the barriers (the same additions as add_chunk's, same bits).
         * H200 (NOTES v87, us, 16 rows): o 3.7 -> 3.4, down 7.4 -> 7.1, 3B down 10.9 -> 10.5; batch 16 +0.6-1% */
        constexpr bool RPRE = !PAIR && !DUO && NT <= 2;
        float res[RPRE ? NT : 1][4];
        const bool pre = RPRE && S == 1 && mode == LK_OUT_ADD_F32_BATCHED && !wk && unit < units;
        auto res_at = [&](int nt, int e) { return tiled_out_at(out, ldo, M, n_out, unit, g, t, nt, e); };
        if constexpr (RPRE) {
            if (pre)
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const float *r = res_at(nt, e);
                        res[nt][e] = r ? *r : 0.0f;
                    }
        }
        if (WK > 1) {
            /* sum the K slices of the WK warps of this unit (uniform: every warp runs every iteration) */
            __syncthreads();
            if (wk) {
#pragma unroll
                for (int b = 0; b < NB; b++)
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int e = 0; e < 4; e++) red[warp][(b * NT + nt) * 4 + e][lane] = acc[b][nt][e];
            }
            __syncthreads();
            if (!wk) {
                for (int w = 1; w < WK; w++)
#pragma unroll
                    for (int b = 0; b < NB; b++)
#pragma unroll
                        for (int nt = 0; nt < NT; nt++)
#pragma unroll
                            for (int e = 0; e < 4; e++) acc[b][nt][e] += red[warp + w][(b * NT + nt) * 4 + e][lane];
            }
        }
        if constexpr (RPRE) {
            if (pre) {
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float *r = res_at(nt, e);
                        if (r) *r = res[nt][e] + acc[0][nt][e];
                    }
                continue;
            }
        }
        if (S == 1 && !wk && unit < units) {
            int rb[NB];
            blocks_of(unit, rb);
            epilogue(acc, rb);
        }
    }
    if (!(early & 2)) lk_pdl_trigger();
    if (S == 1) return;
    /* split-K: the grid covers the units once (one iteration above); partials [split][token][weight row] */
    const int unit = blockIdx.x * WU + wu;
    const bool had = !wk && unit < units;
    int rb[NB] = {};
    if (had) {
        blocks_of(unit, rb);
#pragma unroll
        for (int b = 0; b < NB; b++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int m = 8 * nt + 2 * t + (e & 1), row = rb[b] * 16 + g + (e >= 2 ? 8 : 0);
                    if (m < M && row < N) partial[((size_t)s * M + m) * N + row] = acc[b][nt][e];
                }
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) is_last = atomicAdd(&counters[blockIdx.x], 1) == S - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    if (had) {
#pragma unroll
        for (int b = 0; b < NB; b++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int m = 8 * nt + 2 * t + (e & 1), row = rb[b] * 16 + g + (e >= 2 ? 8 : 0);
                    float v = 0.0f;
                    if (m < M && row < N)
                        for (int z = 0; z < S; z++) v += __ldcg(&partial[((size_t)z * M + m) * N + row]);
                    acc[b][nt][e] = v;
                }
        epilogue(acc, rb);
    }
    if (threadIdx.x == 0) counters[blockIdx.x] = 0;
}

template <int BM, int BN>
struct tc_smem {
    static constexpr int A = TC_STAGES * BM * (TC_BK + TC_PAD) * 2;
    static constexpr int BQ = TC_STAGES * BN * (TC_BK / 2);
    static constexpr int BH = BN * (TC_BK + TC_PAD) * 2;
    static constexpr int PS = TC_STAGES * BN * 4; /* scale/min of each weight row for the stage's group */
    static constexpr int C = BM * (BN + 4) * 4;
    static constexpr int MAIN = A + BQ + BH + PS;
    static constexpr int BYTES = MAIN > C ? MAIN : C;
};

/* the weight row behind local row nn of a tile kernel's block of BN rows starting at output j0: the
 * same row, or for SwiGLU blocks gate rows j0.. (first half) and up rows hidden + j0.. (second half);
 * ok: the row exists (its output column is below n_out) */
template <int BN>
struct blk_rows {
    int j0, hidden, N, n_out;
    bool swiglu;
    __device__ __forceinline__ int row(int nn) const {
        return !swiglu ? j0 + nn : nn < BN / 2 ? j0 + nn : hidden + j0 + nn - BN / 2;
    }
    __device__ __forceinline__ bool ok(int nn) const {
        return !swiglu ? j0 + nn < N : j0 + (nn < BN / 2 ? nn : nn - BN / 2) < n_out;
    }
};

template <int BM, int BN, int WM, int WN, bool TILED>
__global__ void __launch_bounds__(WM *WN * 32)
    k_mm_q4_tc(const half *__restrict__ x, int ldx, int M, const uint8_t *__restrict__ W, const half2 *__restrict__ P,
               int N, int K, int n_out, int hidden, void *out, int ldo, int mode, float *__restrict__ tc_partial,
               int *__restrict__ tc_counters) {
    lk_pdl_prologue();
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ int is_last;
    constexpr int T = WM * WN * 32, LDA = TC_BK + TC_PAD, WTM = BM / WM, WTN = BN / WN;
    constexpr int MT = WTM / 16, NT = WTN / 8;
    static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile");
    half *As = reinterpret_cast<half *>(smem);
    uint8_t *Bq = smem + tc_smem<BM, BN>::A;
    half *Bh = reinterpret_cast<half *>(smem + tc_smem<BM, BN>::A + tc_smem<BM, BN>::BQ);
    half2 *Ps = reinterpret_cast<half2 *>(smem + tc_smem<BM, BN>::A + tc_smem<BM, BN>::BQ + tc_smem<BM, BN>::BH);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp / WN, wn = warp % WN;
    const bool swiglu = mode == LK_OUT_SWIGLU_F16;
    const int m0 = blockIdx.y * BM;
    const int j0 = blockIdx.x * (swiglu ? BN / 2 : BN);
    const int groups = K >> 7, KT_all = K / TC_BK;
    /* split-K over gridDim.z: this block's k-tiles [kt0, kt0 + KT) */
    const int S = gridDim.z, per_split = (KT_all + S - 1) / S, kt0 = blockIdx.z * per_split;
    const int KT = max(0, min(KT_all, kt0 + per_split) - kt0);

    const blk_rows<BN> br{j0, hidden, N, n_out, swiglu};

    auto load_stage = [&](int kt, int stage) {
        half *a = As + stage * BM * LDA;
        for (int i = tid; i < BM * (TC_BK / 8); i += T) {
            int r = i / (TC_BK / 8), c = (i % (TC_BK / 8)) * 8;
            bool p = m0 + r < M;
            const half *src = x + (size_t)(p ? m0 + r : 0) * ldx + (size_t)kt * TC_BK + c;
            lk_cp_async16(a + r * LDA + c, src, p);
        }
        uint8_t *b = Bq + stage * BN * (TC_BK / 2);
        const int g = (kt * TC_BK) >> 7;
        if constexpr (TILED) {
            /* BN/16 tiles of 16 rows x 64 inputs, 512 contiguous bytes each */
            for (int i = tid; i < BN * 2; i += T) {
                const int tile = i >> 5, c = i & 31;
                const bool p = br.ok(tile * 16);
                const int rbi = p ? br.row(tile * 16) / 16 : 0;
                lk_cp_async16(b + tile * 512 + c * 16, W + ((size_t)rbi * (K / 64) + kt) * 512 + c * 16, p);
            }
            for (int i = tid; i < BN / 4; i += T) { /* 16 rows of params = 64 contiguous bytes */
                const int tile = i >> 2, c = i & 3;
                const bool p = br.ok(tile * 16);
                const int rbi = p ? br.row(tile * 16) / 16 : 0;
                lk_cp_async16(Ps + stage * BN + tile * 16 + c * 4, P + ((size_t)rbi * groups + g) * 16 + c * 4, p);
            }
        } else {
            for (int i = tid; i < BN * 2; i += T) {
                int nn = i >> 1, h = i & 1;
                bool p = br.ok(nn);
                const uint8_t *src = W + (size_t)(p ? br.row(nn) : 0) * (K / 2) + (size_t)kt * (TC_BK / 2) + h * 16;
                lk_cp_async16(b + nn * (TC_BK / 2) + h * 16, src, p);
            }
            for (int nn = tid; nn < BN; nn += T) {
                bool p = br.ok(nn);
                cp_async4(Ps + stage * BN + nn, P + (size_t)(p ? br.row(nn) : 0) * groups + g, p);
            }
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int k = 0; k < 4; k++) acc[i][j][k] = 0.0f;

#pragma unroll
    for (int s = 0; s < TC_STAGES - 1; s++) {
        if (s < KT) load_stage(kt0 + s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        const int stage = kt % TC_STAGES;
        cp_async_wait<TC_STAGES - 2>();
        __syncthreads();
        /* dequantize this stage's weights into Bh */
        const uint8_t *b = Bq + stage * BN * (TC_BK / 2);
        if constexpr (TILED) {
            /* each 16-byte lane chunk: four k16 blocks of rows g and g + 8 of one tile */
            for (int i = tid; i < BN * 2; i += T) {
                const int tile = i >> 5, l = i & 31, gg = l >> 2, tt = l & 3;
                const uint4 v = *reinterpret_cast<const uint4 *>(b + tile * 512 + l * 16);
                const half2 pa = Ps[stage * BN + tile * 16 + gg], pb = Ps[stage * BN + tile * 16 + gg + 8];
                const uint32_t wd4[4] = {v.x, v.y, v.z, v.w};
                /* word kb: columns c..c+3 (c = 16 tt + 4 kb) of rows gg and gg + 8 */
                half *ra = Bh + (tile * 16 + gg) * LDA + 16 * tt, *rbp = Bh + (tile * 16 + gg + 8) * LDA + 16 * tt;
#pragma unroll
                for (int kb = 0; kb < 4; kb++) {
                    uint32_t o[4];
                    dequant_tile_word(wd4[kb], pa, pb, o);
                    *reinterpret_cast<uint2 *>(ra + 4 * kb) = make_uint2(o[0], o[2]);
                    *reinterpret_cast<uint2 *>(rbp + 4 * kb) = make_uint2(o[1], o[3]);
                }
            }
        } else {
            for (int i = tid; i < BN * 2; i += T) {
                int nn = i >> 1, h = i & 1;
                uint4 v = *reinterpret_cast<const uint4 *>(b + nn * (TC_BK / 2) + h * 16);
                half2 pr = Ps[stage * BN + nn];
                half2 sc = __half2half2(__low2half(pr)), mn = __half2half2(__high2half(pr));
                const uint32_t wd4[4] = {v.x, v.y, v.z, v.w};
                half *dst = Bh + nn * LDA + h * 32;
#pragma unroll
                for (int wd = 0; wd < 4; wd++) {
                    half2 q[4];
                    lk_dequant8(wd4[wd], q);
                    uint4 o;
                    half2 w0 = __hfma2(q[0], sc, mn), w1 = __hfma2(q[1], sc, mn), w2 = __hfma2(q[2], sc, mn),
                          w3 = __hfma2(q[3], sc, mn);
                    o.x = *reinterpret_cast<uint32_t *>(&w0);
                    o.y = *reinterpret_cast<uint32_t *>(&w1);
                    o.z = *reinterpret_cast<uint32_t *>(&w2);
                    o.w = *reinterpret_cast<uint32_t *>(&w3);
                    *reinterpret_cast<uint4 *>(dst + wd * 8) = o;
                }
            }
        }
        __syncthreads();
        if (kt + TC_STAGES - 1 < KT) load_stage(kt0 + kt + TC_STAGES - 1, (kt + TC_STAGES - 1) % TC_STAGES);
        cp_async_commit();
        const half *a = As + stage * BM * LDA;
#pragma unroll
        for (int ks = 0; ks < TC_BK / 16; ks++) {
            uint32_t af[MT][4];
#pragma unroll
            for (int i = 0; i < MT; i++)
                ldmatrix_x4(af[i], a + (wm * WTM + i * 16 + (lane & 15)) * LDA + ks * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                uint32_t bf[4];
                ldmatrix_x4(bf, Bh + (wn * WTN + j * 8 + (lane >> 4) * 8 + (lane & 7)) * LDA + ks * 16 +
                                    ((lane >> 3) & 1) * 8);
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    mma16816(acc[i][j], af[i], bf[0], bf[1]);
                    mma16816(acc[i][j + 1], af[i], bf[2], bf[3]);
                }
            }
        }
    }
    cp_async_wait<0>();
    lk_pdl_trigger();
    __syncthreads();
    /* epilogue through shared memory */
    float *C = reinterpret_cast<float *>(smem);
    constexpr int LDC = BN + 4;
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++) {
            int r = wm * WTM + i * 16 + (lane >> 2), c = wn * WTN + j * 8 + (lane & 3) * 2;
            C[r * LDC + c] = acc[i][j][0];
            C[r * LDC + c + 1] = acc[i][j][1];
            C[(r + 8) * LDC + c] = acc[i][j][2];
            C[(r + 8) * LDC + c + 1] = acc[i][j][3];
        }
    __syncthreads();
    if (S > 1) {
        /* every split stores its tile; the last to arrive sums them in split order (deterministic) */
        const int tile = blockIdx.y * gridDim.x + blockIdx.x;
        float *mine = tc_partial + ((size_t)tile * S + blockIdx.z) * BM * BN;
        for (int i = tid; i < BM * BN; i += T) mine[i] = C[(i / BN) * LDC + i % BN];
        __threadfence();
        __syncthreads();
        if (tid == 0) is_last = atomicAdd(&tc_counters[tile], 1) == S - 1;
        __syncthreads();
        if (!is_last) return;
        __threadfence();
        for (int i = tid; i < BM * BN; i += T) {
            float v = 0.0f;
            for (int z = 0; z < S; z++) v += __ldcg(&tc_partial[((size_t)tile * S + z) * BM * BN + i]);
            C[(i / BN) * LDC + i % BN] = v;
        }
        if (tid == 0) tc_counters[tile] = 0;
        __syncthreads();
    }
    const int cols = swiglu ? BN / 2 : BN;
    for (int i = tid; i < BM * cols; i += T) {
        int r = i / cols, c = i % cols, m = m0 + r, jj = j0 + c;
        if (m >= M || jj >= n_out) continue;
        float v = swiglu ? lk_silu(C[r * LDC + c]) * C[r * LDC + c + BN / 2] : C[r * LDC + c];
        epi_store(out, ldo, mode, m, jj, v);
    }
}

/* ============================================================================
 * Hopper (sm_90a) tile kernel for 17+ rows (prefill, batched decode, short
 * prompts; dispatch in try_wg): wgmma.mma_async with both operands in shared
 * memory, f32 accumulators in registers; small grids split K over gridDim.z
 * (64-row blocks only; the last block sums the splits in order).
 * A block computes BM tokens x BN weight rows; its BM/64 warpgroups each own 64
 * tokens (D = x W^T: tokens are wgmma's M, weight rows its N). Per 64-input
 * k-tile: x and the raw int4 weights arrive by TMA (bulk tensor copies issued
 * by one thread, completion counted in bytes on the stage's mbarrier; v40-v41,
 * H100: gate_up at 1,024 rows 193.6 -> 149.9 us, prefill of 2,048 tokens
 * 15.96 -> 13.1 ms), scale/min by cp.async, in a ring (wg_smem: STAGES, AHEAD
 * tiles ahead); all threads dequantize the tile's
 * weights to fp16 into one of two buffers while the tensor cores still run the
 * previous tile's wgmmas, then the tile's four k16 wgmmas are issued
 * asynchronously. Shared tiles are K-major, 128 bytes (64 inputs) a row, in
 * the 128-byte swizzle: byte (r, k) = (r/8)*1024 + (r%8)*128 + ((k/8 ^ r%8)*16)
 * + (k%8)*2, which let the tensor cores read them without bank conflicts (v26:
 * gate_up 544 -> 446 us at M = 2048 against the unswizzled core-matrix
 * layout); 8 consecutive threads write 8 different bank groups. The epilogue
 * stores from the accumulators (SwiGLU pairs: the gate and up rows of a block
 * sit BN/2 apart in the same thread).
 * ==========================================================================*/
#define WG_BK 64

/* BM tokens (BM / 64 warpgroups, 2 BM threads) x BN weight rows a block (instances: 64 x 128,
 * 128 x 128, 128 x 256); STAGES copies in the ring, AHEAD of them in flight ahead of the tile being
 * dequantized (STAGES - 2: the other two are read by the wgmmas still running) */
template <int BM, int BN, int STG = 6>
struct wg_smem {
    /* STG = 3 (opt-in, LLAMA_KERNEL_WG_STAGES=3): a ring of 3 (1 k-tile ahead) in ~99 KB, so two blocks an SM */
    static constexpr int T = 2 * BM, STAGES = STG, AHEAD = STAGES - 2;
    static constexpr int X = BM * WG_BK * 2;       /* one x stage */
    static constexpr int Q = BN * (WG_BK / 2);     /* one raw weight stage */
    static constexpr int PS = BN * 4;              /* one scale/min stage */
    static constexpr int H = BN * WG_BK * 2;       /* one dequantized buffer */
    static constexpr int PB = BN * 16;             /* row-interleaved: 4 groups' scale/min a row (two of them) */
    static constexpr int BYTES = STAGES * (X + Q + PS) + 2 * H + 2 * PB + 1024; /* + alignment of the base */
};

/* descriptor of a K-major tile of 64 inputs (128 bytes) a row in the 128-byte swizzle (lk_wgmma.cuh) */
__device__ __forceinline__ uint64_t wg_desc(const void *p) { return lk_sw128_desc(p, 16); }


/* the rotary epilogue of a wgmma block (BN weight rows in natural order from j0, a multiple of the
 * head size HD = 4 OFF): accumulator i (column c, c % HD < HD / 2) pairs with accumulator i + OFF
 * (column c + HD / 2, the same token row) */
template <int BN, int OFF>
__device__ __forceinline__ void wg_rope_epilogue(const float (&acc)[BN / 2], const lk_rope_epi &re, void *out, int ldo,
                                                 int M, int n_out, int mrow, int j0, int t) {
    constexpr int HD = 4 * OFF, HH = HD / 2;
    static_assert(BN % HD == 0, "whole heads a block");
#pragma unroll
    for (int i = 0; i < BN / 2; i++) {
        const int j = i >> 2, e = i & 3, m = mrow + (e >= 2 ? 8 : 0);
        if ((8 * j) % HD >= HH) continue; /* second half of a head: the partner of i - OFF */
        const int col = j0 + 8 * j + 2 * t + (e & 1), head = col / HD, d = col % HD;
        if (m >= M || col >= n_out) continue;
        rope_pair_store(re, HD, out, ldo, m, head, d, acc[i], acc[i + OFF]);
    }
}

/* split K of the Hopper kernels (gridDim.z = S > 1; `tile`: the block's tile of outputs): every split stores its
 * R accumulators (thread-major, T threads); the last block of the tile to arrive sums them in split order
 * (deterministic) into acc, resets the tile's counter and returns true; the others return false. ZB: splits
 * whose partials it loads at once (2: half the L2 round trips, R more registers; the same additions in the
 * same order, so the same bits) */
template <int R, int T, int ZB = 1>
__device__ __forceinline__ bool wg_split_sum(float (&acc)[R], float *__restrict__ partial, int *__restrict__ counters,
                                             int tile, int S, int tid) {
    __shared__ int is_last;
    float *mine = partial + ((size_t)tile * S + blockIdx.z) * R * T;
#pragma unroll
    for (int i = 0; i < R; i++) mine[(size_t)i * T + tid] = acc[i];
    __threadfence();
    __syncthreads();
    if (tid == 0) is_last = atomicAdd(&counters[tile], 1) == S - 1;
    __syncthreads();
    if (!is_last) return false;
    __threadfence();
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = 0.0f;
    if constexpr (ZB == 1) {
        for (int z = 0; z < S; z++) {
            const float *pz = partial + ((size_t)tile * S + z) * R * T;
#pragma unroll
            for (int i = 0; i < R; i++) acc[i] += __ldcg(&pz[(size_t)i * T + tid]);
        }
    } else {
        for (int z = 0; z < S; z += ZB) {
            float p[ZB][R];
#pragma unroll
            for (int b = 0; b < ZB; b++) {
                const float *pz = partial + ((size_t)tile * S + min(z + b, S - 1)) * R * T;
#pragma unroll
                for (int i = 0; i < R; i++) p[b][i] = __ldcg(&pz[(size_t)i * T + tid]);
            }
#pragma unroll
            for (int b = 0; b < ZB; b++)
                if (z + b < S)
#pragma unroll
                    for (int i = 0; i < R; i++) acc[i] += p[b][i];
        }
    }
    if (tid == 0) counters[tile] = 0;
    return true;
}

/* LK_OUT_ADD_F32_BATCHED (see epi_store) in the wgmma kernel: a chunk's CH residual loads before its stores */
template <int R, int CH>
__device__ __forceinline__ void wg_add_epilogue(const float (&acc)[R], float *out, int ldo, int M, int n_out,
                                                int mrow, int j0, int t) {
    static_assert(R % CH == 0 && CH % 4 == 0, "whole n8 tiles a chunk");
    /* accumulator i: n8 tile i / 4, token row g (+8 for e >= 2), column 8 (i / 4) + 2 t + (e & 1); NULL when
     * past M or n_out */
    auto at = [&](int i) -> float * {
        const int e = i & 3, m = mrow + (e >= 2 ? 8 : 0), col = j0 + 8 * (i >> 2) + 2 * t + (e & 1);
        return m < M && col < n_out ? out + (size_t)m * ldo + col : nullptr;
    };
    /* accumulators 2p, 2p + 1 are columns col, col + 1 of one row (col even): one 8-byte load and store a
     * pair where rows and columns are even-sized and aligned. Half the memory instructions, the same registers
     * a chunk, the same adds. Session 27 (H200, 2,048 rows, ncu: the epilogue was ~13% of down's samples): o
     * 46 -> 42 us, down 157 -> 150; with chunks of 16 in 128 x 128 blocks it was slower (o 53, down 209) */
    if (ldo % 2 == 0 && n_out % 2 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0) {
        /* n_out even: a pair is whole where its first column is in range */
        float *base = out + (size_t)mrow * ldo + j0 + 2 * t;
        const size_t down8 = (size_t)8 * ldo;
        const bool m_a = mrow < M, m_b = mrow + 8 < M;
#pragma unroll
        for (int c0 = 0; c0 < R; c0 += CH) {
            float2 r[CH / 2];
#pragma unroll
            for (int p = 0; p < CH / 2; p++) {
                const int i = c0 + 2 * p;
                const bool hi = (i & 3) >= 2, ok = (hi ? m_b : m_a) && j0 + 8 * (i >> 2) + 2 * t < n_out;
                r[p] = ok ? *reinterpret_cast<const float2 *>(base + (hi ? down8 : 0) + 8 * (i >> 2))
                          : make_float2(0.0f, 0.0f);
            }
#pragma unroll
            for (int p = 0; p < CH / 2; p++) {
                const int i = c0 + 2 * p;
                const bool hi = (i & 3) >= 2, ok = (hi ? m_b : m_a) && j0 + 8 * (i >> 2) + 2 * t < n_out;
                if (ok)
                    *reinterpret_cast<float2 *>(base + (hi ? down8 : 0) + 8 * (i >> 2)) =
                        make_float2(r[p].x + acc[i], r[p].y + acc[i + 1]);
            }
        }
        return;
    }
#pragma unroll
    for (int c0 = 0; c0 < R; c0 += CH)
        add_chunk<CH>([&](int q) { return at(c0 + q); }, [&](int q) { return acc[c0 + q]; });
}

/* one k-tile's raw weights q (a stage) -> fp16 tile hb, K-major in the 128-byte swizzle, by T threads (tid):
 * BN rows x 64 inputs. Scale/min: ps (the stage's, tiled or row-interleaved without p4) or Pb (row-interleaved,
 * p4: 4 groups a row in one of two buffers, by k-tile kt). qn, qh: the row-interleaved thread's first row and
 * half (see k_mm_q4_wg) */
template <int BN, int T, bool TILED>
__device__ __forceinline__ void wg_dequant(const unsigned char *q, const half2 *ps, const half2 *Pb, int p4, int kt,
                                           unsigned char *hb, int tid, int qn, int qh) {
    constexpr int QJ = BN * 2 / T; /* 16-byte raw weight chunks a thread dequantizes a k-tile */
#pragma unroll
    for (int j = 0; j < QJ; j++) {
        if constexpr (TILED) {
            /* lane chunk l of tile (tid >> 5) + T/32 j: rows gg, gg + 8, inputs 16 tt .. 16 tt + 15
             * (word kb: 16 tt + 4 kb ..); l chosen so 8 consecutive threads store 8 rows */
            const int tile = (tid >> 5) + T / 32 * j, gg = tid & 7, tt = (tid >> 3) & 3;
            const uint4 v = *reinterpret_cast<const uint4 *>(q + tile * 512 + ((gg << 2) | tt) * 16);
            const half2 pa = ps[tile * 16 + gg], pb = ps[tile * 16 + gg + 8];
            const uint32_t wd4[4] = {v.x, v.y, v.z, v.w};
            const int r = tile * 16 + gg;
#pragma unroll
            for (int h2 = 0; h2 < 2; h2++) { /* words 2 h2, 2 h2 + 1: inputs 16 tt + 8 h2 .. + 7 */
                uint32_t o0[4], o1[4];
                dequant_tile_word(wd4[2 * h2], pa, pb, o0);
                dequant_tile_word(wd4[2 * h2 + 1], pa, pb, o1);
                *reinterpret_cast<uint4 *>(hb + lk_sw128_off(r, 2 * tt + h2)) = make_uint4(o0[0], o0[2], o1[0], o1[2]);
                *reinterpret_cast<uint4 *>(hb + lk_sw128_off(r + 8, 2 * tt + h2)) = make_uint4(o0[1], o0[3], o1[1], o1[3]);
            }
        } else {
            const int n = qn + T / 2 * j;
            const uint4 v = *reinterpret_cast<const uint4 *>(q + n * 32 + qh * 16);
            const half2 pr = p4 ? Pb[((kt >> 3) & 1) * BN * 4 + n * 4 + ((kt >> 1) & 3)] : ps[n];
            const half2 sc = __half2half2(__low2half(pr)), mn = __half2half2(__high2half(pr));
            const uint32_t wd4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int wd = 0; wd < 4; wd++) {
                half2 qq[4];
                lk_dequant8(wd4[wd], qq);
                *reinterpret_cast<uint4 *>(hb + lk_sw128_off(n, 4 * qh + wd)) =
                    make_uint4(h2u(__hfma2(qq[0], sc, mn)), h2u(__hfma2(qq[1], sc, mn)),
                               h2u(__hfma2(qq[2], sc, mn)), h2u(__hfma2(qq[3], sc, mn)));
            }
        }
    }
}

/* a stage's bulk copies, by one thread, counted in `bytes` on bar: x's 64-input box at (kt, m0) into xs, and the
 * block's raw weights of k-tile kt into q, in `ranges` ranges of BN / 2 rows (br.row(0), br.row(BN / 2): SwiGLU's
 * gate and up rows) or one of BN rows; row-interleaved, box (32 bytes, rows) stored [row][32]; tiled, box (512
 * bytes, 1, rows / 16 tiles) stored [tile][512]. Rows past M or N come as zeros */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <bool TILED, int BN>
__device__ __forceinline__ void wg_tma_stage(uint64_t *bar, uint32_t bytes, unsigned char *xs, unsigned char *q,
                                             const CUtensorMap *tmx, const CUtensorMap *tmw, int kt, int m0,
                                             const blk_rows<BN> &br, int ranges) {
    constexpr int RR = BN / 2;
    mbar_expect_tx(bar, bytes);
    tma_load_2d(xs, tmx, kt * WG_BK, m0, bar);
    for (int r = 0; r < ranges; r++) {
        const int row = br.row(r * RR);
        if constexpr (TILED) tma_load_3d(q + r * (RR / 16) * 512, tmw, 0, kt, row / 16, bar);
        else tma_load_2d(q + r * RR * 32, tmw, kt * (WG_BK / 2), row, bar);
    }
}
#endif

template <int BM, int BN, bool TILED, int STG = 6>
__global__ void __launch_bounds__(2 * BM, STG <= 3 ? 2 : 1)
    k_mm_q4_wg(int M, const half2 *__restrict__ P, int N, int K, int n_out, int hidden, void *out, int ldo, int mode, float *__restrict__ partial,
               int *__restrict__ counters, int p4, lk_rope_epi re, const __grid_constant__ CUtensorMap tmx,
               const __grid_constant__ CUtensorMap tmw) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    lk_pdl_prologue();
    __shared__ __align__(8) uint64_t xbar[wg_smem<BM, BN, STG>::STAGES]; /* a stage's x and weights landed (TMA bytes) */
    extern __shared__ __align__(16) unsigned char smem[];
    using SM = wg_smem<BM, BN, STG>;
    constexpr int T = SM::T, STAGES = SM::STAGES, AHEAD = SM::AHEAD;
    /* x stages and the two fp16 buffers first, 1024-byte aligned (swizzle atoms), then the raw weights */
    unsigned char *Xs = smem + ((1024 - ((uint32_t)__cvta_generic_to_shared(smem) & 1023)) & 1023);
    unsigned char *Hb = Xs + STAGES * SM::X, *Wq = Hb + 2 * SM::H;
    /* p4 (row-interleaved, groups % 4 == 0): a row's scale/min come 4 groups (16 bytes, 8 k-tiles) at a
     * time into one of two buffers, instead of 4 scattered bytes a row every k-tile (v31) */
    half2 *Pb = reinterpret_cast<half2 *>(Wq + STAGES * (SM::Q + SM::PS));
    const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, wq = (tid >> 5) & 3;
    const bool swiglu = mode == LK_OUT_SWIGLU_F16;
    const int m0 = blockIdx.y * BM, j0 = blockIdx.x * (swiglu ? BN / 2 : BN);
    /* split-K over gridDim.z (small grids): this block's k-tiles [kt0, kt0 + KT) */
    const int groups = K >> 7, S = gridDim.z, per = (K / WG_BK + S - 1) / S, kt0 = blockIdx.z * per;
    const int KT = max(0, min(K / WG_BK, kt0 + per) - kt0);

    const blk_rows<BN> br{j0, hidden, N, n_out, swiglu};
    /* Each thread's scale/min copies and dequant items are the same every k-tile: their addresses and
     * predicates are worked out once here (v27; the per-tile index arithmetic had doubled the
     * instructions a tile), and a k-tile only adds kt times a stride. x reaches the kernel through the
     * tensor map tmx, the raw weights through tmw (launch_wg). */
    static_assert(BN * 2 >= T, "every thread holds QJ >= 1 raw 16-byte chunks of a k-tile");
    /* row-interleaved: row qn + T/2 j, half qh; 8 consecutive threads read 4 rows' 128 contiguous bytes
     * and store into 8 different bank groups of the swizzled tile (chunk 4 qh + w XOR row) */
    const int qn = ((tid >> 1) & 7) | ((tid >> 4) << 3), qh = tid & 1;
    if (tid == 0) {
#pragma unroll
        for (int i = 0; i < STAGES; i++) mbar_init(&xbar[i], 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    /* raw weights by TMA too (v41), in one or (SwiGLU: the gate and the up rows) two row ranges (wg_tma_stage) */
    const int ranges = swiglu ? 2 : 1;
    /* scale/min: row-interleaved, rows tid + T j (< BN); tiled, 16 bytes (4 rows) of tile tid >> 2 (tid < BN / 4) */
    constexpr int PJ = TILED || BN <= T ? 1 : BN / T;
    bool phas[PJ], pok[PJ];
    const half2 *psrc[PJ];
#pragma unroll
    for (int j = 0; j < PJ; j++) {
        const int n = tid + T * j;
        phas[j] = TILED ? tid < BN / 4 : n < BN;
        pok[j] = phas[j] && br.ok(TILED ? (tid >> 2) * 16 : n);
        psrc[j] = !pok[j] ? P
                  : TILED ? P + (size_t)(br.row((tid >> 2) * 16) / 16) * groups * 16 + (tid & 3) * 4
                          : P + (size_t)br.row(n) * groups;
    }
    auto load_stage = [&](int kt, int st) {
        unsigned char *q = Wq + st * (SM::Q + SM::PS);
        half2 *ps = reinterpret_cast<half2 *>(q + SM::Q);
        if (tid == 0) wg_tma_stage<TILED, BN>(&xbar[st], SM::X + SM::Q, Xs + st * SM::X, q, &tmx, &tmw, kt, m0, br, ranges);
#pragma unroll
        for (int j = 0; j < PJ; j++) {
            if (!phas[j]) continue;
            if constexpr (TILED) lk_cp_async16(ps + tid * 4, psrc[j] + (kt >> 1) * 16, pok[j]);
            else if (!p4) cp_async4(ps + tid + T * j, psrc[j] + (kt >> 1), pok[j]);
            else if ((kt & 7) == 0 || kt == kt0)
                lk_cp_async16(Pb + ((kt >> 3) & 1) * BN * 4 + (tid + T * j) * 4, psrc[j] + (kt >> 3) * 4, pok[j]);
        }
    };
    /* raw weights of stage st -> fp16 swizzled tile hb */
    auto dequant = [&](int st, int kt, unsigned char *hb) {
        const unsigned char *q = Wq + st * (SM::Q + SM::PS);
        wg_dequant<BN, T, TILED>(q, reinterpret_cast<const half2 *>(q + SM::Q), Pb, p4, kt, hb, tid, qn, qh);
    };

    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; i++) acc[i] = 0.0f;
    lk_wgmma_fence_acc(acc);
#pragma unroll
    for (int s = 0; s < AHEAD; s++) {
        if (s < KT) load_stage(kt0 + s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        const int st = kt % STAGES;
        unsigned char *hb = Hb + (kt & 1) * SM::H;
        cp_async_wait<AHEAD - 1>(); /* tile kt's scale/min have landed (this thread's copies) */
        mbar_wait(&xbar[st], (kt / STAGES) & 1); /* ... and its x and weights (the stage's (kt / STAGES)-th fill) */
        lk_wgmma_wait<1>();            /* this warpgroup's wgmmas of tile kt - 2 are done */
        __syncthreads();            /* ... and everyone's: hb and stage (kt - 2) % STAGES are free */
        if (kt + AHEAD < KT) load_stage(kt0 + kt + AHEAD, (kt + AHEAD) % STAGES);
        cp_async_commit();
        dequant(st, kt0 + kt, hb);
        lk_fence_proxy_async(); /* the copies and stores above -> visible to the tensor cores */
        __syncthreads();
        lk_wgmma_fence();
        const unsigned char *xa = Xs + st * SM::X + wg * (64 / 8) * 1024;
#pragma unroll
        for (int s = 0; s < WG_BK / 16; s++) {
            /* k16 step s: the next 32 bytes of each (swizzled) row */
            const uint64_t da = wg_desc(xa + s * 32), db = wg_desc(hb + s * 32);
            if constexpr (BN == 256) lk_wgmma_m64n256k16(acc, da, db, 1);
            else lk_wgmma_m64n128k16(acc, da, db, 1);
        }
        lk_wgmma_commit();
    }
    lk_wgmma_wait<0>();
    lk_wgmma_fence_acc(acc);
    cp_async_wait<0>();
    lk_pdl_trigger();
    /* (only 64-row blocks split; one warpgroup a block, up to 255 registers: the partials of two splits
     * at once, and every residual load of the add epilogue before its stores. H200, alone (us, S = 1): the
     * add epilogue in chunks of 8 cost ~5 us a call more than a plain store, and K split 8 ways ~2.5-5.7 us) */
    if (BM == 64 && S > 1) {
        if (!wg_split_sum<BN / 2, T, 2>(acc, partial, counters, blockIdx.y * gridDim.x + blockIdx.x, S, tid)) return;
    }
    /* accumulator i: n8 tile j = i / 4; token row g (+8 for e >= 2), weight column 8 j + 2 t + (e & 1) */
    const int g = lane >> 2, t = lane & 3, mrow = m0 + wg * 64 + wq * 16 + g;
    if (mode == LK_OUT_QKV_ROPE) { /* (64-row blocks, head_dim 64 or 128: try_wg) */
        if (re.hd == 64) wg_rope_epilogue<BN, 16>(acc, re, out, ldo, M, n_out, mrow, j0, t);
        else wg_rope_epilogue<BN, 32>(acc, re, out, ldo, M, n_out, mrow, j0, t);
        return;
    }
    if (mode == LK_OUT_ADD_F32_BATCHED) {
        wg_add_epilogue<BN / 2, BM == 64 ? BN / 2 : 8>(acc, (float *)out, ldo, M, n_out, mrow, j0, t);
        return;
    }
#pragma unroll
    for (int i = 0; i < BN / 2; i++) {
        const int j = i >> 2, e = i & 3, m = mrow + (e >= 2 ? 8 : 0), c = 8 * j + 2 * t + (e & 1);
        if (m >= M) continue;
        if (swiglu) {
            if (c >= BN / 2 || j0 + c >= n_out) continue;
            epi_store(out, ldo, mode, m, j0 + c, lk_silu(acc[i]) * acc[i + BN / 4]);
        } else if (j0 + c < n_out) {
            epi_store(out, ldo, mode, m, j0 + c, acc[i]);
        }
    }
#else
    (void)M, (void)P, (void)N, (void)K, (void)n_out, (void)hidden, (void)out, (void)ldo;
    (void)mode, (void)partial, (void)counters, (void)p4, (void)re, (void)tmx, (void)tmw;
#endif
}

/* ============================================================================
 * Hopper kernel for 64-row blocks with the block's k-tiles split over KW
 * warpgroups (batched decode; dispatch in try_wg, v68). k_mm_q4_wg at 64 rows
 * is one warpgroup a block, one warp a scheduler: a latency chain of ~0.5 us
 * a k-tile (H200, session 24). Here warpgroup w of a block takes the block's
 * k-tiles w, w + KW, ..., each warpgroup with its own ring of 3 stages (x and
 * raw weights by TMA, scale/min by cp.async, 2 k-tiles ahead) and one fp16
 * buffer, synchronised by its own named barrier: within a warpgroup dequant and
 * wgmma alternate, and the KW warpgroups of the SM fill each other's gaps.
 * The KW partial tiles (64 tokens x 128 weight rows) meet in shared memory and
 * are summed in warpgroup order (deterministic); a K split over gridDim.z sums
 * as in k_mm_q4_wg. Each thread then owns 2 x NI outputs: item u (of 64 x 64)
 * is token row u / 64 and a pair of columns (c, c + 64; rotary at head_dim 64:
 * the head's dims d, d + 32), so the SwiGLU and rotary partners sit in one
 * thread, and a warp's residual loads and stores are 32 consecutive floats.
 * ==========================================================================*/
template <int KW>
struct wgk_smem {
    static constexpr int BN = 128, STAGES = 3, AHEAD = 2; /* k-tiles in flight ahead of the one dequantized */
    static constexpr int X = 64 * WG_BK * 2, Q = BN * (WG_BK / 2), PS = BN * 4, H = BN * WG_BK * 2;
    static constexpr int LDC = BN + 8; /* floats a row of a partial tile (8-byte fragment stores: no bank conflicts) */
    /* x stages and the fp16 buffers (1024-byte aligned), then each warpgroup's raw weights and scale/min */
    static constexpr int XOFF = 0, HOFF = KW * STAGES * X, QOFF = HOFF + KW * H;
    static constexpr int BYTES = QOFF + KW * STAGES * (Q + PS) + 1024;
    static_assert(KW * 64 * LDC * 4 <= QOFF, "the partial tiles fit where the x stages and buffers were");
};

/* one warpgroup's named barrier (id 1 + w; 0 is __syncthreads') */
__device__ __forceinline__ void wg_bar(int w) { asm volatile("bar.sync %0, 128;" ::"r"(1 + w) : "memory"); }

template <int KW, bool TILED>
__global__ void __launch_bounds__(128 * KW, KW == 2 ? 2 : 1)
    k_mm_q4_wgk(int M, const half2 *__restrict__ P, int N, int K, int n_out, int hidden, void *out, int ldo, int mode,
                float *__restrict__ partial, int *__restrict__ counters, lk_rope_epi re,
                const __grid_constant__ CUtensorMap tmx, const __grid_constant__ CUtensorMap tmw) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    lk_pdl_prologue();
    using SM = wgk_smem<KW>;
    constexpr int BN = SM::BN, STAGES = SM::STAGES, T = 128 * KW, NI = 64 * 64 / T;
    __shared__ __align__(8) uint64_t xbar[KW * STAGES];
    extern __shared__ __align__(16) unsigned char smem[];
    unsigned char *base = smem + ((1024 - ((uint32_t)__cvta_generic_to_shared(smem) & 1023)) & 1023);
    const int tid = threadIdx.x, w = tid >> 7, lt = tid & 127, lane = tid & 31, wq = lt >> 5;
    unsigned char *Xw = base + SM::XOFF + w * STAGES * SM::X, *hb = base + SM::HOFF + w * SM::H;
    unsigned char *Qw = base + SM::QOFF + w * STAGES * (SM::Q + SM::PS);
    const bool swiglu = mode == LK_OUT_SWIGLU_F16;
    const int m0 = blockIdx.y * 64, j0 = blockIdx.x * (swiglu ? BN / 2 : BN);
    /* split-K over gridDim.z: this block's k-tiles [kt0, kt0 + KT); warpgroup w's are kt0 + w + KW i, i < nw */
    const int groups = K >> 7, S = gridDim.z, per = (K / WG_BK + S - 1) / S, kt0 = blockIdx.z * per;
    const int KT = max(0, min(K / WG_BK, kt0 + per) - kt0), nw = KT > w ? (KT - w + KW - 1) / KW : 0;
    const blk_rows<BN> br{j0, hidden, N, n_out, swiglu};
    /* scale/min: tiled, 16 bytes (4 rows) of row tile lt >> 2 (lt < BN / 4); row-interleaved, row lt */
    const bool phas = TILED ? lt < BN / 4 : true, pok = phas && br.ok(TILED ? (lt >> 2) * 16 : lt);
    const half2 *psrc = !pok ? P
                        : TILED ? P + (size_t)(br.row((lt >> 2) * 16) / 16) * groups * 16 + (lt & 3) * 4
                                : P + (size_t)br.row(lt) * groups;
    const int qn = ((lt >> 1) & 7) | ((lt >> 4) << 3), qh = lt & 1;
    if (tid == 0) {
#pragma unroll
        for (int i = 0; i < KW * STAGES; i++) mbar_init(&xbar[i], 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    auto load_stage = [&](int kt, int st) {
        unsigned char *q = Qw + st * (SM::Q + SM::PS);
        uint64_t *bar = &xbar[w * STAGES + st];
        if (lt == 0) wg_tma_stage<TILED, BN>(bar, SM::X + SM::Q, Xw + st * SM::X, q, &tmx, &tmw, kt, m0, br, swiglu ? 2 : 1);
        half2 *ps = reinterpret_cast<half2 *>(q + SM::Q);
        if constexpr (TILED) {
            if (phas) lk_cp_async16(ps + lt * 4, psrc + (kt >> 1) * 16, pok);
        } else {
            cp_async4(ps + lt, psrc + (kt >> 1), pok);
        }
    };

    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; i++) acc[i] = 0.0f;
    lk_wgmma_fence_acc(acc);
#pragma unroll
    for (int s = 0; s < SM::AHEAD; s++) {
        if (s < nw) load_stage(kt0 + w + KW * s, s);
        cp_async_commit();
    }
    for (int i = 0; i < nw; i++) {
        const int st = i % STAGES, kt = kt0 + w + KW * i;
        cp_async_wait<SM::AHEAD - 1>(); /* tile i's scale/min have landed (this thread's copies) */
        mbar_wait(&xbar[w * STAGES + st], (i / STAGES) & 1);
        lk_wgmma_wait<0>(); /* this warpgroup's wgmmas of tile i - 1 are done ... */
        wg_bar(w);          /* ... everyone's: hb and stage (i - 1) % STAGES are free */
        if (i + SM::AHEAD < nw) load_stage(kt + KW * SM::AHEAD, (i + SM::AHEAD) % STAGES);
        cp_async_commit();
        const unsigned char *q = Qw + st * (SM::Q + SM::PS);
        wg_dequant<BN, 128, TILED>(q, reinterpret_cast<const half2 *>(q + SM::Q), nullptr, 0, kt, hb, lt, qn, qh);
        lk_fence_proxy_async(); /* the copies and stores above -> visible to the tensor cores */
        wg_bar(w);
        lk_wgmma_fence();
        const unsigned char *xa = Xw + st * SM::X;
#pragma unroll
        for (int s = 0; s < WG_BK / 16; s++) lk_wgmma_m64n128k16(acc, wg_desc(xa + s * 32), wg_desc(hb + s * 32), 1);
        lk_wgmma_commit();
    }
    lk_wgmma_wait<0>();
    lk_wgmma_fence_acc(acc);
    cp_async_wait<0>();
    lk_pdl_trigger();
    /* the KW partial tiles -> shared memory (over the x stages and buffers, free once every warpgroup is past
     * its last wgmma): accumulator i is token row 16 wq + g (+8 for e >= 2), column 8 (i / 4) + 2 t + (e & 1) */
    __syncthreads();
    float *C = reinterpret_cast<float *>(base);
    {
        const int g = lane >> 2, t = lane & 3;
        float *cw = C + (size_t)w * 64 * SM::LDC + (16 * wq + g) * SM::LDC + 2 * t;
#pragma unroll
        for (int i = 0; i < BN / 2; i += 2) {
            const int r = (i & 2) ? 8 : 0, c = 8 * (i >> 2);
            *reinterpret_cast<float2 *>(cw + r * SM::LDC + c) = make_float2(acc[i], acc[i + 1]);
        }
    }
    __syncthreads();
    /* item q (u = tid + T q): token row u / 64 of the tile (rt), tile columns col(q) and col(q) + off; v[q],
     * v[NI + q] their sums */
    const bool rope64 = mode == LK_OUT_QKV_ROPE && re.hd == 64;
    const int off = rope64 ? 32 : 64;
    auto rt = [&](int q) { return (tid + T * q) >> 6; };
    auto col = [&](int q) {
        const int pc = (tid + T * q) & 63;
        return rope64 ? (pc >> 5) * 64 + (pc & 31) : pc;
    };
    float v[2 * NI];
#pragma unroll
    for (int q = 0; q < NI; q++) {
        const int r = rt(q), c0 = col(q);
        float a = 0.0f, b = 0.0f;
#pragma unroll
        for (int k = 0; k < KW; k++) {
            a += C[(size_t)(k * 64 + r) * SM::LDC + c0];
            b += C[(size_t)(k * 64 + r) * SM::LDC + c0 + off];
        }
        v[q] = a;
        v[NI + q] = b;
    }
    if (S > 1 && !wg_split_sum<2 * NI, T, 2>(v, partial, counters, blockIdx.y * gridDim.x + blockIdx.x, S, tid)) return;
    auto row = [&](int q) { return m0 + rt(q); };
    if (mode == LK_OUT_QKV_ROPE) {
#pragma unroll
        for (int q = 0; q < NI; q++) {
            const int m = row(q), c = j0 + col(q), head = c / re.hd, d = c % re.hd;
            if (m < M && c < n_out) rope_pair_store(re, re.hd, out, ldo, m, head, d, v[q], v[NI + q]);
        }
        return;
    }
    if (swiglu) {
#pragma unroll
        for (int q = 0; q < NI; q++) {
            const int m = row(q), c = j0 + col(q);
            if (m < M && c < n_out) epi_store(out, ldo, mode, m, c, lk_silu(v[q]) * v[NI + q]);
        }
        return;
    }
    /* output k of 2 NI: item k % NI, output column oc(k) (+ 64 for k >= NI) */
    auto oc = [&](int k) { return j0 + col(k % NI) + (k >= NI ? 64 : 0); };
    if (mode == LK_OUT_ADD_F32_BATCHED) {
        auto at = [&](int k) -> float * {
            const int m = row(k % NI), c = oc(k);
            return m < M && c < n_out ? (float *)out + (size_t)m * ldo + c : nullptr;
        };
        add_chunk<2 * NI>(at, [&](int k) { return v[k]; });
        return;
    }
#pragma unroll
    for (int k = 0; k < 2 * NI; k++) {
        const int m = row(k % NI), c = oc(k);
        if (m < M && c < n_out) epi_store(out, ldo, mode, m, c, v[k]);
    }
#else
    (void)M, (void)P, (void)N, (void)K, (void)n_out, (void)hidden, (void)out, (void)ldo;
    (void)mode, (void)partial, (void)counters, (void)re, (void)tmx, (void)tmw;
#endif
}

/* ============================================================================
 * Hopper register-A kernel for 17-64 rows on the tiled layout (batched decode;
 * dispatch in try_ra): D^T = W x^T with the weights as wgmma's A operand, taken
 * from registers, and the tokens (x, by TMA, 128-byte swizzle) as its B operand
 * (wgmma m64nNTk16, NT = 32 tokens up to 32 rows, else 64; rows past M zero).
 * Lane (g, t) gathers the A fragment of each k16 step of its warp's 16-row x
 * 64-input tile from the raw tile in shared memory (the tiled layout, lk_q4_tile,
 * holds a lane's mma.sync fragments; two 4-byte loads and one byte permute give
 * the wgmma fragment, rows g and g + 8) and dequantizes it in registers. So
 * there is no fp16 copy of the weights in shared memory and no block barrier
 * between dequant and MMA
 * (the kernel it replaces, k_mm_q4_wg at 64 rows, spent ~330 instructions a
 * warp a k-tile with two barriers, latency-bound; ncu, v33).
 * A warpgroup owns two sets of 64 weight rows (two accumulator sets): SwiGLU
 * gate rows and the matching up rows, rotary first halves of heads and their
 * second halves (dims d, d + hd/2 in the same thread), or plain 64 + 64 rows, so
 * every epilogue is thread-local. NWG warpgroups a block share each k-tile's x.
 * x, the raw weights and scale/min come by TMA (thread 0) into a ring of STAGES,
 * AHEAD tiles ahead, with a full mbarrier (bytes) and an empty mbarrier (one
 * arrival a warp once its wgmmas of the tile are done) a stage, so warps never
 * meet at a block barrier in the loop. A thread's A registers are double
 * buffered across k-tiles: the next tile's dequant overlaps this tile's wgmmas.
 * Weights and scale/min of the first tiles are requested before the PDL wait
 * (they do not depend on the previous kernel). Small grids split K over
 * gridDim.z; the last block of a row block sums the splits in order.
 * Above 64 rows (prefill; try_ra_prefill) it takes 128 tokens a block along y
 * and also reads the row-interleaved layout (ROWI: lane t takes nibbles t and
 * t + 4 of each word, rowi_pair; scale/min once every 8 k-tiles), for qkv,
 * gate_up and the LM head (eighteenth session in benchmarks/NOTES.md); where
 * the grid allows, 256 or 192 tokens with one 64-row weight set a warpgroup
 * (SETS = 1: half the dequant for the same tensor-core work; SwiGLU's up rows
 * in warpgroup 1, handed over through shared memory; v82, thirty-fifth).
 * Where it is used at 17-64 rows (try_ra): measured faster only on the LM head;
 * ncu at 64 rows (LM head): ~237 instructions a warp a k-tile (dequant 104),
 * 2-3 warps a scheduler, issue 0.4 a cycle, stalls mostly on the wgmma group
 * and fixed latencies, DRAM 51%.
 * ==========================================================================*/
template <int NT, int NWG, bool ROWI = false>
struct ra_smem {
    /* SETS: 64-row weight sets a warpgroup (NT = 192 and 256: one, 96 / 128 accumulators a thread; else two) */
    static constexpr int SETS = NT >= 192 ? 1 : 2;
    /* NWG = 1: three blocks an SM (two at NT = 128: registers and shared memory), so a shorter ring; NT = 192
     * and 256: 24 / 32 KB x stages, five */
    static constexpr int T = 128 * NWG, STAGES = NWG == 1 || NT >= 192 ? 5 : 6, AHEAD = STAGES - 2;
    /* PW (v83): the two-warpgroup prefill forms (NT >= 128) have a third, producer warpgroup: THREADS threads
     * start at 168 registers (65,536 / 384, rounded down to 8); the producer gives its own back (setmaxnreg
     * REG_P) and the two consumer warpgroups take REG_C each (REG_P + 2 REG_C = 3 x 168) */
    static constexpr bool PW = NWG == 2 && NT >= 128;
    static constexpr int THREADS = T + (PW ? 128 : 0), REG_P = SETS == 1 ? 40 : 24, REG_C = SETS == 1 ? 232 : 240;
    static_assert(!PW || REG_P + 2 * REG_C == 3 * 168, "the producer and consumers share the registers of 384 threads");
    static constexpr int TILES = 4 * SETS * NWG; /* 16-row tiles a block */
    static constexpr int X = NT * 128;     /* one x stage: NT tokens x 64 inputs, fp16, 128-byte swizzle */
    static constexpr int Q = TILES * 512;  /* one raw weight stage (row-interleaved: [row][32 bytes]) */
    /* one scale/min stage: tiled, the k-tile's group (16 rows a tile). Row-interleaved: none a stage, but two
     * buffers PB of 4 groups (16 bytes: a TMA box is at least 16 bytes wide) a row, each loaded with the stage
     * of the first of the 8 k-tiles it covers */
    static constexpr int PS = ROWI ? 0 : TILES * 64, PB = ROWI ? TILES * 256 : 0;
    static constexpr int BYTES = STAGES * (X + Q + PS) + 2 * PB + 1024;
    static_assert(!ROWI || AHEAD <= 8, "a scale/min buffer is reloaded 8 k-tiles after its last reader");
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
/* keeps registers allocated (and unchanged) up to this point: the A operands of wgmmas still in flight */
template <int R>
__device__ __forceinline__ void keep_regs(uint32_t (&a)[R]) {
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" : "+r"(a[i])::"memory");
}
template <int NT>
__device__ __forceinline__ void wgmma_rs(float (&d)[NT / 2], const uint32_t (&a)[4], uint64_t db) {
    if constexpr (NT == 256) lk_wgmma_rs_m64n256k16(d, a, db);
    else if constexpr (NT == 192) lk_wgmma_rs_m64n192k16(d, a, db);
    else if constexpr (NT == 128) lk_wgmma_rs_m64n128k16(d, a, db);
    else if constexpr (NT == 64) lk_wgmma_rs_m64n64k16(d, a, db);
    else if constexpr (NT == 32) lk_wgmma_rs_m64n32k16(d, a, db);
    else lk_wgmma_rs_m64n16k16(d, a, db);
}
#endif

/* one A register from a row-interleaved word (inputs 8c .. 8c + 7 of a row; lk_q4_interleave_word puts
 * inputs 2t, 2t + 1 in nibbles t, t + 4): lane t's pair as q sc + mn, q exact from the magic-number lop3 as in
 * lk_dequant8 and one fp16 fma, so the same fp16 weights as every other row-interleaved kernel */
__device__ __forceinline__ uint32_t rowi_pair(uint32_t w, int sh, half2 sc, half2 mn) {
    const uint32_t v = lk_lop3_and_or(w >> sh, 0x000f000fu, 0x64006400u), k1024 = 0x64006400u;
    const half2 q = __hsub2(*reinterpret_cast<const half2 *>(&v), *reinterpret_cast<const half2 *>(&k1024));
    return h2u(__hfma2(q, sc, mn));
}

template <int NT, int NWG, bool ROWI>
__global__ void __launch_bounds__(ra_smem<NT, NWG, ROWI>::THREADS, NWG == 1 ? (NT >= 128 ? 2 : 3) : 1)
    k_mm_q4_ra(int M, int N, int K, int n_out, int hidden, void *out, int ldo, int mode, float *__restrict__ partial,
               int *__restrict__ counters, lk_rope_epi re, const __grid_constant__ CUtensorMap tmx,
               const __grid_constant__ CUtensorMap tmw, const __grid_constant__ CUtensorMap tmp,
               const __grid_constant__ CUtensorMap tmo) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using SM = ra_smem<NT, NWG, ROWI>;
    constexpr int T = SM::T, STAGES = SM::STAGES, AHEAD = SM::AHEAD, TILES = SM::TILES, HT = TILES / 2;
    constexpr int SETS = SM::SETS;
    /* PW: the first warp of warpgroup T / 128 only fills the ring (waits on the empty barriers, one elected lane
     * issues the copies); the consumers' block-wide barriers are then named barrier 3 over the T consumer threads */
    constexpr bool PW = SM::PW;
    auto cbar = [&]() {
        if constexpr (PW) asm volatile("bar.sync 3, %0;" ::"n"(T) : "memory");
        else __syncthreads();
    };
    /* full: a stage's x, raw weights and scale/min landed (TMA bytes); empty: every warp is done with it */
    __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
    extern __shared__ __align__(16) unsigned char smem[];
    /* x stages first, 1024-byte aligned (swizzle atoms), then the raw weights, then scale/min */
    unsigned char *Xs = smem + ((1024 - (smem_u32(smem) & 1023)) & 1023);
    unsigned char *Wq = Xs + STAGES * SM::X;
    unsigned char *Ps = Wq + STAGES * SM::Q;
    const int tid = threadIdx.x, wg = tid >> 7, wq = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
    /* (LK_OUT_SWIGLU_F16_TMA: SwiGLU blocks too, whose epilogue stores by TMA) */
    const bool swiglu = mode == LK_OUT_SWIGLU_F16 || mode == LK_OUT_SWIGLU_F16_TMA, rope = mode == LK_OUT_QKV_ROPE;
    const int S = gridDim.z, per = (K / WG_BK + S - 1) / S, kt0 = blockIdx.z * per;
    const int KT = max(0, min(K / WG_BK, kt0 + per) - kt0);
    const int m0 = blockIdx.y * NT; /* the block's first token (more than 64 rows: NT = 128, blocks along y) */
    /* the block's tiles: TILES consecutive ones (plain, rotary: 128 NWG rows of whole heads), or HT gate
     * tiles and the HT matching up tiles (SwiGLU) */
    const int tb0 = blockIdx.x * (swiglu ? HT : TILES), tb1 = swiglu ? hidden / 16 + tb0 : tb0 + HT;
    /* the warp's local tile of each set: first halves i (64 a warpgroup, 16 a warp) of halves H rows long;
     * plain blocks are halves of 64 (set 1 = set 0 + 64 rows) */
    int lt[2];
    {
        const int i0 = wg * 64 + 16 * wq;
        if (SETS == 1) { /* the warpgroup's 64 rows (SwiGLU: warpgroup 0 gate rows, 1 the up rows from tile HT) */
            lt[0] = lt[1] = i0 / 16;
        } else if (swiglu) {
            lt[0] = i0 / 16;
            lt[1] = HT + i0 / 16;
        } else {
            const int H = rope ? re.hd / 2 : 64, r0 = (i0 / H) * 2 * H + i0 % H;
            lt[0] = r0 / 16;
            lt[1] = (r0 + H) / 16;
        }
    }
    /* the loader (thread 0; PW: one lane of the producer warp): k-tile kt into stage st, all three by TMA on the
     * stage's full barrier (tiles past N and rows past M come as zeros); x only after the PDL wait */
    auto load_wp = [&](int kt, int st) {
        unsigned char *q = Wq + st * SM::Q, *ps = Ps + st * SM::PS;
        if constexpr (ROWI) {
            /* weights: box (32 bytes, rows) at (32 kt, row); scale/min of k-tiles kt .. (the next multiple of 8)
             * - 1: box (4 groups, rows) at (4 (kt / 8), row) into buffer (kt / 8) % 2. That buffer was last read
             * by k-tile kt - 9 or earlier, and every warp is past k-tile kt - AHEAD - 1 >= kt - 9 here (the
             * empty barrier; PW: past kt - STAGES + 1 >= kt - 9) */
            const bool with_p = (kt & 7) == 0 || kt == kt0;
            mbar_expect_tx(&full[st], SM::X + SM::Q + (with_p ? SM::PB : 0));
            tma_load_2d(q, &tmw, kt * 32, tb0 * 16, &full[st]);
            if (swiglu) tma_load_2d(q + HT * 512, &tmw, kt * 32, tb1 * 16, &full[st]);
            if (with_p) {
                unsigned char *pb = Ps + ((kt >> 3) & 1) * SM::PB;
                tma_load_2d(pb, &tmp, (kt >> 3) * 4, tb0 * 16, &full[st]);
                if (swiglu) tma_load_2d(pb + HT * 256, &tmp, (kt >> 3) * 4, tb1 * 16, &full[st]);
            }
            return;
        }
        mbar_expect_tx(&full[st], SM::X + SM::Q + SM::PS);
        if (swiglu) {
            tma_load_4d(q, &tmw, 0, 0, kt, tb0, &full[st]);
            tma_load_4d(q + HT * 512, &tmw, 0, 0, kt, tb1, &full[st]);
            tma_load_3d(ps, &tmp, 0, kt >> 1, tb0, &full[st]);
            tma_load_3d(ps + HT * 64, &tmp, 0, kt >> 1, tb1, &full[st]);
        } else {
            tma_load_4d(q, &tmw, 0, 0, kt, tb0, &full[st]);
            tma_load_3d(ps, &tmp, 0, kt >> 1, tb0, &full[st]);
        }
    };
    auto load_x = [&](int kt, int st) { tma_load_2d(Xs + st * SM::X, &tmx, kt * WG_BK, m0, &full[st]); };
    if (tid == 0) {
#pragma unroll
        for (int i = 0; i < STAGES; i++) {
            mbar_init(&full[i], 1);
            mbar_init(&empty[i], T / 32);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if constexpr (PW) {
        if (tid >= T) { /* the producer warpgroup: its first warp puts every k-tile into its stage once the
                         * consumers released it */
            asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(SM::REG_P) : "memory");
            if (tid >= T + 32) return;
            if (lk_elect_one())
                for (int s = 0; s < STAGES && s < KT; s++) load_wp(kt0 + s, s);
            __syncwarp();
            lk_pdl_prologue();
            if (lk_elect_one())
                for (int s = 0; s < STAGES && s < KT; s++) load_x(kt0 + s, s);
            __syncwarp();
            for (int kt = STAGES; kt < KT; kt++) {
                const int sn = kt % STAGES;
                mbar_wait(&empty[sn], ((kt - STAGES) / STAGES) & 1);
                if (lk_elect_one()) {
                    load_wp(kt0 + kt, sn);
                    load_x(kt0 + kt, sn);
                }
                __syncwarp();
            }
            return;
        }
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(SM::REG_C) : "memory");
        lk_pdl_prologue();
    } else {
        /* weights and scale/min do not depend on the previous kernel: in flight before the PDL wait */
        if (tid == 0)
            for (int s = 0; s < AHEAD && s < KT; s++) load_wp(kt0 + s, s);
        lk_pdl_prologue();
        if (tid == 0)
            for (int s = 0; s < AHEAD && s < KT; s++) load_x(kt0 + s, s);
    }

    float acc[SETS][NT / 2];
#pragma unroll
    for (int r = 0; r < SETS; r++) {
#pragma unroll
        for (int i = 0; i < NT / 2; i++) acc[r][i] = 0.0f;
        lk_wgmma_fence_acc(acc[r]);
    }
    constexpr int NA = 16 * SETS;
    uint32_t A0[NA], A1[NA]; /* [set][k16 step][4]: this k-tile's A fragments, the previous tile's */
#pragma unroll
    for (int i = 0; i < NA; i++) A0[i] = A1[i] = 0u;
    /* per-thread shared-memory offsets, the same every stage. Lane (g, t) builds the A fragment of k16 step s
     * from chunk (g, s) of its tile (lk_q4_tile: byte 64 g + 16 s), whose word kb holds inputs 16 s + 4 kb ..
     * + 3 of rows g, g + 8: inputs 16 s + 2 t, + 1 sit in word t / 2 (bytes 0, 2 for even t, 1, 3 for odd), and
     * 16 s + 2 t + 8, + 9 in word 2 + t / 2; one byte permute makes them one word in the order lk_dequant8
     * takes. The tile arrived in the 128-byte swizzle (16-byte chunk bits 4-6 XOR 128-byte row bits 7-9): the
     * 128-byte row of chunk (g, s) is g / 2, its chunk (g % 2) * 4 + s, so the 8 rows g read 8 different bank
     * groups. Per set: that row's byte offset (+ 4 (t / 2)) and the swizzled chunk of s = 0 (s XORs in). */
    uint32_t q_row[SETS], q_ch[SETS], p_off[SETS]; /* p_off: row g's scale/min in the stage (row g + 8: + 32 bytes) */
#pragma unroll
    for (int r = 0; r < SETS; r++) {
        if constexpr (ROWI) { /* row g's 32 bytes (row g + 8: + 256) and its 4 groups (+ 128); no chunk swizzle */
            q_row[r] = (lt[r] * 16 + g) * 32;
            q_ch[r] = 0;
            p_off[r] = (lt[r] * 16 + g) * 16;
        } else {
            q_row[r] = lt[r] * 512 + (g >> 1) * 128 + 4 * (t >> 1);
            q_ch[r] = ((g & 1) * 4) ^ ((lt[r] * 4 + (g >> 1)) & 7);
            p_off[r] = lt[r] * 64 + g * 4;
        }
    }
    const uint32_t perm = (t & 1) ? 0x7351u : 0x6240u; /* bytes (w1, w2, w1, w2): 1, 5, 3, 7 or 0, 4, 2, 6 */
    const uint64_t xdesc0 = wg_desc(Xs); /* + (stage bytes + 32 s) / 16 */
    auto step = [&](int kt, uint32_t (&A)[NA], uint32_t (&Aprev)[NA]) {
        const int st = kt % STAGES;
        /* (not PW) thread 0 refills the stage of tile kt + AHEAD - STAGES = kt - 2 once every warp released it
         * (after the wait for its wgmmas, in step kt - 1) */
        if (!PW && tid == 0 && kt + AHEAD < KT) {
            const int sn = (kt + AHEAD) % STAGES;
            if (kt + AHEAD >= STAGES) mbar_wait(&empty[sn], ((kt + AHEAD - STAGES) / STAGES) & 1);
            load_wp(kt0 + kt + AHEAD, sn);
            load_x(kt0 + kt + AHEAD, sn);
        }
        mbar_wait(&full[st], (kt / STAGES) & 1);
        const unsigned char *q = Wq + st * SM::Q, *ps = Ps + st * SM::PS;
        if constexpr (ROWI) {
            /* lane (g, t) of k16 step s: inputs 16 s + 2 t, + 1 (word 2 s of the row) and 16 s + 2 t + 8, + 9 (word
             * 2 s + 1) of rows g and g + 8: pair t of each word, so all four lanes of a quad read the same words */
            const int gi = ((kt0 + kt) >> 1) & 3, sh = 4 * t;
            const unsigned char *pbuf = Ps + (((kt0 + kt) >> 3) & 1) * SM::PB;
#pragma unroll
            for (int r = 0; r < SETS; r++) {
                const unsigned char *rp = q + q_row[r];
                const uint4 a0 = *reinterpret_cast<const uint4 *>(rp), a1 = *reinterpret_cast<const uint4 *>(rp + 16);
                const uint4 b0 = *reinterpret_cast<const uint4 *>(rp + 256), b1 = *reinterpret_cast<const uint4 *>(rp + 272);
                const half2 pa = *reinterpret_cast<const half2 *>(pbuf + p_off[r] + 4 * gi);
                const half2 pb = *reinterpret_cast<const half2 *>(pbuf + p_off[r] + 128 + 4 * gi);
                const half2 sa = __half2half2(__low2half(pa)), ma = __half2half2(__high2half(pa));
                const half2 sb = __half2half2(__low2half(pb)), mb = __half2half2(__high2half(pb));
                const uint32_t wa[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
                const uint32_t wb[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
                for (int s = 0; s < 4; s++) {
                    uint32_t *o = &A[(r * 4 + s) * 4];
                    o[0] = rowi_pair(wa[2 * s], sh, sa, ma);
                    o[1] = rowi_pair(wb[2 * s], sh, sb, mb);
                    o[2] = rowi_pair(wa[2 * s + 1], sh, sa, ma);
                    o[3] = rowi_pair(wb[2 * s + 1], sh, sb, mb);
                }
            }
        } else {
#pragma unroll
            for (int r = 0; r < SETS; r++) {
                uint32_t raw[4];
#pragma unroll
                for (int s = 0; s < 4; s++) {
                    const unsigned char *cp = q + q_row[r] + ((q_ch[r] ^ s) << 4);
                    raw[s] = __byte_perm(*reinterpret_cast<const uint32_t *>(cp),
                                         *reinterpret_cast<const uint32_t *>(cp + 8), perm);
                }
                const half2 pa = *reinterpret_cast<const half2 *>(ps + p_off[r]);
                const half2 pb = *reinterpret_cast<const half2 *>(ps + p_off[r] + 32);
#pragma unroll
                for (int s = 0; s < 4; s++)
                    dequant_tile_word(raw[s], pa, pb, *reinterpret_cast<uint32_t(*)[4]>(&A[(r * 4 + s) * 4]));
            }
        }
        lk_wgmma_fence();
#pragma unroll
        for (int s = 0; s < 4; s++) {
            const uint64_t db = xdesc0 + ((st * SM::X + s * 32) >> 4);
#pragma unroll
            for (int r = 0; r < SETS; r++)
                wgmma_rs<NT>(acc[r], *reinterpret_cast<const uint32_t(*)[4]>(&A[(r * 4 + s) * 4]), db);
        }
        lk_wgmma_commit();
        lk_wgmma_wait<1>(); /* tile kt - 1's wgmmas are done: its A registers may be rewritten, its stage reused */
        keep_regs(Aprev);
        if (kt >= 1 && lane == 0) mbar_arrive(&empty[(kt - 1) % STAGES]);
    };
    int kt = 0;
    for (; kt + 1 < KT; kt += 2) {
        step(kt, A0, A1);
        step(kt + 1, A1, A0);
    }
    if (kt < KT) step(kt, A0, A1);
    lk_wgmma_wait<0>();
#pragma unroll
    for (int r = 0; r < SETS; r++) lk_wgmma_fence_acc(acc[r]);
    keep_regs(A0);
    keep_regs(A1);
    lk_pdl_trigger();
    if (S > 1) {
        if (!wg_split_sum<SETS * NT / 2, T>(reinterpret_cast<float(&)[SETS * NT / 2]>(acc), partial, counters,
                                 blockIdx.y * gridDim.x + blockIdx.x, S, tid))
            return;
    }
    /* accumulator i of set r: n8 tile j = i / 4, tokens 8 j + 2 t + (e & 1), weight row g (+8 for e >= 2) of
     * the warp's tile of the set */
    const int row0 = (lt[0] < HT ? tb0 + lt[0] : tb1 + lt[0] - HT) * 16 + g;
    const int row1 = (lt[1] < HT ? tb0 + lt[1] : tb1 + lt[1] - HT) * 16 + g;
    (void)row1; /* (SETS = 1: no second set) */
    if constexpr (SETS == 1) {
        if (swiglu) {
            /* warpgroup 0 holds the gate rows, warpgroup 1 the matching up rows in the same accumulator layout:
             * 1 hands its accumulators over through the drained ring (past warpgroup 0's output box), 0 keeps
             * silu(gate) up and stores it (below) */
            static_assert(2 * (2 * NT * 128) <= STAGES * (SM::X + SM::Q), "the hand-over fits in the ring");
            float *ex = reinterpret_cast<float *>(Xs + 2 * NT * 128);
            cbar(); /* every warp's wgmmas are done with the ring */
            if (wg == 1)
#pragma unroll
                for (int i = 0; i < NT / 2; i++) ex[i * 128 + (tid & 127)] = acc[0][i];
            cbar();
            if (wg == 1) return;
#pragma unroll
            for (int i = 0; i < NT / 2; i++) acc[0][i] = lk_silu(acc[0][i]) * ex[i * 128 + tid];
        }
    }
    if (mode >= LK_OUT_ADD_F32_TMA) { /* (S = 1: launch_ra) */
        /* warpgroup w's outputs (plain: 128 columns from weight row tb0 16 + 128 w; SwiGLU: 64 from tb0 16 +
         * 64 w) as boxes [NT tokens][128 bytes] in the 128-byte swizzle (TMA's layout: 16-byte chunk c of token
         * row m at chunk c ^ (m % 8)), in the ring (every warp's wgmmas are done after the barrier, every
         * stage's copies landed). Set r, column 16 wq + g (+ 8) of the warpgroup's 64 of the set: for one
         * accumulator the 32 lanes write 32 banks (fp32) or 16 words (fp16). One set (NT = 192, 256): 64 columns
         * from tb0 16 + 64 w (SwiGLU: warpgroup 0 only) */
        static_assert(NWG * SETS * 2 * NT * 128 <= STAGES * (SM::X + SM::Q), "the tiles fit in the ring");
        const bool f16 = mode >= LK_OUT_F16_TMA, sw = mode == LK_OUT_SWIGLU_F16_TMA;
        if (SETS == 2 || !sw) cbar(); /* (SETS = 1 SwiGLU: warpgroup 0 only, past two barriers above) */
        unsigned char *box0 = Xs + wg * 2 * SETS * (NT * 128);
        if constexpr (SETS == 2) {
            if (sw) {
#pragma unroll
                for (int i = 0; i < NT / 2; i++) acc[0][i] = lk_silu(acc[0][i]) * acc[1][i];
            }
        }
#pragma unroll
        for (int r = 0; r < SETS; r++) {
            if (r == 1 && sw) break;
#pragma unroll
            for (int i = 0; i < NT / 2; i++) {
                const int m = 8 * (i >> 2) + 2 * t + (i & 1), c = 16 * wq + g + ((i & 3) >= 2 ? 8 : 0);
                if (f16) { /* box r: 64 columns */
                    half *bx = reinterpret_cast<half *>(box0 + r * (NT * 128));
                    bx[m * 64 + ((((c >> 3) ^ (m & 7)) << 3) | (c & 7))] = __float2half(acc[r][i]);
                } else { /* box 2 r + c / 32: 32 columns */
                    float *bx = reinterpret_cast<float *>(box0 + (2 * r + (c >> 5)) * (NT * 128));
                    const int cc = c & 31;
                    bx[m * 32 + ((((cc >> 2) ^ (m & 7)) << 2) | (cc & 3))] = acc[r][i];
                }
            }
        }
        lk_fence_proxy_async(); /* the stores above -> visible to the bulk copies */
        wg_bar(wg);
        if ((tid & 127) == 0) {
            const int c0 = tb0 * 16 + wg * (sw ? 64 : 64 * SETS), nb = sw ? 1 : (f16 ? 1 : 2) * SETS, cw = f16 ? 64 : 32;
            for (int b = 0; b < nb; b++) {
                if (mode == LK_OUT_ADD_F32_TMA) tma_reduce_add_2d(&tmo, c0 + cw * b, m0, box0 + b * (NT * 128));
                else tma_store_2d(&tmo, c0 + cw * b, m0, box0 + b * (NT * 128));
            }
            bulk_wait_read();
        }
        return;
    }
    if (mode == LK_OUT_ADD_F32_BATCHED) { /* (see epi_store) 8 accumulators of each set: 16 loads, 16 stores */
        auto at = [&](int i, int row) -> float * {
            const int m = m0 + 8 * (i >> 2) + 2 * t + (i & 1), rr = row + ((i & 3) >= 2 ? 8 : 0);
            return m < M && rr < n_out ? (float *)out + (size_t)m * ldo + rr : nullptr;
        };
        if constexpr (SETS == 1) {
#pragma unroll
            for (int c0 = 0; c0 < NT / 2; c0 += 16)
                add_chunk<16>([&](int q) { return at(c0 + q, row0); }, [&](int q) { return acc[0][c0 + q]; });
        } else {
#pragma unroll
            for (int c0 = 0; c0 < NT / 2; c0 += 8) /* (q & 1: the set) */
                add_chunk<16>([&](int q) { return at(c0 + q / 2, q & 1 ? row1 : row0); },
                              [&](int q) { return acc[q & 1][c0 + q / 2]; });
        }
        return;
    }
    if constexpr (SETS == 2) { /* (one set: SwiGLU's products are in acc[0] already, no rotary: launch_ra) */
        if (swiglu) { /* every product first, then predicated stores: no branch between one chain and the next */
#pragma unroll
            for (int i = 0; i < NT / 2; i++) acc[0][i] = lk_silu(acc[0][i]) * acc[1][i];
#pragma unroll
            for (int i = 0; i < NT / 2; i++) {
                const int m = m0 + 8 * (i >> 2) + 2 * t + (i & 1), c = row0 + ((i & 3) >= 2 ? 8 : 0);
                if (m < M && c < n_out) ((half *)out)[(size_t)m * ldo + c] = __float2half(acc[0][i]);
            }
            return;
        }
        if (rope) { /* chunks of 16 pairs (rope_chunk: every load of a chunk before its stores) */
#pragma unroll
            for (int c0 = 0; c0 < NT / 2; c0 += 16)
                rope_chunk<16>(re, re.hd, out, ldo, [&](int q) {
                    const int i = c0 + q, m = m0 + 8 * (i >> 2) + 2 * t + (i & 1), r = row0 + ((i & 3) >= 2 ? 8 : 0);
                    return rope_item{m < M && r < N, m, r / re.hd, r % re.hd, acc[0][i], acc[1][i]};
                });
            return;
        }
    }
#pragma unroll
    for (int i = 0; i < NT / 2; i++) {
        const int j = i >> 2, e = i & 3, m = m0 + 8 * j + 2 * t + (e & 1), h8 = e >= 2 ? 8 : 0;
        if (m >= M) continue;
        if (row0 + h8 < n_out) epi_store(out, ldo, mode, m, row0 + h8, acc[0][i]);
        if constexpr (SETS == 2)
            if (row1 + h8 < n_out) epi_store(out, ldo, mode, m, row1 + h8, acc[1][i]);
    }
#else
    (void)M, (void)N, (void)K, (void)n_out, (void)hidden, (void)out, (void)ldo, (void)mode;
    (void)partial, (void)counters, (void)re, (void)tmx, (void)tmw, (void)tmp, (void)tmo;
#endif
}

/* ============================================================================
 * bf16 weights (quantization="none"): warp-per-output GEMV for <= 4 rows,
 * a tiled fp32 SIMT GEMM above. The reference path: correct, not tuned.
 * ==========================================================================*/
template <int M>
__global__ void __launch_bounds__(256) k_gemv_bf16(const uint4 *__restrict__ W, const half *__restrict__ x, int ldx,
                                                   int K, int n_out, int hidden, void *out, int ldo, int mode) {
    lk_pdl_prologue();
    const int lane = threadIdx.x & 31, j = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (j >= n_out) return;
    const bool swiglu = mode == LK_OUT_SWIGLU_F16;
    const int nr = swiglu ? 2 : 1, chunks = K >> 3;
    float acc[2][M];
    for (int r = 0; r < 2; r++)
        for (int m = 0; m < M; m++) acc[r][m] = 0.0f;
    for (int c = lane; c < chunks; c += 32) {
        float xf[M][8];
#pragma unroll
        for (int m = 0; m < M; m++) {
            uint4 t = *reinterpret_cast<const uint4 *>(x + (size_t)m * ldx + (size_t)c * 8);
            const half2 *h = reinterpret_cast<const half2 *>(&t);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 f = __half22float2(h[i]);
                xf[m][2 * i] = f.x;
                xf[m][2 * i + 1] = f.y;
            }
        }
        for (int r = 0; r < nr; r++) {
            int row = r ? j + hidden : j;
            uint4 wv = W[(size_t)row * chunks + c];
            const uint32_t w4[4] = {wv.x, wv.y, wv.z, wv.w};
            float wf[8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                wf[2 * i] = __uint_as_float(w4[i] << 16);
                wf[2 * i + 1] = __uint_as_float(w4[i] & 0xffff0000u);
            }
#pragma unroll
            for (int m = 0; m < M; m++)
#pragma unroll
                for (int i = 0; i < 8; i++) acc[r][m] = fmaf(wf[i], xf[m][i], acc[r][m]);
        }
    }
    for (int r = 0; r < 2; r++)
        for (int m = 0; m < M; m++) acc[r][m] = lk_warp_sum(acc[r][m]);
    if (lane == 0)
        for (int m = 0; m < M; m++) epi_store(out, ldo, mode, m, j, swiglu ? lk_silu(acc[0][m]) * acc[1][m] : acc[0][m]);
}

#define SG_T 64
__global__ void __launch_bounds__(256) k_mm_bf16_simt(const half *__restrict__ x, int ldx, int M,
                                                      const uint16_t *__restrict__ W, int N, int K, int n_out,
                                                      int hidden, void *out, int ldo, int mode) {
    lk_pdl_prologue();
    __shared__ float As[16][SG_T + 1], Bs[16][2 * SG_T + 1];
    const bool swiglu = mode == LK_OUT_SWIGLU_F16;
    const int m0 = blockIdx.y * SG_T, j0 = blockIdx.x * SG_T;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16; /* 4x4 outputs each (x2 rows for swiglu) */
    float acc[2][4][4] = {};
    for (int k0 = 0; k0 < K; k0 += 16) {
        for (int i = threadIdx.x; i < 16 * SG_T; i += 256) {
            int r = i / 16, k = i % 16;
            As[k][r] = (m0 + r < M && k0 + k < K) ? __half2float(x[(size_t)(m0 + r) * ldx + k0 + k]) : 0.0f;
        }
        for (int i = threadIdx.x; i < 16 * 2 * SG_T; i += 256) {
            int r = i / 16, k = i % 16, c = r % SG_T, which = r / SG_T;
            int row = which ? hidden + j0 + c : j0 + c;
            bool p = (which == 0 || swiglu) && j0 + c < n_out && k0 + k < K && row < N;
            Bs[k][r] = p ? __uint_as_float((uint32_t)W[(size_t)row * K + k0 + k] << 16) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 16; k++) {
            float a[4], b[2][4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = As[k][ty * 4 + i];
#pragma unroll
            for (int w = 0; w < 2; w++)
#pragma unroll
                for (int i = 0; i < 4; i++) b[w][i] = Bs[k][w * SG_T + tx * 4 + i];
#pragma unroll
            for (int w = 0; w < 2; w++)
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int jj = 0; jj < 4; jj++) acc[w][i][jj] = fmaf(a[i], b[w][jj], acc[w][i][jj]);
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++)
        for (int jj = 0; jj < 4; jj++) {
            int m = m0 + ty * 4 + i, j = j0 + tx * 4 + jj;
            if (m < M && j < n_out)
                epi_store(out, ldo, mode, m, j, swiglu ? lk_silu(acc[0][i][jj]) * acc[1][i][jj] : acc[0][i][jj]);
        }
}

/* ---- interleave -------------------------------------------------------------- */
__global__ void k_interleave(uint32_t *w, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) w[i] = lk_q4_interleave_word(w[i]);
}

lk_status lk_q4_interleave(void *qs, size_t bytes, cudaStream_t st) {
    size_t n = bytes / 4;
    if (!n) return LK_OK;
    k_interleave<<<(unsigned)((n + 255) / 256), 256, 0, st>>>((uint32_t *)qs, n);
    LAUNCH_OK("k_interleave");
    return LK_OK;
}

/* ---- dispatch -------------------------------------------------------------------- */
/* Benchmark-only override of the one-row GEMV configuration (weight rows per
 * warp, chunks in flight per lane, K splits; 0 = the dispatcher's choice), set
 * around a timing by lk_cuda_op_bench_matmul. Not for concurrent use. */
static struct {
    int rr, u, s;
} g_tune;
void lk_mm_set_tune(int rr, int u, int s) {
    g_tune.rr = rr;
    g_tune.u = u;
    g_tune.s = s;
}
/* the same for the tiled small-batch kernel: warps along K in a block (1, 2, 4, 8) and K splits */
static struct {
    int wk, g, s;
} g_tune_tiled;
void lk_mm_set_tune_tiled(int wk, int g, int s) {
    g_tune_tiled.wk = wk == 1 || wk == 2 || wk == 4 || wk == 8 || wk == 16 ? wk : 0;
    g_tune_tiled.g = g;
    g_tune_tiled.s = s;
}

template <int M, int RR, int U, bool LUT>
static lk_status launch_gemv(const lk_dmat *W, const half *x, int ldx, void *out, int ldo, int mode, int n_out,
                             int hidden, int S, const lk_mm_ws *ws, int sm_count, const lk_rope_epi &re,
                             const lk_norm_in &nin, cudaStream_t st) {
    const int outs = mode == LK_OUT_SWIGLU_F16 || mode == LK_OUT_QKV_ROPE ? RR / 2 : RR;
    const int units = mode == LK_OUT_QKV_ROPE ? n_out / RR : lk_cdiv(n_out, outs);
    const int blocks = lk_cdiv(units, GEMV_WARPS);
    if (S > 1 && (!ws || blocks > ws->n_counters)) S = 1;
    /* split-K: one row set per warp; otherwise a grid-stride loop over row sets (with the norm
     * prologue, GEMV_NORM_BLOCKS an SM; 4 were tried: gate_up 9.6 -> 10.3 us, NOTES v59b) */
    const int cap = sm_count * (nin.w ? GEMV_NORM_BLOCKS : 8);
    if (nin.w) S = 1;
    dim3 grid(S > 1 ? blocks : (blocks < cap ? blocks : cap), S);
    /* x in shared memory, swizzled: with the norm prologue always; otherwise copied there first where M
     * rows of it fit in 32 KB (with the LUT's 8 KB, under the 48 KB a block gets without an attribute).
     * LLAMA_KERNEL_GEMV_XS (A/B; read every call): 0 neither (x read from global memory, the norm
     * prologue's copy unswizzled), 1 the swizzle only, 3 (default) both. H100 (benchmarks/NOTES.md,
     * v51), 0 -> 3: o/down 5.91 -> 5.58 us a call, batch 1 1,780 / 1,796 -> 1,842 / 1,838 tok/s, 3B
     * 752 -> 794 */
    const char *xe = getenv("LLAMA_KERNEL_GEMV_XS");
    int xs = xe && *xe ? atoi(xe) & 3 : 3;
    const size_t xbytes = (size_t)M * W->K * sizeof(half);
    if (nin.w || xbytes > 32 * 1024) xs &= 1;
    const size_t smem = nin.w || (xs & 2) ? xbytes : 0;
    /* one row: trigger the next kernel right after the PDL wait, so its blocks launch (and the next GEMV's
     * first weight loads go out) while this one runs. LLAMA_KERNEL_GEMV_TRIGGER=mask (A/B; read every call):
     * only kernels of 1 (bit 0), 2 (bit 1) or 4 (bit 2) weight rows a warp; default 7, all of them */
    const char *te = getenv("LLAMA_KERNEL_GEMV_TRIGGER");
    const int tmask = te && *te ? atoi(te) : 7;
    if (M == 1 && (tmask >> (RR == 1 ? 0 : RR == 2 ? 1 : 2)) & 1) xs |= 16;
    /* the next-step-in-flight loop's lean form (gemv_body's PF; K a multiple of 1,024 U): LLAMA_KERNEL_GEMV_LEAN=0
     * (A/B; read every call) keeps the general loop */
    const char *le = getenv("LLAMA_KERNEL_GEMV_LEAN");
    if (!(le && le[0] == '0')) xs |= 32;
    /* the lop3 kernel's chunk dot: centred weights summed in fp16 over the chunk; LLAMA_KERNEL_GEMV_HDOT=0
     * (A/B; read every call) the uncentred dot summed in fours as before */
    auto kern = k_gemv_q4<M, RR, U, LUT>;
    bool pf = false;
    if constexpr (!LUT) {
        const char *he = getenv("LLAMA_KERNEL_GEMV_HDOT");
        if (!(he && he[0] == '0')) kern = k_gemv_q4<M, RR, U, LUT, true>;
        /* one row: the next chunk step stays in flight while one is computed, across the grid-stride loop's
         * units too (gemv_body's PF). 4 weight rows a warp (gate_up, the LM head; v74) take it with one chunk a
         * row (U = 1: two sets of 4 x 2 would not fit 128 registers); 1 row a warp (o, down; v74b) only where
         * the grid is one wave of the PF instance (90-93 registers against 63-80: two blocks an SM, not three;
         * the 3B's o and down, 384 blocks on 132 SMs, lost 5% of batch-1 speed when they took it anyway).
         * LLAMA_KERNEL_GEMV_PF=mask (A/B; read every call): the GEMVs of 1 / 2 / 4 weight rows a warp that may
         * take it, as bits 0 / 1 / 2; default 5 (2 rows a warp, qkv, measured no change: opt-in) */
        if constexpr (M == 1) {
            const char *pe = getenv("LLAMA_KERNEL_GEMV_PF");
            const int pm = pe && *pe ? atoi(pe) : 5;
            pf = !(he && he[0] == '0') && ((pm >> (RR == 1 ? 0 : RR == 2 ? 1 : 2)) & 1);
            if constexpr (RR == 4) {
                if (pf) kern = k_gemv_q4<1, 4, 1, false, true, true>;
                /* its grid-stride loop keeps the next step in flight across units, and two of its blocks fit an SM
                 * (128 registers): a grid of more (without the norm prologue, up to 8 an SM) only queues later
                 * waves that start cold. LLAMA_KERNEL_GEMV_PF_WAVE=0 (A/B; read every call) keeps that grid */
                const char *pw = getenv("LLAMA_KERNEL_GEMV_PF_WAVE");
                if (pf && S == 1 && !(pw && pw[0] == '0') && grid.x > (unsigned)(2 * sm_count)) grid.x = 2 * sm_count;
            } else if constexpr ((RR == 1 && (U == 2 || U == 4)) || (RR == 2 && U == 2)) {
                if constexpr (RR == 1) {
                    /* blocks of the PF instance an SM can hold (x's shared memory at its largest, 32 KB) */
                    static const int per_sm = [] {
                        int n = 0;
                        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k_gemv_q4<1, RR, U, false, true, true>,
                                                                          GEMV_WARPS * 32, 32 * 1024) != cudaSuccess) {
                            (void)cudaGetLastError();
                            n = 0;
                        }
                        return n;
                    }();
                    if ((long)grid.x * grid.y > (long)per_sm * sm_count) pf = false;
                }
                if (pf) kern = k_gemv_q4<1, RR, U, false, true, true>;
            } else {
                pf = false;
            }
        }
    }
    float *partial = ws ? ws->partial : (float *)NULL;
    int *counters = ws ? ws->counters : (int *)NULL;
    LAUNCH(pf ? "k_gemv_q4 (next step in flight)" : "k_gemv_q4", kern, grid, dim3(GEMV_WARPS * 32), smem, st,
           (const uint4 *)W->w, W->p, x, ldx, W->K, n_out, hidden, out, ldo, mode, partial, counters, re, nin, xs);
    return LK_OK;
}

template <int BM, int BN, int WM, int WN, bool TILED>
static lk_status launch_tc(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode, int n_out,
                           int hidden, const lk_mm_ws *ws, int sm_count, cudaStream_t st) {
    const int bytes = tc_smem<BM, BN>::BYTES;
    const int cols = mode == LK_OUT_SWIGLU_F16 ? BN / 2 : BN;
    dim3 grid(lk_cdiv(n_out, cols), lk_cdiv(M, BM), 1);
    /* split K when the tiles would not give every SM a block */
    const int tiles = (int)(grid.x * grid.y), KT = W->K / TC_BK;
    int S = 1;
    if (ws && ws->tc_partial && tiles <= ws->tc_n_counters)
        while (S < LK_SPLITK_MAX && tiles * S < sm_count && KT / (2 * S) >= 4 &&
               (size_t)tiles * (size_t)(2 * S) * BM * BN <= ws->tc_partial_floats)
            S *= 2;
    grid.z = S;
    LAUNCH("k_mm_q4_tc", (k_mm_q4_tc<BM, BN, WM, WN, TILED>), grid, dim3(WM * WN * 32), (size_t)bytes, st, x, ldx, M,
           (const uint8_t *)W->w, W->p, W->N, W->K, n_out, hidden, out, ldo, mode,
           ws ? ws->tc_partial : (float *)NULL, ws ? ws->tc_counters : (int *)NULL);
    return LK_OK;
}

/* ---- Hopper wgmma path -------------------------------------------------------- */
__global__ void k_wg_probe(int *out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    *out = 1;
#else
    *out = 0;
#endif
}

/* does the current device run the sm_90a code (wgmma)? Asked once per device: the build may lack
 * sm_90a (then the driver runs the plain sm_90 / PTX code, whose k_mm_q4_wg is empty) */
static int wg_ready(void) {
    static int known[64];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 0;
    if (known[dev]) return known[dev] > 0;
    int v = 0, major = 0, optin = 0;
    int *d = NULL;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major == 9 &&
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
        optin >= wg_smem<128, 256>::BYTES && cudaMalloc(&d, sizeof(int)) == cudaSuccess) {
        k_wg_probe<<<1, 1>>>(d);
        if (cudaGetLastError() != cudaSuccess || cudaMemcpy(&v, d, sizeof(int), cudaMemcpyDeviceToHost) != cudaSuccess)
            v = 0;
        cudaFree(d);
    }
    cudaGetLastError(); /* a failed probe only means "no wgmma" */
    known[dev] = v ? 1 : -1;
    return v;
}

int lk_mm_wgmma_ready(void) { return wg_ready(); }

/* fewest rows for the wgmma kernel (64-row blocks below 65). Measured (v29, H100, us, 48 / 64 rows):
 * on the tiled layout it beats the small-batch kernel's row slices on the big matrices (gate_up
 * 33.4 -> 21.8 / 44.2 -> 22.2, down 27.5 -> 25.4 / 36.2 -> 25.3, LM head 195 -> 120 / 197 -> 131) but
 * not on qkv / o (13.1 vs 16.2, 14.5 vs 18.7 at 48), which stay on slices below 57 rows; on the row-interleaved
 * layout it beats the mma.sync tile kernel everywhere (qkv 28.7 -> 18.5, o 31.1 -> 19.5 at 64).
 * LLAMA_KERNEL_WG_MIN overrides the row count (A/B). */
static int wg_min_rows(const lk_dmat *W) {
    const char *e = getenv("LLAMA_KERNEL_WG_MIN");
    if (e && e[0]) return atoi(e);
    if (W->fmt != LK_WFMT_Q4_TILED) return 17;
    /* qkv / o: from 57 rows, where the 32-row slices would take two full launches. Measured (v33, H100,
     * bench_e2e, o on wgmma from 33 rows vs slices, two runs each): batch 64 30,087 / 30,107 -> 31,247 /
     * 31,194 tok/s, but batch 48 25,499 / 25,431 -> 25,013 / 25,141 and batch 33 18,678 -> 18,473 */
    return (size_t)W->N * (size_t)W->K >= ((size_t)16 << 20) ? 33 : 57;
}

/* fewest rows for the wgmma kernel with the rotary qkv epilogue (33-64 rows, tiled layout; the
 * row-interleaved layout fuses rotary at 1-4 rows only). Measured (v33, H100): see benchmarks/NOTES.md.
 * LLAMA_KERNEL_WG_ROPE_MIN overrides it (A/B; 65 = never); read once. */
static int wg_rope_min_rows(void) {
    static int v = 0;
    if (!v) {
        const char *e = getenv("LLAMA_KERNEL_WG_ROPE_MIN");
        v = e && atoi(e) > 0 ? atoi(e) : 33;
    }
    return v;
}

/* LLAMA_KERNEL_WGMMA: 0 = off (the kernels it replaced; A/B), 128 / 256 = that many weight rows a
 * block above 64 rows, 64 = 64-token blocks at every row count; unset = by size. Read per call (17+ rows only) so tests can switch it. */
static int wg_choice(void) {
    const char *e = getenv("LLAMA_KERNEL_WGMMA");
    return e && e[0] ? atoi(e) : -1;
}

/* LLAMA_KERNEL_WG_STAGES: 3 / 6 = above 64 rows always that ring (A/B, tests); unset = by grid (try_wg).
 * The ring of 3 stages (1 k-tile ahead, ~99 KB of shared memory) lets two 128 x 128 blocks share an SM (4
 * warps a scheduler instead of 2); ncu found o and down latency-bound at 2 warps a scheduler with L2 at ~37%
 * of its peak. Read per call. */
static int wg_stages_env(void) {
    const char *e = getenv("LLAMA_KERNEL_WG_STAGES");
    return e && e[0] ? atoi(e) : 0;
}

/* the mode a kernel launch passes for `mode`: LK_OUT_ADD_F32_BATCHED for LK_OUT_ADD_F32 (the residual loads
 * batched, see epi_store) unless LLAMA_KERNEL_ADD_EPI=0 (A/B and the bit-equality tests). Read per call. */
static int add_mode(int mode) {
    const char *e = getenv("LLAMA_KERNEL_ADD_EPI");
    return mode == LK_OUT_ADD_F32 && !(e && e[0] == '0') ? (int)LK_OUT_ADD_F32_BATCHED : mode;
}

/* the driver's tensor-map encoder (cuTensorMapEncodeTiled), through the runtime so the extension does not
 * link libcuda; NULL when the driver has none (the wgmma kernel is then not used) */
static PFN_cuTensorMapEncodeTiled_v12000 tmap_encoder(void) {
    static PFN_cuTensorMapEncodeTiled_v12000 fn = NULL;
    static int tried = 0;
    if (!tried) {
        tried = 1;
        void *f = NULL;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) == cudaSuccess &&
            q == cudaDriverEntryPointSuccess)
            fn = (PFN_cuTensorMapEncodeTiled_v12000)f;
        else
            (void)cudaGetLastError();
    }
    return fn;
}

/* x [M][K] (row stride ldx, fp16) as a 2-D tensor map for the Hopper kernels: boxes of 64 inputs (128 bytes,
 * the swizzle span) x rows, 128-byte swizzle; rows past M come as zeros */
static lk_status x_tmap(CUtensorMap *m, const half *x, int M, int K, int ldx, int rows) {
    const uint64_t dims[2] = {(uint64_t)K, (uint64_t)M}, strides[1] = {(uint64_t)ldx * 2};
    const uint32_t box[2] = {WG_BK, (uint32_t)rows};
    return lk_tmap_f16(m, x, 2, dims, strides, box, "x");
}

lk_status lk_tmap_f16(CUtensorMap *m, const void *base, int rank, const uint64_t *dims, const uint64_t *strides,
                      const uint32_t *box, const char *what) {
    if (!tmap_encoder()) return lk_fail(LK_E_UNSUPPORTED, "tensor map of %s: the driver has no cuTensorMapEncodeTiled", what);
    if (rank < 2 || rank > 3) return lk_fail(LK_E_INVALID, "tensor map of %s: rank %d (2 or 3)", what, rank);
    cuuint64_t d[3], s[2];
    cuuint32_t b[3], estr[3] = {1, 1, 1};
    for (int i = 0; i < rank; i++) {
        d[i] = dims[i];
        b[i] = box[i];
        if (i) s[i - 1] = strides[i - 1];
    }
    const CUresult cr = tmap_encoder()(m, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, (cuuint32_t)rank, (void *)base, d, s, b, estr,
                                       CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                       CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (cr != CUDA_SUCCESS)
        return lk_fail(LK_E_DEVICE, "cuTensorMapEncodeTiled (%s of %llu x %llu, row stride %llu bytes) failed: error %d",
                       what, (unsigned long long)dims[0], (unsigned long long)dims[1], (unsigned long long)strides[0],
                       (int)cr);
    return LK_OK;
}

/* a tensor map of W's int4 bytes or scale/min (what: "weights" or "scale/min of", for the error), element
 * strides 1, no interleave, no fill */
static lk_status q4_tmap(CUtensorMap *m, const lk_dmat *W, const char *what, CUtensorMapDataType dt, int rank,
                         const void *p, const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box,
                         CUtensorMapSwizzle sw, CUtensorMapL2promotion l2) {
    const cuuint32_t estr[4] = {1, 1, 1, 1};
    const CUresult cr = tmap_encoder()(m, dt, rank, (void *)p, dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                       sw, l2, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (cr != CUDA_SUCCESS)
        return lk_fail(LK_E_DEVICE, "cuTensorMapEncodeTiled (int4 %s %d x %d) failed: error %d", what, W->N, W->K,
                       (int)cr);
    return LK_OK;
}

/* the tensor maps of the wgmma kernels (k_mm_q4_wg, k_mm_q4_wgk): x in boxes of BM rows; the raw weights (see
 * the kernels' loaders), row-interleaved [N][K/2] bytes as (byte, row), tiled [N/16][K/64][512 bytes] as (128 words,
 * k-tile, row tile), in boxes of a block's BN rows (SwiGLU: its gate or its up rows) */
template <int BM, int BN, bool TILED>
static lk_status wg_tmaps(const lk_dmat *W, const half *x, int M, int ldx, int mode, CUtensorMap *tmx, CUtensorMap *tmw) {
    TRY(x_tmap(tmx, x, M, W->K, ldx, BM));
    const int rr = mode == LK_OUT_SWIGLU_F16 ? BN / 2 : BN;
    const cuuint64_t wdims[3] = {TILED ? 128u : (cuuint64_t)W->K / 2, TILED ? (cuuint64_t)W->K / 64 : (cuuint64_t)W->N,
                                 (cuuint64_t)W->N / 16};
    const cuuint64_t wstr[2] = {TILED ? 512u : (cuuint64_t)W->K / 2, (cuuint64_t)W->K / 64 * 512};
    const cuuint32_t wbox[3] = {TILED ? 128u : 32u, TILED ? 1u : (cuuint32_t)rr, (cuuint32_t)rr / 16};
    return q4_tmap(tmw, W, "weights", TILED ? CU_TENSOR_MAP_DATA_TYPE_UINT32 : CU_TENSOR_MAP_DATA_TYPE_UINT8,
                   TILED ? 3 : 2, W->w, wdims, wstr, wbox, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

template <int BM, int BN, bool TILED, int STG = 6>
static lk_status launch_wg(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode, int n_out,
                           int hidden, int S, const lk_mm_ws *ws, const lk_rope_epi &re, cudaStream_t st) {
    const int cols = mode == LK_OUT_SWIGLU_F16 ? BN / 2 : BN;
    const int kmode = add_mode(mode);
    dim3 grid(lk_cdiv(n_out, cols), lk_cdiv(M, BM), S);
    CUtensorMap tmx, tmw;
    TRY((wg_tmaps<BM, BN, TILED>(W, x, M, ldx, mode, &tmx, &tmw)));
    LAUNCH("k_mm_q4_wg", (k_mm_q4_wg<BM, BN, TILED, STG>), grid, dim3(2 * BM), (size_t)wg_smem<BM, BN, STG>::BYTES, st, M,
           W->p, W->N, W->K, n_out, hidden, out, ldo, kmode,
           S > 1 ? ws->tc_partial : (float *)NULL, S > 1 ? ws->tc_counters : (int *)NULL,
           (int)(!TILED && (W->K / LK_Q4_GROUP) % 4 == 0 && (uintptr_t)W->p % 16 == 0), re, tmx, tmw);
    /* the tests ask which form ran */
    if (kmode == LK_OUT_ADD_F32_BATCHED)
        lk_last_launch = STG == 3 ? "k_mm_q4_wg (3 stages, batched add)" : "k_mm_q4_wg (batched add)";
    else if constexpr (STG == 3) lk_last_launch = "k_mm_q4_wg (3 stages)";
    return LK_OK;
}

template <int KW, bool TILED>
static lk_status launch_wgk(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode, int n_out,
                            int hidden, int S, const lk_mm_ws *ws, const lk_rope_epi &re, cudaStream_t st) {
    const int kmode = add_mode(mode);
    dim3 grid(lk_cdiv(n_out, mode == LK_OUT_SWIGLU_F16 ? 64 : 128), lk_cdiv(M, 64), S);
    CUtensorMap tmx, tmw;
    TRY((wg_tmaps<64, 128, TILED>(W, x, M, ldx, mode, &tmx, &tmw)));
    LAUNCH("k_mm_q4_wgk", (k_mm_q4_wgk<KW, TILED>), grid, dim3(128 * KW), (size_t)wgk_smem<KW>::BYTES, st, M, W->p,
           W->N, W->K, n_out, hidden, out, ldo, kmode, S > 1 ? ws->tc_partial : (float *)NULL,
           S > 1 ? ws->tc_counters : (int *)NULL, re, tmx, tmw);
    if (kmode == LK_OUT_ADD_F32_BATCHED)
        lk_last_launch = KW == 2 ? "k_mm_q4_wgk (2 warpgroups, batched add)" : "k_mm_q4_wgk (4 warpgroups, batched add)";
    else
        lk_last_launch = KW == 2 ? "k_mm_q4_wgk (2 warpgroups)" : "k_mm_q4_wgk (4 warpgroups)";
    return LK_OK;
}

/* LLAMA_KERNEL_WGK: warpgroups a block of the 64-row wgmma kernel that splits a block's k-tiles (k_mm_q4_wgk):
 * 2 or 4; 0 / 1 = the one-warpgroup kernel k_mm_q4_wg (A/B, tests). Read per call */
static int wgk_env(void) {
    const char *e = getenv("LLAMA_KERNEL_WGK");
    if (!e || !e[0]) return 4;
    const int v = atoi(e);
    return v == 2 || v == 4 ? v : 0;
}

/* the wgmma kernel when the device runs it; returns 1 when launched (status in *r).
 * Above 64 rows, 128 tokens a block; weight rows a block by grid size (measured, benchmarks/NOTES.md
 * v26-v28, H100, M = 1024): 256 while that still gives ~2/3 of the SMs a block (qkv 57 us vs 77 with
 * 128), else 128 (o 37 vs 61, down 120 vs 190); grids too small even for that take 64-row blocks
 * with K split, as below (v30: qkv at 256 rows 55 us on the mma.sync tile kernel). (256 tokens x 128
 * rows, 16 warps, was no faster: gate_up 204 vs 191 us.)
 * From wg_min_rows (the rotary qkv: wg_rope_min_rows) to 64 rows (batched decode, short prompts): 64 tokens x
 * 128 rows on k_mm_q4_wgk, 4 warpgroups splitting a block's k-tiles, one block an SM (v68, H200, same run: batch
 * 64 37.9k -> 49.0k tok/s; 2 warpgroups, two blocks an SM, 44.3k), K split (through the tensor-core workspace)
 * while the grid stays one wave and each warpgroup keeps a k-tile. LLAMA_KERNEL_WGK=0: k_mm_q4_wg, one warpgroup,
 * two blocks an SM, K split while the grid is under the SM count, and into more than a block an SM only while a
 * block would keep more than 8 k-tiles (v67). LLAMA_KERNEL_WGMMA=0 / 128 / 256 (A/B): off / that many rows above
 * 64 rows. */
static int try_wg(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode, int n_out,
                  int hidden, int sm_count, const lk_mm_ws *ws, const lk_rope_epi &re, lk_status *r, cudaStream_t st) {
    const int choice = wg_choice();
    const bool rope = mode == LK_OUT_QKV_ROPE;
    if (choice == 0 || M < (rope ? wg_rope_min_rows() : wg_min_rows(W)) || ((uintptr_t)x % 16) || ldx % 8 ||
        W->K % WG_BK || !wg_ready() || !tmap_encoder())
        return 0;
    /* the rotary epilogue: 64-row blocks (no more rows) of whole heads (128 weight rows a block) */
    if (rope && (M > 64 || (re.hd != 64 && re.hd != 128))) return 0;
    const bool swiglu = mode == LK_OUT_SWIGLU_F16, tiled = W->fmt == LK_WFMT_Q4_TILED;
    const long c128 = lk_cdiv(n_out, swiglu ? 64 : 128), c256 = lk_cdiv(n_out, swiglu ? 128 : 256);
#define WG_GO(BM, BN, S, STG)                                                                                   \
    (tiled ? launch_wg<BM, BN, true, STG>(W, x, M, ldx, out, ldo, mode, n_out, hidden, S, ws, re, st) \
           : launch_wg<BM, BN, false, STG>(W, x, M, ldx, out, ldo, mode, n_out, hidden, S, ws, re, st))
    const long t256 = c256 * lk_cdiv(M, 128), t128 = c128 * lk_cdiv(M, 128);
    const int bn = M <= 64 || choice == 64         ? 0
                   : choice == 128 || choice == 256 ? choice
                   : 3 * t256 >= 2 * sm_count       ? 256
                   : 2 * t128 >= sm_count           ? 128
                                                    : 0;
    if (!bn) { /* 64-row blocks, K split until the grid covers the SMs */
        int S = 1;
        const long tiles = c128 * lk_cdiv(M, 64), KT = W->K / WG_BK;
        /* LLAMA_KERNEL_WG_SPLIT (A/B, diagnosis, tests; read per call): N, at most N splits; "old" (one-warpgroup
         * kernel), the rule before v67 (as many splits as keep the grid under the SM count) */
        const char *se = getenv("LLAMA_KERNEL_WG_SPLIT");
        const bool old_rule = se && !strcmp(se, "old");
        const int cap = se && atoi(se) >= 1 ? (atoi(se) < LK_SPLITK_MAX ? atoi(se) : LK_SPLITK_MAX) : LK_SPLITK_MAX;
        const int kw = wgk_env();
        if (kw) { /* KW warpgroups a block (KW = 4: a block an SM; 2: two): K split while the grid stays one wave
                   * and every warpgroup keeps a k-tile */
            const long slots = kw == 4 ? sm_count : 2L * sm_count;
            if (ws && ws->tc_partial && tiles <= ws->tc_n_counters)
                while (S < cap && tiles * 2 * S <= slots && KT / (2 * S) >= kw &&
                       (size_t)tiles * (size_t)(2 * S) * 64 * 128 <= ws->tc_partial_floats)
                    S *= 2;
#define WGK_GO(KW) \
    (tiled ? launch_wgk<KW, true>(W, x, M, ldx, out, ldo, mode, n_out, hidden, S, ws, re, st) \
           : launch_wgk<KW, false>(W, x, M, ldx, out, ldo, mode, n_out, hidden, S, ws, re, st))
            *r = kw == 4 ? WGK_GO(4) : WGK_GO(2);
#undef WGK_GO
            return 1;
        }
        /* one warpgroup: no more than a block an SM unless a block would still have more than 8 k-tiles (H200,
         * alone, us at S = 8 / 4: qkv 64 rows 17.9 / 12.8; o 16.3 / 16.1, down 22.4 / 28.1 keep 8, gate_up 2) */
        if (ws && ws->tc_partial && tiles <= ws->tc_n_counters)
            while (S < cap && tiles * S < sm_count && KT / (2 * S) >= 4 &&
                   (old_rule || tiles * 2 * S <= sm_count || KT / S > 8) &&
                   (size_t)tiles * (size_t)(2 * S) * 64 * 128 <= ws->tc_partial_floats)
                S *= 2;
        *r = WG_GO(64, 128, S, 6);
        return 1;
    }
    /* The ring of 3 (two 128 x 128 blocks an SM) where that grid needs more than one block an SM but at most
     * ~1.5 waves of two (measured, benchmarks/NOTES.md v63, H100: alone, us 6 -> 3 stages, qkv 1,024 rows
     * 47.1 -> 43.3, 2,048 rows 88.0 -> 77.6, o 2,048 rows 59.1 -> 53.5, down 2,048 rows 152.9 -> 159.0; in the
     * engine, o and down both on it, prefill of 1,536 / 2,048 tokens 9.26 -> 8.96 / 11.04 -> 10.86 ms; grids of
     * one block an SM or of many waves lose: o, down 1,024 rows 31.4 -> 34.0, 90.9 -> 107.2, gate_up 148 -> 154) */
    /* The residual add takes the ring of 3 above ~1.5 waves too: its 128 x 256 blocks ran o at 4,096 rows in
     * 245 us against 92 (H200, twenty-eighth session; 3B o 398 vs 189) */
    const int se = wg_stages_env();
    const bool ring3 = se == 3 || (se != 6 && choice < 0 && t128 > sm_count &&
                                   (t128 <= 3L * sm_count || mode == LK_OUT_ADD_F32));
    *r = ring3 ? WG_GO(128, 128, 1, 3) : bn == 256 ? WG_GO(128, 256, 1, 6) : WG_GO(128, 128, 1, 6);
    return 1;
#undef WG_GO
}

/* gate_up (SwiGLU) of 17-32 rows on the register-A kernel unless LLAMA_KERNEL_RA_GU=0 (A/B; read per call).
 * Measured (benchmarks/NOTES.md, v64b, H100, us, tiled slices -> register-A): 24 rows 20.2 -> 17.9, 32 rows
 * 22.2 -> 18.1; from 48 rows the wgmma kernel is faster (20.8 vs 22.1) */
static bool ra_gate_up(void) {
    const char *e = getenv("LLAMA_KERNEL_RA_GU");
    return !(e && e[0] == '0');
}

/* whether the register-A kernel takes M (17-64) rows of this tiled matrix. Measured (H100, us, this kernel vs
 * the ones before it; benchmarks/NOTES.md, tenth session): the LM head wins from 17 rows (24 rows 71 vs 196,
 * 64 rows 93 vs 121; batch 24 decode 17,343 -> 18,732 tok/s, batch 64 31,358 -> 32,147);
 * o, down (residual add, K split: the last block sums the splits) and gate_up lose in isolation (64 rows
 * 22.7 / 28.0 / 21.8 vs 19.0 / 24.6 / 20.7); qkv wins in isolation (64 rows 13.3 vs 17.9) but lost in the
 * engine with the rotary epilogue (batch 64 29,438 vs 31,665), so only the LM head took it. With the residual add
 * batched (v64) gate_up of 17-32 rows wins too (ra_gate_up).
 * LLAMA_KERNEL_RA=N: from N (>= 17) rows on every matrix, 0 = never (A/B, tests); read per call. */
static bool ra_takes(const lk_dmat *W, int mode, int M) {
    const char *e = getenv("LLAMA_KERNEL_RA");
    if (e && e[0]) {
        const int v = atoi(e);
        return v > 0 && M >= (v < 17 ? 17 : v);
    }
    if (M < 17) return false;
    return W->N >= 32768 || (mode == LK_OUT_SWIGLU_F16 && M <= 32 && ra_gate_up());
}
/* LLAMA_KERNEL_RA_NWG = 1 | 2 warpgroups a block (A/B; default 1: three blocks an SM) */
static int ra_nwg(void) {
    const char *e = getenv("LLAMA_KERNEL_RA_NWG");
    return e && atoi(e) == 2 ? 2 : 1;
}

/* the row-interleaved layout's tensor maps for the register-A kernel: raw weights [N][K/2] bytes as (byte, row),
 * box (32 bytes, rows); scale/min [N][K/128] (half2) as (group, row), box (4 groups, rows) */
static lk_status rowi_tmaps(const lk_dmat *W, int rows, CUtensorMap *tmw, CUtensorMap *tmp) {
    const cuuint64_t wdims[2] = {(cuuint64_t)W->K / 2, (cuuint64_t)W->N}, wstr[1] = {(cuuint64_t)W->K / 2};
    const cuuint32_t wbox[2] = {32u, (cuuint32_t)rows};
    TRY(q4_tmap(tmw, W, "weights", CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, W->w, wdims, wstr, wbox, CU_TENSOR_MAP_SWIZZLE_NONE,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B));
    const cuuint64_t pdims[2] = {(cuuint64_t)W->K / 128, (cuuint64_t)W->N}, pstr[1] = {(cuuint64_t)W->K / 128 * 4};
    const cuuint32_t pbox[2] = {4u, (cuuint32_t)rows};
    return q4_tmap(tmp, W, "scale/min of", CU_TENSOR_MAP_DATA_TYPE_UINT32, 2, W->p, pdims, pstr, pbox,
                   CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE);
}

/* the tiled layout's tensor maps for the register-A kernel, `tiles` 16-row tiles a box: weights
 * [N/16][K/64][4][128 bytes] as (32 words, 128-byte row, k-tile, row tile) in the 128-byte swizzle (conflict-free
 * fragment loads); scale/min [N/16][K/128][16 rows] (half2) as (16 words, group, row tile), boxes like the weights' */
static lk_status tiled_tmaps(const lk_dmat *W, int tiles, CUtensorMap *tmw, CUtensorMap *tmp) {
    const cuuint64_t wdims[4] = {32u, 4u, (cuuint64_t)W->K / 64, (cuuint64_t)W->N / 16};
    const cuuint64_t wstr[3] = {128u, 512u, (cuuint64_t)W->K / 64 * 512};
    const cuuint32_t wbox[4] = {32u, 4u, 1u, (cuuint32_t)tiles};
    TRY(q4_tmap(tmw, W, "weights", CU_TENSOR_MAP_DATA_TYPE_UINT32, 4, W->w, wdims, wstr, wbox, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B));
    const cuuint64_t pdims[3] = {16u, (cuuint64_t)W->K / 128, (cuuint64_t)W->N / 16};
    const cuuint64_t pstr[2] = {64u, (cuuint64_t)W->K / 128 * 64};
    const cuuint32_t pbox[3] = {16u, 1u, (cuuint32_t)tiles};
    return q4_tmap(tmp, W, "scale/min of", CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, W->p, pdims, pstr, pbox,
                   CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE);
}

/* LLAMA_KERNEL_TMA_EPI=mask: which of the register-A prefill kernel's epilogues go through shared memory and
 * TMA (bit 0: the residual add, bit 1: the plain fp32 / fp16 and SwiGLU stores; default 3; 0 the loads and
 * stores per thread, A/B). Read per call */
static int tma_epi(void) {
    const char *e = getenv("LLAMA_KERNEL_TMA_EPI");
    return e && e[0] ? atoi(e) : 3;
}

/* whether TMA can address an output of es-byte elements with row stride ldo: out and its rows 16-byte aligned */
static bool tma_out_aligned(const void *out, int ldo, int es) {
    return (uintptr_t)out % 16 == 0 && ((size_t)ldo * es) % 16 == 0;
}

/* the output [M][ldo] (fp32 or fp16) as a 2-D tensor map for the TMA epilogues: boxes of 128 bytes (the
 * swizzle span: 32 or 64 columns) x `rows` tokens, 128-byte swizzle; false (the caller keeps the per-thread
 * epilogue) where TMA cannot take it: not tma_out_aligned, or the driver refuses the map */
static bool out_tmap(CUtensorMap *m, void *out, bool f16, int M, int n_out, int ldo, int rows) {
    const int es = f16 ? 2 : 4;
    if (!tmap_encoder() || !tma_out_aligned(out, ldo, es)) return false;
    const cuuint64_t dims[2] = {(cuuint64_t)n_out, (cuuint64_t)M}, str[1] = {(cuuint64_t)ldo * es};
    const cuuint32_t box[2] = {128u / es, (cuuint32_t)rows}, estr[2] = {1, 1};
    return tmap_encoder()(m, f16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, out, dims, str,
                          box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                          CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* blocks along the weight rows of a register-A grid whose blocks take `rows` weight rows (64 SETS NWG; SwiGLU:
 * half of them gate rows, half the matching up rows); launch_ra's grid.x and try_ra_prefill's rule */
static long ra_blocks_x(const lk_dmat *W, int n_out, bool swiglu, int rows) {
    return swiglu ? lk_cdiv(n_out, rows / 2) : lk_cdiv(W->N, rows);
}

template <int NT, int NWG, bool ROWI>
static lk_status launch_ra(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode, int n_out,
                           int hidden, int S, const lk_mm_ws *ws, const lk_rope_epi &re, cudaStream_t st) {
    const bool swiglu = mode == LK_OUT_SWIGLU_F16;
    constexpr int SETS = ra_smem<NT, NWG, ROWI>::SETS;
    if (SETS == 1 && (NWG != 2 || mode == LK_OUT_QKV_ROPE || S != 1))
        return lk_fail(LK_E_INVALID, "k_mm_q4_ra<%d>: two warpgroups, no rotary epilogue, no K split", NT);
    if (ra_smem<NT, NWG, ROWI>::PW && S != 1) /* (wg_split_sum's barriers are block-wide) */
        return lk_fail(LK_E_INVALID, "k_mm_q4_ra<%d, 2>: no K split with the producer warpgroup", NT);
    dim3 grid((unsigned)ra_blocks_x(W, n_out, swiglu, 64 * SETS * NWG), lk_cdiv(M, NT), S);
    CUtensorMap tmx, tmw, tmp, tmo;
    TRY(x_tmap(&tmx, x, M, W->K, ldx, NT));
    /* a box is the block's rows (SwiGLU: its gate rows; a second copy brings its up rows) */
    const int tiles = (swiglu ? 2 : 4) * SETS * NWG;
    TRY(ROWI ? rowi_tmaps(W, 16 * tiles, &tmw, &tmp) : tiled_tmaps(W, tiles, &tmw, &tmp));
    /* 128-token blocks' epilogues through TMA (tma_epi) where it takes the output; not the rotary one */
    int kmode = add_mode(mode);
    memset(&tmo, 0, sizeof tmo);
    if (NT >= 128 && S == 1) {
        const int te = tma_epi();
        const int tm = kmode == LK_OUT_ADD_F32_BATCHED ? (te & 1 ? (int)LK_OUT_ADD_F32_TMA : -1)
                       : !(te & 2)                     ? -1
                       : kmode == LK_OUT_F32           ? (int)LK_OUT_F32_TMA
                       : kmode == LK_OUT_F16           ? (int)LK_OUT_F16_TMA
                       : kmode == LK_OUT_SWIGLU_F16    ? (int)LK_OUT_SWIGLU_F16_TMA
                                                       : -1;
        if (tm >= 0 && out_tmap(&tmo, out, tm >= LK_OUT_F16_TMA, M, n_out, ldo, NT)) kmode = tm;
    }
    /* (the 192- and 256-token blocks say so: the tests ask which ran) */
    static const char *const names[3][3] = {
        {"k_mm_q4_ra", "k_mm_q4_ra (TMA add)", "k_mm_q4_ra (TMA store)"},
        {"k_mm_q4_ra (192 tokens)", "k_mm_q4_ra (192 tokens, TMA add)", "k_mm_q4_ra (192 tokens, TMA store)"},
        {"k_mm_q4_ra (256 tokens)", "k_mm_q4_ra (256 tokens, TMA add)", "k_mm_q4_ra (256 tokens, TMA store)"}};
    const char *name = names[NT == 256 ? 2 : NT == 192 ? 1 : 0][kmode == LK_OUT_ADD_F32_TMA ? 1 : kmode >= LK_OUT_F32_TMA ? 2 : 0];
    LAUNCH(name, (k_mm_q4_ra<NT, NWG, ROWI>), grid, dim3(ra_smem<NT, NWG, ROWI>::THREADS), (size_t)ra_smem<NT, NWG, ROWI>::BYTES, st, M,
           W->N, W->K, n_out, hidden, out, ldo, kmode, S > 1 ? ws->tc_partial : (float *)NULL,
           S > 1 ? ws->tc_counters : (int *)NULL, re, tmx, tmw, tmp, tmo);
    return LK_OK;
}

/* what every register-A launch needs: the wgmma kernels on (LLAMA_KERNEL_WGMMA), x by TMA (16-byte aligned
 * rows), scale/min 16-byte aligned (TMA), whole k-tiles, a device that runs the sm_90a code and the driver's
 * tensor-map encoder */
static bool ra_usable(const lk_dmat *W, const half *x, int ldx) {
    return wg_choice() != 0 && x && (uintptr_t)x % 16 == 0 && ldx % 8 == 0 && (uintptr_t)W->p % 16 == 0 &&
           W->K % WG_BK == 0 && wg_ready() && tmap_encoder();
}

/* LLAMA_KERNEL_RA_PREFILL: the register-A kernel above 64 rows (prefill, both layouts): 0 = off (the wgmma
 * kernel k_mm_q4_wg, A/B and tests), 1 / 2 = 128 tokens a block and that many warpgroups, 3 / 4 = 64 tokens
 * and 2 / 1 warpgroups, 5 / 6 = 256 / 192 tokens and two warpgroups of one weight set each, unset = by grid
 * size. Read per call. */
static int ra_prefill(void) {
    const char *e = getenv("LLAMA_KERNEL_RA_PREFILL");
    return e && e[0] ? atoi(e) : -1;
}

/* LLAMA_KERNEL_RA_256: which wide blocks the size rule of try_ra_prefill may pick: 0 = none (128 tokens a block,
 * as before v82), 1 = 256 tokens only, unset = 256 or 192 (A/B; read per call) */
static int ra_256(void) {
    const char *e = getenv("LLAMA_KERNEL_RA_256");
    return e && (e[0] == '0' || e[0] == '1') ? e[0] - '0' : 2;
}

/* whether launch_ra's 128-token blocks add into this output by TMA (LK_OUT_ADD_F32_TMA): the batched add on
 * (add_mode), bit 0 of tma_epi, the fp32 output addressable (tma_out_aligned) */
static bool ra_tma_add(const void *out, int ldo) {
    return add_mode(LK_OUT_ADD_F32) == LK_OUT_ADD_F32_BATCHED && (tma_epi() & 1) && tma_out_aligned(out, ldo, 4);
}

/* The residual add (o, down) above 64 rows: which kernel, from grid sizes (b1 / b2: blocks of one / two
 * warpgroups). With the TMA add (ra_tma_add) the register-A kernel wherever its one-warpgroup grid nearly fills
 * the SMs (b1 at least 15/16 of a block an SM). Measured (H200, thirty-fourth session, us, k_mm_q4_wg -> this
 * kernel): 1B o at 2,048 rows 42.3 -> 31.3, at 1,024 25.3 -> 19.9 (one warpgroup), at 4,096 95.0 -> 72.4;
 * down at 1,024 rows 82.7 -> 67.5 (one warpgroup); 3B o at 2,048 113.2 -> 90.8, 3B down at 1,024 131 -> 108.
 * Without it (the per-thread add) only where the two-warpgroup grid nearly fills the SMs and the k-loop is long
 * (K >= 4,096): 1B down at 2,048 rows 150 -> 138 us (twenty-eighth session); o (K = 2,048) lost 42 -> 43 us.
 * LLAMA_KERNEL_RA_ADD=0 turns the rule off (A/B; read per call). */
static bool ra_takes_add(int K, long b1, long b2, bool tma, int sm_count) {
    const char *e = getenv("LLAMA_KERNEL_RA_ADD");
    if (e && e[0] == '0') return false;
    if (tma) return 16 * b1 >= 15L * sm_count;
    return K >= 4096 && 16 * b2 >= 15L * sm_count;
}

/* the register-A kernel above 64 rows (128 tokens a block, blocks along y; no K split), either layout; returns
 * 1 when launched (status in *r). Two warpgroups a block (256 weight rows, x shared) while that grid still
 * gives every SM a block (the residual add: see below and ra_takes_add), else one (128 rows, two blocks an SM).
 * Not the rotary epilogue (the engine rotates prompts in a kernel of its own). */
static int try_ra_prefill(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode, int n_out,
                          int sm_count, const lk_rope_epi &re, lk_status *r, cudaStream_t st) {
    const int choice = ra_prefill();
    const bool swiglu = mode == LK_OUT_SWIGLU_F16, tiled = W->fmt == LK_WFMT_Q4_TILED;
    if (choice == 0 || mode == LK_OUT_QKV_ROPE || W->N % 16 || (swiglu && (W->N / 2) % 16) ||
        (!tiled && (W->K / LK_Q4_GROUP) % 4) || !ra_usable(W, x, ldx))
        return 0;
    /* blocks of the forms: 128 tokens x 256 weight rows (b2), 128 x 128 (b1), 256 x 128 (b5); 128 rows (nx) */
    const long nx = ra_blocks_x(W, n_out, swiglu, 128), b2 = ra_blocks_x(W, n_out, swiglu, 256) * lk_cdiv(M, 128);
    const long b1 = nx * lk_cdiv(M, 128), b5 = nx * lk_cdiv(M, 256);
    const bool add = mode == LK_OUT_ADD_F32, tma = add && ra_tma_add(out, ldo);
    if (choice < 0 && add && !ra_takes_add(W->K, b1, b2, tma, sm_count)) return 0;
    /* two warpgroups where that grid gives every SM a block; the TMA add: where it gives 2/3 of the SMs one (3B
     * down at 1,024 rows, 96 blocks on 132 SMs: 108 us against 112 with one warpgroup; 1B down, 64 blocks: 103.5
     * against 67.5); the per-thread add: always */
    /* 256 tokens a block (one weight set a warpgroup: half the dequant a k-tile for the same tensor-core work)
     * where that grid is at least 0.7 of a block an SM and the rows pad to 256 with little waste (at most 10%
     * more than to 128). Measured (H200, thirty-fifth session, us, form 2 -> 5): at 2,048 rows qkv 55 -> 49.7,
     * o 31 -> 28.2, down 116-121 -> 101-106, 3B qkv / o / down 131 / 90 / 216 -> 117.5 / 80.6 / 188.6; qkv at
     * 1,024 rows (96 blocks) 29.5 -> 25.5, but o and down there (64 blocks) 20.8 / 71 -> 25.8 / 88 */
    const int wide = ra_256();
    const bool f5 = wide && 10 * b5 >= 7L * sm_count && 10 * lk_cdiv(M, 256) * 256 <= 11 * lk_cdiv(M, 128) * 128;
    /* 192 tokens a block (the same form, 3/4 of the tensor-core work a block) where its whole waves take less
     * time, a block counted at 4/5 of a 256-token one: 1B qkv at 2,048 rows, 192 blocks of 256 tokens (1.45
     * waves on 132 SMs) or 264 of 192 (two) */
    const bool f6 = f5 && wide == 2 && 4 * lk_cdiv(nx * lk_cdiv(M, 192), sm_count) < 5 * lk_cdiv(b5, sm_count);
    const int form = choice >= 1 && choice <= 6 ? choice
                     : f6                       ? 6
                     : f5                       ? 5
                     : tma                      ? (3 * b2 >= 2L * sm_count ? 2 : 1)
                     : b2 >= sm_count || add    ? 2
                                                : 1;
    const int hid = swiglu ? W->N / 2 : 0;
#define RA_GO(NT, NWG) \
    (tiled ? launch_ra<NT, NWG, false>(W, x, M, ldx, out, ldo, mode, n_out, hid, 1, NULL, re, st) \
           : launch_ra<NT, NWG, true>(W, x, M, ldx, out, ldo, mode, n_out, hid, 1, NULL, re, st))
    *r = form == 1   ? RA_GO(128, 1)
         : form == 2 ? RA_GO(128, 2)
         : form == 3 ? RA_GO(64, 2)
         : form == 5 ? RA_GO(256, 2)
         : form == 6 ? RA_GO(192, 2)
                     : RA_GO(64, 1);
#undef RA_GO
    return 1;
}

/* the register-A kernel for 17-64 rows of the tiled layout when the device runs it (more rows:
 * try_ra_prefill); returns 1 when launched (status in *r). K is split (through the tensor-core workspace)
 * until the grid covers the SMs, each split keeping at least 4 k-tiles. */
static int try_ra(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode, int n_out,
                  int sm_count, const lk_mm_ws *ws, const lk_rope_epi &re, lk_status *r, cudaStream_t st) {
    if (M > 64) return try_ra_prefill(W, x, M, ldx, out, ldo, mode, n_out, sm_count, re, r, st);
    const bool swiglu = mode == LK_OUT_SWIGLU_F16, rope = mode == LK_OUT_QKV_ROPE;
    if (W->fmt != LK_WFMT_Q4_TILED || !ra_takes(W, mode, M) || !ra_usable(W, x, ldx)) return 0;
    const int nwg = ra_nwg();
    /* whole heads a block for the rotary epilogue; SwiGLU gate / up tiles in step */
    if (rope && (re.hd != 64 && re.hd != 128)) return 0;
    if (swiglu && (W->N % 32 || (W->N / 2) % 16)) return 0;
    const long nblk = swiglu ? lk_cdiv(n_out, 64 * nwg) : lk_cdiv(W->N, 128 * nwg), KT = W->K / WG_BK;
    const int nt = M <= 32 ? 32 : 64; /* tokens a block (wgmma n) */
    const size_t per_blk = (size_t)nt * 128 * nwg; /* partial floats a block and split */
    int S = 1;
    if (ws && ws->tc_partial && nblk <= ws->tc_n_counters)
        while (S < LK_SPLITK_MAX && nblk * S < sm_count && KT / (2 * S) >= 4 &&
               (size_t)nblk * (size_t)(2 * S) * per_blk <= ws->tc_partial_floats)
            S *= 2;
    const int hid = swiglu ? W->N / 2 : 0;
    if (nt == 32)
        *r = nwg == 1 ? launch_ra<32, 1, false>(W, x, M, ldx, out, ldo, mode, n_out, hid, S, ws, re, st)
                      : launch_ra<32, 2, false>(W, x, M, ldx, out, ldo, mode, n_out, hid, S, ws, re, st);
    else
        *r = nwg == 1 ? launch_ra<64, 1, false>(W, x, M, ldx, out, ldo, mode, n_out, hid, S, ws, re, st)
                      : launch_ra<64, 2, false>(W, x, M, ldx, out, ldo, mode, n_out, hid, S, ws, re, st);
    return 1;
}

lk_status lk_mm_init(void) {
#define TC_ATTR(BM, BN, WM, WN, TILED)                                                                              \
    CU(cudaFuncSetAttribute(k_mm_q4_tc<BM, BN, WM, WN, TILED>, cudaFuncAttributeMaxDynamicSharedMemorySize,         \
                            tc_smem<BM, BN>::BYTES))
    /* the instances matmul_impl launches (the tiled layout takes the tile kernel above 16 rows only) */
    TC_ATTR(16, 128, 1, 4, false);
    TC_ATTR(64, 128, 2, 4, false);
    TC_ATTR(64, 128, 2, 4, true);
    TC_ATTR(128, 128, 2, 4, false);
    TC_ATTR(128, 128, 2, 4, true);
#undef TC_ATTR
    if (wg_ready()) {
#define WG_ATTR(BM, BN, TILED, STG)                                                                      \
    CU(cudaFuncSetAttribute(k_mm_q4_wg<BM, BN, TILED, STG>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
                            wg_smem<BM, BN, STG>::BYTES))
        WG_ATTR(64, 128, false, 6);
        WG_ATTR(64, 128, true, 6);
        WG_ATTR(128, 128, false, 6);
        WG_ATTR(128, 128, true, 6);
        WG_ATTR(128, 256, false, 6);
        WG_ATTR(128, 256, true, 6);
        WG_ATTR(128, 128, false, 3);
        WG_ATTR(128, 128, true, 3);
#undef WG_ATTR
#define WGK_ATTR(KW, TILED)                                                                                  \
    CU(cudaFuncSetAttribute(k_mm_q4_wgk<KW, TILED>, cudaFuncAttributeMaxDynamicSharedMemorySize, wgk_smem<KW>::BYTES))
        WGK_ATTR(2, false);
        WGK_ATTR(2, true);
        WGK_ATTR(4, false);
        WGK_ATTR(4, true);
#undef WGK_ATTR
#define RA_ATTR(NT, NWG, ROWI)                                                                     \
    CU(cudaFuncSetAttribute(k_mm_q4_ra<NT, NWG, ROWI>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
                            ra_smem<NT, NWG, ROWI>::BYTES))
        RA_ATTR(32, 1, false);
        RA_ATTR(32, 2, false);
        RA_ATTR(64, 1, false);
        RA_ATTR(64, 2, false);
        RA_ATTR(128, 1, false);
        RA_ATTR(128, 2, false);
        RA_ATTR(128, 1, true);
        RA_ATTR(128, 2, true);
        RA_ATTR(64, 1, true);
        RA_ATTR(64, 2, true);
        RA_ATTR(192, 2, false);
        RA_ATTR(192, 2, true);
        RA_ATTR(256, 2, false);
        RA_ATTR(256, 2, true);
#undef RA_ATTR
    }
    return LK_OK;
}

static int tiled_wide_blocks(void);
static bool tiled_duo(int N, int sm_count);

template <int NT, bool PAIR, bool DUO = false>
static lk_status launch_gemv_tiled(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode,
                                   int n_out, int hidden, const lk_mm_ws *ws, int sm_count, const lk_rope_epi &re,
                                   int m_all, cudaStream_t st) {
    const int N = W->N, groups = W->K / 128;
    const int units = DUO ? N / 32 : !PAIR ? lk_cdiv(N, 16) : mode == LK_OUT_SWIGLU_F16 ? lk_cdiv(n_out, 16) : N / 32;
    if (((uintptr_t)x % 16) || ldx % 8)
        return lk_fail(LK_E_UNSUPPORTED, "tiled matmul: x must be 16-byte aligned with a row stride that is a "
                                         "multiple of 8 (got %d)", ldx);
    /* warps along K (WK, within a block) until the warps fill the GPU (two 8-warp blocks per SM);
     * each warp keeps >= 1 group. K splits across blocks (S, through the workspace) only when
     * forced: measured (bench_matmul.py --tune-tiled, H100, M = 16) every split was slower than
     * WK = 8 alone (qkv 5.1 vs 12.8 us, down 11.1 vs 14.1, LM head 74 vs 113) */
    const int want = 3 * sm_count * 2 * TG_WARPS / 4;
    int WK = 1, S = 1;
    while (WK < TG_WARPS && units * WK < want && 2 * WK <= groups) WK *= 2;
    /* no more row blocks than SMs and a long K (1B down: 128 blocks, 64 groups): 16-warp blocks,
     * all along K, so each SM has 16 warps of loads in flight. Measured (run 10, H100): down 10.8
     * -> 10.3 us at 16 rows, 39.4 -> 36.7 at 64; on the short-K or wider matrices it lost (qkv 5.3
     * -> 7.0, o 3B 8.6 -> 11.1, down 3B 13.5 -> 16.7), so only here */
    if (NT <= 2 && !DUO && units <= sm_count && groups >= 64 && tiled_wide_blocks()) WK = 16;
    /* the same for rotary / SwiGLU pairs with few units (the 1B qkv's rotary pairs at 2-16 rows: 96 units) down to
     * one group a warp, where the whole matmul is one launch of at most 16 rows (m_all: the rows of every slice).
     * H200 (NOTES v92, decode_ab, 8-warp / 16-warp alternated): batch 16 23,917 -> 24,069 tok/s (4 of 4), batch 8
     * +1% (2 of 2), batch 4 7,796 -> 7,907 (3 of 3); batch 64 (four 16-row slices) 50,490 -> 50,134 (2 of 2), hence
     * one launch only. LLAMA_KERNEL_TILED_PAIR16=0 (A/B; read every call) keeps 8-warp blocks there */
    if (PAIR && NT <= 2 && m_all <= 16 && units <= sm_count && groups >= 16 && tiled_wide_blocks()) {
        const char *pe = getenv("LLAMA_KERNEL_TILED_PAIR16");
        if (!(pe && pe[0] == '0')) WK = 16;
    }
    if (g_tune_tiled.wk) {
        WK = (NT <= 2 && !DUO) || g_tune_tiled.wk <= TG_WARPS ? g_tune_tiled.wk : TG_WARPS;
        S = g_tune_tiled.s && ws && ws->tg_partial &&
                    lk_cdiv(units, (WK > TG_WARPS ? WK : TG_WARPS) / WK) <= ws->tg_n_counters &&
                    (size_t)g_tune_tiled.s * (size_t)M * (size_t)N <= ws->tg_partial_floats
                ? g_tune_tiled.s
                : 1;
    }
    const int NWB = WK > TG_WARPS ? WK : TG_WARPS; /* warps per block */
    const int gx = lk_cdiv(units, NWB / WK), cap = sm_count * (NWB > TG_WARPS ? 1 : 2);
    dim3 grid(S > 1 ? gx : (gx < cap ? gx : cap), S);
    /* LLAMA_KERNEL_TILED_EARLY=mask (A/B; read every call): bit 0 the first weights before the PDL wait,
     * bit 1 the next kernel triggered right after it (k_gemv_tiled's early); default 3. Measured (H200,
     * benchmarks/NOTES.md v75): alone at 16 rows, us, 0 / 1 / 3: qkv 4.4 / 4.4 / 3.8, o 4.2 / 4.0 / 3.4,
     * down 7.8 / 7.5 / 7.3; with k_rmsnorm's early trigger, batch 16 decode 22,363 / 21,710 (0) ->
     * 22,924 / 22,884 (1) -> 23,713 / 23,178 tok/s (3) */
    const char *ee = getenv("LLAMA_KERNEL_TILED_EARLY");
    const int early = ee && *ee ? atoi(ee) & 3 : 3;
#define TG_LAUNCH_B(GG, NWT, MB)                                                                                    \
    LAUNCH(MB ? "k_gemv_tiled (three blocks an SM)" : DUO ? "k_gemv_tiled (two row blocks a unit)" : "k_gemv_tiled",   \
           (k_gemv_tiled<NT, PAIR, GG, NWT, DUO, MB>),                                                                 \
           grid, dim3(NWT * 32), 0, st, (const uint4 *)W->w,                                                          \
           W->p, x, ldx, M, W->K, N, n_out, hidden, out, ldo, add_mode(mode), WK, ws ? ws->tg_partial : (float *)NULL,        \
           ws ? ws->tg_counters : (int *)NULL, re, early)
#define TG_LAUNCH(GG, NWT) TG_LAUNCH_B(GG, NWT, 0)
    /* plain one-block units, a block's 8 warps on one unit, whose blocks would need a second round at two an SM
     * (the 3B's qkv as a plain matmul at 1-16 rows: 320 blocks for 264 places on 132 SMs) run bounded to 80
     * registers, three blocks an SM, in one round (not while bench_matmul.py --tune-tiled forces a configuration).
     * LLAMA_KERNEL_TILED_THREE=0 (A/B; read every call) keeps two rounds */
    if constexpr (NT <= 2 && !PAIR && !DUO) {
        const char *te = getenv("LLAMA_KERNEL_TILED_THREE");
        if (!g_tune_tiled.wk && WK == TG_WARPS && gx > cap && gx <= 3 * sm_count && !(te && te[0] == '0')) {
            grid.x = gx;
            TG_LAUNCH_B(1, TG_WARPS, 3);
            return LK_OK;
        }
    }
    /* two groups per step only where the registers allow it (one-block units, up to 16 rows) */
    if constexpr (NT <= 2 && !DUO) {
        if (NWB > TG_WARPS) {
            if constexpr (PAIR) TG_LAUNCH(1, 2 * TG_WARPS);
            else TG_LAUNCH(TG_GROUPS_1, 2 * TG_WARPS);
            return LK_OK;
        }
    }
    if constexpr (PAIR || DUO || NT >= 4) TG_LAUNCH(1, TG_WARPS);
    else if (g_tune_tiled.g == 1) TG_LAUNCH(1, TG_WARPS);
    else TG_LAUNCH(TG_GROUPS_1, TG_WARPS);
#undef TG_LAUNCH
#undef TG_LAUNCH_B
    return LK_OK;
}

/* two consecutive 16-row blocks a unit of the tiled small-batch kernel (plain outputs, 1-16 rows): the two blocks
 * share each group's x fragments and x sums, so a warp loads x and runs the x-sum mma once per 32 weight rows
 * instead of per 16. Only where the duo units still give every warp of a full grid (two 8-warp blocks an SM)
 * one or more (the LM head: 4,008 for 2,112 warps on 132 SMs): on narrower matrices half the warps would idle.
 * LLAMA_KERNEL_TILED_DUO (A/B; read every call): 0 never, 2 wherever N is a multiple of 32 */
static bool tiled_duo(int N, int sm_count) {
    if (N % 32) return false;
    const char *e = getenv("LLAMA_KERNEL_TILED_DUO");
    if (e && e[0] == '0') return false;
    if (e && e[0] == '2') return true;
    return N / 32 >= 2 * sm_count * TG_WARPS;
}

/* 16-warp blocks of the tiled small-batch kernel for matrices with few row blocks, unless
 * LLAMA_KERNEL_TILED_NW=8 (A/B); read once */
static int tiled_wide_blocks(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("LLAMA_KERNEL_TILED_NW");
        v = !(e && atoi(e) == 8);
    }
    return v;
}

/* rows per launch of the tiled small-batch kernel above 16 rows: 32 (four n8 tiles); for A/B
 * measurements LLAMA_KERNEL_TILED_SLICE=16 (16-row launches) or =0 (the tile kernel above 16
 * rows). Read once (threads that race here all store the same value). */
static int tiled_slice_rows(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("LLAMA_KERNEL_TILED_SLICE");
        v = e && e[0] ? (atoi(e) == 16 ? 16 : atoi(e) == 0 ? 0 : 32) : 32;
    }
    return v;
}

/* rows m0.. of a matmul that runs in row slices: the output rows, and the rotary epilogue's
 * positions and slots (*rm) */
static void *out_slice(int mode, void *out, int ldo, const lk_rope_epi &re, int m0, lk_rope_epi *rm) {
    *rm = re;
    if (mode == LK_OUT_QKV_ROPE) {
        rm->pos += m0;
        rm->slot += m0;
    }
    return mode == LK_OUT_F16 || mode == LK_OUT_SWIGLU_F16 || mode == LK_OUT_QKV_ROPE
               ? (void *)((half *)out + (size_t)m0 * ldo)
               : (void *)((float *)out + (size_t)m0 * ldo);
}

static lk_status matmul_impl(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode,
                             int variant, const lk_mm_ws *ws, int sm_count, int cc_major, int cc_minor,
                             const lk_rope_epi &re, const lk_norm_in &nin, cudaStream_t st) {
    if (M < 1) return LK_OK;
    if (nin.w && !lk_mm_fuses_norm(W, M, variant, cc_major, cc_minor))
        return lk_fail(LK_E_UNSUPPORTED, "no RMSNorm prologue for %d rows of a %d x %d matrix", M, W->N, W->K);
    const bool swiglu = mode == LK_OUT_SWIGLU_F16;
    const int n_out = swiglu ? W->N / 2 : W->N, hidden = swiglu ? W->N / 2 : 0;
    if (W->K % LK_Q4_GROUP && W->fmt != LK_WFMT_BF16)
        return lk_fail(LK_E_UNSUPPORTED, "no int4 kernel for K = %d (must be a multiple of %d)", W->K, LK_Q4_GROUP);
    if (W->fmt == LK_WFMT_BF16) {
        if (W->K % 8) return lk_fail(LK_E_UNSUPPORTED, "no bf16 kernel for K = %d (must be a multiple of 8)", W->K);
        if (M <= 4) {
            dim3 grid(lk_cdiv(n_out, 8));
            switch (M) {
            case 1: LAUNCH("k_gemv_bf16", k_gemv_bf16<1>, grid, dim3(256), 0, st, (const uint4 *)W->w, x, ldx, W->K, n_out, hidden, out, ldo, mode); break;
            case 2: LAUNCH("k_gemv_bf16", k_gemv_bf16<2>, grid, dim3(256), 0, st, (const uint4 *)W->w, x, ldx, W->K, n_out, hidden, out, ldo, mode); break;
            case 3: LAUNCH("k_gemv_bf16", k_gemv_bf16<3>, grid, dim3(256), 0, st, (const uint4 *)W->w, x, ldx, W->K, n_out, hidden, out, ldo, mode); break;
            default: LAUNCH("k_gemv_bf16", k_gemv_bf16<4>, grid, dim3(256), 0, st, (const uint4 *)W->w, x, ldx, W->K, n_out, hidden, out, ldo, mode); break;
            }
        } else {
            dim3 grid(lk_cdiv(n_out, SG_T), lk_cdiv(M, SG_T));
            LAUNCH("k_mm_bf16_simt", k_mm_bf16_simt, grid, dim3(256), 0, st, x, ldx, M, (const uint16_t *)W->w, W->N,
                   W->K, n_out, hidden, out, ldo, mode);
        }
        return LK_OK;
    }
    if (W->fmt == LK_WFMT_Q4_TILED) {
        /* the tensor-core layout: 1-16 rows on the tiled small-batch kernel, more on the tiled tile kernel */
        if (variant == LK_MM_LUT || variant == LK_MM_OPTIMIZED)
            return lk_fail(LK_E_UNSUPPORTED, "matmul variant %s needs the row-interleaved int4 layout; load the model "
                                             "with matmul_variant=\"%s\" to use it", lk_mm_variant_name(variant),
                           lk_mm_variant_name(variant));
        if (W->N % 16 || (swiglu && hidden % 16) || (mode == LK_OUT_QKV_ROPE && re.hd % 32))
            return lk_fail(LK_E_UNSUPPORTED, "no tiled kernel for N = %d", W->N);
        const bool pair = swiglu || mode == LK_OUT_QKV_ROPE;
        /* 17..LK_TILED_SLICE_MAX rows: the small-batch kernel per slice of rows (weights read once
         * per slice) instead of the tile kernel, except on the LM head. Measured (benchmarks/NOTES.md,
         * v15-v16, H100): 32-row slices win on narrow single-block matrices (o 64 rows 19.1 vs 21.7
         * us in 16-row slices vs 31.6 tile kernel), 16-row slices on pairs and down (gate_up 45.7 vs
         * 53.8 vs 45.3; down 39.0 vs 40.7 vs 42.4) */
        if (M > 16) {
            lk_status r = LK_OK;
            if (try_ra(W, x, M, ldx, out, ldo, mode, n_out, sm_count, ws, re, &r, st)) return r;
            if (try_wg(W, x, M, ldx, out, ldo, mode, n_out, hidden, sm_count, ws, re, &r, st)) return r;
        }
        const bool slices = tiled_slice_rows() && W->N < 32768;
        if (M <= 16 || (M <= LK_TILED_SLICE_MAX && (mode == LK_OUT_QKV_ROPE || slices))) {
            const bool wide = M > 16 && tiled_slice_rows() > 16 && !pair &&
                              (size_t)W->N * (size_t)W->K < ((size_t)16 << 20);
            const int step = wide ? 32 : 16; /* rows per launch */
            for (int m0 = 0; m0 < M; m0 += step) {
                const int mm = M - m0 < step ? M - m0 : step;
                const half *xm = x + (size_t)m0 * ldx;
                lk_rope_epi rm;
                void *om = out_slice(mode, out, ldo, re, m0, &rm);
                const bool duo = !pair && mm <= 16 && tiled_duo(W->N, sm_count);
#define TG_ARGS W, xm, mm, ldx, om, ldo, mode, n_out, hidden, ws, sm_count, rm, M, st
#define TG_CALL(NT)                                             \
    (pair  ? launch_gemv_tiled<NT, true>(TG_ARGS)               \
     : duo ? launch_gemv_tiled<NT, false, true>(TG_ARGS)        \
           : launch_gemv_tiled<NT, false>(TG_ARGS))
                const lk_status r = mm <= 8    ? TG_CALL(1)
                                    : mm <= 16 ? TG_CALL(2)
                                    : pair     ? launch_gemv_tiled<4, true>(TG_ARGS)
                                               : launch_gemv_tiled<4, false>(TG_ARGS);
#undef TG_ARGS
#undef TG_CALL
                if (r) return r;
            }
            return LK_OK;
        }
        if (mode == LK_OUT_QKV_ROPE)
            return lk_fail(LK_E_UNSUPPORTED, "fused rotary epilogue needs <= %d rows", LK_TILED_SLICE_MAX);
        lk_status r = LK_OK;
        if (try_wg(W, x, M, ldx, out, ldo, mode, n_out, hidden, sm_count, ws, re, &r, st)) return r;
        if (M <= 64) return launch_tc<64, 128, 2, 4, true>(W, x, M, ldx, out, ldo, mode, n_out, hidden, ws, sm_count, st);
        return launch_tc<128, 128, 2, 4, true>(W, x, M, ldx, out, ldo, mode, n_out, hidden, ws, sm_count, st);
    }
    if (variant == LK_MM_AUTO) variant = lk_mm_choose(M, W->N, W->K, cc_major, cc_minor);
    if (variant == LK_MM_BATCHED) {
        lk_status r = LK_OK;
        if (M > 64 && try_ra_prefill(W, x, M, ldx, out, ldo, mode, n_out, sm_count, re, &r, st)) return r;
        if (try_wg(W, x, M, ldx, out, ldo, mode, n_out, hidden, sm_count, ws, re, &r, st)) return r;
        if (M <= 16)
            return launch_tc<16, 128, 1, 4, false>(W, x, M, ldx, out, ldo, mode, n_out, hidden, ws, sm_count, st);
        if (M <= 64)
            return launch_tc<64, 128, 2, 4, false>(W, x, M, ldx, out, ldo, mode, n_out, hidden, ws, sm_count, st);
        return launch_tc<128, 128, 2, 4, false>(W, x, M, ldx, out, ldo, mode, n_out, hidden, ws, sm_count, st);
    }
    if (variant != LK_MM_LUT && variant != LK_MM_OPTIMIZED)
        return lk_fail(LK_E_INVALID, "unknown matmul variant %d", variant);
    const bool lut = variant == LK_MM_LUT;
    const int chunks = W->K / 32;
    for (int m0 = 0; m0 < M; m0 += 4) {
        const int mm = M - m0 < 4 ? M - m0 : 4;
        const bool pair = swiglu || mode == LK_OUT_QKV_ROPE;
        int RR, U, S = 1;
        if (mm == 1) {
            /* one row (benchmarks/NOTES.md, v10; bench_matmul.py --tune on H100): as many
             * weight rows per warp (4, 2, 1; 2 at least for pairs) as still leave two waves of
             * warps (gate_up, LM head, 3B qkv: more; o, down: 1), 2 chunks in flight per lane
             * (4 or 8 were slower alone, down 3B 9.9 -> 15.0 us, but not inside the step for rows of
             * one warp: below), and no split-K: inside the decode
             * step the partial/merge pass of o and down cost more than it bought (17.3 us for
             * o + down vs 10.6 without). */
            auto units_of = [&](int R) {
                return mode == LK_OUT_QKV_ROPE ? n_out / R : lk_cdiv(n_out, pair ? R / 2 : R);
            };
            const int enough = 2 * sm_count * GEMV_WARPS;
            RR = units_of(4) >= enough ? 4 : (pair || units_of(2) >= enough) ? 2 : 1;
            /* a rotary GEMV (qkv) with the norm prologue runs GEMV_NORM_BLOCKS an SM (launch_gemv): where 2 rows
             * a warp would need a second round of the grid (3B qkv: 2,560 warps for 2,112 places on an H100,
             * so 56 blocks work twice as long) 4 rows a warp fit in one. H100 (NOTES v58): 3B qkv 7.5 -> 6.4 us
             * a call, 3B batch 1 881 -> 921 tok/s. LLAMA_KERNEL_GEMV_QKV_RR4=0 (A/B, read every call) keeps 2 */
            if (RR == 2 && mode == LK_OUT_QKV_ROPE && nin.w && units_of(2) > GEMV_NORM_BLOCKS * sm_count * GEMV_WARPS) {
                const char *q4 = getenv("LLAMA_KERNEL_GEMV_QKV_RR4");
                if (!(q4 && q4[0] == '0')) RR = 4;
            }
            /* fp32 / fp16 outputs (not the residual add) on rows of at most 96 chunks (K <= 3,072): the most rows
             * a warp (4, 2, 1) whose warps still fill half of one wave (sm_count x GEMV_WARPS), where the rule above
             * leaves a warp count a little past a wave, a second round of short warps. H200 (NOTES v86, alone, us):
             * qkv-shaped fp16 outputs, 1B 1 -> 2 rows a warp 3.1 -> 2.6, 3B 2 -> 4 rows 6.7 -> 4.8. The residual
             * add keeps the rule above: the 3B o (1 -> 2 rows, 4 chunks in flight) was 3.5 -> 3.4 us alone but the
             * 3B's batch-1 decode 1,071 -> 1,058 tok/s. LLAMA_KERNEL_GEMV_HALF_WAVE=0 (A/B, read every call) keeps
             * the rule above everywhere */
            bool half_wave = false;
            if (!pair && chunks <= 96 && mode != LK_OUT_ADD_F32) {
                const char *hw = getenv("LLAMA_KERNEL_GEMV_HALF_WAVE");
                if (!(hw && hw[0] == '0')) {
                    half_wave = true;
                    const int half = sm_count * GEMV_WARPS;
                    RR = units_of(4) >= half ? 4 : units_of(2) >= half ? 2 : 1;
                }
            }
            U = 2;
            /* 4 chunks in flight a lane at one weight row a warp on rows of more than one step (down; the 3B's
             * o): down streamed at ~1.3 TB/s past its fixed cost with 2 (gate_up ~2.7; step timeline, NOTES v55),
             * a quarter of gate_up's bytes in flight. H100 (NOTES v56): down 8.2 -> 6.8 us a call, batch 1
             * 1,968 -> 2,079 tok/s, 3B 863 -> 885; 8 in flight 2,055 / 823, 4 bound to 64 registers 1,968 / 861;
             * 4 only on rows of 128+ chunks (not the 3B's o) 3B 880 -> 859; 4 at 2 rows a warp too (3B qkv)
             * 882 -> 876. LLAMA_KERNEL_GEMV_LONG_U=2|4|8 (A/B, read every call) sets it */
            if ((RR == 1 || (RR == 2 && half_wave)) && chunks > 64) {
                const char *lu = getenv("LLAMA_KERNEL_GEMV_LONG_U");
                int u = lu && *lu ? atoi(lu) : 4;
                /* unless set: residual adds of one weight row a warp whose warps fit one wave of two blocks an SM
                 * (1B down) keep 2, with the next step in flight (launch_gemv's PF: 4 chunks in flight either way).
                 * H200 (NOTES v89): 1B batch-1 decode 2,451 / 2,459 -> 2,485 / 2,487 tok/s; down alone (--tune) 4.71
                 * -> 4.59 us. The 3B's down and o (3,072 warps: no PF) keep 4: 2 there was 8.1 / 4.3 us against
                 * 6.4 / 3.5 */
                if (!(lu && *lu) && RR == 1 && mode == LK_OUT_ADD_F32 && n_out <= enough) u = 2;
                if (u == 2 || u == 4 || u == 8) U = u;
            }
            /* 8 chunks in flight a lane on residual adds of one weight row a warp and rows of at most 64 chunks (1B
             * o), the form without the next step in flight (gemv_body's PF takes 2 or 4). H200 (NOTES v88, us): o
             * alone 2.5 (2) / 2.6 (4) / 2.3 (8); batch-1 decode 2,439 / 2,443 / 2,440 tok/s (equal).
             * LLAMA_KERNEL_GEMV_SHORT_U=2|4|8 (A/B, read every call) sets it */
            if (RR == 1 && chunks <= 64 && mode == LK_OUT_ADD_F32) {
                const char *su = getenv("LLAMA_KERNEL_GEMV_SHORT_U");
                const int u = su && *su ? atoi(su) : 8;
                if (u == 2 || u == 4 || u == 8) U = u;
            }
            if (g_tune.rr) RR = pair && g_tune.rr == 1 ? 2 : g_tune.rr;
            if (g_tune.u) U = g_tune.u;
            if (g_tune.s && mode == LK_OUT_ADD_F32 && ws && ws->partial) S = g_tune.s;
        } else {
            /* 2-4 rows: 2 weight rows per warp; split-K for residual adds when the grid would not
             * fill the GPU */
            RR = 2;
            U = mm == 2 ? 2 : 1;
            const int units = mode == LK_OUT_QKV_ROPE ? n_out / RR : lk_cdiv(n_out, pair ? RR / 2 : RR);
            if (mode == LK_OUT_ADD_F32 && ws && ws->partial) {
                while (S < LK_SPLITK_MAX && units * S < sm_count * 32 && chunks / (2 * S) >= 32 &&
                       (size_t)(2 * S) * (size_t)mm * (size_t)n_out <= ws->partial_floats)
                    S *= 2;
            }
        }
        if (S > 1 && (size_t)S * (size_t)mm * (size_t)n_out > ws->partial_floats) S = 1;
        const half *xm = x ? x + (size_t)m0 * ldx : NULL;
        lk_rope_epi rm;
        void *om = out_slice(mode, out, ldo, re, m0, &rm);
        lk_norm_in nm = nin;
        if (nm.w) nm.x += (size_t)m0 * W->K;
        lk_status r;
#define GEMV_CASE(MM, R, UU)                                                                                        \
    r = lut ? launch_gemv<MM, R, UU, true>(W, xm, ldx, om, ldo, mode, n_out, hidden, S, ws, sm_count, rm, nm, st) \
            : launch_gemv<MM, R, UU, false>(W, xm, ldx, om, ldo, mode, n_out, hidden, S, ws, sm_count, rm, nm, st)
#define GEMV_KEY(MM, R, UU) ((MM) * 100 + (R) * 10 + (UU))
        switch (GEMV_KEY(mm, RR, U)) {
        case GEMV_KEY(1, 1, 2): GEMV_CASE(1, 1, 2); break;
        case GEMV_KEY(1, 1, 4): GEMV_CASE(1, 1, 4); break;
        case GEMV_KEY(1, 1, 8): GEMV_CASE(1, 1, 8); break;
        case GEMV_KEY(1, 2, 2): GEMV_CASE(1, 2, 2); break;
        case GEMV_KEY(1, 2, 4): GEMV_CASE(1, 2, 4); break;
        case GEMV_KEY(1, 2, 8): GEMV_CASE(1, 2, 8); break;
        case GEMV_KEY(1, 4, 2): GEMV_CASE(1, 4, 2); break; /* 4 x 4 chunks in flight spill at 128 registers */
        case GEMV_KEY(2, 2, 2): GEMV_CASE(2, 2, 2); break;
        case GEMV_KEY(3, 2, 1): GEMV_CASE(3, 2, 1); break;
        case GEMV_KEY(4, 2, 1): GEMV_CASE(4, 2, 1); break;
        default:
            return lk_fail(LK_E_INVALID, "no GEMV instance for %d rows, %d weight rows per warp, %d chunks in flight",
                           mm, RR, U);
        }
#undef GEMV_KEY
#undef GEMV_CASE
        if (r) return r;
    }
    return LK_OK;
}

int lk_mm_ffn_fusable(const lk_dmat *o, const lk_dmat *gu, const lk_dmat *dn, int M, int variant, int cc_major,
                      int cc_minor) {
    if (M != 1 || o->fmt != LK_WFMT_Q4 || gu->fmt != LK_WFMT_Q4 || dn->fmt != LK_WFMT_Q4) return 0;
    if (variant == LK_MM_AUTO) variant = lk_mm_choose(1, gu->N, gu->K, cc_major, cc_minor);
    if (variant != LK_MM_OPTIMIZED) return 0;
    const int dim = o->N, hidden = gu->N / 2;
    return gu->N % 2 == 0 && gu->K == dim && dn->N == dim && dn->K == hidden && o->K % LK_Q4_GROUP == 0 &&
           dim % LK_Q4_GROUP == 0 && hidden % LK_Q4_GROUP == 0 && lk_mm_fuses_norm(gu, 1, variant, cc_major, cc_minor);
}

lk_status lk_cuda_ffn_fused(const lk_dmat *o, const lk_dmat *gu, const lk_dmat *dn, const half *att, float *x,
                            half *ffn, const lk_norm_in *nin, unsigned *bar, int sm_count, cudaStream_t st) {
    if (!lk_mm_ffn_fusable(o, gu, dn, 1, LK_MM_OPTIMIZED, 0, 0) || !nin || !nin->w || !nin->x || !bar)
        return lk_fail(LK_E_UNSUPPORTED, "fused o/gate_up/down: unsupported shapes or formats");
    /* every block must be resident at once (grid barriers): the grid is what the SMs hold. Blocks
     * per SM are register-bound (128 x 256 threads: 2 on every sm_80+ part), so one query serves all
     * devices; threads that race here store the same value */
    static int per_sm = -1;
    const size_t smem = (size_t)o->N * sizeof(half);
    if (per_sm < 0) {
        int n = 0;
        CU(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k_ffn_fused, GEMV_WARPS * 32, smem));
        per_sm = n > 2 ? 2 : n;
    }
    if (per_sm < 1) return lk_fail(LK_E_UNSUPPORTED, "fused o/gate_up/down: the kernel does not fit an SM");
    lk_ffn_args a;
    a.o_w = o->w;
    a.gu_w = gu->w;
    a.dn_w = dn->w;
    a.o_p = o->p;
    a.gu_p = gu->p;
    a.dn_p = dn->p;
    a.att = att;
    a.x = x;
    a.ffn = ffn;
    a.norm = *nin;
    a.q_dim = o->K;
    a.dim = o->N;
    a.hidden = gu->N / 2;
    LAUNCH("k_ffn_fused", k_ffn_fused, dim3(per_sm * sm_count), dim3(GEMV_WARPS * 32), smem, st, a, bar);
    return LK_OK;
}

lk_status lk_cuda_matmul(const lk_dmat *W, const half *x, int M, int ldx, void *out, int ldo, int mode, int variant,
                         const lk_mm_ws *ws, int sm_count, int cc_major, int cc_minor, cudaStream_t st) {
    lk_rope_epi none;
    memset(&none, 0, sizeof none);
    none.hd = 2;
    const lk_norm_in nn = {NULL, NULL, 0.0f};
    return matmul_impl(W, x, M, ldx, out, ldo, mode, variant, ws, sm_count, cc_major, cc_minor, none, nn, st);
}

int lk_mm_fuses_norm(const lk_dmat *W, int M, int variant, int cc_major, int cc_minor) {
    return W->fmt == LK_WFMT_Q4 && lk_mm_uses_gemv(W, M, variant, cc_major, cc_minor) && W->K % 4 == 0 &&
           (size_t)(M < 4 ? M : 4) * (size_t)W->K * sizeof(half) <= 48u * 1024u;
}

lk_status lk_cuda_matmul_norm(const lk_dmat *W, const lk_norm_in *nin, int M, void *out, int ldo, int mode,
                              int variant, const lk_mm_ws *ws, int sm_count, int cc_major, int cc_minor,
                              cudaStream_t st) {
    lk_rope_epi none;
    memset(&none, 0, sizeof none);
    none.hd = 2;
    if (!nin || !nin->w || !nin->x) return lk_fail(LK_E_INVALID, "matmul_norm: no norm input");
    return matmul_impl(W, NULL, M, W->K, out, ldo, mode, variant, ws, sm_count, cc_major, cc_minor, none, *nin, st);
}

int lk_mm_uses_gemv(const lk_dmat *W, int M, int variant, int cc_major, int cc_minor) {
    if (W->fmt == LK_WFMT_Q4_TILED) return M <= LK_TILED_SLICE_MAX;
    if (W->fmt != LK_WFMT_Q4) return 0;
    if (variant == LK_MM_AUTO) variant = lk_mm_choose(M, W->N, W->K, cc_major, cc_minor);
    return variant == LK_MM_LUT || variant == LK_MM_OPTIMIZED;
}

lk_status lk_cuda_matmul_qkv_rope(const lk_dmat *W, const half *x, int M, int ldx, half *q_out, int ldo, int variant,
                                  const lk_rope_epi *re, const lk_norm_in *nin, const lk_mm_ws *ws, int sm_count,
                                  int cc_major, int cc_minor, cudaStream_t st) {
    if (!lk_mm_uses_gemv(W, M, variant, cc_major, cc_minor) || re->hd % (W->fmt == LK_WFMT_Q4_TILED ? 32 : 4) ||
        W->N != (re->n_heads + 2 * re->n_kv) * re->hd)
        return lk_fail(LK_E_UNSUPPORTED, "no fused rotary epilogue for this qkv shape or variant");
    if (variant == LK_MM_AUTO && W->fmt == LK_WFMT_Q4) variant = lk_mm_choose(M, W->N, W->K, cc_major, cc_minor);
    const lk_norm_in nn = {NULL, NULL, 0.0f};
    return matmul_impl(W, x, M, ldx, q_out, ldo, LK_OUT_QKV_ROPE, variant, ws, sm_count, cc_major, cc_minor, *re,
                       nin ? *nin : nn, st);
}
