"""Drive eager batch-1 decode steps for Nsight Compute: the kernels as the engine runs them (norm
prologues, epilogues), without CUDA graphs (device diagnosis only).

    LLAMA_KERNEL_PDL=0 ncu --clock-control none -k regex:k_gemv_q4 --launch-skip 300 --launch-count 6 \\
        --section SpeedOfLight --section WarpStateStats --section SchedulerStats \\
        --section MemoryWorkloadAnalysis_Tables --section Occupancy python3 tools/ncu_step.py [--model M]

Per layer the one-row GEMVs run as qkv (2 rows a warp), o (1), gate_up (4), down (1), so six launches
from a layer boundary cover each matrix once; the kernel's template arguments in ncu's output say which.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from llama_kernel import LlamaInference  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="synthetic:llama-3.2-1b")
ap.add_argument("--tokens", type=int, default=12)
a = ap.parse_args()
m = LlamaInference(a.model, device="cuda", max_seq_len=1024, cuda_graphs=False, verbose=False)
out = m.generate_ids(list(range(1000, 1032)), max_new_tokens=a.tokens, temperature=0, ignore_eos=True)
print(f"{len(out[0])} tokens")
