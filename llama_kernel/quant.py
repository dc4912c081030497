"""NumPy mirror of the int4 weight format defined in csrc/lk_quant.h.

Bit-identical to the C reference (same float32 operations in the same
order); tests use it to build references and to check the C code. The
group size comes from the extension, never restated here.
"""
from __future__ import annotations

import numpy as np

from . import _C

GROUP = _C.Q4_GROUP
VERSION = _C.Q4_VERSION


def quantize(w) -> "tuple[np.ndarray, np.ndarray]":
    """float32 [n, k] -> (qs uint8 [n, k/2], params uint16 [n, k/G, 2] = fp16 bits of (scale, min))."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] % GROUP:
        raise ValueError(f"quantize: need a [n, k] array with k a multiple of {GROUP}, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("quantize: weights must be finite")
    n, k = w.shape
    g = w.reshape(n, k // GROUP, GROUP)
    lo = g.min(axis=2)
    hi = g.max(axis=2)
    with np.errstate(over="ignore"):
        scale = ((hi - lo) / np.float32(15.0)).astype(np.float16)
        mn = lo.astype(np.float16)
    scale = np.where(scale == 0, np.float16(1.0), scale)
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(mn))):
        raise ValueError("quantize: a group's range is too large for fp16 scales")
    s32 = scale.astype(np.float32)[..., None]
    m32 = mn.astype(np.float32)[..., None]
    inv = np.float32(1.0) / s32
    v = (g - m32) * inv + np.float32(0.5)
    q = np.clip(np.floor(v), 0, 15).astype(np.uint8).reshape(n, k)
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    params = np.stack([scale.view(np.uint16), mn.view(np.uint16)], axis=-1)
    return qs, np.ascontiguousarray(params)


def dequantize(qs, params) -> np.ndarray:
    """(qs, params) -> float32 [n, k]: q * scale + min."""
    qs = np.asarray(qs, dtype=np.uint8)
    params = np.asarray(params, dtype=np.uint16)
    n, half = qs.shape
    k = half * 2
    q = np.empty((n, k), dtype=np.float32)
    q[:, 0::2] = qs & 15
    q[:, 1::2] = qs >> 4
    scale = params[..., 0].view(np.float16).astype(np.float32)
    mn = params[..., 1].view(np.float16).astype(np.float32)
    out = q.reshape(n, k // GROUP, GROUP) * scale[..., None] + mn[..., None]
    return out.reshape(n, k).astype(np.float32)


def roundtrip(w) -> np.ndarray:
    """What the engine computes with in place of w."""
    return dequantize(*quantize(w))
