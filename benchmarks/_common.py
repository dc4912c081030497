"""Shared helpers for the benchmark scripts (device name, timing of torch peers)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from llama_kernel import _C  # noqa: E402


# The matmuls of Llama 3.2 1B and 3B: (name, N, K, mode), the mode as the decode step uses the output
# (cuda_bench_matmul: 0 store fp32, 1 add into the fp32 residual (o, down), 2 SwiGLU pairs, 3 store fp16)
MATMUL_SHAPES = [("qkv", 3072, 2048, 3), ("o", 2048, 2048, 1), ("gate_up", 16384, 2048, 2), ("down", 2048, 8192, 1),
                 ("lm_head", 128256, 2048, 0), ("qkv 3B", 5120, 3072, 3), ("o 3B", 3072, 3072, 1),
                 ("gate_up 3B", 16384, 3072, 2), ("down 3B", 3072, 8192, 1)]


def shape_key(name):
    """a shape's name without spaces ("qkv 3B" -> "qkv3B"): one word on a log line"""
    return name.replace(" ", "")


def matmul_shapes(names=None):
    """MATMUL_SHAPES, or those named, in the order named: a comma-separated string or a list; spaces are optional
    ("qkv3B" = "qkv 3B"), "lm" and "gu" stand for lm_head and gate_up ("gu3B" = "gate_up 3B"). An unknown name
    exits with the known ones."""
    if not names:
        return list(MATMUL_SHAPES)
    by_key = {shape_key(s[0]): s for s in MATMUL_SHAPES}
    out = []
    for n in names.split(",") if isinstance(names, str) else names:
        k = shape_key(n.strip())
        for short, full in (("lm", "lm_head"), ("gu", "gate_up")):
            if k in (short, short + "3B"):
                k = full + k[len(short):]
        if k not in by_key:
            sys.exit(f"unknown matmul shape {n!r}: one of {', '.join(by_key)} (or lm, gu, gu3B)")
        out.append(by_key[k])
    return out


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
