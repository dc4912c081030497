"""Drive k_sample on random logits for Nsight Compute (device diagnosis only): `--calls` calls of one setting.

    ncu --clock-control none -k regex:k_sample --launch-skip 2 --launch-count 1 --section SourceCounters \\
        --section WarpStateStats --import-source yes -o rep python3 tools/ncu_sample.py --std 4 --top_k 50
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from llama_kernel import _C  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=1)
ap.add_argument("--vocab", type=int, default=128256)
ap.add_argument("--std", type=float, default=4.0)
ap.add_argument("--temperature", type=float, default=0.6)
ap.add_argument("--top_k", type=int, default=50)
ap.add_argument("--top_p", type=float, default=1.0)
ap.add_argument("--calls", type=int, default=4)
a = ap.parse_args()
x = (np.random.default_rng(0).standard_normal((a.rows, a.vocab)) * a.std).astype(np.float32)
for _ in range(a.calls):
    t = _C.cuda_sample(x, list(range(a.rows)), seed=1, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p)
print("tokens", list(t)[:4])
