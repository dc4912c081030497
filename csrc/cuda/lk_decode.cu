/* lk_decode.cu: the layers of a one-row decode step as one persistent kernel (see lk_decode.cuh).
 *
 * Why (benchmarks/NOTES.md, v42): at batch 1 each of the ~80 GEMV and attention kernels of a step
 * costs ~3.5 us more than its bytes at 3 TB/s: launch, the first DRAM latency, the tail. A kernel
 * cannot load the next kernel's weights (v37 tried it through PDL and lost), and a grid barrier
 * alone is no cheaper than a kernel boundary (v22). Here the weight stream does not wait for the
 * barriers: each SM's producer warp copies the SM's share of every matrix, in use order, into a
 * ring of shared-memory slots, as fast as slots free up; the consumer warps compute from shared
 * memory once a phase's inputs are ready.
 *
 * Work split. A phase's weight rows are cut into units of RU rows (16, or fewer when a row is
 * long: a unit's weights fit one 24 KB slot); SwiGLU and rotary units are two blocks of RU/2 rows
 * (gate j.. with up j.., dims i.. with i + head_dim/2..). Units are dealt round robin to the SMs
 * in one count that runs on across phases and layers, so every SM streams the same bytes within a
 * unit. The 8 consumer warps take up to PD_NB units at a time (one input chunk read for all their
 * rows): two rows a warp at RU 16, or 8/RU warps a row along K; lanes over 16-byte chunks (32
 * weights), the same dequant and dot as the one-row GEMV (lk_dequant8, dot_chunk).
 *
 * Inputs (RMSNorm of the fp32 residual, or the fp16 attention / SwiGLU output) are staged once
 * per phase in shared memory with their 32-input chunk sums; attention is split over (query head,
 * position chunk) and the last chunk of a head to finish merges the head. Between phases: a grid
 * barrier (one arrival counter, release/acquire at gpu scope); all activations are read with
 * ld.cg (L2), never from a possibly stale L1 line.
 */
#include "lk_decode.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../lk_model.h"

#define PD_CW 8                    /* consumer warps (+ the producer: 9 warps, 168 registers a thread) */
#define PD_CT (PD_CW * 32)         /* consumer threads (named barrier 1) */
#define PD_THREADS (PD_CT + 32)    /* + one producer warp */
#define PD_SLOTS 8
#define PD_SLOT_W 24576            /* weight bytes a slot holds */
#define PD_SLOT_P (PD_SLOT_W / 16) /* their scale/min bytes: 4 per 128 weights (64 bytes) */
#define PD_SLOT (PD_SLOT_W + PD_SLOT_P)
#define PD_XMAX 8192               /* longest input row (halves) */
#define PD_DN_CPL 4                /* down: chunks a lane */
#define PD_NB 4                    /* units computed together (x read once for all; one barrier) */
#define PD_SMEM                                                                                                  \
    (PD_SLOTS * PD_SLOT + PD_XMAX * 2 + (PD_XMAX / 32) * 4 + 2 * PD_NB * 16 * 4 + 16 * 4 + 2 * PD_SLOTS * 8 + 16)

enum { PD_QKV = 0, PD_O = 1, PD_GU = 2, PD_DN = 3 };

/* rows a unit of a K-input matrix: 16, halved while their weights exceed a slot */
__host__ __device__ inline int pd_rows(int K) {
    int ru = 16;
    while (ru > 2 && (size_t)ru * (size_t)(K / 2) > PD_SLOT_W) ru >>= 1;
    return ru;
}

typedef struct pd_phase {
    const unsigned char *w, *p;
    int K, RU, two, units;
} pd_phase;


#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ static inline int pd_units_of(int ph, int dim, int hidden, int n_heads, int n_kv, int hd, int RU) {
    const int H = RU / 2;
    switch (ph) {
    case PD_QKV: return (n_heads + 2 * n_kv) * ((hd / 2) / H);
    case PD_GU: return hidden / H;
    default: return dim / RU;
    }
}

__device__ __forceinline__ pd_phase pd_get(const lk_pd_args &a, int l, int ph) {
    pd_phase f;
    const size_t off = (size_t)l * a.layer_stride;
    switch (ph) {
    case PD_QKV: f.w = a.qkv_w + off, f.p = a.qkv_p + off, f.K = a.dim, f.two = 1; break;
    case PD_O: f.w = a.o_w + off, f.p = a.o_p + off, f.K = a.n_heads * a.head_dim, f.two = 0; break;
    case PD_GU: f.w = a.gu_w + off, f.p = a.gu_p + off, f.K = a.dim, f.two = 1; break;
    default: f.w = a.dn_w + off, f.p = a.dn_p + off, f.K = a.hidden, f.two = 0; break;
    }
    f.RU = pd_rows(f.K);
    f.units = pd_units_of(ph, a.dim, a.hidden, a.n_heads, a.n_kv, a.head_dim, f.RU);
    return f;
}

/* first row of a unit's block A, of block B (-1: one block) and rows a block */
__device__ __forceinline__ void pd_unit_rows(const lk_pd_args &a, int ph, const pd_phase &f, int u, int &rA, int &rB,
                                             int &nb) {
    const int H = f.RU / 2;
    if (ph == PD_QKV) {
        const int per = (a.head_dim / 2) / H, hh = u / per;
        rA = hh * a.head_dim + (u % per) * H, rB = rA + a.head_dim / 2, nb = H;
    } else if (ph == PD_GU) {
        rA = u * H, rB = a.hidden + u * H, nb = H;
    } else {
        rA = u * f.RU, rB = -1, nb = f.RU;
    }
}

/* this block's first unit of a phase whose units start at global count g (mod nsm) */
__device__ __forceinline__ int pd_first(int bid, int g, int nsm) { return (bid - g + nsm) % nsm; }

__device__ __forceinline__ void pd_bar() { asm volatile("bar.sync 1, %0;" ::"n"(PD_CT) : "memory"); }

__device__ __forceinline__ void pd_bulk(void *dst, const void *src, uint32_t bytes, uint64_t *bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}

__device__ __forceinline__ unsigned long long pd_now() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

/* one warp's share of its RPW rows (r0, r0 + 8) of nbh units (slots s0, s0 + 1, ... mod PD_SLOTS):
 * CPL chunks a lane (lanes over consecutive chunks from c0), each input chunk read once for all the
 * rows and units, whose dequant-dot chains are independent */
template <int CPL, int RPW>
__device__ __forceinline__ void pd_dot(const unsigned char *ring, int s0, int nbh, int r0, int K, const uint4 *xs4,
                                       const float *xsum, int c0, float (&acc)[PD_NB][2]) {
    const int NC = K / 32;
#pragma unroll 1 /* ILP from the rows and units; unrolling the chunks too made ptxas spill */
    for (int i = 0; i < CPL; i++) {
        const int c = c0 + 32 * i;
        half2 xv[16];
#pragma unroll
        for (int qq = 0; qq < 4; qq++) {
            const uint4 t = xs4[qq * NC + c];
            xv[4 * qq + 0] = *reinterpret_cast<const half2 *>(&t.x);
            xv[4 * qq + 1] = *reinterpret_cast<const half2 *>(&t.y);
            xv[4 * qq + 2] = *reinterpret_cast<const half2 *>(&t.z);
            xv[4 * qq + 3] = *reinterpret_cast<const half2 *>(&t.w);
        }
        const float xsm = xsum[c];
        uint4 wv[PD_NB][RPW];
        float2 sm[PD_NB][RPW];
#pragma unroll
        for (int j = 0; j < PD_NB; j++)
            if (j < nbh) {
                const unsigned char *sb = ring + ((s0 + j) % PD_SLOTS) * PD_SLOT;
#pragma unroll
                for (int q = 0; q < RPW; q++) {
                    const int r = r0 + 8 * q;
                    wv[j][q] = reinterpret_cast<const uint4 *>(sb)[(size_t)r * NC + c];
                    sm[j][q] = __half22float2(
                        reinterpret_cast<const half2 *>(sb + PD_SLOT_W)[(size_t)r * (K / 128) + (c >> 2)]);
                }
            }
#pragma unroll
        for (int j = 0; j < PD_NB; j++)
            if (j < nbh) {
#pragma unroll
                for (int q = 0; q < RPW; q++) {
                    half2 w16[16];
                    lk_dequant8(wv[j][q].x, &w16[0]);
                    lk_dequant8(wv[j][q].y, &w16[4]);
                    lk_dequant8(wv[j][q].z, &w16[8]);
                    lk_dequant8(wv[j][q].w, &w16[12]);
                    acc[j][q] += sm[j][q].x * dot_chunk(w16, xv) + sm[j][q].y * xsm;
                }
            }
    }
}

/* grid barrier number n (1-based) of this launch: every block's consumers are done with the phase,
 * its writes are visible to every block after the wait */
__device__ __forceinline__ void pd_grid_sync(unsigned *count, unsigned target) {
    pd_bar();
    if (threadIdx.x == 0) { /* the release covers the block's writes ordered before it by the named barrier */
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(count) : "memory");
        unsigned v;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(count) : "memory");
        } while (v < target);
    }
    pd_bar();
}
#endif

/* HD head_dim; CA chunks a lane in the dim-input phases (qkv, o, gate_up: dim / 1024, 16-row
 * units, two rows a warp); down has PD_DN_CPL (hidden 8192: 4-row units, two warps a row) */
template <int HD, int CA>
__global__ void __launch_bounds__(PD_THREADS, 1) k_decode_layers(lk_pd_args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char *ring = smem;
    unsigned char *xsb = smem + PD_SLOTS * PD_SLOT; /* the phase input: [4][K/32] uint4 (quarter q of chunk c) */
    const uint4 *xs4 = (const uint4 *)xsb;
    float *xsum = (float *)(xsb + PD_XMAX * 2);     /* [K/32] chunk sums */
    float *red = xsum + PD_XMAX / 32;               /* [2][PD_NB][16] warp sums of a batch of units (batches alternate) */
    float *redn = red + 2 * PD_NB * 16;             /* [16] RMSNorm sums of squares */
    uint64_t *full = (uint64_t *)(redn + 16), *empty = full + PD_SLOTS;
    int *flag = (int *)(empty + PD_SLOTS);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int bid = blockIdx.x, nsm = gridDim.x;

    if (tid == 0) {
        for (int i = 0; i < PD_SLOTS; i++) {
            mbar_init(&full[i], 1);
            mbar_init(&empty[i], 1);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if (warp == PD_CW) { /* producer: the block's units of every phase, in use order, as slots free up */
        if (lane == 0) {
            uint32_t k = 0;
            int g = 0;
            for (int l = 0; l < a.n_layers; l++)
                for (int ph = 0; ph < 4; ph++) {
                    const pd_phase f = pd_get(a, l, ph);
                    const uint32_t rw = (uint32_t)f.K / 2, rp = (uint32_t)f.K / 32; /* bytes a row */
                    for (int u = pd_first(bid, g, nsm); u < f.units; u += nsm, k++) {
                        const int slot = k % PD_SLOTS;
                        if (k >= PD_SLOTS) mbar_wait(&empty[slot], ((k / PD_SLOTS) - 1) & 1);
                        int rA, rB, nb;
                        pd_unit_rows(a, ph, f, u, rA, rB, nb);
                        const uint32_t wb = nb * rw, pb = nb * rp;
                        unsigned char *dst = ring + slot * PD_SLOT;
                        mbar_expect_tx(&full[slot], (rB >= 0 ? 2 : 1) * (wb + pb));
                        pd_bulk(dst, f.w + (size_t)rA * rw, wb, &full[slot]);
                        pd_bulk(dst + PD_SLOT_W, f.p + (size_t)rA * rp, pb, &full[slot]);
                        if (rB >= 0) {
                            pd_bulk(dst + wb, f.w + (size_t)rB * rw, wb, &full[slot]);
                            pd_bulk(dst + PD_SLOT_W + pb, f.p + (size_t)rB * rp, pb, &full[slot]);
                        }
                    }
                    g = (g + f.units) % nsm;
                }
        }
        return;
    }

    /* ---- consumers ---- */
    const int pos = a.pos[0], sl = a.slot[0], L = pos + 1;
    const int hd = HD, nh = a.n_heads, nkv = a.n_kv, G = nh / nkv;
    int lt = 0;                   /* layer, for the trace */
    unsigned long long wait_ns = 0; /* trace: time in the full-slot waits of the layer (warps 0 and 1) */
#define PD_T(ev)                                                                                     \
    do {                                                                                             \
        if (a.trace && tid == 0) a.trace[((size_t)lt * 16 + (ev)) * nsm + bid] = pd_now();          \
    } while (0)
    uint32_t k = 0;   /* units consumed (slot k % PD_SLOTS, its (k / PD_SLOTS)-th fill) */
    int g = 0;        /* global unit count mod nsm at the current phase */
    unsigned nsync = 0;

    /* 4 inputs i..i+3 (i % 4 == 0) into the staged row, and their chunk's sum (8 lanes a chunk) */
    auto put4 = [&](int K, int i, half2 h0, half2 h1) {
        const int c = i >> 5, o = i & 31;
        uint2 v;
        v.x = *reinterpret_cast<uint32_t *>(&h0);
        v.y = *reinterpret_cast<uint32_t *>(&h1);
        *reinterpret_cast<uint2 *>(xsb + ((o >> 3) * (K / 32) + c) * 16 + (o & 7) * 2) = v;
        const float2 f0 = __half22float2(h0), f1 = __half22float2(h1);
        float s = f0.x + f0.y + f1.x + f1.y;
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        s += __shfl_xor_sync(0xffffffffu, s, 4);
        if ((lane & 7) == 0) xsum[c] = s;
    };
    /* RMSNorm(x) * w as the phase input (K = dim <= 4096) */
    auto load_norm = [&](const float *w, int K) {
        constexpr int IT = 4096 / (4 * PD_CT);
        float4 v[IT], gw[IT];
        float ss = 0.0f;
#pragma unroll
        for (int it = 0; it < IT; it++) {
            v[it] = gw[it] = make_float4(0.f, 0.f, 0.f, 0.f);
            const int i = 4 * tid + 4 * PD_CT * it;
            if (i < K) {
                gw[it] = __ldg(reinterpret_cast<const float4 *>(w + i)); /* with x: one memory latency */
                v[it] = __ldcg(reinterpret_cast<const float4 *>(a.x + i));
                ss += sumsq4(v[it]);
            }
        }
        const float tot = lk_block_sum_bar<PD_CW>(ss, redn, warp, [] { pd_bar(); });
        const float inv = rsqrtf(tot / (float)K + a.eps);
#pragma unroll
        for (int it = 0; it < IT; it++) {
            const int i = 4 * tid + 4 * PD_CT * it;
            if (i < K) {
                half2 lo, hi;
                normed4(v[it], gw[it], inv, lo, hi);
                put4(K, i, lo, hi);
            }
        }
        pd_bar();
    };
    /* an fp16 row (attention or SwiGLU output, K <= 8192) as the phase input */
    auto load_half = [&](const half *src, int K) {
#pragma unroll
        for (int it = 0; it < PD_XMAX / (4 * PD_CT); it++) {
            const int i = 4 * tid + 4 * PD_CT * it;
            if (i < K) {
                const uint2 v = __ldcg(reinterpret_cast<const uint2 *>(src + i));
                put4(K, i, *reinterpret_cast<const half2 *>(&v.x), *reinterpret_cast<const half2 *>(&v.y));
            }
        }
        pd_bar();
    };
    /* this block's units of phase ph of layer l (weights from the ring, input staged), up to PD_NB at a
     * time: their slots are waited for together, one barrier for the batch's cross-warp sums */
    uint32_t nbatch = 0;
    auto run_units = [&](int l, int ph) {
        const pd_phase f = pd_get(a, l, ph);
        /* warps over a unit: RU 16: rows w and w + 8 (a SwiGLU / rotary pair in one warp); RU 8: row w;
         * RU < 8: 8 / RU warps a row, each a part of K. Sums go to rb[row * WPR + part] */
        const int K = f.K, NC = K / 32, RU = f.RU, H = RU / 2, WPR = RU >= PD_CW ? 1 : PD_CW / RU, NCP = NC / WPR;
        const int RPW = RU > PD_CW ? 2 : 1, r = RU >= PD_CW ? warp : warp / WPR, part = RU >= PD_CW ? 0 : warp % WPR;
        const int c0 = part * NCP; /* NCP / 32 chunks a lane: CA, or PD_DN_CPL for down */
        const size_t lkv = (size_t)l * a.kv_layer;
        const int ne = f.two ? H : RU; /* epilogue threads a unit */
        for (int u0 = pd_first(bid, g, nsm); u0 < f.units; u0 += PD_NB * nsm) {
            int nbh = 1;
            while (nbh < PD_NB && u0 + nbh * nsm < f.units) nbh++;
            /* the epilogue's rotary operands (thread: unit ej, row et), loaded before the dot so their
             * latency overlaps it */
            const int ej = tid / ne, et = tid % ne, u = u0 + ej * nsm;
            const bool epi = tid < nbh * ne;
            int rA = 0, rB, nb;
            float e0 = 0.0f, e1 = 0.0f;
            if (epi) {
                pd_unit_rows(a, ph, f, u, rA, rB, nb);
                if (ph == PD_QKV) {
                    const int hh = rA / hd, i = rA % hd + et;
                    if (hh < nh + nkv) {
                        e0 = __ldg(a.cos_t + (size_t)pos * (hd / 2) + i);
                        e1 = __ldg(a.sin_t + (size_t)pos * (hd / 2) + i);
                    }
                }
            }
            const unsigned long long tw = a.trace && (tid == 0 || tid == 32) ? pd_now() : 0ull;
            for (int j = 0; j < nbh; j++) mbar_wait(&full[(k + j) % PD_SLOTS], ((k + j) / PD_SLOTS) & 1);
            if (a.trace && (tid == 0 || tid == 32)) wait_ns += pd_now() - tw;
            float acc[PD_NB][2] = {};
            const int s0 = k % PD_SLOTS;
            /* (two shapes a model: more inlined variants made ptxas spill heavily) */
            if (ph == PD_DN) pd_dot<PD_DN_CPL, 1>(ring, s0, nbh, r, K, xs4, xsum, c0 + lane, acc);
            else pd_dot<CA, 2>(ring, s0, nbh, r, K, xs4, xsum, c0 + lane, acc);
            float *rb = red + (nbatch & 1) * PD_NB * 16;
#pragma unroll
            for (int j = 0; j < PD_NB; j++)
                if (j < nbh)
#pragma unroll
                    for (int q = 0; q < 2; q++)
                        if (q < RPW) {
                            const float v = lk_warp_sum(acc[j][q]);
                            if (lane == 0) rb[j * 16 + (r + 8 * q) * WPR + part] = v;
                        }
            pd_bar();
            if (tid == 0) /* every warp is past its reads of the batch's slots */
                for (int j = 0; j < nbh; j++) mbar_arrive(&empty[(k + j) % PD_SLOTS]);
            if (epi) {
                const float *rj = rb + ej * 16;
                float s0 = 0.0f, s1 = 0.0f;
                for (int p = 0; p < WPR; p++) {
                    s0 += rj[et * WPR + p];
                    if (f.two) s1 += rj[(et + H) * WPR + p];
                }
                if (ph == PD_QKV) {
                    const int hh = rA / hd, i = rA % hd + et;
                    float ra = s0, rb2 = s1;
                    if (hh < nh + nkv) { /* q, k: rotary pair (i, i + hd/2), cos e0, sin e1 */
                        ra = s0 * e0 - s1 * e1;
                        rb2 = s1 * e0 + s0 * e1;
                    }
                    half *dst = hh < nh ? a.q + (size_t)hh * hd
                                        : (hh < nh + nkv ? a.kc : a.vc) + lkv +
                                              (((size_t)sl * nkv + (hh < nh + nkv ? hh - nh : hh - nh - nkv)) *
                                                   a.max_seq + pos) * hd;
                    dst[i] = __float2half(ra);
                    dst[i + hd / 2] = __float2half(rb2);
                } else if (ph == PD_GU) {
                    a.ffn[(size_t)u * H + et] = __float2half(lk_silu(s0) * s1);
                } else {
                    atomicAdd(a.x + rA + et, s0); /* the row's only adder: a RED, no round trip */
                }
            }
            k += nbh;
            nbatch++;
        }
        g = (g + f.units) % nsm;
    };
    /* attention of the one row over positions 0..pos: items (query head, chunk of up to 256
     * positions), a warp per 32 positions of the chunk (lane = position for the scores, lane = dims
     * for P V), merged in shared memory. One chunk (contexts up to 256): the item writes att itself.
     * More: each item writes a partial and the head's last item merges them. A warp's first tile
     * (its K rows, and V rows at head_dim 64) is requested before q has landed in shared memory, so
     * an item costs about one memory latency. */
    auto attention = [&](int l) {
        float *qf = reinterpret_cast<float *>(xsb); /* the staged input is free during attention */
        float *wm = qf + HD, *wl = wm + PD_CW, *wo = wl + PD_CW;
        const size_t lkv = (size_t)l * a.kv_layer;
        constexpr int VR = HD == 64 ? 16 : 8; /* V rows a load batch (96 registers: 17 warps) */
        constexpr int VW = HD / 64;            /* 32-bit words of V a lane a row (2 or 4 dims) */
        int nc0 = (L + 32 * PD_CW - 1) / (32 * PD_CW);
        if (nc0 > a.max_chunks) nc0 = a.max_chunks;
        if (nc0 < 1) nc0 = 1;
        const int cl = (((L + nc0 - 1) / nc0) + 31) & ~31, nc = (L + cl - 1) / cl;
        for (int item = bid; item < nh * nc; item += nsm) {
            const int h = item / nc, c = item % nc, kvh = h / G, p0 = c * cl, p1 = min(L, p0 + cl);
            const size_t base = lkv + ((size_t)sl * nkv + kvh) * a.max_seq * HD;
            const half *kb = a.kc + base, *vb = a.vc + base;
            if (tid < HD) qf[tid] = __half2float(__ldcg(a.q + (size_t)h * HD + tid)) * a.scale_log2;
            const int tf = p0 + 32 * warp;
            uint4 kr[HD / 8];
            uint32_t vv[VR][VW];
            /* V rows t0 + jb .. of the tile, VR of them while jb + j < lim (rows left in the tile): the
             * lane's VW words of each */
            auto load_v = [&](int t0, int jb, int lim) {
#pragma unroll
                for (int j = 0; j < VR; j++)
                    if (jb + j < lim) {
                        const uint32_t *vp =
                            reinterpret_cast<const uint32_t *>(vb + (size_t)(t0 + jb + j) * HD) + lane * VW;
#pragma unroll
                        for (int e2 = 0; e2 < VW; e2++) vv[j][e2] = __ldcg(vp + e2);
                    }
            };
            auto load_tile = [&](int t0) { /* the lane's K row and the first V batch */
                if (t0 + lane < p1) {
                    const uint4 *kp = reinterpret_cast<const uint4 *>(kb + (size_t)(t0 + lane) * HD);
#pragma unroll
                    for (int j = 0; j < HD / 8; j++) kr[j] = __ldcg(kp + j);
                }
                load_v(t0, 0, p1 - t0);
            };
            if (tf < p1) load_tile(tf);
            pd_bar();
            float m = -INFINITY, ls = 0.0f, o[HD / 32];
#pragma unroll
            for (int i = 0; i < HD / 32; i++) o[i] = 0.0f;
            for (int t0 = tf; t0 < p1; t0 += 32 * PD_CW) {
                if (t0 != tf) load_tile(t0);
                const bool ok = t0 + lane < p1;
                float s = -INFINITY;
                if (ok) {
                    float d = 0.0f;
#pragma unroll
                    for (int j = 0; j < HD / 8; j++) {
                        const uint32_t wv[4] = {kr[j].x, kr[j].y, kr[j].z, kr[j].w};
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const float2 f = __half22float2(*reinterpret_cast<const half2 *>(&wv[e]));
                            d += f.x * qf[8 * j + 2 * e] + f.y * qf[8 * j + 2 * e + 1];
                        }
                    }
                    s = d;
                }
                const float mn = fmaxf(m, lk_warp_max(s));
                const float e = ok ? exp2f(s - mn) : 0.0f, corr = exp2f(m - mn);
                ls = ls * corr + lk_warp_sum(e);
#pragma unroll
                for (int i = 0; i < HD / 32; i++) o[i] *= corr;
                m = mn;
                const int nv = min(32, p1 - t0);
#pragma unroll
                for (int jb = 0; jb < 32; jb += VR) {
                    if (jb >= nv) break; /* warp-uniform */
                    if (jb > 0) load_v(t0, jb, nv); /* batch 0 came with the tile's K rows */
#pragma unroll
                    for (int j = 0; j < VR; j++)
                        if (jb + j < nv) {
                            const float pj = __shfl_sync(0xffffffffu, e, jb + j);
#pragma unroll
                            for (int e2 = 0; e2 < VW; e2++) {
                                const float2 f = __half22float2(*reinterpret_cast<const half2 *>(&vv[j][e2]));
                                o[2 * e2] += pj * f.x;
                                o[2 * e2 + 1] += pj * f.y;
                            }
                        }
                }
            }
            if (lane == 0) wm[warp] = m, wl[warp] = ls;
#pragma unroll
            for (int i = 0; i < HD / 32; i++) wo[warp * HD + lane * (HD / 32) + i] = o[i];
            pd_bar();
            float M = -INFINITY, sl2 = 0.0f, so = 0.0f;
            if (tid < HD) {
                for (int w2 = 0; w2 < PD_CW; w2++) M = fmaxf(M, wm[w2]);
                for (int w2 = 0; w2 < PD_CW; w2++) {
                    const float fw = wm[w2] == -INFINITY ? 0.0f : exp2f(wm[w2] - M);
                    sl2 += fw * wl[w2];
                    so += fw * wo[w2 * HD + tid];
                }
            }
            if (nc == 1) {
                if (tid < HD) a.att[(size_t)h * HD + tid] = __float2half(so / sl2);
                pd_bar(); /* q, wm, wo are the next item's */
                continue;
            }
            float *pp = a.part + ((size_t)h * a.max_chunks + c) * (HD + 2);
            if (tid < HD) {
                pp[tid] = so;
                if (tid == 0) pp[HD] = M, pp[HD + 1] = sl2;
            }
            pd_bar();
            if (tid == 0) {
                __threadfence();
                *flag = atomicAdd(a.head_cnt + h, 1) == nc - 1;
            }
            pd_bar();
            if (*flag) { /* the head's last chunk: merge its nc partials (online, 4 chunks' loads at a time) */
                if (tid < HD) {
                    __threadfence();
                    const float *ph = a.part + (size_t)h * a.max_chunks * (HD + 2);
                    float Mx = -INFINITY, lx = 0.0f, ox = 0.0f;
#pragma unroll 4
                    for (int c2 = 0; c2 < nc; c2++) {
                        const float *q2 = ph + (size_t)c2 * (HD + 2);
                        const float mc = __ldcg(q2 + HD), lc = __ldcg(q2 + HD + 1), oc = __ldcg(q2 + tid);
                        const float mn = fmaxf(Mx, mc), f0 = exp2f(Mx - mn), f1 = exp2f(mc - mn);
                        lx = lx * f0 + lc * f1;
                        ox = ox * f0 + oc * f1;
                        Mx = mn;
                    }
                    a.att[(size_t)h * HD + tid] = __float2half(ox / lx);
                }
                if (tid == 0) a.head_cnt[h] = 0;
            }
            pd_bar();
        }
    };

    for (int l = 0; l < a.n_layers; l++) {
        const size_t off = (size_t)l * a.layer_stride;
        lt = l;
        wait_ns = 0;
        PD_T(0);
        load_norm(reinterpret_cast<const float *>(a.attn_norm + off), a.dim);
        PD_T(1);
        run_units(l, PD_QKV);
        PD_T(2);
        pd_grid_sync(a.sync, ++nsync * nsm);
        PD_T(3);
        attention(l);
        PD_T(4);
        pd_grid_sync(a.sync, ++nsync * nsm);
        PD_T(5);
        load_half(a.att, nh * hd);
        PD_T(6);
        run_units(l, PD_O);
        PD_T(7);
        pd_grid_sync(a.sync, ++nsync * nsm);
        PD_T(8);
        load_norm(reinterpret_cast<const float *>(a.ffn_norm + off), a.dim);
        PD_T(9);
        run_units(l, PD_GU);
        PD_T(10);
        pd_grid_sync(a.sync, ++nsync * nsm);
        PD_T(11);
        load_half(a.ffn, a.hidden);
        run_units(l, PD_DN);
        PD_T(12);
        if (l + 1 < a.n_layers) pd_grid_sync(a.sync, ++nsync * nsm);
        PD_T(13);
        if (a.trace && tid == 0) a.trace[((size_t)l * 16 + 14) * nsm + bid] = wait_ns;
        if (a.trace && tid == 32) a.trace[((size_t)l * 16 + 15) * nsm + bid] = wait_ns;
    }
#undef PD_T
    /* the last block out resets the counters for the next launch (every block is past its last wait) */
    pd_bar();
    if (tid == 0) {
        __threadfence();
        if (atomicAdd(a.sync + 32, 1u) == (unsigned)nsm - 1) {
            atomicExch(a.sync, 0u);
            atomicExch(a.sync + 32, 0u);
        }
    }
#else
    (void)a;
#endif
}

int lk_pd_supported(const lk_dmat *qkv, const lk_dmat *o, const lk_dmat *gu, const lk_dmat *dn, int n_heads, int n_kv,
                    int head_dim, int cc_major, const char **why) {
#define PD_NEED(cond, msg)     \
    do {                       \
        if (!(cond)) {         \
            if (why) *why = msg; \
            return 0;          \
        }                      \
    } while (0)
    PD_NEED(cc_major >= 9, "needs an sm_90 or newer GPU (bulk copies, mbarriers)");
    PD_NEED(qkv->fmt == LK_WFMT_Q4 && o->fmt == LK_WFMT_Q4 && gu->fmt == LK_WFMT_Q4 && dn->fmt == LK_WFMT_Q4,
            "needs row-interleaved int4 weights (a batch_size=1 engine, quantization=\"int4\")");
    PD_NEED(head_dim == 64 || head_dim == 128, "needs head_dim 64 or 128");
    PD_NEED(n_kv > 0 && n_heads % n_kv == 0, "needs n_heads a multiple of n_kv_heads");
    const int dim = qkv->K, q_dim = n_heads * head_dim, hidden = dn->K;
    PD_NEED(qkv->N == (n_heads + 2 * n_kv) * head_dim && o->K == q_dim && o->N == dim && gu->K == dim &&
                gu->N == 2 * hidden && dn->N == dim,
            "does not take these matrix shapes");
    /* the two instantiations (k_decode_layers<64, 2>, <128, 3>): Llama 3.2 1B and 3B shapes */
    PD_NEED((head_dim == 64 && dim == 2048) || (head_dim == 128 && dim == 3072),
            "has kernels for the Llama 3.2 1B and 3B shapes only (head_dim 64 with hidden size 2048, 128 with 3072)");
    PD_NEED(q_dim == dim && hidden == 8192, "needs n_heads * head_dim == hidden size and intermediate size 8192");
#undef PD_NEED
    return 1;
}

template <int HD, int CA> static lk_status pd_launch(const lk_pd_args *a, int sm_count, cudaStream_t st) {
    static int ready = 0; /* the shared-memory opt-in and the occupancy check, once per process and head_dim */
    if (!ready) {
        CU(cudaFuncSetAttribute(k_decode_layers<HD, CA>, cudaFuncAttributeMaxDynamicSharedMemorySize, PD_SMEM));
        int n = 0;
        CU(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k_decode_layers<HD, CA>, PD_THREADS, PD_SMEM));
        if (n < 1) return lk_fail(LK_E_UNSUPPORTED, "persistent decode kernel: does not fit an SM");
        ready = 1;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(sm_count);
    cfg.blockDim = dim3(PD_THREADS);
    cfg.dynamicSmemBytes = PD_SMEM;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative; /* every block resident at once (grid barriers) */
    attr[0].val.cooperative = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k_decode_layers<HD, CA>, *a);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) return lk_cuda_fail(e, "launch of k_decode_layers", __FILE__, __LINE__);
    return LK_OK;
}

/* LLAMA_KERNEL_PD_TRACE=1 (debugging aid; run with CUDA graphs off): every 64th launch is
 * synchronised and the mean / max over blocks of each interval between the kernel's trace points,
 * averaged over layers, goes to stderr */
static lk_status pd_trace_report(const unsigned long long *dev, int n_layers, int nsm, cudaStream_t st) {
    static const char *names[15] = {"qkv norm", "qkv units", "sync qkv", "attention", "sync attn", "o load",
                                    "o units", "sync o", "ffn norm", "gate_up units", "sync gate_up",
                                    "down load+units", "sync down", "(full waits w0)", "(full waits w1)"};
    const size_t n = (size_t)n_layers * 16 * nsm;
    unsigned long long *h = (unsigned long long *)malloc(n * sizeof *h);
    if (!h) return lk_fail(LK_E_NOMEM, "out of memory");
    cudaError_t e = cudaStreamSynchronize(st);
    if (e == cudaSuccess) e = cudaMemcpy(h, dev, n * sizeof *h, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        free(h);
        return lk_cuda_fail(e, "persistent decode trace", __FILE__, __LINE__);
    }
    double tot = 0.0;
    for (int ev = 0; ev < 15; ev++) {
        double mean = 0.0, mx = 0.0;
        for (int l = 0; l < n_layers; l++) {
            double lmax = 0.0;
            for (int b = 0; b < nsm; b++) {
                const unsigned long long *t = h + ((size_t)l * 16) * nsm + b;
                const double d = ev >= 13 ? (double)t[(size_t)(ev + 1) * nsm] : (double)(t[(size_t)(ev + 1) * nsm] - t[(size_t)ev * nsm]);
                mean += d;
                if (d > lmax) lmax = d;
            }
            mx += lmax;
        }
        mean /= (double)n_layers * nsm;
        mx /= n_layers;
        if (ev < 13) tot += mean;
        fprintf(stderr, "  pd trace %-16s mean %7.2f us  max %7.2f us\n", names[ev], mean / 1e3, mx / 1e3);
    }
    fprintf(stderr, "  pd trace layer total %.2f us\n", tot / 1e3);
    free(h);
    return LK_OK;
}

lk_status lk_pd_run(const lk_pd_args *a, int sm_count, cudaStream_t st) {
    if (sm_count < 1) return lk_fail(LK_E_INVALID, "persistent decode kernel: %d SMs", sm_count);
    if (a->head_dim != 64 && a->head_dim != 128)
        return lk_fail(LK_E_UNSUPPORTED, "persistent decode kernel: head_dim %d (64 or 128)", a->head_dim);
    static int trace_on = -1;
    static unsigned long long *trace = NULL;
    static long calls = 0;
    if (trace_on < 0) {
        const char *t = getenv("LLAMA_KERNEL_PD_TRACE");
        trace_on = t && t[0] == '1';
    }
    lk_pd_args b = *a;
    if (trace_on) {
        if (!trace) CU(cudaMalloc((void **)&trace, (size_t)64 * 16 * 1024 * sizeof *trace));
        if (a->n_layers > 64 || sm_count > 1024) return lk_fail(LK_E_UNSUPPORTED, "trace: too many layers or SMs");
        b.trace = trace;
    }
    lk_status r = a->head_dim == 64 ? pd_launch<64, 2>(&b, sm_count, st) : pd_launch<128, 3>(&b, sm_count, st);
    if (r) return r;
    if (trace_on && ++calls % 64 == 0) return pd_trace_report(trace, a->n_layers, sm_count, st);
    return LK_OK;
}
