"""Drive a few matmul calls for Nsight Compute (device diagnosis only).

    ncu --clock-control none -k regex:k_gemv python3 tools/ncu_gemv.py [down|gate_up|o|qkv|lm_head] [M=1] [variant=2]
    ncu --clock-control none -k regex:k_mm_q4_wg python3 tools/ncu_gemv.py gate_up M=2048 variant=3
    LLAMA_KERNEL_TILED=1 ncu --clock-control none -k regex:k_gemv_tiled python3 tools/ncu_gemv.py lm_head M=16 variant=0

(the last: the tiled layout's small-batch kernel, as engines of 2+ sequences run it; session 38 read it this way)
"""
import sys

sys.path.insert(0, "benchmarks")
from _common import _C, matmul_shapes  # noqa: E402

opts = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
M, variant = int(opts.get("M", 1)), int(opts.get("variant", 2))
for name, N, K, mode in matmul_shapes([a for a in sys.argv[1:] if "=" not in a] or ["down"]):
    print(name, M, _C.cuda_bench_matmul(M, N, K, mode, variant, False, 2, (0, 0, 0)))
