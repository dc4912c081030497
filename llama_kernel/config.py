"""Model shape from a Hugging Face config.json, normalised for the C engine.

Reads every spelling of the rotary settings that Llama checkpoints use:
``rope_scaling`` with ``type`` or ``rope_type`` (transformers v4), and
``rope_parameters`` with ``rope_theta`` inside (transformers v5). Rope types
other than default, linear and llama3 are rejected with a clear error, never
silently replaced by the default.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Optional

from . import _C

SUPPORTED_ROPE = {"default": _C.ROPE_DEFAULT, "linear": _C.ROPE_LINEAR, "llama3": _C.ROPE_LLAMA3}


class ConfigError(ValueError):
    """config.json describes something llama_kernel cannot run (the message says what and why)."""


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    bos_token_id: Optional[int] = None
    eos_token_ids: List[int] = field(default_factory=list)
    name: str = ""

    # ---- construction ----------------------------------------------------
    @classmethod
    def from_file(cls, path: str) -> "ModelConfig":
        try:
            with open(path, "r", encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(d, name=os.path.basename(os.path.dirname(os.path.abspath(path))))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_dict(cls, d: Dict[str, Any], name: str = "") -> "ModelConfig":
        def need(key, typ=int):
            if key not in d or d[key] is None:
                raise ConfigError(f"config has no '{key}'")
            return _num(d[key], key, typ)

        model_type = d.get("model_type", "llama")
        if model_type != "llama":
            raise ConfigError(
                f"model_type is '{model_type}'; llama_kernel runs Llama-architecture models (model_type 'llama')")
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"hidden_act is '{act}'; only 'silu' (SwiGLU, as in Llama) is supported")
        for flag in ("attention_bias", "mlp_bias"):
            if d.get(flag):
                raise ConfigError(f"'{flag}' is true; Llama layers without biases are supported only")
        hidden = need("hidden_size")
        heads = need("num_attention_heads")
        kv = _num(d.get("num_key_value_heads") or heads, "num_key_value_heads", int)
        head_dim = d.get("head_dim")
        if head_dim is None:
            if heads <= 0 or hidden % heads:
                raise ConfigError(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
            head_dim = hidden // heads
        rope = _parse_rope(d)
        eos = d.get("eos_token_id")
        eos_ids = _id_list(eos, "eos_token_id")
        bos = d.get("bos_token_id")
        return cls(
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_hidden_layers=need("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=kv,
            vocab_size=need("vocab_size"),
            head_dim=_num(head_dim, "head_dim", int),
            max_position_embeddings=_num(d.get("max_position_embeddings", 131072), "max_position_embeddings", int),
            rms_norm_eps=_num(d.get("rms_norm_eps", 1e-5), "rms_norm_eps", float),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            bos_token_id=None if bos is None else _num(bos, "bos_token_id", int),
            eos_token_ids=eos_ids,
            name=name,
            **rope,
        )

    def with_overrides(self, **kw) -> "ModelConfig":
        return replace(self, **kw)

    # ---- for the C engine -------------------------------------------------
    def to_core(self) -> Dict[str, Any]:
        """The dict the extension reads (one place that maps names)."""
        return {
            "dim": self.hidden_size,
            "hidden_dim": self.intermediate_size,
            "n_layers": self.num_hidden_layers,
            "n_heads": self.num_attention_heads,
            "n_kv_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_pos": min(self.max_position_embeddings, 2**31 - 1),
            "rms_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_type": SUPPORTED_ROPE[self.rope_type],
            "rope_factor": self.rope_factor,
            "rope_low_freq_factor": self.rope_low_freq_factor,
            "rope_high_freq_factor": self.rope_high_freq_factor,
            "rope_orig_max_pos": self.rope_original_max_position_embeddings,
            "tied_embeddings": int(self.tie_word_embeddings),
        }

    def to_hf_dict(self) -> Dict[str, Any]:
        """A config.json for this shape (transformers v4 spelling)."""
        d = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "bfloat16",
        }
        if self.bos_token_id is not None:
            d["bos_token_id"] = self.bos_token_id
        if self.eos_token_ids:
            d["eos_token_id"] = self.eos_token_ids if len(self.eos_token_ids) > 1 else self.eos_token_ids[0]
        if self.rope_type == "llama3":
            d["rope_scaling"] = {
                "rope_type": "llama3",
                "factor": self.rope_factor,
                "low_freq_factor": self.rope_low_freq_factor,
                "high_freq_factor": self.rope_high_freq_factor,
                "original_max_position_embeddings": self.rope_original_max_position_embeddings,
            }
        elif self.rope_type == "linear":
            d["rope_scaling"] = {"rope_type": "linear", "factor": self.rope_factor}
        return d

    def n_params(self) -> Dict[str, int]:
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        per_layer = self.hidden_size * (q + 2 * kv) + q * self.hidden_size + 3 * self.hidden_size * self.intermediate_size
        linear = per_layer * self.num_hidden_layers
        emb = self.vocab_size * self.hidden_size
        return {"linear": linear, "embedding": emb, "lm_head": 0 if self.tie_word_embeddings else emb}

    def asdict(self) -> Dict[str, Any]:
        return asdict(self)


def _num(v, key, typ):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"'{key}' must be a number, not {v!r}")
    if typ is int:
        if isinstance(v, float):
            if not v.is_integer():
                raise ConfigError(f"'{key}' must be an integer, not {v!r}")
            v = int(v)
        return int(v)
    return float(v)


def _id_list(v, key) -> List[int]:
    if v is None:
        return []
    if isinstance(v, list):
        return [_num(x, key, int) for x in v]
    return [_num(v, key, int)]


def _parse_rope(d: Dict[str, Any]) -> Dict[str, Any]:
    """All three spellings -> rope_theta, rope_type and its parameters."""
    params = d.get("rope_parameters")
    scaling = d.get("rope_scaling")
    theta = d.get("rope_theta")
    if params is not None:
        if not isinstance(params, dict):
            raise ConfigError("'rope_parameters' must be an object")
        if "rope_theta" in params:
            theta = params["rope_theta"]
        scaling = params
    if theta is None:
        theta = 10000.0
    out = {"rope_theta": _num(theta, "rope_theta", float)}
    if scaling is None:
        out["rope_type"] = "default"
        return out
    if not isinstance(scaling, dict):
        raise ConfigError("'rope_scaling' must be an object or null")
    rtype = scaling.get("rope_type", scaling.get("type"))
    if rtype is None:
        raise ConfigError("rope scaling has neither 'rope_type' nor 'type'")
    if rtype not in SUPPORTED_ROPE:
        raise ConfigError(
            f"rope type '{rtype}' is not supported (supported: {', '.join(SUPPORTED_ROPE)}); "
            "llama_kernel will not run a model with a rope it does not implement")
    out["rope_type"] = rtype
    if rtype in ("linear", "llama3"):
        if "factor" not in scaling:
            raise ConfigError(f"rope type '{rtype}' needs 'factor'")
        out["rope_factor"] = _num(scaling["factor"], "rope factor", float)
    if rtype == "llama3":
        for key, name in (("low_freq_factor", "rope_low_freq_factor"), ("high_freq_factor", "rope_high_freq_factor")):
            if key not in scaling:
                raise ConfigError(f"llama3 rope scaling needs '{key}'")
            out[name] = _num(scaling[key], key, float)
        if "original_max_position_embeddings" not in scaling:
            raise ConfigError("llama3 rope scaling needs 'original_max_position_embeddings'")
        out["rope_original_max_position_embeddings"] = _num(
            scaling["original_max_position_embeddings"], "original_max_position_embeddings", int)
    return out


# ---- known shapes ----------------------------------------------------------
_LLAMA3_ROPE = dict(rope_theta=500000.0, rope_type="llama3", rope_factor=32.0, rope_low_freq_factor=1.0,
                    rope_high_freq_factor=4.0, rope_original_max_position_embeddings=8192)
_LLAMA31_ROPE = dict(_LLAMA3_ROPE, rope_factor=8.0)
_LLAMA3_IDS = dict(bos_token_id=128000, eos_token_ids=[128001, 128008, 128009])

PRESETS: Dict[str, ModelConfig] = {
    # for tests and CPU-only demos
    "tiny": ModelConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=512, head_dim=32, max_position_embeddings=2048,
                        tie_word_embeddings=True, bos_token_id=1, eos_token_ids=[2], name="tiny", **_LLAMA3_ROPE),
    "small": ModelConfig(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                         num_key_value_heads=4, vocab_size=32768, head_dim=64, max_position_embeddings=8192,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_ids=[2], name="small", **_LLAMA3_ROPE),
    "llama-3.2-1b": ModelConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, head_dim=64,
                                max_position_embeddings=131072, tie_word_embeddings=True, name="llama-3.2-1b",
                                **_LLAMA3_ROPE, **_LLAMA3_IDS),
    "llama-3.2-3b": ModelConfig(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                num_attention_heads=24, num_key_value_heads=8, vocab_size=128256, head_dim=128,
                                max_position_embeddings=131072, tie_word_embeddings=True, name="llama-3.2-3b",
                                **_LLAMA3_ROPE, **_LLAMA3_IDS),
    "llama-3.1-8b": ModelConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, head_dim=128,
                                max_position_embeddings=131072, tie_word_embeddings=False, name="llama-3.1-8b",
                                **_LLAMA31_ROPE, **_LLAMA3_IDS),
    "llama-3.1-70b": ModelConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                                 num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, head_dim=128,
                                 max_position_embeddings=131072, tie_word_embeddings=False, name="llama-3.1-70b",
                                 **_LLAMA31_ROPE, **_LLAMA3_IDS),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; known: {', '.join(PRESETS)}")
    return PRESETS[name]
