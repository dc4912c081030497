/* lk_engine.c: model loading, the forward pass over the backend ops, and the
 * generation loop (prefill, packed across the batch's prompts, then batched decode steps, with the
 * decode step captured as a CUDA graph where the backend offers it). */
#include "lk_engine.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

struct lk_engine {
    lk_config cfg;
    lk_engine_opts opts;
    lk_weights_layout wl;
    lk_backend *be;
    pthread_mutex_t lock;
};

int lk_default_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

lk_status lk_engine_create(const lk_config *cfg, const lk_engine_opts *opts, const char *const *paths, int n_paths,
                           uint64_t seed, const lk_engine_hooks *hooks, lk_engine **out) {
    *out = NULL;
    lk_engine *e = (lk_engine *)calloc(1, sizeof *e);
    if (!e) return lk_fail(LK_E_NOMEM, "out of memory");
    e->cfg = *cfg;
    e->opts = *opts;
    if (e->opts.n_threads == 0) e->opts.n_threads = lk_default_threads();
    lk_st_set set = {0};
    lk_status st = lk_config_validate(&e->cfg);
    if (!st) st = lk_opts_validate(&e->cfg, &e->opts);
    if (!st && n_paths > 0) {
        st = lk_st_set_open(paths, n_paths, &set);
        if (!st) e->cfg.tied_embeddings = e->cfg.tied_embeddings || !lk_checkpoint_has_lm_head(&set);
    }
    if (!st) st = lk_weights_layout_make(&e->cfg, e->opts.quant, &e->wl);
    /* all memory first: a model that does not fit fails before any weight is read */
    if (!st) {
        if (e->opts.device == LK_DEV_CUDA) st = lk_cuda_backend_create(&e->cfg, &e->opts, &e->wl, &e->be);
        else st = lk_cpu_backend_create(&e->cfg, &e->opts, &e->wl, &e->be);
    }
    if (!st) {
        lk_load_hooks lh = {hooks ? hooks->progress : NULL, hooks ? hooks->check : NULL, hooks ? hooks->ctx : NULL};
        st = lk_weights_load(&e->cfg, &e->wl, n_paths > 0 ? &set : NULL, seed, e->be->ops->weights_host(e->be), &lh);
    }
    lk_st_set_close(&set);
    if (!st) st = e->be->ops->weights_commit(e->be);
    if (st) {
        if (e->be) e->be->ops->destroy(e->be);
        lk_weights_layout_free(&e->wl);
        free(e);
        return st;
    }
    pthread_mutex_init(&e->lock, NULL);
    *out = e;
    return LK_OK;
}

void lk_engine_destroy(lk_engine *e) {
    if (!e) return;
    if (e->be) e->be->ops->destroy(e->be);
    lk_weights_layout_free(&e->wl);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

const lk_config *lk_engine_config(const lk_engine *e) { return &e->cfg; }
const lk_engine_opts *lk_engine_opts_get(const lk_engine *e) { return &e->opts; }
const char *lk_engine_backend_name(const lk_engine *e) { return e->be->ops->name; }

static lk_status enter(lk_engine *e) { return e->be->ops->enter ? e->be->ops->enter(e->be) : LK_OK; }

void lk_engine_memory(lk_engine *e, lk_mem_plan *used, lk_mem_plan *plan) {
    pthread_mutex_lock(&e->lock);
    enter(e);
    e->be->ops->memory(e->be, used);
    lk_plan_memory(&e->cfg, &e->opts, plan);
    pthread_mutex_unlock(&e->lock);
}

#define TRY(x)                          \
    do {                                \
        lk_status st_ = (x);            \
        if (st_ != LK_OK) return st_;   \
    } while (0)

static int interrupted(const lk_engine_hooks *hk) { return hk && hk->check && hk->check(hk->ctx); }

/* One forward over the M rows set in the backend; logits are separate. */
static lk_status forward(lk_engine *e, int M, const lk_engine_hooks *hk) {
    lk_backend *be = e->be;
    const lk_backend_ops *op = be->ops;
    TRY(op->embed(be, M));
    int all = 0; /* the backend ran every layer at once (its persistent decode kernel) */
    if (op->decode_layers) TRY(op->decode_layers(be, M, &all));
    if (all) return interrupted(hk) ? lk_fail(LK_E_INTERRUPTED, "interrupted") : LK_OK;
    for (int l = 0; l < e->cfg.n_layers; l++) {
        TRY(op->rmsnorm(be, M, l, LK_NORM_ATTN));
        TRY(op->matmul(be, M, l, LK_W_QKV));
        TRY(op->rope_kv(be, M, l));
        TRY(op->attention(be, M, l));
        int done = 0;
        if (op->ffn_block) TRY(op->ffn_block(be, M, l, &done));
        if (!done) {
            TRY(op->matmul(be, M, l, LK_W_O));
            TRY(op->rmsnorm(be, M, l, LK_NORM_FFN));
            TRY(op->matmul(be, M, l, LK_W_GATE_UP));
            TRY(op->matmul(be, M, l, LK_W_DOWN));
        }
        if (interrupted(hk)) return lk_fail(LK_E_INTERRUPTED, "interrupted");
    }
    return LK_OK;
}

/* Prefill positions [0, n) of `slot`, in chunks; leaves the last row's
 * hidden state as row (chunk length - 1). Returns that row via *last_row. */
static lk_status prefill(lk_engine *e, int slot, const int32_t *tokens, int32_t n, const lk_engine_hooks *hk,
                         int *last_row, float *all_logits) {
    lk_backend *be = e->be;
    const int32_t chunk = e->opts.prefill_chunk, V = e->cfg.vocab_size, LR = lk_logit_rows(&e->opts);
    int32_t *rows = (int32_t *)malloc((size_t)chunk * 2 * sizeof(int32_t));
    if (!rows) return lk_fail(LK_E_NOMEM, "out of memory");
    lk_status st = LK_OK;
    for (int32_t c0 = 0; c0 < n && !st; c0 += chunk) {
        int32_t m = n - c0 < chunk ? n - c0 : chunk;
        for (int32_t i = 0; i < m; i++) {
            rows[i] = slot;
            rows[chunk + i] = c0 + i;
        }
        st = be->ops->set_rows(be, m, tokens + c0, rows, rows + chunk);
        if (!st) st = forward(e, m, hk);
        if (!st && all_logits) {
            for (int32_t r0 = 0; r0 < m && !st; r0 += LR) {
                int32_t nr = m - r0 < LR ? m - r0 : LR;
                st = be->ops->logits(be, r0, nr, 0);
                if (!st) st = be->ops->read_logits(be, 0, nr, all_logits + (size_t)(c0 + r0) * V);
            }
        }
        *last_row = m - 1;
    }
    free(rows);
    return st;
}

/* Prefill of several prompts (slots 0..B-1) packed into chunks of up to
 * prefill_chunk rows, so a batch of short prompts costs a few large matmuls
 * instead of B small ones. Row order inside a chunk is free (each row's
 * attention reads its own slot's cache, which the layer fills for every row
 * first), so the last token of every prompt that ends in a chunk goes to the
 * chunk's end, and one logits call covers those prompts (consecutive slots)
 * into logits rows b0... */
static lk_status prefill_packed(lk_engine *e, const lk_gen_request *rq, int seq0, int B, const int64_t *offs,
                                const lk_engine_hooks *hk) {
    lk_backend *be = e->be;
    const int32_t C = e->opts.prefill_chunk;
    int32_t *buf = (int32_t *)malloc((size_t)C * 3 * sizeof(int32_t));
    if (!buf) return lk_fail(LK_E_NOMEM, "out of memory");
    int32_t *tok = buf, *slot = buf + C, *pos = buf + 2 * (size_t)C;
    lk_status st = LK_OK;
    int b = 0;        /* first prompt not yet finished */
    int32_t used = 0; /* its tokens already prefilled */
    while (b < B && !st) {
        /* which prompts this chunk takes: whole remainders while they fit, then a part of one */
        int32_t m = 0;
        int bb = b, fin = 0;
        int32_t take_last = 0; /* tokens of prompt bb taken when it does not finish */
        for (; bb < B; bb++) {
            const int32_t rem = rq->lens[seq0 + bb] - (bb == b ? used : 0);
            if (rem <= C - m) {
                m += rem;
                fin++;
                continue;
            }
            take_last = C - m;
            m = C;
            break;
        }
        /* bodies (all but each finishing prompt's last token) first, then the last tokens */
        int32_t r = 0, tail = m - fin;
        for (int k = b; k < b + fin; k++) {
            const int32_t *p = rq->tokens + offs[seq0 + k];
            const int32_t n = rq->lens[seq0 + k];
            for (int32_t i = k == b ? used : 0; i < n - 1; i++, r++) {
                tok[r] = p[i];
                slot[r] = k;
                pos[r] = i;
            }
            tok[tail + (k - b)] = p[n - 1];
            slot[tail + (k - b)] = k;
            pos[tail + (k - b)] = n - 1;
        }
        if (take_last) {
            const int32_t *p = rq->tokens + offs[seq0 + bb];
            const int32_t i0 = bb == b ? used : 0;
            for (int32_t i = 0; i < take_last; i++, r++) {
                tok[r] = p[i0 + i];
                slot[r] = bb;
                pos[r] = i0 + i;
            }
        }
        st = be->ops->set_rows(be, m, tok, slot, pos);
        if (!st) st = forward(e, m, hk);
        if (!st && fin) st = be->ops->logits(be, tail, fin, b);
        if (take_last) {
            used = (bb == b ? used : 0) + take_last;
            b = bb;
        } else {
            used = 0;
            b += fin;
        }
    }
    free(buf);
    return st;
}

static lk_status check_tokens(const lk_engine *e, const int32_t *t, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= e->cfg.vocab_size)
            return lk_fail(LK_E_INVALID, "%s[%lld] = %d is outside the vocabulary [0, %d)", what, (long long)i, t[i],
                           e->cfg.vocab_size);
    return LK_OK;
}

lk_status lk_engine_logits(lk_engine *e, const int32_t *tokens, int32_t n, float *out, const lk_engine_hooks *hk) {
    if (n < 1) return lk_fail(LK_E_INVALID, "input_ids is empty");
    if (n > e->opts.max_seq_len)
        return lk_fail(LK_E_INVALID, "input_ids has %d tokens but max_seq_len is %d; load with a larger max_seq_len", n,
                       e->opts.max_seq_len);
    TRY(check_tokens(e, tokens, n, "input_ids"));
    pthread_mutex_lock(&e->lock);
    int last = 0;
    lk_status st = enter(e);
    if (!st) st = prefill(e, 0, tokens, n, hk, &last, out);
    if (!st) st = e->be->ops->sync(e->be);
    pthread_mutex_unlock(&e->lock);
    return st;
}

lk_status lk_sampling_validate(const lk_sampling *sp) {
    if (!isfinite(sp->temperature) || sp->temperature < 0.0f)
        return lk_fail(LK_E_INVALID, "temperature = %g must be >= 0 (0 means greedy)", (double)sp->temperature);
    if (!(sp->top_p > 0.0f && sp->top_p <= 1.0f))
        return lk_fail(LK_E_INVALID, "top_p = %g must be in (0, 1] (1 turns it off)", (double)sp->top_p);
    if (sp->top_k < 0) return lk_fail(LK_E_INVALID, "top_k = %d must be >= 0 (0 turns it off)", sp->top_k);
    if (!(sp->repetition_penalty > 0.0f) || !isfinite(sp->repetition_penalty))
        return lk_fail(LK_E_INVALID, "repetition_penalty = %g must be > 0 (1 turns it off)",
                       (double)sp->repetition_penalty);
    return LK_OK;
}

typedef struct {
    lk_engine *e;
    int B;
} step_ctx;

/* one decode step: forward over the B current rows, logits, sample */
static lk_status decode_step(void *p) {
    step_ctx *s = (step_ctx *)p;
    lk_backend *be = s->e->be;
    TRY(forward(s->e, s->B, NULL));
    TRY(be->ops->logits(be, 0, s->B, 0));
    return be->ops->sample(be, s->B);
}

static int is_stop(const lk_gen_request *rq, int32_t t) {
    if (rq->ignore_eos) return 0;
    for (int i = 0; i < rq->n_stop; i++)
        if (rq->stop_ids[i] == t) return 1;
    return 0;
}

typedef struct {
    int32_t *tok;  /* [B] tokens of one step */
    int32_t *seqs; /* [B] scratch for the callback */
    int32_t *outt; /* [B] */
    uint8_t *done; /* [B] */
} batch_scratch;

/* appends step tokens; returns the number of sequences still running */
static int take_tokens(const lk_gen_request *rq, int seq0, int B, batch_scratch *s, const lk_engine_hooks *hk,
                       lk_status *st) {
    int n = 0, running = 0;
    for (int b = 0; b < B; b++) {
        if (s->done[b]) continue;
        int seq = seq0 + b;
        int32_t *len = &rq->out_lens[seq];
        rq->out[(size_t)seq * rq->max_new_tokens + *len] = s->tok[b];
        (*len)++;
        s->seqs[n] = seq;
        s->outt[n] = s->tok[b];
        n++;
        if (is_stop(rq, s->tok[b]) || *len >= rq->max_new_tokens) s->done[b] = 1;
        else running++;
    }
    if (n && hk && hk->on_tokens && hk->on_tokens(hk->ctx, s->seqs, s->outt, n))
        *st = lk_fail(LK_E_INTERRUPTED, "stopped by callback");
    else if (interrupted(hk))
        *st = lk_fail(LK_E_INTERRUPTED, "interrupted");
    return running;
}

static lk_status run_batch(lk_engine *e, const lk_gen_request *rq, int seq0, int B, const int64_t *offs,
                           const lk_engine_hooks *hk, lk_gen_stats *stats, double t_start, batch_scratch *s) {
    lk_backend *be = e->be;
    const lk_backend_ops *op = be->ops;
    int32_t *slot = s->seqs, *pos = s->outt; /* free until the first take_tokens */
    double t0 = now_s();
    if (B > 1) TRY(prefill_packed(e, rq, seq0, B, offs, hk));
    /* every prompt's repetition-penalty history in one call (v78: one memset and an upload a chunk, not three
     * operations a prompt) */
    TRY(op->seen_reset(be, 0, B, rq->tokens, offs + seq0, rq->lens + seq0));
    for (int b = 0; b < B; b++) {
        const int32_t *prompt = rq->tokens + offs[seq0 + b];
        const int32_t n = rq->lens[seq0 + b];
        int last = 0;
        if (B == 1) {
            TRY(prefill(e, b, prompt, n, hk, &last, NULL));
            TRY(op->logits(be, last, 1, b));
        }
        stats->prefill_tokens += n;
        s->tok[b] = prompt[n - 1];
        slot[b] = b;
        pos[b] = n - 1;
        s->done[b] = 0;
    }
    /* rows for sampling: sample() moves each row to (new token, pos + 1) */
    TRY(op->set_rows(be, B, s->tok, slot, pos));
    TRY(op->set_sampling(be, &rq->sampling, rq->seq_id0 + (uint64_t)seq0));
    TRY(op->sample(be, B));
    TRY(op->tokens_fetch(be, B, 0));
    TRY(op->tokens_wait(be, B, 0, s->tok));
    double t1 = now_s();
    stats->prefill_s += t1 - t0;
    if (seq0 == 0) stats->first_token_s = t1 - t_start;
    lk_status st = LK_OK;
    int running = take_tokens(rq, seq0, B, s, hk, &st);
    stats->generated_tokens += B;
    /* Decode: step i+1 is queued before the host reads step i's tokens, so
     * the GPU never waits for the host's stop checks; the step after the last
     * needed one is wasted work, never wrong output. */
    step_ctx sc = {e, B};
    int which = 0, in_flight = 0;
    int64_t steps = 0;
    while (!st && running > 0) {
        if (!in_flight) {
            st = op->graph_run && e->opts.cuda_graphs ? op->graph_run(be, B, decode_step, &sc) : decode_step(&sc);
            if (!st) st = op->tokens_fetch(be, B, which);
            if (st) break;
            steps++;
        }
        /* queue the next step while this one's tokens travel, if any may be needed */
        int need_more = 0;
        for (int b = 0; b < B; b++)
            if (!s->done[b] && rq->out_lens[seq0 + b] + 1 < rq->max_new_tokens) need_more = 1;
        in_flight = 0;
        if (need_more) {
            st = op->graph_run && e->opts.cuda_graphs ? op->graph_run(be, B, decode_step, &sc) : decode_step(&sc);
            if (!st) st = op->tokens_fetch(be, B, which ^ 1);
            if (st) break;
            steps++;
            in_flight = 1;
        }
        st = op->tokens_wait(be, B, which, s->tok);
        if (st) break;
        int before = 0;
        for (int b = 0; b < B; b++) before += !s->done[b];
        running = take_tokens(rq, seq0, B, s, hk, &st);
        stats->generated_tokens += before;
        which ^= 1;
    }
    lk_status st2 = op->sync(be); /* drain a step queued past the end */
    stats->decode_steps += steps;
    stats->decode_s += now_s() - t1;
    return st ? st : st2;
}

lk_status lk_engine_generate(lk_engine *e, const lk_gen_request *rq, const lk_engine_hooks *hk, lk_gen_stats *stats) {
    lk_gen_stats dummy;
    if (!stats) stats = &dummy;
    memset(stats, 0, sizeof *stats);
    if (rq->n_seqs < 1) return lk_fail(LK_E_INVALID, "no prompts given");
    if (rq->max_new_tokens < 0) return lk_fail(LK_E_INVALID, "max_new_tokens = %d must be >= 0", rq->max_new_tokens);
    TRY(lk_sampling_validate(&rq->sampling));
    int64_t *offs = (int64_t *)malloc((size_t)rq->n_seqs * sizeof(int64_t));
    if (!offs) return lk_fail(LK_E_NOMEM, "out of memory");
    int64_t off = 0;
    lk_status st = LK_OK;
    for (int32_t i = 0; i < rq->n_seqs && !st; i++) {
        const int32_t n = rq->lens[i];
        offs[i] = off;
        rq->out_lens[i] = 0;
        if (n < 1) st = lk_fail(LK_E_INVALID, "prompt %d is empty", i);
        else if ((int64_t)n + rq->max_new_tokens > e->opts.max_seq_len)
            st = lk_fail(LK_E_INVALID,
                         "prompt %d has %d tokens and max_new_tokens is %d: %lld positions, but max_seq_len is %d; "
                         "shorten the prompt, lower max_new_tokens or load with a larger max_seq_len",
                         i, n, rq->max_new_tokens, (long long)n + rq->max_new_tokens, e->opts.max_seq_len);
        else st = check_tokens(e, rq->tokens + off, n, "prompt token");
        off += n;
    }
    if (st || rq->max_new_tokens == 0) {
        free(offs);
        return st;
    }
    const int Bmax = e->opts.batch_size;
    batch_scratch s;
    void *mem = malloc((size_t)Bmax * (3 * sizeof(int32_t) + 1));
    if (!mem) {
        free(offs);
        return lk_fail(LK_E_NOMEM, "out of memory");
    }
    s.tok = (int32_t *)mem;
    s.seqs = s.tok + Bmax;
    s.outt = s.seqs + Bmax;
    s.done = (uint8_t *)(s.outt + Bmax);
    pthread_mutex_lock(&e->lock);
    double t_start = now_s();
    st = enter(e);
    for (int32_t seq0 = 0; seq0 < rq->n_seqs && !st; seq0 += Bmax) {
        int B = rq->n_seqs - seq0 < Bmax ? rq->n_seqs - seq0 : Bmax;
        st = run_batch(e, rq, seq0, B, offs, hk, stats, t_start, &s);
    }
    pthread_mutex_unlock(&e->lock);
    free(mem);
    free(offs);
    return st;
}
