/* lk_attention.cu: flash attention.
 *
 * Decode (any rows, each its own slot/position): split-KV. One block per
 * (row, kv head, split) reads its range of K/V once for all the query heads of
 * the GQA group, in tiles of 64 positions staged in shared memory, with an
 * online softmax; the last split of a (row, kv head) to finish merges them
 * (a warp per query head). The number of splits is
 * fixed per batch size (so the launch can live in a CUDA graph); blocks past
 * the sequence's length exit at once.
 *
 * Prefill (M consecutive positions of one sequence): FlashAttention-2 style.
 * One block per (64 queries, query head): Q fragments in registers, K/V tiles
 * of 64 positions double-buffered with cp.async, S = QK^T and O += PV with
 * mma.sync m16n8k16 (fp16 in, fp32 accumulate), online softmax in registers,
 * causal tiles skipped, GQA by indexing the kv head (K/V never repeated).
 * head_dim 64 and 128 are compiled in.
 */
#include "lk_kernels.cuh"
#include "lk_wgmma.cuh"

#include <float.h>
#include <string.h>

#define DEC_T 128
#define DEC_TILE 64
#define DEC_MAX_SPLITS 64 /* the merge reads two splits per lane */
/* fewest positions per decode split (LLAMA_KERNEL_ATTN_CHUNK, 64-4096, overrides): 64 while the
 * rows x kv heads give few blocks, 256 from 64 of them on. H100 (benchmarks/NOTES.md, v23), after
 * the merge went warp-parallel: batch 1 decode 1,625 -> 1,666 tok/s with 64 (contexts 32-288),
 * bench_attention B=1 L=1024 12.2 -> 7.7 us, L=8192 16.5 -> 13.9; batch 16 16,817 (256) vs
 * 16,612 (64) */
#define DEC_CHUNK_FEW 64
#define DEC_CHUNK_MANY 256
/* rows of at most this many positions take one split (no merge) in the tensor-core kernel while
 * the blocks are few (LLAMA_KERNEL_ATTN_ONE_SPLIT overrides, 0 = off). H100 (benchmarks/NOTES.md,
 * v47), B=1 32 heads hd 64, us at L = 128 / 256 / 512: one split 3.5 / 4.7 / 7.0, splits of 64
 * positions 5.0 / 5.7 / 6.5 (the merge costs ~1.5 us, a tile ~0.6); in the batch 1 step (graphs, PDL
 * off, contexts 32-160) 4.75 -> 3.87 us a call, but batch 1 decode itself was flat (1,767 / 1,786 vs
 * 1,776 / 1,776 tok/s, ABAB). The CUDA-core kernel (head_dim 128: one buffer, tiles not
 * overlapped) is faster split: 3B at L = 256 7.7 (64) vs 12.3 us (one split) */
#define DEC_ONE_SPLIT_TC 256

/* ---- decode --------------------------------------------------------------------- */
/* mma.sync m16n8k16 pieces (both the tensor-core decode and the prefill kernel) */
__device__ __forceinline__ void fa_ldsm4(uint32_t r[4], const void *p) {
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void fa_ldsm4_t(uint32_t r[4], const void *p) {
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void fa_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_h2(float x, float y) {
    half2 h = __floats2half2_rn(x, y);
    return *reinterpret_cast<uint32_t *>(&h);
}

/* the positions [t_begin, t_end) of split `split` of decode row r (at least a.min_chunk positions a split,
 * whole tiles), and how many of the row's splits hold positions (only those take part in the merge) */
struct dec_split {
    int t_begin, t_end, S_act;
    __device__ __forceinline__ dec_split(const lk_attn_args &a, int r, int split) {
        const int n = a.pos[r] + 1, S = a.splits;
        int chunk = (n + S - 1) / S;
        chunk = chunk < a.min_chunk ? a.min_chunk : (chunk + DEC_TILE - 1) / DEC_TILE * DEC_TILE;
        if (n <= a.one_split) chunk = n;
        t_begin = split * chunk;
        t_end = min(n, t_begin + chunk);
        S_act = (n + chunk - 1) / chunk;
    }
};

/* the decode kernels' PDL wait; with a.trigger the next kernel may launch from here on (its blocks
 * then load what does not depend on this one, e.g. the o projection's first weights, while this one
 * runs; every kernel before this one has finished by now, so that stays true for the next one) */
__device__ __forceinline__ void dec_wait(const lk_attn_args &a) {
    lk_pdl_prologue();
    if (a.trigger) lk_pdl_trigger();
}

/* per-block shape of the decode kernels: NW warps, warp w owns query heads w, w + NW, ... (HPW of
 * them) and, for the output and the merge, lane owns dims DPL * lane .. DPL * lane + DPL - 1 */
template <int HD, int G>
struct dec_shape {
    static constexpr int NW = DEC_T / 32, HPW = (G + NW - 1) / NW, DPL = HD / 32;
};

/* The end of a decode block, from the (max, sum, unnormalised output) of each query head of the
 * group over this split's positions (m in natural-log units): the output when the split is the
 * row's only one, else a partial; the last split of a (row, kv head) to finish merges them all. */
template <int HD, int G>
__device__ __forceinline__ void decode_finish(const lk_attn_args &a, int r, int kvh, int split, int S, int S_act,
                                              const float (&m)[dec_shape<HD, G>::HPW],
                                              const float (&l)[dec_shape<HD, G>::HPW],
                                              const float (&o)[dec_shape<HD, G>::HPW][dec_shape<HD, G>::DPL]) {
    constexpr int NW = dec_shape<HD, G>::NW, HPW = dec_shape<HD, G>::HPW, DPL = dec_shape<HD, G>::DPL;
    __shared__ int is_last;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    float *part = a.part + ((size_t)r * a.n_heads + (size_t)kvh * G) * S * (HD + 2);
    if (S_act == 1) {
#pragma unroll
        for (int h = 0; h < HPW; h++) {
            const int g = w + NW * h;
            if (g >= G) break;
            const float inv = 1.0f / l[h];
            half *dst = a.out + (size_t)r * a.n_heads * HD + (size_t)(kvh * G + g) * HD + DPL * lane;
#pragma unroll
            for (int k = 0; k < DPL; k += 2) *reinterpret_cast<half2 *>(dst + k) = __floats2half2_rn(o[h][k] * inv, o[h][k + 1] * inv);
        }
        return;
    }
#pragma unroll
    for (int h = 0; h < HPW; h++) {
        const int g = w + NW * h;
        if (g >= G) break;
        float *pp = part + ((size_t)g * S + split) * (HD + 2);
#pragma unroll
        for (int k = 0; k < DPL; k++) pp[2 + DPL * lane + k] = o[h][k];
        if (lane == 0) {
            pp[0] = m[h];
            pp[1] = l[h];
        }
    }
    /* the last split of this (row, kv head) to finish merges all of them: warp w merges heads w,
     * w + NW, ...; lanes read the (max, sum) of splits lane and lane + 32 (S <= DEC_MAX_SPLITS), the
     * per-split weights go through shared memory, then each lane sums its DPL output dims over the
     * splits, with the loads of many splits in flight at once */
    __threadfence();
    __syncthreads();
    if (tid == 0) is_last = atomicAdd(&a.counters[r * a.n_kv + kvh], 1) == S_act - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    __shared__ float wsp[NW][DEC_MAX_SPLITS];
#pragma unroll
    for (int h = 0; h < HPW; h++) {
        const int g = w + NW * h;
        if (g >= G) break;
        const float *pg = part + (size_t)g * S * (HD + 2);
        float ms[2], ls[2];
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int sp = lane + 32 * j;
            ms[j] = sp < S_act ? __ldcg(pg + (size_t)sp * (HD + 2)) : -INFINITY;
            ls[j] = sp < S_act ? __ldcg(pg + (size_t)sp * (HD + 2) + 1) : 0.0f;
            if (!(ls[j] > 0.0f)) ms[j] = -INFINITY;
        }
        const float M = lk_warp_max(fmaxf(ms[0], ms[1]));
        const float f0 = ls[0] > 0.0f ? __expf(ms[0] - M) : 0.0f, f1 = ls[1] > 0.0f ? __expf(ms[1] - M) : 0.0f;
        const float inv = 1.0f / lk_warp_sum(f0 * ls[0] + f1 * ls[1]);
        wsp[w][lane] = f0 * inv;
        wsp[w][lane + 32] = f1 * inv;
        __syncwarp();
        float acc[DPL];
#pragma unroll
        for (int k = 0; k < DPL; k++) acc[k] = 0.0f;
#pragma unroll 16
        for (int sp = 0; sp < S_act; sp++) {
            const float f = wsp[w][sp];
            const float *pp = pg + (size_t)sp * (HD + 2) + 2 + DPL * lane;
#pragma unroll
            for (int k = 0; k < DPL; k++) acc[k] += __ldcg(pp + k) * f;
        }
        half *dst = a.out + (size_t)r * a.n_heads * HD + (size_t)(kvh * G + g) * HD + DPL * lane;
#pragma unroll
        for (int k = 0; k < DPL; k += 2) *reinterpret_cast<half2 *>(dst + k) = __floats2half2_rn(acc[k], acc[k + 1]);
        __syncwarp();
    }
    if (tid == 0) a.counters[r * a.n_kv + kvh] = 0;
}

/* q, and every K/V tile, arrive by cp.async (one memory latency for all of a
 * tile's loads, not one per loop iteration), double-buffered at head_dim 64
 * (tile i+1 in flight while tile i is scored; head_dim 128 has the shared
 * memory for one buffer). K rows are padded to HD + 8 halves (16-byte
 * aligned rows; the 16-byte score reads of 8 consecutive rows hit distinct banks). */
template <int HD, int G>
__global__ void __launch_bounds__(DEC_T) k_attn_decode(lk_attn_args a) {
    const bool pre = a.prefetch != 0; /* the first tile's old rows before the PDL wait (see lk_attn_args) */
    if (!pre) dec_wait(a);
    constexpr int KLD = HD + 8, NB = HD <= 64 ? 2 : 1;
    /* warp w owns query heads w, w + NW, ...: scores, softmax and P V for a head stay inside one
     * warp (shuffles, no block barrier); lane owns positions lane and lane + 32 of a tile for the
     * scores and dims DPL * lane .. of the output */
    constexpr int NW = dec_shape<HD, G>::NW, HPW = dec_shape<HD, G>::HPW, DPL = dec_shape<HD, G>::DPL;
    static_assert(DEC_TILE == 64 && HD % 64 == 0, "decode tile layout");
    __shared__ __align__(16) half qh[G][HD];
    __shared__ __align__(16) float qs[G][HD];
    __shared__ __align__(16) half ks[NB][DEC_TILE][KLD];
    __shared__ __align__(16) half vs[NB][DEC_TILE][HD];
    const int r = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, tid = threadIdx.x;
    const int lane = tid & 31, w = tid >> 5, S = a.splits;
    const dec_split sp(a, r, split);
    const int t_begin = sp.t_begin, t_end = sp.t_end, S_act = sp.S_act;
    if (t_begin >= t_end) {
        if (pre) dec_wait(a); /* every block waits: the kernel never ends before the previous one */
        return;
    }
    /* positions from `fresh` on may still be written by the previous kernel */
    const int fresh = pre ? a.pos[r] : 0x7fffffff;
    float m[HPW], l[HPW], o[HPW][DPL];
#pragma unroll
    for (int h = 0; h < HPW; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) o[h][k] = 0.0f;
    }
    {
        const int sl = a.slot[r];
        const half *K = a.kc + ((size_t)sl * a.n_kv + kvh) * a.max_seq * HD;
        const half *V = a.vc + ((size_t)sl * a.n_kv + kvh) * a.max_seq * HD;
        const half *q = a.qkv + (size_t)r * a.qkv_ld + (size_t)kvh * G * HD;
        /* part 0: the whole tile; 1: its rows before `fresh` (and the zero rows past its end); 2: the rest */
        auto stage = [&](int t0, int b, int part) {
            const int cnt = min(DEC_TILE, t_end - t0);
            for (int i = tid; i < DEC_TILE * HD / 8; i += DEC_T) {
                const int t = i / (HD / 8), c = (i % (HD / 8)) * 8;
                const bool p = t < cnt;
                if (part && (p && t0 + t >= fresh) != (part == 2)) continue;
                const size_t off = (size_t)(p ? t0 + t : t0) * HD + c;
                lk_cp_async16(&ks[b][t][c], K + off, p);
                lk_cp_async16(&vs[b][t][c], V + off, p);
            }
            asm volatile("cp.async.commit_group;");
        };
        stage(t_begin, 0, 1);
        if (pre) dec_wait(a);
        for (int i = tid; i < G * HD / 8; i += DEC_T) lk_cp_async16(&qh[0][0] + i * 8, q + i * 8, true);
        stage(t_begin, 0, 2); /* (one group with q) */
        int b = 0;
        for (int t0 = t_begin; t0 < t_end; t0 += DEC_TILE, b = (b + 1) % NB) {
            const int cnt = min(DEC_TILE, t_end - t0);
            if (NB == 2 && t0 + DEC_TILE < t_end) {
                stage(t0 + DEC_TILE, (b + 1) % NB, 0);
                asm volatile("cp.async.wait_group 1;" ::: "memory");
            } else {
                asm volatile("cp.async.wait_group 0;" ::: "memory");
            }
            __syncthreads(); /* the tile (and, the first time, q) from every thread's copies */
            if (t0 == t_begin) {
#pragma unroll
                for (int h = 0; h < HPW; h++) {
                    const int g = w + NW * h;
                    if (g < G)
                        for (int d = lane; d < HD; d += 32) qs[g][d] = __half2float(qh[g][d]) * a.scale;
                }
                __syncwarp();
            }
#pragma unroll
            for (int h = 0; h < HPW; h++) {
                const int g = w + NW * h;
                if (g >= G) break;
                /* scores of positions lane and lane + 32 */
                float sc[2];
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const int t = lane + 32 * j;
                    float acc = -INFINITY;
                    if (t < cnt) {
                        acc = 0.0f;
#pragma unroll
                        for (int d = 0; d < HD; d += 8) {
                            const uint4 kv = *reinterpret_cast<const uint4 *>(&ks[b][t][d]);
                            const half2 *kh = reinterpret_cast<const half2 *>(&kv);
                            const float4 qa = *reinterpret_cast<const float4 *>(&qs[g][d]);
                            const float4 qb = *reinterpret_cast<const float4 *>(&qs[g][d + 4]);
                            const float2 k0 = __half22float2(kh[0]), k1 = __half22float2(kh[1]),
                                         k2 = __half22float2(kh[2]), k3 = __half22float2(kh[3]);
                            acc += qa.x * k0.x + qa.y * k0.y + qa.z * k1.x + qa.w * k1.y + qb.x * k2.x + qb.y * k2.y +
                                   qb.z * k3.x + qb.w * k3.y;
                        }
                    }
                    sc[j] = acc;
                }
                /* online softmax (cnt >= 1, so the tile max is finite) */
                const float m_new = fmaxf(m[h], lk_warp_max(fmaxf(sc[0], sc[1])));
                const float p0 = __expf(sc[0] - m_new), p1 = __expf(sc[1] - m_new);
                const float corr = __expf(m[h] - m_new);
                l[h] = l[h] * corr + lk_warp_sum(p0 + p1);
                m[h] = m_new;
#pragma unroll
                for (int k = 0; k < DPL; k++) o[h][k] *= corr;
                /* P V: p of position t comes from lane t % 32 */
#pragma unroll 8
                for (int t = 0; t < cnt; t++) {
                    const float p = __shfl_sync(0xffffffffu, t < 32 ? p0 : p1, t & 31);
                    if (DPL == 2) {
                        const float2 v = __half22float2(*reinterpret_cast<const half2 *>(&vs[b][t][2 * lane]));
                        o[h][0] += p * v.x;
                        o[h][DPL - 1] += p * v.y;
                    } else {
#pragma unroll
                        for (int k = 0; k < DPL; k += 2) {
                            const float2 v =
                                __half22float2(*reinterpret_cast<const half2 *>(&vs[b][t][DPL * lane + k]));
                            o[h][k] += p * v.x;
                            o[h][k + 1] += p * v.y;
                        }
                    }
                }
            }
            __syncthreads(); /* before a stage overwrites buffer b */
            if (NB == 1 && t0 + DEC_TILE < t_end) stage(t0 + DEC_TILE, 0, 0);
        }
    }
    decode_finish<HD, G>(a, r, kvh, split, S, S_act, m, l, o);
}

/* Decode on tensor cores: the same blocks, splits and merge as k_attn_decode, but S = Q K^T and
 * O += P V as mma.sync m16n8k16 with the group's G query heads as rows 0..G-1 of the A operand
 * (rows G..15 zero: the tensor cores have the room, and their 2 x 16 mmas a tile replace the
 * ~650 instructions a warp the CUDA-core form spends on its head). Warp w takes positions
 * 16w..16w+15 of each 64-position tile for all G heads, with its own online softmax (P rounded to
 * fp16 as in the prefill kernel); the four warps' (max, sum, output) are combined at the end. K/V
 * tiles arrive by cp.async through an NS-stage ring (NS - 1 tiles in flight while one is used);
 * rows padded to HD + 8 halves so the ldmatrix reads hit distinct banks. */
template <int HD, int G, int NS>
__global__ void __launch_bounds__(DEC_T) k_attn_decode_tc(lk_attn_args a) {
    const bool pre = a.prefetch != 0; /* the first tile's old rows before the PDL wait (see lk_attn_args) */
    if (!pre) dec_wait(a);
    using SH = dec_shape<HD, G>;
    constexpr int NW = SH::NW, HPW = SH::HPW, DPL = SH::DPL;
    constexpr int KLD = HD + 8, KS = HD / 16, OT = HD / 8;
    static_assert(G <= 8 && NW == 4 && DEC_TILE == 16 * NW && NS >= 2, "decode tile layout");
    static_assert(NW * 8 * HD * 4 <= NS * DEC_TILE * KLD * 2, "the combine buffer fits in the K ring");
    extern __shared__ __align__(16) unsigned char dec_smem[];
    half *ks = reinterpret_cast<half *>(dec_smem); /* [NS][DEC_TILE][KLD] */
    half *vs = ks + NS * DEC_TILE * KLD;           /* [NS][DEC_TILE][KLD] */
    __shared__ float cm[NW][8], cl[NW][8];
    const int r = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, tid = threadIdx.x;
    const int lane = tid & 31, w = tid >> 5, S = a.splits;
    const dec_split sp(a, r, split);
    const int t_begin = sp.t_begin, t_end = sp.t_end, S_act = sp.S_act;
    if (t_begin >= t_end) {
        if (pre) dec_wait(a); /* every block waits: the kernel never ends before the previous one */
        return;
    }
    const int fresh = pre ? a.pos[r] : 0x7fffffff; /* positions from here on may still be being written */
    const int sl = a.slot[r];
    const half *K = a.kc + ((size_t)sl * a.n_kv + kvh) * a.max_seq * HD;
    const half *V = a.vc + ((size_t)sl * a.n_kv + kvh) * a.max_seq * HD;
    const half *q = a.qkv + (size_t)r * a.qkv_ld + (size_t)kvh * G * HD;
    const int n_t = (t_end - t_begin + DEC_TILE - 1) / DEC_TILE;
    /* part 0: the whole tile; 1: its rows before `fresh` (and the zero rows past its end); 2: the rest */
    auto stage = [&](int it, int part) {
        if (it < n_t) {
            const int t0 = t_begin + it * DEC_TILE, cnt = min(DEC_TILE, t_end - t0), b = it % NS;
            for (int i = tid; i < DEC_TILE * HD / 8; i += DEC_T) {
                const int t = i / (HD / 8), c = (i % (HD / 8)) * 8;
                const bool p = t < cnt;
                if (part && (p && t0 + t >= fresh) != (part == 2)) continue;
                const size_t off = (size_t)(p ? t0 + t : t0) * HD + c;
                lk_cp_async16(ks + ((size_t)b * DEC_TILE + t) * KLD + c, K + off, p);
                lk_cp_async16(vs + ((size_t)b * DEC_TILE + t) * KLD + c, V + off, p);
            }
        }
        asm volatile("cp.async.commit_group;"); /* empty past the end: the group count stays uniform */
    };
    /* tile 0 in two groups (before and after the wait), then tiles 1 .. NS-2: at the loop's first
     * wait only the NS - 2 newest groups may still be pending, so both halves of tile 0 have landed */
    stage(0, 1);
    if (pre) dec_wait(a);
    stage(0, 2);
#pragma unroll
    for (int i = 1; i < NS - 1; i++) stage(i, 0);
    /* A fragments of Q: lane holds head g = lane / 4 (zero from G on), dims k*16 + 2(lane%4) (+8) */
    const int g = lane >> 2;
    uint32_t qf[KS][2];
#pragma unroll
    for (int k = 0; k < KS; k++) {
        qf[k][0] = g < G ? *reinterpret_cast<const uint32_t *>(q + g * HD + k * 16 + (lane & 3) * 2) : 0u;
        qf[k][1] = g < G ? *reinterpret_cast<const uint32_t *>(q + g * HD + k * 16 + 8 + (lane & 3) * 2) : 0u;
    }
    const float sl2 = a.scale * 1.4426950408889634f; /* scores in log2 units: exp(x) = exp2(x log2 e) */
    float m_r = -INFINITY, l_r = 0.0f, oc[OT][4];
#pragma unroll
    for (int i = 0; i < OT; i++)
#pragma unroll
        for (int k = 0; k < 4; k++) oc[i][k] = 0.0f;
    for (int it = 0; it < n_t; it++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(NS - 2) : "memory");
        __syncthreads(); /* tile it from every thread's copies; tile it - 1's buffer is free */
        stage(it + NS - 1, 0);
        const int cnt = min(DEC_TILE, t_end - (t_begin + it * DEC_TILE));
        if (16 * w >= cnt) continue; /* warp-uniform: no positions of this warp in the tile */
        const half *kb = ks + (size_t)(it % NS) * DEC_TILE * KLD, *vb = vs + (size_t)(it % NS) * DEC_TILE * KLD;
        float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int k = 0; k < KS; k++) {
            uint32_t bf[4];
            fa_ldsm4(bf, kb + (16 * w + (lane >> 4) * 8 + (lane & 7)) * KLD + k * 16 + ((lane >> 3) & 1) * 8);
            const uint32_t qa[4] = {qf[k][0], 0u, qf[k][1], 0u};
            fa_mma(s[0], qa, bf[0], bf[1]);
            fa_mma(s[1], qa, bf[2], bf[3]);
        }
        /* row g's scores of positions 16w + 8j + 2(lane%4) + e; past cnt masked */
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int t = 16 * w + 8 * j + (lane & 3) * 2 + e;
                const float v = t < cnt ? s[j][e] * sl2 : -INFINITY;
                s[j][e] = v;
                mx = fmaxf(mx, v);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2)); /* finite: position 16w < cnt */
        const float m_new = fmaxf(m_r, mx), corr = exp2f(m_r - m_new);
        float rs = 0.0f;
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                s[j][e] = exp2f(s[j][e] - m_new);
                rs += s[j][e];
            }
        rs += __shfl_xor_sync(0xffffffffu, rs, 1);
        rs += __shfl_xor_sync(0xffffffffu, rs, 2);
        l_r = l_r * corr + rs;
        m_r = m_new;
#pragma unroll
        for (int i = 0; i < OT; i++) {
            oc[i][0] *= corr;
            oc[i][1] *= corr;
        }
        const uint32_t pa[4] = {pack_h2(s[0][0], s[0][1]), 0u, pack_h2(s[1][0], s[1][1]), 0u};
#pragma unroll
        for (int i = 0; i < OT; i += 2) {
            uint32_t bf[4];
            fa_ldsm4_t(bf, vb + (16 * w + (lane & 7) + ((lane >> 3) & 1) * 8) * KLD + i * 8 + (lane >> 4) * 8);
            fa_mma(oc[i], pa, bf[0], bf[1]);
            fa_mma(oc[i + 1], pa, bf[2], bf[3]);
        }
    }
    /* combine the four warps (the ring is free: every copy was waited for, every read is done) */
    __syncthreads();
    float *co = reinterpret_cast<float *>(dec_smem); /* [NW][8][HD] */
    if (g < G) {
        if ((lane & 3) == 0) {
            cm[w][g] = m_r;
            cl[w][g] = l_r;
        }
#pragma unroll
        for (int i = 0; i < OT; i++)
            *reinterpret_cast<float2 *>(co + ((size_t)w * 8 + g) * HD + i * 8 + (lane & 3) * 2) =
                make_float2(oc[i][0], oc[i][1]);
    }
    __syncthreads();
    float m[HPW], l[HPW], o[HPW][DPL];
#pragma unroll
    for (int h = 0; h < HPW; h++) {
        const int gg = w + NW * h;
        m[h] = -INFINITY;
        l[h] = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) o[h][k] = 0.0f;
        if (gg >= G) continue;
        float M = -INFINITY;
#pragma unroll
        for (int v = 0; v < NW; v++)
            if (cl[v][gg] > 0.0f) M = fmaxf(M, cm[v][gg]);
#pragma unroll
        for (int v = 0; v < NW; v++) {
            const float f = cl[v][gg] > 0.0f ? exp2f(cm[v][gg] - M) : 0.0f;
            l[h] += f * cl[v][gg];
#pragma unroll
            for (int k = 0; k < DPL; k++) o[h][k] += f * co[((size_t)v * 8 + gg) * HD + DPL * lane + k];
        }
        m[h] = M * 0.6931471805599453f; /* back to natural-log units for the merge */
    }
    decode_finish<HD, G>(a, r, kvh, split, S, S_act, m, l, o);
}

template <int HD, int NS>
struct dec_tc_smem {
    static constexpr int BYTES = 2 * NS * DEC_TILE * (HD + 8) * 2;
};

/* LLAMA_KERNEL_ATTN_CHUNK, or -1 when unset or invalid; read once */
static int decode_chunk_env(void) {
    static int v = 0;
    if (!v) {
        const char *e = getenv("LLAMA_KERNEL_ATTN_CHUNK");
        int c = e ? atoi(e) : 0;
        v = c >= DEC_TILE && c <= 4096 && c % DEC_TILE == 0 ? c : -1;
    }
    return v;
}

/* Which decode kernel: the tensor-core one at head_dim 64; at 128 it only while rows x KV heads < 64 and
 * every row has at most DEC_TC_LEN_HD128 positions, else the CUDA-core one (the tensor-core kernel's 70 KB
 * ring leaves 3 blocks an SM: slower with many blocks or long rows). LLAMA_KERNEL_ATTN_DECODE=simt|tc
 * forces one and LLAMA_KERNEL_ATTN_TC_LEN=N sets the length (A/B; read once). H100 (benchmarks/NOTES.md,
 * v32), simt -> tc, us: B=16 L=8192 121.0 -> 98.6, B=1 L=32768 37.2 -> 30.7, B=64 L=1024 62.4 -> 50.6;
 * head_dim 128 B=16 L=8192 193.9 -> 207.9. Ring depth 2 beat 3 and 4 (fewer blocks an SM). Head_dim 128,
 * one row, 24 heads (v50): L = 64 / 256 / 1,024 / 4,096 3.72 / 6.58 / 7.77 / 13.39 -> 2.72 / 5.14 / 6.96 /
 * 19.63, and L = 1,536 / 2,048 / 3,072 10.03 / 9.38 / 11.65 -> 8.86 / 9.23 / 11.38; 3B batch 1 763-766 ->
 * 790-791 tok/s (256 tokens), 731 -> 744 (1,500 tokens, crossing from one kernel to the other) */
#define DEC_TC_LEN_HD128 3072
int lk_attention_decode_tc(int hd, int M, int n_kv, int max_len) {
    static int v = 0, len = DEC_TC_LEN_HD128;
    if (!v) {
        const char *e = getenv("LLAMA_KERNEL_ATTN_DECODE");
        const char *l = getenv("LLAMA_KERNEL_ATTN_TC_LEN");
        if (l && *l && atoi(l) >= 0) len = atoi(l);
        v = e && !strcmp(e, "simt") ? 1 : e && !strcmp(e, "tc") ? 2 : 3;
    }
    if (v != 3) return v == 2;
    return hd == 64 || (hd == 128 && M * n_kv < 64 && max_len > 0 && max_len <= len);
}

#define DEC_TC_STAGES 2

template <int HD, int G>
static lk_status launch_decode(const lk_attn_args *a, cudaStream_t st) {
    if (a->splits < 1 || a->splits > DEC_MAX_SPLITS)
        return lk_fail(LK_E_INVALID, "decode attention: %d KV splits (1-%d)", a->splits, DEC_MAX_SPLITS);
    dim3 grid(a->M, a->n_kv, a->splits);
    lk_attn_args k = *a;
    const int env = decode_chunk_env();
    k.min_chunk = env > 0 ? env : a->M * a->n_kv >= 64 ? DEC_CHUNK_MANY : DEC_CHUNK_FEW;
    /* LLAMA_KERNEL_ATTN_PREFETCH=0 turns the early copies off (A/B; read every call) */
    const char *pe = getenv("LLAMA_KERNEL_ATTN_PREFETCH");
    if (pe && !strcmp(pe, "0")) k.prefetch = 0;
    /* early trigger (dec_wait) at one row, where the next kernel is the one-row o GEMV, which loads
     * its first weights before its own wait. H100 (benchmarks/NOTES.md, v48), same run, off -> on:
     * batch 1 1,809-1,824 -> 1,837-1,850 tok/s, 3B 728-753 -> 766-767; batch 16 flat, batch 64
     * 31,808 -> 31,131 (the tensor-core o matmul has nothing to load early, and its waiting blocks
     * hold SM slots). LLAMA_KERNEL_ATTN_TRIGGER=0 / 1 forces it off / on (A/B; read every call) */
    const char *te = getenv("LLAMA_KERNEL_ATTN_TRIGGER");
    k.trigger = te ? strcmp(te, "0") != 0 : a->M == 1;
    const bool tc = lk_attention_decode_tc(HD, a->M, a->n_kv, a->max_len);
    const char *oe = getenv("LLAMA_KERNEL_ATTN_ONE_SPLIT"); /* (A/B; read every call) */
    k.one_split = oe ? atoi(oe) : tc && env <= 0 && a->M * a->n_kv < 64 ? DEC_ONE_SPLIT_TC : 0;
    if (tc)
        LAUNCH("k_attn_decode_tc", (k_attn_decode_tc<HD, G, DEC_TC_STAGES>), grid, dim3(DEC_T),
               (size_t)dec_tc_smem<HD, DEC_TC_STAGES>::BYTES, st, k);
    else
        LAUNCH("k_attn_decode", (k_attn_decode<HD, G>), grid, dim3(DEC_T), 0, st, k);
    return LK_OK;
}

/* the tensor-core decode kernel's shared-memory attribute (above 48 KB at head_dim 128) */
template <int HD, int G>
static lk_status decode_tc_init() {
    CU(cudaFuncSetAttribute(k_attn_decode_tc<HD, G, DEC_TC_STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            dec_tc_smem<HD, DEC_TC_STAGES>::BYTES));
    return LK_OK;
}

lk_status lk_attention_decode(const lk_attn_args *a, cudaStream_t st) {
    const int G = a->n_heads / a->n_kv;
#define DEC_CASE(HD_, G_) \
    if (a->head_dim == HD_ && G == G_) return launch_decode<HD_, G_>(a, st)
    DEC_CASE(64, 1); DEC_CASE(64, 2); DEC_CASE(64, 3); DEC_CASE(64, 4); DEC_CASE(64, 8);
    DEC_CASE(128, 1); DEC_CASE(128, 2); DEC_CASE(128, 3); DEC_CASE(128, 4); DEC_CASE(128, 8);
#undef DEC_CASE
    return lk_attention_plain(a, st); /* other shapes: the plain kernel (correct, slower) */
}

/* ---- prefill: FlashAttention-2 with mma.sync --------------------------------------- */
/* exp2 as one MUFU.EX2, where exp2f adds a range fix-up around it (denormal results flushed to zero:
 * nothing in a softmax). H100, v65: the wgmma prefill kernel at S = 2,048 66.3 -> 58.0 us */
__device__ __forceinline__ float fw_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* The online-softmax step of a flash prefill tile, over one thread's accumulators of two query rows (n8 tile
 * j: s[4 j + e], row e / 2; the other values of each row on the 4 lanes of a quad): the running maxima m (raw
 * score units) and sums l (of exp2(sl2 (s - m)), this thread's columns: fa_quad_sum adds the quad's up at
 * the end, v66) move to this tile, s becomes P = exp2(sl2 (s - m)), and corr[r] is the factor that rescales
 * row r of O. Both prefill kernels (v65: shared). fa_softmax_max: its first half (the maxima, ms = sl2 times
 * the new maximum, and corr), also the start of fw_softmax_nosum */
template <int NS>
__device__ __forceinline__ void fa_softmax_max(const float (&s)[NS], float (&m_r)[2], float sl2, float (&ms)[2],
                                               float (&corr)[2]) {
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < NS; i++) mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 1));
        mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 2));
        const float m_new = fmaxf(m_r[rr], mx[rr]);
        /* a row with everything masked so far keeps m = -inf: no inf - inf (its p are exp2(-inf) = 0) */
        ms[rr] = m_new == -INFINITY ? 0.0f : m_new * sl2;
        corr[rr] = m_new == -INFINITY ? 1.0f : fw_exp2(m_r[rr] * sl2 - ms[rr]);
        m_r[rr] = m_new;
    }
}

template <int NS>
__device__ __forceinline__ void fa_softmax(float (&s)[NS], float (&m_r)[2], float (&l_r)[2], float sl2, float (&corr)[2]) {
    float ms[2];
    fa_softmax_max(s, m_r, sl2, ms, corr);
    float rs[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < NS; i++) {
        const float p = fw_exp2(fmaf(s[i], sl2, -ms[(i >> 1) & 1])); /* one FFMA and one MUFU a score */
        s[i] = p;
        rs[(i >> 1) & 1] += p;
    }
    /* l: this thread's columns only (corr is the quad's), summed over the quad once, by fa_quad_sum */
#pragma unroll
    for (int rr = 0; rr < 2; rr++) l_r[rr] = l_r[rr] * corr[rr] + rs[rr];
}

/* the row sums of fa_softmax over the quad's four lanes (all lanes, before any per-row branch) */
__device__ __forceinline__ void fa_quad_sum(float (&l)[2]) {
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 1);
        l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 2);
    }
}

/* P of keys 16 kk .. 16 kk + 15 (n8 tiles 2 kk and 2 kk + 1 of the accumulators above) as an m16n8k16 / wgmma
 * A fragment, fp16: the accumulator layout is the A layout, so no data moves between lanes */
template <int NS>
__device__ __forceinline__ void fa_p_frag(const float (&s)[NS], int kk, uint32_t (&pa)[4]) {
    pa[0] = pack_h2(s[8 * kk + 0], s[8 * kk + 1]);
    pa[1] = pack_h2(s[8 * kk + 2], s[8 * kk + 3]);
    pa[2] = pack_h2(s[8 * kk + 4], s[8 * kk + 5]);
    pa[3] = pack_h2(s[8 * kk + 6], s[8 * kk + 7]);
}

/* row rr (0: the thread's first row, 1: that + 8) of O / l into out (the head's HD outputs of that row):
 * accumulator 4 i + e holds dim 8 i + 2 (lane % 4) + (e & 1) of row e / 2 */
template <int HD>
__device__ __forceinline__ void fa_store_row(half *out, const float (&o)[HD / 2], int rr, float l, int lane) {
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int i = 0; i < HD / 8; i++) {
        const int d = i * 8 + (lane & 3) * 2;
        *reinterpret_cast<half2 *>(out + d) = __floats2half2_rn(o[4 * i + 2 * rr] * inv, o[4 * i + 2 * rr + 1] * inv);
    }
}

#define FA_BQ 64 /* query rows a head a block (MT = 1) */
#define FA_BK 64
#define FA_WARPS 4 /* warps a head: 16 MT query rows each */

/* HPB (1 or 2) query heads of one GQA group a block (4 HPB warps): they share every K/V tile, so a
 * tile copied into shared memory serves HPB x BQ query rows (v39; was always one head). MT (1 or 2)
 * m16 tiles of query rows a warp: with 2, every K/V fragment a warp reads from shared memory feeds
 * two mmas instead of one (BQ = 128; head_dim 64 only: the accumulators double) */
template <int HD, int HPB, int MT = 1>
struct fa_smem {
    static constexpr int LD = HD + 8, T = HPB * FA_WARPS * 32, BQ = FA_WARPS * 16 * MT;
    static constexpr int BYTES = (HPB * BQ + 4 * FA_BK) * LD * 2; /* Q + 2 stages of K and V */
    /* blocks an SM the registers must allow: 16 warps at head_dim 64 (128 registers), 8 at 128 and
     * for two m16 tiles a warp (255) */
    static constexpr int MINB = MT == 2 ? 2 / HPB : HD == 64 ? 4 / HPB : 2 / HPB;
    static_assert(HPB == 1 || HPB == 2, "one or two heads a block");
    static_assert(MT == 1 || (MT == 2 && HD == 64), "two m16 tiles a warp at head_dim 64 only");
};

template <int HD, int HPB, int MT = 1>
__global__ void __launch_bounds__(fa_smem<HD, HPB, MT>::T, fa_smem<HD, HPB, MT>::MINB) k_attn_prefill(lk_attn_args a) {
    lk_pdl_prologue();
    extern __shared__ __align__(16) unsigned char smem_raw[];
    using SM = fa_smem<HD, HPB, MT>;
    constexpr int LD = SM::LD, T = SM::T, BQ = SM::BQ, KS = HD / 16, NT = FA_BK / 8, OT = HD / 8;
    half *Qs = reinterpret_cast<half *>(smem_raw); /* [HPB][BQ][LD] */
    half *Ks = Qs + HPB * BQ * LD;                 /* [2][FA_BK][LD] */
    half *Vs = Ks + 2 * FA_BK * LD;                /* [2][FA_BK][LD] */
    /* head groups along x, query blocks along y from the last (the longest causal rows) down: every
     * head's heaviest blocks are scheduled first and the light ones fill the tail */
    const int qb = gridDim.y - 1 - blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int h0 = blockIdx.x * HPB, hw = warp / FA_WARPS, wr = warp % FA_WARPS; /* this warp: head h0 + hw */
    const int kvh = h0 / (a.n_heads / a.n_kv);   /* (HPB divides the group size: one KV head) */
    /* this block's rows: q_first .. q_first + nq - 1 of the chunk, positions qp0 .. of slot `slot` (a query
     * block of a packed chunk from a.qblk, v79; else rows p0 + q_first .. of pslot) */
    auto block_rows = [&]() -> int4 {
        return a.qblk ? a.qblk[qb] : make_int4(qb * BQ, min(a.M - qb * BQ, BQ), a.p0 + qb * BQ, a.pslot);
    };
    const int4 qd = block_rows();
    const int q_first = qd.x, nq = qd.y, qp0 = qd.z, slot = qd.w;
    const int kv_len = qp0 + nq;                 /* keys needed by this block */
    const half *K = a.kc + ((size_t)slot * a.n_kv + kvh) * a.max_seq * HD;
    const half *V = a.vc + ((size_t)slot * a.n_kv + kvh) * a.max_seq * HD;

    for (int i = tid; i < HPB * BQ * HD / 8; i += T) {
        const int hh = i / (BQ * HD / 8), rr = (i / (HD / 8)) % BQ, c = (i % (HD / 8)) * 8;
        const bool p = rr < nq;
        lk_cp_async16(Qs + (hh * BQ + rr) * LD + c,
                      a.qkv + (size_t)(p ? q_first + rr : 0) * a.qkv_ld + (size_t)(h0 + hh) * HD + c, p);
    }
    auto load_kv = [&](int kb, int stage) {
        half *ks = Ks + stage * FA_BK * LD, *vs = Vs + stage * FA_BK * LD;
        for (int i = tid; i < FA_BK * HD / 8; i += T) {
            const int t = i / (HD / 8), c = (i % (HD / 8)) * 8, kp = kb * FA_BK + t;
            const bool p = kp < kv_len;
            lk_cp_async16(ks + t * LD + c, K + (size_t)(p ? kp : 0) * HD + c, p);
            lk_cp_async16(vs + t * LD + c, V + (size_t)(p ? kp : 0) * HD + c, p);
        }
    };
    const int n_kb = (kv_len + FA_BK - 1) / FA_BK;
    load_kv(0, 0);
    asm volatile("cp.async.commit_group;");

    uint32_t qf[MT][KS][4];
    float o[MT][OT][4];
    /* running maxima in raw score units; l the running sums of exp2(scale log2e (s - m)) */
    float m_r[MT][2], l_r[MT][2];
    int my_row0[MT], qpos0[MT], qpos1[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int i = 0; i < OT; i++)
#pragma unroll
            for (int k = 0; k < 4; k++) o[mt][i][k] = 0.0f;
        m_r[mt][0] = m_r[mt][1] = -INFINITY;
        l_r[mt][0] = l_r[mt][1] = 0.0f;
        my_row0[mt] = (wr * MT + mt) * 16 + (lane >> 2); /* rows my_row0 and my_row0 + 8 of the block */
        qpos0[mt] = qp0 + my_row0[mt];
        qpos1[mt] = qpos0[mt] + 8;
    }
    const float sl2 = a.scale * 1.4426950408889634f; /* exp(x) = exp2(x log2 e) */

    for (int kb = 0; kb < n_kb; kb++) {
        if (kb + 1 < n_kb) load_kv(kb + 1, (kb + 1) & 1);
        asm volatile("cp.async.commit_group;");
        asm volatile("cp.async.wait_group 1;");
        __syncthreads();
        if (kb == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int k = 0; k < KS; k++)
                    fa_ldsm4(qf[mt][k], Qs + ((warp * MT + mt) * 16 + (lane & 15)) * LD + k * 16 + (lane >> 4) * 8);
        }
        const half *ks = Ks + (kb & 1) * FA_BK * LD, *vs = Vs + (kb & 1) * FA_BK * LD;
        /* S = Q K^T for this warp's 16 MT rows x 64 keys (each K fragment feeds MT mmas) */
        float s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int k = 0; k < 4; k++) s[mt][j][k] = 0.0f;
#pragma unroll
        for (int k = 0; k < KS; k++)
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                uint32_t bf[4];
                fa_ldsm4(bf, ks + (j * 8 + (lane >> 4) * 8 + (lane & 7)) * LD + k * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    fa_mma(s[mt][j], qf[mt][k], bf[0], bf[1]);
                    fa_mma(s[mt][j + 1], qf[mt][k], bf[2], bf[3]);
                }
            }
        /* causal mask (and keys past the end) only in tiles that reach past the block's first row */
        const int kbase = kb * FA_BK;
        if (kbase + FA_BK - 1 > qp0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int k = 0; k < 4; k++)
                        if (kbase + j * 8 + (lane & 3) * 2 + (k & 1) > (k < 2 ? qpos0[mt] : qpos1[mt]))
                            s[mt][j][k] = -INFINITY;
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float corr[2];
            fa_softmax(reinterpret_cast<float (&)[NT * 4]>(s[mt]), m_r[mt], l_r[mt], sl2, corr);
#pragma unroll
            for (int i = 0; i < OT; i++) {
                o[mt][i][0] *= corr[0];
                o[mt][i][1] *= corr[0];
                o[mt][i][2] *= corr[1];
                o[mt][i][3] *= corr[1];
            }
        }
        /* O += P V: P from the S accumulators (C layout == A layout), V via ldmatrix.trans (each V
         * fragment feeds MT mmas) */
#pragma unroll
        for (int kk = 0; kk < FA_BK / 16; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) fa_p_frag(reinterpret_cast<const float (&)[NT * 4]>(s[mt]), kk, pa[mt]);
#pragma unroll
            for (int i = 0; i < OT; i += 2) {
                uint32_t bf[4];
                fa_ldsm4_t(bf, vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + i * 8 + (lane >> 4) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    fa_mma(o[mt][i], pa[mt], bf[0], bf[1]);
                    fa_mma(o[mt][i + 1], pa[mt], bf[2], bf[3]);
                }
            }
        }
        __syncthreads();
    }
    /* write (the block's rows read again: fewer registers live through the loop) */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) fa_quad_sum(l_r[mt]);
    const int4 qw = block_rows();
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            if (my_row0[mt] + rr * 8 >= qw.y) continue;
            const int row = qw.x + my_row0[mt] + rr * 8;
            fa_store_row<HD>(a.out + (size_t)row * a.n_heads * HD + (size_t)(h0 + hw) * HD,
                             reinterpret_cast<const float (&)[OT * 4]>(o[mt]), rr, l_r[mt][rr], lane);
        }
}

/* ---- prefill on Hopper: the same loop on wgmma (v65, v66) ----------------------------------- */
/* A warpgroup owns 64 query rows of one head. S = Q K^T by wgmma with Q and the K tile in shared memory
 * (both K-major, the 128-byte swizzle); the online softmax on S's accumulators in registers; then O += P V
 * by wgmma with P from registers (S's accumulator layout is wgmma's A-fragment layout, as with mma.sync)
 * and the V tile, stored [key][dim] as in the cache, read MN-major (imm-trans-b). The two warpgroups of a
 * block share every K/V tile: two heads of a GQA group on the same 64 rows (HPB 2), or 128 rows of one
 * head (HPB 1). A column block of a tile is 64 halves (128 bytes) a row: head_dim 128 keeps two of them,
 * one after the other. Two kernels:
 *  - k_attn_prefill_wgt (v66, the default): thread 0 copies Q and the 64-key K/V tiles by bulk tensor copies
 *    (the K/V maps end at the prompt's last position, so rows past it read as zeros) into a ring of 4
 *    stages (head_dim 64); a full mbarrier a stage counts the bytes, an empty one a release by each warp,
 *    and no block-wide barrier runs in the loop, so the warpgroups drift apart (at head_dim 128: three
 *    warpgroups, 192 rows of one head, in 128-key tiles in a ring of 2, v70; LLAMA_KERNEL_FA_NWG=2 two, in a
 *    ring of 3; LLAMA_KERNEL_FA_BK=64: 64-key tiles, A/B). Its waits are plain mbarrier
 *    waits (a ~10 s watchdog on each cost 4%: S = 2,048 52.0 -> 50.1 us without);
 *  - k_attn_prefill_wg (v65, LLAMA_KERNEL_FA_WG=1): every thread copies with cp.async into a ring of 3 (2),
 *    with a block-wide barrier a tile.
 * H100, S = 2,048, 32 heads, head_dim 64: v65 58-60 us (SDPA 58); H200 (v66 runs 5-6): 59.0 -> 50.1 us (SDPA
 * 59.1). Nsight Compute (H200, S = 8,192): 50% of issue slots busy, ~4 warps a scheduler, ~0.9 eligible:
 * latency and instruction issue bound (~380 instructions a warp a tile), the tensor pipe at ~34%. */
#define FW_BK 64

/* BK: keys a K/V tile (64; 128 at head_dim 128 in the TMA form, FA3's tile: 3 stages, 230 KB, 182-188
 * registers; H200 v66 run 6, S = 2,048 / 8,192: 93.9 / 1,327 -> 84.1 / 1,135 us) */
/* NWG: warpgroups (64 query rows each) a block: 2, or 3 in the TMA form at head_dim 128 with one head a block
 * (v70, the default there with 128-key tiles: 12 warps an SM instead of 8, 166 registers; a ring of 2 128-key
 * tiles or 4 64-key tiles, 176 KB) */
template <int HD, int HPB, bool TMA = false, int BK = FW_BK, int NWG = 2, bool QREG = false>
struct fw_smem {
    static constexpr int T = 128 * NWG, QROWS = 64 * NWG, BQ = QROWS / HPB;
    static constexpr int Q = QROWS * HD * 2, KV = BK * HD * 2;
    static constexpr int STAGES = NWG == 3 ? (BK == 128 ? 2 : 4) : BK == 128 ? 3 : (HD == 64 ? 3 : 2) + (TMA ? 1 : 0);
    static constexpr int BARS = TMA ? 8 * (1 + 2 * STAGES) : 0; /* Q's mbarrier, then full[STAGES], empty[STAGES] */
    /* ONES: the QREG form's 1024-byte tile of fp16 ones (8 rows of 128 bytes), after the K/V ring, before the
     * mbarriers */
    static constexpr int ONES = QREG ? 1024 : 0;
    static constexpr int BYTES = Q + STAGES * 2 * KV + ONES + BARS + 1024; /* + the base's alignment to a swizzle atom */
    /* blocks an SM the registers must allow (head_dim 128: O alone is 64 registers) */
    static constexpr int MINB = HD == 64 ? 2 : 1;
    static_assert(HPB == 1 || HPB == 2, "one or two heads a block");
    static_assert(BK == 64 || (BK == 128 && HD == 128 && TMA), "128-key tiles: head_dim 128, TMA form");
    static_assert(NWG == 2 || (NWG == 3 && HD == 128 && HPB == 1 && TMA), "3 warpgroups: head_dim 128, one head, TMA");
};

/* Measured on k_attn_prefill_wgt and dropped (v66; H200, us at S = 2,048 / 8,192, head_dim 64):
 * - FA3's ping-pong of the two warpgroups (named barriers handing over the turn at the tensor cores) and its
 *   overlap inside a warpgroup (tile t's S issued with t - 1's P V), 9a9e87e: 58.0 -> 69.7 / 62.1 and
 *   836 -> 1,032 / 897 (head_dim 128 at 8,192: 1,515 -> 2,007 / 1,875);
 * - thread 0 refilling any released stage at once and waiting only for the tile it needs next: -0.3%;
 * - a warp skipping O's rescale where no row maximum moved (a vote and a branch): no gain;
 * (session 24, H200, same-run A/Bs, us at S = 2,048 / 8,192)
 * - the wgmma descriptors made once (Q's k16 steps, stage 0's K and V) instead of every tile, 33692e6: -29
 *   instructions of ~341 a loop, but 50.0 / 666 vs 50.4 / 679 (means of 3 alternated rounds) and 50.6 / 682
 *   vs 50.6 / 675 in the benchmark of the same run: within noise;
 * - a GQA group of 4 in one block (4 warpgroups, 512 threads, one block an SM: half the K/V bytes from L2):
 *   49.7 / 677 vs 50.1 / 670: L2 is not what limits it;
 * - 128-key tiles at head_dim 64 (152 registers: one block of 8 warps an SM instead of two): 57.5 / 752 vs
 *   50.1 / 670 (the kernel needs its 16 warps an SM more than it needs fewer per-tile costs).
 * The loop's instruction schedule matters as much: the same loop restructured (its body under an if,
 * s outside it, the refill a loop) ran 56.9 / 824 against 52.4 / 716. */

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
/* S = Q K^T of a warpgroup's 64 rows and a 64-key tile, issued and committed (the caller waits): k16 steps
 * over the head dims; qw / ks: the rows' Q and the tile's K, column blocks qstride / BK * 128 bytes apart */
template <int HD, int BK = FW_BK>
__device__ __forceinline__ void fw_qk(float (&s)[BK / 2], const unsigned char *qw, int qstride, const unsigned char *ks) {
#pragma unroll
    for (int i = 0; i < BK / 2; i++) s[i] = 0.0f;
    lk_wgmma_fence();
#pragma unroll
    for (int k = 0; k < HD / 16; k++) {
        const uint64_t da = lk_sw128_desc(qw + (k >> 2) * qstride + (k & 3) * 32, 16);
        const uint64_t db = lk_sw128_desc(ks + (k >> 2) * (BK * 128) + (k & 3) * 32, 16);
        if constexpr (BK == 64) lk_wgmma_m64n64k16(s, da, db, 1);
        else lk_wgmma_m64n128k16(s, da, db, 1);
    }
    lk_wgmma_commit();
}

/* O += P V, issued and committed: k16 step kk reads V rows 16 kk.. (two swizzle atoms on); N = the head
 * dims, column blocks BK * 128 bytes apart */
template <int HD, int BK = FW_BK>
__device__ __forceinline__ void fw_pv(float (&o)[HD / 2], const uint32_t (&pa)[BK / 16][4], const unsigned char *vs) {
    lk_wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {
        const uint64_t dv = lk_sw128_desc(vs + kk * 2048, BK * 128);
        if constexpr (HD == 64) lk_wgmma_rs_t_m64n64k16(o, pa[kk], dv);
        else lk_wgmma_rs_t_m64n128k16(o, pa[kk], dv);
    }
    lk_wgmma_commit();
}

/* fa_softmax without the row sums (the QREG form's tensor cores sum P): the same maxima, corr and P */
template <int NS>
__device__ __forceinline__ void fw_softmax_nosum(float (&s)[NS], float (&m_r)[2], float sl2, float (&corr)[2]) {
    float ms[2];
    fa_softmax_max(s, m_r, sl2, ms, corr);
#pragma unroll
    for (int i = 0; i < NS; i++) s[i] = fw_exp2(fmaf(s[i], sl2, -ms[(i >> 1) & 1]));
}

/* fw_qk of the QREG form (64-key tiles): Q's A fragments qa from registers, K from shared memory */
template <int HD>
__device__ __forceinline__ void fw_qk_rs(float (&s)[FW_BK / 2], const uint32_t (&qa)[HD / 16][4], const unsigned char *ks) {
#pragma unroll
    for (int i = 0; i < FW_BK / 2; i++) s[i] = 0.0f;
    lk_wgmma_fence();
#pragma unroll
    for (int k = 0; k < HD / 16; k++) {
        const uint64_t db = lk_sw128_desc(ks + (k >> 2) * (FW_BK * 128) + (k & 3) * 32, 16);
        lk_wgmma_rs_m64n64k16(s, qa[k], db);
    }
    lk_wgmma_commit();
}

/* fw_pv of the QREG form (64-key tiles, head_dim 64): the row sums lo (rescaled by corr first) += P times the
 * ones tile (descriptor dones) beside each k16 step's O += P V. ptxas injects a warpgroup.arrive here (info
 * C7519) whichever of the two goes first; v80c, which avoided it, was ~1% slower (benchmarks/NOTES.md) */
template <int HD>
__device__ __forceinline__ void fw_pv_ones(float (&o)[HD / 2], float (&lo)[4], const float (&corr)[2],
                                           const uint32_t (&pa)[FW_BK / 16][4], const unsigned char *vs, uint64_t dones) {
    static_assert(HD == 64, "head_dim 64");
#pragma unroll
    for (int i = 0; i < 4; i++) lo[i] *= corr[(i >> 1) & 1];
    lk_wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < FW_BK / 16; kk++) {
        const uint64_t dv = lk_sw128_desc(vs + kk * 2048, FW_BK * 128);
        lk_wgmma_rs_m64n8k16(lo, pa[kk], dones);
        lk_wgmma_rs_t_m64n64k16(o, pa[kk], dv);
    }
    lk_wgmma_commit();
}

/* after S of tile kbase.. landed: the causal mask (and keys past the end) where the tile reaches past the
 * warpgroup's first row (position first), then the online softmax (s becomes P). Accumulator 4 j + e: row
 * qpos0 (+ 8: qpos1, for e >= 2), key kbase + 8 j + 2 (lane % 4) + (e & 1). SUM false: no row sums
 * (fw_softmax_nosum; l_r untouched) */
template <int BK = FW_BK, bool SUM = true>
__device__ __forceinline__ void fw_softmax(float (&s)[BK / 2], int kbase, int first, int qpos0, int qpos1, int lane,
                                           float (&m_r)[2], float (&l_r)[2], float sl2, float (&corr)[2]) {
    if (kbase + BK - 1 > first) {
#pragma unroll
        for (int i = 0; i < BK / 2; i++)
            if (kbase + (i >> 2) * 8 + (lane & 3) * 2 + (i & 1) > ((i & 2) ? qpos1 : qpos0)) s[i] = -INFINITY;
    }
    if constexpr (SUM) fa_softmax(s, m_r, l_r, sl2, corr);
    else fw_softmax_nosum(s, m_r, sl2, corr);
}

/* O's rows rescaled by corr, and P as A fragments (k16 step kk = keys 16 kk.. = n8 tiles 2 kk and 2 kk + 1) */
template <int HD, int BK = FW_BK>
__device__ __forceinline__ void fw_rescale_pack(float (&o)[HD / 2], const float (&corr)[2], const float (&s)[BK / 2],
                                                uint32_t (&pa)[BK / 16][4]) {
#pragma unroll
    for (int i = 0; i < HD / 2; i++) o[i] *= corr[(i >> 1) & 1];
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) fa_p_frag(s, kk, pa[kk]);
}
#endif

/* byte offset of (row r, halves 8c..8c+7) in a tile of R rows of HD halves: column block c / 8, then
 * the 128-byte swizzle within it */
__device__ __forceinline__ int fw_off(int R, int r, int c) { return (c >> 3) * (R * 128) + lk_sw128_off(r, c & 7); }

/* what both kernels' blocks start from: heads along x, query blocks along y from the last (the longest
 * causal rows) down (as k_attn_prefill); warpgroup wg's head, its 64 rows and the key tiles they need (none
 * when all are past M) */
template <int HPB, int BQ, int BK = FW_BK>
struct fw_block {
    int h0, kvh, q_first, kv_len, n_kb; /* the block */
    int head, w_first, w_last, w_nkb, row0; /* the warpgroup; this thread's rows: row0 and row0 + 8 */
    __device__ __forceinline__ fw_block(const lk_attn_args &a, int wg, int wi, int lane) {
        const int qb = gridDim.y - 1 - blockIdx.y;
        h0 = blockIdx.x * HPB;
        kvh = h0 / (a.n_heads / a.n_kv);
        q_first = qb * BQ;
        kv_len = a.p0 + min(a.M, q_first + BQ); /* keys needed by this block */
        n_kb = (kv_len + BK - 1) / BK;
        head = h0 + (HPB == 2 ? wg : 0);
        w_first = q_first + (HPB == 2 ? 0 : 64 * wg);
        w_last = min(a.M, w_first + 64) - 1;
        w_nkb = w_last < w_first ? 0 : (a.p0 + w_last + BK) / BK;
        row0 = w_first + wi * 16 + (lane >> 2);
    }
};

/* the warpgroup's rows of O / l into out: accumulator 4 i + e: row row0 (+ 8 for e >= 2), dim 8 i + 2 (lane %
 * 4) + (e & 1) */
template <int HD, class B>
__device__ __forceinline__ void fw_store(const lk_attn_args &a, const B &b, const float (&o)[HD / 2], float (&l_r)[2],
                                         int lane, bool quad_sum = true) {
    if (quad_sum) fa_quad_sum(l_r);
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        const int row = b.row0 + rr * 8;
        if (row > b.w_last) continue;
        fa_store_row<HD>(a.out + (size_t)row * a.n_heads * HD + (size_t)b.head * HD, o, rr, l_r[rr], lane);
    }
}

template <int HD, int HPB>
__global__ void __launch_bounds__(256, fw_smem<HD, HPB>::MINB) k_attn_prefill_wg(lk_attn_args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    lk_pdl_prologue();
    using SM = fw_smem<HD, HPB>;
    constexpr int BQ = SM::BQ, ST = SM::STAGES, CH = HD / 8, QR = SM::QROWS;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const uint32_t s0 = (uint32_t)__cvta_generic_to_shared(smem_raw);
    unsigned char *Qs = smem_raw + ((1024 - (s0 & 1023)) & 1023); /* [HD / 64][QR][128 bytes] */
    unsigned char *Ks = Qs + SM::Q;                               /* [ST][HD / 64][FW_BK][128 bytes] */
    unsigned char *Vs = Ks + ST * SM::KV;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
    const fw_block<HPB, BQ> b(a, wg, warp & 3, lane);
    const half *K = a.kc + ((size_t)a.pslot * a.n_kv + b.kvh) * a.max_seq * HD;
    const half *V = a.vc + ((size_t)a.pslot * a.n_kv + b.kvh) * a.max_seq * HD;
    /* Q: shared rows hh BQ + rr = query row q_first + rr of head h0 + hh (warpgroup w: rows 64 w ..) */
    for (int i = tid; i < QR * CH; i += SM::T) {
        const int r = i / CH, c = i % CH, hh = r / BQ, rr = r % BQ;
        const bool p = b.q_first + rr < a.M;
        lk_cp_async16(Qs + fw_off(QR, r, c),
                      a.qkv + (size_t)(p ? b.q_first + rr : 0) * a.qkv_ld + (size_t)(b.h0 + hh) * HD + c * 8, p);
    }
    auto load_kv = [&](int kb, int stage) {
        unsigned char *ks = Ks + stage * SM::KV, *vs = Vs + stage * SM::KV;
        for (int i = tid; i < FW_BK * CH; i += SM::T) {
            const int t = i / CH, c = i % CH, kp = kb * FW_BK + t, off = fw_off(FW_BK, t, c);
            const bool p = kp < b.kv_len;
            lk_cp_async16(ks + off, K + (size_t)(p ? kp : 0) * HD + c * 8, p);
            lk_cp_async16(vs + off, V + (size_t)(p ? kp : 0) * HD + c * 8, p);
        }
    };
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
        if (s < b.n_kb) load_kv(s, s);
        asm volatile("cp.async.commit_group;");
    }
    const int qpos0 = a.p0 + b.row0, qpos1 = qpos0 + 8;
    const unsigned char *qw = Qs + wg * 64 * 128;
    const float sl2 = a.scale * 1.4426950408889634f; /* exp(x) = exp2(x log2 e) */
    float o[HD / 2];
#pragma unroll
    for (int i = 0; i < HD / 2; i++) o[i] = 0.0f;
    float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};
    for (int kb = 0; kb < b.n_kb; kb++) {
        const int st = kb % ST;
        asm volatile("cp.async.wait_group %0;" ::"n"(ST - 2)); /* tile kb (and Q) landed: this thread's copies */
        lk_fence_proxy_async();                                 /* ... visible to the tensor cores */
        __syncthreads();                                        /* ... everyone's; stage (kb - 1) % ST is free */
        if (kb + ST - 1 < b.n_kb) load_kv(kb + ST - 1, (kb + ST - 1) % ST);
        asm volatile("cp.async.commit_group;");
        if (kb >= b.w_nkb) continue; /* (warpgroup-uniform) */
        float s[FW_BK / 2], corr[2];
        uint32_t pa[FW_BK / 16][4];
        fw_qk<HD>(s, qw, QR * 128, Ks + st * SM::KV);
        lk_wgmma_wait<0>();
        lk_wgmma_fence_acc(s);
        fw_softmax(s, kb * FW_BK, a.p0 + b.w_first, qpos0, qpos1, lane, m_r, l_r, sl2, corr);
        fw_rescale_pack<HD>(o, corr, s, pa);
        fw_pv<HD>(o, pa, Vs + st * SM::KV);
        lk_wgmma_wait<0>();
        lk_wgmma_fence_acc(o);
    }
    asm volatile("cp.async.wait_group 0;");
    fw_store<HD>(a, b, o, l_r, lane);
#endif
}

/* The TMA form (see the section's head). QREG (head_dim 64, 2 warpgroups; v80, the default there): Q's A
 * fragments in registers for the whole loop, so S is a wgmma with A from registers and reads only K from
 * shared memory (at m64n64k16 with both operands in shared memory a k16 step reads 4 KB in its ~32 clocks:
 * the SM's 128 bytes a clock), and the row sums l are P times a 16 x 8 tile of ones (4 m64n8k16 a tile
 * beside the P V, their accumulators rescaled with O) instead of a FADD a score and the quad's shuffles.
 * H200 (benchmarks/NOTES.md, session 33), us at S = 2,048 / 4,096 / 8,192: 50.4 / 180.4 / 669 -> 47.3 /
 * 170.6 / 628 (SDPA 58.7 / 181 / 630). Measured and dropped: the ones alone (683 at 8,192), Q loaded into
 * registers again each tile by ldmatrix (688), 2 or 4 of every 8 exp2 as a polynomial on the FMA pipes
 * (735 / 790: the loop is issue-bound, not MUFU-bound; with no exp2 at all, 610-627). Q in registers without
 * the ones was wrong: ptxas (CUDA 13.0) gave its loop-invariant Q registers to P after the S wgmma (SASS;
 * rel. error 1.2 against float64); an empty asm use did not stop that, and an XOR with a runtime 0 at the
 * tile's end did, at +3-6%. This form's allocation keeps them (checked in the SASS; test_prefill_attention_forms
 * runs it against float64 whatever the compiler). */
template <int HD, int HPB, int BK, int NWG = 2, bool QREG = false>
__global__ void __launch_bounds__(fw_smem<HD, HPB, true, BK, NWG>::T, fw_smem<HD, HPB, true, BK, NWG>::MINB)
    k_attn_prefill_wgt(lk_attn_args a, const __grid_constant__ CUtensorMap tq,
                       const __grid_constant__ CUtensorMap tk, const __grid_constant__ CUtensorMap tv) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    lk_pdl_prologue();
    static_assert(!QREG || (HD == 64 && NWG == 2 && BK == 64), "QREG: head_dim 64, 2 warpgroups, 64-key tiles");
    using SM = fw_smem<HD, HPB, true, BK, NWG, QREG>;
    constexpr int BQ = SM::BQ, ST = SM::STAGES, QR = SM::QROWS;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const uint32_t s0 = (uint32_t)__cvta_generic_to_shared(smem_raw);
    unsigned char *Qs = smem_raw + ((1024 - (s0 & 1023)) & 1023); /* [HD / 64][QR][128 bytes] */
    unsigned char *Ks = Qs + SM::Q;                               /* [ST][HD / 64][BK][128 bytes] */
    unsigned char *Vs = Ks + ST * SM::KV;
    unsigned char *ones = Vs + ST * SM::KV; /* (QREG) SM::ONES bytes of fp16 ones */
    uint64_t *qbar = reinterpret_cast<uint64_t *>(ones + SM::ONES), *full = qbar + 1, *empty = full + ST;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
    const fw_block<HPB, BQ, BK> b(a, wg, warp & 3, lane);
    /* tile t -> stage: K and V boxes of 64 dims x BK keys of head kvh, one a column block */
    auto tma_kv = [&](int t, int stage) {
        mbar_expect_tx(&full[stage], 2 * SM::KV);
#pragma unroll
        for (int cb = 0; cb < HD / 64; cb++) {
            tma_load_3d(Ks + stage * SM::KV + cb * (BK * 128), &tk, 64 * cb, t * BK, b.kvh, &full[stage]);
            tma_load_3d(Vs + stage * SM::KV + cb * (BK * 128), &tv, 64 * cb, t * BK, b.kvh, &full[stage]);
        }
    };
    if constexpr (QREG) { /* (the tensor cores read them: the async proxy; the barrier below orders them) */
        for (int i = tid; i < SM::ONES / 4; i += SM::T) reinterpret_cast<uint32_t *>(ones)[i] = 0x3c003c00u;
        lk_fence_proxy_async();
    }
    if (tid == 0) {
        mbar_init(qbar, 1);
        for (int i = 0; i < ST; i++) {
            mbar_init(&full[i], 1);
            mbar_init(&empty[i], SM::T / 32); /* one arrival a warp */
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (tid == 0) { /* Q: the NWG 64-row parts (heads h0, h0 + 1 or rows q_first + 64 g), by column block */
        mbar_expect_tx(qbar, SM::Q);
        for (int g = 0; g < NWG; g++)
#pragma unroll
            for (int cb = 0; cb < HD / 64; cb++)
                tma_load_2d(Qs + cb * (QR * 128) + g * 8192, &tq, (b.h0 + (HPB == 2 ? g : 0)) * HD + 64 * cb,
                            b.q_first + (HPB == 2 ? 0 : 64 * g), qbar);
        for (int t = 0; t < ST && t < b.n_kb; t++) tma_kv(t, t);
    }
    auto release = [&](int stage) { /* one arrival a warp on the stage's empty mbarrier */
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[stage]);
    };
    const int qpos0 = a.p0 + b.row0, qpos1 = qpos0 + 8;
    const unsigned char *qw = Qs + wg * 64 * 128;
    const float sl2 = a.scale * 1.4426950408889634f; /* exp(x) = exp2(x log2 e) */
    float o[HD / 2];
#pragma unroll
    for (int i = 0; i < HD / 2; i++) o[i] = 0.0f;
    float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};
    float lo[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* (QREG) the row sums: lo[0] row row0, lo[2] row row0 + 8 */
    uint32_t qa[QREG ? HD / 16 : 1][4];     /* (QREG) Q's A fragments, k16 step k: dims 16 k .. */
    if constexpr (QREG) {
        mbar_wait(qbar, 0);
        const int r = (warp & 3) * 16 + (lane >> 2), t2 = (lane & 3) * 2;
#pragma unroll
        for (int k = 0; k < HD / 16; k++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int row = r + (e & 1) * 8, d = 16 * k + (e >> 1) * 8 + t2; /* the m16n8k16 A layout */
                qa[k][e] = *reinterpret_cast<const uint32_t *>(qw + (d >> 6) * (QR * 128) +
                                                               lk_sw128_off(row, (d & 63) >> 3) + (d & 7) * 2);
            }
    }
    const uint64_t dones = lk_sw128_desc(ones, 16);
    const int wfirst = a.p0 + b.w_first;
    for (int kb = 0; kb < b.n_kb; kb++) {
        const int st = kb % ST;
        /* thread 0 refills the stage of tile kb - 1 once every warp is done with it (the warpgroups stay
         * within a tile of each other), then everyone waits for tile kb (and, at first, Q) */
        if (tid == 0 && kb >= 1 && kb - 1 + ST < b.n_kb) {
            mbar_wait(&empty[(kb - 1) % ST], ((kb - 1) / ST) & 1);
            tma_kv(kb - 1 + ST, (kb - 1) % ST);
        }
        if (!QREG && kb == 0) mbar_wait(qbar, 0);
        mbar_wait(&full[st], (kb / ST) & 1);
        if (kb >= b.w_nkb) { /* (warpgroup-uniform) nothing of this tile for these rows: still release it */
            release(st);
            continue;
        }
        /* one straight run from here to the release: the scheduler then interleaves the two rows' max
         * shuffles and sinks the row-sum work under the P V (a branch between a wgmma's issue and its wait
         * also serializes the wgmmas: ptxas C7518). H200: a build with the loop's body under an if, and s
         * outside the loop, lost that schedule: 52.7 -> 59.0 us at S = 2,048, 718 -> 841 at 8,192 (v66) */
        /* the same tile as k_attn_prefill_wg's, written again: a shared helper moved instructions in the
         * softmax of some forms (cuobjdump, session 23), unmeasured, and this loop's schedule is worth 10-17% */
        float s[BK / 2], corr[2];
        uint32_t pa[BK / 16][4];
        if constexpr (QREG) fw_qk_rs<HD>(s, qa, Ks + st * SM::KV);
        else fw_qk<HD, BK>(s, qw, QR * 128, Ks + st * SM::KV);
        lk_wgmma_wait<0>();
        lk_wgmma_fence_acc(s);
        fw_softmax<BK, !QREG>(s, kb * BK, wfirst, qpos0, qpos1, lane, m_r, l_r, sl2, corr);
        fw_rescale_pack<HD, BK>(o, corr, s, pa);
        if constexpr (QREG) fw_pv_ones<HD>(o, lo, corr, pa, Vs + st * SM::KV, dones);
        else fw_pv<HD, BK>(o, pa, Vs + st * SM::KV);
        lk_wgmma_wait<0>();
        lk_wgmma_fence_acc(o);
        if constexpr (QREG) lk_wgmma_fence_acc(lo);
        release(st); /* this warp's reads of the stage are done */
    }
    if constexpr (QREG) { /* (every column of lo is the row's whole sum: no quad sum) */
        l_r[0] = lo[0];
        l_r[1] = lo[2];
    }
    fw_store<HD>(a, b, o, l_r, lane, !QREG);
#endif
}

/* heads a flash prefill block (v39, H100, us, 32 heads / 8 KV heads, benchmarks/NOTES.md): at head_dim 64
 * two when the GQA group is even and the grid still gives every SM two blocks (S = 2,048: 86.6 with one,
 * 82.8 with two; S = 8,192: 1,150 / 1,075; but S = 512, 128 blocks: 12.7 / 14.7), else one; at 128
 * one (two: 164.7 vs 154.9 at S = 2,048: its 195 registers leave one block an SM). Four heads (a block an
 * SM) were no faster anywhere (83.2, 1,130, 22.8). LLAMA_KERNEL_FA_HPB=1|2 forces it where the group
 * allows (A/B; read once). bq and per_sm: query rows a block and two-head blocks an SM (the MT = 2 form:
 * 128 and 1). */
static int fa_heads_per_block(const lk_attn_args *a, int bq = FA_BQ, int per_sm = 2) {
    static int force = -1, sms = 0;
    if (force < 0) {
        const char *e = getenv("LLAMA_KERNEL_FA_HPB");
        force = e && (atoi(e) == 1 || atoi(e) == 2) ? atoi(e) : 0;
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            sms = 132;
    }
    if ((a->n_heads / a->n_kv) % 2) return 1;
    if (force) return force;
    const long blocks2 = (long)(a->n_heads / 2) * ((a->M + bq - 1) / bq);
    return a->head_dim == 64 && blocks2 >= (long)per_sm * sms ? 2 : 1;
}

template <int HD, int HPB, int MT = 1>
static lk_status fa_init() {
    CU(cudaFuncSetAttribute(k_attn_prefill<HD, HPB, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            fa_smem<HD, HPB, MT>::BYTES));
    return LK_OK;
}

template <int HD, int HPB, int MT = 1>
static lk_status fa_launch(const lk_attn_args *a, cudaStream_t st) {
    using SM = fa_smem<HD, HPB, MT>;
    const dim3 grid(a->n_heads / HPB, (a->M + SM::BQ - 1) / SM::BQ);
    LAUNCH("k_attn_prefill", (k_attn_prefill<HD, HPB, MT>), grid, dim3(SM::T), (size_t)SM::BYTES, st, *a);
    return LK_OK;
}

template <int HD, int HPB>
static lk_status fw_init() {
    CU(cudaFuncSetAttribute(k_attn_prefill_wg<HD, HPB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            fw_smem<HD, HPB>::BYTES));
    CU(cudaFuncSetAttribute(k_attn_prefill_wgt<HD, HPB, FW_BK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            fw_smem<HD, HPB, true>::BYTES));
    if constexpr (HD == 64)
        CU(cudaFuncSetAttribute(k_attn_prefill_wgt<64, HPB, FW_BK, 2, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                fw_smem<64, HPB, true, FW_BK, 2, true>::BYTES));
    if constexpr (HD == 128) {
        CU(cudaFuncSetAttribute(k_attn_prefill_wgt<HD, HPB, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                fw_smem<HD, HPB, true, 128>::BYTES));
        if constexpr (HPB == 1) {
            CU(cudaFuncSetAttribute(k_attn_prefill_wgt<HD, 1, FW_BK, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    fw_smem<HD, 1, true, FW_BK, 3>::BYTES));
            CU(cudaFuncSetAttribute(k_attn_prefill_wgt<HD, 1, 128, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    fw_smem<HD, 1, true, 128, 3>::BYTES));
        }
    }
    return LK_OK;
}

template <int HD, int HPB>
static lk_status fw_launch_cp(const lk_attn_args *a, cudaStream_t st) {
    using SM = fw_smem<HD, HPB>;
    const dim3 grid(a->n_heads / HPB, (a->M + SM::BQ - 1) / SM::BQ);
    LAUNCH("k_attn_prefill_wg", (k_attn_prefill_wg<HD, HPB>), grid, dim3(SM::T), (size_t)SM::BYTES, st, *a);
    return LK_OK;
}

template <int HD, int HPB, int BK = FW_BK, int NWG = 2, bool QREG = false>
static lk_status fw_launch_tma(const lk_attn_args *a, cudaStream_t st) {
    using SM = fw_smem<HD, HPB, true, BK, NWG, QREG>;
    const dim3 grid(a->n_heads / HPB, (a->M + SM::BQ - 1) / SM::BQ);
    CUtensorMap tq, tk, tv;
    memset(&tq, 0, sizeof tq);
    memset(&tk, 0, sizeof tk);
    memset(&tv, 0, sizeof tv);
    /* Q: the q columns of the qkv rows; K, V: {dims, the prompt's positions, KV heads} of slot pslot */
    const uint64_t qd[2] = {(uint64_t)a->n_heads * HD, (uint64_t)a->M}, qs[1] = {(uint64_t)a->qkv_ld * 2};
    const uint64_t kd[3] = {(uint64_t)HD, (uint64_t)a->p0 + (uint64_t)a->M, (uint64_t)a->n_kv},
                   ks[2] = {(uint64_t)HD * 2, (uint64_t)a->max_seq * HD * 2};
    const uint32_t qbox[2] = {64, 64}, kbox[3] = {64, BK, 1};
    const size_t slot = (size_t)a->pslot * a->n_kv * a->max_seq * HD;
    TRY(lk_tmap_f16(&tq, a->qkv, 2, qd, qs, qbox, "flash prefill q"));
    TRY(lk_tmap_f16(&tk, a->kc + slot, 3, kd, ks, kbox, "flash prefill K"));
    TRY(lk_tmap_f16(&tv, a->vc + slot, 3, kd, ks, kbox, "flash prefill V"));
    if (NWG == 3 && BK == 128)
        LAUNCH("k_attn_prefill_wgt (3 warpgroups, 128-key tiles)", (k_attn_prefill_wgt<HD, HPB, BK, NWG>), grid,
               dim3(SM::T), (size_t)SM::BYTES, st, *a, tq, tk, tv);
    else if (NWG == 3)
        LAUNCH("k_attn_prefill_wgt (3 warpgroups)", (k_attn_prefill_wgt<HD, HPB, BK, NWG>), grid, dim3(SM::T),
               (size_t)SM::BYTES, st, *a, tq, tk, tv);
    else if (BK == 128)
        LAUNCH("k_attn_prefill_wgt (128-key tiles)", (k_attn_prefill_wgt<HD, HPB, BK>), grid, dim3(SM::T),
               (size_t)SM::BYTES, st, *a, tq, tk, tv);
    else if (QREG)
        LAUNCH("k_attn_prefill_wgt (Q in registers)", (k_attn_prefill_wgt<HD, HPB, BK, NWG, QREG>), grid, dim3(SM::T),
               (size_t)SM::BYTES, st, *a, tq, tk, tv);
    else
        LAUNCH("k_attn_prefill_wgt", (k_attn_prefill_wgt<HD, HPB, BK>), grid, dim3(SM::T), (size_t)SM::BYTES, st, *a,
               tq, tk, tv);
    return LK_OK;
}

/* The wgmma prefill kernels (Hopper, a build with sm_90a), by LLAMA_KERNEL_FA_WG: unset or 2 the TMA form
 * (v66), 1 the cp.async form (v65), 0 none (the mma.sync kernel, the one on other cards). Two heads a block
 * where the GQA group is even, unless LLAMA_KERNEL_FA_HPB=1; at head_dim 128 the TMA form takes 128-key
 * tiles (LLAMA_KERNEL_FA_BK=64: 64, A/B) in blocks of 3 warpgroups, one head (LLAMA_KERNEL_FA_NWG=2: the two-
 * warpgroup blocks above). All read every call. H200 (benchmarks/NOTES.md, v66 runs 5-6), us, 32 heads / 8 KV
 * heads, cp.async -> TMA: S = 2,048 59.0 -> 50.1 (SDPA 59.1), 8,192 757 -> 671 (631); head_dim 128 S = 2,048
 * 118 -> 93.9 with 64-key tiles -> 84.1 with 128 (SDPA 83.2), 8,192 1,595 -> 1,327 -> 1,135 (960); v70 (3
 * warpgroups, session 26 run 3): 76.6 / 922 (SDPA 82.8 / 950) */
static bool fw_use(const lk_attn_args *a) {
    const char *e = getenv("LLAMA_KERNEL_FA_WG");
    return (a->head_dim == 64 || a->head_dim == 128) && !(e && !strcmp(e, "0")) && lk_mm_wgmma_ready();
}

static lk_status fw_dispatch(const lk_attn_args *a, cudaStream_t st) {
    static lk_status (*const launch[2][2][3])(const lk_attn_args *, cudaStream_t) = {
        {{fw_launch_cp<64, 1>, fw_launch_tma<64, 1>, fw_launch_tma<64, 1>},
         {fw_launch_cp<64, 2>, fw_launch_tma<64, 2>, fw_launch_tma<64, 2>}},
        {{fw_launch_cp<128, 1>, fw_launch_tma<128, 1>, fw_launch_tma<128, 1, 128>},
         {fw_launch_cp<128, 2>, fw_launch_tma<128, 2>, fw_launch_tma<128, 2, 128>}}};
    const char *e = getenv("LLAMA_KERNEL_FA_HPB"), *w = getenv("LLAMA_KERNEL_FA_WG"), *k = getenv("LLAMA_KERNEL_FA_BK");
    const char *n = getenv("LLAMA_KERNEL_FA_NWG");
    const bool two = (a->n_heads / a->n_kv) % 2 == 0 && !(e && !strcmp(e, "1"));
    const int form = w && !strcmp(w, "1") ? 0 : k && !strcmp(k, "64") ? 1 : 2;
    /* head_dim 128's TMA form in blocks of 3 warpgroups (192 query rows of one head; v70, H200, same run, us,
     * 2 -> 3 warpgroups, 128-key tiles: S = 2,048 84.3 -> 77.2, 8,192 1,134 -> 1,008; with 64-key tiles no gain,
     * 1,155) unless LLAMA_KERNEL_FA_NWG=2 (A/B; read every call); with LLAMA_KERNEL_FA_BK=64 only where
     * LLAMA_KERNEL_FA_NWG=3 */
    if (a->head_dim == 128 && form == 2 && !(n && !strcmp(n, "2"))) return fw_launch_tma<128, 1, 128, 3>(a, st);
    /* head_dim 64's TMA form with Q in registers (v80) unless LLAMA_KERNEL_FA_QREG=0 (A/B; read every call) */
    const char *q = getenv("LLAMA_KERNEL_FA_QREG");
    if (a->head_dim == 64 && form != 0 && !(q && !strcmp(q, "0")))
        return two ? fw_launch_tma<64, 2, FW_BK, 2, true>(a, st) : fw_launch_tma<64, 1, FW_BK, 2, true>(a, st);
    if (a->head_dim == 128 && form == 1 && n && !strcmp(n, "3")) return fw_launch_tma<128, 1, FW_BK, 3>(a, st);
    return launch[a->head_dim == 128][two][form](a, st);
}

lk_status lk_attention_init(void) {
    static lk_status (*const tc_init[])() = {decode_tc_init<64, 1>,  decode_tc_init<64, 2>,  decode_tc_init<64, 3>,
                                             decode_tc_init<64, 4>,  decode_tc_init<64, 8>,  decode_tc_init<128, 1>,
                                             decode_tc_init<128, 2>, decode_tc_init<128, 3>, decode_tc_init<128, 4>,
                                             decode_tc_init<128, 8>};
    for (auto f : tc_init) TRY(f());
    static lk_status (*const pf_init[])() = {fa_init<64, 1>,  fa_init<64, 2>,    fa_init<128, 1>,
                                             fa_init<128, 2>, fa_init<64, 1, 2>, fa_init<64, 2, 2>};
    for (auto f : pf_init) TRY(f());
    static lk_status (*const wg_init[])() = {fw_init<64, 1>, fw_init<64, 2>, fw_init<128, 1>, fw_init<128, 2>};
    /* only where they run (fw_use): their shared memory (up to ~230 KB) is more than an sm_86 / sm_89 block
     * may have, and the attribute call would fail there */
    if (lk_mm_wgmma_ready())
        for (auto f : wg_init) TRY(f());
    return LK_OK;
}

template <int HD, int HPB>
static lk_status fa_launch_blocks(const lk_attn_args *a, cudaStream_t st) {
    using SM = fa_smem<HD, HPB, 1>;
    LAUNCH("k_attn_prefill", (k_attn_prefill<HD, HPB, 1>), dim3(a->n_heads / HPB, a->n_qblk), dim3(SM::T),
           (size_t)SM::BYTES, st, *a);
    return LK_OK;
}

/* a->qblk's query blocks on k_attn_prefill (mma.sync, 64-row blocks): one launch for several prompts' runs of
 * a packed chunk, however short (v79) */
lk_status lk_attention_prefill_blocks(const lk_attn_args *a, cudaStream_t st) {
    if (!a->qblk || a->n_qblk < 1 || a->n_qblk > 65535)
        return lk_fail(LK_E_INVALID, "flash prefill: %d query blocks (1-65535, and a table)", a->n_qblk);
    if (a->head_dim != 64 && a->head_dim != 128)
        return lk_fail(LK_E_UNSUPPORTED, "flash prefill: head_dim %d (64 or 128)", a->head_dim);
    static lk_status (*const launch[2][2])(const lk_attn_args *, cudaStream_t) = {
        {fa_launch_blocks<64, 1>, fa_launch_blocks<64, 2>}, {fa_launch_blocks<128, 1>, fa_launch_blocks<128, 2>}};
    lk_attn_args t = *a;
    t.M = a->n_qblk * FA_BQ; /* (for the heads-a-block rule only) */
    return launch[a->head_dim == 128][fa_heads_per_block(&t) - 1](a, st);
}

lk_status lk_attention_prefill(const lk_attn_args *a, cudaStream_t st) {
    if ((a->M + FA_BQ - 1) / FA_BQ > 65535)
        return lk_fail(LK_E_UNSUPPORTED, "flash prefill: %d rows in one call (at most %d)", a->M, 65535 * FA_BQ);
    if (a->head_dim != 64 && a->head_dim != 128) return lk_attention_plain(a, st);
    static lk_status (*const launch[2][2])(const lk_attn_args *, cudaStream_t) = {{fa_launch<64, 1>, fa_launch<64, 2>},
                                                                                 {fa_launch<128, 1>, fa_launch<128, 2>}};
    /* LLAMA_KERNEL_FA_MT=2 (opt-in; read every call): two m16 tiles of query rows a warp at head_dim 64,
     * so each K/V fragment read from shared memory feeds two mmas (FlashAttention-2's 128-row blocks); two
     * heads a block (one block an SM at 240 registers) only when that grid still covers the SMs, by the
     * same rule and LLAMA_KERNEL_FA_HPB as the 64-row form. H100 (benchmarks/NOTES.md, session 13 run 1),
     * us, 64-row -> 128-row blocks: S = 512 12.9 -> 14.2, 2,048 83.1 -> 79.1, 8,192 1,066 -> 1,060 (the
     * prediction was 2,048 -> 65-70): not the default (the engine's prefill chunks are 1,024 rows) */
    if (fw_use(a)) return fw_dispatch(a, st);
    const char *mt = getenv("LLAMA_KERNEL_FA_MT");
    if (mt && mt[0] == '2' && !mt[1] && a->head_dim == 64)
        return fa_heads_per_block(a, fa_smem<64, 2, 2>::BQ, 1) == 2 ? fa_launch<64, 2, 2>(a, st)
                                                                    : fa_launch<64, 1, 2>(a, st);
    return launch[a->head_dim == 128][fa_heads_per_block(a) - 1](a, st);
}
