"""Timeline of decode steps as the GPU ran them (CUDA graphs and PDL on, the default), from CUPTI's
per-kernel start and end times (torch.profiler; device diagnosis only, needs torch).

    python3 tools/step_timeline.py [--model M] [--batch 1] [--tokens 128] [--csv PATH]

With programmatic dependent launch a kernel's blocks start while its predecessor runs, so a kernel's
duration overstates what it adds to the step. This prints, for each position in the step (averaged over
steps), the kernel's start and end relative to the previous kernel's end and the increment of the
step's running end time ("adds"): the sum of increments is the step time. The gap from a step's last
kernel to the next step's first (graph launch, and the tokens' copy where one is made) is reported apart.
"""
import argparse
import collections
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from llama_kernel import LlamaInference  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="synthetic:llama-3.2-1b")
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--tokens", type=int, default=128)
ap.add_argument("--csv", default="", help="write every device event (name, start us, end us) here")
a = ap.parse_args()

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

torch.cuda.init()
m = LlamaInference(a.model, device="cuda", batch_size=a.batch, max_seq_len=1024, verbose=False)
prompt = [list(range(1000, 1032))] * a.batch
m.generate_ids(prompt, max_new_tokens=a.tokens, temperature=0, ignore_eos=True)
with profile(activities=[ProfilerActivity.CUDA]) as p:
    t0 = time.perf_counter()
    m.generate_ids(prompt, max_new_tokens=a.tokens, temperature=0, ignore_eos=True)
    wall = time.perf_counter() - t0

ev = []
for e in p.events():
    if e.device_type == torch.autograd.DeviceType.CUDA:
        ev.append((e.time_range.start, e.time_range.end, e.name))
ev.sort()
if a.csv:
    with open(a.csv, "w") as f:
        for s, t, n in ev:
            f.write(f"{n.replace(',', ';')[:120]},{s:.3f},{t:.3f}\n")


def short(n):
    n = re.sub(r"\(.*", "", n)
    n = n.replace("void ", "")
    return n[:48]


kern = [x for x in ev if "emcpy" not in x[2] and "emset" not in x[2]]
copies = [x for x in ev if "emcpy" in x[2]]
# steps start at the embedding kernel
starts = [i for i, x in enumerate(kern) if short(x[2]).startswith("k_embed")]
steps = [kern[starts[i]:starts[i + 1]] for i in range(len(starts) - 1)]
sigs = [tuple(short(x[2]) for x in s) for s in steps]
# keep the steps whose kernel sequence is the most common one (decode steps of one graph)
common = collections.Counter(sigs).most_common(1)[0][0]
use = [s for s, g in zip(steps, sigs) if g == common]
print(f"# {a.model}, batch {a.batch}: {len(use)} of {len(steps)} steps have the common sequence of "
      f"{len(common)} kernels; wall {wall * 1e6 / a.tokens:.1f} us/token")
npos = len(common)
adds = [0.0] * npos
dur = [0.0] * npos
st_rel = [0.0] * npos
span = 0.0
for s in use:
    end = s[0][0]
    for i, (b, t, _) in enumerate(s):
        st_rel[i] += b - end
        adds[i] += max(t, end) - end
        dur[i] += t - b
        end = max(end, t)
    span += end - s[0][0]
k = len(use)
# (each step's successor starts at starts[i + 1], so every step in `steps` has one)
gaps = sorted(kern[starts[i + 1]][0] - max(x[1] for x in s)
              for i, (s, g) in enumerate(zip(steps, sigs)) if g == common)
ncp = len(copies)
print(f"step (first kernel start -> last kernel end) {span / k:.1f} us; next step's first kernel starts "
      f"{gaps[len(gaps) // 2]:.1f} us (median) after; device-to-host copies "
      f"{sum(c[1] - c[0] for c in copies) / max(1, ncp):.2f} us each, {ncp / max(1, len(steps)):.2f} a step")
by = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])
for i in range(npos):
    r = by[common[i]]
    r[0] += 1
    r[1] += adds[i] / k
    r[2] += dur[i] / k
    r[3] += st_rel[i] / k
print("| kernel | per step | adds us (sum) | duration us (sum) | starts after prev end, us (mean) |")
print("|---|---|---|---|---|")
for name, r in sorted(by.items(), key=lambda kv: -kv[1][1]):
    print(f"| {name} | {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3] / r[0]:.2f} |")
print("first 12 positions: " + "; ".join(f"{common[i][:22]} +{adds[i] / k:.2f}" for i in range(min(12, npos))))
