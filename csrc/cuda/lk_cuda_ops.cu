/* lk_cuda_ops.cu: single GPU ops on host arrays (tests compare them with the
 * CPU references) and their timings (benchmarks/). Not used by the engine. */
#include <algorithm>
#include <stdlib.h>
#include <vector>

#include "../lk_cuda.h"
#include "../lk_model.h"
#include "../lk_quant.h"
#include "lk_kernels.cuh"
#include "lk_matmul.cuh"

namespace {

/* device buffers freed on scope exit */
struct dbuf {
    void *p = nullptr;
    ~dbuf() {
        if (p) cudaFree(p);
    }
};

lk_status dalloc(dbuf &b, size_t bytes) {
    cudaError_t e = cudaMalloc(&b.p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        b.p = nullptr;
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return lk_fail(LK_E_DEVICE_OOM, "cudaMalloc of %zu bytes failed (%zu of %zu bytes free)", bytes, fr, tot);
    }
    return LK_OK;
}

lk_status device_info(int *sm, int *ccmaj, int *ccmin) {
    TRY(lk_cuda_check_usable());
    CU(cudaSetDevice(0));
    cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, 0));
    *sm = p.multiProcessorCount;
    *ccmaj = p.major;
    *ccmin = p.minor;
    TRY(lk_mm_init());
    TRY(lk_attention_init());
    return LK_OK;
}

std::vector<half> to_half(const float *x, size_t n) {
    std::vector<half> h(n);
    for (size_t i = 0; i < n; i++) h[i] = __float2half(x[i]);
    return h;
}

/* time `call` inside a CUDA graph of `reps` calls; median per call over `iters` replays */
template <typename F>
lk_status time_graph(cudaStream_t st, int reps, int iters, F call, double *us) {
    for (int i = 0; i < 2; i++) TRY(call(i));
    CU(cudaStreamSynchronize(st));
    cudaGraph_t g = nullptr;
    cudaGraphExec_t ge = nullptr;
    CU(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    lk_status s = LK_OK;
    for (int i = 0; i < reps && !s; i++) s = call(i);
    cudaError_t e = cudaStreamEndCapture(st, &g);
    if (s) {
        if (g) cudaGraphDestroy(g);
        return s;
    }
    CU(e);
    e = cudaGraphInstantiate(&ge, g, 0);
    cudaGraphDestroy(g);
    CU(e);
    cudaEvent_t a, b;
    CU(cudaEventCreate(&a));
    CU(cudaEventCreate(&b));
    std::vector<double> t;
    CU(cudaGraphLaunch(ge, st)); /* warm */
    for (int i = 0; i < iters; i++) {
        CU(cudaEventRecord(a, st));
        CU(cudaGraphLaunch(ge, st));
        CU(cudaEventRecord(b, st));
        CU(cudaEventSynchronize(b));
        float ms;
        CU(cudaEventElapsedTime(&ms, a, b));
        t.push_back(1000.0 * ms / reps);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaGraphExecDestroy(ge);
    std::sort(t.begin(), t.end());
    *us = t[t.size() / 2];
    return LK_OK;
}

/* the split-K workspaces of lk_cuda_matmul (GEMV, tensor-core tiles, tiled small-batch
 * kernel) for M rows of an N-row matrix with n_out outputs, sized as the engine sizes them */
struct op_workspace {
    dbuf part, cnt, tc, tcc, tg, tgc;
    lk_mm_ws ws;
};

lk_status op_workspace_make(op_workspace &o, int M, int N, int n_out) {
    lk_mm_ws &ws = o.ws;
    ws.partial_floats = (size_t)LK_SPLITK_MAX * LK_GEMV_ROWS * n_out;
    ws.n_counters = n_out;
    TRY(dalloc(o.part, ws.partial_floats * 4));
    TRY(dalloc(o.cnt, (size_t)n_out * 4));
    CU(cudaMemset(o.cnt.p, 0, (size_t)n_out * 4));
    ws.partial = (float *)o.part.p;
    ws.counters = (int *)o.cnt.p;
    size_t rows = (size_t)(M + 63) / 64 * 64, n = (size_t)(N + 127) / 128 * 128;
    ws.tc_partial_floats = (size_t)LK_SPLITK_MAX * rows * n;
    if (ws.tc_partial_floats > ((size_t)64 << 20)) ws.tc_partial_floats = (size_t)64 << 20;
    TRY(dalloc(o.tc, ws.tc_partial_floats * 4));
    TRY(dalloc(o.tcc, (size_t)LK_TC_COUNTERS * 4));
    CU(cudaMemset(o.tcc.p, 0, (size_t)LK_TC_COUNTERS * 4));
    ws.tc_partial = (float *)o.tc.p;
    ws.tc_counters = (int *)o.tcc.p;
    ws.tc_n_counters = LK_TC_COUNTERS;
    ws.tg_partial_floats = (size_t)LK_TILED_SPLIT_MAX * (size_t)(M < 16 ? M : 16) * (size_t)N;
    ws.tg_n_counters = LK_TC_COUNTERS;
    TRY(dalloc(o.tg, ws.tg_partial_floats * 4));
    TRY(dalloc(o.tgc, (size_t)ws.tg_n_counters * 4));
    CU(cudaMemset(o.tgc.p, 0, (size_t)ws.tg_n_counters * 4));
    ws.tg_partial = (float *)o.tg.p;
    ws.tg_counters = (int *)o.tgc.p;
    return LK_OK;
}

/* the ops (tests, benchmarks) take the tiled layout only with LLAMA_KERNEL_TILED=1 (the engine
 * by default for 2+ sequences): int4 with whole 16-row blocks, unless a row-interleaved variant
 * (lut, optimized) is asked for */
bool use_tiled(int N, int variant) {
    const char *e = getenv("LLAMA_KERNEL_TILED");
    return e && e[0] == '1' && N % 16 == 0 && variant != LK_MM_LUT && variant != LK_MM_OPTIMIZED;
}

int out_mode(int mode) {
    return mode == 1 ? LK_OUT_ADD_F32 : mode == 2 ? LK_OUT_SWIGLU_F16 : mode == 3 ? LK_OUT_F16 : LK_OUT_F32;
}

__global__ void k_f16_to_f32(const half *a, float *b, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) b[i] = __half2float(a[i]);
}

/* n fp16 values on the device into float32 host memory (widened on the device) */
lk_status download_half(const void *src, size_t n, float *dst) {
    dbuf f;
    TRY(dalloc(f, n * 4));
    k_f16_to_f32<<<(unsigned)((n + 255) / 256), 256>>>((const half *)src, (float *)f.p, n);
    LAUNCH_OK("k_f16_to_f32");
    CU(cudaMemcpy(dst, f.p, n * 4, cudaMemcpyDeviceToHost));
    return LK_OK;
}

} // namespace

thread_local const char *lk_last_launch = "";

extern "C" lk_status lk_cuda_op_matmul(const float *x, int M, int K, const uint8_t *qs, const uint16_t *params,
                                       const uint16_t *w_bf16, int N, int mode, int variant, float *y,
                                       int *variant_used, const char **kernel) {
    int sm = 0, cmaj = 0, cmin = 0;
    TRY(device_info(&sm, &cmaj, &cmin));
    const int om = out_mode(mode), n_out = om == LK_OUT_SWIGLU_F16 ? N / 2 : N;
    const bool half_out = om == LK_OUT_SWIGLU_F16 || om == LK_OUT_F16;
    dbuf dx, dw, dp, dy;
    std::vector<half> hx = to_half(x, (size_t)M * K);
    TRY(dalloc(dx, hx.size() * 2));
    CU(cudaMemcpy(dx.p, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
    lk_dmat W;
    W.N = N;
    W.K = K;
    const bool tiled = qs && use_tiled(N, variant);
    if (qs) {
        TRY(dalloc(dw, lk_q4_qs_bytes(N, K)));
        TRY(dalloc(dp, lk_q4_params_bytes(N, K)));
        if (tiled) {
            std::vector<uint8_t> tq(lk_q4_qs_bytes(N, K));
            std::vector<lk_q4_params> tp((size_t)N * (K / LK_Q4_GROUP));
            lk_q4_tile(qs, (const lk_q4_params *)params, N, K, tq.data(), tp.data());
            CU(cudaMemcpy(dw.p, tq.data(), tq.size(), cudaMemcpyHostToDevice));
            CU(cudaMemcpy(dp.p, tp.data(), tp.size() * sizeof(lk_q4_params), cudaMemcpyHostToDevice));
        } else {
            CU(cudaMemcpy(dw.p, qs, lk_q4_qs_bytes(N, K), cudaMemcpyHostToDevice));
            CU(cudaMemcpy(dp.p, params, lk_q4_params_bytes(N, K), cudaMemcpyHostToDevice));
            TRY(lk_q4_interleave(dw.p, lk_q4_qs_bytes(N, K), 0));
        }
        W.w = dw.p;
        W.p = (const half2 *)dp.p;
        W.fmt = tiled ? LK_WFMT_Q4_TILED : LK_WFMT_Q4;
    } else {
        TRY(dalloc(dw, (size_t)N * K * 2));
        CU(cudaMemcpy(dw.p, w_bf16, (size_t)N * K * 2, cudaMemcpyHostToDevice));
        W.w = dw.p;
        W.p = nullptr;
        W.fmt = LK_WFMT_BF16;
    }
    const size_t ny = (size_t)M * n_out;
    TRY(dalloc(dy, ny * (half_out ? 2 : 4)));
    if (om == LK_OUT_ADD_F32) CU(cudaMemcpy(dy.p, y, ny * 4, cudaMemcpyHostToDevice));
    else CU(cudaMemset(dy.p, 0xff, ny * (half_out ? 2 : 4))); /* poison: every output must be written */
    op_workspace ow;
    TRY(op_workspace_make(ow, M, N, n_out));
    const lk_mm_ws &ws = ow.ws;
    if (variant_used)
        *variant_used = !qs ? LK_MM_BF16 : tiled ? LK_MM_BATCHED : variant ? variant : lk_mm_choose(M, N, K, cmaj, cmin);
    lk_last_launch = "";
    TRY(lk_cuda_matmul(&W, (const half *)dx.p, M, K, dy.p, n_out, om, variant, &ws, sm, cmaj, cmin, 0));
    if (kernel) *kernel = lk_last_launch;
    if (half_out) {
        TRY(download_half(dy.p, ny, y));
    } else {
        CU(cudaMemcpy(y, dy.p, ny * 4, cudaMemcpyDeviceToHost));
    }
    CU(cudaDeviceSynchronize());
    return LK_OK;
}

__global__ void k_fill_random(uint32_t *p, size_t n, uint32_t seed) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        uint32_t z = (uint32_t)i * 2654435761u ^ seed;
        z ^= z >> 13;
        z *= 0x5bd1e995u;
        z ^= z >> 15;
        p[i] = z;
    }
}
__global__ void k_fill_params(half2 *p, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = __floats2half2_rn(0.002f + 0.0001f * (float)(i % 7), -0.015f);
}
__global__ void k_fill_half(half *p, size_t n, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = __float2half(scale * ((float)((i * 7919u) % 2001u) / 1000.0f - 1.0f));
}

extern "C" lk_status lk_cuda_op_bench_matmul(int M, int N, int K, int mode, int variant, int bf16, int iters,
                                             const int tune[3], double *us) {
    int sm = 0, cmaj = 0, cmin = 0;
    TRY(device_info(&sm, &cmaj, &cmin));
    const int om = out_mode(mode), n_out = om == LK_OUT_SWIGLU_F16 ? N / 2 : N;
    const size_t wbytes = bf16 ? (size_t)N * K * 2 : lk_q4_qs_bytes(N, K) + lk_q4_params_bytes(N, K);
    int copies = (int)std::min<size_t>(64, std::max<size_t>(1, (size_t)(256u << 20) / wbytes + 1));
    /* LLAMA_KERNEL_BENCH_COPIES=1: one weight copy, L2-resident when it fits (the "hot" time) */
    if (const char *e = getenv("LLAMA_KERNEL_BENCH_COPIES")) {
        int c = atoi(e);
        if (c >= 1 && c <= 64) copies = c;
    }
    std::vector<dbuf> ws_(copies), ps_(copies);
    std::vector<lk_dmat> mats(copies);
    for (int c = 0; c < copies; c++) {
        lk_dmat &W = mats[c];
        W.N = N;
        W.K = K;
        if (bf16) {
            TRY(dalloc(ws_[c], (size_t)N * K * 2));
            k_fill_half<<<(unsigned)(((size_t)N * K + 255) / 256), 256>>>((half *)ws_[c].p, (size_t)N * K, 0.02f);
            W.fmt = LK_WFMT_BF16; /* the bit patterns of small halves are fine bf16 values too */
            W.p = nullptr;
        } else {
            TRY(dalloc(ws_[c], lk_q4_qs_bytes(N, K)));
            TRY(dalloc(ps_[c], lk_q4_params_bytes(N, K)));
            k_fill_random<<<(unsigned)((lk_q4_qs_bytes(N, K) / 4 + 255) / 256), 256>>>(
                (uint32_t *)ws_[c].p, lk_q4_qs_bytes(N, K) / 4, 1234u + c);
            size_t np = (size_t)N * (K / LK_Q4_GROUP);
            k_fill_params<<<(unsigned)((np + 255) / 256), 256>>>((half2 *)ps_[c].p, np);
            W.fmt = use_tiled(N, variant) ? LK_WFMT_Q4_TILED : LK_WFMT_Q4;
            W.p = (const half2 *)ps_[c].p;
        }
        W.w = ws_[c].p;
        LAUNCH_OK("fill");
    }
    dbuf dx, dy;
    TRY(dalloc(dx, (size_t)M * K * 2));
    k_fill_half<<<(unsigned)(((size_t)M * K + 255) / 256), 256>>>((half *)dx.p, (size_t)M * K, 1.0f);
    LAUNCH_OK("fill");
    TRY(dalloc(dy, (size_t)M * n_out * 4));
    CU(cudaMemset(dy.p, 0, (size_t)M * n_out * 4));
    op_workspace ow;
    TRY(op_workspace_make(ow, M, N, n_out));
    const lk_mm_ws &ws = ow.ws;
    cudaStream_t st;
    CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const int reps = std::max(copies, 16);
    /* tune: (rows per warp, chunks in flight, K splits) of the one-row GEMV, or with the tiled
     * layout (warps along K, groups per load step, K splits) of the tiled small-batch kernel; 0 = automatic */
    if (mats[0].fmt == LK_WFMT_Q4_TILED) lk_mm_set_tune_tiled(tune[0], tune[1], tune[2]);
    else lk_mm_set_tune(tune[0], tune[1], tune[2]);
    lk_status s = time_graph(
        st, reps, iters,
        [&](int i) {
            return lk_cuda_matmul(&mats[i % copies], (const half *)dx.p, M, K, dy.p, n_out, om, variant, &ws, sm,
                                  cmaj, cmin, st);
        },
        us);
    lk_mm_set_tune(0, 0, 0);
    lk_mm_set_tune_tiled(0, 0, 0);
    cudaStreamSynchronize(st);
    cudaStreamDestroy(st);
    return s;
}

/* The attention ops below (test and benchmark entry points) share one
 * argument setup over their device buffers (slot 0 for prefill rows) and
 * one dispatch: kind 2 = flash prefill, 1 = split-KV decode, 0 = plain, 3 = warp per (row, head). */
static lk_attn_args op_attn_args(const dbuf &dq, const dbuf &dk, const dbuf &dv, const dbuf &dout, const dbuf &dslot,
                                 const dbuf &dpos, const dbuf &dpart, const dbuf &dcnt, int M, int n_heads, int n_kv,
                                 int hd, int L, int p0, int splits) {
    lk_attn_args a;
    a.qkv = (const half *)dq.p;
    a.qkv_ld = n_heads * hd;
    a.out = (half *)dout.p;
    a.kc = (const half *)dk.p;
    a.vc = (const half *)dv.p;
    a.slot = (const int *)dslot.p;
    a.pos = (const int *)dpos.p;
    a.M = M;
    a.n_heads = n_heads;
    a.n_kv = n_kv;
    a.head_dim = hd;
    a.max_seq = L;
    a.scale = 1.0f / sqrtf((float)hd);
    a.p0 = p0;
    a.pslot = 0;
    a.part = (float *)dpart.p;
    a.counters = (int *)dcnt.p;
    a.splits = splits;
    a.min_chunk = a.one_split = a.trigger = 0; /* (set per launch by lk_attention_decode) */
    /* only uploads precede these calls, so the early K/V copies are safe whatever the rows' slots;
     * on, so the decode tests cover the split of the first tile (LLAMA_KERNEL_ATTN_PREFETCH=0: off) */
    a.prefetch = 1;
    a.max_len = 0; /* (the callers set it) */
    a.qblk = nullptr;
    a.n_qblk = 0;
    return a;
}

static lk_status op_attention_kind(int kind, const char *what) {
    if (kind < 0 || kind > 3)
        return lk_fail(LK_E_INVALID, "%s: kind = %d (0 plain, 1 split-KV decode, 2 flash prefill, 3 rows)", what, kind);
    return LK_OK;
}

static lk_status op_attention_run(const lk_attn_args *a, int kind, cudaStream_t st) {
    return kind == 3   ? lk_attention_rows(a, st)
           : kind == 2 ? lk_attention_prefill(a, st)
           : kind == 1 ? lk_attention_decode(a, st)
                       : lk_attention_plain(a, st);
}

extern "C" lk_status lk_cuda_op_attention(const float *q, int M, int n_heads, int n_kv, int hd, const float *k,
                                          const float *v, int L, const int *pos, int kind, float *out,
                                          const char **kernel) {
    int sm = 0, cmaj = 0, cmin = 0;
    TRY(device_info(&sm, &cmaj, &cmin));
    if (n_kv <= 0 || n_heads % n_kv || M < 1 || L < 1)
        return lk_fail(LK_E_INVALID, "attention op: bad shape (M %d, heads %d/%d, L %d)", M, n_heads, n_kv, L);
    TRY(op_attention_kind(kind, "attention op"));
    for (int i = 0; i < M; i++)
        if (pos[i] < 0 || pos[i] >= L) return lk_fail(LK_E_INVALID, "attention op: pos[%d] = %d not in [0, %d)", i, pos[i], L);
    const int qd = n_heads * hd;
    dbuf dq, dk, dv, dout, dslot, dpos, dpart;
    std::vector<half> hq = to_half(q, (size_t)M * qd), hk = to_half(k, (size_t)n_kv * L * hd),
                      hv = to_half(v, (size_t)n_kv * L * hd);
    TRY(dalloc(dq, hq.size() * 2));
    TRY(dalloc(dk, hk.size() * 2));
    TRY(dalloc(dv, hv.size() * 2));
    TRY(dalloc(dout, (size_t)M * qd * 2));
    TRY(dalloc(dslot, (size_t)M * 4));
    TRY(dalloc(dpos, (size_t)M * 4));
    CU(cudaMemcpy(dq.p, hq.data(), hq.size() * 2, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dk.p, hk.data(), hk.size() * 2, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dv.p, hv.data(), hv.size() * 2, cudaMemcpyHostToDevice));
    CU(cudaMemset(dslot.p, 0, (size_t)M * 4));
    CU(cudaMemcpy(dpos.p, pos, (size_t)M * 4, cudaMemcpyHostToDevice));
    CU(cudaMemset(dout.p, 0xff, (size_t)M * qd * 2));
    const int splits = std::max(1, std::min(64, (512 + M * n_kv - 1) / (M * n_kv)));
    TRY(dalloc(dpart, (size_t)M * n_heads * splits * (hd + 2) * 4));
    dbuf dcnt;
    TRY(dalloc(dcnt, (size_t)M * n_kv * 4));
    CU(cudaMemset(dcnt.p, 0, (size_t)M * n_kv * 4));
    lk_attn_args a = op_attn_args(dq, dk, dv, dout, dslot, dpos, dpart, dcnt, M, n_heads, n_kv, hd, L, pos[0], splits);
    for (int i = 0; i < M; i++) a.max_len = std::max(a.max_len, pos[i] + 1);
    if (kind == 2) {
        for (int i = 1; i < M; i++)
            if (pos[i] != pos[0] + i) return lk_fail(LK_E_INVALID, "prefill attention needs consecutive positions");
    }
    lk_last_launch = "";
    TRY(op_attention_run(&a, kind, 0));
    if (kernel) *kernel = lk_last_launch;
    return download_half(dout.p, (size_t)M * qd, out);
}

extern "C" lk_status lk_cuda_op_bench_attention(int B, int n_heads, int n_kv, int hd, int L, int kind, int iters,
                                                double *us) {
    int sm = 0, cmaj = 0, cmin = 0;
    TRY(device_info(&sm, &cmaj, &cmin));
    TRY(op_attention_kind(kind, "attention bench"));
    const int qd = n_heads * hd;
    const int M = kind == 2 ? L : B;
    const size_t kv = (size_t)B * n_kv * L * hd;
    dbuf dq, dk, dv, dout, dslot, dpos, dpart;
    TRY(dalloc(dq, (size_t)M * qd * 2));
    TRY(dalloc(dk, kv * 2));
    TRY(dalloc(dv, kv * 2));
    TRY(dalloc(dout, (size_t)M * qd * 2));
    TRY(dalloc(dslot, (size_t)M * 4));
    TRY(dalloc(dpos, (size_t)M * 4));
    k_fill_half<<<(unsigned)(((size_t)M * qd + 255) / 256), 256>>>((half *)dq.p, (size_t)M * qd, 1.0f);
    k_fill_half<<<(unsigned)((kv + 255) / 256), 256>>>((half *)dk.p, kv, 1.0f);
    k_fill_half<<<(unsigned)((kv + 255) / 256), 256>>>((half *)dv.p, kv, 1.0f);
    LAUNCH_OK("fill");
    std::vector<int> hs(M), hp(M);
    for (int i = 0; i < M; i++) {
        hs[i] = kind == 2 ? 0 : i;
        hp[i] = kind == 2 ? i : L - 1;
    }
    CU(cudaMemcpy(dslot.p, hs.data(), (size_t)M * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dpos.p, hp.data(), (size_t)M * 4, cudaMemcpyHostToDevice));
    const int splits = std::max(1, std::min(64, (512 + B * n_kv - 1) / (B * n_kv)));
    TRY(dalloc(dpart, (size_t)(kind == 2 ? 1 : M) * n_heads * splits * (hd + 2) * 4));
    dbuf dcnt;
    TRY(dalloc(dcnt, (size_t)M * n_kv * 4));
    CU(cudaMemset(dcnt.p, 0, (size_t)M * n_kv * 4));
    lk_attn_args a = op_attn_args(dq, dk, dv, dout, dslot, dpos, dpart, dcnt, M, n_heads, n_kv, hd, L, 0, splits);
    a.max_len = L;
    cudaStream_t st;
    CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    lk_status s = time_graph(
        st, 8, iters,
        [&](int) {
            return op_attention_run(&a, kind, st);
        },
        us);
    cudaStreamSynchronize(st);
    cudaStreamDestroy(st);
    return s;
}

/* ---- RMSNorm and rotary + KV append (the engine's k_rmsnorm and k_rope_kv) ---------- */
extern "C" lk_status lk_cuda_op_rmsnorm(const float *x, int M, int dim, const float *w, float eps, float *out) {
    int sm = 0, cmaj = 0, cmin = 0;
    TRY(device_info(&sm, &cmaj, &cmin));
    size_t n = 0;
    if (M < 1 || dim < 1 || lk_mul_ov((size_t)M, (size_t)dim, &n))
        return lk_fail(LK_E_INVALID, "rmsnorm op: bad shape (M %d, dim %d)", M, dim);
    dbuf dx, dw, dh;
    TRY(dalloc(dx, n * 4));
    TRY(dalloc(dw, (size_t)dim * 4));
    TRY(dalloc(dh, n * 2));
    CU(cudaMemcpy(dx.p, x, n * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dw.p, w, (size_t)dim * 4, cudaMemcpyHostToDevice));
    TRY(lk_rmsnorm((const float *)dx.p, (const float *)dw.p, M, dim, eps, (half *)dh.p, 0));
    return download_half(dh.p, n, out);
}

extern "C" lk_status lk_cuda_op_rope_kv(const float *qkv, int M, int n_heads, int n_kv, int hd, const int *pos,
                                        const int *slot, const float *cos_t, const float *sin_t, int max_seq,
                                        int n_slots, float *qkv_out, float *kc, float *vc) {
    int sm = 0, cmaj = 0, cmin = 0;
    TRY(device_info(&sm, &cmaj, &cmin));
    size_t nq = 0, nc = 0, nt = 0;
    const int ld = n_heads + 2 * n_kv;
    if (M < 1 || n_kv < 1 || n_heads < 1 || n_heads % n_kv || hd < 2 || hd % 2 || max_seq < 1 || n_slots < 1 ||
        lk_mul_ov((size_t)M * (size_t)ld, (size_t)hd, &nq) ||
        lk_mul_ov((size_t)n_slots * (size_t)n_kv, (size_t)max_seq * (size_t)hd, &nc) ||
        lk_mul_ov((size_t)max_seq, (size_t)(hd / 2), &nt))
        return lk_fail(LK_E_INVALID, "rope_kv op: bad shape (M %d, heads %d/%d, head_dim %d, %d slots of %d)", M,
                       n_heads, n_kv, hd, n_slots, max_seq);
    for (int i = 0; i < M; i++)
        if (pos[i] < 0 || pos[i] >= max_seq || slot[i] < 0 || slot[i] >= n_slots)
            return lk_fail(LK_E_INVALID, "rope_kv op: row %d at slot %d / position %d (slots [0, %d), positions [0, %d))",
                           i, slot[i], pos[i], n_slots, max_seq);
    dbuf dq, dkc, dvc, dcos, dsin, dpos, dslot;
    std::vector<half> hq = to_half(qkv, nq);
    TRY(dalloc(dq, nq * 2));
    TRY(dalloc(dkc, nc * 2));
    TRY(dalloc(dvc, nc * 2));
    TRY(dalloc(dcos, nt * 4));
    TRY(dalloc(dsin, nt * 4));
    TRY(dalloc(dpos, (size_t)M * 4));
    TRY(dalloc(dslot, (size_t)M * 4));
    CU(cudaMemcpy(dq.p, hq.data(), nq * 2, cudaMemcpyHostToDevice));
    CU(cudaMemset(dkc.p, 0, nc * 2));
    CU(cudaMemset(dvc.p, 0, nc * 2));
    CU(cudaMemcpy(dcos.p, cos_t, nt * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dsin.p, sin_t, nt * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dpos.p, pos, (size_t)M * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dslot.p, slot, (size_t)M * 4, cudaMemcpyHostToDevice));
    TRY(lk_rope_kv((half *)dq.p, ld * hd, (const int *)dslot.p, (const int *)dpos.p, M, n_heads, n_kv, hd,
                   (const float *)dcos.p, (const float *)dsin.p, (half *)dkc.p, (half *)dvc.p, max_seq, 0));
    TRY(download_half(dq.p, nq, qkv_out));
    TRY(download_half(dkc.p, nc, kc));
    return download_half(dvc.p, nc, vc);
}

/* median microseconds of k_rmsnorm and k_rope_kv over M rows (consecutive positions of one slot, as in
 * prefill), and of a device-to-device copy moving as many bytes as the RMSNorm (the card's copy rate) */
extern "C" lk_status lk_cuda_op_bench_norm_rope(int M, int dim, int n_heads, int n_kv, int hd, int iters, double us[3]) {
    int sm = 0, cmaj = 0, cmin = 0;
    TRY(device_info(&sm, &cmaj, &cmin));
    if (M < 1 || dim < 4 || dim % 4 || n_kv < 1 || n_heads % n_kv || hd < 2 || hd % 2 || iters < 1 || M > (1 << 20) ||
        dim > (1 << 16) || n_heads > 1024 || hd > 1024)
        return lk_fail(LK_E_INVALID, "norm/rope bench: bad shape (M %d, dim %d, heads %d/%d, head_dim %d)", M, dim,
                       n_heads, n_kv, hd);
    const size_t n = (size_t)M * dim, ld = (size_t)(n_heads + 2 * n_kv) * hd;
    dbuf dx, dw, dh, dq, dkc, dvc, dtab, dpos, dslot, dc1, dc2;
    TRY(dalloc(dx, n * 4));
    TRY(dalloc(dw, (size_t)dim * 4));
    TRY(dalloc(dh, n * 2));
    TRY(dalloc(dq, (size_t)M * ld * 2));
    TRY(dalloc(dkc, (size_t)n_kv * M * hd * 2));
    TRY(dalloc(dvc, (size_t)n_kv * M * hd * 2));
    TRY(dalloc(dtab, (size_t)M * hd * 4)); /* cos then sin, [M][hd/2] each */
    TRY(dalloc(dpos, (size_t)M * 4));
    TRY(dalloc(dslot, (size_t)M * 4));
    TRY(dalloc(dc1, n * 3));
    TRY(dalloc(dc2, n * 3));
    CU(cudaMemset(dx.p, 0, n * 4));
    CU(cudaMemset(dw.p, 0, (size_t)dim * 4));
    CU(cudaMemset(dq.p, 0, (size_t)M * ld * 2));
    CU(cudaMemset(dtab.p, 0, (size_t)M * hd * 4));
    CU(cudaMemset(dslot.p, 0, (size_t)M * 4));
    std::vector<int> hp(M);
    for (int i = 0; i < M; i++) hp[i] = i;
    CU(cudaMemcpy(dpos.p, hp.data(), (size_t)M * 4, cudaMemcpyHostToDevice));
    cudaStream_t st;
    CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const float *cos_t = (const float *)dtab.p, *sin_t = cos_t + (size_t)M * (hd / 2);
    lk_status s = time_graph(
        st, 8, iters, [&](int) { return lk_rmsnorm((const float *)dx.p, (const float *)dw.p, M, dim, 1e-5f, (half *)dh.p, st); },
        &us[0]);
    if (!s)
        s = time_graph(
            st, 8, iters,
            [&](int) {
                return lk_rope_kv((half *)dq.p, (int)ld, (const int *)dslot.p, (const int *)dpos.p, M, n_heads, n_kv, hd,
                                  cos_t, sin_t, (half *)dkc.p, (half *)dvc.p, M, st);
            },
            &us[1]);
    if (!s)
        s = time_graph(
            st, 8, iters,
            [&](int) {
                CU(cudaMemcpyAsync(dc2.p, dc1.p, n * 3, cudaMemcpyDeviceToDevice, st));
                return LK_OK;
            },
            &us[2]);
    cudaStreamSynchronize(st);
    cudaStreamDestroy(st);
    return s;
}

extern "C" lk_status lk_cuda_op_sample(const float *logits, int B, int V, const int *pos, float temperature, int top_k,
                                       float top_p, float repetition_penalty, uint64_t seed, uint64_t seq_id0,
                                       const uint32_t *seen, int32_t *out, int32_t *paths) {
    int sm = 0, cmaj = 0, cmin = 0;
    TRY(device_info(&sm, &cmaj, &cmin));
    const int words = (V + 31) / 32;
    dbuf dl, dp, ds, dt, dslot, dseen, dsc;
    TRY(dalloc(dl, (size_t)B * V * 4));
    TRY(dalloc(dp, sizeof(lk_samp_params)));
    /* argmax keys, the split's candidates and masses, arrival counts (zeroed) */
    const size_t sc_bytes = LK_SAMP_KEYS * 8 + LK_SAMP_CAND_BYTES + (size_t)B * 4;
    TRY(dalloc(dsc, sc_bytes));
    CU(cudaMemset(dsc.p, 0, sc_bytes));
    lk_samp_scratch sc = {};
    sc.keys = (unsigned long long *)dsc.p;
    lk_samp_scratch_place(&sc, sc.keys + LK_SAMP_KEYS);
    sc.arrive = (int *)((char *)(sc.keys + LK_SAMP_KEYS) + LK_SAMP_CAND_BYTES);
    TRY(dalloc(dt, (size_t)B * 4));
    TRY(dalloc(dslot, (size_t)B * 4));
    dbuf dpath;
    if (paths) {
        TRY(dalloc(dpath, (size_t)B * 4));
        sc.path = (int *)dpath.p;
    }
    TRY(dalloc(ds, (size_t)B * 4));
    TRY(dalloc(dseen, (size_t)B * words * 4));
    CU(cudaMemcpy(dl.p, logits, (size_t)B * V * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(ds.p, pos, (size_t)B * 4, cudaMemcpyHostToDevice));
    if (seen) CU(cudaMemcpy(dseen.p, seen, (size_t)B * words * 4, cudaMemcpyHostToDevice));
    else CU(cudaMemset(dseen.p, 0, (size_t)B * words * 4));
    lk_samp_params p = {temperature, top_k, top_p, repetition_penalty, seed, seq_id0};
    CU(cudaMemcpy(dp.p, &p, sizeof p, cudaMemcpyHostToDevice));
    TRY(lk_sample((float *)dl.p, V, B, (const lk_samp_params *)dp.p, (uint32_t *)dseen.p, (int *)dt.p, (int *)dslot.p,
                  (int *)ds.p, &sc, 0));
    CU(cudaMemcpy(out, dt.p, (size_t)B * 4, cudaMemcpyDeviceToHost));
    if (paths) CU(cudaMemcpy(paths, dpath.p, (size_t)B * 4, cudaMemcpyDeviceToHost));
    return LK_OK;
}
