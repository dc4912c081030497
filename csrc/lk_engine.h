/* lk_engine.h: a loaded model and the generation loop, on either backend.
 *
 * Public entry points of the core; the binding (module.c) calls only these
 * (plus the op functions for tests). Every call locks the engine, so two
 * threads using one engine are serialised. None of them touches Python.
 */
#ifndef LK_ENGINE_H
#define LK_ENGINE_H

#include "lk_backend.h"

typedef struct lk_engine lk_engine;

typedef struct lk_engine_hooks {
    /* Polled between layers of a prefill and between decode steps; nonzero
     * stops the call with LK_E_INTERRUPTED (e.g. Ctrl-C seen by the binding). */
    int (*check)(void *ctx);
    /* After every decode step: the tokens just appended, one per sequence
     * still running (seq = index into the request). Nonzero stops the call
     * with LK_E_INTERRUPTED. */
    int (*on_tokens)(void *ctx, const int32_t *seqs, const int32_t *tokens, int n);
    /* Loading progress in weights converted so far / total. */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *ctx;
} lk_engine_hooks;

typedef struct lk_gen_request {
    int32_t n_seqs;
    const int32_t *tokens; /* all prompts, concatenated */
    const int32_t *lens;   /* [n_seqs] prompt lengths (>= 1) */
    int32_t max_new_tokens;
    lk_sampling sampling;
    const int32_t *stop_ids; /* a sequence ends after emitting one of these */
    int32_t n_stop;
    int32_t ignore_eos;    /* generate exactly max_new_tokens (benchmarks) */
    uint64_t seq_id0;      /* RNG stream of sequence i is seq_id0 + i */
    int32_t *out;          /* [n_seqs][max_new_tokens] new tokens (stop token included) */
    int32_t *out_lens;     /* [n_seqs] */
} lk_gen_request;

typedef struct lk_gen_stats {
    double prefill_s;       /* all prefill forwards */
    double first_token_s;   /* start -> first batch's first tokens on the host */
    double decode_s;        /* decode steps */
    int64_t prefill_tokens;
    int64_t decode_steps;   /* forward passes of the decode loop */
    int64_t generated_tokens;
} lk_gen_stats;

/* Loads a checkpoint (paths = its safetensors files) or, with n_paths == 0,
 * builds a synthetic model from `seed`. cfg->tied_embeddings is updated from
 * the checkpoint (tied when it has no lm_head.weight). */
lk_status lk_engine_create(const lk_config *cfg, const lk_engine_opts *opts, const char *const *paths, int n_paths,
                           uint64_t seed, const lk_engine_hooks *hooks, lk_engine **out);
void lk_engine_destroy(lk_engine *e);

const lk_config *lk_engine_config(const lk_engine *e);
const lk_engine_opts *lk_engine_opts_get(const lk_engine *e);
const char *lk_engine_backend_name(const lk_engine *e);

/* Logits at every position of one prompt: out[n][vocab], float32. */
lk_status lk_engine_logits(lk_engine *e, const int32_t *tokens, int32_t n, float *out, const lk_engine_hooks *hooks);

/* Runs generation for all sequences (in batches of opts.batch_size). */
lk_status lk_engine_generate(lk_engine *e, const lk_gen_request *rq, const lk_engine_hooks *hooks, lk_gen_stats *stats);

/* What the engine allocated (used) and what the plan said (plan). */
void lk_engine_memory(lk_engine *e, lk_mem_plan *used, lk_mem_plan *plan);

/* Validation shared with the binding: names the argument in the message. */
lk_status lk_sampling_validate(const lk_sampling *sp);

int lk_default_threads(void);

#endif /* LK_ENGINE_H */
