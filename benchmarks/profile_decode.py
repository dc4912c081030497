"""Per-op GPU time of decode steps (LLAMA_KERNEL_PROFILE=1: eager, synchronised
after each op, so each op's time includes its launch latency).

    python benchmarks/profile_decode.py [--batch 1] [--model synthetic:llama-3.2-1b]
"""
import argparse
import os

os.environ["LLAMA_KERNEL_PROFILE"] = "1"

from _common import device_line  # noqa: E402
from llama_kernel import LlamaInference  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--model", default="synthetic:llama-3.2-1b")
ap.add_argument("--tokens", type=int, default=64)
a = ap.parse_args()
print(f"# profile, {a.model}, batch {a.batch}, {device_line()}", flush=True)
m = LlamaInference(a.model, device="cuda", batch_size=a.batch, max_seq_len=1024, verbose=False)
m.generate_ids([[1, 2, 3, 4] * 8] * a.batch, max_new_tokens=a.tokens, temperature=0, ignore_eos=True)
del m
