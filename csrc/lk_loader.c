/* lk_loader.c: checkpoint tensors -> the engine's weight block.
 *
 * Each Hugging Face tensor is checked (present, dtype BF16/F16/F32, exact
 * shape) and converted row by row, in parallel, into its place: q/k/v
 * projections become consecutive row ranges of one fused qkv matrix, and
 * gate/up of one gate_up matrix. Synthetic models go through the same code
 * with rows drawn from a seeded generator instead of a file.
 */
#include "lk_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    char name[128];
    const lk_st_tensor *src; /* NULL: synthetic */
    int is_vector;           /* norm weight (float32 destination) */
    int64_t rows, cols;      /* expected shape ([cols] for vectors) */
    const lk_mat *dst;       /* matrices: destination and first row */
    int64_t row0;
    size_t dst_off;          /* vectors */
    uint64_t seed;
} job;

/* one source row -> float32 */
static void src_row(const lk_st_tensor *t, int64_t r, int64_t cols, float *out) {
    const unsigned char *p = (const unsigned char *)t->data + (size_t)r * (size_t)cols * lk_dtype_size(t->dtype);
    for (int64_t i = 0; i < cols; i++) {
        if (t->dtype == LK_DT_F32) {
            float f;
            memcpy(&f, p + 4 * i, 4);
            out[i] = f;
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->dtype == LK_DT_BF16 ? lk_bf16_to_f32(h) : lk_f16_to_f32(h);
        }
    }
}

/* synthetic: approximately N(mean, std) from an Irwin-Hall sum of 4 uniforms,
 * deterministic per (seed, row) whatever the thread count */
static void synth_row(uint64_t seed, int64_t r, int64_t cols, float mean, float std, float *out) {
    uint64_t s = seed ^ ((uint64_t)r * 0xd1b54a32d192ed03ull);
    const float k = std * 1.7320508f / 32768.0f; /* var of sum of 4 U(0,65536) = 4 * 65536^2/12 */
    for (int64_t i = 0; i < cols; i++) {
        uint64_t z = lk_splitmix64(&s);
        int32_t a = (int32_t)(z & 0xffff) + (int32_t)((z >> 16) & 0xffff) + (int32_t)((z >> 32) & 0xffff) +
                    (int32_t)(z >> 48) - 131070;
        out[i] = mean + (float)a * k / 2.0f;
    }
}

static lk_status check_src(const lk_st_set *set, job *j) {
    const lk_st_tensor *t = j->src;
    const char *path = lk_st_set_path(set, t);
    if (t->dtype != LK_DT_BF16 && t->dtype != LK_DT_F16 && t->dtype != LK_DT_F32)
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s' has dtype %s; expected BF16, F16 or F32", path, j->name,
                       lk_dtype_name(t->dtype));
    int ok = j->is_vector ? (t->ndim == 1 && t->shape[0] == j->cols)
                          : (t->ndim == 2 && t->shape[0] == j->rows && t->shape[1] == j->cols);
    if (!ok) {
        char got[160] = "[";
        for (int d = 0; d < t->ndim; d++) {
            char b[32];
            snprintf(b, sizeof b, d ? ", %lld" : "%lld", (long long)t->shape[d]);
            strncat(got, b, sizeof got - strlen(got) - 2);
        }
        strcat(got, "]");
        if (j->is_vector)
            return lk_fail(LK_E_FORMAT, "%s: tensor '%s' has shape %s; the config needs [%lld]", path, j->name, got,
                           (long long)j->cols);
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s' has shape %s; the config needs [%lld, %lld]", path, j->name, got,
                       (long long)j->rows, (long long)j->cols);
    }
    return LK_OK;
}

static lk_status run_job(const job *j, unsigned char *block, const lk_st_set *set) {
    if (j->is_vector) {
        float *dst = (float *)(block + j->dst_off);
        if (j->src) src_row(j->src, 0, j->cols, dst);
        else synth_row(j->seed, 0, j->cols, 1.0f, 0.05f, dst);
        return LK_OK;
    }
    const lk_mat *m = j->dst;
    int64_t bad_row = -1;
    int64_t rows = j->rows, cols = j->cols;
    int failed_alloc = 0;
#pragma omp parallel reduction(| : failed_alloc)
    {
        float *buf = (float *)malloc((size_t)cols * sizeof(float));
        if (!buf) failed_alloc = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!buf) continue;
            if (j->src) src_row(j->src, r, cols, buf);
            else synth_row(j->seed, r, cols, 0.0f, 0.02f, buf);
            int64_t dr = j->row0 + r;
            if (m->fmt == LK_WFMT_Q4) {
                uint8_t *qs = block + m->off + (size_t)dr * (size_t)(cols / 2);
                lk_q4_params *pr = (lk_q4_params *)(block + m->off_params) + (size_t)dr * (size_t)(cols / LK_Q4_GROUP);
                if (lk_q4_quantize_row_ref(buf, cols, qs, pr)) {
#pragma omp atomic write
                    bad_row = r;
                }
            } else {
                uint16_t *d = (uint16_t *)(block + m->off) + (size_t)dr * (size_t)cols;
                for (int64_t i = 0; i < cols; i++) d[i] = lk_f32_to_bf16(buf[i]);
            }
        }
        free(buf);
    }
    if (failed_alloc) return lk_fail(LK_E_NOMEM, "out of memory converting '%s'", j->name);
    if (bad_row >= 0)
        return lk_fail(LK_E_FORMAT,
                       "%s: tensor '%s' row %lld has a value that is not finite or too large for int4 with fp16 "
                       "scales; load with quantization=\"none\" or check the checkpoint",
                       j->src ? lk_st_set_path(set, j->src) : "synthetic", j->name, (long long)bad_row);
    return LK_OK;
}

int lk_checkpoint_has_lm_head(const lk_st_set *set) { return lk_st_set_find(set, "lm_head.weight") != NULL; }

lk_status lk_weights_load(const lk_config *c, const lk_weights_layout *wl, const lk_st_set *set, uint64_t seed,
                          unsigned char *block, const lk_load_hooks *hooks) {
    const int64_t L = c->n_layers, per_layer = 9;
    const int64_t n_jobs = 3 + L * per_layer;
    job *jobs = (job *)calloc((size_t)n_jobs, sizeof(job));
    if (!jobs) return lk_fail(LK_E_NOMEM, "out of memory");
    int64_t n = 0;
    const int64_t qd = lk_q_dim(c), kvd = lk_kv_dim(c);
#define MAT(nm_fmt, nm_arg, matp, r0, nrows, ncols)                                        \
    do {                                                                                   \
        job *j_ = &jobs[n++];                                                              \
        snprintf(j_->name, sizeof j_->name, nm_fmt, nm_arg);                               \
        j_->dst = (matp); j_->row0 = (r0); j_->rows = (nrows); j_->cols = (ncols);         \
    } while (0)
#define VEC(nm_fmt, nm_arg, off, ncols)                                                    \
    do {                                                                                   \
        job *j_ = &jobs[n++];                                                              \
        snprintf(j_->name, sizeof j_->name, nm_fmt, nm_arg);                               \
        j_->is_vector = 1; j_->dst_off = (off); j_->cols = (ncols);                        \
    } while (0)
    MAT("%s", "model.embed_tokens.weight", &wl->embed, 0, c->vocab_size, c->dim);
    if (!c->tied_embeddings) MAT("%s", "lm_head.weight", &wl->lm_head, 0, c->vocab_size, c->dim);
    VEC("%s", "model.norm.weight", wl->final_norm, c->dim);
    for (int64_t l = 0; l < L; l++) {
        const lk_layer_layout *ly = &wl->layers[l];
        VEC("model.layers.%lld.input_layernorm.weight", (long long)l, ly->attn_norm, c->dim);
        VEC("model.layers.%lld.post_attention_layernorm.weight", (long long)l, ly->ffn_norm, c->dim);
        MAT("model.layers.%lld.self_attn.q_proj.weight", (long long)l, &ly->qkv, 0, qd, c->dim);
        MAT("model.layers.%lld.self_attn.k_proj.weight", (long long)l, &ly->qkv, qd, kvd, c->dim);
        MAT("model.layers.%lld.self_attn.v_proj.weight", (long long)l, &ly->qkv, qd + kvd, kvd, c->dim);
        MAT("model.layers.%lld.self_attn.o_proj.weight", (long long)l, &ly->o, 0, c->dim, qd);
        MAT("model.layers.%lld.mlp.gate_proj.weight", (long long)l, &ly->gate_up, 0, c->hidden_dim, c->dim);
        MAT("model.layers.%lld.mlp.up_proj.weight", (long long)l, &ly->gate_up, c->hidden_dim, c->hidden_dim, c->dim);
        MAT("model.layers.%lld.mlp.down_proj.weight", (long long)l, &ly->down, 0, c->dim, c->hidden_dim);
    }
#undef MAT
#undef VEC
    /* check everything before converting anything */
    lk_status st = LK_OK;
    uint64_t total = 0, done = 0;
    uint64_t s = seed;
    for (int64_t i = 0; i < n && !st; i++) {
        job *j = &jobs[i];
        j->seed = lk_splitmix64(&s);
        total += (uint64_t)(j->is_vector ? 1 : j->rows) * (uint64_t)j->cols;
        if (!set) continue;
        j->src = lk_st_set_find(set, j->name);
        if (!j->src) {
            st = lk_fail(LK_E_FORMAT, "tensor '%s' is missing from the checkpoint (%s%s)", j->name,
                         set->n_files ? set->files[0].path : "?", set->n_files > 1 ? " and other shards" : "");
            break;
        }
        st = check_src(set, j);
    }
    for (int64_t i = 0; i < n && !st; i++) {
        if (hooks && hooks->check && hooks->check(hooks->ctx)) {
            st = lk_fail(LK_E_INTERRUPTED, "interrupted while loading weights");
            break;
        }
        st = run_job(&jobs[i], block, set);
        done += (uint64_t)(jobs[i].is_vector ? 1 : jobs[i].rows) * (uint64_t)jobs[i].cols;
        if (!st && hooks && hooks->progress) hooks->progress(hooks->ctx, done, total);
    }
    free(jobs);
    return st;
}
