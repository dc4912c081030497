"""Against Hugging Face `tokenizers` itself, where it is installed (the device
machine): the same ids on a large real corpus and on random text."""
import os
import random

import pytest

tokenizers = pytest.importorskip("tokenizers")

from llama_kernel.tokenizer import Tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def pair(llama3_tokenizer_dir):
    path = os.path.join(llama3_tokenizer_dir, "tokenizer.json")
    return Tokenizer.from_file(path), tokenizers.Tokenizer.from_file(path)


def test_pydoc_corpus_identical(pair):
    from pydoc_data.topics import topics

    ours, hf = pair
    for k in sorted(topics)[:200]:
        assert ours.encode(topics[k]) == hf.encode(topics[k], add_special_tokens=False).ids, k


def test_random_text_identical(pair):
    from test_tokenizer import random_text

    ours, hf = pair
    rng = random.Random(99)
    for _ in range(2000):
        t = random_text(rng, rng.randint(0, 80))
        assert ours.encode(t) == hf.encode(t, add_special_tokens=False).ids, repr(t)
        ids = ours.encode(t)
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False)
