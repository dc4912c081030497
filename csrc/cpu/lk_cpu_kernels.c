/* lk_cpu_kernels.c: scalar references and x86-64 AVX2 fast paths. */
#include "lk_cpu_kernels.h"

#include <pthread.h>
#include <stdlib.h>

/* ---- scalar references --------------------------------------------------- */
static void dequant_q4_ref(const uint8_t *qs, const lk_q4_params *p, int64_t k, float *out) {
    lk_q4_dequantize_row_ref(qs, p, k, out);
}
static void dequant_bf16_ref(const uint16_t *w, int64_t k, float *out) {
    for (int64_t i = 0; i < k; i++) out[i] = lk_bf16_to_f32(w[i]);
}
static float dot_ref(const float *a, const float *b, int64_t k) {
    float s = 0.0f;
    for (int64_t i = 0; i < k; i++) s += a[i] * b[i];
    return s;
}
static void dot4_ref(const float *w, int64_t k, const float *x, float out[4]) {
    for (int r = 0; r < 4; r++) out[r] = dot_ref(w + r * k, x, k);
}
static float dot_f16_ref(const float *q, const uint16_t *kv, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += q[i] * lk_f16_to_f32(kv[i]);
    return s;
}
static void axpy_f16_ref(float a, const uint16_t *v, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * lk_f16_to_f32(v[i]);
}

static const lk_cpu_kernels ref_kernels = {"scalar", dequant_q4_ref, dequant_bf16_ref, dot4_ref,
                                           dot_ref,  dot_f16_ref,    axpy_f16_ref};

const lk_cpu_kernels *lk_cpu_kernels_ref(void) { return &ref_kernels; }

/* ---- AVX2 + FMA + F16C ------------------------------------------------- */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

AVX2 static void dequant_q4_avx2(const uint8_t *qs, const lk_q4_params *p, int64_t k, float *out) {
    const __m128i lomask = _mm_set1_epi8(0x0f);
    for (int64_t g = 0; g < k / LK_Q4_GROUP; g++) {
        const __m256 scale = _mm256_set1_ps(lk_f16_to_f32(p[g].scale));
        const __m256 mn = _mm256_set1_ps(lk_f16_to_f32(p[g].min));
        const uint8_t *b = qs + g * (LK_Q4_GROUP / 2);
        float *o = out + g * LK_Q4_GROUP;
        for (int i = 0; i < LK_Q4_GROUP / 2; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(b + i));
            __m128i lo = _mm_and_si128(v, lomask);
            __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), lomask);
            __m128i e0 = _mm_unpacklo_epi8(lo, hi); /* elements 0..15 in order */
            __m128i e1 = _mm_unpackhi_epi8(lo, hi); /* elements 16..31 */
            __m128i parts[4] = {e0, _mm_srli_si128(e0, 8), e1, _mm_srli_si128(e1, 8)};
            for (int j = 0; j < 4; j++) {
                /* q * scale + min, as the reference (no FMA: identical rounding) */
                __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[j]));
                _mm256_storeu_ps(o + 2 * i + 8 * j, _mm256_add_ps(_mm256_mul_ps(q, scale), mn));
            }
        }
    }
}

AVX2 static void dequant_bf16_avx2(const uint16_t *w, int64_t k, float *out) {
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i)));
        _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < k; i++) out[i] = lk_bf16_to_f32(w[i]);
}

AVX2 static float dot_avx2(const float *a, const float *b, int64_t k) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < k; i++) s += a[i] * b[i];
    return s;
}

AVX2 static void dot4_avx2(const float *w, int64_t k, const float *x, float out[4]) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), xv, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + i), xv, s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 2 * k + i), xv, s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 3 * k + i), xv, s3);
    }
    out[0] = hsum256(s0);
    out[1] = hsum256(s1);
    out[2] = hsum256(s2);
    out[3] = hsum256(s3);
    for (; i < k; i++)
        for (int r = 0; r < 4; r++) out[r] += w[r * k + i] * x[i];
}

AVX2 static float dot_f16_avx2(const float *q, const uint16_t *kv, int64_t n) {
    __m256 s = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        s = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kv + i))), s);
    float r = hsum256(s);
    for (; i < n; i++) r += q[i] * lk_f16_to_f32(kv[i]);
    return r;
}

AVX2 static void axpy_f16_avx2(float a, const uint16_t *v, float *y, int64_t n) {
    const __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * lk_f16_to_f32(v[i]);
}

static const lk_cpu_kernels avx2_kernels = {"avx2",          dequant_q4_avx2, dequant_bf16_avx2, dot4_avx2,
                                            dot_avx2,        dot_f16_avx2,    axpy_f16_avx2};

static int have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#endif

static const lk_cpu_kernels *chosen = &ref_kernels;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void) {
    const char *sw = getenv("LLAMA_KERNEL_CPU_SIMD");
    int allow = !(sw && sw[0] == '0');
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (allow && have_avx2()) chosen = &avx2_kernels;
#else
    (void)allow;
#endif
}

const lk_cpu_kernels *lk_cpu_kernels_get(void) {
    pthread_once(&chosen_once, choose);
    return chosen;
}
