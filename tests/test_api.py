"""LlamaInference's text API on a tiny model with a real tokenizer file:
max_length semantics, streaming, chat, and argument errors."""
import json
import os
import shutil

import pytest

from llama_kernel import LlamaInference
from llama_kernel.testing import make_random_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
TINY_TOK = os.path.join(HERE, "data", "tiny_tokenizer.json")
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|eot_id|>{{ m['role'] }}: {{ m['content'] | trim }}"
            "{% endfor %}{% if add_generation_prompt %}<|eot_id|>assistant: {% endif %}")


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tiny-instruct"))
    make_random_checkpoint(d, "tiny", seed=11, std=0.05, vocab_size=378, bos_token_id=374, eos_token_ids=[375, 376])
    shutil.copy(TINY_TOK, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": TEMPLATE}, f)
    return d


@pytest.fixture(scope="module")
def model(text_model_dir):
    return LlamaInference(text_model_dir, device="cpu", verbose=False, chat_format=False)


def test_generate_text_and_max_length(model):
    prompt = "The quick brown fox"
    n_prompt = len(model.encode_prompt(prompt))
    out = model.generate(prompt, max_length=n_prompt + 6, temperature=0, ignore_eos=True,
                         skip_special_tokens=False)
    assert isinstance(out, str)
    ids = model.generate_ids(model.encode_prompt(prompt), max_new_tokens=6, temperature=0, ignore_eos=True)[0]
    assert len(ids) == 6 and out == model.tokenizer.decode(ids)
    # max_new_tokens wins over max_length
    out2 = model.generate(prompt, max_length=3, max_new_tokens=6, temperature=0, ignore_eos=True,
                          skip_special_tokens=False)
    assert out2 == out


def test_readme_example_signature(model):
    text = model.generate("What is the capital of France?", max_length=40, temperature=0.7, seed=1)
    assert isinstance(text, str)


def test_stream_equals_full(model):
    full = model.generate("Hello world", max_new_tokens=12, temperature=0, ignore_eos=True)
    got = []
    pieces = list(model.generate("Hello world", max_new_tokens=12, temperature=0, ignore_eos=True, stream=True,
                                 callback=got.append))
    assert "".join(pieces) == full and got == pieces


def test_stream_can_be_abandoned(model):
    it = model.generate("Hello", max_new_tokens=30, temperature=0, ignore_eos=True, stream=True)
    next(it, None)
    it.close()  # stops the worker; the model stays usable
    assert len(model.generate_ids([1, 2], max_new_tokens=3, ignore_eos=True)[0]) == 3


def test_batch_of_prompts(model):
    outs = model.generate(["Hello", "The theme of the thesis is"], max_new_tokens=5, temperature=0)
    assert isinstance(outs, list) and len(outs) == 2
    assert outs[1] == model.generate("The theme of the thesis is", max_new_tokens=5, temperature=0)


def test_chat_template_and_single_bos(text_model_dir):
    m = LlamaInference(text_model_dir, device="cpu", verbose=False)
    assert m.chat_format  # folder name contains "instruct"
    ids = m.encode_prompt("Hi there")
    assert ids[0] == m.tokenizer.bos_id and ids.count(m.tokenizer.bos_id) == 1
    assert m.tokenizer.decode(ids).endswith("assistant: ")
    reply = m.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                   max_new_tokens=5, temperature=0)
    assert isinstance(reply, str)
    pieces = list(m.chat([{"role": "user", "content": "Hi"}], max_new_tokens=5, temperature=0, stream=True))
    assert "".join(pieces) == m.chat([{"role": "user", "content": "Hi"}], max_new_tokens=5, temperature=0)
    plain = LlamaInference(text_model_dir, device="cpu", verbose=False, chat_format=False)
    assert plain.encode_prompt("Hi there") == [m.tokenizer.bos_id] + m.tokenizer.encode("Hi there")


@pytest.mark.parametrize("kw,exc,msg", [
    ({"prompt": ""}, ValueError, "prompt is empty"),
    ({"prompt": 5}, TypeError, "prompt must be"),
    ({"prompt": []}, ValueError, "empty"),
    ({"temperature": -0.5}, ValueError, "temperature"),
    ({"top_p": 0.0}, ValueError, "top_p"),
    ({"top_p": 1.01}, ValueError, "top_p"),
    ({"top_k": -1}, ValueError, "top_k"),
    ({"repetition_penalty": 0}, ValueError, "repetition_penalty"),
    ({"max_new_tokens": -3}, ValueError, "max_new_tokens"),
    ({"max_length": 2}, ValueError, "max_length"),
    ({"temperature": "hot"}, TypeError, "temperature"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_generate_argument_errors(model, kw, exc, msg):
    args = dict(prompt="Hello world")
    args.update(kw)
    with pytest.raises(exc, match=msg):
        model.generate(**args)


def test_token_level_errors(model):
    with pytest.raises(ValueError, match=r"input_ids\[1\] = 999 is outside the vocabulary"):
        model.generate_ids([1, 999], max_new_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        model.generate_ids([], max_new_tokens=2)
    with pytest.raises(TypeError):
        model.generate_ids([1, "a"], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.generate_ids([1] * 2000, max_new_tokens=100)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.logits([1] * (model.max_seq_len + 1))


def test_constructor_errors(text_model_dir):
    with pytest.raises(ValueError, match="quantization"):
        LlamaInference(text_model_dir, quantization="int8")
    with pytest.raises(ValueError, match="device"):
        LlamaInference(text_model_dir, device="tpu")
    with pytest.raises(ValueError, match="batch_size"):
        LlamaInference(text_model_dir, device="cpu", batch_size=0)
    with pytest.raises(TypeError, match="model_id"):
        LlamaInference(None)
    with pytest.raises(ValueError, match="max_seq_len"):
        LlamaInference(text_model_dir, device="cpu", max_seq_len=0)


def test_text_needs_tokenizer():
    m = LlamaInference("synthetic:tiny", device="cpu", verbose=False)
    with pytest.raises(ValueError, match="no tokenizer"):
        m.generate("hello")


def test_memory_usage_fields(model):
    mu = model.memory_usage()
    assert mu["total_bytes"] == sum(mu[k] for k in ("weights_bytes", "kv_cache_bytes", "rope_bytes",
                                                    "activations_bytes", "workspace_bytes"))
    assert mu["device"] == "cpu"


def test_progress_bar_appears_only_after_the_delay(capsys, monkeypatch):
    import builtins

    from llama_kernel._progress import Progress

    real_import = builtins.__import__

    def no_tqdm(name, *a, **k):  # exercise the built-in bar
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    quiet = Progress("Loading", enabled=False, delay=0.0)
    quiet(5, 10)
    quiet.close()
    slow = Progress("Loading", enabled=True, delay=3600.0)
    slow(5, 10)
    slow.close()
    assert capsys.readouterr().err == ""
    p = Progress("Loading", enabled=True, delay=0.0)
    p(5, 10)
    p(10, 10)
    p.close()
    err = capsys.readouterr().err
    assert "Loading" in err and "100.0%" in err
