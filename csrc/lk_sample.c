/* lk_sample.c: the CPU sampler (the rule is documented in lk_sample.h). */
#include "lk_sample.h"

#include <math.h>

static uint32_t key_of(float e) { return lk_f32_bits(e); } /* e >= 0: bits are monotonic */

/* The key v of an element with  weight(key > v) < target <= weight(key >= v),
 * weights being e (by_mass) or 1. If the total weight is below target
 * (rounding), returns the smallest key of the last bucket visited, which
 * keeps everything at or above it. */
static uint32_t radix_threshold(const float *e, int32_t V, double target, int by_mass) {
    uint32_t prefix = 0, mask = 0;
    double above = 0.0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        double hist[256] = {0};
        for (int32_t i = 0; i < V; i++) {
            uint32_t k = key_of(e[i]);
            if ((k & mask) == prefix) hist[(k >> shift) & 255u] += by_mass ? (double)e[i] : 1.0;
        }
        int d;
        for (d = 255; d >= 0; d--) {
            if (above + hist[d] >= target) break;
            above += hist[d];
        }
        if (d < 0) return prefix;
        prefix |= (uint32_t)d << shift;
        mask |= 0xffu << shift;
    }
    return prefix;
}

int32_t lk_sample_row(float *l, int32_t V, const uint32_t *seen, const lk_sampling *sp, float u) {
    if (seen && sp->repetition_penalty != 1.0f) {
        const float p = sp->repetition_penalty;
        for (int32_t i = 0; i < V; i++)
            if (seen[i >> 5] >> (i & 31) & 1u) l[i] = l[i] > 0.0f ? l[i] / p : l[i] * p;
    }
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (l[i] > l[best]) best = i;
    if (!(sp->temperature > 0.0f)) return best;
    const float mx = l[best], t = sp->temperature;
    for (int32_t i = 0; i < V; i++) l[i] = expf((l[i] - mx) / t);
    uint32_t thr = 0;
    if (sp->top_k > 0 && sp->top_k < V) thr = radix_threshold(l, V, (double)sp->top_k, 0);
    if (sp->top_p < 1.0f) {
        double kept = 0.0;
        for (int32_t i = 0; i < V; i++)
            if (key_of(l[i]) >= thr) kept += l[i];
        uint32_t tp = radix_threshold(l, V, (double)sp->top_p * kept, 1);
        if (tp > thr) thr = tp;
    }
    double total = 0.0;
    for (int32_t i = 0; i < V; i++)
        if (key_of(l[i]) >= thr) total += l[i];
    const double target = (double)u * total;
    double cum = 0.0;
    int32_t last = best;
    for (int32_t i = 0; i < V; i++) {
        if (key_of(l[i]) < thr) continue;
        cum += l[i];
        last = i;
        if (cum > target) return i;
    }
    return last;
}
