"""Helpers for tests and benchmarks: write a random Llama checkpoint in real
Hugging Face format (config.json, generation_config.json, *.safetensors,
optionally tokenizer files), so that every loading path can be exercised
without downloading anything."""
from __future__ import annotations

import json
import os
import shutil
import struct
from typing import Dict, Iterable, Optional

import numpy as np

from .config import PRESETS, ModelConfig

_DTYPES = {"bf16": "BF16", "f16": "F16", "f32": "F32"}


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return r.astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def encode_tensor(a: np.ndarray, dtype: str) -> bytes:
    if dtype == "bf16":
        return to_bf16_bits(a).tobytes()
    if dtype == "f16":
        return np.ascontiguousarray(a, dtype=np.float16).tobytes()
    if dtype == "f32":
        return np.ascontiguousarray(a, dtype=np.float32).tobytes()
    raise ValueError(f"dtype must be one of {list(_DTYPES)}, not {dtype!r}")


def save_safetensors(path: str, tensors: Dict[str, np.ndarray], dtype: str = "bf16",
                     metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes a .safetensors file (the format's reference layout)."""
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs, off = [], 0
    for name, a in tensors.items():
        data = encode_tensor(a, dtype)
        header[name] = {"dtype": _DTYPES[dtype], "shape": list(a.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path: str) -> Dict[str, np.ndarray]:
    """A plain-Python reader (independent of the C one) returning float32 arrays."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = raw[base + b:base + e]
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            arr = from_bf16_bits(np.frombuffer(buf, dtype=np.uint16))
        elif info["dtype"] == "F16":
            arr = np.frombuffer(buf, dtype=np.float16).astype(np.float32)
        elif info["dtype"] == "F32":
            arr = np.frombuffer(buf, dtype=np.float32).copy()
        else:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        out[name] = arr.reshape(shape)
    return out


def random_weights(cfg: ModelConfig, seed: int = 0, std: float = 0.02,
                   include_lm_head: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """HF-named float32 weights with N(0, std) matrices and norms near 1."""
    rng = np.random.default_rng(seed)
    H, F = cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim

    def mat(n, k):
        return (rng.standard_normal((n, k), dtype=np.float32) * np.float32(std)).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(H, dtype=np.float32)).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(cfg.vocab_size, H)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "self_attn.q_proj.weight"] = mat(q, H)
        w[p + "self_attn.k_proj.weight"] = mat(kv, H)
        w[p + "self_attn.v_proj.weight"] = mat(kv, H)
        w[p + "self_attn.o_proj.weight"] = mat(H, q)
        w[p + "post_attention_layernorm.weight"] = norm()
        w[p + "mlp.gate_proj.weight"] = mat(F, H)
        w[p + "mlp.up_proj.weight"] = mat(F, H)
        w[p + "mlp.down_proj.weight"] = mat(H, F)
    w["model.norm.weight"] = norm()
    if include_lm_head if include_lm_head is not None else not cfg.tie_word_embeddings:
        w["lm_head.weight"] = mat(cfg.vocab_size, H)
    return w


def _rope_spelled(d: dict, spelling: str) -> dict:
    """Rewrites config.json's rope fields in one of the three spellings."""
    rs = d.pop("rope_scaling", None)
    theta = d.pop("rope_theta")
    if spelling == "rope_type":
        d["rope_theta"] = theta
        if rs:
            d["rope_scaling"] = rs
    elif spelling == "type":
        d["rope_theta"] = theta
        if rs:
            rs = dict(rs)
            rs["type"] = rs.pop("rope_type")
            d["rope_scaling"] = rs
    elif spelling == "rope_parameters":
        rp = dict(rs) if rs else {"rope_type": "default"}
        rp["rope_theta"] = theta
        d["rope_parameters"] = rp
    else:
        raise ValueError(f"rope spelling must be 'rope_type', 'type' or 'rope_parameters', not {spelling!r}")
    return d


def make_random_checkpoint(path: str, preset: str = "tiny", *, seed: int = 0, dtype: str = "bf16",
                           shards: int = 1, std: float = 0.02, rope_spelling: str = "rope_type",
                           tokenizer: Optional[str] = None, generation_config: Optional[dict] = None,
                           include_lm_head: Optional[bool] = None, **config_overrides) -> str:
    """Writes a random Llama checkpoint in Hugging Face format to `path`.

    preset: one of config.PRESETS ("tiny" for fast tests, "llama-3.2-1b" and
    "llama-3.2-3b" for true shapes); config_overrides replace ModelConfig
    fields (e.g. tie_word_embeddings=False, num_hidden_layers=1). shards > 1
    writes model-0000i-of-0000n.safetensors and model.safetensors.index.json.
    tokenizer: a folder (or tokenizer.json path) whose tokenizer files are
    copied in. Returns path.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}")
    cfg = PRESETS[preset].with_overrides(**config_overrides)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(_rope_spelled(cfg.to_hf_dict(), rope_spelling), f, indent=2)
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_ids or None, "do_sample": True,
           "temperature": 0.6, "top_p": 0.9}
    if generation_config is not None:
        gen = dict(generation_config)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({k: v for k, v in gen.items() if v is not None}, f, indent=2)
    weights = random_weights(cfg, seed=seed, std=std, include_lm_head=include_lm_head)
    names = list(weights)
    if shards <= 1:
        save_safetensors(os.path.join(path, "model.safetensors"), weights, dtype, {"format": "pt"})
    else:
        groups = [names[i::shards] for i in range(shards)]
        wmap = {}
        for i, g in enumerate(groups):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_safetensors(os.path.join(path, fname), {n: weights[n] for n in g}, dtype, {"format": "pt"})
            wmap.update({n: fname for n in g})
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": wmap}, f, indent=2)
    if tokenizer:
        src = tokenizer if os.path.isdir(tokenizer) else os.path.dirname(tokenizer)
        for fn in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if os.path.isfile(os.path.join(src, fn)):
                shutil.copy(os.path.join(src, fn), os.path.join(path, fn))
    return path


def iter_presets() -> Iterable[str]:
    return iter(PRESETS)
