/* lk_common.h: status codes, the per-thread error message, checked size
 * arithmetic and the 16-bit float conversions every part of the core uses.
 *
 * Every core function returns an lk_status. On failure it has also written a
 * message (naming the file, tensor, argument or CUDA call that failed) into a
 * thread-local buffer that the binding reads with lk_last_error() after the
 * call and turns into a Python exception. The core never prints, never
 * aborts, and never includes Python.h.
 */
#ifndef LK_COMMON_H
#define LK_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lk_status {
    LK_OK = 0,
    LK_E_INVALID = 1,     /* an argument has a bad value          -> ValueError   */
    LK_E_IO = 2,          /* a file could not be opened or mapped -> OSError      */
    LK_E_FORMAT = 3,      /* a file's content is malformed        -> ValueError   */
    LK_E_NOMEM = 4,       /* host allocation failed               -> MemoryError  */
    LK_E_DEVICE = 5,      /* a CUDA call or launch failed         -> RuntimeError */
    LK_E_DEVICE_OOM = 6,  /* device allocation failed             -> MemoryError  */
    LK_E_UNSUPPORTED = 7, /* not built in / no kernel for a shape -> RuntimeError */
    LK_E_INTERRUPTED = 8, /* a callback asked to stop (the binding already holds
                             the Python exception, e.g. KeyboardInterrupt)     */
    LK_E_STATE = 9,       /* object used in a state that does not allow it   */
} lk_status;

#define LK_ERRMSG_CAP 1024

/* Records a printf-style message for the calling thread and returns `st`,
 * so that failures read `return lk_fail(LK_E_FORMAT, "...", ...);`. */
lk_status lk_fail(lk_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prefixes the current message with more context ("loading 'x.safetensors': ..."). */
void lk_error_prefix(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
const char *lk_last_error(void);
void lk_clear_error(void);

/* ---- checked size arithmetic: returns 1 on overflow ---------------------- */
static inline int lk_mul_ov(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out); }
static inline int lk_add_ov(size_t a, size_t b, size_t *out) { return __builtin_add_overflow(a, b, out); }
static inline size_t lk_align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* ---- 16-bit floats (bit patterns in uint16_t) ---------------------------- */
static inline float lk_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t lk_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float lk_bf16_to_f32(uint16_t h) { return lk_bits_f32((uint32_t)h << 16); }

/* round to nearest even; NaN stays NaN (quiet) */
static inline uint16_t lk_f32_to_bf16(float f) {
    uint32_t u = lk_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float lk_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in float */
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    if (exp == 31) return lk_bits_f32(sign | 0x7f800000u | (man << 13));
    return lk_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* round to nearest even, overflow to inf, subnormals handled */
static inline uint16_t lk_f32_to_f16(float f) {
    uint32_t u = lk_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);          /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);         /* >= 65520: inf */
    if (a < 0x38800000u) {                                           /* < 2^-14: subnormal */
        /* value * 2^24 rounded to nearest even gives the subnormal mantissa */
        float v = lk_bits_f32(a) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
    return (uint16_t)(sign | (uint16_t)(((r >> 13) - (112u << 10)) & 0x7fffu));
}

/* a small, fast, seedable generator (splitmix64 for seeding, xoshiro-like
 * counter-based draws are in lk_sample.h); used for synthetic weights */
static inline uint64_t lk_splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#ifdef __cplusplus
}
#endif
#endif /* LK_COMMON_H */
