/* lk_cpu_kernels.h: CPU inner loops, each with a scalar reference and an
 * AVX2/FMA/F16C fast path chosen once at run time (lk_cpu_kernels_init).
 * LLAMA_KERNEL_CPU_SIMD=0 forces the scalar references (kill switch). */
#ifndef LK_CPU_KERNELS_H
#define LK_CPU_KERNELS_H

#include "../lk_quant.h"

typedef struct lk_cpu_kernels {
    const char *name;
    /* W row (k inputs) -> float32 */
    void (*dequant_q4)(const uint8_t *qs, const lk_q4_params *p, int64_t k, float *out);
    void (*dequant_bf16)(const uint16_t *w, int64_t k, float *out);
    /* out[r] = sum_i w[r][i] x[i] for 4 rows of a dequantized block (row stride k) */
    void (*dot4)(const float *w, int64_t k, const float *x, float out[4]);
    float (*dot)(const float *a, const float *b, int64_t k);
    /* dot of float32 q with fp16 k; y += a * fp16 v */
    float (*dot_f16)(const float *q, const uint16_t *k, int64_t n);
    void (*axpy_f16)(float a, const uint16_t *v, float *y, int64_t n);
} lk_cpu_kernels;

/* the kernels in use (AVX2 when the CPU has it and the switch allows) */
const lk_cpu_kernels *lk_cpu_kernels_get(void);
/* the scalar references, for tests */
const lk_cpu_kernels *lk_cpu_kernels_ref(void);

#endif
