/* lk_cpu.c: the CPU backend. Every op of lk_backend.h in C, float32
 * activations, fp16 KV cache, OpenMP across output rows / heads / rows.
 *
 * It exists so that the whole system runs and is tested on machines with
 * no GPU (CI has none), and it is the reference the CUDA backend is checked
 * against. The inner loops are in lk_cpu_kernels.c (scalar + AVX2).
 */
#include "../lk_backend.h"
#include "../lk_sample.h"
#include "lk_cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct cpu_backend {
    lk_backend base;
    unsigned char *w;      /* weight block (owned) */
    unsigned char *act;    /* activation block, lk_cpu_layout (owned) */
    lk_cpu_layout lay;
    uint16_t *kcache;      /* fp16 [layers][batch][max_seq][kv_dim] */
    uint16_t *vcache;      /* same */
    float *rope_cos;       /* [max_seq][head_dim/2] */
    float *rope_sin;
    float *x, *h, *qkv, *att, *ffn, *logits, *scores;
    int32_t *tok, *slot, *pos; /* [rows] */
    int32_t *fetched[2];   /* [batch] */
    uint32_t *seen;        /* [batch][ceil(vocab/32)] */
    size_t seen_words;
    int32_t rows;          /* max rows of one forward */
    int nthreads;
    lk_sampling sp;
    uint64_t seq_id0;
    size_t kv_bytes, rope_bytes;
    const lk_cpu_kernels *k;
} cpu_backend;

#define CPU(be) ((cpu_backend *)(be))

static const unsigned char *wptr(const cpu_backend *b, size_t off) { return b->w + off; }

/* ---- matmul ---------------------------------------------------------------
 * y = x W^T for M rows. W rows are dequantized 4 at a time into a per-thread
 * buffer and dotted with every x row, so each weight byte is read once per
 * call whatever M is. */

typedef void (*emit_fn)(cpu_backend *b, int m, int64_t n, float v, void *ctx);

static void dequant_rows(const cpu_backend *b, const lk_mat *m, int64_t r0, int nr, float *buf) {
    const int64_t k = m->k;
    for (int r = 0; r < nr; r++) {
        int64_t row = r0 + r;
        if (m->fmt == LK_WFMT_Q4)
            b->k->dequant_q4(wptr(b, m->off) + (size_t)row * (size_t)(k / 2),
                             (const lk_q4_params *)wptr(b, m->off_params) + (size_t)row * (size_t)(k / LK_Q4_GROUP), k,
                             buf + r * k);
        else
            b->k->dequant_bf16((const uint16_t *)wptr(b, m->off) + (size_t)row * (size_t)k, k, buf + r * k);
    }
    for (int r = nr; r < 4; r++) memset(buf + r * k, 0, (size_t)k * sizeof(float));
}

/* out[m * ldo + n] (op)= (x W^T)[m][n], for n in [0, N): op store or add */
static lk_status matmul(cpu_backend *b, const lk_mat *m, const float *x, int M, int ldx, float *out, int ldo, int add,
                        int64_t N) {
    const int64_t K = m->k;
    int failed = 0;
#pragma omp parallel num_threads(b->nthreads) reduction(| : failed)
    {
        float *buf = (float *)malloc((size_t)(4 * K) * sizeof(float));
        if (!buf) failed = 1;
#pragma omp for schedule(static)
        for (int64_t n0 = 0; n0 < N; n0 += 4) {
            if (!buf) continue;
            int nr = N - n0 < 4 ? (int)(N - n0) : 4;
            dequant_rows(b, m, n0, nr, buf);
            for (int r = 0; r < M; r++) {
                float d[4];
                b->k->dot4(buf, K, x + (size_t)r * ldx, d);
                float *o = out + (size_t)r * ldo + n0;
                for (int j = 0; j < nr; j++) o[j] = add ? o[j] + d[j] : d[j];
            }
        }
        free(buf);
    }
    return failed ? lk_fail(LK_E_NOMEM, "out of memory in CPU matmul") : LK_OK;
}

/* FFN[m][j] = silu(gate_j . x_m) * (up_j . x_m): rows j and hidden + j */
static lk_status matmul_swiglu(cpu_backend *b, const lk_mat *m, const float *x, int M, int ldx, float *out,
                               int64_t hidden) {
    const int64_t K = m->k;
    int failed = 0;
#pragma omp parallel num_threads(b->nthreads) reduction(| : failed)
    {
        float *buf = (float *)malloc((size_t)(8 * K) * sizeof(float));
        if (!buf) failed = 1;
#pragma omp for schedule(static)
        for (int64_t j0 = 0; j0 < hidden; j0 += 4) {
            if (!buf) continue;
            int nr = hidden - j0 < 4 ? (int)(hidden - j0) : 4;
            dequant_rows(b, m, j0, nr, buf);
            dequant_rows(b, m, hidden + j0, nr, buf + 4 * K);
            for (int r = 0; r < M; r++) {
                float g[4], u[4];
                b->k->dot4(buf, K, x + (size_t)r * ldx, g);
                b->k->dot4(buf + 4 * K, K, x + (size_t)r * ldx, u);
                float *o = out + (size_t)r * hidden + j0;
                for (int j = 0; j < nr; j++) o[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
            }
        }
        free(buf);
    }
    return failed ? lk_fail(LK_E_NOMEM, "out of memory in CPU matmul") : LK_OK;
}

/* ---- ops ----------------------------------------------------------------- */

static lk_status cpu_set_rows(lk_backend *be, int M, const int32_t *tok, const int32_t *slot, const int32_t *pos) {
    cpu_backend *b = CPU(be);
    if (M < 1 || M > b->rows) return lk_fail(LK_E_INVALID, "set_rows: %d rows (at most %d)", M, b->rows);
    for (int i = 0; i < M; i++) {
        if (tok[i] < 0 || tok[i] >= be->cfg->vocab_size)
            return lk_fail(LK_E_INVALID, "token id %d is outside the vocabulary [0, %d)", tok[i], be->cfg->vocab_size);
        if (slot[i] < 0 || slot[i] >= be->opts->batch_size || pos[i] < 0 || pos[i] >= be->opts->max_seq_len)
            return lk_fail(LK_E_INVALID, "row %d: slot %d / position %d out of range", i, slot[i], pos[i]);
    }
    memcpy(b->tok, tok, (size_t)M * 4);
    memcpy(b->slot, slot, (size_t)M * 4);
    memcpy(b->pos, pos, (size_t)M * 4);
    return LK_OK;
}

static lk_status cpu_embed(lk_backend *be, int M) {
    cpu_backend *b = CPU(be);
    const lk_mat *e = &be->wl->embed;
    const int64_t D = be->cfg->dim;
    for (int r = 0; r < M; r++) {
        int64_t t = b->tok[r];
        if (e->fmt == LK_WFMT_Q4)
            b->k->dequant_q4(wptr(b, e->off) + (size_t)t * (size_t)(D / 2),
                             (const lk_q4_params *)wptr(b, e->off_params) + (size_t)t * (size_t)(D / LK_Q4_GROUP), D,
                             b->x + (size_t)r * D);
        else
            b->k->dequant_bf16((const uint16_t *)wptr(b, e->off) + (size_t)t * (size_t)D, D, b->x + (size_t)r * D);
    }
    return LK_OK;
}

static void rmsnorm_rows(cpu_backend *b, const float *x, float *out, const float *w, int r0, int n) {
    const int64_t D = b->base.cfg->dim;
    const float eps = b->base.cfg->rms_eps;
    for (int r = r0; r < r0 + n; r++) {
        const float *xr = x + (size_t)r * D;
        double ss = 0.0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float inv = 1.0f / sqrtf((float)(ss / (double)D) + eps);
        float *o = out + (size_t)(r - r0) * D;
        for (int64_t i = 0; i < D; i++) o[i] = xr[i] * inv * w[i];
    }
}

static lk_status cpu_rmsnorm(lk_backend *be, int M, int layer, int which) {
    cpu_backend *b = CPU(be);
    const lk_layer_layout *L = &be->wl->layers[layer];
    rmsnorm_rows(b, b->x, b->h, (const float *)wptr(b, which == LK_NORM_ATTN ? L->attn_norm : L->ffn_norm), 0, M);
    return LK_OK;
}

static lk_status cpu_matmul(lk_backend *be, int M, int layer, int wid) {
    cpu_backend *b = CPU(be);
    const lk_config *c = be->cfg;
    const lk_layer_layout *L = &be->wl->layers[layer];
    switch (wid) {
    case LK_W_QKV: return matmul(b, &L->qkv, b->h, M, c->dim, b->qkv, lk_qkv_dim(c), 0, lk_qkv_dim(c));
    case LK_W_O: return matmul(b, &L->o, b->att, M, lk_q_dim(c), b->x, c->dim, 1, c->dim);
    case LK_W_GATE_UP: return matmul_swiglu(b, &L->gate_up, b->h, M, c->dim, b->ffn, c->hidden_dim);
    case LK_W_DOWN: return matmul(b, &L->down, b->ffn, M, c->hidden_dim, b->x, c->dim, 1, c->dim);
    }
    return lk_fail(LK_E_INVALID, "unknown matmul %d", wid);
}

static size_t kv_index(const cpu_backend *b, int layer, int slot, int pos) {
    const lk_engine_opts *o = b->base.opts;
    return (((size_t)layer * (size_t)o->batch_size + (size_t)slot) * (size_t)o->max_seq_len + (size_t)pos) *
           (size_t)lk_kv_dim(b->base.cfg);
}

static void rotate(float *v, const float *cs, const float *sn, int half) {
    for (int i = 0; i < half; i++) {
        float a = v[i], c = v[i + half];
        v[i] = a * cs[i] - c * sn[i];
        v[i + half] = c * cs[i] + a * sn[i];
    }
}

static lk_status cpu_rope_kv(lk_backend *be, int M, int layer) {
    cpu_backend *b = CPU(be);
    const lk_config *c = be->cfg;
    const int hd = c->head_dim, half = hd / 2, qd = lk_q_dim(c), kvd = lk_kv_dim(c);
    for (int r = 0; r < M; r++) {
        float *row = b->qkv + (size_t)r * lk_qkv_dim(c);
        const float *cs = b->rope_cos + (size_t)b->pos[r] * half, *sn = b->rope_sin + (size_t)b->pos[r] * half;
        for (int h = 0; h < c->n_heads + c->n_kv_heads; h++) rotate(row + h * hd, cs, sn, half);
        uint16_t *kd = b->kcache + kv_index(b, layer, b->slot[r], b->pos[r]);
        uint16_t *vd = b->vcache + kv_index(b, layer, b->slot[r], b->pos[r]);
        for (int i = 0; i < kvd; i++) {
            kd[i] = lk_f32_to_f16(row[qd + i]);
            vd[i] = lk_f32_to_f16(row[qd + kvd + i]);
        }
    }
    return LK_OK;
}

static lk_status cpu_attention(lk_backend *be, int M, int layer) {
    cpu_backend *b = CPU(be);
    const lk_config *c = be->cfg;
    const int hd = c->head_dim, group = c->n_heads / c->n_kv_heads, kvd = lk_kv_dim(c);
    const float scale = 1.0f / sqrtf((float)hd);
    const int64_t units = (int64_t)M * c->n_heads;
#pragma omp parallel for num_threads(b->nthreads) schedule(dynamic, 4)
    for (int64_t u = 0; u < units; u++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *s = b->scores + (size_t)tid * (size_t)be->opts->max_seq_len;
        const int r = (int)(u / c->n_heads), h = (int)(u % c->n_heads), kvh = h / group;
        const float *q = b->qkv + (size_t)r * lk_qkv_dim(c) + (size_t)h * hd;
        const int n = b->pos[r] + 1;
        const uint16_t *K = b->kcache + kv_index(b, layer, b->slot[r], 0) + (size_t)kvh * hd;
        const uint16_t *V = b->vcache + kv_index(b, layer, b->slot[r], 0) + (size_t)kvh * hd;
        float mx = -INFINITY;
        for (int t = 0; t < n; t++) {
            s[t] = b->k->dot_f16(q, K + (size_t)t * kvd, hd) * scale;
            mx = s[t] > mx ? s[t] : mx;
        }
        float sum = 0.0f;
        for (int t = 0; t < n; t++) {
            s[t] = expf(s[t] - mx);
            sum += s[t];
        }
        float *o = b->att + (size_t)r * lk_q_dim(c) + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        const float inv = 1.0f / sum;
        for (int t = 0; t < n; t++) b->k->axpy_f16(s[t] * inv, V + (size_t)t * kvd, o, hd);
    }
    return LK_OK;
}

static lk_status cpu_logits(lk_backend *be, int src0, int n, int dst0) {
    cpu_backend *b = CPU(be);
    const lk_config *c = be->cfg;
    if (n < 1 || dst0 < 0 || dst0 + n > lk_logit_rows(be->opts))
        return lk_fail(LK_E_INVALID, "logits: rows [%d, %d) out of range", dst0, dst0 + n);
    rmsnorm_rows(b, b->x, b->h, (const float *)wptr(b, be->wl->final_norm), src0, n);
    return matmul(b, &be->wl->lm_head, b->h, n, c->dim, b->logits + (size_t)dst0 * c->vocab_size, c->vocab_size, 0,
                  c->vocab_size);
}

static lk_status cpu_read_logits(lk_backend *be, int row0, int n, float *out) {
    cpu_backend *b = CPU(be);
    memcpy(out, b->logits + (size_t)row0 * be->cfg->vocab_size, (size_t)n * be->cfg->vocab_size * sizeof(float));
    return LK_OK;
}

static lk_status cpu_seen_reset(lk_backend *be, int slot0, int B, const int32_t *tokens, const int64_t *offs,
                                const int32_t *lens) {
    cpu_backend *b = CPU(be);
    for (int r = 0; r < B; r++) {
        uint32_t *s = b->seen + (size_t)(slot0 + r) * b->seen_words;
        const int32_t *t = tokens + offs[r];
        memset(s, 0, b->seen_words * 4);
        for (int32_t i = 0; i < lens[r]; i++)
            if (t[i] >= 0 && t[i] < be->cfg->vocab_size) s[t[i] >> 5] |= 1u << (t[i] & 31);
    }
    return LK_OK;
}

static lk_status cpu_set_sampling(lk_backend *be, const lk_sampling *sp, uint64_t seq_id0) {
    CPU(be)->sp = *sp;
    CPU(be)->seq_id0 = seq_id0;
    return LK_OK;
}

static lk_status cpu_sample(lk_backend *be, int B) {
    cpu_backend *b = CPU(be);
    const int32_t V = be->cfg->vocab_size;
#pragma omp parallel for num_threads(b->nthreads) schedule(static)
    for (int r = 0; r < B; r++) {
        uint32_t *seen = b->seen + (size_t)r * b->seen_words;
        float u = lk_uniform(b->sp.seed, b->seq_id0 + (uint64_t)r, (uint64_t)b->pos[r] + 1);
        int32_t t = lk_sample_row(b->logits + (size_t)r * V, V, seen, &b->sp, u);
        b->tok[r] = t;
        b->slot[r] = r;
        b->pos[r] += 1;
        seen[t >> 5] |= 1u << (t & 31);
    }
    return LK_OK;
}

static lk_status cpu_tokens_fetch(lk_backend *be, int B, int which) {
    memcpy(CPU(be)->fetched[which & 1], CPU(be)->tok, (size_t)B * 4);
    return LK_OK;
}

static lk_status cpu_tokens_wait(lk_backend *be, int B, int which, int32_t *out) {
    memcpy(out, CPU(be)->fetched[which & 1], (size_t)B * 4);
    return LK_OK;
}

static lk_status cpu_sync(lk_backend *be) {
    (void)be;
    return LK_OK;
}

static void cpu_memory(lk_backend *be, lk_mem_plan *u) {
    cpu_backend *b = CPU(be);
    lk_backend_memory_common(be, u, b->kv_bytes, b->rope_bytes);
    u->activations = b->lay.scores;
    u->workspace = b->lay.total - b->lay.scores;
    u->total = u->weights + u->kv_cache + u->rope + u->activations + u->workspace;
}

static void cpu_destroy(lk_backend *be) {
    cpu_backend *b = CPU(be);
    if (!b) return;
    free(b->w);
    free(b->act);
    free(b->kcache);
    free(b->vcache);
    free(b->rope_cos);
    free(b->rope_sin);
    free(b);
}

static unsigned char *cpu_weights_host(lk_backend *be) { return CPU(be)->w; }
static lk_status cpu_weights_commit(lk_backend *be) {
    (void)be;
    return LK_OK;
}

static const lk_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .weights_host = cpu_weights_host,
    .weights_commit = cpu_weights_commit,
    .set_rows = cpu_set_rows,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .rope_kv = cpu_rope_kv,
    .attention = cpu_attention,
    .logits = cpu_logits,
    .read_logits = cpu_read_logits,
    .seen_reset = cpu_seen_reset,
    .set_sampling = cpu_set_sampling,
    .sample = cpu_sample,
    .tokens_fetch = cpu_tokens_fetch,
    .tokens_wait = cpu_tokens_wait,
    .graph_run = NULL,
    .sync = cpu_sync,
    .memory = cpu_memory,
};

lk_status lk_cpu_backend_create(const lk_config *c, const lk_engine_opts *o, const lk_weights_layout *wl,
                                lk_backend **out) {
    *out = NULL;
    cpu_backend *b = (cpu_backend *)calloc(1, sizeof *b);
    if (!b) return lk_fail(LK_E_NOMEM, "out of memory");
    b->base.ops = &cpu_ops;
    b->base.cfg = c;
    b->base.opts = o;
    b->base.wl = wl;
    b->k = lk_cpu_kernels_get();
    b->nthreads = o->n_threads > 0 ? o->n_threads : 1;
    lk_cpu_layout_make(c, o, b->nthreads, &b->lay);
    b->rows = o->prefill_chunk > o->batch_size ? o->prefill_chunk : o->batch_size;
    b->seen_words = ((size_t)c->vocab_size + 31) / 32;
    const size_t half = (size_t)(c->head_dim / 2);
    b->kv_bytes = 2 * (size_t)c->n_layers * (size_t)o->batch_size * (size_t)o->max_seq_len * (size_t)lk_kv_dim(c) * 2;
    b->rope_bytes = 2 * lk_align_up((size_t)o->max_seq_len * half * 4, LK_ALIGN);
    b->w = (unsigned char *)aligned_alloc(LK_ALIGN, lk_align_up(wl->total, LK_ALIGN));
    b->act = (unsigned char *)aligned_alloc(LK_ALIGN, lk_align_up(b->lay.total, LK_ALIGN));
    b->kcache = (uint16_t *)malloc(b->kv_bytes / 2);
    b->vcache = (uint16_t *)malloc(b->kv_bytes / 2);
    b->rope_cos = (float *)malloc(b->rope_bytes / 2);
    b->rope_sin = (float *)malloc(b->rope_bytes / 2);
    if (!b->w || !b->act || !b->kcache || !b->vcache || !b->rope_cos || !b->rope_sin) {
        size_t want = wl->total + b->lay.total + b->kv_bytes + b->rope_bytes;
        cpu_destroy(&b->base);
        return lk_fail(LK_E_NOMEM,
                       "out of host memory allocating %zu bytes (weights %zu, KV cache %zu); lower max_seq_len or "
                       "batch_size",
                       want, wl->total, b->kv_bytes);
    }
    memset(b->act, 0, b->lay.total);
    b->x = (float *)(b->act + b->lay.x);
    b->h = (float *)(b->act + b->lay.h);
    b->qkv = (float *)(b->act + b->lay.qkv);
    b->att = (float *)(b->act + b->lay.att);
    b->ffn = (float *)(b->act + b->lay.ffn);
    b->logits = (float *)(b->act + b->lay.logits);
    b->scores = (float *)(b->act + b->lay.scores);
    b->tok = (int32_t *)(b->act + b->lay.rows);
    b->slot = b->tok + b->rows;
    b->pos = b->slot + b->rows;
    b->fetched[0] = b->pos + b->rows;
    b->fetched[1] = b->fetched[0] + o->batch_size;
    b->seen = (uint32_t *)(b->fetched[1] + o->batch_size);
    lk_rope_table(c, o->max_seq_len, b->rope_cos, b->rope_sin);
    *out = &b->base;
    return LK_OK;
}
