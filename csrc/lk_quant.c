/* lk_quant.c: scalar reference int4 quantize/dequantize (see lk_quant.h). */
#include "lk_quant.h"

#include <math.h>

int lk_q4_quantize_row_ref(const float *w, int64_t k, uint8_t *qs, lk_q4_params *params) {
    for (int64_t g = 0; g < k / LK_Q4_GROUP; g++) {
        const float *x = w + g * LK_Q4_GROUP;
        float lo = x[0], hi = x[0];
        for (int i = 0; i < LK_Q4_GROUP; i++) {
            if (!isfinite(x[i])) return -1;
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
        }
        uint16_t sh = lk_f32_to_f16((hi - lo) / 15.0f);
        uint16_t mh = lk_f32_to_f16(lo);
        if ((sh & 0x7fffu) == 0) sh = 0x3c00u; /* constant group: any scale works, q = 0 */
        if ((sh & 0x7c00u) == 0x7c00u || (mh & 0x7c00u) == 0x7c00u) return -1;
        const float scale = lk_f16_to_f32(sh), mn = lk_f16_to_f32(mh), inv = 1.0f / scale;
        params[g].scale = sh;
        params[g].min = mh;
        uint8_t *out = qs + g * (LK_Q4_GROUP / 2);
        for (int i = 0; i < LK_Q4_GROUP; i += 2) {
            int q[2];
            for (int h = 0; h < 2; h++) {
                float v = (x[i + h] - mn) * inv + 0.5f;
                int t = v < 0.0f ? 0 : v > 15.0f ? 15 : (int)v; /* truncation == floor here */
                q[h] = t;
            }
            out[i / 2] = (uint8_t)(q[0] | (q[1] << 4));
        }
    }
    return 0;
}

void lk_q4_dequantize_row_ref(const uint8_t *qs, const lk_q4_params *params, int64_t k, float *out) {
    for (int64_t g = 0; g < k / LK_Q4_GROUP; g++) {
        const float scale = lk_f16_to_f32(params[g].scale), mn = lk_f16_to_f32(params[g].min);
        for (int i = 0; i < LK_Q4_GROUP; i++) {
            int64_t c = g * LK_Q4_GROUP + i;
            int q = (qs[c / 2] >> ((c & 1) * 4)) & 15;
            out[c] = (float)q * scale + mn;
        }
    }
}

void lk_q4_tile(const uint8_t *qs, const lk_q4_params *params, int64_t n, int64_t k, uint8_t *out_qs,
                lk_q4_params *out_params) {
    const int64_t kt64 = k / 64, groups = k / LK_Q4_GROUP;
#pragma omp parallel for schedule(static)
    for (int64_t rb = 0; rb < n / 16; rb++) {
        for (int64_t kt = 0; kt < kt64; kt++) {
            uint8_t *tile = out_qs + (rb * kt64 + kt) * 512;
            for (int l = 0; l < 32; l++) {
                const int g = l >> 2, t = l & 3;
                for (int kb = 0; kb < 4; kb++) {
                    const int64_t c0 = kt * 64 + 16 * t + 4 * kb;
                    /* nibble position -> (row offset, column offset) */
                    static const int rof[8] = {0, 8, 0, 8, 0, 8, 0, 8}, cof[8] = {0, 0, 2, 2, 1, 1, 3, 3};
                    uint32_t w = 0;
                    for (int p = 0; p < 8; p++) {
                        const int64_t r = rb * 16 + g + rof[p], c = c0 + cof[p];
                        const uint32_t q = (qs[r * (k / 2) + c / 2] >> ((c & 1) * 4)) & 15u;
                        w |= q << (4 * p);
                    }
                    memcpy(tile + l * 16 + kb * 4, &w, 4);
                }
            }
        }
        for (int64_t gr = 0; gr < groups; gr++)
            for (int r = 0; r < 16; r++) out_params[(rb * groups + gr) * 16 + r] = params[(rb * 16 + r) * groups + gr];
    }
}
