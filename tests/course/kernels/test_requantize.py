"""Fixed-point requantization against a Python-integer loop and float64 math: multipliers
within 2**-31 relative error, the fused and the separate-op paths bit-identical to the
reference, results within 1 LSB of float rounding, ties toward +infinity, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from course.kernels.requantize import (
    INT32_MAX,
    INT32_MIN,
    MULTIPLIER_MAX,
    MULTIPLIER_MIN,
    prepare_requantize,
    quantize_multiplier,
    quantize_multiplier_per_channel,
    requantize,
    requantize_prepared,
    requantize_reference,
)

FAST_BACKENDS = ("numba", "torch")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


REALS = [2.0**-32, 1e-9, 3.7e-5, 0.1, 0.25, 0.5, 1 - 2**-40, 1.0, 3.0, 2.0**30 * (1 - 2**-20)]


@pytest.mark.parametrize("real", REALS)
def test_quantize_multiplier_is_normalized_and_accurate(real):
    m, shift = quantize_multiplier(real)
    assert MULTIPLIER_MIN <= m <= MULTIPLIER_MAX
    assert 1 <= shift <= 62
    assert abs(math.ldexp(m, -shift) - real) <= real * 2.0**-31


def test_quantize_multiplier_renormalizes_a_rounded_up_mantissa():
    m, shift = quantize_multiplier(1 - 2**-40)  # the fraction rounds to 2**31 exactly
    assert (m, shift) == (2**30, 30)


def test_quantize_multiplier_per_channel_matches_scalar():
    reals = torch.tensor(REALS, dtype=torch.float64)
    m, s = quantize_multiplier_per_channel(reals)
    assert m.dtype == s.dtype == torch.int32
    assert list(zip(m.tolist(), s.tolist(), strict=True)) == [quantize_multiplier(r)
                                                                for r in REALS]


@pytest.mark.parametrize("bad, error", [(0.0, ValueError), (-0.5, ValueError),
                                        (float("nan"), ValueError), (float("inf"), ValueError),
                                        (2.0**-33, ValueError), (2.0**30, ValueError),
                                        (True, TypeError), ("0.5", TypeError)])
def test_quantize_multiplier_rejects(bad, error):
    with pytest.raises(error, match="real_multiplier"):
        quantize_multiplier(bad)


def _case(seed: int, shape=(37, 11)):
    acc = torch.randint(INT32_MIN, INT32_MAX, shape, generator=_gen(seed), dtype=torch.int32)
    acc.view(-1)[:4] = torch.tensor([INT32_MIN, INT32_MAX, 0, -1], dtype=torch.int32)
    small = torch.randint(-(2**20), 2**20, shape, generator=_gen(seed + 1), dtype=torch.int32)
    acc = torch.where(torch.rand(shape, generator=_gen(seed + 2)) < 0.5, small, acc)
    channels = shape[-1]
    reals = torch.exp(torch.empty(channels, dtype=torch.float64).uniform_(
        math.log(1e-9), math.log(4.0), generator=_gen(seed + 3)))
    m, s = quantize_multiplier_per_channel(reals)
    bias = torch.randint(-(2**31), 2**31 - 1, (channels,), generator=_gen(seed + 4))
    bias[0], bias[-1] = INT32_MAX, INT32_MIN  # saturating add at both ends
    return acc, m, s, bias, reals


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("zero_point, qmin, qmax", [(0, -128, 127), (-128, -128, 127),
                                                    (5, 5, 127), (-3, -100, 90)])
def test_requantize_per_channel_matches_python_integers(backend, zero_point, qmin, qmax):
    acc, m, s, bias, _ = _case(1)
    got = requantize(acc, m, s, zero_point, bias=bias, qmin=qmin, qmax=qmax, backend=backend)
    ref = requantize_reference(acc, m, s, zero_point, bias=bias, qmin=qmin, qmax=qmax)
    assert got.dtype == torch.int8 and got.shape == acc.shape
    assert torch.equal(got, ref)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_requantize_scalar_params_and_channels_last_4d(backend):
    acc = torch.randint(-(2**24), 2**24, (2, 3, 4, 5), generator=_gen(2), dtype=torch.int32)
    m, s = quantize_multiplier(3.1e-5)
    got = requantize(acc, m, s, -7, backend=backend)
    assert torch.equal(got, requantize_reference(acc, m, s, -7))


def test_requantize_rounds_ties_toward_plus_infinity():
    acc = torch.tensor([[-5, -3, -1, 1, 3, 5]], dtype=torch.int32)  # times 0.5: ties
    m, s = quantize_multiplier(0.5)
    for backend in (*FAST_BACKENDS, "reference"):
        assert requantize(acc, m, s, 0, backend=backend).tolist() == [[-2, -1, 0, 1, 2, 3]]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_requantize_within_one_lsb_of_float_rounding(backend):
    acc, m, s, _, reals = _case(3, shape=(200, 16))
    zp = -10
    got = requantize(acc, m, s, zp, backend=backend).to(torch.int64)
    exact = torch.clamp(torch.round(acc.double() * reals) + zp, -128, 127).to(torch.int64)
    assert (got - exact).abs().max().item() <= 1
    inside = (exact > -128) & (exact < 127)
    assert (got[inside] == exact[inside]).double().mean().item() > 0.99


def test_prepared_path_equals_unprepared():
    acc, m, s, bias, _ = _case(4)
    params = prepare_requantize(acc.shape[-1], m, s, 3, bias=bias, qmin=3)
    for backend in (*FAST_BACKENDS, "reference"):
        assert torch.equal(requantize_prepared(acc, params, backend),
                           requantize(acc, m, s, 3, bias=bias, qmin=3))
    with pytest.raises(ValueError, match="channels"):
        requantize_prepared(acc[:, :3], params)
    with pytest.raises(TypeError, match="RequantParams"):
        requantize_prepared(acc, (m, s))


ACC = torch.zeros(2, 3, dtype=torch.int32)
GOOD = {"multiplier": 2**30, "shift": 31, "zero_point": 0}


@pytest.mark.parametrize("acc, override, error, match", [
    (ACC.float(), {}, TypeError, "acc must be an int32"),
    (ACC.to(torch.int64), {}, TypeError, "acc must be an int32"),
    (torch.tensor(5, dtype=torch.int32), {}, ValueError, "at least one dimension"),
    (ACC, {"multiplier": 2**31}, ValueError, "multiplier"),
    (ACC, {"multiplier": 2**29}, ValueError, "multiplier"),
    (ACC, {"multiplier": 0.5}, TypeError, "multiplier"),
    (ACC, {"multiplier": torch.tensor([2**30, 2**30])}, ValueError, "multiplier"),
    (ACC, {"shift": 0}, ValueError, "shift"),
    (ACC, {"shift": 63}, ValueError, "shift"),
    (ACC, {"zero_point": 128}, ValueError, "zero_point"),
    (ACC, {"zero_point": -5, "qmin": 0}, ValueError, "zero_point"),
    (ACC, {"qmin": 10, "qmax": 10}, ValueError, "qmin"),
    (ACC, {"qmax": 200}, ValueError, "qmax"),
    (ACC, {"bias": torch.ones(3)}, TypeError, "bias"),
    (ACC, {"bias": torch.tensor([2**31, 0, 0])}, ValueError, "bias"),
    (ACC, {"backend": "fast"}, ValueError, "backend"),
])
def test_requantize_rejects_bad_arguments(acc, override, error, match):
    kwargs = {**GOOD, **override}
    with pytest.raises(error, match=match):
        requantize(acc, **kwargs)
