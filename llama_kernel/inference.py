"""LlamaInference: load -> quantize -> engine; generate(), chat(), logits().

A thin layer: it finds the files, reads config and generation defaults,
checks arguments, and hands everything else to the C engine (llama_kernel._C),
whose generation loop runs with the GIL released.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _C
from ._progress import Progress
from .config import ModelConfig, preset
from .hub import ModelFiles, locate, model_files

DEFAULT_MODEL = "meta-llama/Llama-3.2-1B-Instruct"
_HF_DEFAULT_TOP_K = 50  # transformers' GenerationConfig default, used when sampling


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "False")


def cuda_available() -> bool:
    """True when this build has CUDA and a usable GPU is present."""
    info = _C.build_info()
    return bool(info.get("cuda")) and info.get("device_count", 0) > 0 and bool(info.get("arch_supported"))


def resolve_device(device: str) -> str:
    if not isinstance(device, str):
        raise TypeError(f"device must be a str ('auto', 'cpu' or 'cuda'), not {type(device).__name__}")
    d = device.lower()
    if d == "auto":
        return "cuda" if cuda_available() else "cpu"
    if d in ("cuda", "cuda:0", "gpu"):
        _C.cuda_check()  # raises with the reason and the fix
        return "cuda"
    if d == "cpu":
        return "cpu"
    raise ValueError(f"device = {device!r}; use 'auto', 'cpu' or 'cuda'")


def _check_int(name, v, lo=None, hi=None, allow_none=False):
    if v is None and allow_none:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(v).__name__}")
    v = int(v)
    if lo is not None and v < lo:
        raise ValueError(f"{name} = {v} must be >= {lo}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} = {v} must be <= {hi}")
    return v


def _check_float(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, not {type(v).__name__}")
    v = float(v)
    if v != v:
        raise ValueError(f"{name} is NaN")
    return v


class LlamaInference:
    """A Llama model loaded for inference.

    model_id: a local folder (config.json + *.safetensors), a Hugging Face repo
        id found in the HF cache or downloaded with huggingface_hub (optional
        dependency), or "synthetic:<preset>" for random weights of a known shape
        (presets: tiny, small, llama-3.2-1b, llama-3.2-3b, llama-3.1-8b, ...).
    device: "auto" (CUDA when built in and a GPU is usable, else CPU), "cpu", "cuda".
    use_flash_attention: CUDA flash-attention kernels (False: the plain kernels).
    quantization: "int4" (group-wise int4 weights, made at load) or "none" (bf16).
    max_seq_len: KV-cache length per sequence (default min(model's, 4096)).
    batch_size: sequences decoded together; more prompts run in batches of this size.
    prefill_chunk: prompt rows one prefill forward takes (default 2,048 on CUDA,
        256 on the CPU, at most batch_size x max_seq_len); longer prompts run in
        chunks. Smaller saves scratch memory, larger fewer passes.
    verbose: progress bar while loading takes more than a second.
    cuda_graphs: capture the decode step as a CUDA graph (default on;
        LLAMA_KERNEL_DISABLE_GRAPHS=1 turns it off).
    optimize_memory: reserve the estimated GPU memory up front and fail before
        loading weights when it does not fit.
    chat_format: "auto" (Instruct models with a chat template get it for plain
        prompts), True or False.
    """

    def __init__(self, model_id: str = DEFAULT_MODEL, device: str = "auto", use_flash_attention: bool = True,
                 quantization: str = "int4", max_seq_len: Optional[int] = None, batch_size: int = 1,
                 verbose: bool = True, *, cuda_graphs: Optional[bool] = None, prefill_chunk: Optional[int] = None,
                 n_threads: int = 0, seed: int = 0, optimize_memory: bool = False,
                 chat_format: Union[str, bool] = "auto", download: bool = True, matmul_variant: str = "auto"):
        if not isinstance(model_id, str) or not model_id:
            raise TypeError("model_id must be a non-empty str (a folder, a Hugging Face repo id or 'synthetic:<preset>')")
        if quantization not in ("int4", "none"):
            raise ValueError(f"quantization = {quantization!r}; use 'int4' or 'none'")
        batch_size = _check_int("batch_size", batch_size, 1, 4096)
        n_threads = _check_int("n_threads", n_threads, 0, 1024)
        self.device = resolve_device(device)
        self.model_id = model_id
        self.quantization = quantization
        self.verbose = bool(verbose)
        self.files: Optional[ModelFiles] = None
        self.generation_config: Dict[str, Any] = {}
        if model_id.startswith("synthetic:"):
            self.config = preset(model_id.split(":", 1)[1])
            paths = None
        else:
            self.files = model_files(locate(model_id, download=download))
            self.config = ModelConfig.from_file(self.files.config_path)
            paths = self.files.weight_paths
            if self.files.generation_config_path:
                with open(self.files.generation_config_path, "r", encoding="utf-8") as f:
                    gc = json.load(f)
                if isinstance(gc, dict):
                    self.generation_config = gc
        if max_seq_len is None:
            max_seq_len = min(self.config.max_position_embeddings, 4096)
        self.max_seq_len = _check_int("max_seq_len", max_seq_len, 1, _C.MAX_SEQ_LEN)
        self.batch_size = batch_size
        from .memory import check_fits, default_prefill_chunk, variant_code  # late: memory imports this module

        if prefill_chunk is None:
            prefill_chunk = default_prefill_chunk(self.device, self.max_seq_len, batch_size)
        self.prefill_chunk = _check_int("prefill_chunk", prefill_chunk, 1, 65536)
        if cuda_graphs is None:
            cuda_graphs = not _env_flag("LLAMA_KERNEL_DISABLE_GRAPHS")
        self.cuda_graphs = bool(cuda_graphs)
        self.use_flash_attention = bool(use_flash_attention)
        self._variant = variant_code(matmul_variant)
        if optimize_memory:
            check_fits(self.config, device=self.device, quantization=quantization, max_seq_len=self.max_seq_len,
                       batch_size=batch_size, prefill_chunk=self.prefill_chunk)
        self.stop_ids = self._stop_ids()
        progress = Progress(f"Loading {model_id}" + (" (int4)" if quantization == "int4" else ""), self.verbose)
        try:
            self._engine = _C.Engine(self.config.to_core(), paths, device=self.device, quantization=quantization,
                                     max_seq_len=self.max_seq_len, batch_size=batch_size,
                                     prefill_chunk=self.prefill_chunk, flash_attention=self.use_flash_attention,
                                     cuda_graphs=self.cuda_graphs, n_threads=n_threads, seed=seed,
                                     progress=progress, matmul_variant=self._variant)
        finally:
            progress.close()
        self.tokenizer = None
        self.tokenizer_config: Dict[str, Any] = {}
        if self.files and self.files.tokenizer_path:
            from .tokenizer import Tokenizer

            self.tokenizer = Tokenizer.from_file(self.files.tokenizer_path)
            if self.files.tokenizer_config_path:
                with open(self.files.tokenizer_config_path, "r", encoding="utf-8") as f:
                    tc = json.load(f)
                if isinstance(tc, dict):
                    self.tokenizer_config = tc
            self.stop_ids = sorted(set(self.stop_ids) | set(self._tokenizer_eos()))
        self.chat_format = self._resolve_chat_format(chat_format)

    # ---- setup helpers ----------------------------------------------------
    def _stop_ids(self) -> List[int]:
        ids = set(self.config.eos_token_ids)
        gen_eos = self.generation_config.get("eos_token_id")
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif isinstance(gen_eos, list):
            ids.update(int(x) for x in gen_eos if isinstance(x, int))
        return sorted(i for i in ids if 0 <= i < self.config.vocab_size)

    def _tokenizer_eos(self) -> List[int]:
        eos = self.tokenizer_config.get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str) and self.tokenizer is not None:
            t = self.tokenizer.token_to_id(eos)
            if t is not None and t < self.config.vocab_size:
                return [t]
        return []

    def _resolve_chat_format(self, chat_format) -> bool:
        if chat_format not in ("auto", True, False):
            raise ValueError(f"chat_format = {chat_format!r}; use 'auto', True or False")
        if chat_format == "auto":
            name = (self.model_id + " " + (self.files.directory if self.files else "")).lower()
            return self.tokenizer is not None and "instruct" in name
        if chat_format and self.tokenizer is None:
            raise ValueError("chat_format=True needs a tokenizer (tokenizer.json in the model folder)")
        return bool(chat_format)

    # ---- sampling defaults ------------------------------------------------
    def _sampling(self, temperature, top_p, top_k, repetition_penalty, seed) -> Dict[str, Any]:
        gc = self.generation_config
        do_sample = bool(gc.get("do_sample", False)) if gc else False
        if temperature is None:
            temperature = float(gc.get("temperature", 1.0)) if do_sample else 0.0
        temperature = _check_float("temperature", temperature)
        if temperature < 0:
            raise ValueError(f"temperature = {temperature} must be >= 0 (0 means greedy)")
        if top_p is None:
            top_p = float(gc.get("top_p", 1.0))
        top_p = _check_float("top_p", top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p = {top_p} must be in (0, 1] (1 turns it off)")
        if top_k is None:
            top_k = int(gc.get("top_k", _HF_DEFAULT_TOP_K))
        top_k = _check_int("top_k", top_k)
        if top_k < 0:
            raise ValueError(f"top_k = {top_k} must be >= 0 (0 turns it off)")
        if repetition_penalty is None:
            repetition_penalty = float(gc.get("repetition_penalty", 1.0))
        repetition_penalty = _check_float("repetition_penalty", repetition_penalty)
        if repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty = {repetition_penalty} must be > 0 (1 turns it off)")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        seed = _check_int("seed", seed, 0, 2**64 - 1)
        return dict(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty,
                    seed=seed)

    # ---- token-level API --------------------------------------------------
    def logits(self, input_ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of one prompt: float32 [len(input_ids), vocab]."""
        ids = self._check_ids(input_ids, "input_ids")
        return self._engine.logits(ids)

    def _check_ids(self, ids, name) -> List[int]:
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
            raise TypeError(f"{name} must be a list of token ids")
        if len(ids) == 0:
            raise ValueError(f"{name} is empty")
        V = self.config.vocab_size
        out = []
        for i, t in enumerate(ids):
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise TypeError(f"{name}[{i}] must be an int, not {type(t).__name__}")
            if not 0 <= int(t) < V:
                raise ValueError(f"{name}[{i}] = {int(t)} is outside the vocabulary [0, {V})")
            out.append(int(t))
        return out

    def generate_ids(self, input_ids, max_new_tokens: int = 128, temperature: Optional[float] = None,
                     top_p: Optional[float] = None, top_k: Optional[int] = None,
                     repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
                     ignore_eos: bool = False, callback: Optional[Callable] = None,
                     return_stats: bool = False):
        """New tokens for one prompt (list[int]) or several (list[list[int]]): list[list[int]].

        The stop token, when one ends a sequence, is included. Sampling defaults
        come from generation_config.json; temperature=0 is greedy. callback, if
        given, gets [(sequence index, token), ...] after every step and may
        return False to stop.
        """
        if isinstance(input_ids, np.ndarray):
            input_ids = input_ids.tolist()
        if not isinstance(input_ids, (list, tuple)) or len(input_ids) == 0:
            raise ValueError("input_ids must be a non-empty list of token ids (or a list of such lists)")
        batch = [input_ids] if not isinstance(input_ids[0], (list, tuple, np.ndarray)) else list(input_ids)
        prompts = [self._check_ids(p, f"input_ids[{i}]" if len(batch) > 1 else "input_ids")
                   for i, p in enumerate(batch)]
        max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 0)
        for i, p in enumerate(prompts):
            if len(p) + max_new_tokens > self.max_seq_len:
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens and max_new_tokens is {max_new_tokens}, which needs "
                    f"{len(p) + max_new_tokens} positions; max_seq_len is {self.max_seq_len}. Shorten the prompt, "
                    "lower max_new_tokens, or load with a larger max_seq_len.")
        sp = self._sampling(temperature, top_p, top_k, repetition_penalty, seed)
        out, stats = self._engine.generate(prompts, max_new_tokens, stop_ids=self.stop_ids,
                                           ignore_eos=bool(ignore_eos), callback=callback, **sp)
        return (out, stats) if return_stats else out

    # ---- text API ---------------------------------------------------------
    def _need_tokenizer(self):
        if self.tokenizer is None:
            where = self.files.directory if self.files else self.model_id
            raise ValueError(f"no tokenizer for {where} (no tokenizer.json); pass token ids to generate_ids() "
                             "instead, or load a model folder that has tokenizer.json")
        return self.tokenizer

    def encode_prompt(self, prompt: str, chat: Optional[bool] = None) -> List[int]:
        """The token ids generate() feeds for a text prompt."""
        tok = self._need_tokenizer()
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        if not prompt:
            raise ValueError("prompt is empty")
        use_chat = self.chat_format if chat is None else bool(chat)
        if use_chat:
            from .chat import render_chat

            text = render_chat([{"role": "user", "content": prompt}], self.tokenizer_config, tok,
                               add_generation_prompt=True)
            return tok.encode(text, add_special_tokens=False)
        return tok.encode(prompt, add_special_tokens=True)

    def _new_tokens(self, n_prompt, max_length, max_new_tokens) -> int:
        if max_new_tokens is not None:
            return _check_int("max_new_tokens", max_new_tokens, 0)
        max_length = _check_int("max_length", max_length, 1)
        n = max_length - n_prompt
        if n <= 0:
            raise ValueError(f"the prompt has {n_prompt} tokens, so max_length={max_length} (prompt + new tokens) "
                             "leaves no room to generate; raise max_length or pass max_new_tokens")
        return n

    def generate(self, prompt: Union[str, Sequence[str]], max_length: int = 512, max_new_tokens: Optional[int] = None,
                 temperature: Optional[float] = None, top_p: Optional[float] = None, top_k: Optional[int] = None,
                 repetition_penalty: Optional[float] = None, seed: Optional[int] = None, stream: bool = False,
                 chat: Optional[bool] = None, ignore_eos: bool = False, skip_special_tokens: bool = True,
                 callback: Optional[Callable[[str], Any]] = None):
        """Generates text for a prompt (str) or several (list of str).

        max_length is the total length, prompt tokens included (as in Hugging
        Face transformers): generation stops after max_length - len(prompt)
        new tokens, or at an end-of-sequence token. max_new_tokens, if given,
        sets the number of new tokens instead. Sampling defaults come from the
        model's generation_config.json (Llama 3.2 Instruct: temperature 0.6,
        top_p 0.9, top_k 50); temperature=0 is greedy. Returns the new text
        (str, or list of str for a list of prompts); with stream=True, an
        iterator of text pieces (one prompt only); callback(piece) is called
        with each piece as it is generated.
        """
        single = isinstance(prompt, str)
        prompts = [prompt] if single else list(prompt) if isinstance(prompt, (list, tuple)) else None
        if prompts is None:
            raise TypeError(f"prompt must be a str or a list of str, not {type(prompt).__name__}")
        if not prompts:
            raise ValueError("prompt list is empty")
        ids = [self.encode_prompt(p, chat) for p in prompts]
        return self._generate_text(ids, single, max_length, max_new_tokens, temperature, top_p, top_k,
                                   repetition_penalty, seed, stream, ignore_eos, skip_special_tokens, callback)

    def chat(self, messages: List[Dict[str, str]], max_length: int = 4096, max_new_tokens: Optional[int] = None,
             temperature: Optional[float] = None, top_p: Optional[float] = None, top_k: Optional[int] = None,
             repetition_penalty: Optional[float] = None, seed: Optional[int] = None, stream: bool = False,
             date_string: Optional[str] = None, callback: Optional[Callable[[str], Any]] = None):
        """The assistant's reply to a conversation: messages is a list of
        {"role": "system"|"user"|"assistant", "content": str}. Rendered with
        the model's chat_template (jinja2) or the built-in Llama 3 format."""
        from .chat import render_chat

        tok = self._need_tokenizer()
        text = render_chat(messages, self.tokenizer_config, tok, add_generation_prompt=True, date_string=date_string)
        ids = tok.encode(text, add_special_tokens=False)
        return self._generate_text([ids], True, max_length, max_new_tokens, temperature, top_p, top_k,
                                   repetition_penalty, seed, stream, False, True, callback)

    def _generate_text(self, ids, single, max_length, max_new_tokens, temperature, top_p, top_k,
                       repetition_penalty, seed, stream, ignore_eos, skip_special_tokens, callback):
        tok = self._need_tokenizer()
        longest = max(len(p) for p in ids)
        if longest >= self.max_seq_len:
            raise ValueError(f"the prompt has {longest} tokens, which leaves no room in max_seq_len = "
                             f"{self.max_seq_len}; shorten it or load with a larger max_seq_len")
        n_new = self._new_tokens(longest, max_length, max_new_tokens)
        if longest + n_new > self.max_seq_len:
            if max_new_tokens is not None:
                raise ValueError(f"prompt ({longest} tokens) + max_new_tokens ({n_new}) exceeds max_seq_len = "
                                 f"{self.max_seq_len}; lower max_new_tokens or load with a larger max_seq_len")
            warnings.warn(f"max_length={max_length} is longer than the KV cache (max_seq_len={self.max_seq_len}); "
                          f"generating at most {self.max_seq_len - longest} tokens", stacklevel=3)
            n_new = self.max_seq_len - longest
        if stream:
            if not single:
                raise ValueError("stream=True takes a single prompt")
            return self._stream(ids[0], n_new, temperature, top_p, top_k, repetition_penalty, seed, ignore_eos,
                                skip_special_tokens, callback)
        cb = None
        decoders = None
        if callback is not None:
            decoders = [tok.decoder(skip_special_tokens=skip_special_tokens) for _ in ids]

            def cb(pairs):
                for seq, t in pairs:
                    piece = decoders[seq].push(t)
                    if piece:
                        callback(piece)
                return True

        out = self.generate_ids(ids, n_new, temperature, top_p, top_k, repetition_penalty, seed, ignore_eos, cb)
        if decoders is not None:
            for d in decoders:
                rest = d.flush()
                if rest:
                    callback(rest)
        texts = [tok.decode(self._strip_stop(o), skip_special_tokens=skip_special_tokens) for o in out]
        return texts[0] if single else texts

    def _strip_stop(self, ids: List[int]) -> List[int]:
        return ids[:-1] if ids and ids[-1] in self.stop_ids else ids

    def _stream(self, prompt_ids, n_new, temperature, top_p, top_k, repetition_penalty, seed, ignore_eos,
                skip_special_tokens, callback) -> Iterator[str]:
        """Runs the C loop in a worker thread; yields text pieces as they arrive."""
        tok = self._need_tokenizer()
        sp = self._sampling(temperature, top_p, top_k, repetition_penalty, seed)
        q: "queue.Queue" = queue.Queue()
        cancel = threading.Event()
        stop_ids = set(self.stop_ids)

        def on_tokens(pairs):
            for _, t in pairs:
                q.put(("tok", t))
            return not cancel.is_set()

        def work():
            try:
                self._engine.generate([prompt_ids], n_new, stop_ids=self.stop_ids, ignore_eos=bool(ignore_eos),
                                      callback=on_tokens, **sp)
                q.put(("end", None))
            except BaseException as e:  # handed to the consumer
                q.put(("err", e))

        def gen():
            dec = tok.decoder(skip_special_tokens=skip_special_tokens)
            th = threading.Thread(target=work, name="llama_kernel-generate", daemon=True)
            th.start()
            try:
                while True:
                    try:
                        kind, v = q.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    if kind == "tok":
                        if v in stop_ids and not ignore_eos:
                            continue
                        piece = dec.push(v)
                        if piece:
                            if callback:
                                callback(piece)
                            yield piece
                    elif kind == "err":
                        raise v
                    else:
                        rest = dec.flush()
                        if rest:
                            if callback:
                                callback(rest)
                            yield rest
                        return
            finally:
                cancel.set()
                th.join()

        return gen()

    # ---- memory -------------------------------------------------------------
    def memory_usage(self) -> Dict[str, Any]:
        """Bytes the engine actually allocated, by part, with total_bytes (same
        fields as estimate_memory())."""
        m = self._engine.memory()["used"]
        m["device"] = self.device
        return m

    def __repr__(self) -> str:
        c = self.config
        return (f"LlamaInference({self.model_id!r}, device={self.device!r}, quantization={self.quantization!r}, "
                f"layers={c.num_hidden_layers}, hidden={c.hidden_size}, max_seq_len={self.max_seq_len}, "
                f"batch_size={self.batch_size})")
