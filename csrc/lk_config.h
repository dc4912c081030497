/* lk_config.h: the model's shape (from config.json, normalised by the Python
 * layer) and the rotary-embedding frequency table derived from it.
 *
 * Rope types: "default" (plain theta^(-2i/d)), "linear" (frequencies / factor)
 * and "llama3" (Llama 3.1/3.2 frequency smoothing between low_freq_factor and
 * high_freq_factor of the original context). Anything else is rejected by the
 * Python layer before it gets here, and lk_config_validate rejects unknown
 * codes too.
 */
#ifndef LK_CONFIG_H
#define LK_CONFIG_H

#include "lk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LK_ROPE_DEFAULT = 0, LK_ROPE_LINEAR = 1, LK_ROPE_LLAMA3 = 2 } lk_rope_type;

/* Limits the engine is written for; configs beyond them are rejected. */
#define LK_MAX_DIM 65536
#define LK_MAX_LAYERS 1024
#define LK_MAX_HEADS 1024
#define LK_MAX_HEAD_DIM 256
#define LK_MAX_VOCAB (1 << 24)
#define LK_MAX_SEQ_LEN (1 << 20)

typedef struct lk_config {
    int32_t dim;        /* hidden_size */
    int32_t hidden_dim; /* intermediate_size (FFN) */
    int32_t n_layers;   /* num_hidden_layers */
    int32_t n_heads;    /* num_attention_heads */
    int32_t n_kv_heads; /* num_key_value_heads (GQA) */
    int32_t head_dim;   /* head_dim (default hidden_size / num_attention_heads) */
    int32_t vocab_size;
    int32_t max_pos;    /* max_position_embeddings (informational) */
    float rms_eps;      /* rms_norm_eps */
    double rope_theta;
    int32_t rope_type;  /* lk_rope_type */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int32_t rope_orig_max_pos; /* original_max_position_embeddings (llama3) */
    int32_t tied_embeddings;   /* tie_word_embeddings */
} lk_config;

static inline int32_t lk_q_dim(const lk_config *c) { return c->n_heads * c->head_dim; }
static inline int32_t lk_kv_dim(const lk_config *c) { return c->n_kv_heads * c->head_dim; }
static inline int32_t lk_qkv_dim(const lk_config *c) { return lk_q_dim(c) + 2 * lk_kv_dim(c); }

/* Checks ranges and relations (heads divide, head_dim even, ...). */
lk_status lk_config_validate(const lk_config *c);

/* inv_freq[i], i < head_dim/2, in double precision (HF's definition). */
void lk_rope_inv_freq(const lk_config *c, double *inv_freq);

/* cos/sin table [n_pos][head_dim/2] (float32), angles computed in double. */
lk_status lk_rope_table(const lk_config *c, int32_t n_pos, float *cos_out, float *sin_out);

#ifdef __cplusplus
}
#endif

#endif /* LK_CONFIG_H */
