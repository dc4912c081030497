/* lk_cuda_backend.cu: the CUDA backend behind lk_backend.h.
 *
 * Owns one device allocation (the arena) holding the weights, the KV cache,
 * the rope tables and every per-forward buffer, sized at load by the plan in
 * lk_model.c; nothing is allocated in the token loop. All work runs on one
 * stream. The decode step (forward + logits + sampling) is captured as a
 * CUDA graph per batch size after one eager warm-up run, then replayed; the
 * token and position live in device memory, so replays need no host input.
 */
#include <climits>
#include <stdio.h>
#include <stdlib.h>

#include "../lk_backend.h"
#include "../lk_cuda.h"
#include "../lk_quant.h"
#include "lk_kernels.cuh"
#include "lk_decode.cuh"
#include "lk_matmul.cuh"

#ifndef LK_CUDA_ARCHS
#define LK_CUDA_ARCHS ""
#endif

lk_status lk_cuda_fail(cudaError_t e, const char *what, const char *file, int line) {
    const char *base = strrchr(file, '/');
    lk_status st = e == cudaErrorMemoryAllocation ? LK_E_DEVICE_OOM : LK_E_DEVICE;
    lk_fail(st, "CUDA error in %s (%s:%d): %s: %s", what, base ? base + 1 : file, line, cudaGetErrorName(e),
            cudaGetErrorString(e));
    (void)cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
    return st;
}

lk_status lk_cuda_fail_launch(cudaError_t e, const char *name, const char *file, int line) {
    char what[160];
    snprintf(what, sizeof what, "launch of %s", name ? name : "a kernel");
    return lk_cuda_fail(e, what, file, line);
}

/* PDL: on for Hopper and newer unless LLAMA_KERNEL_PDL=0. Measured on H100
 * (benchmarks/NOTES.md, v21): with each kernel's trigger after its main loop
 * (not at its start, which let every following kernel's blocks take SM room
 * early: 2-5% slower), batch 1 decode +2.5% (1,559 -> 1,607 tok/s), batch 16
 * +1.8%. Decided once. */
thread_local int lk_pdl_hold = 0;

int lk_pdl_enabled(void) {
    static const int on = [] {
        const char *e = getenv("LLAMA_KERNEL_PDL");
        if (e && e[0] == '0') return 0;
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
        return major >= 9 ? 1 : 0;
    }();
    return on;
}

/* ---- device query ---------------------------------------------------------------- */
__global__ void k_probe(int *p) {
    if (p) *p = 1;
}

extern "C" const char *lk_cuda_archs(void) { return LK_CUDA_ARCHS; }

extern "C" void lk_cuda_query(lk_cuda_info *info) {
    memset(info, 0, sizeof *info);
    info->compiled = 1;
    cudaRuntimeGetVersion(&info->runtime_version);
    if (cudaDriverGetVersion(&info->driver_version) != cudaSuccess) info->driver_version = 0;
    cudaError_t e = cudaGetDeviceCount(&info->device_count);
    if (e != cudaSuccess || info->device_count == 0) {
        info->device_count = 0;
        snprintf(info->error, sizeof info->error,
                 "no usable CUDA GPU (%s); check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or use "
                 "device=\"cpu\"",
                 e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
        (void)cudaGetLastError();
        return;
    }
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
        snprintf(info->error, sizeof info->error, "cannot read the properties of GPU 0");
        (void)cudaGetLastError();
        return;
    }
    snprintf(info->device_name, sizeof info->device_name, "%s", p.name);
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->sm_count = p.multiProcessorCount;
    cudaFuncAttributes fa;
    e = cudaFuncGetAttributes(&fa, k_probe);
    info->arch_supported = e == cudaSuccess;
    if (!info->arch_supported) {
        snprintf(info->error, sizeof info->error,
                 "this build of llama_kernel has GPU code for archs %s, but %s is sm_%d%d; rebuild with "
                 "LLAMA_KERNEL_CUDA_ARCHS=\"%d%d\" (pip install --force-reinstall --no-build-isolation .)",
                 LK_CUDA_ARCHS, p.name, p.major, p.minor, p.major, p.minor);
        (void)cudaGetLastError();
        return;
    }
    info->wgmma = lk_mm_wgmma_ready();
    cudaMemGetInfo(&info->free_bytes, &info->total_bytes);
    (void)cudaGetLastError();
}

extern "C" lk_status lk_cuda_check_usable(void) {
    lk_cuda_info info;
    lk_cuda_query(&info);
    if (!info.device_count || !info.arch_supported) return lk_fail(LK_E_UNSUPPORTED, "device=\"cuda\": %s", info.error);
    return LK_OK;
}

/* ---- the backend ----------------------------------------------------------------- */
#define MAX_GRAPH_KEYS 4097

/* ---- LLAMA_KERNEL_PROFILE=1: per-op GPU time (debugging aid) -------------------------
 * Each op is bracketed by events and synchronised, CUDA graphs are off, and the
 * totals go to stderr when the engine is freed. Timings include each launch's
 * latency, since the GPU idles between ops in this mode. */
#define PROF_OPS 12
static const char *prof_names[PROF_OPS] = {"embed", "rmsnorm attn", "qkv (+rope)", "rope+kv", "attention", "o proj",
                                           "rmsnorm ffn", "gate_up+swiglu", "down", "final norm+lm_head", "sample",
                                           "other"};
typedef struct {
    int on;
    cudaEvent_t a, b;
    double ms[PROF_OPS];
    long calls[PROF_OPS];
} prof_t;

#define SEGW 5 /* ints a run of a packed chunk (cuda_backend.seg) */

typedef struct cuda_backend {
    lk_backend base;
    int dev, sm_count, cc_major, cc_minor;
    cudaStream_t st;
    unsigned char *arena; /* the one device allocation */
    size_t arena_bytes;
    unsigned char *w;     /* weights block (in the arena) */
    unsigned char *host_w;/* staging copy the loader fills */
    half *kc, *vc;        /* [layer][slot][kv_head][max_seq][head_dim] */
    float *rope_cos, *rope_sin;
    lk_cuda_layout lay;
    int *tok, *slot, *pos;
    float *x, *logits, *attn_part;
    int *attn_cnt;
    half *h, *qkv, *att, *ffn;
    uint32_t *seen;
    lk_samp_params *samp_dev;
    lk_mm_ws ws;
    size_t kv_bytes, rope_bytes;
    int32_t *pinned;      /* [2][batch] fetched tokens (mapped: pinned_dev is its device address) */
    int32_t *pinned_dev;
    cudaEvent_t ev[2];
    /* how a step's tokens reach pinned (LLAMA_KERNEL_TOK_KERNEL, read at creation): TOK_SAMPLE the sampler
     * writes them (slot: its count of tokens a row, mirrored by tok_count), TOK_KERNEL k_tokens_out after
     * the step, TOK_COPY a copy. fetch_slot[which]: the slot fetch `which` reads */
    enum { TOK_COPY, TOK_KERNEL, TOK_SAMPLE } tok_mode;
    unsigned tok_count;
    int fetch_slot[2];
    lk_samp_scratch samp_sc;
    int rows_prefill, p0, pslot;
    int rows_distinct; /* every row its own slot (decode attention may then copy old K/V rows early) */
    /* a chunk packing several prompts (set_rows): its runs of consecutive positions of one slot, SEGW ints
     * each (first row, rows, first position, slot, first query block); capacity seg_cap runs. The runs' query
     * blocks of at most 64 rows for the flash kernel (lk_attn_args.qblk): qblk_host, uploaded to qblk_dev */
    int *seg, *qblk_host;
    int n_seg, seg_cap, n_qblk;
    int4 *qblk_dev;
    /* at least pos[r] + 1 of every current row: set_rows sets it, each sample() adds one (rows move to
     * pos + 1). Decode attention picks its kernel by it (lk_attention_decode_tc), so step graphs are
     * keyed by that choice too */
    int kv_hi;
    int fused_rope; /* the last qkv matmul already applied rope and wrote K/V */
    int variant;
    int tiled;     /* int4 weights in the tensor-core arrangement (see is_tiled) */
    int no_fusion; /* LLAMA_KERNEL_NO_FUSION=1: separate rope and RMSNorm kernels (kill switch) */
    int ffn_fused; /* LLAMA_KERNEL_FFN_FUSED=1: one-row o + FFN as one kernel (cu_ffn_block; opt-in) */
    unsigned *grid_bar; /* that kernel's grid barrier */
    unsigned *pd_sync;  /* the persistent decode kernel's counters (lay.persist) */
    /* the persistent decode kernel (lk_decode.cu) for one-row steps: pd_mode from LLAMA_KERNEL_PERSIST
     * (0 off, 1 on); pd_ok once the weights are in and the model qualifies; pd the launch's fixed args */
    int pd_mode, pd_ok;
    lk_pd_args pd;
    /* an RMSNorm asked for and not yet run: the next matmul takes it in its prologue or runs it first */
    const float *norm_w;
    int norm_rows, norm_op;
    prof_t prof;
    /* [2 MAX_GRAPH_KEYS]: by (key, decode attention kernel); graph_kv: what a step adds to kv_hi */
    cudaGraphExec_t *graphs;
    unsigned char *graph_state; /* 0 new, 1 warmed up, 2 captured, 3 capture unsupported: eager */
    int *graph_kv;
} cuda_backend;

#define CUB(be) ((cuda_backend *)(be))


/* int4 matrices are uploaded in the tensor-core (tiled) arrangement where the
 * measured table says it is faster (lk_mm_prefer_tiled: 2+ sequences), unless a
 * row-interleaved variant was asked for or LLAMA_KERNEL_TILED=0 */
static int is_tiled(const cuda_backend *b, const lk_mat *m) {
    return b->tiled && m->fmt == LK_WFMT_Q4 && lk_mm_prefer_tiled(b->base.opts->batch_size, m->n, m->k);
}

static lk_dmat dmat(const cuda_backend *b, const lk_mat *m) {
    lk_dmat d;
    d.w = b->w + m->off;
    d.p = m->fmt == LK_WFMT_Q4 ? (const half2 *)(b->w + m->off_params) : NULL;
    d.N = m->n;
    d.K = m->k;
    d.fmt = is_tiled(b, m) ? LK_WFMT_Q4_TILED : m->fmt;
    return d;
}

static lk_status cu_enter(lk_backend *be) {
    CU(cudaSetDevice(CUB(be)->dev));
    return LK_OK;
}

static void prof_begin(cuda_backend *b) {
    if (b->prof.on) cudaEventRecord(b->prof.a, b->st);
}
static void prof_end(cuda_backend *b, int op) {
    if (!b->prof.on) return;
    float ms = 0.0f;
    cudaEventRecord(b->prof.b, b->st);
    cudaEventSynchronize(b->prof.b);
    cudaEventElapsedTime(&ms, b->prof.a, b->prof.b);
    b->prof.ms[op] += ms;
    b->prof.calls[op]++;
}

static void cu_destroy(lk_backend *be) {
    cuda_backend *b = CUB(be);
    if (!b) return;
    cudaSetDevice(b->dev);
    if (b->prof.on) {
        double tot = 0;
        for (int i = 0; i < PROF_OPS; i++) tot += b->prof.ms[i];
        fprintf(stderr, "llama_kernel profile (GPU time per op, eager, synchronised):\n");
        for (int i = 0; i < PROF_OPS; i++)
            if (b->prof.calls[i])
                fprintf(stderr, "  %-20s %8ld calls %10.3f ms %8.2f us/call %5.1f%%\n", prof_names[i], b->prof.calls[i],
                        b->prof.ms[i], 1000.0 * b->prof.ms[i] / b->prof.calls[i], 100.0 * b->prof.ms[i] / tot);
        cudaEventDestroy(b->prof.a);
        cudaEventDestroy(b->prof.b);
    }
    if (b->graphs) {
        for (int i = 0; i < 2 * MAX_GRAPH_KEYS; i++)
            if (b->graphs[i]) cudaGraphExecDestroy(b->graphs[i]);
        free(b->graphs);
    }
    free(b->graph_state);
    free(b->graph_kv);
    if (b->st) cudaStreamSynchronize(b->st);
    for (int i = 0; i < 2; i++)
        if (b->ev[i]) cudaEventDestroy(b->ev[i]);
    if (b->pinned) cudaFreeHost(b->pinned);
    if (b->arena) cudaFree(b->arena);
    if (b->st) cudaStreamDestroy(b->st);
    free(b->host_w);
    free(b->seg);
    free(b->qblk_host);
    (void)cudaGetLastError();
    free(b);
}

static void pd_setup(cuda_backend *b);
static lk_status cu_decode_layers(lk_backend *be, int M, int *done);

static unsigned char *cu_weights_host(lk_backend *be) { return CUB(be)->host_w; }

/* rearrange the int4 matrices for the kernels (tiled, or nibbles interleaved),
 * upload, drop the host copy */
static lk_status cu_weights_commit(lk_backend *be) {
    cuda_backend *b = CUB(be);
    const lk_weights_layout *wl = be->wl;
    int n_mats = 0;
    const lk_mat *mats[2 + 4 * LK_MAX_LAYERS];
    if (be->opts->quant == LK_WFMT_Q4) {
        mats[n_mats++] = &wl->embed;
        if (!be->cfg->tied_embeddings) mats[n_mats++] = &wl->lm_head;
        for (int l = 0; l < be->cfg->n_layers; l++) {
            const lk_layer_layout *L = &wl->layers[l];
            mats[n_mats++] = &L->qkv;
            mats[n_mats++] = &L->o;
            mats[n_mats++] = &L->gate_up;
            mats[n_mats++] = &L->down;
        }
    }
    size_t tmp_bytes = 0;
    for (int i = 0; i < n_mats; i++)
        if (is_tiled(b, mats[i])) {
            size_t q = lk_q4_qs_bytes(mats[i]->n, mats[i]->k), p = lk_q4_params_bytes(mats[i]->n, mats[i]->k);
            if (q + p > tmp_bytes) tmp_bytes = q + p;
        }
    if (tmp_bytes) {
        unsigned char *tmp = (unsigned char *)malloc(tmp_bytes);
        if (!tmp) return lk_fail(LK_E_NOMEM, "out of host memory rearranging the weights (%zu bytes)", tmp_bytes);
        for (int i = 0; i < n_mats; i++) {
            const lk_mat *m = mats[i];
            if (!is_tiled(b, m)) continue;
            const size_t q = lk_q4_qs_bytes(m->n, m->k), p = lk_q4_params_bytes(m->n, m->k);
            lk_q4_tile(b->host_w + m->off, (const lk_q4_params *)(b->host_w + m->off_params), m->n, m->k, tmp,
                       (lk_q4_params *)(tmp + q));
            memcpy(b->host_w + m->off, tmp, q);
            memcpy(b->host_w + m->off_params, tmp + q, p);
        }
        free(tmp);
    }
    CU(cudaMemcpy(b->w, b->host_w, wl->total, cudaMemcpyHostToDevice));
    free(b->host_w);
    b->host_w = NULL;
    for (int i = 0; i < n_mats; i++) {
        if (is_tiled(b, mats[i])) continue;
        lk_status s = lk_q4_interleave(b->w + mats[i]->off, lk_q4_qs_bytes(mats[i]->n, mats[i]->k), b->st);
        if (s) return s;
    }
    CU(cudaStreamSynchronize(b->st));
    pd_setup(b);
    return LK_OK;
}

static lk_status cu_set_rows(lk_backend *be, int M, const int32_t *tok, const int32_t *slot, const int32_t *pos) {
    cuda_backend *b = CUB(be);
    const int rows = be->opts->prefill_chunk > be->opts->batch_size ? be->opts->prefill_chunk : be->opts->batch_size;
    if (M < 1 || M > rows) return lk_fail(LK_E_INVALID, "set_rows: %d rows (at most %d)", M, rows);
    int consecutive = 1;
    for (int i = 0; i < M; i++) {
        if (tok[i] < 0 || tok[i] >= be->cfg->vocab_size)
            return lk_fail(LK_E_INVALID, "token id %d is outside the vocabulary [0, %d)", tok[i], be->cfg->vocab_size);
        if (slot[i] < 0 || slot[i] >= be->opts->batch_size || pos[i] < 0 || pos[i] >= be->opts->max_seq_len)
            return lk_fail(LK_E_INVALID, "row %d: slot %d / position %d out of range", i, slot[i], pos[i]);
        if (slot[i] != slot[0] || pos[i] != pos[0] + i) consecutive = 0;
    }
    CU(cudaMemcpyAsync(b->tok, tok, (size_t)M * 4, cudaMemcpyHostToDevice, b->st));
    CU(cudaMemcpyAsync(b->slot, slot, (size_t)M * 4, cudaMemcpyHostToDevice, b->st));
    CU(cudaMemcpyAsync(b->pos, pos, (size_t)M * 4, cudaMemcpyHostToDevice, b->st));
    b->rows_prefill = consecutive && M > 1;
    b->n_seg = 0;
    if (!consecutive && M > be->opts->batch_size) {
        if (b->seg_cap < M) {
            int *ns = (int *)realloc(b->seg, (size_t)M * SEGW * sizeof(int));
            if (ns) b->seg = ns;
            int *nq = ns ? (int *)realloc(b->qblk_host, (size_t)M * 4 * sizeof(int)) : NULL;
            if (!nq) return lk_fail(LK_E_NOMEM, "out of memory (%d prompt rows)", M);
            b->qblk_host = nq;
            b->seg_cap = M;
        }
        for (int i = 0; i < M; i++) {
            int *g = b->seg + SEGW * (b->n_seg - 1);
            if (b->n_seg && slot[i] == g[3] && pos[i] == g[2] + g[1]) {
                g[1]++;
                continue;
            }
            g = b->seg + SEGW * b->n_seg++;
            g[0] = i;
            g[1] = 1;
            g[2] = pos[i];
            g[3] = slot[i];
        }
        /* each run's query blocks of at most 64 rows (at most one a row: the layout's M of them) */
        b->n_qblk = 0;
        for (int s = 0; s < b->n_seg; s++) {
            int *g = b->seg + SEGW * s;
            g[4] = b->n_qblk;
            for (int r = 0; r < g[1]; r += 64) {
                int *q = b->qblk_host + 4 * b->n_qblk++;
                q[0] = g[0] + r;
                q[1] = g[1] - r < 64 ? g[1] - r : 64;
                q[2] = g[2] + r;
                q[3] = g[3];
            }
        }
        CU(cudaMemcpyAsync(b->qblk_dev, b->qblk_host, (size_t)b->n_qblk * 16, cudaMemcpyHostToDevice, b->st));
    }
    b->kv_hi = 0;
    for (int i = 0; i < M; i++) b->kv_hi = pos[i] + 1 > b->kv_hi ? pos[i] + 1 : b->kv_hi;
    /* distinct slots: checked up to 64 rows (beyond that the forward runs without PDL, where the early
     * copies gain nothing) */
    int distinct = M <= 64;
    for (int i = 0; distinct && i < M; i++)
        for (int j = 0; j < i; j++)
            if (slot[j] == slot[i]) {
                distinct = 0;
                break;
            }
    b->rows_distinct = distinct;
    /* chunks that pack several prompts, and any forward above 64 rows, run without PDL: batch 16's
     * time to first token went 9.7 -> 10.8 ms with it, prefill of 2,048 tokens 23.5 -> 25.7 (v21,
     * v23); a 32-token prompt at batch 1 gained (2.6 -> 2.4 ms). (Decode steps of engines above 64
     * sequences are held too: not measured either way.) */
    lk_pdl_hold = (M > be->opts->batch_size && !b->rows_prefill) || M > 64;
    b->p0 = pos[0];
    b->pslot = slot[0];
    return LK_OK;
}

static lk_status cu_embed(lk_backend *be, int M) {
    cuda_backend *b = CUB(be);
    lk_dmat e = dmat(b, &be->wl->embed);
    prof_begin(b);
    lk_status s = lk_embed(&e, b->tok, M, be->cfg->dim, b->x, b->st);
    prof_end(b, 0);
    return s;
}

/* RMSNorm is lazy: it is recorded here, and the matmul that reads it (qkv after
 * the attention norm, gate_up after the FFN norm) folds it into its prologue
 * when it runs on the GEMV (lk_mm_fuses_norm), or runs the norm kernel first. */
static lk_status cu_rmsnorm(lk_backend *be, int M, int layer, int which) {
    cuda_backend *b = CUB(be);
    const lk_layer_layout *L = &be->wl->layers[layer];
    b->norm_w = (const float *)(b->w + (which == LK_NORM_ATTN ? L->attn_norm : L->ffn_norm));
    b->norm_rows = M;
    b->norm_op = which == LK_NORM_ATTN ? 1 : 6;
    return LK_OK;
}

static lk_status flush_norm(cuda_backend *b) {
    if (!b->norm_w) return LK_OK;
    const lk_config *c = b->base.cfg;
    prof_begin(b);
    lk_status s = lk_rmsnorm(b->x, b->norm_w, b->norm_rows, c->dim, c->rms_eps, b->h, b->st);
    prof_end(b, b->norm_op);
    b->norm_w = NULL;
    return s;
}

/* the pending norm as a prologue of W's matmul over M rows, or NULL (the norm kernel has run) */
static lk_status take_norm(cuda_backend *b, const lk_dmat *W, int M, lk_norm_in *nin, const lk_norm_in **use) {
    *use = NULL;
    if (!b->norm_w) return LK_OK;
    if (b->no_fusion || b->norm_rows != M || !lk_mm_fuses_norm(W, M, b->variant, b->cc_major, b->cc_minor))
        return flush_norm(b);
    nin->x = b->x;
    nin->w = b->norm_w;
    nin->eps = b->base.cfg->rms_eps;
    b->norm_w = NULL;
    *use = nin;
    return LK_OK;
}

static size_t layer_kv(const cuda_backend *b, int layer) {
    const lk_config *c = b->base.cfg;
    return (size_t)layer * (size_t)b->base.opts->batch_size * (size_t)c->n_kv_heads * (size_t)b->base.opts->max_seq_len *
           (size_t)c->head_dim;
}

static lk_status cu_matmul_impl(lk_backend *be, int M, int layer, int wid);
static lk_status cu_matmul(lk_backend *be, int M, int layer, int wid) {
    static const int op_of[4] = {2, 5, 7, 8};
    prof_begin(CUB(be));
    lk_status s = cu_matmul_impl(be, M, layer, wid);
    prof_end(CUB(be), op_of[wid & 3]);
    return s;
}

static lk_status cu_matmul_impl(lk_backend *be, int M, int layer, int wid) {
    cuda_backend *b = CUB(be);
    const lk_config *c = be->cfg;
    const lk_layer_layout *L = &be->wl->layers[layer];
    lk_dmat d;
    lk_norm_in nin_s;
    const lk_norm_in *nin = NULL;
    if (wid == LK_W_O || wid == LK_W_DOWN) TRY(flush_norm(b));
    switch (wid) {
    case LK_W_QKV:
        d = dmat(b, &L->qkv);
        TRY(take_norm(b, &d, M, &nin_s, &nin));
        b->fused_rope = 0;
        if (!b->no_fusion && lk_mm_uses_gemv(&d, M, b->variant, b->cc_major, b->cc_minor) &&
            c->head_dim % (d.fmt == LK_WFMT_Q4_TILED ? 32 : 4) == 0) {
            lk_rope_epi re;
            re.cos_t = b->rope_cos;
            re.sin_t = b->rope_sin;
            re.pos = b->pos;
            re.slot = b->slot;
            re.kc = b->kc + layer_kv(b, layer);
            re.vc = b->vc + layer_kv(b, layer);
            re.n_heads = c->n_heads;
            re.n_kv = c->n_kv_heads;
            re.hd = c->head_dim;
            re.max_seq = be->opts->max_seq_len;
            b->fused_rope = 1;
            return lk_cuda_matmul_qkv_rope(&d, b->h, M, c->dim, b->qkv, lk_qkv_dim(c), b->variant, &re, nin, &b->ws,
                                           b->sm_count, b->cc_major, b->cc_minor, b->st);
        }
        if (nin)
            return lk_cuda_matmul_norm(&d, nin, M, b->qkv, lk_qkv_dim(c), LK_OUT_F16, b->variant, &b->ws, b->sm_count,
                                       b->cc_major, b->cc_minor, b->st);
        return lk_cuda_matmul(&d, b->h, M, c->dim, b->qkv, lk_qkv_dim(c), LK_OUT_F16, b->variant, &b->ws, b->sm_count,
                              b->cc_major, b->cc_minor, b->st);
    case LK_W_O:
        d = dmat(b, &L->o);
        return lk_cuda_matmul(&d, b->att, M, lk_q_dim(c), b->x, c->dim, LK_OUT_ADD_F32, b->variant, &b->ws, b->sm_count,
                              b->cc_major, b->cc_minor, b->st);
    case LK_W_GATE_UP:
        d = dmat(b, &L->gate_up);
        TRY(take_norm(b, &d, M, &nin_s, &nin));
        if (nin)
            return lk_cuda_matmul_norm(&d, nin, M, b->ffn, c->hidden_dim, LK_OUT_SWIGLU_F16, b->variant, &b->ws,
                                       b->sm_count, b->cc_major, b->cc_minor, b->st);
        return lk_cuda_matmul(&d, b->h, M, c->dim, b->ffn, c->hidden_dim, LK_OUT_SWIGLU_F16, b->variant, &b->ws,
                              b->sm_count, b->cc_major, b->cc_minor, b->st);
    case LK_W_DOWN:
        d = dmat(b, &L->down);
        return lk_cuda_matmul(&d, b->ffn, M, c->hidden_dim, b->x, c->dim, LK_OUT_ADD_F32, b->variant, &b->ws,
                              b->sm_count, b->cc_major, b->cc_minor, b->st);
    }
    return lk_fail(LK_E_INVALID, "unknown matmul %d", wid);
}

/* o projection, FFN RMSNorm, gate_up and down of one row as one kernel (k_ffn_fused), with
 * LLAMA_KERNEL_FFN_FUSED=1. Opt-in: its two grid barriers cost more than the two kernel
 * boundaries they replace (H100, batch 1: 24.0 us per layer vs 22.2 for the three kernels,
 * 1,508 vs 1,559 tok/s; benchmarks/NOTES.md, v22). Kept, tested bit-exact against the separate
 * kernels, as the base for a persistent decode kernel with a cheaper barrier */
static lk_status cu_ffn_block(lk_backend *be, int M, int layer, int *done) {
    cuda_backend *b = CUB(be);
    const lk_config *c = be->cfg;
    const lk_layer_layout *L = &be->wl->layers[layer];
    *done = 0;
    if (!b->ffn_fused || M != 1) return LK_OK;
    lk_dmat o = dmat(b, &L->o), gu = dmat(b, &L->gate_up), dn = dmat(b, &L->down);
    if (!lk_mm_ffn_fusable(&o, &gu, &dn, M, b->variant, b->cc_major, b->cc_minor)) return LK_OK;
    TRY(flush_norm(b));
    lk_norm_in nin;
    nin.x = b->x;
    nin.w = (const float *)(b->w + L->ffn_norm);
    nin.eps = c->rms_eps;
    prof_begin(b);
    lk_status s = lk_cuda_ffn_fused(&o, &gu, &dn, b->att, b->x, b->ffn, &nin, b->grid_bar, b->sm_count, b->st);
    prof_end(b, 5);
    if (s == LK_OK) *done = 1;
    return s;
}

/* every layer of a one-row step as one persistent kernel (lk_decode.cu), where it applies: a
 * batch_size=1 engine (row-interleaved int4), sm_90+, LLAMA_KERNEL_PERSIST not 0 */
static lk_status cu_decode_layers(lk_backend *be, int M, int *done) {
    cuda_backend *b = CUB(be);
    *done = 0;
    if (!b->pd_ok || M != 1) return LK_OK;
    TRY(flush_norm(b));
    prof_begin(b);
    lk_status s = lk_pd_run(&b->pd, b->sm_count, b->st);
    prof_end(b, 11);
    if (s == LK_OK) *done = 1;
    return s;
}

/* after the upload: does the persistent decode kernel take this model (cu_decode_layers)? */
static void pd_setup(cuda_backend *b) {
    const lk_config *c = b->base.cfg;
    const lk_weights_layout *wl = b->base.wl;
    b->pd_ok = 0;
    if (!b->pd_mode || c->n_layers < 1) return;
    if (b->no_fusion || b->base.opts->quant != LK_WFMT_Q4) {
        fprintf(stderr, "llama_kernel: LLAMA_KERNEL_PERSIST=1 ignored: it needs int4 weights and fusion on\n");
        return;
    }
    const lk_layer_layout *L0 = &wl->layers[0];
    lk_dmat q = dmat(b, &L0->qkv), o = dmat(b, &L0->o), gu = dmat(b, &L0->gate_up), dn = dmat(b, &L0->down);
    const char *why = NULL;
    if (!lk_pd_supported(&q, &o, &gu, &dn, c->n_heads, c->n_kv_heads, c->head_dim, b->cc_major, &why)) {
        fprintf(stderr, "llama_kernel: LLAMA_KERNEL_PERSIST=1 ignored: the persistent decode kernel %s\n", why);
        return;
    }
    /* the kernel finds layer l at layer 0 + l * stride: every offset must move by the same stride */
    const size_t stride = c->n_layers > 1 ? wl->layers[1].qkv.off - L0->qkv.off : 0;
    for (int l = 1; l < c->n_layers; l++) {
        const lk_layer_layout *L = &wl->layers[l];
        const size_t d = (size_t)l * stride;
        if (L->qkv.off != L0->qkv.off + d || L->qkv.off_params != L0->qkv.off_params + d ||
            L->o.off != L0->o.off + d || L->o.off_params != L0->o.off_params + d ||
            L->gate_up.off != L0->gate_up.off + d || L->gate_up.off_params != L0->gate_up.off_params + d ||
            L->down.off != L0->down.off + d || L->down.off_params != L0->down.off_params + d ||
            L->attn_norm != L0->attn_norm + d || L->ffn_norm != L0->ffn_norm + d) {
            fprintf(stderr, "llama_kernel: LLAMA_KERNEL_PERSIST=1 ignored: the layers' weights are not evenly spaced\n");
            return;
        }
    }
    lk_pd_args *a = &b->pd;
    memset(a, 0, sizeof *a);
    a->qkv_w = (const unsigned char *)q.w, a->qkv_p = (const unsigned char *)q.p;
    a->o_w = (const unsigned char *)o.w, a->o_p = (const unsigned char *)o.p;
    a->gu_w = (const unsigned char *)gu.w, a->gu_p = (const unsigned char *)gu.p;
    a->dn_w = (const unsigned char *)dn.w, a->dn_p = (const unsigned char *)dn.p;
    a->attn_norm = b->w + L0->attn_norm;
    a->ffn_norm = b->w + L0->ffn_norm;
    a->layer_stride = stride;
    a->n_layers = c->n_layers;
    a->x = b->x;
    a->q = b->qkv;
    a->att = b->att;
    a->ffn = b->ffn;
    a->kc = b->kc;
    a->vc = b->vc;
    a->kv_layer = layer_kv(b, 1);
    a->slot = b->slot;
    a->pos = b->pos;
    a->cos_t = b->rope_cos;
    a->sin_t = b->rope_sin;
    a->part = b->attn_part;
    a->max_chunks = b->lay.attn_splits;
    a->sync = b->pd_sync;
    a->head_cnt = (int *)(b->pd_sync + 64);
    a->dim = c->dim;
    a->hidden = c->hidden_dim;
    a->n_heads = c->n_heads;
    a->n_kv = c->n_kv_heads;
    a->head_dim = c->head_dim;
    a->max_seq = b->base.opts->max_seq_len;
    a->eps = c->rms_eps;
    a->scale_log2 = 1.4426950408889634f / sqrtf((float)c->head_dim);
    b->pd_ok = 1;
}

static lk_status cu_rope_kv(lk_backend *be, int M, int layer) {
    cuda_backend *b = CUB(be);
    const lk_config *c = be->cfg;
    if (b->fused_rope) { /* done in the qkv matmul's epilogue */
        b->fused_rope = 0;
        return LK_OK;
    }
    prof_begin(b);
    lk_status s = lk_rope_kv(b->qkv, lk_qkv_dim(c), b->slot, b->pos, M, c->n_heads, c->n_kv_heads, c->head_dim,
                             b->rope_cos, b->rope_sin, b->kc + layer_kv(b, layer), b->vc + layer_kv(b, layer),
                             be->opts->max_seq_len, b->st);
    prof_end(b, 3);
    return s;
}

static lk_attn_args attn_args(cuda_backend *b, int M, int layer) {
    const lk_config *c = b->base.cfg;
    lk_attn_args a;
    a.qkv = b->qkv;
    a.qkv_ld = lk_qkv_dim(c);
    a.out = b->att;
    a.kc = b->kc + layer_kv(b, layer);
    a.vc = b->vc + layer_kv(b, layer);
    a.slot = b->slot;
    a.pos = b->pos;
    a.M = M;
    a.n_heads = c->n_heads;
    a.n_kv = c->n_kv_heads;
    a.head_dim = c->head_dim;
    a.max_seq = b->base.opts->max_seq_len;
    a.scale = 1.0f / sqrtf((float)c->head_dim);
    a.p0 = b->p0;
    a.pslot = b->pslot;
    a.part = b->attn_part;
    a.counters = b->attn_cnt;
    a.splits = b->lay.attn_splits;
    a.min_chunk = a.one_split = a.trigger = 0; /* (set per launch by lk_attention_decode) */
    a.prefetch = b->rows_distinct;
    a.max_len = b->kv_hi;
    a.qblk = nullptr;
    a.n_qblk = 0;
    return a;
}

/* the longest row (positions) for which a chunk packing several prompts takes the warp-per-row kernel
 * (lk_attention_rows) instead of the plain one: any (it won at every length measured, H200,
 * benchmarks/NOTES.md v76: 256 rows at 32 to 2,048 positions, 3.3-3.9x at head_dim 64, 2.5-2.9x at 128).
 * LLAMA_KERNEL_ATTN_ROWS=N bounds it (0: the plain kernel always; A/B and tests; read every call, only on
 * that path) */
static int attn_rows_max(void) {
    const char *e = getenv("LLAMA_KERNEL_ATTN_ROWS");
    return e && e[0] ? atoi(e) : INT_MAX;
}

/* rows [r0, r1) of a, as a call of their own */
static lk_attn_args rows_of(const lk_attn_args *a, int r0, int r1) {
    lk_attn_args f = *a;
    f.qkv += (size_t)r0 * a->qkv_ld;
    f.out += (size_t)r0 * a->n_heads * a->head_dim;
    f.slot += r0;
    f.pos += r0;
    f.M = r1 - r0;
    return f;
}

/* rows [r0, r1) of a packed chunk on the warp-per-row kernel (the plain one past attn_rows_max) */
static lk_status attention_rows_range(cuda_backend *b, const lk_attn_args *a, int r0, int r1) {
    const lk_attn_args f = rows_of(a, r0, r1);
    return b->kv_hi <= attn_rows_max() ? lk_attention_rows(&f, b->st) : lk_attention_plain(&f, b->st);
}

/* the fewest rows of one prompt's run (consecutive positions of one slot) in a packed chunk that get a flash
 * prefill call of their own (the wgmma kernel on Hopper) instead of joining the chunk's query blocks (one
 * launch): LLAMA_KERNEL_ATTN_SEG=N (0: none; read every call, only on that path), default 768. Since v79's
 * query blocks, the per-run calls lose below that (H200, session 33, time to first token, default 64 -> 768
 * -> 0: 4 x 512 tokens 9.48 -> 9.26 -> 9.25 ms, 16 x 128 10.2 -> 8.98 -> 8.97, 8 x 300 12.87 -> 12.28 ->
 * 12.26, 4 x 1,000 18.80 -> 18.76 -> 18.70: a run's own grid of 128 rows a block fills few SMs); the long
 * runs of long prompts keep the faster kernel */
static int attn_seg_min(void) {
    const char *e = getenv("LLAMA_KERNEL_ATTN_SEG");
    return e && e[0] ? atoi(e) : 768;
}

/* the shortest history (position) of a packed chunk's trailing single rows (the last tokens of the prompts
 * that end in it) for which they go to the split-KV decode kernel instead of the warp-per-row kernel, whose
 * warp walks a row's positions alone (v77, H200: two rows at position 999 kept it ~85 us a layer; time to
 * first token, 4 prompts x 1,000 tokens 21.3 -> 18.8 ms, 16 x 128 (rows at 127) 10.37 -> 10.21, 64 x 32 (at
 * 31) no change). LLAMA_KERNEL_ATTN_TAIL=N (0: never; read every call, only on that path), default 64 */
static int attn_tail_min(void) {
    const char *e = getenv("LLAMA_KERNEL_ATTN_TAIL");
    return e && e[0] ? atoi(e) : 64;
}

/* A packed chunk's rows between its flash runs and its tail (runs s0 .. s1 - 1, short prompts and short
 * parts): their query blocks in one flash launch (v79; LLAMA_KERNEL_ATTN_BLOCKS=0, read every call: the
 * warp-per-row kernel, or the plain one past attn_rows_max, as v76) */
static lk_status attention_stretch(cuda_backend *b, const lk_attn_args *a, int s0, int s1) {
    if (s0 >= s1) return LK_OK;
    const int *g0 = b->seg + SEGW * s0, *g1 = b->seg + SEGW * (s1 - 1);
    const char *e = getenv("LLAMA_KERNEL_ATTN_BLOCKS");
    if (e && e[0] == '0') return attention_rows_range(b, a, g0[0], g1[0] + g1[1]);
    lk_attn_args f = *a; /* (the blocks hold chunk rows) */
    f.qblk = b->qblk_dev + g0[4];
    f.n_qblk = (s1 < b->n_seg ? b->seg[SEGW * s1 + 4] : b->n_qblk) - g0[4];
    return lk_attention_prefill_blocks(&f, b->st);
}

/* A chunk packing several prompts (mixed slots, more rows than split-KV space). Each prompt's run of at
 * least attn_seg_min() rows (its body, consecutive positions of one slot, as prefill_packed lays them out)
 * is a flash prefill call of its own, so a batch of long prompts costs what one prompt of their total length
 * does. The chunk's trailing single rows (each finishing prompt's last token), when one of them has a long
 * history (attn_tail_min) and they fit the split-KV space, are one split-KV decode call. The runs between
 * go to attention_stretch, one call per stretch. */
static lk_status attention_packed(cuda_backend *b, const lk_attn_args *a) {
    const int seg_min = attn_seg_min(), tail_min = attn_tail_min();
    /* the trailing single rows: runs [ts, n_seg), rows [tail, M) */
    int ts = b->n_seg, tail = a->M, hist = 0;
    for (int i = b->n_seg - 1; i >= 0 && b->seg[SEGW * i + 1] == 1 && a->M - b->seg[SEGW * i] <= b->base.opts->batch_size;
         i--) {
        ts = i;
        tail = b->seg[SEGW * i];
        hist = b->seg[SEGW * i + 2] > hist ? b->seg[SEGW * i + 2] : hist;
    }
    if (tail_min <= 0 || hist < tail_min) ts = b->n_seg, tail = a->M;
    int ps = 0; /* first run not yet given to a kernel */
    for (int i = 0; i < ts; i++) {
        const int *g = b->seg + SEGW * i; /* first row, rows, first position, slot, first query block */
        if (seg_min <= 0 || g[1] < seg_min) continue;
        TRY(attention_stretch(b, a, ps, i));
        lk_attn_args f = rows_of(a, g[0], g[0] + g[1]);
        f.p0 = g[2];
        f.pslot = g[3];
        TRY(lk_attention_prefill(&f, b->st));
        ps = i + 1;
    }
    TRY(attention_stretch(b, a, ps, ts));
    if (tail == a->M) return LK_OK;
    lk_attn_args f = rows_of(a, tail, a->M);
    f.prefetch = 0; /* their older K/V rows were written by this chunk: nothing may be read before the wait */
    f.max_len = hist + 1;
    return lk_attention_decode(&f, b->st);
}

static lk_status cu_attention(lk_backend *be, int M, int layer) {
    cuda_backend *b = CUB(be);
    lk_attn_args a = attn_args(b, M, layer);
    lk_status s;
    prof_begin(b);
    if (!be->opts->flash_attention) s = lk_attention_plain(&a, b->st);
    else if (b->rows_prefill) s = lk_attention_prefill(&a, b->st);
    else if (M > be->opts->batch_size) s = attention_packed(b, &a); /* more rows than split-KV space */
    else s = lk_attention_decode(&a, b->st);
    prof_end(b, 4);
    return s;
}

static lk_status cu_logits(lk_backend *be, int src0, int n, int dst0) {
    cuda_backend *b = CUB(be);
    const lk_config *c = be->cfg;
    if (n < 1 || dst0 < 0 || dst0 + n > lk_logit_rows(be->opts))
        return lk_fail(LK_E_INVALID, "logits: rows [%d, %d) out of range", dst0, dst0 + n);
    TRY(flush_norm(b));
    prof_begin(b);
    const float *fx = b->x + (size_t)src0 * c->dim, *fw = (const float *)(b->w + be->wl->final_norm);
    float *lo = b->logits + (size_t)dst0 * c->vocab_size;
    lk_dmat d = dmat(b, &be->wl->lm_head);
    lk_status s;
    if (!b->no_fusion && lk_mm_fuses_norm(&d, n, b->variant, b->cc_major, b->cc_minor)) {
        const lk_norm_in nin = {fx, fw, c->rms_eps};
        s = lk_cuda_matmul_norm(&d, &nin, n, lo, c->vocab_size, LK_OUT_F32, b->variant, &b->ws, b->sm_count,
                                b->cc_major, b->cc_minor, b->st);
    } else {
        s = lk_rmsnorm(fx, fw, n, c->dim, c->rms_eps, b->h, b->st);
        if (!s)
            s = lk_cuda_matmul(&d, b->h, n, c->dim, lo, c->vocab_size, LK_OUT_F32, b->variant, &b->ws, b->sm_count,
                               b->cc_major, b->cc_minor, b->st);
    }
    prof_end(b, 9);
    return s;
}

static lk_status cu_read_logits(lk_backend *be, int row0, int n, float *out) {
    cuda_backend *b = CUB(be);
    const size_t V = (size_t)be->cfg->vocab_size;
    CU(cudaMemcpyAsync(out, b->logits + (size_t)row0 * V, (size_t)n * V * 4, cudaMemcpyDeviceToHost, b->st));
    CU(cudaStreamSynchronize(b->st));
    return LK_OK;
}

/* upload the staged (token, slot) pairs [0, m) (tokens in stage[0, m), slots in stage[cap, cap + m)) into b->tok
 * and b->slot, and add them */
static lk_status seen_flush(cuda_backend *b, const int32_t *stage, int m, int cap) {
    if (!m) return LK_OK;
    CU(cudaMemcpyAsync(b->tok, stage, (size_t)m * 4, cudaMemcpyHostToDevice, b->st));
    CU(cudaMemcpyAsync(b->slot, stage + cap, (size_t)m * 4, cudaMemcpyHostToDevice, b->st));
    const int V = b->base.cfg->vocab_size;
    return lk_seen_add(b->seen, (V + 31) / 32, b->tok, b->slot, m, V, b->st);
}

/* Every prompt's repetition-penalty history in one memset and two uploads (and one kernel) per b->tok's worth
 * of tokens; a pageable upload waits for the stream, so three operations a prompt, as before v78, cost a round
 * trip each (64 prompts: ~0.5 ms of the time to first token, H200). */
static lk_status cu_seen_reset(lk_backend *be, int slot0, int B, const int32_t *tokens, const int64_t *offs,
                               const int32_t *lens) {
    cuda_backend *b = CUB(be);
    const int words = (be->cfg->vocab_size + 31) / 32;
    CU(cudaMemsetAsync(b->seen + (size_t)slot0 * words, 0, (size_t)B * words * 4, b->st));
    const int cap = be->opts->prefill_chunk > be->opts->batch_size ? be->opts->prefill_chunk : be->opts->batch_size;
    int32_t *stage = (int32_t *)malloc((size_t)2 * cap * sizeof(int32_t));
    if (!stage) return lk_fail(LK_E_NOMEM, "out of memory (repetition-penalty upload)");
    lk_status s = LK_OK;
    int m = 0;
    for (int r = 0; r < B && !s; r++)
        for (int32_t i = 0; i < lens[r] && !s; i++) {
            stage[m] = tokens[offs[r] + i];
            stage[cap + m] = slot0 + r;
            if (++m == cap) {
                s = seen_flush(b, stage, m, cap);
                m = 0;
            }
        }
    if (!s) s = seen_flush(b, stage, m, cap);
    free(stage); /* a pageable upload has been staged when cudaMemcpyAsync returns */
    return s;
}

static lk_status cu_set_sampling(lk_backend *be, const lk_sampling *sp, uint64_t seq_id0) {
    cuda_backend *b = CUB(be);
    lk_samp_params p = {sp->temperature, sp->top_k, sp->top_p, sp->repetition_penalty, sp->seed, seq_id0};
    CU(cudaMemcpyAsync(b->samp_dev, &p, sizeof p, cudaMemcpyHostToDevice, b->st));
    if (b->tok_mode == cuda_backend::TOK_SAMPLE) { /* a batch's first sample writes slot 0 of every row */
        CU(cudaMemsetAsync(b->samp_sc.host_count, 0, (size_t)be->opts->batch_size * 4, b->st));
        b->tok_count = 0;
    }
    CU(cudaStreamSynchronize(b->st)); /* p lives on this stack frame */
    return LK_OK;
}

static lk_status cu_sample(lk_backend *be, int B) {
    cuda_backend *b = CUB(be);
    b->rows_prefill = 0;
    b->rows_distinct = B <= 64; /* k_sample sets row b to slot b */
    b->kv_hi++;
    prof_begin(b);
    lk_status s = lk_sample(b->logits, be->cfg->vocab_size, B, b->samp_dev, b->seen, b->tok, b->slot, b->pos,
                            &b->samp_sc, b->st);
    prof_end(b, 10);
    return s;
}

static lk_status cu_tokens_fetch(lk_backend *be, int B, int which) {
    cuda_backend *b = CUB(be);
    /* the engine fetches after every sample, `which` alternating while two are in flight. TOK_SAMPLE: the
     * sampler (inside the step's graph) already wrote the tokens to slot tok_count & 1, so the next step's
     * first kernel follows the sampler directly (benchmarks/NOTES.md v57); TOK_KERNEL: a kernel after the
     * step writes them to slot `which` (v55: the gap between steps 12.5 -> ~6 us); TOK_COPY: a copy */
    int slot = which & 1;
    if (b->tok_mode == cuda_backend::TOK_SAMPLE) {
        slot = (int)(b->tok_count++ & 1u);
    } else if (b->tok_mode == cuda_backend::TOK_KERNEL) {
        TRY(lk_tokens_out(b->tok, b->pinned_dev + (size_t)slot * be->opts->batch_size, B, b->st));
    } else {
        CU(cudaMemcpyAsync(b->pinned + (size_t)slot * be->opts->batch_size, b->tok, (size_t)B * 4,
                           cudaMemcpyDeviceToHost, b->st));
    }
    b->fetch_slot[which & 1] = slot;
    CU(cudaEventRecord(b->ev[which & 1], b->st));
    return LK_OK;
}

static lk_status cu_tokens_wait(lk_backend *be, int B, int which, int32_t *out) {
    cuda_backend *b = CUB(be);
    CU(cudaEventSynchronize(b->ev[which & 1]));
    memcpy(out, b->pinned + (size_t)b->fetch_slot[which & 1] * be->opts->batch_size, (size_t)B * 4);
    return LK_OK;
}

/* warm-up eagerly once per key, then capture, then replay. The key is the step's row count (the engine's
 * batch); the graph also depends on which decode attention kernel the rows' lengths pick, so that choice
 * is part of the index, and a replay adds to kv_hi what the captured step's host code added */
static lk_status cu_graph_run(lk_backend *be, int key, lk_status (*step)(void *), void *ctx) {
    cuda_backend *b = CUB(be);
    if (key < 0 || key >= MAX_GRAPH_KEYS) return step(ctx);
    if (b->prof.on) return step(ctx);
    const lk_config *c = be->cfg;
    key = 2 * key + lk_attention_decode_tc(c->head_dim, key, c->n_kv_heads, b->kv_hi);
    unsigned char *state = &b->graph_state[key];
    if (*state == 2) {
        CU(cudaGraphLaunch(b->graphs[key], b->st));
        b->kv_hi += b->graph_kv[key];
        return LK_OK;
    }
    if (*state == 0 || *state == 3) {
        if (*state == 0) *state = 1;
        return step(ctx);
    }
    cudaGraph_t g = NULL;
    CU(cudaStreamBeginCapture(b->st, cudaStreamCaptureModeThreadLocal));
    const int kv0 = b->kv_hi;
    lk_status s = step(ctx);
    b->graph_kv[key] = b->kv_hi - kv0;
    cudaError_t e = cudaStreamEndCapture(b->st, &g);
    if (s) {
        if (g) cudaGraphDestroy(g);
        (void)cudaGetLastError();
        return s;
    }
    if (e == cudaSuccess) e = cudaGraphInstantiate(&b->graphs[key], g, 0);
    if (g) cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        /* capture not possible here: stay eager for this key (the documented fallback) */
        (void)cudaGetLastError();
        *state = 3;
        return step(ctx);
    }
    *state = 2;
    CU(cudaGraphLaunch(b->graphs[key], b->st));
    return LK_OK;
}

static lk_status cu_sync(lk_backend *be) {
    CU(cudaStreamSynchronize(CUB(be)->st));
    return LK_OK;
}

static void cu_memory(lk_backend *be, lk_mem_plan *u) {
    cuda_backend *b = CUB(be);
    lk_backend_memory_common(be, u, b->kv_bytes, b->rope_bytes);
    u->activations = b->lay.activations;
    u->workspace = b->arena_bytes - u->weights - u->kv_cache - u->rope - u->activations;
    u->total = b->arena_bytes;
}

static const lk_backend_ops cuda_ops = {
    /* name */ "cuda",
    /* destroy */ cu_destroy,
    /* enter */ cu_enter,
    /* weights_host */ cu_weights_host,
    /* weights_commit */ cu_weights_commit,
    /* set_rows */ cu_set_rows,
    /* embed */ cu_embed,
    /* rmsnorm */ cu_rmsnorm,
    /* matmul */ cu_matmul,
    /* rope_kv */ cu_rope_kv,
    /* attention */ cu_attention,
    /* logits */ cu_logits,
    /* read_logits */ cu_read_logits,
    /* seen_reset */ cu_seen_reset,
    /* set_sampling */ cu_set_sampling,
    /* sample */ cu_sample,
    /* tokens_fetch */ cu_tokens_fetch,
    /* tokens_wait */ cu_tokens_wait,
    /* graph_run */ cu_graph_run,
    /* sync */ cu_sync,
    /* memory */ cu_memory,
    /* ffn_block */ cu_ffn_block,
    /* decode_layers */ cu_decode_layers,
};

extern "C" lk_status lk_cuda_backend_create(const lk_config *c, const lk_engine_opts *o, const lk_weights_layout *wl,
                                            lk_backend **out) {
    *out = NULL;
    lk_status s = lk_cuda_check_usable();
    if (s) return s;
    cuda_backend *b = (cuda_backend *)calloc(1, sizeof *b);
    if (!b) return lk_fail(LK_E_NOMEM, "out of memory");
    b->base.ops = &cuda_ops;
    b->base.cfg = c;
    b->base.opts = o;
    b->base.wl = wl;
    b->dev = 0;
    b->variant = o->matmul_variant;
    {
        const char *nf = getenv("LLAMA_KERNEL_NO_FUSION");
        b->no_fusion = nf && nf[0] == '1';
        const char *ff = getenv("LLAMA_KERNEL_FFN_FUSED");
        b->ffn_fused = !b->no_fusion && ff && ff[0] == '1';
        const char *pe = getenv("LLAMA_KERNEL_PERSIST");
        b->pd_mode = pe && pe[0] == '1';
        const char *pf = getenv("LLAMA_KERNEL_PROFILE");
        b->prof.on = pf && pf[0] == '1';
        /* the tiled tensor-core layout, for engines of 2+ sequences (lk_mm_prefer_tiled):
         * GPU tests, memcheck and racecheck clean, batch 16 +4% on H100 (benchmarks/NOTES.md,
         * v12); LLAMA_KERNEL_TILED=0 keeps every matrix row-interleaved */
        const char *tl = getenv("LLAMA_KERNEL_TILED");
        b->tiled = !(tl && tl[0] == '0') && b->variant != LK_MM_LUT && b->variant != LK_MM_OPTIMIZED;
    }
#define TRYB(x)                     \
    do {                            \
        lk_status s_ = (x);         \
        if (s_) {                   \
            cu_destroy(&b->base);   \
            return s_;              \
        }                           \
    } while (0)
#define CUB_(call) TRYB(((call) == cudaSuccess) ? LK_OK : lk_cuda_fail(cudaGetLastError(), #call, __FILE__, __LINE__))
    TRYB(cu_enter(&b->base));
    cudaDeviceProp p;
    {
        cudaError_t e = cudaGetDeviceProperties(&p, b->dev);
        if (e != cudaSuccess) TRYB(lk_cuda_fail(e, "cudaGetDeviceProperties", __FILE__, __LINE__));
    }
    b->sm_count = p.multiProcessorCount;
    b->cc_major = p.major;
    b->cc_minor = p.minor;
    {
        cudaError_t e = cudaStreamCreateWithFlags(&b->st, cudaStreamNonBlocking);
        if (e != cudaSuccess) TRYB(lk_cuda_fail(e, "cudaStreamCreate", __FILE__, __LINE__));
    }
    TRYB(lk_attention_init());
    if (b->prof.on && (cudaEventCreate(&b->prof.a) != cudaSuccess || cudaEventCreate(&b->prof.b) != cudaSuccess)) {
        (void)cudaGetLastError();
        b->prof.on = 0;
    }
    TRYB(lk_mm_init());
    lk_cuda_layout_make(c, o, &b->lay);
    const size_t half_ = (size_t)(c->head_dim / 2);
    b->kv_bytes = 2 * (size_t)c->n_layers * (size_t)o->batch_size * (size_t)o->max_seq_len * (size_t)lk_kv_dim(c) * 2;
    b->rope_bytes = 2 * lk_align_up((size_t)o->max_seq_len * half_ * 4, LK_ALIGN);
    const size_t off_kv = lk_align_up(wl->total, LK_ALIGN);
    const size_t off_rope = off_kv + lk_align_up(b->kv_bytes, LK_ALIGN);
    const size_t off_act = off_rope + b->rope_bytes;
    b->arena_bytes = off_act + b->lay.total;
    {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        cudaError_t e = cudaMalloc((void **)&b->arena, b->arena_bytes);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            b->arena = NULL;
            size_t need = b->arena_bytes;
            cu_destroy(&b->base);
            return lk_fail(LK_E_DEVICE_OOM,
                           "out of GPU memory: the model needs %zu bytes (weights %zu, KV cache %zu for max_seq_len=%d "
                           "x batch_size=%d, buffers %zu) but %zu of %zu bytes are free; lower max_seq_len or "
                           "batch_size, or use quantization=\"int4\"",
                           need, wl->total, (size_t)2 * c->n_layers * o->batch_size * o->max_seq_len * lk_kv_dim(c) * 2,
                           o->max_seq_len, o->batch_size, (size_t)(need - wl->total), fr, tot);
        }
    }
    b->w = b->arena;
    b->kc = (half *)(b->arena + off_kv);
    b->vc = (half *)(b->arena + off_kv + b->kv_bytes / 2);
    b->rope_cos = (float *)(b->arena + off_rope);
    b->rope_sin = (float *)(b->arena + off_rope + b->rope_bytes / 2);
    unsigned char *act = b->arena + off_act;
    b->tok = (int *)(act + b->lay.tok);
    b->slot = (int *)(act + b->lay.slot);
    b->pos = (int *)(act + b->lay.pos);
    b->x = (float *)(act + b->lay.x);
    b->h = (half *)(act + b->lay.h);
    b->qkv = (half *)(act + b->lay.qkv);
    b->att = (half *)(act + b->lay.att);
    b->ffn = (half *)(act + b->lay.ffn);
    b->logits = (float *)(act + b->lay.logits);
    b->seen = (uint32_t *)(act + b->lay.seen);
    b->attn_part = (float *)(act + b->lay.attn_part);
    b->attn_cnt = (int *)(act + b->lay.attn_cnt);
    b->qblk_dev = (int4 *)(act + b->lay.qblk);
    b->samp_dev = (lk_samp_params *)(act + b->lay.samp);
    b->ws.partial = (float *)(act + b->lay.mm_ws);
    b->ws.partial_floats = (size_t)LK_SPLITK_MAX * LK_GEMV_ROWS * (size_t)c->dim;
    b->ws.counters = (int *)(act + b->lay.mm_counters);
    b->ws.n_counters = c->dim;
    b->ws.tc_partial = b->lay.tc_ws_floats ? (float *)(act + b->lay.tc_ws) : NULL;
    b->ws.tc_partial_floats = b->lay.tc_ws_floats;
    b->ws.tc_counters = (int *)(act + b->lay.tc_counters);
    b->ws.tc_n_counters = LK_TC_COUNTERS;
    /* the tiled small-batch matmul's K split is for benchmarks only (it measured slower): none here */
    b->ws.tg_partial = NULL;
    b->ws.tg_partial_floats = 0;
    b->ws.tg_counters = NULL;
    b->ws.tg_n_counters = 0;
    b->grid_bar = (unsigned *)(act + b->lay.grid_bar);
    b->pd_sync = (unsigned *)(act + b->lay.persist);
    /* zeroed: the KV cache (never NaN garbage under a masked 0), counters, buffers */
    CUB_(cudaMemsetAsync(b->arena + off_kv, 0, b->arena_bytes - off_kv, b->st));
    /* rope tables from the one definition in lk_config.c */
    {
        size_t n = (size_t)o->max_seq_len * half_;
        float *tab = (float *)malloc(2 * n * sizeof(float));
        if (!tab) {
            cu_destroy(&b->base);
            return lk_fail(LK_E_NOMEM, "out of memory");
        }
        lk_rope_table(c, o->max_seq_len, tab, tab + n);
        cudaError_t e1 = cudaMemcpy(b->rope_cos, tab, n * 4, cudaMemcpyHostToDevice);
        cudaError_t e2 = cudaMemcpy(b->rope_sin, tab + n, n * 4, cudaMemcpyHostToDevice);
        free(tab);
        if (e1 != cudaSuccess || e2 != cudaSuccess)
            TRYB(lk_cuda_fail(e1 != cudaSuccess ? e1 : e2, "cudaMemcpy(rope tables)", __FILE__, __LINE__));
    }
    /* mapped, so a kernel can write the tokens into it (cu_tokens_fetch); where mapping is refused, plain
     * pinned memory and copies */
    if (cudaHostAlloc((void **)&b->pinned, 2 * (size_t)o->batch_size * 4, cudaHostAllocMapped) != cudaSuccess ||
        cudaHostGetDevicePointer((void **)&b->pinned_dev, b->pinned, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        if (b->pinned) cudaFreeHost(b->pinned);
        b->pinned = NULL;
        b->pinned_dev = NULL;
        CUB_(cudaHostAlloc((void **)&b->pinned, 2 * (size_t)o->batch_size * 4, cudaHostAllocDefault));
    }
    {
        const char *tk = getenv("LLAMA_KERNEL_TOK_KERNEL"); /* A/B: 0 copy, 1 k_tokens_out, default the sampler */
        b->tok_mode = !b->pinned_dev || (tk && tk[0] == '0') ? cuda_backend::TOK_COPY
                      : tk && tk[0] == '1'                  ? cuda_backend::TOK_KERNEL
                                                            : cuda_backend::TOK_SAMPLE;
    }
    b->samp_sc.keys = (unsigned long long *)(act + b->lay.samp_keys);
    b->samp_sc.arrive = (int *)(act + b->lay.samp_counts);
    b->samp_sc.host_count = b->samp_sc.arrive + o->batch_size;
    lk_samp_scratch_place(&b->samp_sc, act + b->lay.samp_cand);
    b->samp_sc.host_tok = b->tok_mode == cuda_backend::TOK_SAMPLE ? b->pinned_dev : NULL;
    b->samp_sc.host_stride = o->batch_size;
    CUB_(cudaEventCreateWithFlags(&b->ev[0], cudaEventDisableTiming));
    CUB_(cudaEventCreateWithFlags(&b->ev[1], cudaEventDisableTiming));
    b->graphs = (cudaGraphExec_t *)calloc(2 * MAX_GRAPH_KEYS, sizeof(cudaGraphExec_t));
    b->graph_state = (unsigned char *)calloc(2 * MAX_GRAPH_KEYS, 1);
    b->graph_kv = (int *)calloc(2 * MAX_GRAPH_KEYS, sizeof(int));
    b->host_w = (unsigned char *)malloc(lk_align_up(wl->total, LK_ALIGN));
    if (!b->graphs || !b->graph_state || !b->graph_kv || !b->host_w) {
        cu_destroy(&b->base);
        return lk_fail(LK_E_NOMEM, "out of host memory staging %zu bytes of weights", wl->total);
    }
    CUB_(cudaStreamSynchronize(b->st));
#undef CUB_
#undef TRYB
    *out = &b->base;
    return LK_OK;
}
