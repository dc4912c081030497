"""A/B of one environment switch the matmul reads on every call (device diagnosis): every prefill shape at M rows
(1B and 3B), the switch's values alternated in one process, min of 2 x 20 calls each; the layout from
LLAMA_KERNEL_TILED as the dispatcher reads it.

    LLAMA_KERNEL_TILED=1 python3 tools/mm_env_ab.py LLAMA_KERNEL_RA_256 ",0" 2048 [rounds] [shape,shape,...]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from _common import _C  # noqa: E402

# (name, N, K, mode) with bench_matmul's modes: 3 fp16, 1 add into fp32, 2 SwiGLU, 0 fp32
SHAPES = [("qkv", 3072, 2048, 3), ("o", 2048, 2048, 1), ("gate_up", 16384, 2048, 2), ("down", 2048, 8192, 1),
          ("lm", 128256, 2048, 0), ("qkv3B", 5120, 3072, 3), ("o3B", 3072, 3072, 1), ("gu3B", 16384, 3072, 2),
          ("down3B", 3072, 8192, 1)]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    env, vals, M = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    only = sys.argv[5].split(",") if len(sys.argv) > 5 else None
    lay = os.environ.get("LLAMA_KERNEL_TILED", "?")
    for name, N, K, mode in SHAPES:
        if only and name not in only:
            continue
        cells = []
        for _ in range(rounds):
            for v in vals:
                os.environ[env] = v
                us = min(_C.cuda_bench_matmul(M, N, K, mode, 0, False, 20) for _ in range(2))
                cells.append(f"{v or 'def'}:{us:.1f}")
        print(f"L{lay} {name}@{M} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
