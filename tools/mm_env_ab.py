"""A/B of one environment switch the matmul reads on every call (device diagnosis): every prefill shape at M rows
(1B and 3B), the switch's values alternated in one process, min of 2 x 20 calls each; the layout from
LLAMA_KERNEL_TILED as the dispatcher reads it.

    LLAMA_KERNEL_TILED=1 python3 tools/mm_env_ab.py LLAMA_KERNEL_RA_256 ",0" 2048 [rounds] [shape,shape,...]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from _common import _C, matmul_shapes, shape_key  # noqa: E402


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    env, vals, M = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    shapes = matmul_shapes(sys.argv[5] if len(sys.argv) > 5 else None)
    lay = os.environ.get("LLAMA_KERNEL_TILED", "?")
    for name, N, K, mode in shapes:
        cells = []
        for _ in range(rounds):
            for v in vals:
                os.environ[env] = v
                us = min(_C.cuda_bench_matmul(M, N, K, mode, 0, False, 20) for _ in range(2))
                cells.append(f"{v or 'def'}:{us:.1f}")
        print(f"L{lay} {shape_key(name)}@{M} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
