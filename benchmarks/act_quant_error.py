"""CPU study: what quantizing the one-row GEMV's input to int8 (per 32 inputs, as llama.cpp's q8_1
activations) would cost in accuracy, against the arithmetic the GPU GEMV uses now. For the design of an
integer dot-product (dp4a) GEMV: with x in int8 a 32-bit weight word's 8 nibbles need 3 integer
instructions to unpack and 2 dp4a to multiply, ~0.7 instructions a weight with the scaling against ~2.3
for the fp16 dequant and half2 dot (benchmarks/NOTES.md, eleventh session).

    python3 benchmarks/act_quant_error.py

Rows: relative RMS error of y = W x (int4 W in the engine's format) against float64 with the same int4 W,
for the current GPU arithmetic (x in fp16, products of 8 inputs summed in fp16 per word, fp32 across words)
and for int8 x per 32 inputs (scale = max |x| / 127, exact integer dots, fp32 scaling; the min term uses the
sum of the quantized x, as q8_1 does). Input statistics: Gaussian, Student t(3), and Gaussian with a few massive
channels (LLM residual-stream outliers: 4 of 2,048 channels at 50-200 sigma).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from llama_kernel import quant  # noqa: E402

rng = np.random.default_rng(0)
N, K = 512, 2048


def f16(a):
    return a.astype(np.float16)


def gpu_now(qv, scale, mn, x):
    """dot_chunk: per 32-weight chunk, half2 products summed in fours (fp16), words summed in fp32;
    per chunk acc += s * dot + m * sum(x chunk) (fp32). qv: integers 0..15 [N, K]."""
    xh = f16(x)
    prod = f16(qv.astype(np.float16) * xh[None, :])  # each product rounded to fp16
    # 8 inputs a word (two half2 lanes of 4 products): sum in fp16 in order, then fp32
    p = prod.reshape(N, K // 8, 2, 4)  # [word][lane pair][4]
    acc = p[..., 0]
    for i in range(1, 4):
        acc = f16(acc.astype(np.float32) + p[..., i].astype(np.float32))
    word = acc.astype(np.float32).sum(axis=2)  # the two halves of the half2, in fp32
    chunk_dot = word.reshape(N, K // 32, 4).sum(axis=2)
    xs = xh.astype(np.float32).reshape(K // 32, 32).sum(axis=1)
    g = np.repeat(np.arange(K // 128), 4)
    return (scale[:, g] * chunk_dot + mn[:, g] * xs[None, :]).sum(axis=1)


def int8_x(qv, scale, mn, x):
    xh = f16(x).astype(np.float32)
    c = xh.reshape(K // 32, 32)
    d = np.abs(c).max(axis=1) / 127.0
    d[d == 0] = 1.0
    xi = np.clip(np.rint(c / d[:, None]), -127, 127)
    dots = (qv.reshape(N, K // 32, 32) * xi[None]).sum(axis=2)  # exact integers
    g = np.repeat(np.arange(K // 128), 4)
    # the min term over the same quantized inputs (d * sum xi, as q8_1 keeps it): with the exact sum
    # instead, the error is that of (w - min) x, ~2.5x larger (the third column)
    xs_q = d * xi.sum(axis=1)
    y = (scale[:, g] * (d[None, :] * dots) + mn[:, g] * xs_q[None, :]).sum(axis=1)
    y_exact_sum = (scale[:, g] * (d[None, :] * dots) + mn[:, g] * c.sum(axis=1)[None, :]).sum(axis=1)
    return y, y_exact_sum


def main():
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, params = quant.quantize(w)
    qv = np.empty((N, K), np.float32)
    qv[:, 0::2] = qs & 15
    qv[:, 1::2] = qs >> 4
    scale = params[..., 0].view(np.float16).astype(np.float32)
    mn = params[..., 1].view(np.float16).astype(np.float32)
    wd = quant.dequantize(qs, params).astype(np.float64)
    inputs = {"gauss": rng.standard_normal(K), "t3": rng.standard_t(3, K)}
    x = rng.standard_normal(K)
    x[rng.choice(K, 4, replace=False)] = [50, -80, 120, 200]
    inputs["gauss + 4 massive channels"] = x
    print("| input | fp16 x (GPU now) | int8 x per 32 | int8 x, exact-sum min term | int4 weights themselves |")
    print("|---|---|---|---|---|")
    for name, x in inputs.items():
        x = x.astype(np.float32)
        ref = wd @ f16(x).astype(np.float64)
        exact = w.astype(np.float64) @ x.astype(np.float64)

        def rel(y):
            return np.sqrt(np.mean((y - ref) ** 2) / np.mean(ref ** 2))

        wq = np.sqrt(np.mean((ref - exact) ** 2) / np.mean(exact ** 2))
        y8, y8e = int8_x(qv, scale, mn, x)
        print(f"| {name} | {rel(gpu_now(qv, scale, mn, x)):.2e} | {rel(y8):.2e} | {rel(y8e):.2e} | {wq:.2e} |")


if __name__ == "__main__":
    main()
