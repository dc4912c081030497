"""The Llama 3 tokenizer: tokenizer.json read by the C core (llama_kernel._C.Tokenizer).

No dependency on `tokenizers` or `transformers`; the semantics are those of
Hugging Face tokenizers (see csrc/lk_tokenizer.h).
"""
from __future__ import annotations

import codecs
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

from . import _C

# end-of-turn / end-of-text tokens of the Llama 3 family, used when no config names them
_LLAMA3_EOS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")


class Tokenizer:
    """Byte-level BPE tokenizer with Hugging Face semantics.

    vocab_size is the number of token ids (largest id + 1), added/special
    tokens included, as len(tokenizer) in transformers.
    """

    def __init__(self, core: "_C.Tokenizer", config: Optional[Dict[str, Any]] = None, path: str = ""):
        self._core = core
        self.config = config or {}
        self.path = path

    @classmethod
    def from_file(cls, path: str) -> "Tokenizer":
        """path: tokenizer.json, or a model folder holding it (tokenizer_config.json beside it is read too)."""
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no tokenizer file at {path}")
        with open(path, "rb") as f:
            data = f.read()
        try:
            core = _C.Tokenizer(data)
        except (ValueError, RuntimeError) as e:
            raise type(e)(f"{path}: {e}") from None
        config = {}
        cfg_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
        if os.path.isfile(cfg_path):
            try:
                with open(cfg_path, "r", encoding="utf-8") as f:
                    c = json.load(f)
                if isinstance(c, dict):
                    config = c
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{cfg_path}: not valid JSON ({e})") from None
        return cls(core, config, path)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Tokenizer":
        return cls(_C.Tokenizer(data))

    # ---- encoding -----------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False, parse_special: bool = True) -> List[int]:
        """Token ids of text. add_special_tokens=True prepends BOS (only BOS, as
        Hugging Face does for Llama 3). parse_special=False treats special-token
        text such as "<|eot_id|>" as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        return self._core.encode(text, add_special_tokens, parse_special)

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False,
                     parse_special: bool = True) -> List[List[int]]:
        """encode() for each text, in parallel threads with the GIL released."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("encode_batch takes a list of str (use encode() for one str)")
        return self._core.encode_batch(list(texts), add_special_tokens, parse_special)

    __call__ = encode

    # ---- decoding -----------------------------------------------------------
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ids; ill-formed UTF-8 (e.g. a lone byte token) becomes U+FFFD."""
        return self._core.decode(list(ids), skip_special_tokens)

    def decode_bytes(self, ids: Iterable[int], skip_special_tokens: bool = False) -> bytes:
        return self._core.decode_bytes(list(ids), skip_special_tokens)

    def decoder(self, skip_special_tokens: bool = False) -> "IncrementalDecoder":
        """A streaming decoder: push(id) returns the text that is complete so far,
        never half a character; flush() returns the rest."""
        return IncrementalDecoder(self, skip_special_tokens)

    # ---- vocabulary ---------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._core.n_ids

    def __len__(self) -> int:
        return self._core.n_ids

    @property
    def bos_id(self) -> Optional[int]:
        return self._core.bos_id

    @property
    def eos_ids(self) -> List[int]:
        """End-of-sequence ids: tokenizer_config's eos_token, plus the Llama 3 end tokens present."""
        ids = []
        eos = self.config.get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        names = ([eos] if isinstance(eos, str) else []) + list(_LLAMA3_EOS)
        for n in names:
            i = self._core.token_to_id(n)
            if i is not None and i not in ids:
                ids.append(i)
        return sorted(ids)

    def token_to_id(self, token: str) -> Optional[int]:
        return self._core.token_to_id(token)

    def id_to_token(self, id: int) -> Optional[str]:
        return self._core.id_to_token(int(id))

    def is_special(self, id: int) -> bool:
        return self._core.is_special(int(id))

    @property
    def chat_template(self) -> Optional[str]:
        t = self.config.get("chat_template")
        if isinstance(t, list):  # [{"name": ..., "template": ...}]
            for e in t:
                if isinstance(e, dict) and e.get("name") == "default":
                    return e.get("template")
            return None
        return t if isinstance(t, str) else None

    def __repr__(self) -> str:
        return f"Tokenizer({self.path or '<bytes>'!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id})"


class IncrementalDecoder:
    """Token-by-token decoding for streaming. The concatenation of everything
    push() and flush() return equals Tokenizer.decode(all ids)."""

    def __init__(self, tok: Tokenizer, skip_special_tokens: bool = False):
        self._tok = tok
        self._skip = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, id: int) -> str:
        return self._utf8.decode(self._tok.decode_bytes([id], self._skip))

    def flush(self) -> str:
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return out
