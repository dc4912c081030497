"""Memory estimation (before loading) against what the engine allocates."""
import os
import subprocess
import sys

import pytest

from llama_kernel import LlamaInference, UnknownModelError, estimate_memory
from llama_kernel import memory as mem
from llama_kernel.testing import make_random_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("weights_bytes", "kv_cache_bytes", "rope_bytes", "activations_bytes", "workspace_bytes")


@pytest.mark.parametrize("preset,quant,seq,bs,chunk", [
    ("tiny", "int4", 2048, 1, None), ("tiny", "none", 100, 3, 17), ("small", "int4", 4096, 2, None),
    ("small", "none", 513, 8, 64)])
def test_estimate_matches_allocation_cpu(preset, quant, seq, bs, chunk):
    est = estimate_memory(f"synthetic:{preset}", quantization=quant, max_seq_len=seq, batch_size=bs, device="cpu",
                          prefill_chunk=chunk)
    m = LlamaInference(f"synthetic:{preset}", device="cpu", quantization=quant, max_seq_len=seq, batch_size=bs,
                       prefill_chunk=chunk, verbose=False)
    used = m.memory_usage()
    assert abs(used["total_bytes"] - est["total_bytes"]) <= 0.03 * est["total_bytes"]
    for k in PARTS:
        assert abs(used[k] - est[k]) <= 0.03 * max(est[k], 1 << 20), k
    assert est["total_bytes"] == sum(est[k] for k in PARTS)


def test_default_prefill_chunk():
    """2,048 rows on CUDA, 256 on the CPU, never more than batch_size x max_seq_len; the engine and the
    estimate take the same default."""
    assert mem.default_prefill_chunk("cuda", 4096, 1) == 2048
    assert mem.default_prefill_chunk("cpu", 4096, 1) == 256
    assert mem.default_prefill_chunk("cuda", 300, 4) == 1200
    assert mem.default_prefill_chunk("cpu", 100, 1) == 100
    m = LlamaInference("synthetic:tiny", device="cpu", max_seq_len=100, verbose=False)
    assert m.prefill_chunk == 100 and m._engine.config["prefill_chunk"] == 100
    assert LlamaInference("synthetic:tiny", device="cpu", max_seq_len=100, batch_size=3,
                          verbose=False).prefill_chunk == 256
    a = estimate_memory("synthetic:llama-3.2-1b", max_seq_len=4096, device="cuda")
    b = estimate_memory("synthetic:llama-3.2-1b", max_seq_len=4096, device="cuda", prefill_chunk=2048)
    c = estimate_memory("synthetic:llama-3.2-1b", max_seq_len=4096, device="cuda", prefill_chunk=1024)
    assert a["total_bytes"] == b["total_bytes"] > c["total_bytes"]
    # issue 7: 1B with a 4,096-token KV cache in at most 0.9 GB, with the default chunk
    assert a["total_bytes"] <= 0.9e9


def test_estimate_for_real_shapes_offline():
    e = estimate_memory("meta-llama/Llama-3.2-1B-Instruct", max_seq_len=4096, device="cuda", compare=True)
    # int4 weights of the 1B: ~0.61 GiB (layers 0.48 + tied embedding/LM head 0.13); KV 32 KiB/token
    assert 0.55 < e["weights_bytes"] / 2**30 < 0.7
    assert e["kv_cache_per_token_bytes"] == 16 * 2 * 8 * 64 * 2
    assert e["by_quantization"]["int4"] < e["by_quantization"]["none"]
    e3 = estimate_memory("meta-llama/Llama-3.2-3B-Instruct", device="cuda")
    assert e3["total_bytes"] > e["total_bytes"]


def test_estimate_from_folder(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "m"), "tiny")
    assert estimate_memory(d, device="cpu")["parameters"] > 0


def test_unknown_model_names_the_nearest():
    with pytest.raises(UnknownModelError, match="Llama-3.1-8B-Instruct.*Llama-3.2-3B-Instruct"):
        estimate_memory("meta-llama/Llama-3.2-7B-Instruct")


def test_cli_estimate_memory():
    r = subprocess.run([sys.executable, "main.py", "--estimate_memory", "--model", "meta-llama/Llama-3.2-7B-Instruct"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "no such checkpoint" in r.stderr
    r = subprocess.run([sys.executable, "main.py", "--estimate_memory", "--model", "meta-llama/Llama-3.2-1B",
                        "--max_seq_len", "8192", "--batch_size", "2"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "KV cache" in r.stdout and "total" in r.stdout


def test_optimize_memory_fails_before_loading(monkeypatch):
    monkeypatch.setattr(mem, "available_bytes", lambda device: 64 << 20)

    def no_engine(*a, **k):
        raise AssertionError("weights were loaded although the model does not fit")

    monkeypatch.setattr("llama_kernel.inference._C.Engine", no_engine)
    with pytest.raises(MemoryError) as e:
        LlamaInference("synthetic:small", device="cpu", max_seq_len=8192, batch_size=4, optimize_memory=True,
                       verbose=False)
    msg = str(e.value)
    assert "free" in msg and "max_seq_len=" in msg and "batch_size=" in msg


def test_optimize_memory_passes_when_it_fits():
    m = LlamaInference("synthetic:tiny", device="cpu", optimize_memory=True, verbose=False)
    assert m.memory_usage()["total_bytes"] > 0
