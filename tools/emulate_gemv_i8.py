"""CPU emulation of the integer-input one-row GEMV's packing (lk_matmul.cu: i8_store4, i8_dot;
LLAMA_KERNEL_GEMV_I8=1), step by step as the kernel does it: the canonical int4 bytes interleaved as
lk_q4_interleave_word does, the input row quantized per 32 inputs to 16 bits by 8 "lanes" of 4 inputs,
split into hi/lo int8 planes, packed with the kernel's byte permutes into the chunk record, and multiplied
with dp4a (unsigned weight bytes x signed input bytes). Checks that every chunk's result is the exact
integer dot sum q xq. For debugging the kernel when its GPU test fails.

    python3 tools/emulate_gemv_i8.py
"""
import numpy as np

QMAX = 32639.0
POS_OF = [0, 4, 1, 5, 2, 6, 3, 7]  # element e of a word goes to nibble POS_OF[e]


def interleave(w):
    return sum(((int(w) >> (4 * e)) & 0xF) << (4 * POS_OF[e]) for e in range(8))


def byte_perm(a, b, sel):
    src = [(a >> (8 * i)) & 0xFF for i in range(4)] + [(b >> (8 * i)) & 0xFF for i in range(4)]
    return sum(src[(sel >> (4 * k)) & 0xF] << (8 * k) for k in range(4))


def signed_byte(v):
    return v - 256 if v >= 128 else v


def dp4a_us(a, b, c):
    return c + sum(((a >> (8 * i)) & 0xFF) * signed_byte((b >> (8 * i)) & 0xFF) for i in range(4))


def records(x):
    """i8_store4 for every chunk: the 20-word records (words 16, 17: d and d * sum xq) and xq."""
    K = len(x)
    recs = np.zeros((K // 32, 20), dtype=np.uint64)
    xq = np.zeros(K, dtype=np.int64)
    for c in range(K // 32):
        xc = x[32 * c:32 * c + 32]
        mx = np.float32(np.abs(xc).max())
        inv = np.float32(QMAX) / mx if mx > 0 else np.float32(0)
        hb, lb = [0] * 8, [0] * 8
        for t in range(8):  # lane t of the chunk's 8 holds inputs 4t..4t+3
            for k in range(4):
                q = int(np.rint(np.float32(xc[4 * t + k] * inv)))
                q = max(-32639, min(32639, q))
                xq[32 * c + 4 * t + k] = q
                hi = (q + 128) >> 8
                lo = q - hi * 256
                hb[t] |= (hi & 0xFF) << (8 * k)
                lb[t] |= (lo & 0xFF) << (8 * k)
        for t in range(8):
            hp, lp, k = hb[t ^ 1], lb[t ^ 1], t >> 1
            if t % 2 == 0:
                recs[c, 2 * k], recs[c, 8 + 2 * k] = byte_perm(hb[t], hp, 0x5140), byte_perm(lb[t], lp, 0x5140)
            else:
                recs[c, 2 * k + 1] = byte_perm(hp, hb[t], 0x7362)
                recs[c, 8 + 2 * k + 1] = byte_perm(lp, lb[t], 0x7362)
    return recs, xq


def chunk_dot(words, rec):
    """i8_dot: 4 interleaved weight words against a record"""
    ah = al = 0
    for k in range(4):
        lo, hi = words[k] & 0x0F0F0F0F, (words[k] >> 4) & 0x0F0F0F0F
        ah = dp4a_us(lo, int(rec[2 * k]), ah)
        ah = dp4a_us(hi, int(rec[2 * k + 1]), ah)
        al = dp4a_us(lo, int(rec[8 + 2 * k]), al)
        al = dp4a_us(hi, int(rec[8 + 2 * k + 1]), al)
    return ah * 256 + al


def main():
    rng = np.random.default_rng(1)
    K = 512
    q = rng.integers(0, 16, K)
    qs = (q[0::2] | (q[1::2] << 4)).astype(np.uint8)  # canonical: element 2j low nibble of byte j
    words = [interleave(w) for w in qs.view("<u4")]
    x = rng.standard_normal(K).astype(np.float32)
    x[40:72] = 0  # a zero chunk
    x[100] = 300.0  # a chunk with one large input
    recs, xq = records(x)
    bad = [c for c in range(K // 32)
           if chunk_dot(words[4 * c:4 * c + 4], recs[c]) != int((q[32 * c:32 * c + 32] * xq[32 * c:32 * c + 32]).sum())]
    print("every chunk exact:", not bad, bad)
    return 0 if not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
