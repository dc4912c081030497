/* lk_config.c: config validation and the rotary frequency table. */
#include "lk_config.h"

#include <math.h>
#include <stdlib.h>

#define CHECK_RANGE(field, lo, hi)                                                                       \
    do {                                                                                                 \
        if (c->field < (lo) || c->field > (hi))                                                          \
            return lk_fail(LK_E_INVALID, "config: %s = %lld is outside [%lld, %lld]", #field,            \
                           (long long)c->field, (long long)(lo), (long long)(hi));                        \
    } while (0)

lk_status lk_config_validate(const lk_config *c) {
    CHECK_RANGE(dim, 1, LK_MAX_DIM);
    CHECK_RANGE(hidden_dim, 1, 4 * LK_MAX_DIM);
    CHECK_RANGE(n_layers, 1, LK_MAX_LAYERS);
    CHECK_RANGE(n_heads, 1, LK_MAX_HEADS);
    CHECK_RANGE(n_kv_heads, 1, LK_MAX_HEADS);
    CHECK_RANGE(head_dim, 2, LK_MAX_HEAD_DIM);
    CHECK_RANGE(vocab_size, 1, LK_MAX_VOCAB);
    if (c->n_heads % c->n_kv_heads)
        return lk_fail(LK_E_INVALID, "config: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)",
                       c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2) return lk_fail(LK_E_INVALID, "config: head_dim (%d) must be even for rotary", c->head_dim);
    if ((int64_t)c->n_heads * c->head_dim > 4 * (int64_t)LK_MAX_DIM)
        return lk_fail(LK_E_INVALID, "config: num_attention_heads * head_dim is too large");
    if (!(c->rms_eps > 0.0f) || !isfinite(c->rms_eps))
        return lk_fail(LK_E_INVALID, "config: rms_norm_eps = %g must be positive", (double)c->rms_eps);
    if (!(c->rope_theta > 1.0) || !isfinite(c->rope_theta))
        return lk_fail(LK_E_INVALID, "config: rope_theta = %g must be > 1", c->rope_theta);
    switch (c->rope_type) {
    case LK_ROPE_DEFAULT: break;
    case LK_ROPE_LINEAR:
        if (!(c->rope_factor > 0.0) || !isfinite(c->rope_factor))
            return lk_fail(LK_E_INVALID, "config: rope_scaling factor = %g must be positive", c->rope_factor);
        break;
    case LK_ROPE_LLAMA3:
        if (!(c->rope_factor > 0.0) || !isfinite(c->rope_factor))
            return lk_fail(LK_E_INVALID, "config: rope_scaling factor = %g must be positive", c->rope_factor);
        if (!(c->rope_low_freq_factor > 0.0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return lk_fail(LK_E_INVALID,
                           "config: llama3 rope_scaling needs 0 < low_freq_factor (%g) < high_freq_factor (%g)",
                           c->rope_low_freq_factor, c->rope_high_freq_factor);
        if (c->rope_orig_max_pos <= 0)
            return lk_fail(LK_E_INVALID, "config: llama3 rope_scaling original_max_position_embeddings = %d",
                           c->rope_orig_max_pos);
        break;
    default: return lk_fail(LK_E_INVALID, "config: unknown rope type code %d", c->rope_type);
    }
    return LK_OK;
}

void lk_rope_inv_freq(const lk_config *c, double *inv) {
    const int half = c->head_dim / 2;
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(c->rope_theta, (double)(2 * i) / (double)c->head_dim);
        if (c->rope_type == LK_ROPE_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_type == LK_ROPE_LLAMA3) {
            const double old = (double)c->rope_orig_max_pos;
            const double low_wavelen = old / c->rope_low_freq_factor;
            const double high_wavelen = old / c->rope_high_freq_factor;
            const double wavelen = 2.0 * pi / f;
            if (wavelen > low_wavelen) {
                f = f / c->rope_factor; /* long wavelengths: fully scaled */
            } else if (wavelen >= high_wavelen) {
                /* medium: interpolate between scaled and unscaled */
                double smooth = (old / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv[i] = f;
    }
}

lk_status lk_rope_table(const lk_config *c, int32_t n_pos, float *cos_out, float *sin_out) {
    const int half = c->head_dim / 2;
    double inv[LK_MAX_HEAD_DIM / 2];
    lk_rope_inv_freq(c, inv);
    for (int32_t p = 0; p < n_pos; p++)
        for (int i = 0; i < half; i++) {
            double a = (double)p * inv[i];
            cos_out[(size_t)p * half + i] = (float)cos(a);
            sin_out[(size_t)p * half + i] = (float)sin(a);
        }
    return LK_OK;
}
