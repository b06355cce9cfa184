"""course.nn.fake_quant: the FakeQuantize module and its switches.

Forward against PyTorch's fake_quantize_per_tensor_affine / per_channel_affine with the
module's qparams; the moving-average range against a plain float64 loop; observers that
move only in training mode; the gradient (clipped identity); state dict round trips; bad
input refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course.methods.ptq import MinMaxObserver
from course.nn.fake_quant import (
    FakeQuantize,
    enable_fake_quant,
    fake_quantizers,
    freeze_observers,
)

TIE_MARGIN = 1e-3


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batches(n: int, seed: int, shape=(64, 16)) -> list[torch.Tensor]:
    return [torch.randn(shape, generator=_gen(seed + i)) * (1 + i) + 0.3 * i for i in range(n)]


def _away_from_ties(x: torch.Tensor, scale) -> torch.Tensor:
    frac = torch.frac((x.double() / torch.as_tensor(scale, dtype=torch.float64)).abs())
    return (frac - 0.5).abs() > TIE_MARGIN


def _moving_average_range(batches: list[torch.Tensor], c: float) -> tuple[float, float]:
    lo = hi = None
    for b in batches:
        b_lo, b_hi = float(b.double().min()), float(b.double().max())
        if lo is None:
            lo, hi = b_lo, b_hi
        else:
            lo += c * (b_lo - lo)
            hi += c * (b_hi - hi)
    return lo, hi


def _affine(lo: float, hi: float, bits: int) -> tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (2**bits - 1)
    return scale, min(max(round(-lo / scale), 0), 2**bits - 1)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_activation_quantizer_tracks_the_moving_average_and_matches_torch(bits):
    fq = FakeQuantize.for_activations(bits).train()
    batches = _batches(6, seed=bits)
    for b in batches:
        out = fq(b)
    lo, hi = _moving_average_range(batches, fq.observer.averaging_constant)
    assert fq.observer.range() == pytest.approx((lo, hi), rel=1e-6)
    ref_scale, ref_zp = _affine(lo, hi, bits)
    scale, zero_point = fq.qparams()
    assert scale == pytest.approx(ref_scale, rel=1e-6) and zero_point == ref_zp
    ref = torch.fake_quantize_per_tensor_affine(batches[-1], scale, zero_point, 0, 2**bits - 1)
    keep = _away_from_ties(batches[-1], scale)
    torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=1e-6)
    assert out.unique().numel() <= 2**bits


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_weight_quantizer_is_per_channel_symmetric_and_matches_torch(bits):
    w = torch.randn(6, 4, 3, 3, generator=_gen(20)) * torch.arange(1, 7).view(6, 1, 1, 1)
    fq = FakeQuantize.for_weights(bits).train()
    out = fq(w)
    qmax = 2 ** (bits - 1) - 1
    ref_scale = (w.double().abs().amax(dim=(1, 2, 3)) / qmax).float()
    scale, zero_point = fq.qparams()
    torch.testing.assert_close(scale, ref_scale, rtol=1e-6, atol=0)
    assert torch.equal(zero_point, torch.zeros(6, dtype=torch.int64))
    ref = torch.fake_quantize_per_channel_affine(w, ref_scale, torch.zeros(6, dtype=torch.int32),
                                                 0, -qmax, qmax)
    keep = _away_from_ties(w, ref_scale.view(6, 1, 1, 1))
    torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=1e-6)
    for c in range(6):
        assert out[c].unique().numel() <= 2 * qmax + 1


def test_observers_update_only_in_training_mode():
    fq = FakeQuantize.for_activations(4)
    first, wide = torch.linspace(0, 1, 100), torch.linspace(-5, 20, 100)
    fq.train()(first)
    state = {k: v.clone() for k, v in fq.state_dict().items()}
    observer_range = fq.observer.range()
    out = fq.eval()(wide)
    assert all(torch.equal(v, fq.state_dict()[k]) for k, v in state.items())
    assert fq.observer.range() == observer_range
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)  # clipped to the old range
    fq.train()(wide)
    assert fq.batches.item() == 2 and fq.qparams()[0] > state["scale"].item()


def test_frozen_observer_keeps_qparams_in_training_mode():
    fq = FakeQuantize.for_weights(4).train()
    w = torch.randn(3, 5, generator=_gen(30))
    fq(w)
    scale = fq.qparams()[0]
    fq.enable_observer(False)
    out = fq(w * 10)
    assert torch.equal(fq.qparams()[0], scale) and fq.batches.item() == 1
    assert torch.allclose(out.abs().amax(dim=1), scale * 7)  # clamped at the frozen range
    fq.enable_observer(True)(w * 10)
    torch.testing.assert_close(fq.qparams()[0], scale * 10)


def test_disabled_fake_quant_is_the_identity_but_still_observes():
    fq = FakeQuantize.for_activations(3).train().enable_fake_quant(False)
    x = torch.randn(50, generator=_gen(31))
    assert torch.equal(fq(x), x) and fq.observed


def test_gradient_is_the_clipped_identity_of_the_quantizer_range():
    fq = FakeQuantize.for_activations(4).train()
    fq(torch.linspace(-1.0, 2.0, 64))
    scale, zp = fq.qparams()
    lo, hi = (0 - zp) * scale, (15 - zp) * scale
    x = torch.linspace(-3.0, 4.0, 701, requires_grad=True)
    fq.eval()(x).sum().backward()
    expected = ((x.detach() >= lo) & (x.detach() <= hi)).float()
    assert torch.equal(x.grad, expected)


def test_minmax_observer_option_matches_course_ptq():
    fq = FakeQuantize.for_activations(8, observer="minmax").train()
    ref = MinMaxObserver()
    for b in _batches(4, seed=40):
        fq(b)
        ref.update(b)
    scale, zp = fq.qparams()
    ref_scale, ref_zp = ref.qparams(8)
    assert scale == pytest.approx(ref_scale, rel=1e-7) and zp == ref_zp


def test_quantizing_before_observing_is_an_error():
    fq = FakeQuantize.for_activations(8).eval()
    with pytest.raises(RuntimeError, match="observed nothing"):
        fq(torch.zeros(3))
    with pytest.raises(RuntimeError, match="observed nothing"):
        fq.qparams()
    fq.train()(torch.ones(3))
    fq.reset()
    assert not fq.observed


def test_state_dict_round_trip_restores_per_channel_qparams():
    w = torch.randn(5, 7, generator=_gen(50))
    fq = FakeQuantize.for_weights(3).train()
    fq(w)
    fresh = FakeQuantize.for_weights(3)
    fresh.load_state_dict(fq.state_dict())
    x = torch.randn(5, 7, generator=_gen(51)) * 2
    assert torch.equal(fresh.eval()(x), fq.eval()(x))


def test_model_wide_switches():
    model = nn.Sequential(FakeQuantize.for_activations(8), nn.Linear(3, 3),
                          FakeQuantize.for_activations(4))
    assert len(fake_quantizers(model)) == 2
    assert freeze_observers(model) == 2
    assert not any(fq.observer_enabled for fq in fake_quantizers(model))
    freeze_observers(model, frozen=False)
    assert all(fq.observer_enabled for fq in fake_quantizers(model))
    assert enable_fake_quant(model, False) == 2
    x = torch.randn(4, 3, generator=_gen(60))
    with torch.no_grad():
        assert torch.equal(model.train()(x), model[1](x))
    with pytest.raises(ValueError, match="no FakeQuantize"):
        freeze_observers(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="frozen must be a bool"):
        freeze_observers(model, frozen=1)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_bits": 1}, ValueError, "at least 2 bits"),
    ({"num_bits": 0}, ValueError, "at least 2 bits"),
    ({"num_bits": 17}, ValueError, "num_bits must be between 2 and 16"),
    ({"num_bits": 4.0}, TypeError, "num_bits must be an int"),
    ({"num_bits": True}, TypeError, "num_bits must be an int"),
    ({"symmetric": 1}, TypeError, "symmetric must be a bool"),
    ({"axis": 0}, ValueError, "symmetric only"),
    ({"axis": 0.5, "symmetric": True}, TypeError, "axis must be an int"),
    ({"axis": 0, "symmetric": True, "observer": "minmax"}, ValueError, "per tensor only"),
    ({"observer": "median"}, ValueError, "unknown observer"),
    ({"observer": 3}, TypeError, "observer_factory must be"),
    ({"observer": lambda: "not an observer"}, TypeError, "course.observe Observer"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        FakeQuantize(**kwargs)


def test_bad_inputs_are_refused():
    fq = FakeQuantize.for_weights(4).train()
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        fq(torch.arange(4))
    fq(torch.randn(3, 2, generator=_gen(70)))
    with pytest.raises(ValueError, match="channels"):
        fq.eval()(torch.randn(4, 2, generator=_gen(71)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        FakeQuantize.for_activations(8).train()(torch.tensor([0.0, math.nan]))
