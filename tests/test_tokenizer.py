"""Tokenizer: exact match with Hugging Face on the reference cases, an
independent Python reference on random text, decoding/streaming, and
hostile input."""
import json
import os
import random
import time

import pytest

from llama_kernel import _C
from llama_kernel.chat import builtin_llama3, render_chat
from llama_kernel.tokenizer import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "data", "tiny_tokenizer.json")


@pytest.fixture(scope="module")
def tiny():
    return Tokenizer.from_file(TINY)


@pytest.fixture(scope="module")
def llama3(llama3_tokenizer_dir):
    return Tokenizer.from_file(llama3_tokenizer_dir)


def load_cases(d):
    with open(os.path.join(d, "cases.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- the reference cases (Hugging Face tokenizers output) ---------------------
def test_reference_cases(llama3, llama3_tokenizer_dir):
    cases = load_cases(llama3_tokenizer_dir)
    assert len(cases) >= 60
    failures = []
    for c in cases:
        if c.get("mode") == "decode":
            if llama3.decode(c["ids"]) != c["decoded"]:
                failures.append((c["id"], "decode"))
            continue
        if llama3.encode(c["text"]) != c["ids"]:
            failures.append((c["id"], "encode"))
        if "ids_plain" in c and llama3.encode(c["text"], parse_special=False) != c["ids_plain"]:
            failures.append((c["id"], "encode plain"))
        if llama3.decode(c["ids"]) != c["decoded"]:
            failures.append((c["id"], "decode"))
    assert not failures


def test_chat_cases_both_renderers(llama3, llama3_tokenizer_dir):
    chats = [c for c in load_cases(llama3_tokenizer_dir) if c["kind"] == "chat"]
    assert len(chats) == 2
    for c in chats:
        ch = c["chat"]
        for use_jinja in (True, False):
            text = render_chat(ch["messages"], llama3.config, llama3, ch["add_generation_prompt"],
                               ch["date_string"], use_jinja=use_jinja)
            assert text == c["text"], (c["id"], use_jinja)
            ids = llama3.encode(text)
            assert ids == c["ids"]
            assert ids.count(llama3.bos_id) == 1  # no duplicate BOS


def test_bos_and_special(llama3):
    assert llama3.bos_id == 128000
    assert llama3.vocab_size == 128256
    assert llama3.encode("Hello", add_special_tokens=True) == [128000, 9906]
    assert llama3.token_to_id("<|eot_id|>") == 128009
    assert llama3.id_to_token(128009) == "<|eot_id|>"
    assert llama3.id_to_token(9906) == "Hello"
    assert llama3.id_to_token(10**9) is None and llama3.token_to_id("no such token ☃☃") is None
    assert llama3.eos_ids == [128001, 128008, 128009]
    assert llama3.decode([128000, 9906, 128009], skip_special_tokens=True) == "Hello"


# ---- independent reference on random text ---------------------------------------
ALPHABET = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3 +
            list(" \t\n\r\n  .,;:!?'\"()[]{}<>|-_+=*/\\@#$%^&~`") +
            ["'s", "'T", "'re", "'LL", "'d", "'ve", "'M"] +
            list("éèàüößçñ") + list("αβγδΩ") + list("中文日本語한국어") + ["😀", "🚀", "👍🏽"] +
            list("٠١٢٣") + list("ⅫⅠ²³") + ["\u00a0", "\u2003", "\u3000", "\u0301", "\u200b", "\x00", "\x0b"] +
            ["<|eot_id|>", "<|begin_of_text|>", "<|", "|>"])


def random_text(rng, n):
    return "".join(rng.choice(ALPHABET) for _ in range(n))


@pytest.mark.parametrize("which", ["tiny", "llama3"])
def test_matches_python_reference_on_random_text(which, request):
    regex = pytest.importorskip("regex")  # noqa: F841
    from ref_tokenizer import RefTokenizer

    tok = request.getfixturevalue(which)
    ref = RefTokenizer(tok.path)
    rng = random.Random(1234)
    n_cases = 300 if which == "tiny" else 150
    for i in range(n_cases):
        text = random_text(rng, rng.randint(0, 60))
        assert tok.encode(text) == ref.encode(text), repr(text)
        assert tok.decode(tok.encode(text)) == text, repr(text)


def test_batch_equals_single(tiny):
    rng = random.Random(5)
    texts = [random_text(rng, rng.randint(0, 200)) for _ in range(50)]
    assert tiny.encode_batch(texts) == [tiny.encode(t) for t in texts]
    assert tiny.encode_batch(texts, add_special_tokens=True)[0][0] == tiny.bos_id
    with pytest.raises(TypeError):
        tiny.encode_batch("not a list")


# ---- decoding ----------------------------------------------------------------------
def test_utf8_repair_matches_python_replace():
    rng = random.Random(7)
    for _ in range(3000):
        b = bytes(rng.choice([rng.randrange(256), rng.randrange(0x80, 0xc0), 0xe0, 0xed, 0xf0, 0xf4, 0xc0, 0x41])
                  for _ in range(rng.randint(0, 12)))
        assert _C.utf8_repair(b) == b.decode("utf-8", "replace"), b


def test_lone_byte_token_decodes_to_replacement(llama3):
    assert llama3.decode([172]) == "\ufffd"


def test_incremental_decoder_equals_decode(llama3):
    rng = random.Random(11)
    text = "Grüße, 世界! 👍🏽 naïve café — ok\n" * 3
    ids = llama3.encode(text)
    for trial in range(20):
        seq = ids[:] if trial == 0 else [rng.randrange(0, 128256) for _ in range(40)]
        d = llama3.decoder()
        pieces = [d.push(t) for t in seq] + [d.flush()]
        assert "".join(pieces) == llama3.decode(seq)
        # never half a character: every piece is valid text on its own
        for p in pieces:
            p.encode("utf-8")


def test_decode_rejects_unknown_ids(tiny):
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tiny.decode([10**6])
    with pytest.raises(ValueError):
        tiny.decode([-1])


# ---- hostile input -------------------------------------------------------------------
def test_lone_surrogate_raises(tiny):
    with pytest.raises(UnicodeEncodeError):
        tiny.encode("abc\ud800def")


def test_odd_strings_encode(tiny):
    for s in ["\x00", "\x00" * 100, "a\x00b", " " * 1000, "\n" * 1000, "'" * 100, "'s" * 100]:
        ids = tiny.encode(s)
        assert tiny.decode(ids) == s


def test_one_megabyte_inputs(tiny):
    for s in ["a" * (1 << 20), "1" * (1 << 20), " " * (1 << 20), ("Hello world. " * 80000)[: 1 << 20],
              "".join(chr(0x4e00 + i % 2000) for i in range(300000))]:
        t0 = time.monotonic()
        ids = tiny.encode(s)
        assert time.monotonic() - t0 < 20
        assert tiny.decode(ids) == s


@pytest.mark.parametrize("bad,msg", [
    (b"", "JSON"),
    (b"{", "JSON"),
    (b"[]", "not a JSON object"),
    (b'{"model": {"type": "Unigram"}}', "not BPE"),
    (b'{"model": {"type": "BPE", "vocab": {}, "merges": []}}', "pre_tokenizer"),
    (b'{"model": 1}', "model"),
    (b"\xff\xfe{}", "JSON"),
])
def test_malformed_tokenizer_json(bad, msg):
    with pytest.raises((ValueError, RuntimeError), match=msg):
        Tokenizer.from_bytes(bad)


def test_corrupted_variants_of_tiny_never_crash():
    with open(TINY, "rb") as f:
        data = f.read()
    rng = random.Random(3)
    for _ in range(200):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            i = rng.randrange(len(b))
            if op < 0.4:
                b[i] = rng.randrange(256)
            elif op < 0.7:
                del b[i:i + rng.randint(1, 50)]
            else:
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
        try:
            t = Tokenizer.from_bytes(bytes(b))
        except (ValueError, RuntimeError):
            continue
        t.decode(t.encode("The quick brown fox <|eot_id|> 123"))


def test_merge_with_unknown_token_is_an_error():
    with open(TINY, encoding="utf-8") as f:
        tj = json.load(f)
    tj["model"]["merges"].append("zzz qqq")
    with pytest.raises(ValueError, match="merge .* missing from the vocabulary"):
        Tokenizer.from_bytes(json.dumps(tj).encode())


def test_load_time(llama3_tokenizer_dir):
    t0 = time.monotonic()
    Tokenizer.from_file(llama3_tokenizer_dir)
    assert time.monotonic() - t0 < 2.0  # the target (< 0.5 s) is measured in benchmarks/bench_tokenizer.py


def test_builtin_chat_format_defaults():
    text = builtin_llama3([{"role": "system", "content": "  Be brief. "}, {"role": "user", "content": "Hi"}],
                          True, "01 Jan 2025")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "Today Date: 01 Jan 2025\n\nBe brief.<|eot_id|>" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    with pytest.raises(ValueError, match="role"):
        builtin_llama3([{"role": "robot", "content": "x"}]) if False else render_chat([{"role": "robot", "content": "x"}], {})
    with pytest.raises(ValueError):
        render_chat([], {})


def test_unicode_table_version(tiny):
    """The letter table is Unicode 16, as the reference's: Garay (16.0) and
    Nag Mundari (15.0) are letters, letters new in Unicode 17 are not."""
    from llama_kernel import _C

    assert _C.build_info()["unicode_version"] == "16.0.0"
    # a letter run absorbs the character only if it is \p{L}
    assert _C.pretokenize("ab\U00010D50cd") == ["ab\U00010D50cd"]  # Garay, Unicode 16
    assert _C.pretokenize("ab\U0001E4D0cd") == ["ab\U0001E4D0cd"]  # Nag Mundari, Unicode 15
    assert _C.pretokenize("ab\u088fcd") == ["ab", "\u088fcd"]          # new in Unicode 17: not yet a letter
    assert _C.pretokenize("Hello world's 123456") == ["Hello", " world", "'s", " ", "123", "456"]
