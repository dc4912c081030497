"""Decode-attention timings for A/B runs (device diagnosis): one line per case, us and TB/s of K+V.
The kernel is chosen by the environment (LLAMA_KERNEL_ATTN_DECODE=simt, LLAMA_KERNEL_ATTN_STAGES=2-4),
read once per process, so run it once per setting.

    LLAMA_KERNEL_ATTN_STAGES=4 python3 tools/attn_decode_ab.py [label]
"""
import sys

sys.path.insert(0, "benchmarks")
from _common import _C  # noqa: E402

label = sys.argv[1] if len(sys.argv) > 1 else "default"
cells = []
for B, L, hd, H in [(1, 1024, 64, 32), (1, 8192, 64, 32), (1, 32768, 64, 32), (16, 8192, 64, 32),
                    (16, 32768, 64, 32), (64, 1024, 64, 32), (1, 8192, 128, 24), (16, 8192, 128, 24)]:
    us = min(_C.cuda_bench_attention(B, H, 8, hd, L, 1, 10) for _ in range(2))
    kv = B * 8 * L * hd * 2 * 2
    cells.append(f"B{B} L{L} hd{hd}: {us:.1f} us {kv / us / 1e6:.2f} TB/s")
print(f"{label:8s} | " + " | ".join(cells))
