/* lk_kernels.cu: embedding lookup, RMSNorm, rotary + KV-cache append, the
 * plain attention kernel (use_flash_attention=False), and GPU sampling. */
#include "lk_kernels.cuh"

#include <float.h>
#include <limits.h>

#include "../lk_model.h"
#include "../lk_quant.h"
#include "../lk_sample.h"

/* ---- embedding: X[r] = dequantized row tok[r] ---------------------------------- */
__global__ void k_embed_q4(const uint32_t *__restrict__ W, const half2 *__restrict__ P, const int *__restrict__ tok,
                           int dim, float *__restrict__ x, int trig) {
    lk_pdl_prologue();
    if (trig) lk_pdl_trigger();
    const int r = blockIdx.x, t = tok[r];
    const int words = dim / 8, groups = dim / LK_Q4_GROUP;
    for (int w = threadIdx.x; w < words; w += blockDim.x) {
        half2 q[4];
        lk_dequant8(W[(size_t)t * words + w], q);
        float2 sm = __half22float2(P[(size_t)t * groups + w / (LK_Q4_GROUP / 8)]);
        float *o = x + (size_t)r * dim + 8 * w;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __half22float2(q[i]);
            o[2 * i] = f.x * sm.x + sm.y;
            o[2 * i + 1] = f.y * sm.x + sm.y;
        }
    }
}

__global__ void k_embed_bf16(const uint16_t *__restrict__ W, const int *__restrict__ tok, int dim, float *__restrict__ x,
                             int trig) {
    lk_pdl_prologue();
    if (trig) lk_pdl_trigger();
    const int r = blockIdx.x, t = tok[r];
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        x[(size_t)r * dim + i] = __uint_as_float((uint32_t)W[(size_t)t * dim + i] << 16);
}

/* the tiled arrangement (lk_q4_tile): element (row t, column k) of a 16x64 tile */
__global__ void k_embed_q4_tiled(const uint32_t *__restrict__ W, const half2 *__restrict__ P, const int *__restrict__ tok,
                                 int dim, float *__restrict__ x, int trig) {
    lk_pdl_prologue();
    if (trig) lk_pdl_trigger();
    const int r = blockIdx.x, t = tok[r], rb = t / 16, rr = t % 16, g = rr % 8, hi = rr / 8;
    const int KT = dim / 64, groups = dim / LK_Q4_GROUP;
    /* four consecutive inputs a thread: one word of the tile holds the row's nibbles of k = 4 i .. 4 i + 3
     * (input j at nibble (j < 2 ? 0 : 2) + hi + 4 (j & 1)), so each word is read once, not four times. (v76c,
     * H200: 7.7 us for a 2,048-row chunk by CUPTI; the 213 us that LLAMA_KERNEL_PROFILE showed, which prompted
     * this, were mostly the host's gap before a forward's first kernel) */
    for (int k = 4 * threadIdx.x; k < dim; k += 4 * blockDim.x) {
        const int kt = k / 64, tt = (k % 64) / 16, kb = (k % 16) / 4;
        const uint32_t w = W[(((size_t)rb * KT + kt) * 512 + (size_t)(g * 4 + tt) * 16 + kb * 4) / 4];
        const float2 sm = __half22float2(P[((size_t)rb * groups + k / LK_Q4_GROUP) * 16 + rr]);
        float4 v;
        v.x = (float)((w >> (4 * hi)) & 15u) * sm.x + sm.y;
        v.y = (float)((w >> (4 * (hi + 4))) & 15u) * sm.x + sm.y;
        v.z = (float)((w >> (4 * (hi + 2))) & 15u) * sm.x + sm.y;
        v.w = (float)((w >> (4 * (hi + 6))) & 15u) * sm.x + sm.y;
        *reinterpret_cast<float4 *>(x + (size_t)r * dim + k) = v;
    }
}

lk_status lk_embed(const lk_dmat *E, const int *tok, int M, int dim, float *x, cudaStream_t st) {
    /* trigger the next kernel (the first qkv matmul) right after the wait, so its blocks launch and load
     * their first weights while the rows are copied (batch 1 +0.2-0.4%, within noise, benchmarks/NOTES.md
     * v55); LLAMA_KERNEL_EMBED_TRIGGER=0 (A/B, read every call) triggers at exit */
    const char *te = getenv("LLAMA_KERNEL_EMBED_TRIGGER");
    const int trig = !(te && te[0] == '0');
    if (E->fmt == LK_WFMT_Q4_TILED)
        LAUNCH("k_embed_q4_tiled", k_embed_q4_tiled, dim3(M), dim3(256), 0, st, (const uint32_t *)E->w, E->p, tok, dim,
               x, trig);
    else if (E->fmt == LK_WFMT_Q4)
        LAUNCH("k_embed_q4", k_embed_q4, dim3(M), dim3(256), 0, st, (const uint32_t *)E->w, E->p, tok, dim, x, trig);
    else
        LAUNCH("k_embed_bf16", k_embed_bf16, dim3(M), dim3(256), 0, st, (const uint16_t *)E->w, tok, dim, x, trig);
    return LK_OK;
}

/* ---- a step's tokens to the host: written by a kernel into mapped pinned memory ----------------
 * (instead of a device-to-host copy, whose copy engine the next step's first kernel would wait for) */
__global__ void k_tokens_out(const int *__restrict__ tok, int *__restrict__ dst, int B) {
    lk_pdl_prologue();
    for (int i = threadIdx.x; i < B; i += blockDim.x) dst[i] = tok[i];
    __threadfence_system();
}

lk_status lk_tokens_out(const int *tok, int *dst, int B, cudaStream_t st) {
    LAUNCH("k_tokens_out", k_tokens_out, dim3(1), dim3(B < 256 ? 32 * ((B + 31) / 32) : 256), 0, st, tok, dst, B);
    return LK_OK;
}

/* ---- RMSNorm: H = X * rsqrt(mean(X^2) + eps) * w, fp32 math, fp16 out ----------- */
#define RMS_V 4 /* float4s of a row a thread holds in registers: rows up to 4,096 (x 256 threads) */
__global__ void __launch_bounds__(256) k_rmsnorm(const float *__restrict__ x, const float *__restrict__ w, int dim,
                                                 float eps, half *__restrict__ h, int trig) {
    __shared__ float red[32];
    /* trig (lk_rmsnorm): the next kernel may launch at once; its PDL wait still waits for this grid, and this
     * grid's blocks wait for the one before, so all that moves is when its weight loads go out */
    if (trig) lk_pdl_trigger();
    const float *xr = x + (size_t)blockIdx.x * dim;
    half *hr = h + (size_t)blockIdx.x * dim;
    const int n4 = dim >> 2;
    if (n4 <= RMS_V * 256) {
        /* x read once, into registers; the weights (not written by earlier kernels) before the PDL
         * wait. Same sums in the same order as the loop below */
        float4 v[RMS_V], g[RMS_V];
#pragma unroll
        for (int j = 0; j < RMS_V; j++) {
            const int i = threadIdx.x + j * 256;
            if (i < n4) g[j] = reinterpret_cast<const float4 *>(w)[i];
        }
        lk_pdl_prologue();
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < RMS_V; j++) {
            const int i = threadIdx.x + j * 256;
            if (i < n4) {
                v[j] = reinterpret_cast<const float4 *>(xr)[i];
                ss += sumsq4(v[j]);
            }
        }
        ss = lk_block_sum(ss, red);
        const float inv = rsqrtf(ss / (float)dim + eps);
#pragma unroll
        for (int j = 0; j < RMS_V; j++) {
            const int i = threadIdx.x + j * 256;
            if (i < n4) {
                half2 o[2];
                normed4(v[j], g[j], inv, o[0], o[1]);
                *reinterpret_cast<uint2 *>(hr + 4 * i) = *reinterpret_cast<const uint2 *>(o);
            }
        }
        return;
    }
    lk_pdl_prologue();
    float ss = 0.0f;
    for (int i = threadIdx.x * 4; i < dim; i += blockDim.x * 4) {
        float4 v = *reinterpret_cast<const float4 *>(xr + i);
        ss += sumsq4(v);
    }
    ss = lk_block_sum(ss, red);
    const float inv = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x * 4; i < dim; i += blockDim.x * 4) {
        float4 v = *reinterpret_cast<const float4 *>(xr + i);
        float4 g = *reinterpret_cast<const float4 *>(w + i);
        half2 a, b;
        normed4(v, g, inv, a, b);
        *reinterpret_cast<half2 *>(hr + i) = a;
        *reinterpret_cast<half2 *>(hr + i + 2) = b;
    }
}

lk_status lk_rmsnorm(const float *x, const float *w, int M, int dim, float eps, half *h, cudaStream_t st) {
    if (dim % 4) return lk_fail(LK_E_UNSUPPORTED, "no RMSNorm kernel for hidden size %d (must be a multiple of 4)", dim);
    /* up to 64 rows (decode batches; the matmul after it is the tiled small-batch kernel or the 64-row wgmma
     * kernel) the next kernel is triggered as this one starts, so the tiled kernel's first weight loads overlap
     * this kernel and the wait before it; a prompt chunk's thousands of blocks keep the trigger at their exit.
     * LLAMA_KERNEL_NORM_TRIGGER=0 (A/B; read every call): at the exit always */
    const char *te = getenv("LLAMA_KERNEL_NORM_TRIGGER");
    const int trig = M <= 64 && !(te && te[0] == '0');
    LAUNCH("k_rmsnorm", k_rmsnorm, dim3(M), dim3(256), 0, st, x, w, dim, eps, h, trig);
    return LK_OK;
}

/* ---- rotary (HF half-split) on q and k, and K/V append to the cache --------------- */
__global__ void k_rope_kv(half *__restrict__ qkv, int ld, const int *__restrict__ slot, const int *__restrict__ pos,
                          int n_heads, int n_kv, int hd, const float *__restrict__ cos_t,
                          const float *__restrict__ sin_t, half *__restrict__ kc, half *__restrict__ vc, int max_seq) {
    lk_pdl_prologue();
    const int r = blockIdx.x, p = pos[r], s = slot[r], half_ = hd / 2;
    half *row = qkv + (size_t)r * ld;
    for (int idx = threadIdx.x; idx < (n_heads + n_kv) * half_; idx += blockDim.x) {
        const int h = idx / half_, i = idx % half_;
        const float c = cos_t[(size_t)p * half_ + i], sn = sin_t[(size_t)p * half_ + i];
        half *v = row + (size_t)h * hd;
        const float a = __half2float(v[i]), b = __half2float(v[i + half_]);
        const float na = a * c - b * sn, nb = b * c + a * sn;
        if (h < n_heads) {
            v[i] = __float2half(na);
            v[i + half_] = __float2half(nb);
        } else {
            half *dst = kc + (((size_t)s * n_kv + (h - n_heads)) * max_seq + p) * hd;
            dst[i] = __float2half(na);
            dst[i + half_] = __float2half(nb);
        }
    }
    const half *vsrc = row + (size_t)(n_heads + n_kv) * hd;
    for (int idx = threadIdx.x; idx < n_kv * hd; idx += blockDim.x) {
        const int h = idx / hd, d = idx % hd;
        vc[(((size_t)s * n_kv + h) * max_seq + p) * hd + d] = vsrc[idx];
    }
}

/* the same with 16-byte accesses: a thread rotates 8 consecutive dims i..i+7 of a head with their partners
 * i+hd/2.., and copies V in 16-byte pieces (hd a multiple of 16, row stride a multiple of 8 halves).
 * The default where those hold; k_rope_kv above covers the rest. H100 (benchmarks/NOTES.md, v49), same
 * run, 2-byte -> 16-byte, share of a device copy's rate: 1B 512 rows 55% -> 87%, 2,048 rows 44% -> 81%;
 * 3B 54% -> 96%, 60% -> 117% (2,048 rows of the 1B: 11.9 -> 6.5 us a call) */
__global__ void k_rope_kv_v8(half *__restrict__ qkv, int ld, const int *__restrict__ slot, const int *__restrict__ pos,
                             int n_heads, int n_kv, int hd, const float *__restrict__ cos_t,
                             const float *__restrict__ sin_t, half *__restrict__ kc, half *__restrict__ vc,
                             int max_seq) {
    lk_pdl_prologue();
    const int r = blockIdx.x, p = pos[r], s = slot[r], half_ = hd / 2, g8 = half_ / 8;
    half *row = qkv + (size_t)r * ld;
    for (int idx = threadIdx.x; idx < (n_heads + n_kv) * g8; idx += blockDim.x) {
        const int h = idx / g8, i = (idx % g8) * 8;
        half *v = row + (size_t)h * hd;
        const uint4 ra = *reinterpret_cast<const uint4 *>(v + i), rb = *reinterpret_cast<const uint4 *>(v + i + half_);
        const float4 *cp = reinterpret_cast<const float4 *>(cos_t + (size_t)p * half_ + i);
        const float4 *sp = reinterpret_cast<const float4 *>(sin_t + (size_t)p * half_ + i);
        const float4 c0 = cp[0], c1 = cp[1], s0 = sp[0], s1 = sp[1];
        const float c[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
        const float sn[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
        const half2 *ha = reinterpret_cast<const half2 *>(&ra), *hb = reinterpret_cast<const half2 *>(&rb);
        uint4 oa, ob;
        half2 *pa = reinterpret_cast<half2 *>(&oa), *pb = reinterpret_cast<half2 *>(&ob);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float2 a = __half22float2(ha[k]), b = __half22float2(hb[k]);
            const int j = 2 * k;
            pa[k] = __floats2half2_rn(a.x * c[j] - b.x * sn[j], a.y * c[j + 1] - b.y * sn[j + 1]);
            pb[k] = __floats2half2_rn(b.x * c[j] + a.x * sn[j], b.y * c[j + 1] + a.y * sn[j + 1]);
        }
        half *dst = h < n_heads ? v : kc + (((size_t)s * n_kv + (h - n_heads)) * max_seq + p) * hd;
        *reinterpret_cast<uint4 *>(dst + i) = oa;
        *reinterpret_cast<uint4 *>(dst + i + half_) = ob;
    }
    const half *vsrc = row + (size_t)(n_heads + n_kv) * hd;
    const int v8 = hd / 8;
    for (int idx = threadIdx.x; idx < n_kv * v8; idx += blockDim.x) {
        const int h = idx / v8, d = (idx % v8) * 8;
        *reinterpret_cast<uint4 *>(vc + (((size_t)s * n_kv + h) * max_seq + p) * hd + d) =
            *reinterpret_cast<const uint4 *>(vsrc + (size_t)h * hd + d);
    }
}

lk_status lk_rope_kv(half *qkv, int qkv_ld, const int *slot, const int *pos, int M, int n_heads, int n_kv, int head_dim,
                     const float *cos_t, const float *sin_t, half *kc, half *vc, int max_seq, cudaStream_t st) {
    /* LLAMA_KERNEL_ROPE_VEC=0 forces the 2-byte kernel (A/B and tests; read every call) */
    const char *e = getenv("LLAMA_KERNEL_ROPE_VEC");
    if (!(e && e[0] == '0') && head_dim % 16 == 0 && qkv_ld % 8 == 0 &&
        ((uintptr_t)qkv | (uintptr_t)cos_t | (uintptr_t)sin_t | (uintptr_t)kc | (uintptr_t)vc) % 16 == 0) {
        LAUNCH("k_rope_kv_v8", k_rope_kv_v8, dim3(M), dim3(256), 0, st, qkv, qkv_ld, slot, pos, n_heads, n_kv,
               head_dim, cos_t, sin_t, kc, vc, max_seq);
        return LK_OK;
    }
    LAUNCH("k_rope_kv", k_rope_kv, dim3(M), dim3(256), 0, st, qkv, qkv_ld, slot, pos, n_heads, n_kv, head_dim, cos_t,
           sin_t, kc, vc, max_seq);
    return LK_OK;
}

/* ---- plain attention: one block per (row, query head), online softmax over
 * tiles of 256 positions; the simple reference the flash kernels are checked
 * against, and the use_flash_attention=False path ------------------------------- */
#define PLAIN_T 256
__global__ void __launch_bounds__(PLAIN_T) k_attn_plain(lk_attn_args a) {
    lk_pdl_prologue();
    extern __shared__ float sh[];
    const int r = blockIdx.x, h = blockIdx.y, hd = a.head_dim, kvh = h / (a.n_heads / a.n_kv);
    float *q = sh, *p = sh + hd, *o = p + PLAIN_T;
    __shared__ float red[32];
    const half *qs = a.qkv + (size_t)r * a.qkv_ld + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        q[d] = __half2float(qs[d]) * a.scale;
        o[d] = 0.0f;
    }
    const int s = a.slot[r], n = a.pos[r] + 1;
    const half *K = a.kc + ((size_t)s * a.n_kv + kvh) * a.max_seq * hd;
    const half *V = a.vc + ((size_t)s * a.n_kv + kvh) * a.max_seq * hd;
    float m_run = -INFINITY, l_run = 0.0f;
    __syncthreads();
    for (int t0 = 0; t0 < n; t0 += PLAIN_T) {
        const int t = t0 + threadIdx.x;
        float sc = -INFINITY;
        if (t < n) {
            sc = 0.0f;
            const half2 *kr = reinterpret_cast<const half2 *>(K + (size_t)t * hd);
            for (int d = 0; d < hd / 2; d++) {
                float2 kf = __half22float2(kr[d]);
                sc += q[2 * d] * kf.x + q[2 * d + 1] * kf.y;
            }
        }
        /* tile max */
        float mx = lk_warp_max(sc);
        __syncthreads();
        if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
        __syncthreads();
        mx = -INFINITY;
        for (int w = 0; w < PLAIN_T / 32; w++) mx = fmaxf(mx, red[w]);
        const float m_new = fmaxf(m_run, mx);
        const float pe = t < n ? __expf(sc - m_new) : 0.0f;
        p[threadIdx.x] = pe;
        const float corr = __expf(m_run - m_new);
        const float tile_sum = lk_block_sum(pe, red);
        l_run = l_run * corr + tile_sum;
        m_run = m_new;
        __syncthreads();
        const int cnt = min(PLAIN_T, n - t0);
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            float acc = o[d] * corr;
            for (int j = 0; j < cnt; j++) acc += p[j] * __half2float(V[(size_t)(t0 + j) * hd + d]);
            o[d] = acc;
        }
        __syncthreads();
    }
    half *out = a.out + (size_t)r * a.n_heads * hd + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) out[d] = __float2half(o[d] / l_run);
}

lk_status lk_attention_plain(const lk_attn_args *a, cudaStream_t st) {
    dim3 grid(a->M, a->n_heads);
    size_t smem = (size_t)(2 * a->head_dim + PLAIN_T) * sizeof(float);
    LAUNCH("k_attn_plain", k_attn_plain, grid, dim3(PLAIN_T), smem, st, *a);
    return LK_OK;
}

/* ---- rows of many slots at short positions: one warp per (row, query head) ----------
 * The packed prefill chunks of a batch of short prompts (rows of many slots, which the flash kernel,
 * one slot a call, cannot take) ran on the plain kernel above: a 256-thread block per (row, head)
 * for a few dozen positions, 354 us a layer for 64 prompts of 32 tokens (H200, benchmarks/NOTES.md
 * v76) against 57 us for one prompt of 2,048. Here a warp takes a (row, head), 32 positions a step:
 * a lane's score each (its K row against q in shared memory, summed in the plain kernel's order),
 * then the lanes over head dims for P V. A block's ROWS_W warps are consecutive query heads, so a
 * GQA group's K/V rows come from L1 after the first warp. 2.5-3.9x the plain kernel at 32-2,048
 * positions (v76). Since v79 the engine runs those rows as flash query blocks and takes this kernel only
 * with LLAMA_KERNEL_ATTN_BLOCKS=0 (and LLAMA_KERNEL_ATTN_ROWS=0 then the plain one; lk_cuda_backend.cu). */
#define ROWS_W 4
template <int HD>
__global__ void __launch_bounds__(ROWS_W * 32) k_attn_rows(lk_attn_args a) {
    constexpr int DL = HD / 32; /* head dims a lane for P V */
    __shared__ __align__(16) float qs[ROWS_W][HD];
    lk_pdl_prologue();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r = blockIdx.x, h = blockIdx.y * ROWS_W + warp;
    if (h >= a.n_heads) return; /* (no block barriers below) */
    const int kvh = h / (a.n_heads / a.n_kv);
    const half *qr = a.qkv + (size_t)r * a.qkv_ld + (size_t)h * HD;
    for (int d = lane; d < HD; d += 32) qs[warp][d] = __half2float(qr[d]) * a.scale;
    __syncwarp();
    const int s = a.slot[r], n = a.pos[r] + 1;
    const half *K = a.kc + ((size_t)s * a.n_kv + kvh) * a.max_seq * HD;
    const half *V = a.vc + ((size_t)s * a.n_kv + kvh) * a.max_seq * HD;
    float m_run = -INFINITY, l_run = 0.0f, o[DL];
#pragma unroll
    for (int i = 0; i < DL; i++) o[i] = 0.0f;
    for (int t0 = 0; t0 < n; t0 += 32) {
        const int t = t0 + lane;
        float sc = -INFINITY;
        if (t < n) {
            const uint4 *kr = reinterpret_cast<const uint4 *>(K + (size_t)t * HD);
            sc = 0.0f;
#pragma unroll
            for (int c = 0; c < HD / 8; c++) {
                const uint4 kw = kr[c];
                const half2 *k2 = reinterpret_cast<const half2 *>(&kw);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float2 kf = __half22float2(k2[e]);
                    const float2 qf = *reinterpret_cast<const float2 *>(&qs[warp][8 * c + 2 * e]);
                    sc += qf.x * kf.x + qf.y * kf.y;
                }
            }
        }
        const float m_new = fmaxf(m_run, lk_warp_max(sc)); /* finite: position t0 < n is in every step */
        const float p = t < n ? __expf(sc - m_new) : 0.0f;
        const float corr = __expf(m_run - m_new);
        l_run = l_run * corr + lk_warp_sum(p);
        m_run = m_new;
#pragma unroll
        for (int i = 0; i < DL; i++) o[i] *= corr;
        const int cnt = min(32, n - t0);
        const half *vb = V + (size_t)t0 * HD + lane * DL;
#pragma unroll 4
        for (int j = 0; j < cnt; j++) {
            const float pj = __shfl_sync(0xffffffffu, p, j);
            if constexpr (DL == 2) {
                const float2 vf = __half22float2(*reinterpret_cast<const half2 *>(vb + (size_t)j * HD));
                o[0] += pj * vf.x;
                o[1] += pj * vf.y;
            } else {
#pragma unroll
                for (int i = 0; i < DL; i++) o[i] += pj * __half2float(vb[(size_t)j * HD + i]);
            }
        }
    }
    half *out = a.out + (size_t)r * a.n_heads * HD + (size_t)h * HD + lane * DL;
#pragma unroll
    for (int i = 0; i < DL; i++) out[i] = __float2half(o[i] / l_run);
}

lk_status lk_attention_rows(const lk_attn_args *a, cudaStream_t st) {
    if (a->head_dim != 64 && a->head_dim != 128) return lk_attention_plain(a, st);
    dim3 grid(a->M, (a->n_heads + ROWS_W - 1) / ROWS_W);
    LAUNCH("k_attn_rows", a->head_dim == 64 ? k_attn_rows<64> : k_attn_rows<128>, grid, dim3(ROWS_W * 32), 0, st, *a);
    return LK_OK;
}

/* ---- sampling: the rule of lk_sample.h, one block of 1024 threads per row ---------- */
#define SAMP_T 1024

/* (best, bi) of the whole warp into every lane: largest value, lowest index on ties. */
__device__ __forceinline__ void warp_argmax(float &best, int &bi) {
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
}

/* inclusive prefix sum of v over the lanes of a warp (lane order; all 32 lanes take part; lane: this
 * thread's lane) */
template <typename T> __device__ __forceinline__ T warp_incl_scan(T v, int lane) {
    for (int o = 1; o < 32; o <<= 1) {
        const T t = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += t;
    }
    return v;
}

__device__ __forceinline__ uint32_t key_of(float e) { return __float_as_uint(e); }

/* candidates of the top-k path: at most this many (ties at the k-th key included), else the general path */
#define SAMP_CAND SAMP_T
/* the top-k window: weights with a key's first byte >= 0x38 (>= 2^-15 of the largest), up to SAMP_WIN */
#define SAMP_WIN 4096
#define SAMP_WIN_KEY 0x38000000u
/* loads a thread keeps in flight in the passes over the vocabulary: SAMP_U4 16-byte loads (each pass is
 * bound by the bytes one SM has in flight from L2: one 4-byte load at a time made a pass ~40 us for
 * 128k logits, eight ~14 us) */
#define SAMP_U4 4
/* kept lists up to this long take their top-p threshold by direct sums (list_mass_threshold), longer ones by radix */
#define SAMP_LIST_SHORT 256

/* elements i..i+3 (zero from `end` on): one 16-byte load when vec (V % 4 == 0, 16-byte aligned rows,
 * so four elements are all in or all out), else four */
__device__ __forceinline__ float4 ld4(const float *l, int i, int end, bool vec) {
    if (vec) return i < end ? *reinterpret_cast<const float4 *>(l + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float4 v;
    v.x = i < end ? l[i] : 0.0f;
    v.y = i + 1 < end ? l[i + 1] : 0.0f;
    v.z = i + 2 < end ? l[i + 2] : 0.0f;
    v.w = i + 3 < end ? l[i + 3] : 0.0f;
    return v;
}
__device__ __forceinline__ float f4_at(const float4 &v, int c) { return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w; }
__device__ __forceinline__ bool vec_ok(const float *l, int V) { return (V & 3) == 0 && ((uintptr_t)l & 15) == 0; }

/* adds e (by_mass) or 1 of each lane with `in` to hist[bin] (lanes of a warp call it together).
 * Counts: one atomic a lane (measured faster than grouping the lanes by __match_any_sync: top_k=50
 * 153 vs 207 us a row). Masses: lanes with the same bin are summed in the warp first, so a near-flat
 * distribution (every key in one or two bins) costs one float atomic a warp instead of 32
 * serialised ones (top_p=0.9 alone: 1,119 -> 406 us a row; benchmarks/NOTES.md, v38). */
__device__ __forceinline__ void hist_add(bool in, unsigned bin, float e, bool by_mass, float *hist_f,
                                         unsigned *hist_u) {
    if (!by_mass) {
        if (in) atomicAdd(&hist_u[bin], 1u);
        return;
    }
    const unsigned full = 0xffffffffu;
    const int lane = threadIdx.x & 31;
    if (!__ballot_sync(full, in)) return; /* most warps past the first byte: nothing to add */
    const unsigned peers = __match_any_sync(full, in ? bin : 0xffffffffu);
    const int leader = __ffs(peers) - 1;
    /* lanes alone in their bin add directly; each group of 2+ is summed by shuffles, one group at a time */
    if (in && __popc(peers) == 1) atomicAdd(&hist_f[bin], e);
    unsigned todo = __ballot_sync(full, in && __popc(peers) > 1 && lane == leader);
    while (todo) {
        const int ld = __ffs(todo) - 1;
        todo &= todo - 1;
        const unsigned b = __shfl_sync(full, bin, ld);
        const float sum = lk_warp_sum(in && bin == b ? e : 0.0f);
        if (lane == ld) atomicAdd(&hist_f[b], sum);
    }
}

/* appends the lanes with f to a list counted by *counter: one atomic a warp, places in lane order;
 * put(at) runs on every lane of a warp with at least one f (at means nothing where f is false).
 * Every lane of the warp calls it. */
template <class Put>
__device__ __forceinline__ void warp_append(bool f, int *counter, Put put) {
    const int lane = threadIdx.x & 31;
    const unsigned bal = __ballot_sync(0xffffffffu, f);
    if (bal) {
        const int ld = __ffs(bal) - 1;
        int base = 0;
        if (lane == ld) base = atomicAdd(counter, __popc(bal));
        base = __shfl_sync(0xffffffffu, base, ld);
        put(base + __popc(bal & ((1u << lane) - 1u)));
    }
}

/* block-wide radix descent (see lk_sample.c): weight(key > v) < target <= weight(key >= v). Every
 * thread runs the same number of steps (blockDim.x is a multiple of 32), as hist_add needs. With stop_shift
 * 16 it stops after two bytes: v's low 16 bits are then 0, and weight(key >= v) >= target still holds
 * (a lower bound of the threshold, for the top-k split's sample). */
__device__ uint32_t radix_threshold(const float *e, int V, float target, bool by_mass, float *hist_f,
                                    unsigned *hist_u, int *sel, int stop_shift = 0) {
    uint32_t prefix = 0, mask = 0;
    float above = 0.0f;
    /* first byte: the weights are exp((l - max) / T) <= 1 (first byte <= 0x3f), and the descent needs
     * only the bins from the top down to the target, so only the 8 bins 0x38..0x3f (weights down to
     * 2^-15 of the largest) are counted; if they hold less than the target the pass is redone over all
     * bins. Most of the vocabulary then costs a load and a compare, not a shared-memory atomic. */
    int lo = 0x38;
    for (int shift = 24; shift >= stop_shift; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) {
            hist_f[i] = 0.0f;
            hist_u[i] = 0;
        }
        __syncthreads();
        const unsigned lo_bin = shift == 24 ? (unsigned)lo : 0u;
        /* SAMP_U4 x 4 elements a thread loaded before any is used; q steps wholly past V skipped (short
         * lists: the top-k split's; the condition is block-uniform) */
        const bool vec = vec_ok(e, V);
        for (int j0 = 0; j0 < V; j0 += 4 * blockDim.x * SAMP_U4) {
            float4 v[SAMP_U4];
#pragma unroll
            for (int q = 0; q < SAMP_U4; q++)
                v[q] = j0 + 4 * q * (int)blockDim.x < V ? ld4(e, j0 + 4 * (q * blockDim.x + threadIdx.x), V, vec)
                                                        : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
            for (int q = 0; q < SAMP_U4; q++) {
                if (j0 + 4 * q * (int)blockDim.x >= V) continue;
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int i = j0 + 4 * (q * blockDim.x + threadIdx.x) + c;
                    const float x = f4_at(v[q], c);
                    const uint32_t k = key_of(x);
                    const unsigned bin = (k >> shift) & 255u;
                    hist_add(i < V && (k & mask) == prefix && bin >= lo_bin, bin, x, by_mass, hist_f, hist_u);
                }
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            /* the first bin from the top whose running weight reaches the target, by warp 0: lane L
             * holds bins 255 - 8L .. 248 - 8L, the lanes' sums are scanned, and the lane where the
             * target falls walks its 8 bins (a thread walking all 256 took ~5 us a pass). Bins under
             * lo_bin are empty (not counted). */
            const int ln = threadIdx.x;
            float h[8], sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int d = 255 - 8 * ln - j;
                h[j] = by_mass ? hist_f[d] : (float)hist_u[d];
                sum += h[j];
            }
            const float inc = warp_incl_scan(sum, ln);
            float exc = __shfl_up_sync(0xffffffffu, inc, 1);
            if (ln == 0) exc = 0.0f;
            const unsigned hit = __ballot_sync(0xffffffffu, above + inc >= target);
            if (!hit) {
                if (ln == 0) {
                    sel[0] = lo_bin > 0 ? -2 : -1; /* -2: the window held too few, redo this byte over all bins */
                    hist_f[256] = 0.0f;
                }
            } else if (ln == __ffs(hit) - 1) {
                float a = above + exc;
                int d = 255 - 8 * ln - 7; /* rounding left the target past this lane's bins: its last one */
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    if (a + h[j] >= target) {
                        d = 255 - 8 * ln - j;
                        break;
                    }
                    if (j < 7) a += h[j];
                }
                sel[0] = d;
                hist_f[256] = a;
            }
        }
        __syncthreads();
        const int d = sel[0];
        above = hist_f[256];
        __syncthreads();
        if (d == -2) {
            lo = 0;
            shift += 8;
            continue;
        }
        if (d < 0) return prefix;
        prefix |= (uint32_t)d << shift;
        mask |= 0xffu << shift;
    }
    return prefix;
}

/* radix_threshold by mass over a short list (n <= blockDim.x weights e): the largest key v of the list with
 * weight(key >= v) >= target (0 if none), as the radix descent defines it. Thread i sums the weights of keys
 * >= its own in index order (n steps): no histogram passes and their barriers. */
__device__ uint32_t list_mass_threshold(const float *e, int n, float target, int *sel) {
    if (threadIdx.x == 0) sel[0] = 0;
    __syncthreads();
    if ((int)threadIdx.x < n) {
        const uint32_t k = key_of(e[threadIdx.x]);
        float incl = 0.0f;
        for (int j = 0; j < n; j++) {
            const float w = e[j];
            if (key_of(w) >= k) incl += w;
        }
        if (incl >= target) atomicMax(reinterpret_cast<unsigned *>(&sel[0]), k);
    }
    __syncthreads();
    const uint32_t t = (uint32_t)sel[0];
    __syncthreads();
    return t;
}

/* inclusive and exclusive block-wide prefix sums of v (one value a thread, in thread order) and the
 * total. Inside a warp, excl of a lane is exactly incl of the lane before it; across warps float
 * rounding may leave a gap or an overlap of an ulp, so the callers break ties by the lowest index.
 * scan: SAMP_T / 32 floats, tot: one float of shared memory. */
__device__ __forceinline__ void block_scan(float v, float &excl, float &incl, float &total, float *scan, float *tot) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const float w = warp_incl_scan(v, lane);
    float prev = __shfl_up_sync(0xffffffffu, w, 1);
    if (lane == 0) prev = 0.0f;
    __syncthreads();
    if (lane == 31) scan[warp] = w;
    __syncthreads();
    if (warp == 0) {
        const float c = warp_incl_scan(lane < nw ? scan[lane] : 0.0f, lane);
        if (lane < nw) scan[lane] = c; /* inclusive over warps */
        if (lane == 31) *tot = c;
    }
    __syncthreads();
    const float off = warp ? scan[warp - 1] : 0.0f;
    excl = off + prev;
    incl = off + w;
    total = *tot;
    __syncthreads();
}

/* the draw over a list of n <= blockDim.x weights (thread j has e[j], weight 0 when not kept) in index
 * order: the first kept j whose running sum passes u * total (lk_sample.c's rule); the last kept one if
 * rounding left the target past the end; -1 if nothing is kept */
__device__ __forceinline__ int draw_list(float v, bool kept, float u, float *scan, float *tot, int *sel) {
    float excl, incl, total;
    block_scan(kept ? v : 0.0f, excl, incl, total, scan, tot);
    const float target = u * total;
    if (threadIdx.x == 0) {
        sel[0] = INT_MAX;
        sel[1] = -1;
    }
    __syncthreads();
    if (kept && excl <= target && target < incl) atomicMin(&sel[0], (int)threadIdx.x);
    if (kept) atomicMax(&sel[1], (int)threadIdx.x);
    __syncthreads();
    const int r = sel[0] != INT_MAX ? sel[0] : sel[1];
    __syncthreads();
    return r;
}

/* tokens of each warp's contiguous segment when nw warps split V: a multiple of 128 (a step of 4 a lane) */
__device__ __forceinline__ int warp_segment(int V, int nw) { return (((V + nw - 1) / nw) + 127) & ~127; }

/* fn(i, l[i]) for each token of [start, end), one warp's segment (start a multiple of 4): 128 tokens a step,
 * 4 a lane, SAMP_U4 16-byte loads a lane in flight (coalesced) */
template <class Fn>
__device__ __forceinline__ void warp_segment_each(const float *l, int start, int end, bool vec, Fn fn) {
    const int lane = threadIdx.x & 31;
    for (int b0 = start; b0 < end; b0 += 128 * SAMP_U4) {
        float4 v[SAMP_U4];
#pragma unroll
        for (int q = 0; q < SAMP_U4; q++) v[q] = ld4(l, b0 + 128 * q + 4 * lane, end, vec);
#pragma unroll
        for (int q = 0; q < SAMP_U4; q++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int i = b0 + 128 * q + 4 * lane + c;
                if (i < end) fn(i, f4_at(v[q], c));
            }
    }
}

/* the draw over tokens [s0, s1) of a row (s0 a multiple of 4): the first kept token whose running weight
 * (index order) passes the target, u x the range's kept weight, or `fixed` when >= 0. wt(x, kept) gives a
 * loaded value's weight and whether it is kept. A warp per contiguous segment (coalesced), the segments'
 * weights scanned across warps, then the whole block resolves the segment holding the target: ceil(seg /
 * blockDim.x) consecutive tokens a thread, scanned. Where rounding leaves the target past every kept token of
 * that segment (or of all), its (their) last kept token. Returns -1 when nothing is kept. Every thread calls
 * it. scan: 32 floats, tot: one float, sel: one int, cnt: 33 ints of shared memory. */
template <class Wt>
__device__ int draw_range(const float *l, int s0, int s1, bool vec, Wt wt, float u, float fixed, float *scan,
                          float *tot, int *sel, int *cnt) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    const int seg = warp_segment(s1 - s0, nw);
    const int start = s0 + warp * seg, end = min(s1, start + seg);
    float mine = 0.0f;
    int last = -1;
    warp_segment_each(l, start, end, vec, [&](int i, float x) {
        bool kept;
        const float w = wt(x, kept);
        if (kept) {
            mine += w;
            last = i;
        }
    });
    mine = lk_warp_sum(mine);
    for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
    if (tid == 0) {
        sel[0] = INT_MAX;
        cnt[32] = 32; /* the segment holding the target: none yet */
    }
    if (lane == 0) cnt[warp] = last;
    /* one value a warp into block_scan: lane 0 of each warp carries its segment's weight */
    float excl, incl, total;
    block_scan(lane == 0 ? mine : 0.0f, excl, incl, total, scan, tot);
    excl = __shfl_sync(0xffffffffu, excl, 0);
    const float target = fixed >= 0.0f ? fixed : u * total;
    if (lane == 0 && mine > 0.0f && excl <= target && target < excl + mine) atomicMin(&cnt[32], warp);
    __syncthreads();
    const int ws = cnt[32];
    if (ws < nw) { /* block-uniform */
        const float off = ws ? scan[ws - 1] : 0.0f;
        const int PT = (seg + (int)blockDim.x - 1) / (int)blockDim.x, r0 = s0 + ws * seg;
        const int r1 = min(s1, r0 + seg), t0 = r0 + tid * PT, t1 = min(r1, t0 + PT);
        float w = 0.0f;
        for (int i = t0; i < t1; i++) {
            bool kept;
            const float e = wt(l[i], kept);
            if (kept) w += e;
        }
        float ex, in, tt;
        block_scan(w, ex, in, tt, scan, tot);
        if (w > 0.0f && off + ex <= target && target < off + in) {
            float cum = off + ex;
            for (int i = t0; i < t1; i++) {
                bool kept;
                const float e = wt(l[i], kept);
                if (!kept) continue;
                cum += e;
                if (cum > target) {
                    atomicMin(&sel[0], i);
                    break;
                }
            }
        }
        __syncthreads();
    }
    int token = sel[0];
    if (token == INT_MAX) {
        if (ws < nw && cnt[ws] >= 0) { /* rounding: the segment's last kept token */
            token = cnt[ws];
        } else { /* rounding left the target past every kept token: the last kept one */
            token = -1;
            for (int w = 0; w < nw; w++) token = max(token, cnt[w]);
        }
    }
    __syncthreads();
    return token;
}

/* the top-k path's candidates: every i with key >= thr, in index order, into ce / ci (a warp per
 * contiguous segment, 128 tokens a step, 4 a lane: count, offsets, then write). Returns their number,
 * or -1 above SAMP_CAND. */
__device__ int gather_candidates(const float *l, int V, uint32_t thr, float *ce, int *ci, int *cnt) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int seg = warp_segment(V, nw);
    const int start = warp * seg, end = min(V, start + seg);
    const bool vec = vec_ok(l, V);
    int n = 0;
    warp_segment_each(l, start, end, vec, [&](int, float x) { n += key_of(x) >= thr; });
    n = (int)lk_warp_sum((float)n); /* exact: n <= 4 x seg, far below 2^24 */
    if (lane == 0) cnt[warp] = n;
    __syncthreads();
    if (threadIdx.x == 0) {
        int o = 0;
        for (int w = 0; w < nw; w++) {
            const int c = cnt[w];
            cnt[w] = o;
            o += c;
        }
        cnt[nw] = o;
    }
    __syncthreads();
    const int total = cnt[nw];
    if (total > SAMP_CAND) {
        __syncthreads();
        return -1;
    }
    int off = cnt[warp];
    for (int b0 = start; b0 < end; b0 += 128 * SAMP_U4) {
        float4 v[SAMP_U4];
#pragma unroll
        for (int q = 0; q < SAMP_U4; q++) v[q] = ld4(l, b0 + 128 * q + 4 * lane, end, vec);
#pragma unroll
        for (int q = 0; q < SAMP_U4; q++) {
            const int i0 = b0 + 128 * q + 4 * lane;
            bool f[4];
            int mine = 0;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                f[c] = i0 + c < end && key_of(f4_at(v[q], c)) >= thr;
                mine += f[c];
            }
            /* this lane's place among the step's kept tokens: the kept ones of the lanes before it */
            const int incl = warp_incl_scan(mine, lane);
            int at = off + incl - mine;
#pragma unroll
            for (int c = 0; c < 4; c++)
                if (f[c]) {
                    ce[at] = f4_at(v[q], c);
                    ci[at] = i0 + c;
                    at++;
                }
            off += __shfl_sync(0xffffffffu, incl, 31);
        }
    }
    __syncthreads();
    return total;
}

/* argmax keys: largest value, then lowest index, as one unsigned 64-bit number (0: no candidate). The value's
 * bits map to an unsigned order (negatives flipped); -0 counts as +0, as the comparisons do */
__device__ __forceinline__ unsigned long long argmax_key(float v, int i) {
    if (v == -INFINITY) return 0ull; /* (the argmax keeps only values above -inf) */
    const uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
    const uint32_t o = (u >> 31) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)o << 32) | (0xffffffffu - (uint32_t)i);
}

__device__ __forceinline__ void argmax_unkey(unsigned long long k, float &v, int &i) {
    if (!k) {
        v = -INFINITY;
        i = 0;
        return;
    }
    const uint32_t o = (uint32_t)(k >> 32);
    v = __uint_as_float((o >> 31) ? (o & 0x7fffffffu) : ~o);
    i = (int)(0xffffffffu - (uint32_t)k);
}

/* a logit's bits as an unsigned key in the logits' order (negatives flipped): radix_threshold over these
 * keys (stored as floats' bits) selects by logit */
__device__ __forceinline__ uint32_t okey(float x) {
    const uint32_t u = __float_as_uint(x);
    return (u >> 31) ? ~u : (u | 0x80000000u);
}

/* the top-k list from a window of weights wv / ids wi (n of them, holding every weight of key >= thr): the
 * kept ones (key >= thr) into ce / ci in index order (each one's rank among the kept ids; ids are distinct).
 * Returns their number, or -1 above SAMP_CAND. nwin: a shared counter. Every thread calls it. */
__device__ int window_kept(const float *wv, const int *wi, int n, uint32_t thr, float *ce, int *ci, int *nwin) {
    const int tid = threadIdx.x;
    if (tid == 0) *nwin = 0;
    __syncthreads();
    for (int t0 = 0; t0 < n; t0 += blockDim.x) { /* the kept ones, unordered */
        const int t = t0 + tid;
        const bool f = t < n && key_of(wv[t]) >= thr;
        warp_append(f, nwin, [&](int at) {
            if (f && at < SAMP_CAND) {
                ce[at] = wv[t];
                ci[at] = wi[t];
            }
        });
    }
    __syncthreads();
    const int k = *nwin;
    __syncthreads();
    if (k > SAMP_CAND) return -1;
    float myv = 0.0f;
    int myi = 0, r = 0;
    if (tid < k) {
        myv = ce[tid];
        myi = ci[tid];
        for (int m = 0; m < k; m++) r += ci[m] < myi;
    }
    __syncthreads();
    if (tid < k) {
        ce[r] = myv;
        ci[r] = myi;
    }
    __syncthreads();
    return k;
}

/* ---- the sampler split: a row's G blocks each hand on what the row's last block needs ----
 * Where a row has several blocks (they share the penalty and the argmax pass), they also do the work that
 * would otherwise take the last block passes over the whole vocabulary:
 * - SPLIT_TOPK (top-k <= LK_SAMP_BCAND / 2): each block's top-k candidates; the last block ranks them.
 * - SPLIT_TOPP (top-p without top-k): LK_SAMP_BCAND / 2 candidates a block and the slice's mass; the last
 *   block takes the nucleus from the candidates when they hold it.
 * - SPLIT_TEMP (temperature alone): the slice's mass; the last block finds the slice the draw lands in and
 *   draws within it.
 * Anything a split path cannot settle goes the one-block way (the exp pass over the vocabulary). */
enum { SPLIT_NONE = 0, SPLIT_TOPK = 1, SPLIT_TOPP = 2, SPLIT_TEMP = 3 };

/* logits a block of a row's G takes: block y has [y span, (y + 1) span) of the row, clipped to V (whole words of
 * the seen bitmap, whole float4s) */
__device__ __forceinline__ int split_span(int V, int G) { return ((V + G - 1) / G + 31) & ~31; }

/* Block j (row * G + y) of a split, over its slice [s0, s1):
 * - with kc > 0, hands on every token at or above t, the kc-th largest of its threads' maxima (tmax: this
 *   thread's largest logit of the slice) to its first two bytes, except -inf. The kc maxima at or above t are
 *   kc tokens of the slice, so the slice's own top kc are all handed on (or are -inf), and every token left
 *   out is below all of those handed on (or -inf). With them go their number and the largest logit left out
 *   (NaN: none);
 * - with temperature > 0, the slice's mass: the sum of exp((l - mloc) / T), mloc the slice's largest logit,
 *   and the candidates' share of it.
 * The number is -1 where the candidates overflow LK_SAMP_BCAND or the slice holds a NaN (0 when kc = 0).
 * keys: SAMP_T floats of shared memory; red: 32 floats. */
static_assert(LK_SAMP_BCAND == 4 * 32, "split_gather loads a block's candidates as 4 a lane of one warp");
__device__ void split_candidates(const float *l, int s0, int s1, bool vec, float tmax, int kc, float mloc,
                                 float temperature, int j, const lk_samp_scratch &sc, float *keys, float *hist_f,
                                 unsigned *hist_u, int *sel, int *nwin, float *red) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    uint32_t t = 0xffffffffu;
    if (kc > 0) { /* (block-uniform) */
        keys[tid] = __uint_as_float(okey(tmax)); /* (radix_threshold's first barrier makes these visible) */
        t = radix_threshold(keys, blockDim.x, (float)kc, false, hist_f, hist_u, sel, 16);
    }
    if (tid == 0) *nwin = 0;
    __syncthreads();
    float *cv = sc.cand_v + (size_t)j * LK_SAMP_BCAND;
    int *cix = sc.cand_i + (size_t)j * LK_SAMP_BCAND;
    const bool want_mass = temperature > 0.0f && mloc > -INFINITY;
    float lo = -INFINITY, mass = 0.0f, cmass = 0.0f;
    bool left = false, nan = false;
    for (int u0 = s0 / 4 + warp * 32; 4 * u0 < s1; u0 += blockDim.x) { /* warp-uniform, as warp_append needs */
        const int i0 = 4 * (u0 + lane);
        const float4 v = ld4(l, i0, s1, vec);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const int i = i0 + c;
            const float x = f4_at(v, c);
            const bool in = i < s1;
            const bool f = kc > 0 && in && x != -INFINITY && okey(x) >= t; /* (-inf: weight 0, never needed) */
            if (in && !f) {
                left = true;
                lo = fmaxf(lo, x);
            }
            nan |= in && x != x;
            if (want_mass && in) {
                const float e = __expf((x - mloc) / temperature);
                mass += e;
                if (f) cmass += e;
            }
            if (kc > 0)
                warp_append(f, nwin, [&](int at) {
                    if (f && at < LK_SAMP_BCAND) {
                        cv[at] = x;
                        cix[at] = i;
                    }
                });
        }
    }
    __threadfence(); /* the candidates before the arrival count that the row's last block reads after */
    left = __syncthreads_or(left);
    nan = __syncthreads_or(nan);
    if (temperature > 0.0f) { /* (block-uniform) */
        mass = lk_block_sum(mass, red);
        __syncthreads();
        cmass = lk_block_sum(cmass, red);
        __syncthreads();
    }
    lo = lk_warp_max(lo);
    if (lane == 0) red[warp] = lo;
    __syncthreads();
    if (warp == 0) {
        lo = lk_warp_max(lane < (int)(blockDim.x >> 5) ? red[lane] : -INFINITY);
        if (lane == 0) {
            const int n = *nwin;
            sc.cand_n[j] = nan || n > LK_SAMP_BCAND ? -1 : n;
            sc.cand_lo[j] = left ? lo : __int_as_float(0x7fc00000);
            sc.cand_s[j] = mass;
            sc.cand_c[j] = cmass;
        }
    }
    __syncthreads();
}

/* The row's last block: the G blocks' candidates as weights exp((l - best) / T) (as the pass over the
 * vocabulary computes them) into the window wv / wi (block y's from cnt[y] on), their largest logits left
 * out into lo_s. Returns how many, or -1 (a count of -1, best not finite). cnt: 33 ints, lo_s: 32 floats of
 * shared memory. */
__device__ int split_gather(int b, int G, float best, const lk_samp_params &p, const lk_samp_scratch &sc, float *wv,
                            int *wi, int *cnt, float *lo_s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, j0 = b * G;
    if (warp == 0) {
        const int c = lane < G ? __ldcg(&sc.cand_n[j0 + lane]) : 0;
        const float lo = lane < G ? __ldcg(&sc.cand_lo[j0 + lane]) : __int_as_float(0x7fc00000);
        const bool bad = __any_sync(0xffffffffu, c < 0);
        const int inc = warp_incl_scan(c, lane);
        cnt[lane] = inc - c; /* block lane's first place in the window */
        lo_s[lane] = lo;
        if (lane == 31) cnt[32] = bad || !isfinite(best) ? -1 : inc;
    }
    __syncthreads();
    const int n = cnt[32];
    if (n < 0) return -1; /* (block-uniform) */
    if (warp < G) {
        const int o = cnt[warp], c = (warp + 1 < G ? cnt[warp + 1] : n) - o;
        const float *cv = sc.cand_v + (size_t)(j0 + warp) * LK_SAMP_BCAND;
        const int *cix = sc.cand_i + (size_t)(j0 + warp) * LK_SAMP_BCAND;
        float v[4];
        int id[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int e = lane + 32 * q;
            v[q] = e < c ? __ldcg(cv + e) : 0.0f;
            id[q] = e < c ? __ldcg(cix + e) : 0;
        }
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int e = lane + 32 * q;
            if (e < c) {
                wv[o + e] = __expf((v[q] - best) / p.temperature);
                wi[o + e] = id[q];
            }
        }
    }
    __syncthreads();
    return n;
}

/* whether every logit the blocks left out weighs less than key thr: those of block y are at most its largest
 * one left out (lo_s[y]), whose weight is then the most any of them has (the weight never falls as the logit
 * rises). Every thread calls it. */
__device__ bool split_left_below(int G, float best, float temperature, const float *lo_s, uint32_t thr) {
    bool miss = false;
    if ((int)threadIdx.x < G) {
        const float lo = lo_s[threadIdx.x];
        if (lo == lo) miss = key_of(__expf((lo - best) / temperature)) >= thr;
    }
    return !__syncthreads_or(miss);
}

/* SPLIT_TOPK in the last block: the candidates' top-k threshold thr and the kept list in ce / ci
 * (window_kept). The list is the vocabulary's when every logit left out weighs less than thr. Returns the
 * list's length, or -1 (split_gather's -1, a weight left out at or above thr, over SAMP_CAND kept): the caller
 * then takes the one-block path. */
__device__ int split_topk(int b, int G, float best, const lk_samp_params &p, const lk_samp_scratch &sc, float *wv,
                          int *wi, float *ce, int *ci, float *hist_f, unsigned *hist_u, int *sel, int *cnt, float *lo_s,
                          int *nwin, uint32_t &thr) {
    const int n = split_gather(b, G, best, p, sc, wv, wi, cnt, lo_s);
    if (n < p.top_k) return -1; /* block-uniform; -1 included */
    thr = radix_threshold(wv, n, (float)p.top_k, false, hist_f, hist_u, sel);
    if (!split_left_below(G, best, p.temperature, lo_s, thr)) return -1;
    return window_kept(wv, wi, n, thr, ce, ci, nwin);
}

/* the row's mass sum_y mass_y exp((m_y - best) / T) (m_y: block y's largest logit, from its argmax key),
 * into every lane of every warp alike (the same lanes summed in the same order); mass: this lane's block's
 * share (0 past G); cand_total (if given): the candidates' mass alike */
__device__ float split_total(int b, int G, float best, float temperature, const lk_samp_scratch &sc, float &mass,
                             float *cand_total = nullptr) {
    const int lane = threadIdx.x & 31, j0 = b * G;
    float cmass = 0.0f;
    mass = 0.0f;
    if (lane < G) {
        float m;
        int i;
        argmax_unkey(__ldcg(&sc.keys[j0 + lane]), m, i);
        const float s = __ldcg(&sc.cand_s[j0 + lane]);
        if (s > 0.0f && m > -INFINITY) {
            const float r = __expf((m - best) / temperature);
            mass = s * r;
            if (cand_total) cmass = __ldcg(&sc.cand_c[j0 + lane]) * r;
        }
    }
    if (cand_total) *cand_total = lk_warp_sum(cmass);
    return lk_warp_sum(mass);
}

/* SPLIT_TOPP in the last block: the nucleus from the candidates. thr: the largest candidate key whose
 * candidates at or above it weigh top_p x the row's mass (split_total) or more; when every logit left out
 * weighs less than thr, the candidates at or above it are the vocabulary's nucleus (by the row's mass as
 * summed here; the one-block path sums the weights in another order, so a draw may differ by rounding at a
 * boundary). The nucleus goes to ce / ci (window_kept). Returns its length, or -1 (as split_topk, or
 * candidates lighter than the target). */
__device__ int split_topp(int b, int G, float best, const lk_samp_params &p, const lk_samp_scratch &sc, float *wv,
                          int *wi, float *ce, int *ci, float *hist_f, unsigned *hist_u, int *sel, int *cnt, float *lo_s,
                          int *nwin, uint32_t &thr) {
    /* first, from the blocks' sums alone: candidates that clearly weigh less than the target (a flat row,
     * whose nucleus is most of the vocabulary) go the one-block way at once */
    float mass, cand;
    const float total = split_total(b, G, best, p.temperature, sc, mass, &cand);
    if (!(total > 0.0f) || !isfinite(total) || cand < 0.999f * p.top_p * total) return -1; /* (block-uniform) */
    const int n = split_gather(b, G, best, p, sc, wv, wi, cnt, lo_s);
    if (n <= 0) return -1;
    thr = radix_threshold(wv, n, p.top_p * total, true, hist_f, hist_u, sel);
    if (thr == 0 || !split_left_below(G, best, p.temperature, lo_s, thr)) return -1;
    return window_kept(wv, wi, n, thr, ce, ci, nwin);
}

/* SPLIT_TEMP in the last block (temperature alone): the slice whose running mass (split_total, in slice
 * order) passes u x the row's mass, then within it the first token whose running weight passes what is left
 * (each thread a run of consecutive tokens, scanned); the slice's last token of weight > 0 where rounding
 * left the target past it. Returns the token, or -1 (a NaN, no mass): the caller takes the one-block path.
 * scan: SAMP_T / 32 floats, tot: one float, sel: two ints of shared memory. */
__device__ int split_temp(int b, int G, int V, const float *l, float best, float u, const lk_samp_params &p,
                          const lk_samp_scratch &sc, float *scan, float *tot, int *sel, int *cnt) {
    const unsigned full = 0xffffffffu;
    const int lane = threadIdx.x & 31, j0 = b * G;
    float mass;
    split_total(b, G, best, p.temperature, sc, mass);
    const bool bad = __any_sync(full, lane < G && __ldcg(&sc.cand_n[j0 + lane]) < 0);
    const float inc = warp_incl_scan(mass, lane), total = __shfl_sync(full, inc, 31);
    if (bad || !isfinite(best) || !(total > 0.0f) || !isfinite(total)) return -1; /* (block-uniform) */
    const float target = u * total;
    const unsigned hit = __ballot_sync(full, mass > 0.0f && target < inc), some = __ballot_sync(full, mass > 0.0f);
    const int y = hit ? __ffs(hit) - 1 : 31 - __clz(some);
    const float rest = fmaxf(0.0f, target - __shfl_sync(full, inc - mass, y));
    const int span = split_span(V, G), s0 = min(V, y * span), s1 = min(V, s0 + span);
    const float T = p.temperature;
    return draw_range(
        l, s0, s1, vec_ok(l, V),
        [&](float x, bool &kept) {
            const float e = __expf((x - best) / T);
            kept = e > 0.0f;
            return e;
        },
        0.0f, rest, scan, tot, sel, cnt);
}

__global__ void __launch_bounds__(SAMP_T) k_sample(float *__restrict__ logits, int V, const lk_samp_params *__restrict__ P,
                                                   uint32_t *__restrict__ seen, int seen_words, int *tok, int *slot,
                                                   int *pos, lk_samp_scratch sc) {
    /* before the wait, what no kernel of this step writes (the parameters, the row's position and token count:
     * set before the step, or by this kernel a step earlier, which finished before the kernel before this one
     * started): the tail of the kernel then has no round trip but the logits' */
    const int b = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const lk_samp_params p = *P;
    const int pos0 = pos[b], count0 = sc.host_tok && tid == 0 ? sc.host_count[b] : 0;
    lk_pdl_prologue();
    __shared__ float hist_f[257];
    __shared__ unsigned hist_u[256];
    __shared__ int sel[2];
    __shared__ float redf[32];
    __shared__ int redi[32];
    __shared__ float scan[SAMP_T / 32];
    __shared__ float ce[SAMP_CAND]; /* top-k candidates: weights and token ids */
    __shared__ int ci[SAMP_CAND];
    __shared__ int cnt[SAMP_T / 32 + 1];
    __shared__ float wv[SAMP_WIN]; /* the top-k window: weights and token ids */
    __shared__ int wi[SAMP_WIN];
    __shared__ int nwin;
    float *l = logits + (size_t)b * V;
    uint32_t *sn = seen + (size_t)b * seen_words;
    /* gridDim.y blocks a row share the penalty and the argmax: block y takes logits [s0, s1) (whole words
     * of the seen bitmap, whole float4s); the last of them to finish goes on with the row alone */
    const int G = gridDim.y;
    int s0 = 0, s1 = V;
    if (G > 1) {
        const int span = split_span(V, G);
        s0 = min(V, (int)blockIdx.y * span);
        s1 = min(V, s0 + span);
    }
    if (p.repetition_penalty != 1.0f) {
        for (int w = (s0 >> 5) + tid; w < min(seen_words, (s1 + 31) >> 5); w += SAMP_T) {
            uint32_t bits = sn[w];
            while (bits) {
                int k = __ffs(bits) - 1;
                bits &= bits - 1;
                int i = w * 32 + k;
                if (i < V) l[i] = l[i] > 0.0f ? l[i] / p.repetition_penalty : l[i] * p.repetition_penalty;
            }
        }
        __syncthreads();
    }
    /* argmax, lowest id on ties */
    float best = -INFINITY;
    int bi = INT_MAX;
    if ((V & 3) == 0) { /* 16-byte loads, several in flight: this pass is all greedy decoding costs */
        const float4 *l4 = reinterpret_cast<const float4 *>(l);
#pragma unroll 4
        for (int i = s0 / 4 + tid; i < s1 / 4; i += SAMP_T) {
            const float4 v = l4[i];
            const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int k = 0; k < 4; k++)
                if (e[k] > best || (e[k] == best && 4 * i + k < bi)) {
                    best = e[k];
                    bi = 4 * i + k;
                }
        }
    } else {
        for (int i = s0 + tid; i < s1; i += SAMP_T) {
            float v = l[i];
            if (v > best || (v == best && i < bi)) {
                best = v;
                bi = i;
            }
        }
    }
    const float tmax = best; /* this thread's largest logit of the slice (the top-k split's sample) */
    warp_argmax(best, bi);
    if (lane == 0) {
        redf[warp] = best;
        redi[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        best = lane < SAMP_T / 32 ? redf[lane] : -INFINITY;
        bi = lane < SAMP_T / 32 ? redi[lane] : INT_MAX;
        warp_argmax(best, bi);
        if (lane == 0) {
            redf[0] = best;
            redi[0] = bi == INT_MAX ? 0 : bi;
        }
    }
    __syncthreads();
    /* the sampler split (block-uniform): what each block of the row hands on to the last one */
    const bool has_topk = p.top_k > 0 && p.top_k < V;
    int split = SPLIT_NONE;
    if (G > 1 && G <= 32 && sc.cand_v && p.temperature > 0.0f) {
        if (has_topk && p.top_k <= LK_SAMP_BCAND / 2) split = SPLIT_TOPK;
        else if (!has_topk) split = p.top_p < 1.0f ? SPLIT_TOPP : SPLIT_TEMP;
    }
    if (G > 1) {
        if (split != SPLIT_NONE)
            split_candidates(l, s0, s1, vec_ok(l, V), tmax,
                             split == SPLIT_TOPK ? p.top_k : split == SPLIT_TOPP ? LK_SAMP_BCAND / 2 : 0, redf[0],
                             split == SPLIT_TOPK ? 0.0f : p.temperature, b * G + blockIdx.y, sc, wv, hist_f, hist_u,
                             sel, &nwin, scan);
        /* this block's argmax out; the last block of the row (threadfence, then an arrival count) takes the
         * row's from all of them and resets the count for the next step */
        if (tid == 0) {
            sc.keys[b * G + blockIdx.y] = argmax_key(redf[0], redi[0]);
            __threadfence();
            sel[0] = atomicAdd(&sc.arrive[b], 1) == G - 1;
        }
        __syncthreads();
        if (!sel[0]) return;
        __threadfence();
        if (warp == 0) {
            unsigned long long k = 0;
            for (int y = lane; y < G; y += 32) {
                const unsigned long long ky = __ldcg(&sc.keys[b * G + y]);
                k = ky > k ? ky : k;
            }
            for (int o = 16; o > 0; o >>= 1) {
                const unsigned long long ko = __shfl_xor_sync(0xffffffffu, k, o);
                k = ko > k ? ko : k;
            }
            if (lane == 0) {
                argmax_unkey(k, redf[0], redi[0]);
                sc.arrive[b] = 0;
            }
        }
        __syncthreads();
    }
    best = redf[0];
    int token = redi[0], path = LK_SAMP_PATH_GREEDY;
    __syncthreads();
    if (p.temperature > 0.0f) {
        const bool want_win = has_topk && p.top_k <= SAMP_CAND;
        const float u = lk_uniform(p.seed, p.seq_id0 + (uint64_t)b, (uint64_t)pos0 + 1);
        uint32_t thr = 0;
        int nc = -1, drawn = -1;
        if (split == SPLIT_TOPK)
            nc = split_topk(b, G, best, p, sc, wv, wi, ce, ci, hist_f, hist_u, sel, cnt, scan, &nwin, thr);
        else if (split == SPLIT_TOPP)
            nc = split_topp(b, G, best, p, sc, wv, wi, ce, ci, hist_f, hist_u, sel, cnt, scan, &nwin, thr);
        else if (split == SPLIT_TEMP)
            drawn = split_temp(b, G, V, l, best, u, p, sc, scan, &hist_f[256], sel, cnt);
        /* the nucleus of SPLIT_TOPP is the list after top-p already */
        const bool nucleus = split == SPLIT_TOPP && nc >= 0;
        path = nc >= 0 || drawn >= 0 ? LK_SAMP_PATH_SPLIT : LK_SAMP_PATH_WINDOW;
        if (drawn >= 0) token = drawn;
        if (nc < 0 && drawn < 0) { /* (block-uniform) */
            if (tid == 0) nwin = 0;
            __syncthreads();
            {
                /* weights exp((l - max) / T), and (top-k <= SAMP_CAND) the window: every weight whose key's
                 * first byte is >= SAMP_WIN_KEY (>= 2^-15 of the largest) with its token id, unordered */
                const bool vec = vec_ok(l, V);
                for (int j0 = 0; j0 < V; j0 += 4 * SAMP_T * SAMP_U4) {
                    float4 v[SAMP_U4];
#pragma unroll
                    for (int q = 0; q < SAMP_U4; q++) v[q] = ld4(l, j0 + 4 * (q * SAMP_T + tid), V, vec);
#pragma unroll
                    for (int q = 0; q < SAMP_U4; q++) {
                        const int i = j0 + 4 * (q * SAMP_T + tid);
                        float4 w;
                        w.x = __expf((v[q].x - best) / p.temperature);
                        w.y = __expf((v[q].y - best) / p.temperature);
                        w.z = __expf((v[q].z - best) / p.temperature);
                        w.w = __expf((v[q].w - best) / p.temperature);
                        if (vec && i < V) {
                            *reinterpret_cast<float4 *>(l + i) = w;
                        } else {
#pragma unroll
                            for (int c = 0; c < 4; c++)
                                if (i + c < V) l[i + c] = f4_at(w, c);
                        }
                        /* (a warp reads nwin in one access: the branch is warp-uniform) */
                        if (want_win && *(volatile int *)&nwin <= SAMP_WIN) {
#pragma unroll
                            for (int c = 0; c < 4; c++) {
                                const float x = f4_at(w, c);
                                const bool f = i + c < V && key_of(x) >= SAMP_WIN_KEY;
                                warp_append(f, &nwin, [&](int at) {
                                    if (f && at < SAMP_WIN) {
                                        wv[at] = x;
                                        wi[at] = i + c;
                                    }
                                });
                            }
                        }
                    }
                }
            }
            __syncthreads();
            /* top-k path (k <= SAMP_CAND, Llama's default 50): the kept tokens, in index order, one a
             * thread; top-p and the draw on that list instead of over the vocabulary. Same rule as
             * lk_sample.c: a top-p threshold above thr is a key of the list (the weight above any key
             * >= thr is the list's), and the list's running sum in index order is the vocabulary's.
             * When the window holds k to SAMP_WIN weights, the k-th key is in it, so the count and the
             * list come from the window in shared memory (no further pass over the vocabulary); else
             * from the vocabulary. */
            const int nw_all = nwin;
            if (want_win && nw_all >= p.top_k && nw_all <= SAMP_WIN) {
                thr = radix_threshold(wv, nw_all, (float)p.top_k, false, hist_f, hist_u, sel);
                nc = window_kept(wv, wi, nw_all, thr, ce, ci, &nwin);
            }
            if (nc < 0) {
                if (has_topk) thr = radix_threshold(l, V, (float)p.top_k, false, hist_f, hist_u, sel);
                nc = want_win ? gather_candidates(l, V, thr, ce, ci, cnt) : -1;
                path = nc >= 0 ? LK_SAMP_PATH_LIST : LK_SAMP_PATH_VOCAB;
            }
        }
        if (drawn >= 0) {
            /* (SPLIT_TEMP drew the token) */
        } else if (nc >= 0) {
            const float v = tid < nc ? ce[tid] : 0.0f;
            uint32_t t2 = thr;
            if (p.top_p < 1.0f && !nucleus) {
                const float kept = lk_block_sum(v, redf);
                __syncthreads();
                const float target = p.top_p * kept;
                const uint32_t tp = nc <= SAMP_LIST_SHORT ? list_mass_threshold(ce, nc, target, sel)
                                                          : radix_threshold(ce, nc, target, true, hist_f, hist_u, sel);
                t2 = tp > thr ? tp : thr;
            }
            const int j = draw_list(v, tid < nc && key_of(v) >= t2, u, scan, &hist_f[256], sel);
            if (j >= 0) token = ci[j];
        } else {
            if (p.top_p < 1.0f) {
                float kept = 0.0f;
                const bool vec = vec_ok(l, V);
                for (int j0 = 0; j0 < V; j0 += 4 * SAMP_T * SAMP_U4) {
                    float4 v[SAMP_U4];
#pragma unroll
                    for (int q = 0; q < SAMP_U4; q++) v[q] = ld4(l, j0 + 4 * (q * SAMP_T + tid), V, vec);
#pragma unroll
                    for (int q = 0; q < SAMP_U4; q++)
#pragma unroll
                        for (int c = 0; c < 4; c++)
                            if (key_of(f4_at(v[q], c)) >= thr) kept += f4_at(v[q], c);
                }
                kept = lk_block_sum(kept, redf);
                __syncthreads();
                uint32_t tp = radix_threshold(l, V, p.top_p * kept, true, hist_f, hist_u, sel);
                thr = tp > thr ? tp : thr;
            }
            /* the draw over the vocabulary (the weights in l; kept: key >= thr) */
            const int t = draw_range(
                l, 0, V, vec_ok(l, V),
                [&](float x, bool &kept) {
                    kept = key_of(x) >= thr;
                    return x;
                },
                u, -1.0f, scan, &hist_f[256], sel, cnt);
            if (t >= 0) token = t;
        }
    }
    if (tid == 0) { /* stores only (the bitmap by a reduction): nothing here waits for memory */
        tok[b] = token;
        slot[b] = b;
        pos[b] = pos0 + 1;
        atomicOr(&sn[token >> 5], 1u << (token & 31));
        if (sc.path) sc.path[b] = path;
        if (sc.host_tok) { /* the token to the host's mapped buffer: slot (count & 1), the count of row b; the
                            * kernel's end makes it visible to the host, whose event follows the step */
            sc.host_tok[(size_t)(count0 & 1) * sc.host_stride + b] = token;
            sc.host_count[b] = count0 + 1;
        }
    }
}

void lk_samp_scratch_place(lk_samp_scratch *s, void *base) {
    const size_t cand = (size_t)LK_SAMP_KEYS * LK_SAMP_BCAND;
    s->cand_v = (float *)base;
    s->cand_i = (int *)(s->cand_v + cand);
    s->cand_n = s->cand_i + cand;
    s->cand_lo = (float *)(s->cand_n + LK_SAMP_KEYS);
    s->cand_s = s->cand_lo + LK_SAMP_KEYS;
    s->cand_c = s->cand_s + LK_SAMP_KEYS; /* ends at base + LK_SAMP_CAND_BYTES */
}

lk_status lk_sample(float *logits, int V, int B, const lk_samp_params *params_dev, uint32_t *seen, int *tok, int *slot,
                    int *pos, const lk_samp_scratch *sc, cudaStream_t st) {
    lk_samp_scratch s = {};
    if (sc) s = *sc;
    /* blocks a row for the penalty and argmax pass: one block alone read 128k logits in ~7 us at batch 1
     * (bound by what one SM has in flight from L2; benchmarks/NOTES.md v57). As many as LK_SAMP_KEYS keys
     * hold, at most 32, each with at least 4,096 logits (a float4 a thread); LLAMA_KERNEL_SAMPLE_SPLIT=0
     * (A/B, read every call) one */
    int G = 1;
    const char *se = getenv("LLAMA_KERNEL_SAMPLE_SPLIT");
    const char *ke = getenv("LLAMA_KERNEL_SAMPLE_TOPK_SPLIT"); /* A/B: 0 turns the split off (all three paths) */
    if (ke && ke[0] == '0') s.cand_v = NULL;
    if (!s.cand_i || !s.cand_n || !s.cand_lo || !s.cand_s || !s.cand_c) s.cand_v = NULL;
    if (s.keys && s.arrive && !(se && se[0] == '0')) {
        G = LK_SAMP_KEYS / (B > 0 ? B : 1);
        if (G > 32) G = 32;
        if (G > V / 4096) G = V / 4096;
        if (G < 1) G = 1;
    }
    LAUNCH("k_sample", k_sample, dim3(B, G), dim3(SAMP_T), 0, st, logits, V, params_dev, seen, (V + 31) / 32, tok, slot,
           pos, s);
    return LK_OK;
}

__global__ void k_seen_set(uint32_t *seen, int words, const int *t, const int *row, int n, int V) {
    lk_pdl_prologue();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && t[i] >= 0 && t[i] < V) atomicOr(&seen[(size_t)row[i] * words + (t[i] >> 5)], 1u << (t[i] & 31));
}

lk_status lk_seen_add(uint32_t *seen, int words, const int *tokens_dev, const int *rows_dev, int n, int V,
                      cudaStream_t st) {
    if (n > 0) {
        LAUNCH("k_seen_set", k_seen_set, dim3((n + 255) / 256), dim3(256), 0, st, seen, words, tokens_dev, rows_dev, n,
               V);
    }
    return LK_OK;
}
