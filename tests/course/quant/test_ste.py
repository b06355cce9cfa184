"""course.quant.ste: the straight-through estimator of fake quantization.

Forward against course.quant's quantize -> dequantize and PyTorch's own fake-quantize ops;
backward against autograd of the hand formula clamp(x, lo, hi) in float64, against central
finite differences of that formula, and against PyTorch's fake-quantize gradient."""

from __future__ import annotations

import pytest
import torch

from course.quant import dequantize, quantize
from course.quant.ste import FakeQuantizeSTE, clipping_range, fake_quantize_ste

TIE_MARGIN = 1e-3
"""Elements whose x / scale lies this close to a half-integer are left out of comparisons
with PyTorch's ops, which multiply by 1 / scale instead of dividing (rounding ties)."""


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _away_from_ties(x: torch.Tensor, scale) -> torch.Tensor:
    frac = torch.frac((x.double() / torch.as_tensor(scale, dtype=torch.float64)).abs())
    return (frac - 0.5).abs() > TIE_MARGIN


@pytest.mark.parametrize("scale, zero_point, qmin, qmax", [
    (0.05, 128, 0, 255),      # 8-bit asymmetric
    (0.3, 3, 0, 15),          # 4-bit asymmetric
    (0.2, 0, -7, 7),          # 4-bit symmetric restricted
    (0.5, 0, -1, 1),          # 2-bit symmetric: ternary
])
def test_forward_equals_quantize_then_dequantize(scale, zero_point, qmin, qmax):
    x = torch.randn(1000, generator=_gen(0)) * 4
    got = fake_quantize_ste(x, scale, zero_point, qmin, qmax)
    ref = dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert torch.equal(got, ref)


def test_forward_matches_torch_fake_quantize_per_tensor_affine():
    x = torch.randn(4000, generator=_gen(1)) * 3
    for scale, zp, qmin, qmax in [(0.05, 100, 0, 255), (0.4, 2, 0, 7), (0.25, 0, -3, 3)]:
        got = fake_quantize_ste(x, scale, zp, qmin, qmax)
        ref = torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
        keep = _away_from_ties(x, scale)
        assert keep.float().mean() > 0.99
        torch.testing.assert_close(got[keep], ref[keep], rtol=0, atol=1e-6)


def test_forward_matches_torch_fake_quantize_per_channel_affine():
    w = torch.randn(8, 3, 3, 3, generator=_gen(2))
    scale = torch.rand(8, generator=_gen(3)) * 0.3 + 0.05
    got = fake_quantize_ste(w, scale.view(8, 1, 1, 1), 0, -7, 7)
    ref = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(8, dtype=torch.int32),
                                                 0, -7, 7)
    keep = _away_from_ties(w, scale.view(8, 1, 1, 1))
    torch.testing.assert_close(got[keep], ref[keep], rtol=0, atol=1e-6)


def _grad(fn, x: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    fn(x).backward(upstream)
    return x.grad


@pytest.mark.parametrize("scale, zero_point, qmin, qmax", [
    (0.1, 20, 0, 255), (0.5, 1, 0, 3), (0.25, 0, -7, 7), (1.0, 0, -1, 1)])
def test_gradient_is_the_clipped_identity_of_the_hand_formula(scale, zero_point, qmin, qmax):
    lo, hi = clipping_range(scale, zero_point, qmin, qmax)
    inside = torch.linspace(lo, hi, 50, dtype=torch.float64)
    x = torch.cat([torch.randn(500, generator=_gen(4), dtype=torch.float64) * 3 * hi,
                   inside, torch.tensor([lo, hi, lo - 1e-6, hi + 1e-6], dtype=torch.float64)])
    upstream = torch.randn(x.shape, generator=_gen(5), dtype=torch.float64)
    got = _grad(lambda t: fake_quantize_ste(t, scale, zero_point, qmin, qmax), x, upstream)
    # the hand formula: upstream where lo <= x <= hi, ends included (torch.clamp's gradient
    # at its bounds is 1 in torch 2.13 but 0 in 2.14, so it is no reference here)
    ref = upstream * ((x >= lo) & (x <= hi)).to(torch.float64)
    assert torch.equal(got, ref)
    # ends included, values just outside cut off
    assert torch.equal(got[-4:], upstream[-4:] * torch.tensor([1.0, 1.0, 0.0, 0.0],
                                                             dtype=torch.float64))


def test_gradient_matches_finite_differences_of_the_clip_away_from_its_corners():
    scale, zero_point, qmin, qmax = 0.2, 5, 0, 15
    lo, hi = clipping_range(scale, zero_point, qmin, qmax)
    h = 1e-6
    x = torch.randn(2000, generator=_gen(6), dtype=torch.float64) * 3
    x = x[((x - lo).abs() > 10 * h) & ((x - hi).abs() > 10 * h)]  # the clip's corners

    def clip(t: torch.Tensor) -> torch.Tensor:
        return torch.clamp(t, lo, hi)

    finite_diff = (clip(x + h) - clip(x - h)) / (2 * h)
    got = _grad(lambda t: fake_quantize_ste(t, scale, zero_point, qmin, qmax), x,
                torch.ones_like(x))
    torch.testing.assert_close(got, finite_diff, rtol=0, atol=1e-6)
    assert 0 < got.mean() < 1  # both regimes present


def test_gradient_matches_torch_fake_quantize_away_from_the_range_ends():
    # PyTorch tests the *rounded* code against [qmin, qmax]; the STE here tests x against
    # the real clipping range. They differ only within half a step of either end.
    scale, zp, qmin, qmax = 0.1, 30, 0, 63
    lo, hi = clipping_range(scale, zp, qmin, qmax)
    x = torch.randn(3000, generator=_gen(7)) * 4
    x = x[((x - lo).abs() > scale) & ((x - hi).abs() > scale)]
    upstream = torch.randn(x.shape, generator=_gen(8))
    got = _grad(lambda t: fake_quantize_ste(t, scale, zp, qmin, qmax), x, upstream)
    ref = _grad(lambda t: torch.fake_quantize_per_tensor_affine(t, scale, zp, qmin, qmax), x,
                upstream)
    assert torch.equal(got, ref)


def test_per_channel_gradient_uses_each_channels_range():
    scale = torch.tensor([0.1, 1.0]).view(2, 1)
    x = torch.tensor([[0.05, 0.5, -2.0], [0.05, 0.5, -2.0]])
    got = _grad(lambda t: fake_quantize_ste(t, scale, 0, -3, 3), x, torch.ones_like(x))
    # channel 0 keeps [-0.3, 0.3], channel 1 keeps [-3, 3]
    assert torch.equal(got, torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))


def test_no_gradient_reaches_scale_or_zero_point():
    x = torch.randn(10, generator=_gen(9), requires_grad=True)
    scale = torch.full((10,), 0.1, requires_grad=True)
    FakeQuantizeSTE.apply(x, scale, 0, -7, 7).sum().backward()
    assert scale.grad is None and x.grad is not None


def test_float64_in_float64_out():
    x = torch.randn(5, dtype=torch.float64, generator=_gen(10))
    assert fake_quantize_ste(x, 0.1, 0, -7, 7).dtype == torch.float64


@pytest.mark.parametrize("args, error, match", [
    (([1.0, 2.0], 0.1, 0, 0, 255), TypeError, "x must be a torch.Tensor"),
    ((torch.arange(3), 0.1, 0, 0, 255), TypeError, "x must have a floating-point dtype"),
    ((torch.zeros(3), 0.1, 0, 5, 5), ValueError, "qmin must be smaller than qmax"),
    ((torch.zeros(3), 0.1, 0, 0.5, 5), ValueError, "qmin and qmax must be integers"),
    ((torch.zeros(3), 0.0, 0, 0, 255), ValueError, "scale must be > 0"),
    ((torch.zeros(3), torch.tensor([0.1, -0.1, 0.1]), 0, 0, 255), ValueError,
     "scale must be > 0"),
    ((torch.zeros(3), 0.1, 300, 0, 255), ValueError, "zero_point must lie in"),
    ((torch.zeros(3), 0.1, 0.5, 0, 255), ValueError, "zero_point must be an integer"),
    ((torch.zeros(3), torch.ones(4), 0, 0, 255), ValueError, "does not broadcast"),
])
def test_bad_input_is_refused_with_a_message_naming_it(args, error, match):
    with pytest.raises(error, match=match):
        fake_quantize_ste(*args)
