/* lk_sample.h: the sampling rule, shared by the CPU sampler and the CUDA
 * sampling kernel so that both draw the same tokens from the same logits.
 *
 * For one row of logits l (vocabulary V):
 *   1. repetition penalty: every token seen in the sequence (prompt and
 *      generated) gets l / p if l > 0, else l * p (HF's rule);
 *   2. temperature <= 0: greedy, argmax with the lowest id on ties;
 *   3. e_i = exp((l_i - max l) / temperature), unnormalised probabilities;
 *   4. top_k (0 < k < V): keep e_i >= the k-th largest e (ties kept);
 *   5. top_p (< 1): among those, keep token i iff the mass of tokens with a
 *      larger e is < top_p * (mass kept by top_k) (HF's rule; ties kept);
 *   6. draw u = lk_uniform(seed, sequence id, position) in [0, 1) and
 *      return the first kept id (in id order) whose running mass exceeds
 *      u * (kept mass).
 * Thresholds in 4 and 5 are found exactly by a radix descent over the float
 * bits of e (4 passes of 8 bits), so no sort is needed: exact over the full
 * vocabulary.
 */
#ifndef LK_SAMPLE_H
#define LK_SAMPLE_H

#include <stdint.h>

#ifdef __CUDACC__
#define LK_HD static __host__ __device__ __forceinline__
#else
#define LK_HD static inline
#endif

/* counter-based uniform in [0, 1) with 24 random bits */
LK_HD float lk_uniform(uint64_t seed, uint64_t seq, uint64_t pos) {
    uint64_t z = seed ^ (0x9e3779b97f4a7c15ull * (seq + 1)) ^ (0xc2b2ae3d27d4eb4full * (pos + 1));
    for (int i = 0; i < 2; i++) {
        z += 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
    }
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

#ifndef __CUDACC__
#include "lk_backend.h"
/* The CPU sampler for one row; `logits` is overwritten (scratch). `seen` is
 * the sequence's bitmap of seen ids (ceil(V/32) words) or NULL. */
int32_t lk_sample_row(float *logits, int32_t V, const uint32_t *seen, const lk_sampling *sp, float u);
#endif

#endif /* LK_SAMPLE_H */
