"""End to end: decode tokens/s at batch 1/16/64, prefill time, time to first
token and GPU memory for synthetic Llama 3.2 shapes (random weights, int4),
with CUDA graphs on and off.

    python benchmarks/bench_e2e.py [--quick] [--peers]
"""
import argparse
import time

import numpy as np

from _common import _C, device_line, save_json, torch_or_none
from llama_kernel import LlamaInference


def decode_rate(m, B, new, prompt_len=32):
    rng = np.random.default_rng(B)
    prompts = [rng.integers(0, m.config.vocab_size, prompt_len).tolist() for _ in range(B)]
    m.generate_ids(prompts, max_new_tokens=8, temperature=0, ignore_eos=True)  # warm-up + graph capture
    m.generate_ids(prompts, max_new_tokens=8, temperature=0, ignore_eos=True)
    t0 = time.perf_counter()
    out, st = m.generate_ids(prompts, max_new_tokens=new, temperature=0, ignore_eos=True, return_stats=True)
    dt = time.perf_counter() - t0
    n = sum(len(o) for o in out)
    return {"batch": B, "tokens": n, "seconds": dt, "tokens_per_s": n / dt,
            "decode_tokens_per_s": (st["generated_tokens"] - B) / st["decode_seconds"],
            "ttft_ms": st["first_token_seconds"] * 1e3}


def prefill_ms(m, L):
    ids = np.random.default_rng(L).integers(0, m.config.vocab_size, L).tolist()
    m.generate_ids(ids, max_new_tokens=1, temperature=0, ignore_eos=True)
    ts = []
    for _ in range(5):
        _, st = m.generate_ids(ids, max_new_tokens=1, temperature=0, ignore_eos=True, return_stats=True)
        ts.append(st["first_token_seconds"] * 1e3)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="synthetic:llama-3.2-1b")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes")
    ap.add_argument("--no-eager", action="store_true", help="graphs only")
    a = ap.parse_args()
    print(f"# end to end, {a.model}, int4, {device_line()}")
    res = {"device": device_line(), "model": a.model, "decode": [], "prefill": []}
    batches = [1, 16, 64] if not a.quick else [1, 16]
    if a.batches:
        batches = [int(b) for b in a.batches.split(",")]
    for graphs in ((True,) if a.no_eager else (True, False)):
        free0 = _C.build_info().get("gpu_free_bytes", 0)
        t0 = time.perf_counter()
        m = LlamaInference(a.model, device="cuda", batch_size=max(batches), max_seq_len=4096, cuda_graphs=graphs,
                           verbose=False)
        load_s = time.perf_counter() - t0
        for B in batches:
            r = decode_rate(m, B, 256 if B == 1 else 128)
            r["graphs"] = graphs
            res["decode"].append(r)
            print(f"decode batch {B:3d} graphs={graphs!s:5}: {r['tokens_per_s']:9.0f} tok/s total "
                  f"({r['decode_tokens_per_s']:.0f} in the decode loop), TTFT {r['ttft_ms']:.2f} ms", flush=True)
        if graphs and not a.no_eager:
            res["load_seconds_synthetic"] = load_s
            for L in (128, 512, 2048):
                ms = prefill_ms(m, L)
                res["prefill"].append({"tokens": L, "ms": ms})
                print(f"prefill {L:5d} tokens: {ms:.2f} ms ({L / ms * 1e3:.0f} tok/s)", flush=True)
        del m
    m = LlamaInference(a.model, device="cuda", batch_size=1, max_seq_len=4096, verbose=False)
    free1 = _C.build_info().get("gpu_free_bytes", 0)
    res["engine_bytes_bs1_4096"] = m.memory_usage()["total_bytes"]
    print(f"engine memory (batch 1, 4096-token KV cache): {res['engine_bytes_bs1_4096'] / 2**30:.3f} GiB")
    save_json(res, "bench_e2e.json")


if __name__ == "__main__":
    main()
