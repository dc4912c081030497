"""Memory estimation before loading anything.

The numbers come from the same C planning code that the engine allocates
with (lk_plan_memory in csrc/lk_model.c), so the estimate is what
LlamaInference(...).memory_usage() then reports, to the byte for the
weights and KV cache. Shapes come from a local config.json, the Hugging Face
cache, or a built-in table of known Llama checkpoints.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from typing import Any, Dict, Optional, Union

from . import _C
from .config import ModelConfig, PRESETS

# Hugging Face ids of known Llama-architecture checkpoints -> shape
_LLAMA3_8B = ModelConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, head_dim=128, max_position_embeddings=8192,
                         rope_theta=500000.0, tie_word_embeddings=False, bos_token_id=128000,
                         eos_token_ids=[128001, 128009], name="llama-3-8b")
_TINYLLAMA = ModelConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                         num_key_value_heads=4, vocab_size=32000, head_dim=64, max_position_embeddings=2048,
                         rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_ids=[2],
                         name="tinyllama-1.1b")
_LLAMA2_7B = ModelConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32000, head_dim=128, max_position_embeddings=4096,
                         rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1,
                         eos_token_ids=[2], name="llama-2-7b")

KNOWN_MODELS: Dict[str, ModelConfig] = {}
for _base, _cfg in (("meta-llama/Llama-3.2-1B", PRESETS["llama-3.2-1b"]),
                    ("meta-llama/Llama-3.2-3B", PRESETS["llama-3.2-3b"]),
                    ("meta-llama/Llama-3.1-8B", PRESETS["llama-3.1-8b"]),
                    ("meta-llama/Meta-Llama-3.1-8B", PRESETS["llama-3.1-8b"]),
                    ("meta-llama/Llama-3.1-70B", PRESETS["llama-3.1-70b"]),
                    ("meta-llama/Meta-Llama-3.1-70B", PRESETS["llama-3.1-70b"]),
                    ("meta-llama/Meta-Llama-3-8B", _LLAMA3_8B)):
    KNOWN_MODELS[_base] = _cfg
    KNOWN_MODELS[_base + "-Instruct"] = _cfg
KNOWN_MODELS["meta-llama/Llama-3.3-70B-Instruct"] = PRESETS["llama-3.1-70b"]
KNOWN_MODELS["meta-llama/Llama-2-7b-hf"] = _LLAMA2_7B
KNOWN_MODELS["meta-llama/Llama-2-7b-chat-hf"] = _LLAMA2_7B
KNOWN_MODELS["TinyLlama/TinyLlama-1.1B-Chat-v1.0"] = _TINYLLAMA

_VARIANTS = {"auto": 0, "lut": 1, "optimized": 2, "batched": 3}


class UnknownModelError(ValueError):
    """An id that is neither local, cached nor in the known-model table."""


def variant_code(name: str) -> int:
    env = os.environ.get("LLAMA_KERNEL_MATMUL")
    if name == "auto" and env:
        name = env
    if name not in _VARIANTS:
        raise ValueError(f"matmul_variant = {name!r}; use one of {', '.join(_VARIANTS)}")
    return _VARIANTS[name]


def _size_b(model_id: str) -> Optional[float]:
    m = re.search(r"(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model_id)
    return float(m.group(1)) if m else None


def nearest_models(model_id: str, n: int = 2):
    """Known ids closest to model_id: same Llama generation first, then parameter count, one id per size."""
    ids = list(KNOWN_MODELS)
    want = _size_b(model_id)
    if not want:
        return difflib.get_close_matches(model_id, ids, n=n, cutoff=0.0)
    gen = re.search(r"Llama-?(\d)", model_id, re.IGNORECASE)
    instruct = "instruct" in model_id.lower() or "chat" in model_id.lower()

    def key(i):
        g = re.search(r"Llama-?(\d)", i)
        same_gen = bool(gen and g and g.group(1) == gen.group(1))
        canonical = i.startswith("meta-llama/Llama-")
        return (not same_gen, abs(math.log((_size_b(i) or 1.0) / want)), not canonical,
                ("Instruct" in i or "chat" in i) != instruct, i)

    out, sizes = [], set()
    for i in sorted(ids, key=key):
        if _size_b(i) not in sizes:
            sizes.add(_size_b(i))
            out.append(i)
        if len(out) == n:
            break
    return out


def resolve_config(model: Union[str, ModelConfig, Dict[str, Any]]) -> ModelConfig:
    """A ModelConfig from a config, a config.json dict, a folder, a cached HF id, a known id or synthetic:<preset>."""
    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, dict):
        return ModelConfig.from_dict(model)
    if not isinstance(model, str) or not model:
        raise TypeError("model must be a model id, a folder, a ModelConfig or a config dict")
    if model.startswith("synthetic:"):
        name = model.split(":", 1)[1]
        if name not in PRESETS:
            raise UnknownModelError(f"unknown synthetic preset '{name}'; known: {', '.join(PRESETS)}")
        return PRESETS[name]
    if os.path.isfile(model) and model.endswith(".json"):
        return ModelConfig.from_file(model)
    if os.path.isdir(model) and os.path.isfile(os.path.join(model, "config.json")):
        return ModelConfig.from_file(os.path.join(model, "config.json"))
    from .hub import find_in_cache

    if model.count("/") == 1:
        snap = find_in_cache(model)
        if snap:
            return ModelConfig.from_file(os.path.join(snap, "config.json"))
    for k, v in KNOWN_MODELS.items():
        if k.lower() == model.lower():
            return v
    near = nearest_models(model)
    raise UnknownModelError(
        f"'{model}' is not a local folder, not in the Hugging Face cache and not a known model"
        + (" (there is no such checkpoint)" if _size_b(model) else "")
        + f". Nearest known: {', '.join(near)}. Pass a folder with config.json, or a config dict.")


def default_prefill_chunk(device: str, max_seq_len: int, batch_size: int) -> int:
    """Prompt rows a prefill forward takes when prefill_chunk is not given.

    CUDA: 2,048, so a 2,048-token prompt is one forward (11.0 ms to its first
    token on an H100 against 12.4 ms in two 1,024-row chunks; the 1B's scratch
    grows by ~40 MB). CPU: 256. Never more than batch_size x max_seq_len, the
    most prompt rows one prefill can hold, so short caches get no idle scratch.
    """
    return max(1, min(2048 if device == "cuda" else 256, batch_size * max_seq_len))


def _plan(cfg: ModelConfig, device, quantization, max_seq_len, batch_size, prefill_chunk, n_threads=0):
    return _C.estimate(cfg.to_core(), device=device, quantization=quantization, max_seq_len=max_seq_len,
                       batch_size=batch_size, prefill_chunk=prefill_chunk, n_threads=n_threads)


def estimate_memory(model_id_or_config: Union[str, ModelConfig, Dict[str, Any]] = "meta-llama/Llama-3.2-1B-Instruct",
                    quantization: str = "int4", max_seq_len: Optional[int] = None, batch_size: int = 1,
                    device: str = "auto", prefill_chunk: Optional[int] = None, n_threads: int = 0,
                    compare: bool = False) -> Dict[str, Any]:
    """Bytes LlamaInference would allocate, by part, before loading anything.

    Fields: total_bytes; weights_bytes (weights_layers_bytes, weights_embed_bytes,
    weights_lm_head_bytes); kv_cache_bytes and kv_cache_per_token_bytes;
    activations_bytes; workspace_bytes; rope_bytes. compare=True adds
    "by_quantization": the total for int4 and for none (bf16), side by side.
    prefill_chunk=None takes LlamaInference's default (default_prefill_chunk).
    """
    cfg = resolve_config(model_id_or_config)
    if device == "auto":
        from .inference import cuda_available

        device = "cuda" if cuda_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device = {device!r}; use 'auto', 'cpu' or 'cuda'")
    if quantization not in ("int4", "none"):
        raise ValueError(f"quantization = {quantization!r}; use 'int4' or 'none'")
    if max_seq_len is None:
        max_seq_len = min(cfg.max_position_embeddings, 4096)
    if prefill_chunk is None:
        prefill_chunk = default_prefill_chunk(device, max_seq_len, batch_size)
    out: Dict[str, Any] = dict(_plan(cfg, device, quantization, max_seq_len, batch_size, prefill_chunk, n_threads))
    out.update(model=cfg.name or str(model_id_or_config), device=device, quantization=quantization,
               max_seq_len=max_seq_len, batch_size=batch_size, parameters=sum(cfg.n_params().values()))
    if compare:
        out["by_quantization"] = {
            q: _plan(cfg, device, q, max_seq_len, batch_size, prefill_chunk, n_threads)["total_bytes"]
            for q in ("int4", "none")}
    return out


def available_bytes(device: str) -> int:
    if device == "cuda":
        info = _C.build_info()
        return int(info.get("gpu_free_bytes", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(cfg: ModelConfig, device: str, quantization: str, max_seq_len: int, batch_size: int,
               prefill_chunk: int) -> Dict[str, Any]:
    """Raises MemoryError, before anything is loaded, when the plan exceeds the free memory."""
    est = _plan(cfg, device, quantization, max_seq_len, batch_size, prefill_chunk)
    free = available_bytes(device)
    need = est["total_bytes"]
    if need <= free:
        return est
    fixed = need - est["kv_cache_bytes"]
    per_pos = est["kv_cache_per_token_bytes"] * batch_size
    hints = []
    if free > fixed and per_pos:
        fit_len = (free - fixed) // per_pos
        if fit_len >= 1:
            hints.append(f"max_seq_len={int(fit_len)} would fit with batch_size={batch_size}")
        fit_b = (free - fixed) // (est["kv_cache_per_token_bytes"] * max_seq_len)
        if fit_b >= 1 and batch_size > 1:
            hints.append(f"batch_size={int(min(fit_b, batch_size - 1))} would fit with max_seq_len={max_seq_len}")
    if quantization == "none":
        hints.append("quantization='int4' needs about a quarter of the weight memory")
    where = "GPU" if device == "cuda" else "host"
    raise MemoryError(
        f"the model needs {need / 2**30:.2f} GiB of {where} memory (weights {est['weights_bytes'] / 2**30:.2f} GiB, "
        f"KV cache {est['kv_cache_bytes'] / 2**30:.2f} GiB for max_seq_len={max_seq_len} x batch_size={batch_size}) "
        f"but only {free / 2**30:.2f} GiB is free. " + ("; ".join(hints) + "." if hints else
                                                        "A smaller model is needed."))
