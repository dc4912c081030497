"""Smoke check of the wgmma prefill kernel: one matmul per layout and output mode against NumPy,
printing the relative error (a first look before the full tests)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from llama_kernel import _C, quant  # noqa: E402

print("build_info wgmma:", _C.build_info().get("wgmma"))
rng = np.random.default_rng(1)
for N, K, M in ((512, 256, 256), (3072, 2048, 300)):
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    wd = quant.dequantize(qs, p).astype(np.float16).astype(np.float64)
    x = rng.standard_normal((M, K)).astype(np.float32)
    ref = x.astype(np.float16).astype(np.float64) @ wd.T
    for tiled in ("0", "1"):
        os.environ["LLAMA_KERNEL_TILED"] = tiled
        for v in ("0", "128", "256"):
            os.environ["LLAMA_KERNEL_WGMMA"] = v
            y, _ = _C.cuda_matmul(x, qs, p, mode=0, variant=3)
            err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
            print(f"N={N} K={K} M={M} tiled={tiled} wgmma={v}: rel err {err:.2e}", flush=True)
