"""Shared helpers for the benchmark scripts (device name, timing of torch peers)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from llama_kernel import _C  # noqa: E402


def device_line():
    info = _C.build_info()
    if info.get("device_count"):
        return f"{info['device_name']} (sm_{info['compute_capability'].replace('.', '')}, {info['sm_count']} SMs)"
    return "no GPU"


def torch_or_none():
    try:
        import torch

        return torch if torch.cuda.is_available() else None
    except ImportError:
        return None


def time_torch_graph(torch, fn, reps=16, iters=20):
    """Median microseconds per call of fn(i) captured reps times in a CUDA graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(3):
            fn(i)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            fn(i)
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1000 / reps)
    ts.sort()
    return ts[len(ts) // 2]


def save_json(obj, name):
    out = os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "w") as f:
        json.dump(obj, f, indent=1)
