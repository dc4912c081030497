"""The sampling rule (csrc/lk_sample.h) against Hugging Face's logits
warpers written in NumPy: exact kept sets, and the distribution of draws."""
import numpy as np
import pytest

from llama_kernel import LlamaInference, _C
from llama_kernel.testing import make_random_checkpoint


def hf_probs(logits, temperature, top_k, top_p, seen=(), penalty=1.0):
    """HF order: repetition penalty, temperature, top-k, top-p, softmax."""
    l = logits.astype(np.float64).copy()
    for t in set(seen):
        l[t] = l[t] / penalty if l[t] > 0 else l[t] * penalty
    l = l / temperature
    if 0 < top_k < len(l):
        kth = np.sort(l)[-top_k]
        l[l < kth] = -np.inf
    p = np.exp(l - l.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum_before = np.concatenate([[0.0], np.cumsum(p[order])[:-1]])
        keep = np.zeros(len(p), bool)
        keep[order[cum_before < top_p]] = True
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    return p


def draws(logits, n, **kw):
    B = n
    L = np.tile(logits.astype(np.float32), (B, 1))
    return _C.sample_cpu(L, list(range(B)), seq_id0=12345, **kw)


@pytest.mark.parametrize("T,k,p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.8), (0.6, 50, 0.9),
                                   (1.0, 3, 0.5), (2.0, 1, 1.0)])
def test_distribution_matches_hf(T, k, p):
    rng = np.random.default_rng(0)
    V = 40
    logits = rng.standard_normal(V).astype(np.float32) * 2
    want = hf_probs(logits, T, k, p)
    n = 20000
    toks = draws(logits, n, temperature=T, top_k=k, top_p=p, seed=42)
    counts = np.bincount(toks, minlength=V)
    assert np.all(counts[want == 0] == 0), "a token outside the top-k/top-p set was drawn"
    expected = n * want
    sd = np.sqrt(expected * (1 - want))
    assert np.all(np.abs(counts - expected) <= 5 * sd + 5)


def test_greedy_and_ties():
    l = np.array([[0.5, 2.0, 2.0, -1.0]], np.float32)
    assert _C.sample_cpu(l, [0])[0] == 1  # lowest id among the maxima
    assert _C.sample_cpu(l, [0], temperature=0.0, top_k=1)[0] == 1


def test_repetition_penalty_hf_rule():
    l = np.array([[3.0, 2.9, -1.0, -1.05]], np.float32)
    # penalising token 0 (positive: divided) makes token 1 the argmax
    assert _C.sample_cpu(l, [0], repetition_penalty=1.1, seen=[[0]])[0] == 1
    # a negative logit is multiplied: token 2 drops below token 3
    l2 = np.array([[-1.0, -1.05, -5, -5]], np.float32)
    assert _C.sample_cpu(l2, [0], repetition_penalty=1.2, seen=[[0]])[0] == 1
    rng = np.random.default_rng(1)
    logits = rng.standard_normal(30).astype(np.float32)
    seen = [0, 3, 7, 11]
    want = hf_probs(logits, 0.9, 0, 1.0, seen, 1.3)
    n = 20000
    L = np.tile(logits, (n, 1))
    toks = _C.sample_cpu(L, list(range(n)), temperature=0.9, repetition_penalty=1.3, seed=5, seen=[seen] * n)
    counts = np.bincount(toks, minlength=30)
    assert np.all(np.abs(counts - n * want) <= 5 * np.sqrt(n * want * (1 - want)) + 5)


def test_top_p_exact_on_full_vocabulary():
    # a Llama-sized vocabulary with a long flat tail: every draw must be inside HF's nucleus
    rng = np.random.default_rng(3)
    V = 128256
    logits = (rng.standard_normal(V) * 3).astype(np.float32)
    want = hf_probs(logits, 0.6, 0, 0.9)
    toks = draws(logits, 300, temperature=0.6, top_p=0.9, seed=9)
    assert np.all(want[toks] > 0)


def test_seeds_and_streams_independent():
    l = np.zeros((1, 1000), np.float32)
    a = [_C.sample_cpu(l, [p], temperature=1.0, seed=1)[0] for p in range(50)]
    b = [_C.sample_cpu(l, [p], temperature=1.0, seed=1)[0] for p in range(50)]
    c = [_C.sample_cpu(l, [p], temperature=1.0, seed=2)[0] for p in range(50)]
    assert a == b and a != c
    u = np.array([_C.uniform(7, s, p) for s in range(20) for p in range(200)])
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.02


@pytest.mark.parametrize("kw,msg", [({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                                     ({"top_p": 1.5}, "top_p"), ({"top_k": -2}, "top_k"),
                                     ({"repetition_penalty": 0.0}, "repetition_penalty")])
def test_invalid_parameters(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _C.sample_cpu(np.zeros((1, 10), np.float32), [0], **kw)


def check_repetition_history(ckpt, device):
    """The repetition-penalty history of a batch's prompts (the CUDA backend uploads it together, v78: (token,
    slot) pairs, a prefill chunk's worth an upload; chunk 16 here, so prompts cross uploads). A penalty below 1
    multiplies every positive logit of a seen token (1 / 1e-3), so the greedy pick is the prompt's own token of
    largest logit: a history given to the wrong slot, a token lost at an upload's edge, or an old history left
    in a reused slot picks another. Each row's pick is its single run's and lies in its prompt; a huge penalty
    picks no prompt token."""
    lens = (5, 23, 40, 17)
    prompts = [[(11 * i + 5 * j) % 3000 + 1 for j in range(n)] for i, n in enumerate(lens)]
    m1 = LlamaInference(ckpt, device=device, prefill_chunk=16, verbose=False)
    mb = LlamaInference(ckpt, device=device, batch_size=4, prefill_chunk=16, verbose=False)
    for pen in (1e-3, 1e4):
        kw = dict(max_new_tokens=1, temperature=0, ignore_eos=True, repetition_penalty=pen)
        single = [m1.generate_ids(p, **kw)[0][0] for p in prompts]
        batched = [o[0] for o in mb.generate_ids(prompts, **kw)]
        assert batched == single, (pen, batched, single)
        assert all((t in p) == (pen < 1) for t, p in zip(batched, prompts)), (pen, batched, prompts)
        # a later batch reuses the slots in another order: the old histories are cleared
        again = [o[0] for o in mb.generate_ids(prompts[::-1], **kw)]
        assert again == single[::-1], (pen, again, single)


def test_repetition_history_batched_cpu(tmp_path):
    check_repetition_history(make_random_checkpoint(str(tmp_path / "t"), "tiny", seed=4, vocab_size=4096), "cpu")
