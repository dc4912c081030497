"""Writes tests/data/tiny_tokenizer.json: a small byte-level BPE tokenizer in
the Llama 3 format (same pre-tokenizer, decoder, post-processor), whose merges
are learnt from a few sentences. Run once; the output is committed."""
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ref_tokenizer import PATTERN, bytes_to_unicode  # noqa: E402

import regex  # noqa: E402

CORPUS = """The quick brown fox jumps over the lazy dog. It's the end of the day, and they're
tired. We'll see what we can do: 123 + 4567 = 4690. The theme of the thesis is there.
Hello world! Hello there, hello again. function(x) { return x * 2; } // the code""" * 3

b2u = bytes_to_unicode()
words = collections.Counter("".join(b2u[b] for b in p.encode()) for p in regex.findall(PATTERN, CORPUS))
vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
merges = []
splits = {w: list(w) for w in words}
for _ in range(120):
    pairs = collections.Counter()
    for w, c in words.items():
        s = splits[w]
        for a, b in zip(s, s[1:]):
            pairs[(a, b)] += c
    if not pairs:
        break
    (a, b), _n = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
    merges.append(f"{a} {b}")
    vocab.setdefault(a + b, len(vocab))
    for w in splits:
        s, i, out = splits[w], 0, []
        while i < len(s):
            if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(s[i])
                i += 1
        splits[w] = out
n = len(vocab)
added = [{"id": n + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
          "special": True} for i, c in enumerate(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"])]
tj = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
    "post_processor": {"type": "TemplateProcessing", "single": [
        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [n],
                                                              "tokens": ["<|begin_of_text|>"]}}},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
              "vocab": vocab, "merges": merges},
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_tokenizer.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump(tj, f, ensure_ascii=False, indent=1)
print(out, len(vocab), "tokens,", len(merges), "merges")
