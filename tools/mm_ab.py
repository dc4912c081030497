"""Matmul timings at given row counts for A/B runs (device diagnosis): one line, us per call of the
1B shapes on the tiled layout (LLAMA_KERNEL_TILED=1) as the dispatcher picks; the environment chooses the
kernel (LLAMA_KERNEL_WGMMA=0, LLAMA_KERNEL_WG_MIN=N, ...): one run per setting.

    LLAMA_KERNEL_WG_MIN=65 python3 tools/mm_ab.py label [M,M,...]
"""
import os
import sys

sys.path.insert(0, "benchmarks")
os.environ.setdefault("LLAMA_KERNEL_TILED", "1")  # LLAMA_KERNEL_TILED=0: the row-interleaved layout
from _common import _C, matmul_shapes  # noqa: E402

SHAPES = matmul_shapes("qkv,o,gate_up,down,lm_head")  # the 1B shapes
label = sys.argv[1] if len(sys.argv) > 1 else "default"
Ms = [int(m) for m in sys.argv[2].split(",")] if len(sys.argv) > 2 else [48, 64]
cells = []
for M in Ms:
    for name, N, K, mode in SHAPES:
        us = min(_C.cuda_bench_matmul(M, N, K, mode, 0, False, 20) for _ in range(2))
        cells.append(f"{name}@{M} {us:.1f}")
print(f"{label:8s} | " + " | ".join(cells), flush=True)
