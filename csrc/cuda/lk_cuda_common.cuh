/* lk_cuda_common.cuh: error checking that turns CUDA failures into lk_status
 * (never aborts), and small device helpers shared by the kernels.
 *
 * Every CUDA call goes through CU(...); every launch is followed by
 * LAUNCH_OK(). The message names the call, the file and the line.
 */
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../lk_common.h"

lk_status lk_cuda_fail(cudaError_t e, const char *what, const char *file, int line);
/* lk_cuda_fail for "launch of <name>", where the name may be chosen at run time (LAUNCH) */
lk_status lk_cuda_fail_launch(cudaError_t e, const char *name, const char *file, int line);

#define CU(call)                                                             \
    do {                                                                     \
        cudaError_t e_ = (call);                                             \
        if (e_ != cudaSuccess) return lk_cuda_fail(e_, #call, __FILE__, __LINE__); \
    } while (0)

#define LAUNCH_OK(name)                                                      \
    do {                                                                     \
        cudaError_t e_ = cudaGetLastError();                                 \
        if (e_ != cudaSuccess) return lk_cuda_fail(e_, "launch of " name, __FILE__, __LINE__); \
    } while (0)

/* the int4 layout on the GPU: nibbles permuted within each 32-bit word
 * (positions 0..7 hold elements 0,2,4,6,1,3,5,7) so that one lop3 with
 * 0x000f000f yields the half2 of elements {0,1}, 0x00f000f0 {2,3}, and the
 * same on (word >> 8) {4,5}, {6,7}. lk_q4_interleave() converts on upload. */
__device__ __forceinline__ uint32_t lk_lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(d) : "r"(a), "r"(b), "r"(c)); /* (a & b) | c */
    return d;
}

/* 8 int4 values of one interleaved word -> 4 half2 {q0,q1},{q2,q3},{q4,q5},{q6,q7}, minus the offset Z
 * (0 or 8; exact integers either way): lop3 puts a nibble q into the mantissa of 1024 (low nibbles, 1024 + q)
 * or 1024 + 16 q (high), then one subtraction or one fma takes 1024 + Z, or (1024 + Z) / 16 after the 1/16 */
template <int Z>
__device__ __forceinline__ void lk_dequant8_z(uint32_t w, half2 q[4]) {
    const uint32_t LO = 0x000f000fu, HI = 0x00f000f0u, EX = 0x64006400u;
    const uint32_t SUB = Z ? 0x64086408u : 0x64006400u; /* {1024 + Z, 1024 + Z} */
    const uint32_t MUL = 0x2c002c00u;                    /* {1/16, 1/16} */
    const uint32_t ADD = Z ? 0xd480d480u : 0xd400d400u; /* {-64 - Z, -64 - Z} */
    static_assert(Z == 0 || Z == 8, "offset 0 or 8");
    uint32_t a = lk_lop3_and_or(w, LO, EX), b = lk_lop3_and_or(w, HI, EX);
    uint32_t w8 = w >> 8;
    uint32_t c = lk_lop3_and_or(w8, LO, EX), d = lk_lop3_and_or(w8, HI, EX);
    q[0] = __hsub2(*reinterpret_cast<half2 *>(&a), *reinterpret_cast<const half2 *>(&SUB));
    q[1] = __hfma2(*reinterpret_cast<half2 *>(&b), *reinterpret_cast<const half2 *>(&MUL),
                   *reinterpret_cast<const half2 *>(&ADD));
    q[2] = __hsub2(*reinterpret_cast<half2 *>(&c), *reinterpret_cast<const half2 *>(&SUB));
    q[3] = __hfma2(*reinterpret_cast<half2 *>(&d), *reinterpret_cast<const half2 *>(&MUL),
                   *reinterpret_cast<const half2 *>(&ADD));
}
/* q (0..15); the centred form (q - 8, for the fp16 chunk dot below) is lk_dequant8_z<8> */
__device__ __forceinline__ void lk_dequant8(uint32_t w, half2 q[4]) { lk_dequant8_z<0>(w, q); }

/* canonical word (element i in nibble i) -> interleaved word */
__host__ __device__ __forceinline__ uint32_t lk_q4_interleave_word(uint32_t w) {
    uint32_t o = 0;
    const int pos_of[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* element e goes to nibble pos_of[e] */
    for (int e = 0; e < 8; e++) o |= ((w >> (4 * e)) & 0xfu) << (4 * pos_of[e]);
    return o;
}

/* dot of one dequantized 32-weight chunk with the matching 32 inputs (half2 products summed in fours,
 * then in fp32): the one-row GEMVs and the persistent decode kernel */
__device__ __forceinline__ float dot_chunk(const half2 q[16], const half2 xv[16]) {
    float dot = 0.0f;
#pragma unroll
    for (int wd = 0; wd < 4; wd++) {
        half2 d = __hmul2(q[4 * wd], xv[4 * wd]);
        d = __hfma2(q[4 * wd + 1], xv[4 * wd + 1], d);
        d = __hfma2(q[4 * wd + 2], xv[4 * wd + 2], d);
        d = __hfma2(q[4 * wd + 3], xv[4 * wd + 3], d);
        float2 f = __half22float2(d);
        dot += f.x + f.y;
    }
    return dot;
}

/* dot of one centred chunk (q - 8 from lk_dequant8_z<8>) with its 32 inputs, summed in fp16 over the whole
 * chunk (two chains of 8 half2 products) and converted once. Centred weights keep the fp16 partial sums
 * small (no 7.5 x sum(x) term), so 16 products a chain round no worse than dot_chunk's 4 uncentred ones;
 * the caller adds the -8 back through the group minimum: min' = min + 8 scale */
__device__ __forceinline__ float dot_chunk_c(const half2 q[16], const half2 xv[16]) {
    half2 d0 = __hmul2(q[0], xv[0]), d1 = __hmul2(q[1], xv[1]);
#pragma unroll
    for (int i = 2; i < 16; i += 2) {
        d0 = __hfma2(q[i], xv[i], d0);
        d1 = __hfma2(q[i + 1], xv[i + 1], d1);
    }
    const float2 f = __half22float2(__hadd2(d0, d1));
    return f.x + f.y;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
/* shared-memory mbarriers (sm_90+): the wgmma matmul's TMA stages and the persistent decode kernel's
 * weight ring */
__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(smem_u32(bar)), "r"(parity)
                     : "memory");
    } while (!done);
}
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
/* bulk tensor copies (map: a CUtensorMap in kernel parameters; the wgmma matmul and the flash prefill
 * kernel). The x tile by the tensor memory accelerator (v40): one bulk copy a stage, completion counted in
 * bytes on a shared-memory mbarrier (instead of 4 16-byte cp.async a thread, 8 L1 wavefronts each) */
/* one lane of a converged warp (elect.sync): code under it runs on exactly one lane, so ptxas can take its
 * operands as warp-uniform (no loop over the lanes' values before a bulk tensor copy) */
__device__ __forceinline__ bool lk_elect_one() {
    uint32_t p;
    asm volatile("{\n.reg .pred P;\nelect.sync _|P, 0xffffffff;\nselp.b32 %0, 1, 0, P;\n}" : "=r"(p));
    return p != 0;
}
/* box (64 inputs, rows) at (k, row) of the 2-D map -> dst, 128-byte swizzle (the layout lk_sw128_off describes) */
__device__ __forceinline__ void tma_load_2d(void *dst, const void *map, int k, int row, uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
            smem_u32(dst)),
        "l"(map), "r"(k), "r"(row), "r"(smem_u32(bar))
        : "memory");
}
__device__ __forceinline__ void tma_load_4d(void *dst, const void *map, int c0, int c1, int c2, int c3,
                                            uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];" ::"r"(
            smem_u32(dst)),
        "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_u32(bar))
        : "memory");
}
__device__ __forceinline__ void tma_load_3d(void *dst, const void *map, int c0, int c1, int c2, uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(
            smem_u32(dst)),
        "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
        : "memory");
}
/* the reverse direction, for epilogues: the shared-memory box at src is added (fp32: round to nearest) into the
 * 2-D map's box at (c0, c1) by the memory system (elements outside the map are skipped; tma_store_2d: stored),
 * in the thread's bulk group. The writers of src fence (lk_fence_proxy_async) and meet before; the issuing
 * thread commits and waits for the reads of src (bulk_wait_read) before the shared memory is reused or the
 * block exits */
__device__ __forceinline__ void tma_reduce_add_2d(const void *map, int c0, int c1, const void *src) {
    asm volatile("cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.tile.bulk_group [%0, {%1, %2}], [%3];" ::"l"(map),
                 "r"(c0), "r"(c1), "r"(smem_u32(src))
                 : "memory");
}
/* the same, a plain store */
__device__ __forceinline__ void tma_store_2d(const void *map, int c0, int c1, const void *src) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];" ::"l"(map), "r"(c0), "r"(c1),
                 "r"(smem_u32(src))
                 : "memory");
}
__device__ __forceinline__ void bulk_wait_read() {
    asm volatile("cp.async.bulk.commit_group;\ncp.async.bulk.wait_group.read 0;" ::: "memory");
}
#endif

__device__ __forceinline__ float lk_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float lk_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* block-wide sum for blockDim.x a multiple of 32 (<= 1024); `red` has 32 floats */
__device__ __forceinline__ float lk_block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = lk_warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return lk_warp_sum(v);
}

/* the RMSNorm prologues' sum of squares: a block's sum of one float a thread, through red[NW] (lane 0 of
 * each of the NW warps; warp: the caller's warp index), seen by all of them after bar() (the caller's
 * barrier over those warps) */
__device__ __forceinline__ float sumsq4(float4 v) { return v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; }
/* 4 inputs normalised (inv = 1 / rms) and weighted, as fp16 pairs: every RMSNorm path rounds the same way */
__device__ __forceinline__ void normed4(float4 v, float4 g, float inv, half2 &lo, half2 &hi) {
    lo = __floats2half2_rn(v.x * inv * g.x, v.y * inv * g.y);
    hi = __floats2half2_rn(v.z * inv * g.z, v.w * inv * g.w);
}
template <int NW, typename Bar>
__device__ __forceinline__ float lk_block_sum_bar(float v, float *red, int warp, Bar bar) {
    v = lk_warp_sum(v);
    if ((threadIdx.x & 31) == 0) red[warp] = v;
    bar();
    float t = 0.0f;
#pragma unroll
    for (int w = 0; w < NW; w++) t += red[w];
    return t;
}

/* SiLU without a branch: the IEEE division (g / ...) has a slow path the compiler keeps as a call under a
 * branch, which serialised every element of the matmul epilogues (ncu, session 27: ~35 instructions an output,
 * one after another). __fdividef is a reciprocal and a multiply (2 ulp; the result is rounded to fp16 next);
 * for g below ~-88, exp overflows and the quotient is -0, the limit */
__device__ __forceinline__ float lk_silu(float g) { return __fdividef(g, 1.0f + __expf(-g)); }

static inline int lk_cdiv(int a, int b) { return (a + b - 1) / b; }

/* ---- launches with Programmatic Dependent Launch (Hopper) --------------------
 * Every kernel of the engine starts with lk_pdl_prologue(): it waits until the
 * previous kernel in the stream has finished and its writes are visible. The
 * matmul kernels (GEMVs, the fused FFN kernel, tiled and tile matmuls) call
 * lk_pdl_trigger() once their main loop is done: from then on the next kernel's
 * blocks may be scheduled (as this one's blocks leave), and the one-row GEMV
 * loads its first weights before its wait, so its DRAM latency overlaps this
 * kernel's tail. At one row the GEMVs and the decode attention kernels trigger
 * right after their wait instead (lk_matmul.cu launch_gemv, GEMV_TRIGGER;
 * lk_attention.cu, dec_wait): the next kernel's blocks launch and its first
 * weight loads overlap this whole kernel; the other kernels trigger when their
 * blocks exit. With the
 * launch attribute off both are no-ops; semantics are those of plain stream
 * order either way. On by default where the GPU has it (see lk_pdl_enabled and
 * benchmarks/NOTES.md, v21); LLAMA_KERNEL_PDL=0 turns it off. */
__device__ __forceinline__ void lk_pdl_prologue() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void lk_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

int lk_pdl_enabled(void); /* decided once per process (lk_cuda_backend.cu) */
/* nonzero: this thread's launches go without the PDL attribute (set per forward by the backend) */
extern thread_local int lk_pdl_hold;

template <typename... KArgs, typename... Args>
static inline cudaError_t lk_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                    Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    if (lk_pdl_enabled() && !lk_pdl_hold) {
        cfg.attrs = attr;
        cfg.numAttrs = 1;
    }
    return cudaLaunchKernelEx(&cfg, kernel, ((KArgs)args)...);
}

/* 16-byte global -> shared copy by cp.async; pred false writes 16 zero bytes */
__device__ __forceinline__ void lk_cp_async16(void *smem, const void *gmem, bool pred) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(pred ? 16 : 0));
}

/* return the status of x when it is an error */
#define TRY(x)                      \
    do {                            \
        lk_status s_ = (x);         \
        if (s_ != LK_OK) return s_; \
    } while (0)

/* the name of the last kernel this host thread launched through LAUNCH (tests ask which kernel ran) */
extern thread_local const char *lk_last_launch;

#define LAUNCH(name, kernel, grid, block, smem, st, ...)                                         \
    do {                                                                                         \
        lk_last_launch = name;                                                                   \
        cudaError_t e_ = lk_launch(kernel, grid, block, smem, st, __VA_ARGS__);                   \
        if (e_ == cudaSuccess) e_ = cudaGetLastError();                                          \
        if (e_ != cudaSuccess) return lk_cuda_fail_launch(e_, name, __FILE__, __LINE__);         \
    } while (0)
