"""main.py: help text, benchmark JSON, streaming a prompt, clear errors."""
import json
import os
import shutil
import subprocess
import sys

from llama_kernel.testing import make_random_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **kw):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          **kw)


def test_help_lists_the_seed_flags():
    r = run("--help")
    assert r.returncode == 0
    for flag in ("--max_speed", "--flash_attention", "--optimize_memory", "--batch_size", "--benchmark",
                 "--estimate_memory", "--model", "--json", "--device"):
        assert flag in r.stdout, flag


def test_benchmark_json(tmp_path):
    out = tmp_path / "b.json"
    r = run("--benchmark", "--model", "synthetic:tiny", "--device", "cpu", "--quiet", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "Average Throughput" in r.stdout and "Prefill" in r.stdout
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 5
    for row in res["rows"]:
        assert set(row) >= {"prompt_type", "tokens_generated", "seconds", "tokens_per_second"}
        assert row["tokens_generated"] > 0 and row["tokens_per_second"] > 0


def test_prompt_streams_text(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "m"), "tiny", vocab_size=378, bos_token_id=374, eos_token_ids=[375])
    shutil.copy(os.path.join(ROOT, "tests", "data", "tiny_tokenizer.json"), os.path.join(d, "tokenizer.json"))
    r = run("--model", d, "--prompt", "Hello world", "--max_new_tokens", "8", "--temperature", "0", "--device", "cpu",
            "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() != ""


def test_missing_model_is_a_message_not_a_traceback(tmp_path):
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path), HF_HUB_OFFLINE="1")
    r = run("--model", "nobody/Nothing-1B", "--prompt", "hi", "--device", "cpu", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not found" in r.stderr


def test_bad_arguments():
    r = run("--batch_size", "0", "--benchmark")
    assert r.returncode == 1 and "--batch_size" in r.stderr
    r = run("--device", "tpu")
    assert r.returncode == 2  # argparse: invalid choice
