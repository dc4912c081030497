"""Per-kernel GPU time of batch decode with CUDA graphs on, read through CUPTI (torch.profiler),
so each kernel's time is its duration with no launch or sync added. With programmatic dependent launch
on (the default on Hopper) a kernel starts while its predecessor finishes and waits for it inside, so its
time includes that wait (the sampler's ~11 us at batch 1 includes the LM head's tail): for a breakdown by
kernel set LLAMA_KERNEL_PDL=0. Needs torch on the device.

    python benchmarks/kernel_profile.py [--batch 1] [--tokens 128] [--prompt 32] [--model synthetic:llama-3.2-1b]

`--prompt 2048 --tokens 1` profiles a prefill instead (its kernels per "token" are per prompt).
"""
import argparse
import collections
import time

from _common import device_line
from llama_kernel import LlamaInference

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--model", default="synthetic:llama-3.2-1b")
ap.add_argument("--tokens", type=int, default=128)
ap.add_argument("--eager", action="store_true", help="CUDA graphs off")
ap.add_argument("--prompt", type=int, default=32, help="prompt tokens per sequence")
a = ap.parse_args()

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

torch.cuda.init()
print(f"# kernel profile, {a.model}, batch {a.batch}, graphs {'off' if a.eager else 'on'}, {device_line()}")
m = LlamaInference(a.model, device="cuda", batch_size=a.batch, max_seq_len=max(1024, a.prompt + a.tokens + 8),
                   cuda_graphs=not a.eager, verbose=False)
prompt = [[1, 2, 3, 4] * (a.prompt // 4) + [5] * (a.prompt % 4)] * a.batch
m.generate_ids(prompt, max_new_tokens=a.tokens, temperature=0, ignore_eos=True)
with profile(activities=[ProfilerActivity.CUDA]) as p:
    t0 = time.perf_counter()
    m.generate_ids(prompt, max_new_tokens=a.tokens, temperature=0, ignore_eos=True)
    wall = time.perf_counter() - t0
tot = collections.defaultdict(float)
cnt = collections.Counter()
for e in p.events():
    if e.device_type == torch.autograd.DeviceType.CUDA:
        name = e.name[:70]
        tot[name] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        cnt[name] += 1
busy = sum(tot.values())
n = a.tokens
print(f"wall {wall * 1e6 / n:.1f} us/token ({n * a.batch / wall:.0f} tok/s), kernels busy {busy / n:.1f} us/token, "
      f"{sum(cnt.values()) / n:.1f} kernels/token")
print("| kernel | calls/token | us/call | us/token | share |\n|---|---|---|---|---|")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1])[:24]:
    print(f"| {k} | {cnt[k] / n:.1f} | {v / cnt[k]:.2f} | {v / n:.1f} | {100 * v / busy:.1f}% |")
