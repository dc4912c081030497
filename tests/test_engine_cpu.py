"""The CPU engine end to end against the float64 NumPy reference, loading
variants (rope spellings, tied/untied, sharded, dtypes), chunked prefill,
batching, sampling reproducibility and generation-loop semantics.

Tolerance: the engine keeps float32 activations and an fp16 KV cache, so its
logits differ from the float64 reference by rounding only: relative L2 error
~3e-4 measured; 2e-3 allows for longer contexts without hiding real bugs (a
wrong rope, mask or head mapping gives errors > 1e-1)."""
import os
import threading

import numpy as np
import pytest

import reference as R
from llama_kernel import LlamaInference, ModelConfig
from llama_kernel.testing import load_safetensors, make_random_checkpoint

TOL = 2e-3
TOKENS = [1, 5, 77, 300, 2, 9, 100, 511, 0, 45, 45, 45, 3, 200, 17, 8, 260, 128, 64, 32, 16, 15, 14]


def ckpt_weights(d):
    w = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            w.update(load_safetensors(os.path.join(d, f)))
    return w


def check_logits(d, quantization="int4", tokens=TOKENS, **kw):
    cfg = ModelConfig.from_file(os.path.join(d, "config.json"))
    m = LlamaInference(d, device="cpu", quantization=quantization, verbose=False, **kw)
    got = m.logits(tokens)
    ref = R.forward(R.engine_weights(ckpt_weights(d), cfg, quantization), cfg, tokens)
    assert got.shape == (len(tokens), cfg.vocab_size) and got.dtype == np.float32
    err = R.rel_err(got, ref)
    assert err < TOL, err
    return m, got, ref


@pytest.mark.parametrize("quantization", ["none", "int4"])
def test_logits_match_reference(tiny_ckpt, quantization):
    check_logits(tiny_ckpt, quantization)


@pytest.mark.parametrize("spelling", ["rope_type", "type", "rope_parameters"])
def test_rope_spellings(tmp_path, spelling):
    d = make_random_checkpoint(str(tmp_path / spelling), "tiny", seed=2, std=0.05, rope_spelling=spelling)
    check_logits(d, "none")


def test_untied_head(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "u"), "tiny", seed=3, std=0.05, tie_word_embeddings=False)
    m, _, _ = check_logits(d, "int4")
    assert m._engine.config["tied_embeddings"] == 0


def test_missing_lm_head_means_tied(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "t"), "tiny", seed=4, std=0.05, tie_word_embeddings=False,
                               include_lm_head=False)
    m, _, _ = check_logits(d, "none")
    assert m._engine.config["tied_embeddings"] == 1


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_checkpoint_dtypes(tmp_path, dtype):
    d = make_random_checkpoint(str(tmp_path / dtype), "tiny", seed=5, std=0.05, dtype=dtype)
    check_logits(d, "int4")


def test_sharded(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "s"), "tiny", seed=6, std=0.05, shards=3)
    assert os.path.isfile(os.path.join(d, "model.safetensors.index.json"))
    check_logits(d, "int4")


def test_default_rope_and_odd_shape(tmp_path):
    # head_dim 16, GQA ratio 3, no rope scaling, bf16 path (shape not a multiple of the int4 group)
    d = make_random_checkpoint(str(tmp_path / "o"), "tiny", seed=7, std=0.05, hidden_size=96, num_attention_heads=6,
                               num_key_value_heads=2, head_dim=16, intermediate_size=200, rope_type="default",
                               rope_theta=10000.0)
    check_logits(d, "none")
    with pytest.raises(ValueError, match="quantization=\"none\""):
        LlamaInference(d, device="cpu", quantization="int4", verbose=False)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunked_prefill_equals_one_pass(tiny_ckpt, chunk):
    full = LlamaInference(tiny_ckpt, device="cpu", verbose=False).logits(TOKENS)
    part = LlamaInference(tiny_ckpt, device="cpu", prefill_chunk=chunk, verbose=False).logits(TOKENS)
    assert R.rel_err(part, full) < 1e-5


def test_long_context_positions(tmp_path):
    # positions well past the llama3 low-frequency wavelength boundary (original 8192 / 4)
    d = make_random_checkpoint(str(tmp_path / "l"), "tiny", seed=8, std=0.05, num_hidden_layers=1,
                               rope_original_max_position_embeddings=64)
    rng = np.random.default_rng(0)
    check_logits(d, "none", tokens=rng.integers(0, 512, 300).tolist(), max_seq_len=320)


def test_greedy_generation_follows_logits(tiny_ckpt):
    m = LlamaInference(tiny_ckpt, device="cpu", verbose=False)
    prompt = TOKENS[:6]
    out = m.generate_ids(prompt, max_new_tokens=8, temperature=0, ignore_eos=True)[0]
    seq = list(prompt)
    for t in out:  # each greedy token is the argmax of the logits of the sequence so far
        assert int(np.argmax(m.logits(seq)[-1])) == t
        seq.append(t)


def test_batch_equals_single_runs(tiny_ckpt):
    prompts = [TOKENS[:3], TOKENS[:11], TOKENS[4:6], TOKENS]
    single = LlamaInference(tiny_ckpt, device="cpu", verbose=False)
    # sequence i of a batch draws from random stream i, whatever the batch size
    sp = single._sampling(0.9, None, 20, None, 99)
    want = [single._engine.generate([p], 7, stop_ids=single.stop_ids, seq_id0=i, **sp)[0][0]
            for i, p in enumerate(prompts)]
    for bs in (1, 2, 4):
        m = LlamaInference(tiny_ckpt, device="cpu", batch_size=bs, verbose=False)
        assert m.generate_ids(prompts, max_new_tokens=7, temperature=0.9, top_k=20, seed=99) == want


@pytest.mark.parametrize("chunk", [1, 4, 5, 64])
def test_packed_prefill_matches_single(tiny_ckpt, chunk):
    """A batch's prompts are prefilled packed into shared chunks (a prompt may span chunks, a chunk
    may end several prompts); the result must be what each prompt gives alone."""
    prompts = [TOKENS[:3], TOKENS[:11], TOKENS[4:5], TOKENS[2:9], TOKENS]
    single = LlamaInference(tiny_ckpt, device="cpu", verbose=False)
    want = [single.generate_ids(p, max_new_tokens=6, temperature=0, ignore_eos=True)[0] for p in prompts]
    m = LlamaInference(tiny_ckpt, device="cpu", batch_size=4, prefill_chunk=chunk, verbose=False)
    assert m.generate_ids(prompts, max_new_tokens=6, temperature=0, ignore_eos=True) == want


def test_seeded_sampling_reproducible(tiny_ckpt):
    m = LlamaInference(tiny_ckpt, device="cpu", verbose=False)
    a = m.generate_ids(TOKENS[:5], max_new_tokens=20, temperature=1.0, top_p=0.95, seed=7)
    b = m.generate_ids(TOKENS[:5], max_new_tokens=20, temperature=1.0, top_p=0.95, seed=7)
    c = m.generate_ids(TOKENS[:5], max_new_tokens=20, temperature=1.0, top_p=0.95, seed=8)
    assert a == b and a != c


def test_stop_ids_and_ignore_eos(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "e"), "tiny", seed=1, std=0.05)
    m = LlamaInference(d, device="cpu", verbose=False)
    free = m.generate_ids(TOKENS[:4], max_new_tokens=12, temperature=0, ignore_eos=True)[0]
    m.stop_ids = [free[3]]  # make the 4th generated token a stop token
    stopped = m.generate_ids(TOKENS[:4], max_new_tokens=12, temperature=0)[0]
    first = free.index(free[3])
    assert stopped == free[: first + 1]
    assert m.generate_ids(TOKENS[:4], max_new_tokens=12, temperature=0, ignore_eos=True)[0] == free
    assert m.generate_ids(TOKENS[:4], max_new_tokens=0) == [[]]


def test_callback_streams_and_can_stop(tiny_ckpt):
    m = LlamaInference(tiny_ckpt, device="cpu", verbose=False)
    seen = []

    def cb(pairs):
        seen.extend(pairs)
        return len(seen) < 5

    out = m.generate_ids([TOKENS[:3], TOKENS[:4]], max_new_tokens=10, temperature=0, ignore_eos=True, callback=cb)
    assert len(seen) >= 5 and all(len(o) < 10 for o in out)
    assert [t for s, t in seen if s == 0] == out[0]


def test_callback_exception_propagates(tiny_ckpt):
    m = LlamaInference(tiny_ckpt, device="cpu", verbose=False)

    def cb(pairs):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        m.generate_ids(TOKENS[:3], max_new_tokens=5, callback=cb)
    assert len(m.generate_ids(TOKENS[:3], max_new_tokens=5, ignore_eos=True)[0]) == 5  # still usable


def test_two_threads_share_one_model(tiny_ckpt):
    m = LlamaInference(tiny_ckpt, device="cpu", verbose=False)
    want = m.generate_ids(TOKENS[:5], max_new_tokens=16, temperature=0.8, seed=3, ignore_eos=True)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(m.generate_ids(TOKENS[:5], max_new_tokens=16, temperature=0.8, seed=3,
                                              ignore_eos=True))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 15 and all(r == want for r in results)


def test_synthetic_model_runs():
    m = LlamaInference("synthetic:tiny", device="cpu", verbose=False)
    out, stats = m.generate_ids([1, 2, 3], max_new_tokens=4, ignore_eos=True, return_stats=True)
    assert len(out[0]) == 4 and stats["generated_tokens"] == 4 and stats["prefill_tokens"] == 3
