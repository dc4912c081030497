"""GPU tests (marked `cuda`, skipped without a GPU): every GPU op against a
float64 NumPy reference on real Llama 3.2 shapes and odd ones, the GPU
sampler against the CPU one, and the CUDA engine against the CPU engine
(and Hugging Face transformers when installed).

Tolerances (relative L2 error): matmul 5e-3 (inputs rounded to fp16; the
one-row GEMV sums centred fp16 products over 32 weights before fp32
accumulation, the tensor-core kernels accumulate in fp32: ~1e-3 measured);
attention 4e-3 (fp16 P and V in the flash kernels); engine logits GPU vs CPU
2e-2 (fp16 activations against the CPU's fp32, compounded over layers)."""
import itertools
import os

import numpy as np
import pytest

import reference as R
from test_sampling import check_repetition_history
from llama_kernel import LlamaInference, ModelConfig, _C, estimate_memory, quant
from llama_kernel.testing import load_safetensors, make_random_checkpoint

pytestmark = pytest.mark.cuda

VARIANTS = {"lut": 1, "optimized": 2, "batched": 3}
SHAPES = [  # (N, K): Llama-3.2-1B qkv, o, gate_up, down, 3B qkv/o/down, odd
    (3072, 2048), (2048, 2048), (16384, 2048), (2048, 8192), (5120, 3072), (3072, 3072), (3072, 8192),
    (136, 384), (8, 128), (1000, 640), (520, 4224)]  # 4224 = 132 chunks: lanes with 5 and 4 chunks


def h(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float64)


def mm_ref(x, qs, p, mode, y0=None):
    w = quant.dequantize(qs, p).astype(np.float16).astype(np.float64)  # the kernels dequantize to fp16
    y = h(x) @ w.T
    if mode == 1:
        return y0 + y
    if mode == 2:
        n = w.shape[0] // 2
        g, u = y[:, :n], y[:, n:]
        return g / (1 + np.exp(-g)) * u
    return y


def mm_cases(rng, Ms, N, K):
    """The matmul tests' cases: for each row count in Ms an input x (M x K), then for each output mode (0 fp32,
    1 add into y0, 2 SwiGLU, 3 fp16) the residual y0 the add starts from (None in the other modes), drawn from rng
    in that order."""
    for M in Ms:
        x = rng.standard_normal((M, K)).astype(np.float32)
        for mode in (0, 1, 2, 3):
            y0 = rng.standard_normal((M, N // 2 if mode == 2 else N)).astype(np.float32) if mode == 1 else None
            yield M, mode, x, y0


@pytest.mark.parametrize("N,K", SHAPES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matmul_variants(N, K, variant):
    rng = np.random.default_rng(N + K)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    Ms = [1, 2, 3, 4, 5, 8, 16, 17, 33, 64] if N * K <= 2048 * 8192 else [1, 4, 16, 33]
    if variant == "batched" and N * K <= 3072 * 3072:
        Ms += [128, 300]
    for M, mode, x, y0 in mm_cases(rng, Ms, N, K):
        y, used = _C.cuda_matmul(x, qs, p, mode=mode, variant=VARIANTS[variant], y=y0)
        assert used == VARIANTS[variant]
        assert np.all(np.isfinite(y)), (M, mode)
        ref = mm_ref(x, qs, p, mode, y0)
        err = R.rel_err(y, ref)
        assert err < 5e-3, (M, mode, err)


@pytest.mark.parametrize("variant", ["lut", "optimized"])
def test_gemv_x_in_shared_memory(variant, monkeypatch):
    """The one-row GEMV (1-4 rows) reads x from shared memory, swizzled, copied there first when the norm
    prologue does not put it there (LLAMA_KERNEL_GEMV_XS: 3 default, 1 swizzle only, 0 neither; read every
    call). The same sums in the same order, so every mode gives the same bits, and the reference agrees;
    K up to 8,192 (16 KB of x a row: copied at 1-2 rows, read from global memory at 3-4), split K
    included (o and down shapes), every epilogue."""
    rng = np.random.default_rng(77)
    for N, K in [(2048, 2048), (2048, 8192), (1000, 640), (256, 3072)]:
        w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
        qs, p = quant.quantize(w)
        for M in (1, 2, 3, 4):
            x = rng.standard_normal((M, K)).astype(np.float32)
            for mode in (0, 1, 2, 3):
                y0 = rng.standard_normal((M, N)).astype(np.float32) if mode == 1 else None
                outs = []
                for xs in ("0", "1", "3"):
                    monkeypatch.setenv("LLAMA_KERNEL_GEMV_XS", xs)
                    y, used = _C.cuda_matmul(x, qs, p, mode=mode, variant=VARIANTS[variant], y=y0)
                    assert used == VARIANTS[variant]
                    outs.append(y)
                assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2]), (N, K, M, mode)
                assert R.rel_err(outs[2], mm_ref(x, qs, p, mode, y0)) < 5e-3, (N, K, M, mode)


@pytest.mark.parametrize("N,K", [(2048, 2048), (2048, 8192), (16384, 2048), (520, 4224)])
def test_gemv_chunk_dot_forms(N, K, monkeypatch):
    """The lop3 GEMV's chunk dot: centred weights (q - 8) summed in fp16 over the 32-weight chunk (default)
    against the uncentred form summed in fp16 fours (LLAMA_KERNEL_GEMV_HDOT=0; read every call). Both
    against the reference, with x of unit scale and with a few outlier inputs (massive activations): the
    default's error is at most 1.5x the old form's, and the two differ (the default path ran)."""
    rng = np.random.default_rng(N ^ K)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    for M in (1, 2, 4):
        for outliers in (False, True):
            x = rng.standard_normal((M, K)).astype(np.float32)
            if outliers:
                x[:, rng.choice(K, 6, replace=False)] = 300.0
            for mode in (0, 1, 2):
                y0 = rng.standard_normal((M, N)).astype(np.float32) if mode == 1 else None
                ref = mm_ref(x, qs, p, mode, y0)
                errs, outs = [], []
                for hd in ("0", "1"):
                    monkeypatch.setenv("LLAMA_KERNEL_GEMV_HDOT", hd)
                    y, used = _C.cuda_matmul(x, qs, p, mode=mode, variant=VARIANTS["optimized"], y=y0)
                    assert used == VARIANTS["optimized"] and np.all(np.isfinite(y))
                    outs.append(y)
                    errs.append(R.rel_err(y, ref))
                assert not np.array_equal(outs[0], outs[1]), (M, mode)
                assert errs[1] < 5e-3 and errs[1] <= 1.5 * errs[0] + 1e-4, (M, outliers, mode, errs)


def check_gemv_switch_identical(env, values, N, K, Ms, monkeypatch):
    """A one-row-kernel switch that must not change the sums (env at each of values, the first against the
    rest): the same bits for each M of Ms, plain and residual-add, and close to the reference."""
    rng = np.random.default_rng(N * K)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    for M in Ms:
        x = rng.standard_normal((M, K)).astype(np.float32)
        for mode in (0, 1):
            y0 = rng.standard_normal((M, N)).astype(np.float32) if mode == 1 else None
            outs = []
            for v in values:
                monkeypatch.setenv(env, v)
                y, used = _C.cuda_matmul(x, qs, p, mode=mode, variant=VARIANTS["optimized"], y=y0)
                assert used == VARIANTS["optimized"]
                outs.append(y)
            assert R.rel_err(outs[0], mm_ref(x, qs, p, mode, y0)) < 5e-3, (M, mode)
            assert all(np.array_equal(outs[0], o) for o in outs[1:]), (M, mode)


@pytest.mark.parametrize("N,K", [(2048, 8192), (3072, 3072), (1000, 640), (136, 128), (520, 4224), (64, 16384)])
def test_gemv_x_copy_identical(N, K, monkeypatch):
    """The one-row GEMV's copy of x into shared memory (default where M rows fit 32 KB; 4 pieces a thread in
    flight) against x read from global memory (LLAMA_KERNEL_GEMV_XS=1): the same bits, for 1-4 rows, rows
    shorter than a block's threads (K = 128) and longer than 4 pieces a thread (K = 16,384: 8)."""
    check_gemv_switch_identical("LLAMA_KERNEL_GEMV_XS", ("", "1"), N, K, (1, 2, 3, 4), monkeypatch)


@pytest.mark.parametrize("K", [3072, 8192, 16384])
def test_gemv_long_rows_more_in_flight(K, monkeypatch):
    """One weight row a warp with 2, 4 or 8 chunks in flight a lane on long rows (LLAMA_KERNEL_GEMV_LONG_U; the
    default 4, or 2 on residual adds whose warps fit one wave, as these 2,048 rows do): each lane still adds its
    chunks in the same order, so the same bits, plain and residual-add."""
    check_gemv_switch_identical("LLAMA_KERNEL_GEMV_LONG_U", ("", "2", "4", "8"), 2048, K, (1,), monkeypatch)


@pytest.mark.parametrize("N,K", [(2048, 2048), (1000, 640), (136, 128)])
def test_gemv_short_rows_more_in_flight(N, K, monkeypatch):
    """One-row residual adds of one weight row a warp on rows of at most 64 chunks with 8 (default), 2 (the next
    step in flight) or 4 chunks in flight a lane (LLAMA_KERNEL_GEMV_SHORT_U): the same chunks in the same order a
    lane, so the same bits (plain outputs, which the switch leaves alone, as well)."""
    check_gemv_switch_identical("LLAMA_KERNEL_GEMV_SHORT_U", ("", "2", "4"), N, K, (1,), monkeypatch)


def check_gemv_pf_kernel(N, K, mode, mask, expect_pf, seed, monkeypatch):
    """LLAMA_KERNEL_GEMV_PF=mask against 0 (the plain loop) for one row: which kernel ran (launch name: the
    next-step-in-flight form where expect_pf), close to the reference, and the same bits."""
    rng = np.random.default_rng(seed)
    qs, p = quant.quantize((rng.standard_normal((N, K)) * 0.02).astype(np.float32))
    x = rng.standard_normal((1, K)).astype(np.float32)
    y0 = rng.standard_normal((1, N)).astype(np.float32) if mode == 1 else None
    outs, names = [], []
    for v in (mask, "0"):
        monkeypatch.setenv("LLAMA_KERNEL_GEMV_PF", v)
        y, _, kernel = _C.cuda_matmul(x, qs, p, mode=mode, variant=VARIANTS["optimized"], y=y0, kernel=True)
        outs.append(y)
        names.append(kernel)
    assert names == ["k_gemv_q4 (next step in flight)" if expect_pf else "k_gemv_q4", "k_gemv_q4"], names
    assert R.rel_err(outs[0], mm_ref(x, qs, p, mode, y0)) < 5e-3
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("N,K", [(16384, 2048), (16384, 3072), (10000, 4224)])
def test_gemv_unit_prefetch_identical(N, K, monkeypatch):
    """The one-row GEMV of 4 weight rows a warp keeps the next chunk step in flight while it computes one,
    across its units too (default; LLAMA_KERNEL_GEMV_PF=0 the plain loop). Each lane still adds its chunks in
    the same order: the same bits, plain, residual-add and SwiGLU (K = 4,224: 132 chunks, lanes with 5 and 4)."""
    check_gemv_switch_identical("LLAMA_KERNEL_GEMV_PF", ("", "0"), N, K, (1,), monkeypatch)
    check_gemv_pf_kernel(N, K, 2, "", True, N + K, monkeypatch)


@pytest.mark.parametrize("N,K,mode,mask,short_u", [(2048, 2048, 1, "", ""), (2048, 2048, 1, "", "2"),
                                                   (2048, 8192, 1, "", ""), (3072, 3072, 1, "7", ""),
                                                   (3072, 8192, 0, "7", ""), (4096, 2048, 2, "7", ""),
                                                   (4096, 2048, 2, "", "")])
def test_gemv_unit_prefetch_fewer_rows(N, K, mode, mask, short_u, monkeypatch):
    """The next-step-in-flight loop at 1 and 2 weight rows a warp (LLAMA_KERNEL_GEMV_PF bits 0 / 1; default 5):
    1 row a warp (o, down) takes it only where its grid (N / 8 blocks) is one wave of the PF instance, two
    blocks an SM at its 90-93 registers (the 3B's o and down, 384 blocks, stay plain on 132 SMs), and not on
    residual adds of at most 64 chunks, which keep 8 chunks in flight instead (LLAMA_KERNEL_GEMV_SHORT_U; 2 takes
    it there); 2 rows a warp (SwiGLU pairs) only when asked (7). Which kernel ran (launch name), and the same bits
    as the plain loop (LLAMA_KERNEL_GEMV_PF=0)."""
    monkeypatch.setenv("LLAMA_KERNEL_GEMV_SHORT_U", short_u)
    sms = _C.build_info()["sm_count"]
    enough = 2 * sms * 8  # the launch's one-row choice: the most rows a warp that leave two waves of warps
    units = (lambda r: -(-N // (r // 2))) if mode == 2 else (lambda r: -(-N // r))
    rr = 4 if units(4) >= enough else 2 if mode == 2 or units(2) >= enough else 1
    short_add = mode == 1 and K // 32 <= 64 and short_u != "2"
    expect_pf = -(-N // 8) <= 2 * sms and not short_add if rr == 1 else mask == "7" if rr == 2 else True
    check_gemv_pf_kernel(N, K, mode, mask, expect_pf, N + K + mode, monkeypatch)


@pytest.mark.parametrize("N,K", [(16384, 2048), (10002, 3072), (2048, 8192), (2048, 2048)])
def test_gemv_lean_loop_identical(N, K, monkeypatch):
    """The next-step-in-flight GEMV's lean loop (default where each lane has whole chunk steps: 4 weight rows a
    warp at K = 2,048 and 3,072, where N = 10,002 leaves a last unit of 2 rows, and of one SwiGLU pair; 1 row a
    warp with 4 chunks a lane at K = 8,192 (the residual add 2) and 2 at K = 2,048, where the residual add is held to
    2 by LLAMA_KERNEL_GEMV_SHORT_U) against the general loop (LLAMA_KERNEL_GEMV_LEAN=0),
    and the 4-rows-a-warp grid cut to one wave (default) against the grid of up to 8 blocks an SM
    (LLAMA_KERNEL_GEMV_PF_WAVE=0): close to the reference, and the same bits, plain, residual-add and SwiGLU."""
    monkeypatch.setenv("LLAMA_KERNEL_GEMV_SHORT_U", "2")
    rng = np.random.default_rng(N + K)
    qs, p = quant.quantize((rng.standard_normal((N, K)) * 0.02).astype(np.float32))
    x = rng.standard_normal((1, K)).astype(np.float32)
    for mode in (0, 1, 2):
        y0 = rng.standard_normal((1, N)).astype(np.float32) if mode == 1 else None
        outs = []
        for env in ({}, {"LLAMA_KERNEL_GEMV_LEAN": "0"}, {"LLAMA_KERNEL_GEMV_PF_WAVE": "0"}):
            for k in ("LLAMA_KERNEL_GEMV_LEAN", "LLAMA_KERNEL_GEMV_PF_WAVE"):
                monkeypatch.setenv(k, env.get(k, ""))
            y, _ = _C.cuda_matmul(x, qs, p, mode=mode, variant=VARIANTS["optimized"], y=y0)
            outs.append(y)
        assert R.rel_err(outs[0], mm_ref(x, qs, p, mode, y0)) < 5e-3, mode
        assert all(np.array_equal(outs[0], o) for o in outs[1:]), mode


def test_engine_gemv_unit_prefetch_identical(ckpt_1b_2layers, monkeypatch):
    """The same switch in the engine (gate_up and the LM head with their RMSNorm prologues, o and down; with 7
    also qkv with its rotary epilogue): the same tokens and logits, graphs off and on."""
    toks = [int(t) for t in np.random.default_rng(7).integers(0, 32000, 20)]
    check_launch_switch_identical(ckpt_1b_2layers, "LLAMA_KERNEL_GEMV_PF", monkeypatch, [toks], values=("", "0", "7"),
                                  prefill_chunk=1)


def test_engine_tokens_out_identical(ckpt_1b_2layers, monkeypatch):
    """A step's tokens reach the host written by the sampler into mapped pinned memory (default), by a kernel
    after the step (LLAMA_KERNEL_TOK_KERNEL=1) or by a device-to-host copy (0): the same tokens, graphs off and
    on, one sequence and two (sampled too: the tokens fed back are the ones read), and again on the same engine
    (the sampler's slot counts start over with each batch), with a batch of fewer rows than the engine's."""
    toks = [int(t) for t in np.random.default_rng(8).integers(0, 32000, 20)]
    for graphs in (False, True):
        for batch in (1, 3):
            got = []
            for tk in ("0", "1", ""):
                monkeypatch.setenv("LLAMA_KERNEL_TOK_KERNEL", tk)
                m = LlamaInference(ckpt_1b_2layers, device="cuda", batch_size=batch, cuda_graphs=graphs, verbose=False)
                prompts = [toks, toks[:7], toks[3:]][:batch]
                run = [m.generate_ids(prompts, max_new_tokens=24, temperature=0, ignore_eos=True),
                       m.generate_ids(prompts, max_new_tokens=24, temperature=0.8, seed=5, ignore_eos=True),
                       m.generate_ids(prompts[:1], max_new_tokens=9, temperature=0, ignore_eos=True),
                       m.generate_ids(prompts, max_new_tokens=24, temperature=0, ignore_eos=True)]
                assert run[3] == run[0], (graphs, batch, tk)
                got.append(run)
            assert got[0] == got[1] == got[2], (graphs, batch)
            assert all(len(o) == 24 for o in got[0][0] + got[0][1])


def check_launch_switch_identical(ckpt, env, monkeypatch, prompts, values=("0", ""), **kw):
    """A switch that changes only when kernels launch or how a kernel orders its loads (each of values, by
    default "0" and the default): the same tokens and logits, graphs off and on (the step graph keeps the
    launch attributes); a kernel reading what its predecessor had not yet written would show here."""
    for graphs in (False, True):
        ids, logits = [], []
        for v in values:
            monkeypatch.setenv(env, v)
            m = LlamaInference(ckpt, device="cuda", cuda_graphs=graphs, verbose=False, **kw)
            ids.append(m.generate_ids(prompts, max_new_tokens=12, temperature=0, ignore_eos=True))
            logits.append(m.logits(prompts[0]))
        assert all(i == ids[0] for i in ids[1:]), (env, graphs)
        assert all(np.array_equal(lg, logits[0]) for lg in logits[1:]), (env, graphs)


def test_engine_qkv_four_rows_identical(tmp_path, monkeypatch):
    """A one-row qkv GEMV (norm prologue, rotary epilogue) too wide for one round of 2 rows a warp takes 4 rows a
    warp (default) or keeps 2 (LLAMA_KERNEL_GEMV_QKV_RR4=0): the same tokens and logits. 32 KV heads make the
    1B's qkv 6,144 rows (3,072 warps at 2 rows) to reach the rule on any card up to 192 SMs."""
    ckpt = make_random_checkpoint(str(tmp_path), "llama-3.2-1b", seed=6, std=0.02, num_hidden_layers=1,
                                  vocab_size=32000, num_key_value_heads=32)
    toks = [int(t) for t in np.random.default_rng(6).integers(0, 32000, 20)]
    check_launch_switch_identical(ckpt, "LLAMA_KERNEL_GEMV_QKV_RR4", monkeypatch, [toks])


@pytest.mark.parametrize("N,K", [(2048, 2048), (16384, 2048), (2048, 8192), (5120, 3072)])
def test_tiled_early_identical(N, K, monkeypatch):
    """The tiled small-batch kernel (2-16 rows) with its first weights loaded before the PDL wait (bit 0 of
    LLAMA_KERNEL_TILED_EARLY) and the next kernel triggered right after the wait (bit 1; default 3), the loads
    early only (1), or neither (0): the same bits in every output mode, and the reference's."""
    monkeypatch.setenv("LLAMA_KERNEL_TILED", "1")
    rng = np.random.default_rng(N + K + 41)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    for M, mode, x, y0 in mm_cases(rng, (2, 9, 16), N, K):
        ys = []
        for v in ("", "0", "1"):
            monkeypatch.setenv("LLAMA_KERNEL_TILED_EARLY", v)
            y, _, kernel = _C.cuda_matmul(x, qs, p, mode=mode, variant=0, y=y0, kernel=True)
            assert kernel in ("k_gemv_tiled", "k_gemv_tiled (three blocks an SM)"), (M, mode, v, kernel)
            ys.append(y)
        assert R.rel_err(ys[0], mm_ref(x, qs, p, mode, y0)) < 5e-3, (M, mode)
        assert np.array_equal(ys[0], ys[1]) and np.array_equal(ys[0], ys[2]), (M, mode)


def tiled_wide_cases(N, K, seed, monkeypatch):
    """The tiled layout on and a random int4 matrix of N x K: yields (qs, p, M, mode, x, y0) for the plain,
    residual-add and fp16 outputs at 2, 9 and 16 rows (SwiGLU runs the pair form)."""
    monkeypatch.setenv("LLAMA_KERNEL_TILED", "1")
    rng = np.random.default_rng(seed)
    qs, p = quant.quantize((rng.standard_normal((N, K)) * 0.02).astype(np.float32))
    for M, mode, x, y0 in mm_cases(rng, (2, 9, 16), N, K):
        if mode != 2:
            yield qs, p, M, mode, x, y0


def wide_rel_err(y, x, qs, p, mode, y0):
    """relative error of a wide matmul's output against the reference on its 1,024 rows at each end"""
    N = qs.shape[0]
    sel = np.r_[0:1024, N - 1024:N]
    ref = mm_ref(x, qs[sel], p[sel], mode, None if y0 is None else y0[:, sel])
    return R.rel_err(y[:, sel].astype(np.float64), ref)


def check_tiled_form_switch(N, K, seed, env, form, monkeypatch):
    """The tiled small-batch kernel on a random N x K matrix at 2, 9 and 16 rows, plain, residual-add and fp16
    outputs: with env unset the kernel form `form` runs, with env=0 the plain `k_gemv_tiled`, the same bits both ways
    and the reference's (checked on 1,024 rows at each end)."""
    for qs, p, M, mode, x, y0 in tiled_wide_cases(N, K, seed, monkeypatch):
        ys = []
        for v, want in (("", form), ("0", "k_gemv_tiled")):
            monkeypatch.setenv(env, v)
            y, _, kernel = _C.cuda_matmul(x, qs, p, mode=mode, variant=0, y=y0, kernel=True)
            assert kernel == want, (env, M, mode, v, kernel)
            ys.append(y)
        assert np.array_equal(ys[0], ys[1]), (env, M, mode)
        assert wide_rel_err(ys[0], x, qs, p, mode, y0) < 5e-3, (env, M, mode)


@pytest.mark.parametrize("K", [2048, 3072])
def test_tiled_wide_matrix_several_units(K, monkeypatch):
    """A matrix as wide as an LM head at 2-16 rows on the tiled small-batch kernel: each warp runs the whole K of
    several 16-row units in its grid-stride loop (N gives every warp at least two units on this card, and the last
    block fewer warps' units than the others), plain, residual-add and fp16 outputs against the reference (checked
    on 1,024 rows at each end). (The cases session 32's x-sum reuse, reverted in v85, was tested on.)"""
    sms = _C.build_info()["sm_count"]
    N = 16 * (16 * sms + 16 * sms // 3 + 5)
    for qs, p, M, mode, x, y0 in tiled_wide_cases(N, K, K + 77, monkeypatch):
        y, _, kernel = _C.cuda_matmul(x, qs, p, mode=mode, variant=0, y=y0, kernel=True)
        assert kernel == "k_gemv_tiled", (M, mode, kernel)
        assert wide_rel_err(y, x, qs, p, mode, y0) < 5e-3, (M, mode)


@pytest.mark.parametrize("K", [2048, 3072])
def test_tiled_duo_units(K, monkeypatch):
    """Two consecutive 16-row blocks a unit of the tiled small-batch kernel (plain outputs, 2-16 rows): on a matrix
    wide enough for the default rule (every warp of a full grid a duo unit or more; N a multiple of 32) it is taken
    and gives the same bits as one block a unit (LLAMA_KERNEL_TILED_DUO=0: each warp still runs the whole K), and
    the reference's (checked on 1,024 rows at each end); forced (=2) on narrow matrices, where each unit's K is
    split over the block's warps, the reference's."""
    sms = _C.build_info()["sm_count"]
    N = 32 * (2 * 8 * sms + 8 * sms // 3 + 5)
    check_tiled_form_switch(N, K, K + 78, "LLAMA_KERNEL_TILED_DUO", "k_gemv_tiled (two row blocks a unit)", monkeypatch)
    monkeypatch.setenv("LLAMA_KERNEL_TILED_DUO", "2")
    for N2, K2 in ((1056, 640), (2048, 8192), (64, 128)):
        for qs, p, M, mode, x, y0 in tiled_wide_cases(N2, K2, N2 + K2 + K, monkeypatch):
            y, _, kernel = _C.cuda_matmul(x, qs, p, mode=mode, variant=0, y=y0, kernel=True)
            assert kernel == "k_gemv_tiled (two row blocks a unit)", (N2, K2, M, mode, kernel)
            assert R.rel_err(y, mm_ref(x, qs, p, mode, y0)) < 5e-3, (N2, K2, M, mode)


@pytest.mark.parametrize("K", [2048, 3072])
def test_tiled_three_blocks(K, monkeypatch):
    """Plain one-block units of the tiled small-batch kernel whose 8-warp blocks would need a second round at two
    blocks an SM (N gives between 2 and 3 units an SM on this card, as the 3B's qkv at 9-16 rows on 132 SMs): by
    default three blocks an SM in one round (80 registers), the same bits as two rounds (LLAMA_KERNEL_TILED_THREE=0)
    and the reference's, at 2, 9 and 16 rows, plain, residual-add and fp16 outputs."""
    sms = _C.build_info()["sm_count"]
    N = 16 * (2 * sms + sms // 2 + 3)
    check_tiled_form_switch(N, K, K + 79, "LLAMA_KERNEL_TILED_THREE", "k_gemv_tiled (three blocks an SM)", monkeypatch)


def test_engine_tiled_early_identical(ckpt_1b_2layers, monkeypatch):
    """The same switch in an engine of 4 sequences (every matrix tiled; rotary, SwiGLU and residual-add
    epilogues, graphs off and on): "0", the default and "1" give the same tokens and logits."""
    toks = [int(t) for t in np.random.default_rng(9).integers(0, 32000, 24)]
    check_launch_switch_identical(ckpt_1b_2layers, "LLAMA_KERNEL_TILED_EARLY", monkeypatch,
                                  [toks, toks[:9], toks[5:], toks[2:17]], values=("0", "", "1"), batch_size=4)


def test_engine_tiled_pair16(ckpt_1b_2layers, monkeypatch):
    """The rotary pairs of the 1B qkv (96 units) on 16-warp blocks, one group a warp (default), or on 8-warp blocks
    (LLAMA_KERNEL_TILED_PAIR16=0), in an engine of 4 sequences and of 16 (one row at a time through the prompts,
    prefill_chunk=1, then 16-row steps), graphs off and on: logits within a few fp16 steps (the 16 K slices of a unit
    are summed in another order than 8, and q, k, v are stored in fp16), and nearly all greedy tokens the same (the
    random-weight model's flat logits have near ties, which such rounding flips; session 40 run 6 saw one sequence
    of 16 part after 5 tokens)."""
    toks = [int(t) for t in np.random.default_rng(12).integers(0, 32000, 24)]
    cases = ((4, [toks, toks[:9], toks[5:], toks[2:17]], {}), (16, [toks[i:] for i in range(16)], {"prefill_chunk": 1}))
    for batch, prompts, kw in cases:
        for graphs in (False, True):
            ids, logits = [], []
            for v in ("0", ""):
                monkeypatch.setenv("LLAMA_KERNEL_TILED_PAIR16", v)
                m = LlamaInference(ckpt_1b_2layers, device="cuda", batch_size=batch, cuda_graphs=graphs, verbose=False,
                                   **kw)
                ids.append(m.generate_ids(prompts, max_new_tokens=12, temperature=0, ignore_eos=True))
                logits.append(m.logits(prompts[0]))
            same = sum(a == b for r0, r1 in zip(*ids) for a, b in zip(r0, r1))
            assert same >= 0.8 * 12 * batch, (batch, graphs, same)
            err = R.rel_err(logits[1].astype(np.float64), logits[0].astype(np.float64))
            assert err < 2e-3, (batch, graphs, err)


def test_engine_norm_trigger_identical(ckpt_1b_2layers, monkeypatch):
    """The RMSNorm kernel before a decode batch's matmuls triggers the next kernel as it starts (default) or at
    its exit (LLAMA_KERNEL_NORM_TRIGGER=0): the same tokens and logits in an engine of 4 sequences."""
    toks = [int(t) for t in np.random.default_rng(10).integers(0, 32000, 24)]
    check_launch_switch_identical(ckpt_1b_2layers, "LLAMA_KERNEL_NORM_TRIGGER", monkeypatch,
                                  [toks, toks[:9], toks[5:], toks[2:17]], batch_size=4)


def test_engine_embed_trigger_identical(ckpt_1b_2layers, monkeypatch):
    """The embedding kernel triggers the first qkv matmul right after its wait (default) or at its exit
    (LLAMA_KERNEL_EMBED_TRIGGER=0): one row and a packed batch of two."""
    toks = [int(t) for t in np.random.default_rng(7).integers(0, 32000, 24)]
    check_launch_switch_identical(ckpt_1b_2layers, "LLAMA_KERNEL_EMBED_TRIGGER", monkeypatch, [toks, toks[:9]],
                                  batch_size=2)


def test_engine_gemv_x_modes_identical(ckpt_1b_2layers, monkeypatch):
    """In the engine (norm prologues, residual adds, SwiGLU, rotary epilogue; one-row steps): x in shared
    memory swizzled and copied (default) and x from global memory (LLAMA_KERNEL_GEMV_XS=0) give the same
    logits bit for bit."""
    toks = list(np.random.default_rng(4).integers(0, 32000, 24))
    got = []
    for xs in ("3", "0"):
        monkeypatch.setenv("LLAMA_KERNEL_GEMV_XS", xs)
        got.append(LlamaInference(ckpt_1b_2layers, device="cuda", prefill_chunk=1, verbose=False).logits(toks))
    assert np.array_equal(got[0], got[1])


def test_engine_gemv_trigger_identical(ckpt_1b_2layers, monkeypatch):
    """One-row GEMVs trigger the next kernel right after their PDL wait (default) or after their main loop
    (LLAMA_KERNEL_GEMV_TRIGGER=0), one row at a time."""
    toks = [int(t) for t in np.random.default_rng(5).integers(0, 32000, 24)]
    check_launch_switch_identical(ckpt_1b_2layers, "LLAMA_KERNEL_GEMV_TRIGGER", monkeypatch, [toks], prefill_chunk=1)


def check_switch_vs_cpu(ckpt, toks, env, monkeypatch):
    """One row at a time (prefill_chunk=1) with the switch env on ("1") and off ("0"): each against the CPU
    engine, the two close to each other but not identical (the paths round differently: identical logits
    would mean the switched path did not run)."""
    cpu = LlamaInference(ckpt, device="cpu", verbose=False).logits(toks)
    got = {}
    for v in ("1", "0"):
        monkeypatch.setenv(env, v)
        got[v] = LlamaInference(ckpt, device="cuda", prefill_chunk=1, verbose=False).logits(toks)
        assert R.rel_err(got[v], cpu) < 2e-2, (env, v)
    assert R.rel_err(got["1"], got["0"]) < 1e-2
    assert not np.array_equal(got["1"], got["0"])


def test_matmul_auto_and_bf16():
    rng = np.random.default_rng(0)
    N, K = 1000, 640
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    from llama_kernel.testing import from_bf16_bits, to_bf16_bits

    wb = to_bf16_bits(w)
    for M in (1, 3, 4, 9, 70):
        x = rng.standard_normal((M, K)).astype(np.float32)
        qs, p = quant.quantize(w)
        y, used = _C.cuda_matmul(x, qs, p)
        assert used == (2 if M <= 4 else 3)
        assert R.rel_err(y, mm_ref(x, qs, p, 0)) < 5e-3
        for mode in (0, 2, 3):
            yb, used = _C.cuda_matmul(x, w_bf16=wb, mode=mode)
            ref = h(x) @ from_bf16_bits(wb).astype(np.float64).T
            if mode == 2:
                g, u = ref[:, :N // 2], ref[:, N // 2:]
                ref = g / (1 + np.exp(-g)) * u
            assert R.rel_err(yb, ref) < 5e-3


def attn_ref(q, k, v, pos, n_heads):
    M = q.shape[0]
    n_kv, L, hd = k.shape
    G = n_heads // n_kv
    out = np.zeros((M, n_heads * hd))
    qq, kk, vv = h(q).reshape(M, n_heads, hd), h(k), h(v)
    for i in range(M):
        for hh in range(n_heads):
            s = kk[hh // G, : pos[i] + 1] @ qq[i, hh] / np.sqrt(hd)
            p = np.exp(s - s.max())
            out[i, hh * hd:(hh + 1) * hd] = (p / p.sum()) @ vv[hh // G, : pos[i] + 1]
    return out


@pytest.mark.parametrize("hd,n_heads,n_kv", [(64, 32, 8), (128, 24, 8), (64, 8, 8), (128, 12, 4), (64, 6, 2), (64, 16, 2), (128, 16, 8)])
@pytest.mark.parametrize("kind", [0, 1, 2, 3])  # plain, split-KV decode, flash prefill, warp per (row, head)
def test_attention(hd, n_heads, n_kv, kind):
    rng = np.random.default_rng(hd * 7 + n_heads + kind)
    for L, pos in [(1, [0]), (64, [63]), (65, [0, 62, 63, 64]), (200, [5, 130, 199]), (1000, [999, 511, 512, 513])]:
        if kind == 2:
            p0 = max(0, L - 70)
            pos = list(range(p0, L))
        q = rng.standard_normal((len(pos), n_heads * hd)).astype(np.float32)
        k = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
        v = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
        out = _C.cuda_attention(q, k, v, pos, n_heads, kind)
        assert np.all(np.isfinite(out))
        err = R.rel_err(out, attn_ref(q, k, v, pos, n_heads))
        assert err < 4e-3, (L, kind, err)


@pytest.mark.parametrize("hd,n_heads,n_kv", [(64, 32, 8), (128, 24, 8)])
def test_decode_attention_many_splits(hd, n_heads, n_kv):
    """One row at a long position: 64 KV splits of which 52 hold positions, merged by the last one
    (two splits per lane in the merge)."""
    rng = np.random.default_rng(hd + n_heads)
    L, pos = 16500, [16499]
    q = rng.standard_normal((1, n_heads * hd)).astype(np.float32)
    k = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
    v = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
    out = _C.cuda_attention(q, k, v, pos, n_heads, 1)
    assert R.rel_err(out, attn_ref(q, k, v, pos, n_heads)) < 4e-3


def rmsnorm_ref(x, w, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * np.asarray(w, np.float64)


@pytest.mark.parametrize("M,dim", [(1, 2048), (37, 2048), (5, 3072), (3, 260), (2, 4), (3, 4096), (4, 4100), (3, 8192)])
def test_rmsnorm_kernel(M, dim):
    """The engine's RMSNorm kernel (prefill, and any matmul without the norm prologue; rows of up to 4,096
    held in registers, longer ones read twice) against float64:
    its error at most 2x that of rounding the exact result to fp16 (its output precision); rows of tiny,
    huge and zero inputs (eps keeps the zero row at 0)."""
    rng = np.random.default_rng(M * 31 + dim)
    x = rng.standard_normal((M, dim)).astype(np.float32)
    x[0] *= 1e-3
    if M > 2:
        x[1] *= 1e3
        x[2] = 0.0
    w = rng.standard_normal(dim).astype(np.float32)
    out = _C.cuda_rmsnorm(x, w, 1e-5)
    ref = rmsnorm_ref(x, w, 1e-5)
    assert out.shape == (M, dim) and np.all(np.isfinite(out))
    for r in range(M):
        floor = R.rel_err(h(ref[r]), ref[r])
        assert R.rel_err(out[r], ref[r]) <= 2 * floor + 1e-6, r
    if M > 2:
        assert not out[2].any()


def rope_kv_ref(qkv, pos, slot, n_heads, n_kv, cos, sin, n_slots):
    """float64 rotary (HF half split) of the q and k heads, and the K/V cache append"""
    M = qkv.shape[0]
    S, half = cos.shape
    hd = 2 * half
    q = h(qkv).reshape(M, n_heads + 2 * n_kv, hd)
    out = q.copy()
    kc = np.zeros((n_slots, n_kv, S, hd))
    vc = np.zeros((n_slots, n_kv, S, hd))
    for r in range(M):
        c, s = cos[pos[r]].astype(np.float64), sin[pos[r]].astype(np.float64)
        a, b = q[r, :n_heads + n_kv, :half], q[r, :n_heads + n_kv, half:]
        rot = np.concatenate([a * c - b * s, b * c + a * s], axis=1)
        out[r, :n_heads] = rot[:n_heads]
        kc[slot[r], :, pos[r]] = rot[n_heads:]
        vc[slot[r], :, pos[r]] = q[r, n_heads + n_kv:]
    return out.reshape(M, -1), kc, vc


@pytest.mark.parametrize("vec", ["0", "1"])
@pytest.mark.parametrize("n_heads,n_kv,hd", [(32, 8, 64), (24, 8, 128), (8, 8, 64), (6, 2, 128), (12, 4, 32),
                                              (4, 2, 24)])
def test_rope_kv_kernel(n_heads, n_kv, hd, vec, monkeypatch):
    """The engine's rotary + KV-append kernel (prefill, and any qkv matmul without the rotary epilogue)
    against float64 with the Llama 3 (llama3-scaled) tables: q rotated in place, k and v of the qkv rows
    untouched, rotated k and v at each row's slot and position (the first and the last position of the
    cache, several slots), nothing else written; GQA ratios 1, 3, 4. Errors at most 2x those of rounding
    the exact results to fp16. Both forms: 16-byte accesses (the default where head_dim is a multiple of
    16) and 2-byte ones (LLAMA_KERNEL_ROPE_VEC=0, and every other head_dim)."""
    from llama_kernel.config import PRESETS

    monkeypatch.setenv("LLAMA_KERNEL_ROPE_VEC", vec)

    rng = np.random.default_rng(n_heads * 3 + hd)
    name = {64: "llama-3.2-1b", 128: "llama-3.2-3b"}.get(hd)
    inv = _C.rope_inv_freq(PRESETS[name].to_core()) if name else 1.0 / (500000.0 ** (np.arange(0, hd, 2) / hd))
    S, n_slots = 300, 3
    ang = np.arange(S)[:, None] * np.asarray(inv)[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    pairs = [(0, 0), (0, S - 1), (1, 0), (2, 17), (1, 299), (2, 128), (0, 64), (1, 63)]
    slot, pos = [p[0] for p in pairs], [p[1] for p in pairs]
    qkv = rng.standard_normal((len(pairs), (n_heads + 2 * n_kv) * hd)).astype(np.float32)
    out, kc, vc = _C.cuda_rope_kv(qkv, pos, slot, n_heads, n_kv, cos, sin, n_slots)
    ref_out, ref_kc, ref_vc = rope_kv_ref(qkv, pos, slot, n_heads, n_kv, cos, sin, n_slots)
    assert kc.shape == vc.shape == (n_slots, n_kv, S, hd)
    qd = n_heads * hd
    assert np.array_equal(out[:, qd:], h(qkv)[:, qd:].astype(np.float32))  # k, v of the rows untouched
    assert R.rel_err(out[:, :qd], ref_out[:, :qd]) <= 2 * R.rel_err(h(ref_out[:, :qd]), ref_out[:, :qd]) + 1e-6
    assert R.rel_err(kc, ref_kc) <= 2 * R.rel_err(h(ref_kc), ref_kc) + 1e-6
    assert np.array_equal(vc, ref_vc.astype(np.float32))  # v is copied, not computed
    written = np.zeros((n_slots, S), bool)
    written[slot, pos] = True
    assert not kc.transpose(0, 2, 1, 3)[~written].any() and not vc.transpose(0, 2, 1, 3)[~written].any()


def test_norm_rope_ops_reject_bad_arguments():
    """Shape errors (checked before any GPU work) and range errors name the argument (ValueError)."""
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="w \\[dim\\]"):
        _C.cuda_rmsnorm(x, np.ones(7, np.float32), 1e-5)
    tab = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="cuda_rope_kv"):
        _C.cuda_rope_kv(np.ones((2, 23), np.float32), [0, 1], [0, 0], 2, 2, tab, tab, 1)
    with pytest.raises(ValueError, match="cuda_rope_kv"):
        _C.cuda_rope_kv(np.ones((2, 24), np.float32), [0, 1], [0, 0], 3, 2, tab, tab, 1)
    with pytest.raises(ValueError, match="position 4"):
        _C.cuda_rope_kv(np.ones((2, 24), np.float32), [0, 4], [0, 0], 2, 2, tab, tab, 1)


@pytest.mark.parametrize("hd,n_heads,n_kv", [(64, 32, 8), (128, 24, 8), (64, 6, 2)])
def test_decode_attention_early_copies(hd, n_heads, n_kv, monkeypatch):
    """The decode kernels copy a block's first tile before the PDL wait except the rows from the
    row's position on (which the qkv matmul just wrote): the same outputs, bit for bit, as with every
    copy after the wait (LLAMA_KERNEL_ATTN_PREFETCH=0), on both kernels (tensor cores at head_dim 64,
    CUDA cores at 128), for positions at, before and past a tile boundary and several splits; with
    short rows in one split (the default for few blocks at head_dim 64) and split by 64 positions."""
    rng = np.random.default_rng(hd + n_kv)
    L, pos = 1000, [0, 1, 62, 63, 64, 65, 130, 255, 256, 999]
    q = rng.standard_normal((len(pos), n_heads * hd)).astype(np.float32)
    k = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
    v = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
    ref = attn_ref(q, k, v, pos, n_heads)
    for one_split in (None, "0", "1000"):
        if one_split is None:
            monkeypatch.delenv("LLAMA_KERNEL_ATTN_ONE_SPLIT", raising=False)
        else:
            monkeypatch.setenv("LLAMA_KERNEL_ATTN_ONE_SPLIT", one_split)
        monkeypatch.delenv("LLAMA_KERNEL_ATTN_PREFETCH", raising=False)
        on = _C.cuda_attention(q, k, v, pos, n_heads, 1)
        monkeypatch.setenv("LLAMA_KERNEL_ATTN_PREFETCH", "0")
        off = _C.cuda_attention(q, k, v, pos, n_heads, 1)
        assert np.array_equal(on, off), one_split
        assert R.rel_err(on, ref) < 4e-3, one_split
    # the early PDL trigger (default at one row only) changes when the next kernel may start, not what
    # this one computes
    monkeypatch.setenv("LLAMA_KERNEL_ATTN_TRIGGER", "1")
    assert np.array_equal(_C.cuda_attention(q, k, v, pos, n_heads, 1), on)


@pytest.mark.parametrize("kernel", ["simt", "tc"])
def test_decode_attention_both_kernels(kernel):
    """The decode kernel the default does not pick for a head size (tensor cores at head_dim 64, CUDA
    cores at 128) is still an A/B option (LLAMA_KERNEL_ATTN_DECODE, read once per process): both,
    on every head size and GQA ratio, against the float64 reference in a fresh process."""
    import subprocess
    import sys

    code = f"""
import sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import numpy as np, reference as R
from test_cuda import attn_ref
from llama_kernel import _C
rng = np.random.default_rng(5)
for hd, n_heads, n_kv in [(64, 32, 8), (128, 24, 8), (64, 8, 8), (128, 16, 2), (64, 6, 2), (64, 16, 2)]:
    for L, pos in [(65, [0, 62, 63, 64]), (1000, [999, 511, 16]), (9000, [8999])]:
        q = rng.standard_normal((len(pos), n_heads * hd)).astype(np.float32)
        k = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
        v = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
        err = R.rel_err(_C.cuda_attention(q, k, v, pos, n_heads, 1), attn_ref(q, k, v, pos, n_heads))
        assert err < 4e-3, (hd, n_heads, n_kv, L, err)
print("ok")
"""
    env = dict(os.environ, LLAMA_KERNEL_ATTN_DECODE=kernel)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_decode_kernel_by_length_graphs(tmp_path):
    """Head_dim 128 at few rows: the tensor-core decode kernel while every row has at most
    LLAMA_KERNEL_ATTN_TC_LEN positions (48 here, read once per process), the CUDA-core one after, so a
    batch's decode crosses from one to the other; the step graphs are keyed by that choice. Graphs and
    eager launches give the same tokens (batch 1 and 2, greedy and sampled) across the switch, and the
    last logits of the eager engine match the CPU engine's."""
    import subprocess
    import sys

    ckpt = make_random_checkpoint(str(tmp_path / "3b"), "llama-3.2-3b", seed=21, std=0.02, num_hidden_layers=1,
                                  vocab_size=32000)
    code = f"""
import numpy as np
from llama_kernel import LlamaInference
prompts = [list(range(3, 23)), list(range(40, 71))]
outs = []
for graphs in (True, False):
    for B in (1, 2):
        m = LlamaInference({ckpt!r}, device="cuda", batch_size=B, cuda_graphs=graphs, verbose=False)
        outs.append(m.generate_ids(prompts[:B], max_new_tokens=60, temperature=0, ignore_eos=True))
        outs.append(m.generate_ids(prompts[:B], max_new_tokens=60, temperature=0.9, seed=3, ignore_eos=True))
        del m
assert outs[:4] == outs[4:], "graphs and eager differ"
toks = prompts[0] + list(outs[4][0][:50])
gpu = LlamaInference({ckpt!r}, device="cuda", prefill_chunk=1, cuda_graphs=False, verbose=False).logits(toks)
cpu = LlamaInference({ckpt!r}, device="cpu", verbose=False).logits(toks)
err = float(np.abs(gpu - cpu).max() / np.abs(cpu).max())
assert err < 2e-2, err
print("ok")
"""
    env = dict(os.environ, LLAMA_KERNEL_ATTN_TC_LEN="48")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


# form: (its switches, the kernel that runs: one name or {head_dim: name})
QR = "k_attn_prefill_wgt (Q in registers)"  # head_dim 64's TMA form since v80
WG_FORMS = {"wg": ({"LLAMA_KERNEL_FA_WG": "1"}, "k_attn_prefill_wg"),
            "wgt": ({"LLAMA_KERNEL_FA_WG": "2"}, {64: QR, 128: "k_attn_prefill_wgt (3 warpgroups, 128-key tiles)"}),
            "wgtq0": ({"LLAMA_KERNEL_FA_WG": "2", "LLAMA_KERNEL_FA_QREG": "0"},
                      {64: "k_attn_prefill_wgt", 128: "k_attn_prefill_wgt (3 warpgroups, 128-key tiles)"}),
            "wgt2": ({"LLAMA_KERNEL_FA_WG": "2", "LLAMA_KERNEL_FA_NWG": "2"},
                     {64: QR, 128: "k_attn_prefill_wgt (128-key tiles)"}),
            "wgt64": ({"LLAMA_KERNEL_FA_WG": "2", "LLAMA_KERNEL_FA_BK": "64"}, {64: QR, 128: "k_attn_prefill_wgt"}),
            "wgt364": ({"LLAMA_KERNEL_FA_WG": "2", "LLAMA_KERNEL_FA_BK": "64", "LLAMA_KERNEL_FA_NWG": "3"},
                       {64: QR, 128: "k_attn_prefill_wgt (3 warpgroups)"})}


@pytest.mark.parametrize("form", ["wg-1", "wg-2", "wgt-1", "wgt-2", "wgtq0-1", "wgtq0-2", "wgt2-1", "wgt2-2", "wgt64-1",
                                  "wgt64-2", "wgt364-2", "mma-1-1", "mma-2-1", "mma-1-2", "mma-2-2"])
def test_prefill_attention_forms(form):
    """Every form of the flash prefill kernel, in a fresh process (LLAMA_KERNEL_FA_HPB is read once by the
    mma.sync kernel), against float64, on GQA groups odd and even, head_dim 64 and 128, chunks starting at
    position 0 and later, partial query blocks and partial key tiles; and which kernel ran.
    Hopper wgmma kernels (an sm_90a build), H heads a block (1: forced by LLAMA_KERNEL_FA_HPB=1; 2: where the
    group is even): "wgt-H" the TMA form (the default; at head_dim 64 with Q in registers and the row sums on
    the tensor cores, v80; at head_dim 128 128-key tiles in blocks of 3 warpgroups, 192 query rows of one head,
    whatever H), "wgtq0-H" head_dim 64's TMA form as before v80 (LLAMA_KERNEL_FA_QREG=0), "wgt2-H" the TMA
    form with blocks of 2 warpgroups at head_dim 128 (LLAMA_KERNEL_FA_NWG=2), "wgt64-H" 64-key tiles
    everywhere (LLAMA_KERNEL_FA_BK=64), "wgt364-H" that with 3 warpgroups at head_dim 128
    (LLAMA_KERNEL_FA_NWG=3), "wg-H" the cp.async form (LLAMA_KERNEL_FA_WG=1).
    "mma-H-MT": the mma.sync kernel (LLAMA_KERNEL_FA_WG=0),
    H heads a block (odd groups always take one), MT m16 tiles of query rows a warp (2: LLAMA_KERNEL_FA_MT=2,
    128-row blocks, head_dim 64)."""
    import subprocess
    import sys

    parts = form.split("-")
    env = dict(os.environ, LLAMA_KERNEL_FA_HPB=parts[1])
    if parts[0] in WG_FORMS:
        if not _C.build_info().get("wgmma"):
            pytest.skip("no sm_90a GPU (the wgmma kernel needs compute capability 9.0 and an sm_90a build)")
        switches, want = WG_FORMS[parts[0]]
        env.pop("LLAMA_KERNEL_FA_BK", None)
        env.pop("LLAMA_KERNEL_FA_NWG", None)
        env.pop("LLAMA_KERNEL_FA_QREG", None)
        env.update(switches)
    else:
        env.update(LLAMA_KERNEL_FA_WG="0", LLAMA_KERNEL_FA_MT=parts[2])
        want = "k_attn_prefill"
    code = f"""
import sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import numpy as np, reference as R
from test_cuda import attn_ref
from llama_kernel import _C
rng = np.random.default_rng(9)
for hd, n_heads, n_kv in [(64, 32, 8), (128, 24, 8), (128, 16, 8), (64, 16, 2), (64, 8, 8), (64, 6, 2)]:
    for L, p0 in [(70, 0), (300, 0), (1000, 930), (200, 37), (129, 0), (577, 64)]:
        pos = list(range(p0, L))
        q = rng.standard_normal((len(pos), n_heads * hd)).astype(np.float32)
        k = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
        v = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
        out, kernel = _C.cuda_attention(q, k, v, pos, n_heads, 2, True)
        want = {want!r}
        assert kernel == (want[hd] if isinstance(want, dict) else want), (hd, n_heads, L, kernel)
        assert np.all(np.isfinite(out)), (hd, n_heads, n_kv, L, p0)
        err = R.rel_err(out, attn_ref(q, k, v, pos, n_heads))
        assert err < 4e-3, (hd, n_heads, n_kv, L, p0, err)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_prefill_attention_long_chunk():
    rng = np.random.default_rng(1)
    n_heads, n_kv, hd, L = 8, 2, 64, 300
    pos = list(range(L))
    q = rng.standard_normal((L, n_heads * hd)).astype(np.float32)
    k = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
    v = rng.standard_normal((n_kv, L, hd)).astype(np.float32)
    ref = attn_ref(q, k, v, pos, n_heads)
    for kind in (0, 2):
        assert R.rel_err(_C.cuda_attention(q, k, v, pos, n_heads, kind), ref) < 4e-3


def test_sampler_matches_cpu():
    rng = np.random.default_rng(2)
    B, V = 64, 128256
    logits = (rng.standard_normal((B, V)) * 3).astype(np.float32)
    pos = list(range(10, 10 + B))
    seen = [rng.integers(0, V, 30).tolist() for _ in range(B)]
    # top-k up to 1024 runs on the kept list; top_k=0 or above 1024 (and ties past 1024 kept) over the vocabulary
    for kw in [dict(), dict(temperature=0.6, top_p=0.9, top_k=50), dict(temperature=1.0),
               dict(temperature=0.8, top_k=5, repetition_penalty=1.3), dict(temperature=1.2, top_p=0.5),
               dict(temperature=0.7, top_k=1024, top_p=0.95), dict(temperature=0.7, top_k=2000, top_p=0.95),
               dict(temperature=0.9, top_k=0, top_p=0.9, repetition_penalty=1.1)]:
        g = _C.cuda_sample(logits, pos, seed=11, seen=seen, **kw)
        c = _C.sample_cpu(logits, pos, seed=11, seen=seen, **kw)
        agree = np.mean(g == c)
        assert agree >= 0.97, (kw, agree)  # float summation order may move a draw at a boundary


@pytest.mark.parametrize("B,V", [(1, 128256), (2, 128256), (3, 32000), (5, 40001), (1, 8200)])
def test_sampler_split_argmax_identical(B, V, monkeypatch):
    """A row's penalty and argmax pass shared by several blocks (the last to finish takes the argmax from
    their keys) picks the same tokens as one block (LLAMA_KERNEL_SAMPLE_SPLIT=0) and as the CPU: ties across
    blocks (lowest id), the maximum in the last block's slice or past the last whole slice, -0 against +0,
    NaN, a row of -inf (greedy); greedy, sampled and with a repetition penalty (each block its slice's)."""
    rng = np.random.default_rng(B * V)
    base = (rng.standard_normal((B, V)) * 3).astype(np.float32)
    base[0, [7, V // 2, V - 1]] = 50.0  # tie across slices: the lowest id wins
    if B > 1:
        base[1, V - 1] = 60.0  # the last logit
    logits = base.copy()  # greedy only: rows of -inf, NaN and zeros
    if B > 2:
        logits[2, :] = -np.inf
        logits[2, 5] = np.nan
    if B > 3:
        logits[3, :] = -0.0
        logits[3, V // 3] = 0.0
        logits[3, 3] = np.nan
    pos = list(range(B))
    seen = [rng.integers(0, V, 40).tolist() + [7, V - 1] for _ in range(B)]
    for kw in [dict(), dict(repetition_penalty=1.5), dict(temperature=0.8, top_k=50, top_p=0.9),
               dict(temperature=1.0, top_k=0, repetition_penalty=1.2)]:
        got = []
        for split in ("0", ""):
            monkeypatch.setenv("LLAMA_KERNEL_SAMPLE_SPLIT", split)
            got.append(_C.cuda_sample(base if kw.get("temperature") else logits, pos, seed=9, seen=seen, **kw))
        assert np.array_equal(got[0], got[1]), (kw, got)
        if not kw.get("temperature"):
            c = _C.sample_cpu(logits, pos, seed=9, seen=seen, **kw)
            rows = [b for b in range(B) if b != 2]  # (a row of -inf and NaN: whatever both GPU paths agree on)
            assert np.array_equal(got[1][rows], c[rows]), (kw, got[1], c)


def topk_split_rows(kind, B, V, rng):
    """Logits for the top-k split tests: random of a spread, a confident row (one token far above the rest, so
    the top-k reaches weights under 2^-15 of the largest), logits tied in a few values (more candidates than a
    block may hand on), a row mostly -inf, a row with a NaN."""
    if kind == "confident":
        x = (rng.standard_normal((B, V)) * 2).astype(np.float32)
        x[np.arange(B), rng.integers(0, V, B)] = 40.0
    elif kind == "tied":
        x = rng.integers(0, 3, (B, V)).astype(np.float32)
    elif kind == "mostly_inf":
        x = np.full((B, V), -np.inf, np.float32)
        for b in range(B):  # 70 finite logits, some in each of a few slices, two of them tied
            idx = rng.choice(V, 70, replace=False)
            x[b, idx] = rng.standard_normal(70).astype(np.float32)
            x[b, idx[1]] = x[b, idx[0]]
    elif kind == "nan":
        x = (rng.standard_normal((B, V)) * 3).astype(np.float32)
        x[:, V // 2] = np.nan
    else:
        x = (rng.standard_normal((B, V)) * float(kind)).astype(np.float32)
    return x


@pytest.mark.parametrize("B,V", [(1, 128256), (3, 128256), (16, 128256), (2, 40001), (1, 8200)])
def test_sampler_split_paths(B, V, monkeypatch):
    """The sampler split (the row's blocks hand on candidates or masses; LLAMA_KERNEL_SAMPLE_TOPK_SPLIT=0 turns
    it off) against the one-block path. Top-k 1-64: the same tokens, and the split is taken exactly where it
    may be (finite logits, no tie at a block's cut; tied logits overflow a block's candidates, a NaN sends the
    row the old way; top_k 65 and one block a row do not split). Top-p without top-k: the split wherever the
    candidates hold the nucleus (peaked rows, a row mostly -inf), else the old way; temperature alone: the split
    on every row without a NaN. Those two sum the row's mass in another order, so a draw may move at a rounding
    boundary: checked for agreement on peaked rows, and for distribution below. Also a vocabulary that is not
    a multiple of 4 (scalar loads) and one of two slices."""
    rng = np.random.default_rng(B * 7 + V)
    pos = list(range(B))
    seen = [rng.integers(0, V, 30).tolist() for _ in range(B)]
    topk = [dict(temperature=0.6, top_k=50, top_p=0.9), dict(temperature=1.0, top_k=1),
            dict(temperature=0.8, top_k=64), dict(temperature=0.7, top_k=2, top_p=0.5),
            dict(temperature=0.6, top_k=50, top_p=0.9, repetition_penalty=1.3), dict(temperature=0.6, top_k=65)]
    other = [dict(temperature=0.6, top_k=0, top_p=0.9),
             dict(temperature=0.6, top_k=0, top_p=0.5, repetition_penalty=1.2),
             dict(temperature=0.8, top_k=0), dict(temperature=1.0, top_k=V)]
    agree = []
    for kind in ("0.5", "4", "confident", "tied", "mostly_inf", "nan"):
        x = topk_split_rows(kind, B, V, rng)
        for kw in topk + other:
            got = {}
            for v in ("0", ""):
                monkeypatch.setenv("LLAMA_KERNEL_SAMPLE_TOPK_SPLIT", v)
                got[v] = _C.cuda_sample(x, pos, seed=11, seen=seen, paths=True, **kw)
            (t0, p0), (t1, p1) = got["0"], got[""]
            assert np.all(p0 != 1), (kind, kw, p0)
            assert np.all((t1 >= 0) & (t1 < V)), (kind, kw, t1)
            if 0 < kw["top_k"] < V:
                assert np.array_equal(t0, t1), (kind, kw, t0, t1, p1)
                may_split = kw["top_k"] <= 64 and kind in ("0.5", "4", "confident", "mostly_inf")
                assert np.all((p1 == 1) == may_split), (kind, kw, p1)
            elif kw.get("top_p", 1.0) < 1.0:
                if kind in ("4", "confident", "mostly_inf"):
                    assert np.all(p1 == 1), (kind, kw, p1)
                if kind in ("tied", "nan", "0.5"):
                    assert np.all(p1 != 1), (kind, kw, p1)
            else:
                assert np.all((p1 == 1) == (kind != "nan")), (kind, kw, p1)
            if kind in ("4", "confident") and not (0 < kw["top_k"] < V):
                agree.extend((t0 == t1).tolist())
            if kind == "mostly_inf":  # only finite logits are drawn
                assert np.all(np.isfinite(x[np.arange(B), t1])), (kw, t1)
            if B >= 16 and kind in ("4", "confident"):
                c = _C.sample_cpu(x, pos, seed=11, seen=seen, **kw)
                assert np.mean(c == t1) >= 0.9, (kind, kw, c, t1)
    assert np.mean(agree) >= 0.9, np.mean(agree)
    # one block a row (the split needs several): LLAMA_KERNEL_SAMPLE_SPLIT=0
    monkeypatch.setenv("LLAMA_KERNEL_SAMPLE_TOPK_SPLIT", "")
    monkeypatch.setenv("LLAMA_KERNEL_SAMPLE_SPLIT", "0")
    x = topk_split_rows("4", B, V, rng)
    for kw in (dict(top_k=50), dict(top_k=0, top_p=0.9), dict(top_k=0)):
        _, p = _C.cuda_sample(x, pos, seed=1, temperature=0.6, paths=True, **kw)
        assert np.all(p != 1), (kw, p)


@pytest.mark.parametrize("top_k,top_p", [(10, 0.95), (0, 0.9), (0, 1.0)])
def test_sampler_split_distribution(top_k, top_p):
    """The split's draws follow the sampling distribution (as test_sampler_distribution_on_gpu for the one-block
    paths): top-k with top-p, top-p alone (the nucleus from the blocks' candidates), temperature alone (the
    slice from the blocks' masses, then the token within it). Rows of 128,256 logits with a head of 12 tokens
    spread over several slices above a low tail; 4,000 draws in calls of 16 rows (the split holds at most 32
    rows a call)."""
    from test_sampling import hf_probs

    rng = np.random.default_rng(2)
    V, B, calls = 128256, 16, 250
    logits = (rng.standard_normal(V) - 4.0).astype(np.float32)
    logits[rng.choice(V, 12, replace=False)] = np.linspace(6, 9, 12, dtype=np.float32)
    want = hf_probs(logits, 0.7, top_k, top_p)
    x = np.tile(logits, (B, 1))
    toks = []
    for i in range(calls):
        t, paths = _C.cuda_sample(x, list(range(B)), temperature=0.7, top_k=top_k, top_p=top_p, seed=100 + i,
                                  paths=True)
        assert np.all(paths == 1), paths
        toks.append(t)
    n = B * calls
    counts = np.bincount(np.concatenate(toks), minlength=V)
    assert np.all(counts[want == 0] == 0)
    assert np.all(np.abs(counts - n * want) <= 5 * np.sqrt(n * want * (1 - want)) + 5)


@pytest.mark.parametrize("kind", ["flat", "three_values", "steep"])
def test_sampler_flat_and_tied_logits(kind):
    """Near-flat logits put every key in one or two radix bins (the warp-summed histogram path);
    logits with three values tie at the k-th key for far more than 1024 tokens (the kept list
    overflows to the vocabulary path); steep logits leave fewer than k keys in the top-k count's
    first window (weights >= 2^-15 of the largest), so that byte is counted again over all bins.
    Each against the CPU sampler."""
    rng = np.random.default_rng(4)
    B, V = 32, 128256
    if kind == "flat":
        logits = (rng.standard_normal((B, V)) * 1e-3).astype(np.float32)
    elif kind == "steep":
        logits = (rng.standard_normal((B, V)) * 30).astype(np.float32)
    else:
        logits = rng.integers(0, 3, (B, V)).astype(np.float32)
    pos = list(range(B))
    for kw in [dict(temperature=0.6, top_p=0.9, top_k=50), dict(temperature=1.0, top_p=0.9, top_k=0),
               dict(temperature=0.8, top_k=3000)]:
        g = _C.cuda_sample(logits, pos, seed=5, **kw)
        c = _C.sample_cpu(logits, pos, seed=5, **kw)
        assert np.all((g >= 0) & (g < V))
        # flat: ~100k near-equal weights, where float sums (GPU) and double sums (CPU) may move a draw
        # or the top-p cut by a token; tied values sum exactly
        assert np.mean(g == c) >= (0.75 if kind == "flat" else 0.95), (kind, kw, np.mean(g == c))


def test_sampler_distribution_on_gpu():
    from test_sampling import hf_probs

    rng = np.random.default_rng(0)
    V, n = 40, 20000
    logits = (rng.standard_normal(V) * 2).astype(np.float32)
    want = hf_probs(logits, 0.7, 10, 0.9)
    toks = _C.cuda_sample(np.tile(logits, (n, 1)), list(range(n)), temperature=0.7, top_k=10, top_p=0.9, seed=3)
    counts = np.bincount(toks, minlength=V)
    assert np.all(counts[want == 0] == 0)
    assert np.all(np.abs(counts - n * want) <= 5 * np.sqrt(n * want * (1 - want)) + 5)
    # the vocabulary path (no top-k): same check
    want = hf_probs(logits, 0.7, 0, 0.9)
    toks = _C.cuda_sample(np.tile(logits, (n, 1)), list(range(n)), temperature=0.7, top_k=0, top_p=0.9, seed=4)
    counts = np.bincount(toks, minlength=V)
    assert np.all(counts[want == 0] == 0)
    assert np.all(np.abs(counts - n * want) <= 5 * np.sqrt(n * want * (1 - want)) + 5)


@pytest.fixture(scope="module")
def ckpt_1b_2layers(tmp_path_factory):
    return make_random_checkpoint(str(tmp_path_factory.mktemp("l1b")), "llama-3.2-1b", seed=3, std=0.02,
                                  num_hidden_layers=2, vocab_size=32000)


@pytest.mark.parametrize("quantization", ["int4", "none"])
def test_engine_gpu_vs_cpu_logits(ckpt_1b_2layers, quantization):
    toks = list(np.random.default_rng(0).integers(0, 32000, 40))
    cpu = LlamaInference(ckpt_1b_2layers, device="cpu", quantization=quantization, verbose=False).logits(toks)
    gpu_m = LlamaInference(ckpt_1b_2layers, device="cuda", quantization=quantization, verbose=False)
    gpu = gpu_m.logits(toks)
    err = R.rel_err(gpu, cpu)
    print(f"GPU vs CPU logits ({quantization}): relative error {err:.2e}")
    assert err < 2e-2
    # decode path (one token at a time through the KV cache) agrees with the prefill path
    out = gpu_m.generate_ids(toks[:20], max_new_tokens=1, temperature=0)[0]
    assert out[0] == int(np.argmax(gpu[19]))


def test_engine_vs_float64_reference(tmp_path):
    d = make_random_checkpoint(str(tmp_path / "t"), "tiny", seed=5, std=0.05)
    cfg = ModelConfig.from_file(os.path.join(d, "config.json"))
    toks = list(range(1, 300, 7))
    w = load_safetensors(os.path.join(d, "model.safetensors"))
    for q in ("none", "int4"):
        got = LlamaInference(d, device="cuda", quantization=q, verbose=False).logits(toks)
        ref = R.forward(R.engine_weights(w, cfg, q), cfg, toks)
        assert R.rel_err(got, ref) < 2e-2


def test_transformers_reference(ckpt_1b_2layers):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    toks = list(np.random.default_rng(1).integers(0, 32000, 32))
    model = transformers.LlamaForCausalLM.from_pretrained(ckpt_1b_2layers, torch_dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        ref = model(torch.tensor([toks]).cuda()).logits[0].double().cpu().numpy()
    del model
    ours = LlamaInference(ckpt_1b_2layers, device="cuda", quantization="none", verbose=False).logits(toks)
    err = R.rel_err(ours, ref)
    print(f"transformers LlamaForCausalLM (fp32) vs llama_kernel quantization='none' (CUDA): rel err {err:.2e}")
    assert err < 2e-2


def test_graph_and_eager_identical(ckpt_1b_2layers):
    prompts = [list(range(1, 12)), list(range(50, 53)), list(range(100, 140)), [7]]
    outs = []
    for graphs in (True, False):
        m = LlamaInference(ckpt_1b_2layers, device="cuda", batch_size=4, cuda_graphs=graphs, verbose=False)
        outs.append(m.generate_ids(prompts, max_new_tokens=24, temperature=0, ignore_eos=True))
        outs.append(m.generate_ids(prompts, max_new_tokens=24, temperature=0.8, top_p=0.9, seed=5, ignore_eos=True))
    assert outs[0] == outs[2] and outs[1] == outs[3]


@pytest.mark.parametrize("chunk", [None, 5])  # packed prefill: one chunk for all prompts, or prompts across chunks
def test_batch_equals_single_on_gpu(ckpt_1b_2layers, chunk):
    prompts = [list(range(1, 12)), list(range(50, 53)), list(range(200, 207))]
    m1 = LlamaInference(ckpt_1b_2layers, device="cuda", verbose=False)
    kw = {"prefill_chunk": chunk} if chunk else {}
    m4 = LlamaInference(ckpt_1b_2layers, device="cuda", batch_size=4, verbose=False, **kw)
    single = [m1.generate_ids(p, max_new_tokens=12, temperature=0, ignore_eos=True)[0] for p in prompts]
    assert m4.generate_ids(prompts, max_new_tokens=12, temperature=0, ignore_eos=True) == single


@pytest.mark.parametrize("chunk", [None, 50])  # one chunk for all prompts, or prompts across chunks
def test_packed_prefill_attention(ckpt_1b_2layers, monkeypatch, chunk):
    """A chunk packing several prompts (more rows than the engine's batch): each prompt's run of at least
    LLAMA_KERNEL_ATTN_SEG rows (default 768; 64: the default before session 33, so these prompts mix both
    paths; 1: every run, 0: none) on a flash prefill call of its own, the chunk's
    trailing single rows (the finishing prompts' last tokens) on the split-KV decode kernel when one has at
    least LLAMA_KERNEL_ATTN_TAIL positions before it (default 64; 1: always, 0: never), the other rows as query
    blocks of the flash kernel in one launch (LLAMA_KERNEL_ATTN_BLOCKS=0: the warp-per-(row, head) kernel, or
    the plain kernel with LLAMA_KERNEL_ATTN_ROWS=0). Each prompt's first token (the one the packed prefill
    decides) is the one it gets alone (flash prefill, one-row matmuls), with every split; the warp-per-row and
    plain kernels on every row give the same tokens. Later tokens are not compared with the single runs: the
    batch's decode matmuls sum in another order, which on this random model flipped a near tie of the
    100-token prompt's third token (v76). Lengths across the warp kernel's 32-position steps, the 64-row rules
    (runs, query blocks) and the 64-position tail rule."""
    lens = (1, 31, 32, 33, 64, 65, 100, 150, 300)
    prompts = [[(7 * i + 3 * j) % 1000 + 1 for j in range(n)] for i, n in enumerate(lens)]
    cases = (("", "", "", ""), ("", "64", "", ""), ("", "", "1", ""), ("", "", "0", ""), ("", "1", "1", ""),
             ("", "0", "0", ""), ("", "", "", "0"), ("", "0", "0", "0"), ("0", "0", "0", "0"))
    outs = check_packed_first_tokens(ckpt_1b_2layers, prompts, monkeypatch, chunk, ("ROWS", "SEG", "TAIL", "BLOCKS"),
                                     cases, max_new_tokens=8)
    assert outs["", "0", "0", "0"] == outs["0", "0", "0", "0"]


def check_packed_first_tokens(ckpt, prompts, monkeypatch, chunk, names, cases, max_new_tokens=1):
    """Each prompt's first token from one packed batch (prefill_chunk `chunk`) with every case (values of
    LLAMA_KERNEL_ATTN_<name> for `names`) equals its single run's. Returns each case's tokens."""
    m1 = LlamaInference(ckpt, device="cuda", verbose=False)
    first = [m1.generate_ids(p, max_new_tokens=1, temperature=0, ignore_eos=True)[0][0] for p in prompts]
    kw = {"prefill_chunk": chunk} if chunk else {}
    mb = LlamaInference(ckpt, device="cuda", batch_size=len(prompts), verbose=False, **kw)
    outs = {}
    for case in cases:
        for name, v in zip(names, case):
            monkeypatch.setenv("LLAMA_KERNEL_ATTN_" + name, v)
        outs[case] = mb.generate_ids(prompts, max_new_tokens=max_new_tokens, temperature=0, ignore_eos=True)
        assert [o[0] for o in outs[case]] == first, (chunk, case)
    return outs


def test_packed_prefill_blocks_head_dim_128(tmp_path, monkeypatch):
    """The flash kernel's query-block table (v79) at head_dim 128 with GQA ratio 3 (Llama 3.2 3B's shape): each
    packed prompt's first token is its single run's, with the table and with the warp-per-row kernel
    (LLAMA_KERNEL_ATTN_BLOCKS=0), in one chunk and across chunks of 50 rows."""
    ckpt = make_random_checkpoint(str(tmp_path / "3b"), "llama-3.2-3b", seed=23, std=0.02, num_hidden_layers=1,
                                  vocab_size=32000)
    lens = (1, 20, 31, 64, 65, 130)
    prompts = [[(13 * i + 5 * j) % 2000 + 1 for j in range(n)] for i, n in enumerate(lens)]
    for chunk in (None, 50):
        check_packed_first_tokens(ckpt, prompts, monkeypatch, chunk, ("BLOCKS",), (("",), ("0",)))


def test_repetition_history_batched(ckpt_1b_2layers):
    check_repetition_history(ckpt_1b_2layers, "cuda")


def test_attention_op_rejects_bad_kind():
    q = np.zeros((1, 64), np.float32)
    k = np.zeros((1, 4, 64), np.float32)
    for kind in (-1, 4):
        with pytest.raises(ValueError, match=f"kind = {kind}"):
            _C.cuda_attention(q, k, k, [3], 1, kind)
    with pytest.raises(ValueError, match="kind = 9"):
        _C.cuda_bench_attention(1, 1, 1, 64, 4, 9, 1)


def test_flash_and_plain_agree(ckpt_1b_2layers):
    toks = list(range(3, 400, 3))
    a = LlamaInference(ckpt_1b_2layers, device="cuda", use_flash_attention=True, verbose=False).logits(toks)
    b = LlamaInference(ckpt_1b_2layers, device="cuda", use_flash_attention=False, verbose=False).logits(toks)
    assert R.rel_err(a, b) < 5e-3


def test_memory_matches_estimate():
    for preset, seq, bs in [("llama-3.2-1b", 4096, 1), ("llama-3.2-1b", 1000, 8), ("tiny", 77, 3)]:
        m = LlamaInference(f"synthetic:{preset}", device="cuda", max_seq_len=seq, batch_size=bs, verbose=False)
        used = m.memory_usage()["total_bytes"]
        est = estimate_memory(f"synthetic:{preset}", device="cuda", max_seq_len=seq, batch_size=bs)["total_bytes"]
        assert abs(used - est) <= 0.03 * est
        del m


def test_out_of_memory_is_a_clear_error():
    with pytest.raises(MemoryError, match="max_seq_len"):
        LlamaInference("synthetic:tiny", device="cuda", max_seq_len=1 << 20, batch_size=4096, verbose=False)
    # the GPU is still usable
    m = LlamaInference("synthetic:tiny", device="cuda", verbose=False)
    assert len(m.generate_ids([1, 2, 3], max_new_tokens=3, ignore_eos=True)[0]) == 3


def test_build_info_reports_gpu():
    info = _C.build_info()
    assert info["cuda"] and info["device_count"] >= 1 and info["arch_supported"]
    assert info["compute_capability"] and info["device_name"]


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("fusion", [True, False])
def test_decode_path_matches_prefill_path(ckpt_1b_2layers, chunk, fusion, monkeypatch):
    """prefill_chunk=1 runs every position through the decode kernels (GEMV with the
    fused rotary epilogue, split-KV attention); 3 uses the 3-row GEMV and flash prefill."""
    if not fusion:
        monkeypatch.setenv("LLAMA_KERNEL_NO_FUSION", "1")
    toks = list(np.random.default_rng(4).integers(0, 32000, 70))
    full = LlamaInference(ckpt_1b_2layers, device="cuda", verbose=False).logits(toks)
    step = LlamaInference(ckpt_1b_2layers, device="cuda", prefill_chunk=chunk, verbose=False).logits(toks)
    assert R.rel_err(step, full) < 1e-2


@pytest.mark.parametrize("fused", ["1", "0"])
def test_ffn_fused_kernel_matches_cpu(ckpt_1b_2layers, fused, monkeypatch):
    """One row at a time (prefill_chunk=1): o + FFN RMSNorm + gate_up + down as one kernel with grid
    barriers (k_ffn_fused, opt-in by LLAMA_KERNEL_FFN_FUSED=1), and the four kernels, against the CPU
    engine."""
    monkeypatch.setenv("LLAMA_KERNEL_FFN_FUSED", fused)
    monkeypatch.setenv("LLAMA_KERNEL_PERSIST", "0")  # one-row steps would take the persistent kernel
    toks = list(np.random.default_rng(8).integers(0, 32000, 40))
    cpu = LlamaInference(ckpt_1b_2layers, device="cpu", verbose=False).logits(toks)
    gpu = LlamaInference(ckpt_1b_2layers, device="cuda", prefill_chunk=1, verbose=False).logits(toks)
    assert R.rel_err(gpu, cpu) < 2e-2


def test_ffn_fused_kernel_is_bit_exact(monkeypatch):
    """The fused kernel runs the same GEMVs (same rows per warp, same order of sums) as the separate
    kernels: batch-1 greedy decode (CUDA graphs, the grid barrier reused every replay) gives the
    same tokens, and one-row-at-a-time logits agree bit for bit."""
    out = {}
    monkeypatch.setenv("LLAMA_KERNEL_PERSIST", "0")
    for fused in ("1", "0"):
        monkeypatch.setenv("LLAMA_KERNEL_FFN_FUSED", fused)
        m = LlamaInference("synthetic:llama-3.2-1b", device="cuda", max_seq_len=512, prefill_chunk=1, verbose=False)
        toks = list(m.generate_ids([5, 6, 7, 8] * 4, max_new_tokens=160, temperature=0, ignore_eos=True)[0])
        out[fused] = (toks, m.logits([5, 6, 7, 8] * 4 + toks[:16]))
        del m
    assert out["1"][0] == out["0"][0]
    assert np.array_equal(out["1"][1], out["0"][1])


@pytest.mark.parametrize("preset", ["llama-3.2-1b", "llama-3.2-3b"])  # head_dim 64 and 128
def test_persistent_decode_matches_cpu(preset, tmp_path, monkeypatch):
    """One row at a time (prefill_chunk=1: every forward is a one-row step, positions 0..299, so the
    attention's position chunks take 1 to 4 chunks of 32-96 positions): the persistent decode kernel
    (lk_decode.cu, LLAMA_KERNEL_PERSIST=1, batch_size=1 engines on sm_90+) against the CPU engine and
    against the op-by-op kernels (LLAMA_KERNEL_PERSIST=0, the default)."""
    ckpt = make_random_checkpoint(str(tmp_path / preset), preset, seed=11, std=0.02, num_hidden_layers=2,
                                  vocab_size=32000)
    # (the two paths round differently: fp32 softmax and another order of sums in the persistent kernel's
    # attention)
    check_switch_vs_cpu(ckpt, list(np.random.default_rng(12).integers(0, 32000, 300)), "LLAMA_KERNEL_PERSIST",
                        monkeypatch)


def test_persistent_decode_graph_replays(monkeypatch):
    """Batch-1 greedy decode through the persistent kernel: CUDA graphs (the kernel's barrier counters
    reset by the kernel itself on every replay) and eager launches give the same tokens (the kernel
    is deterministic), and each token is the op-by-op engine's argmax, or within 5% of a logit's
    spread of it (near-ties may round either way)."""
    prompt = [5, 6, 7, 8] * 4
    outs = []
    monkeypatch.setenv("LLAMA_KERNEL_PERSIST", "1")
    for graphs in (True, False):
        m = LlamaInference("synthetic:llama-3.2-1b", device="cuda", max_seq_len=1024, cuda_graphs=graphs,
                           verbose=False)
        outs.append(list(m.generate_ids(prompt, max_new_tokens=200, temperature=0, ignore_eos=True)[0]))
        del m
    assert outs[0] == outs[1]
    monkeypatch.setenv("LLAMA_KERNEL_PERSIST", "0")
    ref = LlamaInference("synthetic:llama-3.2-1b", device="cuda", max_seq_len=1024, verbose=False)
    lg = ref.logits(prompt + outs[0][:-1])[len(prompt) - 1:]
    gap = lg.max(axis=1) - lg[np.arange(len(outs[0])), outs[0]]
    assert np.all(gap <= 0.05 * lg.std(axis=1)), np.max(gap / lg.std(axis=1))


@pytest.mark.parametrize("N,K", [(3072, 2048), (16384, 2048), (2048, 8192), (5120, 3072), (128256 // 8, 2048)])
def test_tiled_layout_matmul(N, K, monkeypatch):
    """LLAMA_KERNEL_TILED=1: the tensor-core layout (small-batch kernel up to 16 rows, tile kernel above)."""
    monkeypatch.setenv("LLAMA_KERNEL_TILED", "1")
    rng = np.random.default_rng(N + K + 1)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    # 17-64 rows: the small-batch kernel in row slices, or on sm_90a the wgmma kernel (64-row blocks) from 33
    # rows on matrices of 16M+ weights and from 57 rows on the others; 65: the tile kernel (or the wgmma kernel)
    for M, mode, x, y0 in mm_cases(rng, (1, 3, 8, 9, 16, 33, 40, 64, 65), N, K):
        y, used = _C.cuda_matmul(x, qs, p, mode=mode, variant=0, y=y0)
        assert used == 3 and np.all(np.isfinite(y))
        assert R.rel_err(y, mm_ref(x, qs, p, mode, y0)) < 5e-3, (M, mode)


def check_new_vs_old(monkeypatch, rng, qs, p, N, K, Ms, env, new, old):
    """For each row count in Ms and every output mode, the batched matmul with env=new against the reference
    and against the kernels env=old selects (the same fp16 weights, another summation order). Returns whether
    any output differed bit for bit from the old path's."""
    differ = False
    for M, mode, x, y0 in mm_cases(rng, Ms, N, K):
        monkeypatch.setenv(env, new)
        y, used = _C.cuda_matmul(x, qs, p, mode=mode, variant=3, y=y0)
        assert used == 3 and np.all(np.isfinite(y)), (M, mode)
        assert R.rel_err(y, mm_ref(x, qs, p, mode, y0)) < 5e-3, (M, mode)
        monkeypatch.setenv(env, old)
        y_old, _ = _C.cuda_matmul(x, qs, p, mode=mode, variant=3, y=y0)
        assert R.rel_err(y, y_old) < 2e-3, (M, mode)
        differ |= not np.array_equal(y, y_old)
    return differ


def wg_small_grid(N, M):
    """try_wg's rule for more than 64 rows (mode 0): where a grid of 128 x 128 blocks would be under half a block
    an SM, the rows go in 64-row blocks (k_mm_q4_wgk) instead"""
    return 2 * -(-N // 128) * -(-M // 128) < _C.build_info()["sm_count"]


def wgmma_layout(tiled, N, monkeypatch):
    """Skips without an sm_90a GPU (the wgmma kernels need compute capability 9.0 and an sm_90a build) or when
    the tiled layout ("1") cannot hold N rows; else selects the layout for the test."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU (the wgmma kernel needs compute capability 9.0 and an sm_90a build)")
    if tiled == "1" and N % 16:
        pytest.skip("the tiled layout needs N % 16 == 0")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", tiled)


@pytest.mark.parametrize("tiled", ["0", "1"])
@pytest.mark.parametrize("bn", ["128", "256", ""])  # weight rows per block, or the size rule
@pytest.mark.parametrize("N,K", [(3072, 2048), (16384, 2048), (2048, 8192), (136, 384), (1000, 640), (520, 4224)])
def test_wgmma_prefill_matmul(N, K, bn, tiled, monkeypatch):
    """Batched-decode and prefill-sized matmuls (33+ rows) on the Hopper wgmma kernel, both layouts,
    partial row and weight tiles, split K, every output mode, against the reference and against the
    kernels it replaces (LLAMA_KERNEL_WGMMA=0)."""
    wgmma_layout(tiled, N, monkeypatch)
    monkeypatch.setenv("LLAMA_KERNEL_RA_PREFILL", "0")  # above 64 rows the register-A kernel would take these
    rng = np.random.default_rng(N + K + 7)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    # 33-64 rows: 64-row blocks with K split through the workspace; 65+: 128-row blocks
    Ms = (40, 65, 200) if N * K > 3072 * 3072 else (20, 33, 64, 65, 128, 300)
    check_new_vs_old(monkeypatch, rng, qs, p, N, K, Ms, "LLAMA_KERNEL_WGMMA", bn, "0")


@pytest.mark.parametrize("tiled", ["0", "1"])
@pytest.mark.parametrize("N,K", [(2048, 8192), (2048, 2048), (16384, 2048), (1000, 640), (520, 4224)])
def test_wgmma_prefill_short_ring(N, K, tiled, monkeypatch):
    """The wgmma kernel above 64 rows in 128 x 128 blocks with a ring of 3 stages, two blocks an SM
    (LLAMA_KERNEL_WG_STAGES=3; unset: by grid): every output mode, partial token and weight blocks, against the
    reference and the 6-stage form, and which form the size rule picks."""
    wgmma_layout(tiled, N, monkeypatch)
    monkeypatch.setenv("LLAMA_KERNEL_RA_PREFILL", "0")  # (the register-A kernel would take qkv and gate_up)
    rng = np.random.default_rng(N + K + 13)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    check_new_vs_old(monkeypatch, rng, qs, p, N, K, (65, 300, 1030), "LLAMA_KERNEL_WG_STAGES", "3", "6")
    sms = _C.build_info()["sm_count"]
    for M in (300, 1030, 2048):
        x = rng.standard_normal((M, K)).astype(np.float32)
        t128 = -(-N // 128) * -(-M // 128)  # 128 x 128 blocks (mode 0)
        rule = sms < t128 <= 3 * sms
        # (grids of fewer than half a block an SM take 64-row blocks with K split whatever the switch says)
        small = wg_small_grid(N, M)
        for env, ring3 in (("3", not small), ("6", False), ("", rule)):
            monkeypatch.setenv("LLAMA_KERNEL_WG_STAGES", env)
            _, used, kernel = _C.cuda_matmul(x, qs, p, mode=0, variant=3, kernel=True)
            want = "k_mm_q4_wgk (4 warpgroups)" if small else "k_mm_q4_wg (3 stages)" if ring3 else "k_mm_q4_wg"
            assert used == 3 and kernel == want, (M, env, kernel)


@pytest.mark.parametrize("tiled", ["0", "1"])
@pytest.mark.parametrize("N,K", [(2048, 8192), (2048, 2048), (1000, 640), (520, 4224)])
def test_wgmma_batched_add_epilogue(N, K, tiled, monkeypatch):
    """The wgmma kernel adds into the fp32 residual with each chunk's loads issued before its stores (the
    default; LLAMA_KERNEL_ADD_EPI=0: one load-add-store after another). The same sums bit for bit, at 33-64
    rows (64-row blocks, K split) and above (the 6- and 3-stage forms), partial token and weight blocks; and
    which ran."""
    wgmma_layout(tiled, N, monkeypatch)
    monkeypatch.setenv("LLAMA_KERNEL_RA_PREFILL", "0")
    monkeypatch.setenv("LLAMA_KERNEL_WG_MIN", "33")  # the wgmma kernel from 33 rows on every matrix
    rng = np.random.default_rng(N + K + 17)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    for M in (33, 64, 65, 300, 1030):
        x = rng.standard_normal((M, K)).astype(np.float32)
        y0 = rng.standard_normal((M, N)).astype(np.float32)
        for stages in ("6", "3"):
            monkeypatch.setenv("LLAMA_KERNEL_WG_STAGES", stages)
            monkeypatch.setenv("LLAMA_KERNEL_ADD_EPI", "")
            y, used, kernel = _C.cuda_matmul(x, qs, p, mode=1, variant=3, y=y0, kernel=True)
            assert used == 3 and kernel.startswith("k_mm_q4_wg") and kernel.endswith("batched add)"), (M, kernel)
            assert R.rel_err(y, mm_ref(x, qs, p, 1, y0)) < 5e-3, (M, stages)
            monkeypatch.setenv("LLAMA_KERNEL_ADD_EPI", "0")
            y_old, _, kernel_old = _C.cuda_matmul(x, qs, p, mode=1, variant=3, y=y0, kernel=True)
            assert "batched" not in kernel_old
            assert np.array_equal(y, y_old), (M, stages)


@pytest.mark.parametrize("tiled", ["0", "1"])
@pytest.mark.parametrize("N,K", [(3072, 2048), (2048, 2048), (2048, 8192), (16384, 2048), (1000, 640)])
def test_wgmma_split_rule(N, K, tiled, monkeypatch):
    """The 64-row wgmma blocks' K split: the default rule (no more than a block an SM unless a block would keep
    more than 8 k-tiles), the rule before it (LLAMA_KERNEL_WG_SPLIT=old) and forced caps (1, 2, 4) all agree with
    the reference in every output mode, at 33 and 64 rows; the last block sums the splits' partials two at a
    time in split order, so a repeated call gives the same bits."""
    wgmma_layout(tiled, N, monkeypatch)
    monkeypatch.setenv("LLAMA_KERNEL_WG_MIN", "33")
    monkeypatch.setenv("LLAMA_KERNEL_RA", "0")
    monkeypatch.setenv("LLAMA_KERNEL_RA_GU", "0")
    monkeypatch.setenv("LLAMA_KERNEL_WGK", "0")  # the one-warpgroup kernel (k_mm_q4_wgk: the next test)
    rng = np.random.default_rng(N + 3 * K)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    for M, mode, x, y0 in mm_cases(rng, (33, 64), N, K):
        ref = mm_ref(x, qs, p, mode, y0)
        for split in ("", "old", "1", "2", "4"):
            monkeypatch.setenv("LLAMA_KERNEL_WG_SPLIT", split)
            y, used, kernel = _C.cuda_matmul(x, qs, p, mode=mode, variant=3, y=y0, kernel=True)
            assert used == 3 and kernel.startswith("k_mm_q4_wg") and "wgk" not in kernel, (M, mode, split)
            assert R.rel_err(y, ref) < 5e-3, (M, mode, split)
            if split == "":
                y2, _, _ = _C.cuda_matmul(x, qs, p, mode=mode, variant=3, y=y0, kernel=True)
                assert np.array_equal(y, y2), (M, mode)


@pytest.mark.parametrize("kw", ["2", "4"])
@pytest.mark.parametrize("tiled", ["0", "1"])
@pytest.mark.parametrize("N,K", [(3072, 2048), (2048, 8192), (16384, 2048), (5120, 3072), (1000, 640), (224, 128)])
def test_wgmma_k_warpgroups(N, K, tiled, kw, monkeypatch):
    """17-64 rows on k_mm_q4_wgk: a block's k-tiles split over KW warpgroups (2 or 4; with K = 128, two
    k-tiles, two of four warpgroups have none), their partial tiles summed in shared memory, with the K split
    over blocks on top (the rule, or at most 1 or 2 splits), partial token and weight blocks, every output
    mode, against the reference; a repeated call gives the same bits, and the residual add's batched loads the
    same sums as one load-add-store after another."""
    wgmma_layout(tiled, N, monkeypatch)
    for k, v in (("LLAMA_KERNEL_WG_MIN", "17"), ("LLAMA_KERNEL_RA", "0"), ("LLAMA_KERNEL_RA_GU", "0"),
                 ("LLAMA_KERNEL_WGK", kw)):
        monkeypatch.setenv(k, v)
    rng = np.random.default_rng(N + 5 * K)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    for M, mode, x, y0 in mm_cases(rng, (17, 40, 64), N, K):
        ref = mm_ref(x, qs, p, mode, y0)
        for split in ("", "1", "2"):
            monkeypatch.setenv("LLAMA_KERNEL_WG_SPLIT", split)
            y, used, kernel = _C.cuda_matmul(x, qs, p, mode=mode, variant=3, y=y0, kernel=True)
            assert used == 3 and kernel.startswith(f"k_mm_q4_wgk ({kw} warpgroups"), (M, mode, split, kernel)
            assert R.rel_err(y, ref) < 5e-3, (M, mode, split)
            if split == "":
                y2, _, _ = _C.cuda_matmul(x, qs, p, mode=mode, variant=3, y=y0, kernel=True)
                assert np.array_equal(y, y2), (M, mode)
            if mode == 1:
                monkeypatch.setenv("LLAMA_KERNEL_ADD_EPI", "0")
                y3, _, kernel3 = _C.cuda_matmul(x, qs, p, mode=mode, variant=3, y=y0, kernel=True)
                monkeypatch.setenv("LLAMA_KERNEL_ADD_EPI", "")
                assert "batched" in kernel and "batched" not in kernel3, (kernel, kernel3)
                assert np.array_equal(y, y3), (M, split)


def ra_name(base, nt, tma):
    """launch_ra's launch names: base, then " (TMA add)" / " (TMA store)" (tma); 192- and 256-token blocks (nt)
    say so"""
    return base + (f" ({nt} tokens" + (", " + tma[2:] if tma else ")") if nt in (192, 256) else tma)


RA_FORM_TOKENS = {"5": 256, "6": 192}  # LLAMA_KERNEL_RA_PREFILL's wide forms


def ra_wide_rule(N, M, swiglu, sms, wide=2):
    """try_ra_prefill's size rule for the wide blocks (LLAMA_KERNEL_RA_256 = wide): 256 tokens where that grid is
    at least 0.7 of a block an SM and the rows pad to 256 at most 10% more than to 128 (N: weight rows; SwiGLU: 64
    outputs a block); then 192 where its whole waves, a block counted at 4/5, take less. Returns 256, 192 or 0."""
    nx = -(-(N // 2) // 64) if swiglu else -(-N // 128)
    b5, b6 = nx * -(-M // 256), nx * -(-M // 192)
    if not (wide and 10 * b5 >= 7 * sms and 10 * (-(-M // 256) * 256) <= 11 * (-(-M // 128) * 128)):
        return 0
    return 192 if wide == 2 and 4 * -(-b6 // sms) < 5 * -(-b5 // sms) else 256


@pytest.mark.parametrize("route", ["tiled", "ra", "ra_prefill"])
@pytest.mark.parametrize("N,K", [(2048, 8192), (3072, 3072), (1056, 640)])
def test_batched_add_small_batch_and_register_a(N, K, route, monkeypatch):
    """The residual add of the tiled small-batch kernel (2-32 rows, NT = 1, 2, 4 token tiles a lane) and the
    register-A kernel (17-64 rows with K split, and the prefill forms above 64 rows) with its loads batched
    (the default) gives the same sums bit for bit as one load-add-store after another
    (LLAMA_KERNEL_ADD_EPI=0), and the reference's."""
    if route != "tiled" and not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU (the register-A kernel needs compute capability 9.0 and an sm_90a build)")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", "1")
    monkeypatch.setenv("LLAMA_KERNEL_WG_MIN", "100000")
    monkeypatch.setenv("LLAMA_KERNEL_RA", "17" if route == "ra" else "0")
    if route == "ra_prefill":
        Ms, want = (65, 200), "k_mm_q4_ra"
    else:
        Ms, want = ((2, 5, 8, 9, 16, 17, 24, 32) if route == "tiled" else (17, 32, 33, 64)), \
            ("k_gemv_tiled" if route == "tiled" else "k_mm_q4_ra")
    rng = np.random.default_rng(N + K + 29)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    forms = ("1", "2", "3", "4", "5", "6") if route == "ra_prefill" else ("",)
    for M in Ms:
        x = rng.standard_normal((M, K)).astype(np.float32)
        y0 = rng.standard_normal((M, N)).astype(np.float32)
        for form in forms:
            monkeypatch.setenv("LLAMA_KERNEL_RA_PREFILL", form)
            ys = []
            for env in ("", "0"):
                monkeypatch.setenv("LLAMA_KERNEL_ADD_EPI", env)
                y, _, kernel = _C.cuda_matmul(x, qs, p, mode=1, variant=3, y=y0, kernel=True)
                # (128- and 256-token blocks add by TMA unless the add is unbatched: test_register_a_tma_epilogues)
                tma = route == "ra_prefill" and form in ("1", "2", "5", "6") and env == ""
                assert kernel == ra_name(want, RA_FORM_TOKENS.get(form), " (TMA add)" if tma else ""), (M, form, kernel)
                ys.append(y)
            assert R.rel_err(ys[0], mm_ref(x, qs, p, 1, y0)) < 5e-3, (M, form)
            assert np.array_equal(ys[0], ys[1]), (M, form)


@pytest.mark.parametrize("tiled", ["0", "1"])
@pytest.mark.parametrize("N,K", [(2048, 8192), (2048, 2048), (1056, 1536), (160, 4608)])
def test_register_a_tma_epilogues(N, K, tiled, monkeypatch):
    """The register-A prefill kernel's epilogues through shared memory and TMA (128-token blocks, one and two
    warpgroups; the default): the residual add by bulk reduce-adds, the fp32, SwiGLU and fp16 outputs by bulk
    stores, against the per-thread epilogues they replaced (LLAMA_KERNEL_TMA_EPI=0): the same bits, with partial
    token blocks (65, 300 rows: TMA skips the rows past M) and partial weight blocks (N = 1,056 and 160: the
    columns past N), and against the reference."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU (the register-A kernel needs compute capability 9.0 and an sm_90a build)")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", tiled)
    rng = np.random.default_rng(N + K + 37)
    qs, p = quant.quantize((rng.standard_normal((N, K)) * 0.02).astype(np.float32))
    for M, mode, x, y0 in mm_cases(rng, (65, 300) + ((2048,) if N * K <= 2048 * 2048 else ()), N, K):
        ref = mm_ref(x, qs, p, mode, y0)
        for form in ("1", "2", "5", "6"):  # (5, 6: 256 and 192 tokens, one weight set a warpgroup)
            monkeypatch.setenv("LLAMA_KERNEL_RA_PREFILL", form)
            ys = []
            for env, tma in (("", " (TMA add)" if mode == 1 else " (TMA store)"), ("0", "")):
                monkeypatch.setenv("LLAMA_KERNEL_TMA_EPI", env)
                y, _, kernel = _C.cuda_matmul(x, qs, p, mode=mode, variant=3, y=y0, kernel=True)
                assert kernel == ra_name("k_mm_q4_ra", RA_FORM_TOKENS.get(form), tma), (M, mode, form, env, kernel)
                ys.append(y)
            assert R.rel_err(ys[0], ref) < 5e-3, (M, mode, form)
            assert np.array_equal(ys[0], ys[1]), (M, mode, form)


@pytest.mark.parametrize("N,K", [(16384, 2048), (16384, 3072), (1056, 640)])
def test_gate_up_register_a_17_to_32_rows(N, K, monkeypatch):
    """gate_up (SwiGLU) of 17-32 rows of the tiled layout runs the register-A kernel by default (K split through
    the workspace where its grid is small), from 33 rows not; LLAMA_KERNEL_RA_GU=0 keeps the tiled slices. Both
    agree with the reference."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU (the register-A kernel needs compute capability 9.0 and an sm_90a build)")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", "1")
    monkeypatch.delenv("LLAMA_KERNEL_RA", raising=False)
    rng = np.random.default_rng(N + K + 31)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    for M in (17, 24, 32, 33):
        x = rng.standard_normal((M, K)).astype(np.float32)
        ref = mm_ref(x, qs, p, 2, None)
        for env in ("", "0"):
            monkeypatch.setenv("LLAMA_KERNEL_RA_GU", env)
            y, used, kernel = _C.cuda_matmul(x, qs, p, mode=2, variant=3, kernel=True)
            assert (kernel == "k_mm_q4_ra") == (env == "" and M <= 32), (M, env, kernel)
            assert R.rel_err(y, ref) < 5e-3, (M, env)


@pytest.mark.parametrize("nwg", ["1", "2"])  # warpgroups a block
@pytest.mark.parametrize("N,K", [(3072, 2048), (16384, 2048), (2048, 8192), (5120, 3072), (1056, 640), (160, 4224)])
def test_register_a_matmul(N, K, nwg, monkeypatch):
    """17-64 rows of the tiled layout on the Hopper register-A kernel (k_mm_q4_ra): partial row blocks
    (N = 1056: 66 tiles, SwiGLU 33 + 33), K split through the workspace, every output mode, against the
    reference and against the kernels it replaced (LLAMA_KERNEL_RA=0)."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU (the register-A kernel needs compute capability 9.0 and an sm_90a build)")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", "1")
    monkeypatch.setenv("LLAMA_KERNEL_RA_NWG", nwg)
    rng = np.random.default_rng(N + K + 11)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    differ = check_new_vs_old(monkeypatch, rng, qs, p, N, K, (17, 24, 40, 64), "LLAMA_KERNEL_RA", "17", "0")
    assert differ  # the two paths round differently: the register-A kernel did run


@pytest.mark.parametrize("tiled", ["0", "1"])
@pytest.mark.parametrize("nwg", ["1", "2", "5", "6", ""])  # warpgroups a block (5, 6: 256, 192 tokens), or the rule
@pytest.mark.parametrize("N,K", [(3072, 2048), (16384, 2048), (2048, 8192), (5120, 3072), (1056, 1536), (160, 4608)])
def test_register_a_prefill_matmul(N, K, nwg, tiled, monkeypatch):
    """More than 64 rows (prefill) on the register-A kernel (k_mm_q4_ra, 128 tokens a block, both layouts):
    partial token blocks (65, 200, 300 rows), partial weight blocks (N = 1056: 66 tiles; N = 160: 10), every
    output mode, against the reference and against the wgmma kernel it replaces (LLAMA_KERNEL_RA_PREFILL=0)."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU (the register-A kernel needs compute capability 9.0 and an sm_90a build)")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", tiled)
    rng = np.random.default_rng(N + K + 13)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    qs, p = quant.quantize(w)
    Ms = (65, 300) if N * K > 3072 * 3072 else (65, 128, 200, 300, 520)
    check_new_vs_old(monkeypatch, rng, qs, p, N, K, Ms, "LLAMA_KERNEL_RA_PREFILL", nwg, "0")
    # (the same fp16 weights and the same k16 steps in the same order: the outputs may equal the wgmma
    # kernel's bit for bit, so ask which kernel ran)
    x = rng.standard_normal((Ms[0], K)).astype(np.float32)
    # 65 rows without it: 64-row blocks (k_mm_q4_wgk) for a small grid, else 128 x 128 (or x 256) blocks of
    # k_mm_q4_wg (gate_up's 128 column blocks)
    small = wg_small_grid(N, Ms[0])
    for env, want in ((nwg, ra_name("k_mm_q4_ra", RA_FORM_TOKENS.get(nwg), " (TMA store)")),
                      ("0", "k_mm_q4_wgk (4 warpgroups)" if small else "k_mm_q4_wg")):
        monkeypatch.setenv("LLAMA_KERNEL_RA_PREFILL", env)
        assert _C.cuda_matmul(x, qs, p, mode=0, variant=3, kernel=True)[2] == want, env


@pytest.mark.parametrize("tiled", ["0", "1"])
@pytest.mark.parametrize("N,K,mode", [(3072, 2048, 3), (16384, 1024, 2), (2048, 2048, 1), (1056, 1536, 0)])
def test_register_a_wide_token_rule(N, K, mode, tiled, monkeypatch):
    """Prompt chunks take the 256- or 192-token register-A blocks (one weight set a warpgroup; SwiGLU's up rows in
    the other warpgroup, handed over through shared memory) by the size rule (ra_wide_rule; LLAMA_KERNEL_RA_256=1
    256 only, =0 neither): qkv's shape at 2,048 rows 192 tokens (two whole waves on 132 SMs), at 1,000 rows 256,
    gate_up's 256 at both, o's 256 at 2,048 rows; neither where the grid is small (o at 1,000 rows, 1,056 weight
    rows) or the rows pad badly (520 rows: 768 in 256-token blocks against 640). Against the reference and against
    the 128-token blocks."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU (the register-A kernel needs compute capability 9.0 and an sm_90a build)")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", tiled)
    monkeypatch.delenv("LLAMA_KERNEL_RA_PREFILL", raising=False)
    sms = _C.build_info()["sm_count"]
    rng = np.random.default_rng(N + K + mode + 43)
    qs, p = quant.quantize((rng.standard_normal((N, K)) * 0.02).astype(np.float32))
    seen = set()
    for M in (2048, 1000, 520):
        x = rng.standard_normal((M, K)).astype(np.float32)
        y0 = rng.standard_normal((M, N)).astype(np.float32) if mode == 1 else None
        ys = []
        for env, wide in (("", 2), ("1", 1), ("0", 0)):
            monkeypatch.setenv("LLAMA_KERNEL_RA_256", env)
            y, _, kernel = _C.cuda_matmul(x, qs, p, mode=mode, variant=3, y=y0, kernel=True)
            ys.append(y)
            nt = 256 if "256 tokens" in kernel else 192 if "192 tokens" in kernel else 0
            seen.add((M, nt))
            if mode == 1 and not kernel.startswith("k_mm_q4_ra"):
                continue  # (the residual add's own rule, ra_takes_add, sent it to the wgmma kernel)
            assert kernel.startswith("k_mm_q4_ra"), (M, env, kernel)
            assert nt == ra_wide_rule(N, M, mode == 2, sms, wide), (M, env, kernel)
        ref = mm_ref(x, qs, p, mode, y0)
        for y in ys:
            assert R.rel_err(y, ref) < 5e-3, M
            assert R.rel_err(y, ys[2]) < 2e-3, M
    if sms == 132 and N != 1056:  # (H100 SXM, H200)
        assert (2048, 192 if N == 3072 else 256) in seen, seen


@pytest.mark.parametrize("tiled", ["0", "1"])
def test_register_a_residual_add_rule(tiled, monkeypatch):
    """The residual add (mode 1) above 64 rows takes the register-A kernel by default only where its grid nearly
    fills the SMs (ra_takes_add): with the TMA add (the default) where its one-warpgroup grid (128 weight rows x
    128 tokens a block) is at least 15/16 of the SMs (N = 2,048 at 1,024 and 2,048 rows, not at 600); with the
    per-thread add (LLAMA_KERNEL_TMA_EPI=0) only where K >= 4,096 and the two-warpgroup grid is (2,048 rows).
    Against the reference and the wgmma kernel (LLAMA_KERNEL_RA_PREFILL=0)."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU (the register-A kernel needs compute capability 9.0 and an sm_90a build)")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", tiled)
    monkeypatch.delenv("LLAMA_KERNEL_RA_PREFILL", raising=False)
    N, K, sms = 2048, 4096, _C.build_info()["sm_count"]
    rng = np.random.default_rng(29)
    qs, p = quant.quantize((rng.standard_normal((N, K)) * 0.02).astype(np.float32))
    for M, tma in itertools.product((600, 1024, 2048), ("", "0")):
        monkeypatch.setenv("LLAMA_KERNEL_TMA_EPI", tma)
        x = rng.standard_normal((M, K)).astype(np.float32)
        y0 = rng.standard_normal((M, N)).astype(np.float32)
        b1, b2 = -(-N // 128) * -(-M // 128), -(-N // 256) * -(-M // 128)
        ra = 16 * b1 >= 15 * sms if tma == "" else 16 * b2 >= 15 * sms
        nt = ra_wide_rule(N, M, False, sms)
        want = ra_name("k_mm_q4_ra", nt, " (TMA add)" if tma == "" else "") if ra else "k_mm_q4_wg"
        y, used, kernel = _C.cuda_matmul(x, qs, p, mode=1, variant=3, y=y0, kernel=True)
        assert kernel == want if ra else kernel.startswith(want), (M, tma, kernel, want)
        assert R.rel_err(y, mm_ref(x, qs, p, 1, y0)) < 5e-3, (M, tma)
        monkeypatch.setenv("LLAMA_KERNEL_RA_PREFILL", "0")
        y_wg, _, k_wg = _C.cuda_matmul(x, qs, p, mode=1, variant=3, y=y0, kernel=True)
        monkeypatch.delenv("LLAMA_KERNEL_RA_PREFILL")
        assert k_wg.startswith("k_mm_q4_wg"), k_wg
        assert R.rel_err(y, y_wg) < 2e-3, (M, tma)


@pytest.mark.parametrize("tiled", ["0", "1"])
def test_residual_add_many_rows_ring3(tiled, monkeypatch):
    """The residual add (mode 1) of K = 2,048 (o's shape) at 3,500 rows on the wgmma kernel (the per-thread add,
    LLAMA_KERNEL_TMA_EPI=0; with the TMA add the register-A kernel takes it) stays on 128 x 128 blocks in the ring
    of 3 (the 128 x 256 blocks, LLAMA_KERNEL_WG_STAGES=6, were 2.7x slower there): against the reference and
    against the 128 x 256 form."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU (the wgmma kernel needs compute capability 9.0 and an sm_90a build)")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", tiled)
    monkeypatch.setenv("LLAMA_KERNEL_TMA_EPI", "0")
    N, K, M = 2048, 2048, 3500
    rng = np.random.default_rng(31)
    qs, p = quant.quantize((rng.standard_normal((N, K)) * 0.02).astype(np.float32))
    x = rng.standard_normal((M, K)).astype(np.float32)
    y0 = rng.standard_normal((M, N)).astype(np.float32)
    y, _, kernel = _C.cuda_matmul(x, qs, p, mode=1, variant=3, y=y0, kernel=True)
    assert kernel == "k_mm_q4_wg (3 stages, batched add)", kernel
    assert R.rel_err(y, mm_ref(x, qs, p, 1, y0)) < 5e-3
    monkeypatch.setenv("LLAMA_KERNEL_WG_STAGES", "6")
    y256, _, k256 = _C.cuda_matmul(x, qs, p, mode=1, variant=3, y=y0, kernel=True)
    assert k256 == "k_mm_q4_wg (batched add)", k256
    assert R.rel_err(y, y256) < 2e-3


def test_register_a_prefill_fallback(monkeypatch):
    """Row-interleaved weights whose groups a row are not a multiple of 4 (K = 640: 5 groups; the kernel loads
    scale/min 4 groups at a time) stay on the wgmma kernel: the same bits as with the register-A kernel off."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU")
    monkeypatch.setenv("LLAMA_KERNEL_TILED", "0")
    rng = np.random.default_rng(5)
    qs, p = quant.quantize((rng.standard_normal((1024, 640)) * 0.02).astype(np.float32))
    x = rng.standard_normal((130, 640)).astype(np.float32)
    ys = []
    for env in ("", "0"):
        monkeypatch.setenv("LLAMA_KERNEL_RA_PREFILL", env)
        y, _, kernel = _C.cuda_matmul(x, qs, p, mode=0, variant=3, kernel=True)
        assert kernel == "k_mm_q4_wgk (4 warpgroups)", env  # 130 rows of 1,024: 64-row blocks (a small grid)
        ys.append(y)
    assert np.array_equal(ys[0], ys[1])
    assert R.rel_err(ys[0], mm_ref(x, qs, p, 0, None)) < 5e-3


@pytest.mark.parametrize("batch", [1, 2])  # row-interleaved (one sequence) and tiled weights
def test_register_a_prefill_engine(ckpt_1b_2layers, batch, monkeypatch):
    """A 300-token prompt in chunks of 256 and 44 rows: the prefill matmuls on the register-A kernel against
    the CPU engine and against the wgmma kernel (LLAMA_KERNEL_RA_PREFILL=0)."""
    if not _C.build_info().get("wgmma"):
        pytest.skip("no sm_90a GPU")
    toks = list(np.random.default_rng(8).integers(0, 32000, 300))
    cpu = LlamaInference(ckpt_1b_2layers, device="cpu", verbose=False).logits(toks)
    got = {}
    for env in ("", "0"):
        monkeypatch.setenv("LLAMA_KERNEL_RA_PREFILL", env)
        got[env] = LlamaInference(ckpt_1b_2layers, device="cuda", batch_size=batch, prefill_chunk=256,
                                  verbose=False).logits(toks)
        assert R.rel_err(got[env], cpu) < 2e-2, env
    assert R.rel_err(got[""], got["0"]) < 1e-2


def test_default_prefill_chunk_one_pass(ckpt_1b_2layers):
    """The CUDA default chunk (2,048 rows) takes a 1,800-token prompt in one forward: its logits against
    the same prompt in chunks of 512 rows (four forwards, each on the other chunks' KV cache)."""
    toks = list(np.random.default_rng(11).integers(0, 32000, 1800))
    one = LlamaInference(ckpt_1b_2layers, device="cuda", verbose=False)
    assert one.prefill_chunk == 2048
    a = one.logits(toks)
    del one
    b = LlamaInference(ckpt_1b_2layers, device="cuda", prefill_chunk=512, verbose=False).logits(toks)
    assert a.shape == b.shape and np.isfinite(a).all()
    assert R.rel_err(a, b) < 1e-2


@pytest.mark.parametrize("batch", [2, 4])  # one sequence never takes the tiled layout
@pytest.mark.parametrize("tiled", ["1", "0"])  # the default for 2+ sequences, and the row-interleaved GEMVs
def test_tiled_engine_matches_cpu(ckpt_1b_2layers, batch, tiled, monkeypatch):
    monkeypatch.setenv("LLAMA_KERNEL_TILED", tiled)
    toks = list(np.random.default_rng(6).integers(0, 32000, 90))
    cpu = LlamaInference(ckpt_1b_2layers, device="cpu", verbose=False).logits(toks)
    # prompt chunks of 1, 16 and 64 (+ 26) rows: the small-batch kernel with the rotary epilogue (per 16
    # rows above 16); 128 (90 rows): the tile kernel
    for chunk in (1, 16, 64, 128):
        gpu = LlamaInference(ckpt_1b_2layers, device="cuda", batch_size=batch, prefill_chunk=chunk,
                             verbose=False).logits(toks)
        assert R.rel_err(gpu, cpu) < 2e-2


# kw: the default (4 warpgroups a block), k_mm_q4_wg, 2 warpgroups; "ra": every matrix of 17+ rows on the
# register-A kernel (LLAMA_KERNEL_RA=17), whose rotary epilogue only this reaches
@pytest.mark.parametrize("kw", ["", "0", "2", "ra"])
@pytest.mark.parametrize("preset", ["llama-3.2-1b", "llama-3.2-3b"])  # head_dim 64 and 128
def test_tiled_engine_rotary_wgmma(preset, kw, tmp_path, monkeypatch):
    """Prompt chunks of 33-64 rows on the tiled layout: qkv through the wgmma kernels with the rotary /
    KV-append epilogue (sm_90a; elsewhere the row slices), against the CPU engine."""
    monkeypatch.setenv("LLAMA_KERNEL_TILED", "1")
    if kw == "ra":
        monkeypatch.setenv("LLAMA_KERNEL_RA", "17")
    else:
        monkeypatch.setenv("LLAMA_KERNEL_WGK", kw)
    ckpt = make_random_checkpoint(str(tmp_path / preset), preset, seed=8, std=0.02, num_hidden_layers=1,
                                  vocab_size=32000)
    toks = list(np.random.default_rng(9).integers(0, 32000, 100))
    cpu = LlamaInference(ckpt, device="cpu", verbose=False).logits(toks)
    for chunk in (40, 64):  # 40 + 40 + 20 and 64 + 36 rows
        gpu = LlamaInference(ckpt, device="cuda", batch_size=2, prefill_chunk=chunk, verbose=False).logits(toks)
        assert R.rel_err(gpu, cpu) < 2e-2, chunk


def test_ctrl_c_during_gpu_decode():
    """KeyboardInterrupt within ~100 ms while the GPU decodes (graphs on), and the model generates again."""
    import signal
    import threading
    import time

    m = LlamaInference("synthetic:llama-3.2-1b", device="cuda", max_seq_len=8192, verbose=False)
    stamp = []

    def fire():
        time.sleep(0.5)
        stamp.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=fire, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        m.generate_ids([1, 2, 3], max_new_tokens=8000, temperature=0, ignore_eos=True)
    latency = time.monotonic() - stamp[0]
    print(f"GPU decode: KeyboardInterrupt {latency * 1e3:.1f} ms after SIGINT")
    t.join()
    assert latency < 0.25, f"KeyboardInterrupt took {latency * 1e3:.0f} ms"
    assert len(m.generate_ids([1, 2], max_new_tokens=3, ignore_eos=True)[0]) == 3


def test_no_gpu_memory_growth_over_1000_calls():
    import gc

    m = LlamaInference("synthetic:tiny", device="cuda", verbose=False)
    for i in range(50):
        m.generate_ids([1, 2, 3], max_new_tokens=4, temperature=0.7, seed=i)
    gc.collect()
    free0 = _C.build_info()["gpu_free_bytes"]
    for i in range(1000):
        m.generate_ids([[1, 2, 3], [4, 5]], max_new_tokens=4, temperature=0.7, seed=i)
        if i % 100 == 0:
            m.logits([1, 2, 3])
    gc.collect()
    drop = free0 - _C.build_info()["gpu_free_bytes"]
    print(f"free GPU memory change over 1000 generate calls: {-drop / 2**20:+.1f} MiB")
    assert drop <= 2 << 20, f"free GPU memory fell by {drop / 2**20:.1f} MiB over 1000 calls"
