/* lk_model.c: weight layout and memory plan (see lk_model.h). */
#include "lk_model.h"

#include <stdlib.h>

typedef struct {
    size_t cur;
    int overflow;
} cursor;

static size_t place(cursor *c, size_t bytes) {
    size_t off = c->cur, end;
    if (lk_add_ov(off, bytes, &end) || lk_add_ov(end, LK_ALIGN, &end)) c->overflow = 1;
    else c->cur = lk_align_up(off + bytes, LK_ALIGN);
    return off;
}

static size_t mat_data_bytes(int fmt, size_t n, size_t k) { return fmt == LK_WFMT_Q4 ? lk_q4_qs_bytes(n, k) : n * k * 2; }

static lk_mat place_mat(cursor *c, int fmt, int32_t n, int32_t k) {
    lk_mat m = {n, k, fmt, 0, 0};
    m.off = place(c, mat_data_bytes(fmt, (size_t)n, (size_t)k));
    if (fmt == LK_WFMT_Q4) m.off_params = place(c, lk_q4_params_bytes((size_t)n, (size_t)k));
    return m;
}

size_t lk_mat_bytes(const lk_mat *m) {
    size_t b = lk_align_up(mat_data_bytes(m->fmt, (size_t)m->n, (size_t)m->k), LK_ALIGN);
    if (m->fmt == LK_WFMT_Q4) b += lk_align_up(lk_q4_params_bytes((size_t)m->n, (size_t)m->k), LK_ALIGN);
    return b;
}

static lk_status check_q4_dims(const lk_config *c) {
    struct { const char *what; int32_t k; } ks[] = {
        {"hidden_size", c->dim}, {"num_attention_heads * head_dim", lk_q_dim(c)}, {"intermediate_size", c->hidden_dim}};
    for (int i = 0; i < 3; i++)
        if (ks[i].k % LK_Q4_GROUP)
            return lk_fail(LK_E_INVALID,
                           "int4 quantization needs %s (%d) to be a multiple of the group size %d; "
                           "load this model with quantization=\"none\"",
                           ks[i].what, ks[i].k, LK_Q4_GROUP);
    return LK_OK;
}

lk_status lk_weights_layout_make(const lk_config *c, int fmt, lk_weights_layout *out) {
    memset(out, 0, sizeof *out);
    lk_status st = lk_config_validate(c);
    if (st) return st;
    if (fmt != LK_WFMT_Q4 && fmt != LK_WFMT_BF16) return lk_fail(LK_E_INVALID, "unknown weight format %d", fmt);
    if (fmt == LK_WFMT_Q4 && (st = check_q4_dims(c))) return st;
    out->layers = (lk_layer_layout *)calloc((size_t)c->n_layers, sizeof(lk_layer_layout));
    if (!out->layers) return lk_fail(LK_E_NOMEM, "out of memory");
    cursor cur = {0, 0};
    out->embed = place_mat(&cur, fmt, c->vocab_size, c->dim);
    out->bytes_embed = cur.cur;
    if (c->tied_embeddings) {
        out->lm_head = out->embed;
    } else {
        size_t before = cur.cur;
        out->lm_head = place_mat(&cur, fmt, c->vocab_size, c->dim);
        out->bytes_lm_head = cur.cur - before;
    }
    size_t before = cur.cur;
    out->final_norm = place(&cur, (size_t)c->dim * 4);
    out->bytes_norms = cur.cur - before;
    before = cur.cur;
    for (int l = 0; l < c->n_layers; l++) {
        lk_layer_layout *L = &out->layers[l];
        L->attn_norm = place(&cur, (size_t)c->dim * 4);
        L->ffn_norm = place(&cur, (size_t)c->dim * 4);
        L->qkv = place_mat(&cur, fmt, lk_qkv_dim(c), c->dim);
        L->o = place_mat(&cur, fmt, c->dim, lk_q_dim(c));
        L->gate_up = place_mat(&cur, fmt, 2 * c->hidden_dim, c->dim);
        L->down = place_mat(&cur, fmt, c->dim, c->hidden_dim);
    }
    out->bytes_layers = cur.cur - before;
    out->total = cur.cur;
    if (cur.overflow) {
        lk_weights_layout_free(out);
        return lk_fail(LK_E_INVALID, "config: model size overflows");
    }
    return LK_OK;
}

void lk_weights_layout_free(lk_weights_layout *l) {
    free(l->layers);
    memset(l, 0, sizeof *l);
}

lk_status lk_opts_validate(const lk_config *c, const lk_engine_opts *o) {
    (void)c;
    if (o->device != LK_DEV_CPU && o->device != LK_DEV_CUDA) return lk_fail(LK_E_INVALID, "unknown device %d", o->device);
    if (o->quant != LK_WFMT_Q4 && o->quant != LK_WFMT_BF16) return lk_fail(LK_E_INVALID, "unknown quantization %d", o->quant);
    if (o->max_seq_len < 1 || o->max_seq_len > LK_MAX_SEQ_LEN)
        return lk_fail(LK_E_INVALID, "max_seq_len = %d is outside [1, %d]", o->max_seq_len, LK_MAX_SEQ_LEN);
    if (o->batch_size < 1 || o->batch_size > 4096)
        return lk_fail(LK_E_INVALID, "batch_size = %d is outside [1, 4096]", o->batch_size);
    if (o->prefill_chunk < 1 || o->prefill_chunk > 65536)
        return lk_fail(LK_E_INVALID, "prefill_chunk = %d is outside [1, 65536]", o->prefill_chunk);
    if (o->n_threads < 0 || o->n_threads > 1024)
        return lk_fail(LK_E_INVALID, "n_threads = %d is outside [0, 1024]", o->n_threads);
    return LK_OK;
}

static int32_t max_rows(const lk_engine_opts *o) { return o->prefill_chunk > o->batch_size ? o->prefill_chunk : o->batch_size; }
static size_t seen_words(const lk_config *c) { return ((size_t)c->vocab_size + 31) / 32; }

void lk_cpu_layout_make(const lk_config *c, const lk_engine_opts *o, int n_threads, lk_cpu_layout *l) {
    cursor cur = {0, 0};
    size_t M = (size_t)max_rows(o);
    if (n_threads < 1) n_threads = 1;
    l->x = place(&cur, M * (size_t)c->dim * 4);
    l->h = place(&cur, M * (size_t)c->dim * 4);
    l->qkv = place(&cur, M * (size_t)lk_qkv_dim(c) * 4);
    l->att = place(&cur, M * (size_t)lk_q_dim(c) * 4);
    l->ffn = place(&cur, M * (size_t)c->hidden_dim * 4);
    l->logits = place(&cur, (size_t)lk_logit_rows(o) * (size_t)c->vocab_size * 4);
    l->scores = place(&cur, (size_t)n_threads * (size_t)o->max_seq_len * 4);
    /* tok, slot, pos per row; two fetched-token buffers and a
     * repetition-penalty bitmap per sequence */
    l->rows = place(&cur, M * 3 * 4 + 2 * (size_t)o->batch_size * 4 + (size_t)o->batch_size * seen_words(c) * 4);
    l->n_score_threads = n_threads;
    l->total = cur.cur;
}

#define LK_ATTN_TARGET_BLOCKS 512
#define LK_ATTN_MAX_SPLITS 64

void lk_cuda_layout_make(const lk_config *c, const lk_engine_opts *o, lk_cuda_layout *l) {
    cursor cur = {0, 0};
    size_t M = (size_t)max_rows(o), B = (size_t)o->batch_size;
    l->tok = place(&cur, M * 4);
    l->slot = place(&cur, M * 4);
    l->pos = place(&cur, M * 4);
    l->x = place(&cur, M * (size_t)c->dim * 4);
    l->h = place(&cur, M * (size_t)c->dim * 2);
    l->qkv = place(&cur, M * (size_t)lk_qkv_dim(c) * 2);
    l->att = place(&cur, M * (size_t)lk_q_dim(c) * 2);
    l->ffn = place(&cur, M * (size_t)c->hidden_dim * 2);
    l->logits = place(&cur, (size_t)lk_logit_rows(o) * (size_t)c->vocab_size * 4);
    l->activations = cur.cur;
    size_t units = B * (size_t)c->n_kv_heads;
    size_t splits = (LK_ATTN_TARGET_BLOCKS + units - 1) / units;
    if (splits > LK_ATTN_MAX_SPLITS) splits = LK_ATTN_MAX_SPLITS;
    if (splits < 1) splits = 1;
    l->attn_splits = (int32_t)splits;
    l->seen = place(&cur, B * seen_words(c) * 4);
    /* per (row, query head, split): running max, sum, and head_dim outputs */
    l->attn_part = place(&cur, B * (size_t)c->n_heads * splits * ((size_t)c->head_dim + 2) * 4);
    l->attn_cnt = place(&cur, B * (size_t)c->n_kv_heads * 4);
    /* a packed prefill chunk's query blocks for the flash kernel (16 bytes each, at most one a row) */
    l->qblk = place(&cur, M * 16);
    l->samp = place(&cur, 64); /* the sampling parameters */
    /* the sampler's scratch: argmax keys (8 bytes each), then two counts a row */
    l->samp_keys = place(&cur, (size_t)LK_SAMP_KEYS * 8);
    l->samp_counts = place(&cur, 2 * B * 4);
    /* and the split's candidates and masses of each of those blocks */
    l->samp_cand = place(&cur, LK_SAMP_CAND_BYTES);
    /* split-K partial sums of the residual-add GEMVs (outputs of size dim) and their arrival counters */
    l->mm_ws = place(&cur, (size_t)LK_SPLITK_MAX * LK_GEMV_ROWS * (size_t)c->dim * 4);
    l->mm_counters = place(&cur, (size_t)c->dim * 4);
    /* tensor-core split-K partial tiles of the narrow matrices (qkv, o, down): for
     * batched decode (5+ rows) and for short prompts, whose few output tiles would
     * not fill the GPU (a 32-token prompt on a batch-1 engine: 16-24 tiles on 132
     * SMs). Rows padded to the 64-row tile; at least one tile of rows. */
    {
        size_t rows = B > 64 ? (B + 63) / 64 * 64 : 64;
        size_t n = (size_t)(lk_qkv_dim(c) > c->dim ? lk_qkv_dim(c) : c->dim);
        l->tc_ws_floats = (size_t)LK_SPLITK_MAX * rows * ((n + 127) / 128 * 128);
    }
    l->tc_ws = place(&cur, l->tc_ws_floats * 4);
    l->tc_counters = place(&cur, (size_t)LK_TC_COUNTERS * 4);
    l->grid_bar = place(&cur, 64 * 4); /* the grid barrier of the fused o/gate_up/down kernel */
    /* the persistent decode kernel (lk_decode.cu): its barrier and exit counters, then a counter per query head */
    l->persist = place(&cur, 64 * 4 + (size_t)c->n_heads * 4);
    /* (the tiled small-batch matmul never splits K across blocks in an engine: no workspace) */
    l->workspace = cur.cur - l->activations;
    l->total = cur.cur;
}

lk_status lk_plan_memory(const lk_config *c, const lk_engine_opts *o, lk_mem_plan *p) {
    memset(p, 0, sizeof *p);
    lk_status st = lk_opts_validate(c, o);
    if (st) return st;
    lk_weights_layout wl;
    if ((st = lk_weights_layout_make(c, o->quant, &wl))) return st;
    p->weights = wl.total;
    p->weights_layers = wl.bytes_layers + wl.bytes_norms;
    p->weights_embed = wl.bytes_embed;
    p->weights_lm_head = wl.bytes_lm_head;
    lk_weights_layout_free(&wl);
    p->kv_per_token = (size_t)c->n_layers * 2 * (size_t)lk_kv_dim(c) * 2;
    p->kv_cache = p->kv_per_token * (size_t)o->max_seq_len * (size_t)o->batch_size;
    p->rope = 2 * lk_align_up((size_t)o->max_seq_len * (size_t)(c->head_dim / 2) * 4, LK_ALIGN);
    if (o->device == LK_DEV_CPU) {
        lk_cpu_layout cl;
        lk_cpu_layout_make(c, o, o->n_threads, &cl);
        p->activations = cl.scores; /* x .. logits */
        p->workspace = cl.total - p->activations;
    } else {
        lk_cuda_layout gl;
        lk_cuda_layout_make(c, o, &gl);
        p->activations = gl.activations;
        p->workspace = gl.workspace;
    }
    p->total = p->weights + p->kv_cache + p->rope + p->activations + p->workspace;
    return LK_OK;
}
