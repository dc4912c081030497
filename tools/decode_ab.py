"""Device A/B of decode: python3 tools/decode_ab.py [--model M] [--tokens N] [--batch B] [--env NAME] [--order 1,0,1,0]
Each entry of --order is a value of the environment variable --env (default LLAMA_KERNEL_PERSIST: 1 the
persistent batch-1 decode kernel, 0 the kernels op by op; LLAMA_KERNEL_RA: 0 or the fewest rows of the
register-A matmul); one engine each, greedy, CUDA graphs on, B random 32-token prompts; total tok/s of the
second of two identical runs (the first captures the graphs). --fresh runs each entry in its own process
(for switches the library reads once per process, e.g. LLAMA_KERNEL_ATTN_CHUNK or LLAMA_KERNEL_ATTN_DECODE).
An entry with "=" in it sets variables by name instead, several joined by "+": --order "A=0+B=0,A=1+B=0,A=0+B=1"
(a name given no value, "A=", is set to the empty string: the library's default). A variable an earlier entry set
and this one does not name goes back to its value before the run, so "A=1,B=1" measures A and B one at a time."""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from llama_kernel import LlamaInference  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="synthetic:llama-3.2-1b")
ap.add_argument("--tokens", type=int, default=256)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--env", default="LLAMA_KERNEL_PERSIST")
ap.add_argument("--order", default="1,0,1,0")
ap.add_argument("--fresh", action="store_true", help="one process per entry of --order")
a = ap.parse_args()


def settings(v):
    """the environment an entry of --order sets"""
    if "=" not in v:
        return {a.env: v}
    return dict(kv.split("=", 1) for kv in v.split("+"))


if a.fresh:
    import subprocess

    for v in a.order.split(","):
        args = [sys.executable, os.path.abspath(__file__), "--model", a.model, "--tokens", str(a.tokens),
                "--batch", str(a.batch), "--env", a.env, "--order", v]
        subprocess.run(args, env=dict(os.environ, **settings(v)), check=False)
    sys.exit(0)
rng = np.random.default_rng(a.batch)
prompts = [rng.integers(1000, 30000, 32).tolist() for _ in range(a.batch)]
before = {}  # the variables the entries set, as they were before the run (None: unset)
for v in a.order.split(","):
    env = settings(v)
    for k, old in before.items():
        if k not in env:
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old
    for k in env:
        before.setdefault(k, os.environ.get(k))
    os.environ.update(env)
    m = LlamaInference(a.model, device="cuda", max_seq_len=2048, batch_size=a.batch, verbose=False)
    rates = []
    for _ in range(2):
        t = time.perf_counter()
        out = m.generate_ids(prompts, max_new_tokens=a.tokens, temperature=0, ignore_eos=True)
        rates.append(sum(len(o) for o in out) / (time.perf_counter() - t))
    print(f"{v if '=' in v else a.env + '=' + v} {a.model} batch {a.batch}: {rates[1]:.0f} tok/s (first run {rates[0]:.0f})", flush=True)
    del m
