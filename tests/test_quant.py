"""The int4 format: C reference == NumPy mirror (bit for bit), dequantize,
and the CPU matmul kernels (scalar and SIMD) against a float64 reference."""
import numpy as np
import pytest

from llama_kernel import _C, quant

G = _C.Q4_GROUP


def weights(rng, n, k, kind):
    if kind == "gauss":
        return (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    if kind == "heavy":
        return (rng.standard_t(3, (n, k)) * 0.01).astype(np.float32)
    if kind == "constant_groups":
        w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
        w[:, :G] = 0.125
        w[0, G:2 * G] = -3.0
        return w
    if kind == "wide":
        return (rng.standard_normal((n, k)) * 300).astype(np.float32)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["gauss", "heavy", "constant_groups", "wide"])
@pytest.mark.parametrize("shape", [(1, G), (7, 2 * G), (64, 2048)])
def test_c_and_numpy_quantize_bit_identical(kind, shape):
    rng = np.random.default_rng(hash((kind, shape)) % 2**32)
    w = weights(rng, *shape, kind)
    qs_c, p_c = _C.q4_quantize(w)
    qs_n, p_n = quant.quantize(w)
    np.testing.assert_array_equal(qs_c, qs_n)
    np.testing.assert_array_equal(p_c, p_n)
    d_c = _C.q4_dequantize(qs_c, p_c)
    np.testing.assert_array_equal(d_c, quant.dequantize(qs_n, p_n))
    # error bound: at most half a step per element (+ fp16 rounding of min)
    step = p_n[..., 0].view(np.float16).astype(np.float32)
    err = np.abs(d_c - w).reshape(shape[0], -1, G).max(-1)
    assert np.all(err <= 0.5 * step * 1.01 + np.abs(w).reshape(shape[0], -1, G).max(-1) * 2e-3)


def test_constant_group_is_exact():
    w = np.full((2, G), 0.25, dtype=np.float32)
    np.testing.assert_array_equal(quant.roundtrip(w), w)


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple"):
        _C.q4_quantize(np.zeros((2, G + 1), np.float32))
    w = np.zeros((2, G), np.float32)
    w[1, 3] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        _C.q4_quantize(w)
    w[1, 3] = 1e6  # range too large for fp16 scales
    with pytest.raises(ValueError):
        _C.q4_quantize(w)
    with pytest.raises(ValueError):
        _C.q4_dequantize(np.zeros((2, G // 2), np.uint8), np.zeros((2, 2, 2), np.uint16))


@pytest.mark.parametrize("simd", [False, True])
@pytest.mark.parametrize("M,N,K", [(1, 4, G), (3, 5, 2 * G), (17, 33, 2048), (2, 64, 3072)])
def test_cpu_matmul_kernels(simd, M, N, K):
    rng = np.random.default_rng(M * 1000 + N)
    w = weights(rng, N, K, "gauss")
    x = rng.standard_normal((M, K)).astype(np.float32)
    qs, p = quant.quantize(w)
    y = _C.cpu_matmul_q4(x, qs, p, simd)
    ref = x.astype(np.float64) @ quant.dequantize(qs, p).astype(np.float64).T
    # float32 accumulation over K terms: error ~ sqrt(K) * eps * |x||w|
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5


def test_group_size_comes_from_the_extension():
    assert quant.GROUP == _C.Q4_GROUP == _C.build_info()["q4_group"]
