"""A slow, independent Python reference of byte-level BPE with the Llama 3
pre-tokenizer (through the `regex` package), used to cross-check the C
tokenizer on random text."""
import json

import regex

PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class RefTokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        m = tj["model"]
        self.vocab = m["vocab"]
        self.ignore_merges = m.get("ignore_merges", False)
        self.ranks = {}
        for i, mg in enumerate(m["merges"]):
            a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
            self.ranks[(a, b)] = i
        self.added = {a["content"]: a["id"] for a in tj.get("added_tokens", [])}
        self.b2u = bytes_to_unicode()
        self.re = regex.compile(PATTERN)

    def bpe(self, word):
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        parts = list(word)
        while len(parts) > 1:
            best, bi = None, -1
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            parts[bi:bi + 2] = [parts[bi] + parts[bi + 1]]
        return [self.vocab[p] for p in parts]

    def encode_plain(self, text):
        out = []
        for piece in self.re.findall(text):
            out += self.bpe("".join(self.b2u[b] for b in piece.encode("utf-8")))
        return out

    def encode(self, text):
        out, i = [], 0
        specials = sorted(self.added, key=len, reverse=True)
        while i < len(text):
            best = None
            for j in range(i, len(text)):
                for s in specials:
                    if text.startswith(s, j):
                        best = (j, s)
                        break
                if best:
                    break
            if not best:
                out += self.encode_plain(text[i:])
                break
            j, s = best
            out += self.encode_plain(text[i:j])
            out.append(self.added[s])
            i = j + len(s)
        return out
