"""End to end: decode tokens/s at batch 1/16/64, prefill time, time to first
token and GPU memory for synthetic Llama 3.2 shapes (random weights, int4),
with CUDA graphs on and off; with --load (or only that: --load-only) the time from
LlamaInference(...) on a local 1B-shaped bf16 safetensors checkpoint to the first token.

    python benchmarks/bench_e2e.py [--quick] [--peers] [--load | --load-only]
"""
import argparse
import os
import shutil
import tempfile
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


def load_to_first_token(tokenizer_dir=None):
    """Writes a Llama-3.2-1B-shaped random checkpoint (bf16 safetensors, Hugging Face names; the real
    tokenizer files when tokenizer_dir has them) to a temporary folder, then times what a user waits
    for: LlamaInference(folder, device="cuda") (read, quantize to int4, upload) and the first generated
    token of a short prompt. The file was just written, so it is read from the page cache."""
    from llama_kernel.testing import make_random_checkpoint

    d = tempfile.mkdtemp(prefix="lk_load_")
    try:
        tok = tokenizer_dir if tokenizer_dir and os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")) else None
        make_random_checkpoint(d, "llama-3.2-1b", seed=0, tokenizer=tok)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        t0 = time.perf_counter()
        m = LlamaInference(d, device="cuda", verbose=False)
        t1 = time.perf_counter()
        if tok:
            m.generate("What is the capital of France?", max_new_tokens=1, temperature=0)
        else:
            m.generate_ids(list(range(1, 9)), max_new_tokens=1, temperature=0)
        t2 = time.perf_counter()
        del m
    finally:
        shutil.rmtree(d, ignore_errors=True)
    r = {"checkpoint_bytes": size, "engine_seconds": t1 - t0, "first_token_seconds": t2 - t1,
         "load_to_first_token_seconds": t2 - t0, "tokenizer": bool(tok)}
    print(f"load to first token (1B-shaped bf16 safetensors, {size / 1e9:.2f} GB, page cache warm"
          f"{', real tokenizer, text prompt' if tok else ', token-id prompt'}): {t2 - t0:.2f} s "
          f"(LlamaInference {t1 - t0:.2f} s, then the first token {(t2 - t1) * 1e3:.1f} ms)", flush=True)
    return r


def hf_peers(model_name, batches, new=64, prompt_len=32, compile_peer=True):
    """transformers eager bf16 generate, and a torch.compile (reduce-overhead) static-cache
    loop (the gpt-fast recipe as transformers exposes it), same shapes, random weights."""
    torch = torch_or_none()
    try:
        import transformers
    except ImportError:
        return {}
    if torch is None:
        return {}
    from llama_kernel.config import preset

    cfg = preset(model_name.split(":", 1)[1])
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in cfg.to_hf_dict().items()
                                         if k not in ("architectures", "torch_dtype", "model_type")})
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(hf_cfg).to(device="cuda", dtype=torch.bfloat16).eval()
    out = {}
    for B in batches:
        ids = torch.randint(0, cfg.vocab_size, (B, prompt_len), device="cuda")
        with torch.no_grad():
            model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            torch.cuda.synchronize()
        out[f"transformers_eager_bf16_b{B}"] = B * new / (time.perf_counter() - t0)
        print(f"peer transformers eager bf16 batch {B}: {out[f'transformers_eager_bf16_b{B}']:.0f} tok/s", flush=True)
    if compile_peer:
        try:
            model.generation_config.cache_implementation = "static"
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
            ids = torch.randint(0, cfg.vocab_size, (1, prompt_len), device="cuda")
            with torch.no_grad():
                t0 = time.perf_counter()
                for _ in range(2):
                    model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
                out["compile_seconds"] = time.perf_counter() - t0
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model.generate(ids, max_new_tokens=4 * new, min_new_tokens=4 * new, do_sample=False)
                torch.cuda.synchronize()
            out["torch_compile_static_bf16_b1"] = 4 * new / (time.perf_counter() - t0)
            print(f"peer torch.compile static-cache bf16 batch 1: {out['torch_compile_static_bf16_b1']:.0f} tok/s "
                  f"(compile + warm-up {out['compile_seconds']:.0f} s)", flush=True)
        except Exception as e:  # compile support varies between versions
            out["torch_compile_error"] = str(e)[:300]
            print("peer torch.compile failed:", out["torch_compile_error"], flush=True)
    del model
    torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="synthetic:llama-3.2-1b")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes")
    ap.add_argument("--no-eager", action="store_true", help="graphs only")
    ap.add_argument("--peers", action="store_true", help="measure transformers / torch.compile peers too")
    ap.add_argument("--3b", dest="three_b", action="store_true", help="also batch-1 decode of synthetic:llama-3.2-3b")
    ap.add_argument("--load", action="store_true",
                    help="also time LlamaInference(...) on a local 1B-shaped checkpoint to the first token")
    ap.add_argument("--load-only", action="store_true", help="only that")
    ap.add_argument("--tokenizer", default=os.environ.get("LLAMA_KERNEL_TOKENIZER_FIXTURES"),
                    help="folder with the real tokenizer.json for the --load checkpoint")
    a = ap.parse_args()
    print(f"# end to end, {a.model}, int4, {device_line()}")
    res = {"device": device_line(), "model": a.model, "decode": [], "prefill": []}
    if a.load or a.load_only:
        res["load"] = load_to_first_token(a.tokenizer)
        if a.load_only:
            save_json(res, "bench_e2e.json")
            return
    batches = [1, 16, 64] if not a.quick else [1, 16]
    if a.batches:
        batches = [int(b) for b in a.batches.split(",")]
    ap_eager = [1]  # graphs off: batch 1 only (the comparison issue 4 asks for)
    # one engine per batch size, as a user would load it (batch_size sets the layout, the
    # attention splits and the graphs)
    for graphs in ((True,) if a.no_eager else (True, False)):
        for B in batches:
            if not graphs and B not in ap_eager:
                continue
            t0 = time.perf_counter()
            m = LlamaInference(a.model, device="cuda", batch_size=B, max_seq_len=4096, cuda_graphs=graphs,
                               verbose=False)
            load_s = time.perf_counter() - t0
            r = decode_rate(m, B, 256 if B == 1 else 128)
            r["graphs"] = graphs
            res["decode"].append(r)
            print(f"decode batch {B:3d} graphs={graphs!s:5}: {r['tokens_per_s']:9.0f} tok/s total "
                  f"({r['decode_tokens_per_s']:.0f} in the decode loop), TTFT {r['ttft_ms']:.2f} ms", flush=True)
            if graphs and B == 1 and not a.no_eager:
                res["load_seconds_synthetic"] = load_s
                for L in (128, 512, 2048):
                    ms = prefill_ms(m, L)
                    res["prefill"].append({"tokens": L, "ms": ms})
                    print(f"prefill {L:5d} tokens: {ms:.2f} ms ({L / ms * 1e3:.0f} tok/s)", flush=True)
            del m
    free0 = _C.build_info().get("gpu_free_bytes", 0)
    m = LlamaInference(a.model, device="cuda", batch_size=1, max_seq_len=4096, verbose=False)
    free1 = _C.build_info().get("gpu_free_bytes", 0)
    res["engine_bytes_bs1_4096"] = m.memory_usage()["total_bytes"]
    res["gpu_bytes_used_bs1_4096"] = free0 - free1
    print(f"engine memory (batch 1, 4096-token KV cache): {res['engine_bytes_bs1_4096'] / 2**30:.3f} GiB "
          f"(cudaMemGetInfo delta {res['gpu_bytes_used_bs1_4096'] / 2**30:.3f} GiB)")
    del m
    if a.three_b:
        m3 = LlamaInference("synthetic:llama-3.2-3b", device="cuda", batch_size=1, max_seq_len=4096, verbose=False)
        r = decode_rate(m3, 1, 256)
        res["decode_3b_b1"] = r
        print(f"3B decode batch 1: {r['tokens_per_s']:.0f} tok/s", flush=True)
        del m3
    if a.peers:
        res["peers"] = hf_peers(a.model, [1, 16])
        ours = {(r["batch"], r["graphs"]): r["tokens_per_s"] for r in res["decode"]}
        for k, v in res["peers"].items():
            if k.endswith("_b1") and (1, True) in ours:
                print(f"ratio llama_kernel / {k}: {ours[(1, True)] / v:.1f}x")
            if k.endswith("_b16") and (16, True) in ours:
                print(f"ratio llama_kernel / {k}: {ours[(16, True)] / v:.1f}x")
    save_json(res, "bench_e2e.json")


if __name__ == "__main__":
    main()
