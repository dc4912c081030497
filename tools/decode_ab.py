"""Device A/B of batch-1 decode: python3 tools/decode_ab.py [--model M] [--tokens N] [--order 1,0,1,0]
Each entry of --order is a LLAMA_KERNEL_PERSIST value (1: the persistent decode kernel, 0: the kernels op
by op); one engine each, greedy, CUDA graphs on, the same 32-token prompt; tok/s of the second of two
identical runs (the first captures the graphs)."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from llama_kernel import LlamaInference  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="synthetic:llama-3.2-1b")
ap.add_argument("--tokens", type=int, default=256)
ap.add_argument("--order", default="1,0,1,0")
a = ap.parse_args()
prompt = list(range(1000, 1032))
for v in a.order.split(","):
    os.environ["LLAMA_KERNEL_PERSIST"] = v
    m = LlamaInference(a.model, device="cuda", max_seq_len=2048, verbose=False)
    rates = []
    for _ in range(2):
        t = time.perf_counter()
        out = m.generate_ids(prompt, max_new_tokens=a.tokens, temperature=0, ignore_eos=True)[0]
        rates.append(len(out) / (time.perf_counter() - t))
    print(f"PERSIST={v} {a.model}: {rates[1]:.0f} tok/s (first run {rates[0]:.0f})", flush=True)
    del m
