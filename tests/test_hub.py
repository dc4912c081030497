"""Finding model files: local folders, the Hugging Face cache layout, and
the errors users see when nothing is found."""
import json
import os

import pytest

from llama_kernel import LlamaInference, ModelNotFoundError
from llama_kernel.hub import locate, model_files
from llama_kernel.testing import make_random_checkpoint


def make_cache(root, repo, src):
    """The huggingface_hub layout: blobs/ + snapshots/<sha>/ symlinks + refs/main."""
    base = os.path.join(root, "models--" + repo.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    os.makedirs(os.path.join(base, "blobs"))
    os.makedirs(os.path.join(base, "snapshots", sha))
    os.makedirs(os.path.join(base, "refs"))
    for i, f in enumerate(sorted(os.listdir(src))):
        blob = os.path.join(base, "blobs", f"blob{i}")
        os.rename(os.path.join(src, f), blob)
        os.symlink(os.path.relpath(blob, os.path.join(base, "snapshots", sha)), os.path.join(base, "snapshots", sha, f))
    with open(os.path.join(base, "refs", "main"), "w") as f:
        f.write(sha)
    return os.path.join(base, "snapshots", sha)


@pytest.mark.parametrize("var", ["HF_HUB_CACHE", "HF_HOME"])
def test_hf_cache_lookup(tmp_path, monkeypatch, var):
    src = make_random_checkpoint(str(tmp_path / "src"), "tiny", num_hidden_layers=1)
    root = str(tmp_path / "hf")
    cache = os.path.join(root, "hub") if var == "HF_HOME" else root
    snap = make_cache(cache, "someorg/Tiny-Llama", src)
    for v in ("HF_HUB_CACHE", "HF_HOME", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(var, root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert locate("someorg/Tiny-Llama") == snap
    m = LlamaInference("someorg/Tiny-Llama", device="cpu", verbose=False)
    assert len(m.generate_ids([1, 2, 3], max_new_tokens=2, ignore_eos=True)[0]) == 2


def test_not_found_message_lists_places(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as e:
        LlamaInference("nobody/NoSuchModel-1B", device="cpu", verbose=False)
    msg = str(e.value)
    assert "nobody/NoSuchModel-1B" in msg and str(tmp_path / "empty") in msg and "huggingface-cli download" in msg


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        locate(str(tmp_path))


def test_pickle_only_refused(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "p"), "tiny", num_hidden_layers=1)
    os.rename(os.path.join(d, "model.safetensors"), os.path.join(d, "pytorch_model.bin"))
    with pytest.raises(ValueError, match="pickle"):
        model_files(d)


def test_index_must_stay_inside_folder(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "s"), "tiny", num_hidden_layers=1, shards=2)
    idx = os.path.join(d, "model.safetensors.index.json")
    j = json.load(open(idx))
    j["weight_map"]["model.norm.weight"] = "../evil.safetensors"
    json.dump(j, open(idx, "w"))
    with pytest.raises(ValueError, match="outside the model folder"):
        model_files(d)
    j["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors"
    json.dump(j, open(idx, "w"))
    with pytest.raises(ValueError, match="missing"):
        model_files(d)


def test_duplicate_tensor_across_shards(tmp_path):
    from llama_kernel.testing import load_safetensors, save_safetensors

    d = make_random_checkpoint(str(tmp_path / "s"), "tiny", num_hidden_layers=1, shards=2)
    s1 = load_safetensors(os.path.join(d, "model-00001-of-00002.safetensors"))
    p2 = os.path.join(d, "model-00002-of-00002.safetensors")
    s2 = load_safetensors(p2)
    name = next(iter(s1))
    s2[name] = s1[name]
    save_safetensors(p2, s2, "bf16")
    with pytest.raises(ValueError, match=f"'{name}' is in both"):
        LlamaInference(d, device="cpu", verbose=False)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*tiny"):
        LlamaInference("synthetic:huge", device="cpu", verbose=False)
