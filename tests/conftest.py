import os

import pytest

from llama_kernel import _C

HERE = os.path.dirname(os.path.abspath(__file__))


def fixtures_dir():
    """../shared/fixtures/llama3-tokenizer (beside the checkout), or LLAMA_KERNEL_TOKENIZER_FIXTURES."""
    env = os.environ.get("LLAMA_KERNEL_TOKENIZER_FIXTURES")
    cands = [env] if env else []
    cands += [os.path.join(HERE, "..", "..", "shared", "fixtures", "llama3-tokenizer"),
              os.path.join(HERE, "..", "shared", "fixtures", "llama3-tokenizer"),
              os.path.join(HERE, "..", ".fixtures", "llama3-tokenizer")]
    for c in cands:
        if c and os.path.isfile(os.path.join(c, "tokenizer.json")):
            return os.path.abspath(c)
    return None


def gpu_reason():
    info = _C.build_info()
    if not info.get("cuda"):
        return "CUDA not built into this extension"
    if info.get("device_count", 0) < 1:
        return "no CUDA GPU: " + info.get("cuda_error", "")
    if not info.get("arch_supported"):
        return "this GPU's arch is not compiled in"
    return None


def pytest_collection_modifyitems(config, items):
    reason = gpu_reason()
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for it in items:
            if "cuda" in it.keywords:
                it.add_marker(skip)


@pytest.fixture(scope="session")
def llama3_tokenizer_dir():
    d = fixtures_dir()
    if d is None:
        pytest.skip("Llama 3 tokenizer fixture not found (../shared/fixtures/llama3-tokenizer); "
                    "set LLAMA_KERNEL_TOKENIZER_FIXTURES to its folder")
    return d


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from llama_kernel.testing import make_random_checkpoint

    return make_random_checkpoint(str(tmp_path_factory.mktemp("tiny")), "tiny", seed=1, std=0.05)
