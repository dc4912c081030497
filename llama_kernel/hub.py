"""Finding a model's files: a local directory, the Hugging Face cache, or a
download through huggingface_hub (optional). Never loads pickle weights."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List, Optional


class ModelNotFoundError(FileNotFoundError):
    """The model's files were not found (the message lists where we looked)."""


@dataclass
class ModelFiles:
    directory: str
    config_path: str
    weight_paths: List[str]
    generation_config_path: Optional[str] = None
    tokenizer_path: Optional[str] = None
    tokenizer_config_path: Optional[str] = None


def cache_roots() -> List[str]:
    """Hugging Face hub cache folders, in the order huggingface_hub uses them."""
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        roots.append(os.environ["HUGGINGFACE_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        roots.append(os.path.join(os.environ["HF_HOME"], "hub"))
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        roots.append(os.path.join(xdg, "huggingface", "hub"))
    roots.append(os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub"))
    seen, out = set(), []
    for r in roots:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def find_in_cache(repo_id: str, revision: str = "main") -> Optional[str]:
    """models--org--name/refs/<revision> -> snapshots/<sha>/ (None if absent)."""
    folder = "models--" + repo_id.replace("/", "--")
    for root in cache_roots():
        base = os.path.join(root, folder)
        if not os.path.isdir(base):
            continue
        ref = os.path.join(base, "refs", revision)
        if os.path.isfile(ref):
            with open(ref, "r", encoding="utf-8") as f:
                sha = f.read().strip()
            snap = os.path.join(base, "snapshots", sha)
            if os.path.isfile(os.path.join(snap, "config.json")):
                return snap
        snaps = os.path.join(base, "snapshots")
        if os.path.isdir(snaps):
            cands = [os.path.join(snaps, s) for s in os.listdir(snaps)
                     if os.path.isfile(os.path.join(snaps, s, "config.json"))]
            if cands:
                return max(cands, key=os.path.getmtime)
    return None


def _download(repo_id: str) -> Optional[str]:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return None
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja"])


def locate(model_id: str, download: bool = True) -> str:
    """model_id -> a directory with config.json, or ModelNotFoundError."""
    if os.path.isdir(model_id):
        if not os.path.isfile(os.path.join(model_id, "config.json")):
            raise ModelNotFoundError(f"'{model_id}' is a directory but has no config.json; point model_id at a "
                                     "Hugging Face model folder (config.json + *.safetensors)")
        return os.path.abspath(model_id)
    looked = [f"local directory '{model_id}' (does not exist)"]
    if model_id.count("/") == 1 and not model_id.startswith(("/", ".")):
        snap = find_in_cache(model_id)
        if snap:
            return snap
        looked.append("Hugging Face cache: " + ", ".join(cache_roots()))
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        if download and not offline:
            try:
                path = _download(model_id)
            except Exception as e:  # network, auth (gated repo), missing repo
                raise ModelNotFoundError(
                    f"model '{model_id}' is not available locally and the download failed: {e}\n"
                    f"Looked in: {'; '.join(looked)}. For gated models (meta-llama/*) accept the license on "
                    "huggingface.co and run `huggingface-cli login`, or download the files and pass their folder."
                ) from None
            if path:
                return path
            looked.append("download: huggingface_hub is not installed (pip install huggingface_hub)")
        elif offline:
            looked.append("download: skipped (HF_HUB_OFFLINE is set)")
    raise ModelNotFoundError(
        f"model '{model_id}' not found. Looked in: {'; '.join(looked)}.\n"
        "Get the files with `huggingface-cli download " + model_id + "` (pip install huggingface_hub), or pass "
        "the path of a folder holding config.json and *.safetensors, or use 'synthetic:llama-3.2-1b' for random "
        "weights.")


def _inside(directory: str, name: str) -> str:
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise ValueError(f"model.safetensors.index.json names '{name}', which is outside the model folder")
    return os.path.join(directory, name)


def model_files(directory: str) -> ModelFiles:
    def opt(name):
        p = os.path.join(directory, name)
        return p if os.path.isfile(p) else None

    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, "r", encoding="utf-8") as f:
                idx = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{index}: not valid JSON ({e})") from None
        wm = idx.get("weight_map") if isinstance(idx, dict) else None
        if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) for v in wm.values()):
            raise ValueError(f"{index}: 'weight_map' must be a non-empty object of tensor name -> file name")
        weights = sorted({_inside(directory, v) for v in wm.values()})
        for w in weights:
            if not os.path.isfile(w):
                raise ValueError(f"{index} lists shard '{os.path.basename(w)}', which is missing from {directory}")
    elif os.path.isfile(os.path.join(directory, "model.safetensors")):
        weights = [os.path.join(directory, "model.safetensors")]
    else:
        st = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
        if st:
            weights = [os.path.join(directory, f) for f in st]
        else:
            pickles = [f for f in os.listdir(directory) if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
            if pickles:
                raise ValueError(
                    f"{directory} has only pickle weights ({', '.join(sorted(pickles))}); llama_kernel never loads "
                    "pickle (it can run code). Convert them to safetensors, e.g. with transformers' "
                    "save_pretrained(safe_serialization=True).")
            raise ValueError(f"{directory} has no *.safetensors weights")
    return ModelFiles(
        directory=directory,
        config_path=os.path.join(directory, "config.json"),
        weight_paths=weights,
        generation_config_path=opt("generation_config.json"),
        tokenizer_path=opt("tokenizer.json"),
        tokenizer_config_path=opt("tokenizer_config.json"),
    )
