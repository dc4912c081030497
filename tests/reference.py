"""A float64 NumPy Llama forward pass written from the Hugging Face
definition (transformers' modeling_llama.py), independent of the C code:
its own rope frequencies, rotate_half, repeat_kv, causal softmax, SwiGLU."""
from __future__ import annotations

import math

import numpy as np

from llama_kernel import quant


def inv_freq(cfg) -> np.ndarray:
    d = cfg.head_dim
    base = 1.0 / (cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    if cfg.rope_type == "default":
        return base
    if cfg.rope_type == "linear":
        return base / cfg.rope_factor
    assert cfg.rope_type == "llama3"
    factor, lo, hi, old = (cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor,
                           cfg.rope_original_max_position_embeddings)
    low_wavelen, high_wavelen = old / lo, old / hi
    wavelen = 2 * math.pi / base
    out = np.where(wavelen > low_wavelen, base / factor, base)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, out)


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def engine_weights(w: dict, cfg, quantization: str) -> dict:
    """The weights the engine computes with: int4 round-trips every matrix
    (embedding and LM head included), 'none' keeps them as stored."""
    out = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    if quantization == "int4":
        for k, v in w.items():
            if v.ndim == 2:
                out[k] = quant.roundtrip(v).astype(np.float64)
    return out


def forward(w: dict, cfg, tokens) -> np.ndarray:
    """Logits [len(tokens), vocab] in float64."""
    tokens = np.asarray(tokens)
    n = len(tokens)
    nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    x = w["model.embed_tokens.weight"][tokens]
    freqs = np.outer(np.arange(n, dtype=np.float64), inv_freq(cfg))
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(n, nh, hd)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(n, nkv, hd)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(n, nkv, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1)  # repeat_kv: head j uses kv head j // rep
        v = np.repeat(v, rep, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", s, v).reshape(n, nh * hd)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], cfg.rms_norm_eps)
    head = w.get("lm_head.weight")
    if head is None or cfg.tie_word_embeddings:
        head = w["model.embed_tokens.weight"]
    return x @ head.T


def rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
