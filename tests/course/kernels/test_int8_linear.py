"""course.kernels.int8_linear: the fused Linear epilogues give the bits of the separate passes
(int8_gemm, then requantize_prepared / dequantize_accumulators), on the path this CPU takes
and with the AVX2 kernels forced where the CPU has AVX2."""

from __future__ import annotations

import importlib

import pytest
import torch

from course import kernels
from course.kernels import cpu_features
from course.kernels.int8_linear import linear_dequantize, linear_requantize

gemm_module = importlib.import_module("course.kernels.int8_gemm")
AVX2_OK = cpu_features.native_isa() in ("avx2", "avx512")
SHAPES = [(1, 1, 1), (5, 784, 10), (67, 300, 129), (256, 1024, 256)]


@pytest.fixture(params=["default", "avx2"])
def path(request, monkeypatch):
    if request.param == "avx2":
        if not AVX2_OK:
            pytest.skip("no AVX2 on this CPU: the AVX2 kernels are never compiled here")
        monkeypatch.setenv(cpu_features.ISA_ENV, "avx2")
    gemm_module.gemm_backend.cache_clear()
    yield kernels.backend()
    monkeypatch.delenv(cpu_features.ISA_ENV, raising=False)
    gemm_module.gemm_backend.cache_clear()


def _problem(m, k, n, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    q = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    q[0], w[0] = -128, 127
    return q, w, gen


@pytest.mark.parametrize("shape", SHAPES)
def test_linear_requantize_matches_the_separate_passes(path, shape):
    m, k, n = shape
    q, w, gen = _problem(m, k, n, 1)
    packed = kernels.pack_int8(w.t())
    params = kernels.prepare_requantize(
        n, torch.randint(2**30, 2**31 - 1, (n,), generator=gen),
        torch.randint(15, 40, (n,), generator=gen), -3,
        bias=torch.randint(-9999, 9999, (n,), generator=gen), qmin=-3)
    acc = kernels.int8_gemm_reference(q, w.t())
    got = linear_requantize(q, packed, params)
    assert got.dtype == torch.int8 and got.shape == (m, n)
    assert torch.equal(got, kernels.requantize_prepared(acc, params, backend="reference"))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_dequantize_matches_the_separate_passes(path, shape, with_bias):
    m, k, n = shape
    q, w, gen = _problem(m, k, n, 2)
    packed = kernels.pack_int8(w.t())
    w_scale, w_sum = torch.rand(n, generator=gen), w.to(torch.int64).sum(1)
    bias = torch.randn(n, generator=gen) if with_bias else None
    acc = kernels.int8_gemm_reference(q, w.t())
    want = kernels.dequantize_accumulators(acc, 0.013, -9, w_scale, w_sum, bias)
    assert torch.equal(linear_dequantize(q, packed, 0.013, -9, w_scale, w_sum, bias), want)


def test_linear_with_a_full_range_weight_and_bad_input(path):
    """A weight holding -128 takes the widened kernel (no fused one): still the same bits;
    bad input is refused by int8_gemm with the argument named."""
    q, w, gen = _problem(9, 40, 7, 3)
    w[2, 5] = -128
    packed = kernels.pack_int8(w.t())
    params = kernels.prepare_requantize(7, 2**30, 33, 0)
    acc = kernels.int8_gemm_reference(q, w.t())
    assert torch.equal(linear_requantize(q, packed, params),
                       kernels.requantize_prepared(acc, params))
    with pytest.raises(TypeError, match="a must be an int8 tensor"):
        linear_requantize(q.float(), packed, params)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        linear_dequantize(q[:, :3], packed, 0.1, 0, torch.ones(7), torch.zeros(7,
                                                                              dtype=torch.int64))
