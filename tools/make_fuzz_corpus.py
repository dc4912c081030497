"""Writes the hand-made seed corpus for the fuzz harnesses into tests/fuzz_corpus/
(valid inputs and the corrupt ones the tests name: truncated, overlapping,
huge header, wrong dtype/shape, bad JSON). Run once; the files are committed."""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz_corpus")


def st(header, data=b"", hlen=None):
    h = json.dumps(header).encode() if isinstance(header, dict) else header
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


def ent(dtype="F32", shape=(2,), offs=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offs)}


def main():
    files = {
        "safetensors/valid": st({"__metadata__": {"format": "pt"}, "a": ent(), "b": ent("BF16", (2, 2), (8, 16))},
                                b"\x01" * 16),
        "safetensors/truncated": st({"a": ent()}, b"\0" * 4),
        "safetensors/overlap": st({"a": ent(), "b": ent(offs=(4, 12))}, b"\0" * 12),
        "safetensors/huge_header": st({"a": ent()}, b"\0" * 8, hlen=2**40),
        "safetensors/bad_dtype": st({"a": ent(dtype="Q4")}, b"\0" * 8),
        "safetensors/bad_shape": st({"a": ent(shape=(3,))}, b"\0" * 8),
        "safetensors/neg_dims": st({"a": ent(shape=(-1, 2))}, b"\0" * 8),
        "safetensors/overflow": st({"a": ent(shape=(2**62, 2**62))}, b"\0" * 8),
        "safetensors/dup": st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],'
                              b'"data_offsets":[4,8]}}', b"\0" * 8),
        "safetensors/empty": b"",
        "json/nested": b"[" * 200 + b"]" * 200,
        "json/escapes": b'{"a":"\\u00e9\\ud83d\\ude00\\n\\t\\"","b":[1,-2.5e10,true,false,null]}',
        "json/lone_surrogate": b'"\\ud800"',
        "json/numbers": b"[0, -0, 1e400, 123456789012345678901234567890, 1.5E-7]",
        "json/trailing": b'{"a":1} x',
        "text/prose": "The quick brown fox jumps over the lazy dog. It's 2024!\n\n  Done.".encode(),
        "text/mixed": "\x00caf\u00e9 \u4e2d\u6587 \U0001F600 <|eot_id|> 1234567 'll\r\n\t \u00a0x".encode(),
        "text/invalid_utf8": b"\x00\xff\xfe\xc3\x28\xe2\x82\xf0\x9f\x98 ok",
    }
    tiny = os.path.join(os.path.dirname(ROOT), "data", "tiny_tokenizer.json")
    with open(tiny, "rb") as f:
        tj = f.read()
    files["tokenizer/tiny"] = tj
    files["tokenizer/truncated"] = tj[: len(tj) // 2]
    files["tokenizer/no_model"] = b'{"added_tokens": []}'
    d = json.loads(tj)
    d["model"]["merges"] = [["a", "b"], "c d"]
    files["tokenizer/bad_merges"] = json.dumps(d).encode()
    for name, data in files.items():
        p = os.path.join(ROOT, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    print(len(files), "files under", ROOT)


if __name__ == "__main__":
    main()
