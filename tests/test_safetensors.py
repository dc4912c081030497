"""The C safetensors reader on well-formed and hostile files: every corrupt
file raises an error naming the file and the problem; nothing crashes."""
import json
import os
import random
import struct

import numpy as np
import pytest

from llama_kernel import LlamaInference, _C
from llama_kernel.testing import make_random_checkpoint, save_safetensors


def write_raw(path, header, data=b"", hlen=None):
    h = json.dumps(header).encode() if isinstance(header, dict) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) if hlen is None else hlen))
        f.write(h)
        f.write(data)
    return str(path)


def test_roundtrip(tmp_path):
    p = str(tmp_path / "a.safetensors")
    save_safetensors(p, {"x": np.ones((2, 3), np.float32), "y": np.zeros(5, np.float32)}, "bf16", {"k": "v"})
    info = sorted(_C.safetensors_info(p))
    assert info == [("x", "BF16", (2, 3), 12), ("y", "BF16", (5,), 10)]


def ent(dtype="F32", shape=(2,), offs=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offs)}


@pytest.mark.parametrize("header,data,hlen,msg", [
    ({"a": ent()}, b"\0" * 4, None, "past the end of the data"),                  # truncated data
    ({"a": ent(offs=(0, 8)), "b": ent(offs=(4, 12))}, b"\0" * 12, None, "overlap"),
    ({"a": ent()}, b"\0" * 8, 10**12, "exceeds"),                                 # huge header length
    ({"a": ent()}, b"\0" * 8, 2000, "past the end of the file"),
    ({"a": ent(dtype="Q4")}, b"\0" * 8, None, "unknown dtype"),
    ({"a": ent(shape=(3,))}, b"\0" * 8, None, "need 12"),                        # shape/bytes mismatch
    ({"a": ent(shape=(-1,))}, b"\0" * 8, None, "non-negative"),
    ({"a": ent(offs=(8, 0))}, b"\0" * 8, None, "begin 8 > end 0"),
    ({"a": ent(offs=(0,))}, b"\0" * 8, None, "data_offsets"),
    ({"a": ent(shape=(2**62, 2**62))}, b"\0" * 8, None, "overflows"),
    ({"a": {"dtype": "F32"}}, b"", None, "shape"),
    ({"a": 5}, b"", None, "not an object"),
    ({"__metadata__": 1}, b"", None, "__metadata__"),
    (b"{not json", b"", None, "JSON syntax error"),
    (b"[1,2]", b"", None, "not a JSON object"),
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {"dtype": "F32", "shape": [2], '
     b'"data_offsets": [8, 16]}}', b"\0" * 16, None, "appears twice"),
    ({"a": ent(shape=[1] * 9, offs=(0, 4))}, b"\0" * 4, None, "dimensions"),
])
def test_corrupt_files_raise(tmp_path, header, data, hlen, msg):
    p = write_raw(tmp_path / "bad.safetensors", header, data, hlen)
    with pytest.raises(ValueError, match=msg) as e:
        _C.safetensors_info(p)
    assert "bad.safetensors" in str(e.value)


def test_tiny_and_missing_files(tmp_path):
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="too short"):
        _C.safetensors_info(str(p))
    with pytest.raises(OSError, match="cannot open"):
        _C.safetensors_info(str(tmp_path / "nope.safetensors"))
    with pytest.raises(OSError, match="not a regular file"):
        _C.safetensors_info(str(tmp_path))


def test_random_corruption_never_crashes(tmp_path):
    src = make_random_checkpoint(str(tmp_path / "ck"), "tiny", num_hidden_layers=1)
    data = open(os.path.join(src, "model.safetensors"), "rb").read()
    hlen = struct.unpack("<Q", data[:8])[0]
    rng = random.Random(0)
    p = str(tmp_path / "fuzz.safetensors")
    for i in range(300):
        b = bytearray(data[: 8 + hlen + 64])
        for _ in range(rng.randint(1, 6)):
            j = rng.randrange(len(b))
            b[j] = rng.randrange(256)
        if rng.random() < 0.3:
            b = b[: rng.randrange(len(b))]
        with open(p, "wb") as f:
            f.write(bytes(b))
        try:
            _C.safetensors_info(p)
        except (ValueError, OSError):
            pass


def _ckpt_with(tmp_path, mutate):
    d = make_random_checkpoint(str(tmp_path / "m"), "tiny")
    from llama_kernel.testing import load_safetensors

    w = load_safetensors(os.path.join(d, "model.safetensors"))
    mutate(w)
    save_safetensors(os.path.join(d, "model.safetensors"), w, "bf16")
    return d


def test_model_errors_name_file_and_tensor(tmp_path):
    d = _ckpt_with(tmp_path, lambda w: w.__delitem__("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(ValueError, match="model.layers.1.mlp.down_proj.weight' is missing"):
        LlamaInference(d, device="cpu", verbose=False)


def test_model_wrong_shape(tmp_path):
    def mut(w):
        w["model.layers.0.self_attn.k_proj.weight"] = w["model.layers.0.self_attn.k_proj.weight"][:32]
    d = _ckpt_with(tmp_path, mut)
    with pytest.raises(ValueError, match=r"k_proj.weight' has shape \[32, 128\]; the config needs \[64, 128\]") as e:
        LlamaInference(d, device="cpu", verbose=False)
    assert "model.safetensors" in str(e.value)


def test_model_wrong_dtype(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "m"), "tiny")
    p = os.path.join(d, "model.safetensors")
    raw = open(p, "rb").read()
    hlen = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + hlen])
    name = "model.norm.weight"
    b, e = header[name]["data_offsets"]
    header[name]["dtype"] = "I16"
    write_raw(p, header, raw[8 + hlen:])
    with pytest.raises(ValueError, match="'model.norm.weight' has dtype I16"):
        LlamaInference(d, device="cpu", verbose=False)


def test_nan_weights_in_int4_are_an_error(tmp_path):
    def mut(w):
        w["model.layers.0.mlp.up_proj.weight"][5, 7] = np.nan
    d = _ckpt_with(tmp_path, mut)
    with pytest.raises(ValueError, match="up_proj.weight' row 5"):
        LlamaInference(d, device="cpu", verbose=False)
