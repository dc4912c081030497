"""Device: what sampling costs in the decode loop. Decode rate with greedy and with sampling settings
(Llama 3.2 Instruct's defaults are temperature 0.6, top_p 0.9, top_k 50), and k_sample's own time
per call from CUPTI (torch.profiler) when torch is there.

    python3 tools/sample_cost.py [--batches 1,16] [--tokens 256] [--ops-only] [--rows 16]

LLAMA_KERNEL_SAMPLE_TOPK_SPLIT=0 (the sampler split off: top-k, top-p alone and temperature alone) gives the A/B.
"""
import argparse
import sys
import time

sys.path.insert(0, "benchmarks")
from _common import device_line, torch_or_none  # noqa: E402
from llama_kernel import LlamaInference  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--batches", default="1,16")
ap.add_argument("--tokens", type=int, default=256)
ap.add_argument("--model", default="synthetic:llama-3.2-1b")
ap.add_argument("--ops-only", action="store_true", help="only the sampler on random logits")
ap.add_argument("--rows", type=int, default=16, help="rows of the sampler-alone table")
a = ap.parse_args()
SETTINGS = [("greedy", dict(temperature=0)),
            ("T=0.6", dict(temperature=0.6, top_p=1.0, top_k=0)),
            ("T=0.6 top_k=50", dict(temperature=0.6, top_p=1.0, top_k=50)),
            ("T=0.6 top_p=0.9", dict(temperature=0.6, top_p=0.9, top_k=0)),
            ("instruct: T=0.6 top_p=0.9 top_k=50", dict(temperature=0.6, top_p=0.9, top_k=50)),
            ("instruct + repetition_penalty=1.1", dict(temperature=0.6, top_p=0.9, top_k=50, repetition_penalty=1.1))]
torch = torch_or_none()
print(f"# sampling cost, {a.model}, {device_line()}")
print("| batch | setting | tok/s | k_sample us/call |\n|---|---|---|---|")
for B in [] if a.ops_only else [int(b) for b in a.batches.split(",")]:
    m = LlamaInference(a.model, device="cuda", batch_size=B, max_seq_len=1024, verbose=False)
    prompts = [[1, 2, 3, 4] * 8] * B
    for name, kw in SETTINGS:
        m.generate_ids(prompts, max_new_tokens=8, ignore_eos=True, seed=1, **kw)
        t0 = time.perf_counter()
        out = m.generate_ids(prompts, max_new_tokens=a.tokens, ignore_eos=True, seed=1, **kw)
        rate = sum(len(o) for o in out) / (time.perf_counter() - t0)
        us = float("nan")
        if torch is not None:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as p:
                m.generate_ids(prompts, max_new_tokens=64, ignore_eos=True, seed=1, **kw)
            ts = [(e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total) for e in p.events()
                  if e.device_type == torch.autograd.DeviceType.CUDA and e.name.startswith("k_sample")]
            us = sum(ts) / len(ts) if ts else float("nan")
        print(f"| {B} | {name} | {rate:.0f} | {us:.1f} |", flush=True)
    del m
if torch is not None:
    # the sampler alone on random logits of a given spread (a trained model's logits are peaked: few
    # tokens within a few units of the largest; a random-weight model's are nearly flat)
    import numpy as np
    from torch.profiler import ProfilerActivity, profile

    from llama_kernel import _C

    print(f"\n| logits | setting | k_sample us a call ({a.rows} rows) |\n|---|---|---|")
    for std in (0.5, 2.0, 4.0, "confident"):
        rng = np.random.default_rng(0)
        if std == "confident":  # one token far above the rest (a trained model's usual step)
            x = (rng.standard_normal((a.rows, 128256)) * 2).astype(np.float32)
            x[np.arange(a.rows), rng.integers(0, 128256, a.rows)] = 25.0
        else:
            x = (rng.standard_normal((a.rows, 128256)) * std).astype(np.float32)
        for name, kw in SETTINGS:
            _C.cuda_sample(x, list(range(a.rows)), seed=1, **kw)
            with profile(activities=[ProfilerActivity.CUDA]) as p:
                _C.cuda_sample(x, list(range(a.rows)), seed=1, **kw)
            ts = [(e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total) for e in p.events()
                  if e.device_type == torch.autograd.DeviceType.CUDA and e.name.startswith("k_sample")]
            print(f"| {std} | {name} | {sum(ts) / max(1, len(ts)):.1f} |", flush=True)
