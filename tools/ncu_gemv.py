"""Drive a few one-row matmul calls for Nsight Compute (device diagnosis only).

    ncu --clock-control none -k regex:k_gemv python3 tools/ncu_gemv.py [down|gate_up|o|qkv|lm_head]
"""
import sys

sys.path.insert(0, "benchmarks")
from _common import _C  # noqa: E402

SHAPES = {"qkv": (3072, 2048, 3), "o": (2048, 2048, 1), "gate_up": (16384, 2048, 2), "down": (2048, 8192, 1),
          "lm_head": (128256, 2048, 0)}
for name in sys.argv[1:] or ["down"]:
    N, K, mode = SHAPES[name]
    print(name, _C.cuda_bench_matmul(1, N, K, mode, 2, False, 2, (0, 0, 0)))
