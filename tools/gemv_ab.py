"""Device A/B of one-row GEMV configurations: python3 tools/gemv_ab.py [iters]
(rows per warp, chunks in flight, K splits); 0 = automatic. Median us per call in a CUDA graph,
weights rotated through enough copies that L2 cannot hold them."""
import sys

sys.path.insert(0, "benchmarks")
from _common import _C, matmul_shapes  # noqa: E402

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 30
SHAPES = matmul_shapes("qkv,o,gate_up,down,lm_head,gate_up 3B,down 3B")
CONFS = {"qkv": [(0, 0, 0)], "o": [(0, 0, 0)], "gate_up": [(0, 0, 0), (2, 2, 1), (2, 4, 1)],
         "down": [(0, 0, 0), (1, 4, 1)], "lm_head": [(0, 0, 0), (2, 2, 1)], "gate_up 3B": [(0, 0, 0), (2, 2, 1)],
         "down 3B": [(0, 0, 0)]}
print("| shape | rows/warp, chunks, splits | us | TB/s |\n|---|---|---|---|")
for name, N, K, mode in SHAPES:
    nbytes = N * K / 2 + N * K / 128 * 4
    for conf in CONFS[name]:
        t = _C.cuda_bench_matmul(1, N, K, mode, 2, False, iters, conf)
        print(f"| {name} | {conf} | {t:.2f} | {nbytes / t / 1e6:.2f} |", flush=True)
