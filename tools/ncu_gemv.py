"""Drive a few matmul calls for Nsight Compute (device diagnosis only).

    ncu --clock-control none -k regex:k_gemv python3 tools/ncu_gemv.py [down|gate_up|o|qkv|lm_head] [M=1] [variant=2]
    ncu --clock-control none -k regex:k_mm_q4_wg python3 tools/ncu_gemv.py gate_up M=2048 variant=3
"""
import sys

sys.path.insert(0, "benchmarks")
from _common import _C  # noqa: E402

SHAPES = {"qkv": (3072, 2048, 3), "o": (2048, 2048, 1), "gate_up": (16384, 2048, 2), "down": (2048, 8192, 1),
          "lm_head": (128256, 2048, 0)}
opts = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
M, variant = int(opts.get("M", 1)), int(opts.get("variant", 2))
for name in [a for a in sys.argv[1:] if "=" not in a] or ["down"]:
    N, K, mode = SHAPES[name]
    print(name, M, _C.cuda_bench_matmul(M, N, K, mode, variant, False, 2, (0, 0, 0)))
