"""The benchmark behind `python main.py --benchmark`: the seed README's five
prompt types, tokens generated, time and tokens/s, their average, plus
prefill speed, time to first token, GPU memory and the device name.

With a real model (tokenizer present) the prompts are real text, sampled as
the model's generation_config says, stopping at end-of-turn. With no model
files it runs on a synthetic model (random weights of a real shape) and
says so: the prompts are random token ids of the same lengths and each row
generates a fixed number of tokens (ignore_eos), the counts of the seed's table.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional

import numpy as np

from . import _C

PROMPTS = [
    ("Short factual query", "What is the capital of France?", 97),
    ("Scientific explanation", "Explain how photosynthesis turns sunlight, water and carbon dioxide into "
                               "chemical energy, step by step.", 496),
    ("Creative writing (poem)", "Write a short poem about the ocean at night.", 196),
    ("Simple information retrieval", "List the planets of the solar system in order from the sun, with one "
                                     "fact about each.", 146),
    ("Literature summary", "Summarize the plot of Jane Austen's Pride and Prejudice.", 315),
]


def gpu_free() -> Optional[int]:
    info = _C.build_info()
    return info.get("gpu_free_bytes") if info.get("device_count") else None


def device_name(device: str) -> str:
    if device == "cuda":
        info = _C.build_info()
        return f"{info.get('device_name', '?')} (sm_{info.get('compute_capability', '?').replace('.', '')})"
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU: {name}, {_C.build_info()['openmp_threads']} threads"


def run(model, synthetic: bool, batch_size: int = 1, scale: float = 1.0, warmup: bool = True,
        prefill_len: int = 512) -> Dict[str, Any]:
    """Runs the five rows on a loaded LlamaInference; returns the results dict."""
    rng = np.random.default_rng(0)
    V = model.config.vocab_size
    rows: List[Dict[str, Any]] = []
    if warmup:  # kernel load, graph capture, caches: outside the timings
        model.generate_ids([[1, 2, 3, 4]] * batch_size, max_new_tokens=4, temperature=0, ignore_eos=True)
    for name, text, n_tokens in PROMPTS:
        n_new = max(1, int(round(n_tokens * scale)))
        if synthetic:
            ids = rng.integers(0, V, len(text.split()) + 8).tolist()
            kw = dict(max_new_tokens=n_new, temperature=0.0, ignore_eos=True)
        else:
            ids = model.encode_prompt(text)
            kw = dict(max_new_tokens=max(n_new, 512) if scale >= 1 else n_new, temperature=0.6, top_p=0.9,
                      seed=0)
        t0 = time.perf_counter()
        out, stats = model.generate_ids([ids] * batch_size, return_stats=True, **kw)
        dt = time.perf_counter() - t0
        n_gen = sum(len(o) for o in out)
        rows.append({"prompt_type": name, "tokens_generated": n_gen, "seconds": dt,
                     "tokens_per_second": n_gen / dt if dt > 0 else 0.0,
                     "decode_tokens_per_second": (stats["generated_tokens"] - batch_size) / stats["decode_seconds"]
                     if stats["decode_seconds"] > 0 else 0.0,
                     "first_token_seconds": stats["first_token_seconds"]})
    # prefill speed: one long prompt
    n_pf = min(prefill_len, model.max_seq_len - 1)
    ids = rng.integers(0, V, n_pf).tolist()
    model.generate_ids(ids, max_new_tokens=1, temperature=0, ignore_eos=True)  # warm
    _, st = model.generate_ids(ids, max_new_tokens=1, temperature=0, ignore_eos=True, return_stats=True)
    tot_tok = sum(r["tokens_generated"] for r in rows)
    tot_s = sum(r["seconds"] for r in rows)
    mem = model.memory_usage()
    return {
        "model": model.model_id,
        "synthetic": synthetic,
        "device": model.device,
        "device_name": device_name(model.device),
        "quantization": model.quantization,
        "batch_size": batch_size,
        "rows": rows,
        "average_tokens_per_second": tot_tok / tot_s if tot_s else 0.0,
        "mean_row_tokens_per_second": float(np.mean([r["tokens_per_second"] for r in rows])),
        "prefill_tokens": n_pf,
        "prefill_seconds": st["first_token_seconds"],
        "prefill_tokens_per_second": n_pf / st["first_token_seconds"] if st["first_token_seconds"] else 0.0,
        "time_to_first_token_seconds": float(np.median([r["first_token_seconds"] for r in rows])),
        "engine_memory_bytes": mem["total_bytes"],
    }


def format_table(res: Dict[str, Any]) -> str:
    lines = []
    what = f"{res['model']}" + (" (synthetic: random weights, fixed token counts)" if res["synthetic"] else "")
    lines.append(f"Benchmark: {what}, {res['quantization']}, batch {res['batch_size']}")
    lines.append(f"Device: {res['device_name']}")
    lines.append("")
    lines.append(f"| {'Prompt Type':<30} | {'Tokens Generated':>16} | {'Generation Time':>15} | "
                 f"{'Throughput (tokens/sec)':>23} |")
    lines.append(f"|{'-' * 32}|{'-' * 18}|{'-' * 17}|{'-' * 25}|")
    for r in res["rows"]:
        lines.append(f"| {r['prompt_type']:<30} | {r['tokens_generated']:>16} | {r['seconds']:>13.3f} s | "
                     f"{r['tokens_per_second']:>23.1f} |")
    lines.append(f"| {'**Average Throughput**':<30} | {'-':>16} | {'-':>15} | "
                 f"{res['average_tokens_per_second']:>23.1f} |")
    lines.append("")
    lines.append(f"Prefill: {res['prefill_tokens']} tokens in {res['prefill_seconds'] * 1e3:.2f} ms "
                 f"({res['prefill_tokens_per_second']:.0f} tokens/s)")
    lines.append(f"Time to first token (benchmark prompts, median): {res['time_to_first_token_seconds'] * 1e3:.2f} ms")
    mem = res.get("gpu_memory_bytes")
    lines.append(f"Engine memory: {res['engine_memory_bytes'] / 2**20:.1f} MiB"
                 + (f"; GPU memory used by the process for the model: {mem / 2**20:.1f} MiB" if mem else ""))
    return "\n".join(lines)


def write_json(res: Dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
