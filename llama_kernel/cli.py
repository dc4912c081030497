"""The command line (python main.py ...): generate text, benchmark, estimate memory."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

DEFAULT_MODEL = "meta-llama/Llama-3.2-1B-Instruct"

EPILOG = """\
examples:
  python main.py --model meta-llama/Llama-3.2-1B-Instruct --prompt "What is the capital of France?"
  python main.py --benchmark                       # synthetic model when no model files are found
  python main.py --benchmark --max_speed --batch_size 16 --model synthetic:llama-3.2-1b
  python main.py --estimate_memory --model meta-llama/Llama-3.2-3B-Instruct --max_seq_len 8192

Instruct models (the model id or folder contains "Instruct") get the chat format for --prompt;
--no_chat sends the prompt as plain text.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py", description="llama_kernel: fast Llama 3.2 inference with int4 "
                                "weights and hand-written C/CUDA kernels.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help=f"model folder, Hugging Face id, or synthetic:<preset> "
                   f"(default {DEFAULT_MODEL}; --benchmark falls back to a synthetic model)")
    p.add_argument("--prompt", default="What is the capital of France?", help="text to continue / answer")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default auto)")
    p.add_argument("--quantization", default="int4", choices=["int4", "none"],
                   help="int4 weights (default) or none (bf16 reference path)")
    p.add_argument("--max_length", type=int, default=512, help="prompt + new tokens (default 512)")
    p.add_argument("--max_new_tokens", type=int, default=None, help="new tokens (overrides --max_length)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: generation_config.json)")
    p.add_argument("--top_p", type=float, default=None, help="nucleus sampling mass (default: generation_config)")
    p.add_argument("--top_k", type=int, default=None, help="top-k sampling (default: generation_config, 50)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: random)")
    p.add_argument("--max_seq_len", type=int, default=None, help="KV-cache length per sequence (default 4096)")
    p.add_argument("--batch_size", type=int, default=1,
                   help="sequences decoded together: the prompt runs N times at once (default 1)")
    p.add_argument("--max_speed", action="store_true",
                   help="everything for speed: CUDA graphs, flash attention, int4, automatic matmul kernels, "
                        "a warm-up run before timing, and no chat formatting overhead in benchmarks")
    fa = p.add_mutually_exclusive_group()
    fa.add_argument("--flash_attention", dest="flash_attention", action="store_true", default=None,
                    help="flash-attention kernels (CUDA; the default there)")
    fa.add_argument("--no_flash_attention", dest="flash_attention", action="store_false",
                    help="plain attention kernels instead (for comparison)")
    p.add_argument("--optimize_memory", action="store_true",
                   help="reserve the estimated memory up front and fail before loading weights if it does not fit")
    p.add_argument("--benchmark", action="store_true", help="print the throughput table for five prompt types")
    p.add_argument("--estimate_memory", action="store_true", help="print the memory a model needs, then exit")
    p.add_argument("--json", default=None, metavar="PATH", help="with --benchmark/--estimate_memory: write JSON")
    p.add_argument("--no_chat", action="store_true", help="never apply the chat template to --prompt")
    p.add_argument("--no_graphs", action="store_true", help="disable CUDA graphs (as LLAMA_KERNEL_DISABLE_GRAPHS=1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or notes on stderr")
    return p


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def cmd_estimate(a) -> int:
    from .memory import UnknownModelError, estimate_memory

    model = a.model or DEFAULT_MODEL
    try:
        est = estimate_memory(model, quantization=a.quantization, max_seq_len=a.max_seq_len,
                              batch_size=a.batch_size, device="cuda" if a.device == "auto" else a.device,
                              compare=True)
    except UnknownModelError as e:
        return _err(str(e))
    except (ValueError, TypeError, OSError) as e:
        return _err(str(e))
    gib = 2.0 ** 30

    def row(name, key):
        print(f"  {name:<34} {est[key] / gib:9.3f} GiB")

    print(f"Memory estimate for {model} ({est['parameters'] / 1e9:.2f} B parameters), quantization "
          f"{est['quantization']}, device {est['device']}, max_seq_len {est['max_seq_len']}, batch {est['batch_size']}")
    row("weights", "weights_bytes")
    row("  layers (matrices + norms)", "weights_layers_bytes")
    row("  embedding (+ tied LM head)", "weights_embed_bytes")
    row("  LM head (untied)", "weights_lm_head_bytes")
    print(f"  {'KV cache':<34} {est['kv_cache_bytes'] / gib:9.3f} GiB  "
          f"({est['kv_cache_per_token_bytes'] / 1024:.1f} KiB per token per sequence)")
    row("activations", "activations_bytes")
    row("workspace", "workspace_bytes")
    row("rope tables", "rope_bytes")
    row("total", "total_bytes")
    bq = est["by_quantization"]
    print(f"  {'total with int4 / with bf16 (none)':<34} {bq['int4'] / gib:9.3f} / {bq['none'] / gib:.3f} GiB")
    if est["device"] == "cuda":
        print("  (plus the CUDA context, typically 0.3-0.5 GiB, which every CUDA program pays)")
    if a.json:
        import json

        with open(a.json, "w") as f:
            json.dump(est, f, indent=2)
    return 0


def load_model(a, model_id: str, synthetic_ok: bool):
    from . import LlamaInference
    from .hub import ModelNotFoundError

    kw = dict(device=a.device, quantization="int4" if a.max_speed else a.quantization, max_seq_len=a.max_seq_len,
              batch_size=a.batch_size, verbose=not a.quiet, optimize_memory=a.optimize_memory,
              chat_format=False if a.no_chat else "auto")
    if a.flash_attention is not None or a.max_speed:
        kw["use_flash_attention"] = True if a.max_speed else a.flash_attention
    if a.no_graphs:
        kw["cuda_graphs"] = False
    if a.max_speed:
        kw["cuda_graphs"] = True
    try:
        return LlamaInference(model_id, **kw), False
    except ModelNotFoundError as e:
        if not synthetic_ok:
            raise
        from .inference import resolve_device

        dev = resolve_device(a.device)
        preset = "llama-3.2-1b" if dev == "cuda" else "small"
        if not a.quiet:
            print(f"note: {str(e).splitlines()[0]}\nnote: running the benchmark on synthetic:{preset} (random "
                  f"weights{', a small shape suited to a CPU-only machine' if dev == 'cpu' else ''})",
                  file=sys.stderr)
        return LlamaInference(f"synthetic:{preset}", **kw), True


def cmd_benchmark(a) -> int:
    from . import benchmark

    model_id = a.model or DEFAULT_MODEL
    free0 = benchmark.gpu_free()
    model, fell_back = load_model(a, model_id, synthetic_ok=a.model is None)
    synthetic = fell_back or model_id.startswith("synthetic:") or model.tokenizer is None
    scale = 1.0 if model.device == "cuda" else 0.1
    res = benchmark.run(model, synthetic=synthetic, batch_size=a.batch_size, scale=scale)
    free1 = benchmark.gpu_free()
    if model.device == "cuda" and free0 is not None and free1 is not None:
        res["gpu_memory_bytes"] = free0 - free1
    if model.device == "cpu":
        res["note"] = "CPU run: token counts scaled to 10% of the GPU table"
    print(benchmark.format_table(res))
    if a.json:
        benchmark.write_json(res, a.json)
    return 0


def cmd_generate(a) -> int:
    model, _ = load_model(a, a.model or DEFAULT_MODEL, synthetic_ok=False)
    if model.tokenizer is None:
        return _err(f"{model.model_id} has no tokenizer.json, so it cannot take a text prompt; "
                    "use --benchmark, or a model folder with tokenizer.json")
    kw = dict(max_length=a.max_length, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
              top_p=a.top_p, top_k=a.top_k, seed=a.seed)
    if a.batch_size > 1:
        for i, text in enumerate(model.generate([a.prompt] * a.batch_size, **kw)):
            print(f"--- [{i}]\n{text}")
        return 0
    for piece in model.generate(a.prompt, stream=True, **kw):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if a.batch_size < 1:
        return _err(f"--batch_size {a.batch_size} must be >= 1")
    if a.max_seq_len is not None and a.max_seq_len < 1:
        return _err(f"--max_seq_len {a.max_seq_len} must be >= 1")
    try:
        if a.estimate_memory:
            return cmd_estimate(a)
        if a.flash_attention and a.device == "cpu" and not a.quiet:
            print("note: --flash_attention selects CUDA kernels; the CPU backend has one attention path",
                  file=sys.stderr)
        if a.benchmark:
            return cmd_benchmark(a)
        return cmd_generate(a)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, MemoryError, RuntimeError) as e:
        return _err(str(e))


if __name__ == "__main__":
    sys.exit(main())
