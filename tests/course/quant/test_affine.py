"""course.quant against independent references: PyTorch's own fake-quantize ops, float64
math, and hand-worked values; bad input raises errors that name the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course import measure, quant
from course.grading import fixtures
from course.methods import direct


def _away_from_ties(x: torch.Tensor, scale) -> torch.Tensor:
    """Mask of elements whose x / scale is not within 1e-3 of a rounding tie."""
    v = (x.double() / torch.as_tensor(scale, dtype=torch.float64)).abs()
    return (v - v.floor() - 0.5).abs() > 1e-3


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quantize_symmetric_matches_pytorch(bits):
    x = torch.randn(4096, generator=torch.Generator().manual_seed(bits))
    qmax = 2 ** (bits - 1) - 1
    scale = quant.symmetric_scale(x.abs().max().item(), bits)
    ref = torch.fake_quantize_per_tensor_affine(x, scale, 0, -qmax, qmax)
    ours = quant.fake_quantize(x, bits, symmetric=True)
    keep = _away_from_ties(x, scale)
    assert keep.float().mean() > 0.99
    torch.testing.assert_close(ours[keep], ref[keep], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_fake_quantize_affine_matches_pytorch(bits):
    x = torch.rand(2048, generator=torch.Generator().manual_seed(bits)) * 3 - 0.7
    scale, zp = quant.affine_qparams(x.min().item(), x.max().item(), bits)
    ref = torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 2**bits - 1)
    keep = _away_from_ties(x, scale)
    torch.testing.assert_close(quant.fake_quantize(x, bits)[keep], ref[keep], rtol=0, atol=1e-6)
    assert quant.fake_quantize(x, bits).unique().numel() <= 2**bits


@pytest.mark.parametrize(("shape", "axis"), [((8, 5), 0), ((3, 7), 1), ((2, 3, 4), -1),
                                             ((6, 2, 3, 3), 0), ((2, 5, 3, 3), 1)])
def test_per_channel_matches_pytorch(shape, axis):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(len(shape)))
    scale = quant.per_channel_scale(w, 4, axis)
    ax = axis % w.dim()
    ref = torch.fake_quantize_per_channel_affine(
        w, scale.reshape(-1), torch.zeros(w.shape[ax], dtype=torch.int32), ax, -7, 7)
    keep = _away_from_ties(w, scale)
    torch.testing.assert_close(quant.fake_quantize_per_channel(w, 4, axis)[keep], ref[keep],
                               rtol=0, atol=1e-6)
    # each slice has its own max|w| as the top level
    absmax = w.abs().amax(dim=[d for d in range(w.dim()) if d != ax])
    top = quant.fake_quantize_per_channel(w, 4, axis).abs().amax(
        dim=[d for d in range(w.dim()) if d != ax])
    torch.testing.assert_close(top, absmax)


def test_qparams_against_float64_by_hand():
    assert quant.qrange(8, True) == (-128, 127) and quant.qrange(3, False) == (0, 7)
    scale, zp = quant.affine_qparams(-1.0, 3.0, 8)
    assert scale == 4.0 / 255 and zp == round(1.0 / (4.0 / 255))
    assert quant.affine_qparams(0.5, 2.0, 8) == (2.0 / 255, 0)          # widened to 0
    assert quant.affine_qparams(-2.5, 0.5, 2) == (1.0, 2)               # tie -2.5 -> -2
    assert quant.affine_qparams(0.0, 0.0, 8) == (quant.EPS, 0)
    assert quant.symmetric_scale(1.27, 8) == pytest.approx(0.01, rel=1e-15)
    assert quant.symmetric_scale(0.0, 4) == quant.EPS


def test_quantize_rounds_half_to_even_clamps_and_picks_a_small_dtype():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 100.0, -100.0])
    q = quant.quantize(x, 1.0, 0, -8, 7)
    assert q.tolist() == [0, 2, 2, 0, -2, 7, -8] and q.dtype == torch.int8
    assert quant.quantize(x, 1.0, 128, 0, 255).dtype == torch.uint8
    assert quant.quantize(x, 1.0, 0, -(2**15), 2**15 - 1).dtype == torch.int16
    per_channel = quant.quantize(torch.ones(2, 3), torch.tensor([[0.5], [0.25]]), 0, -8, 7)
    assert per_channel.tolist() == [[2, 2, 2], [4, 4, 4]]


def test_dequantize_inverts_quantize_within_half_a_step():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scale, zp = quant.affine_qparams(-1.0, 1.0, 8)
    err = (quant.dequantize(quant.quantize(x, scale, zp, 0, 255), scale, zp) - x).abs()
    assert err.max() <= scale / 2 + 1e-7
    extremes = quant.dequantize(torch.tensor([-128, 127], dtype=torch.int8), 0.5, 127)
    assert extremes.tolist() == [-127.5, 0.0] and extremes.dtype == torch.float32


def test_sqnr_matches_float64_and_the_six_db_rule():
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(1))
    x_hat = quant.fake_quantize(x, 8, symmetric=True)
    xd, nd = x.double().numpy(), (x - x_hat).double().numpy()
    assert measure.sqnr_db(x, x_hat) == pytest.approx(10 * np.log10((xd**2).sum() / (nd**2).sum()))
    gains = [measure.sqnr_db(x, quant.fake_quantize(x, b + 1, True)) -
             measure.sqnr_db(x, quant.fake_quantize(x, b, True)) for b in range(4, 8)]
    assert all(5.0 < g < 7.0 for g in gains), gains
    assert measure.sqnr_db(x, x.clone()) == float("inf")


@pytest.mark.parametrize("per_channel", [False, True])
def test_direct_quantize_changes_only_weights_of_a_copy(per_channel):
    model = fixtures.build("conv_linear", 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = direct.direct_quantize(model, 3, per_channel=per_channel)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"input changed: {k}"
    for k, v in out.state_dict().items():
        if k in ("0.weight", "4.weight"):
            fq = quant.fake_quantize_per_channel if per_channel else (
                lambda w, b: quant.fake_quantize(w, b, symmetric=True))
            assert torch.equal(v, fq(before[k], 3)) and not torch.equal(v, before[k])
        else:
            assert torch.equal(v, before[k]), f"{k} must stay untouched"
    assert out(torch.randn(2, 2, 4, 4)).shape == (2, 4)


def test_one_bit_weights_through_the_sign_quantizer():
    w = torch.tensor([[1.0, -3.0, 0.0], [0.5, 0.5, -2.0]])
    assert quant.sign(torch.tensor([0.0, -0.0, -1e-9])).tolist() == [1.0, 1.0, -1.0]
    torch.testing.assert_close(quant.binarize(w), torch.tensor([[4 / 3, -4 / 3, 4 / 3],
                                                                [1.0, 1.0, -1.0]]))
    assert quant.binarize(w, per_channel=False).abs().unique().tolist() == [pytest.approx(7 / 6)]
    model = direct.map_weights(nn.Sequential(nn.Linear(3, 2)), quant.binarize)
    assert model[0].weight.abs().unique(dim=1).shape[1] <= 3
    # alpha = mean|w| minimises ||w - a sign(w)||^2 over a
    ws = torch.randn(50, generator=torch.Generator().manual_seed(2))
    alphas = torch.linspace(0.1, 2.0, 400)
    errs = [((ws - a * quant.sign(ws)) ** 2).sum() for a in alphas]
    assert abs(alphas[int(torch.stack(errs).argmin())] - ws.abs().mean()) < 0.01


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda: quant.qrange(8.0, True), TypeError, "num_bits"),
        (lambda: quant.qrange(0, True), ValueError, "num_bits"),
        (lambda: quant.qrange(17, False), ValueError, "num_bits"),
        (lambda: quant.qrange(8, 1), TypeError, "signed"),
        (lambda: quant.affine_qparams(1.0, 0.0, 8), ValueError, "x_min"),
        (lambda: quant.affine_qparams(float("nan"), 1.0, 8), ValueError, "x_min"),
        (lambda: quant.affine_qparams("0", 1.0, 8), TypeError, "x_min"),
        (lambda: quant.symmetric_scale(1.0, 1), ValueError, "num_bits"),
        (lambda: quant.symmetric_scale(-1.0, 8), ValueError, "x_absmax"),
        (lambda: quant.quantize(torch.ones(2), 0.0, 0, 0, 255), ValueError, "scale"),
        (lambda: quant.quantize(torch.ones(2), -1.0, 0, 0, 255), ValueError, "scale"),
        (lambda: quant.quantize(torch.ones(2), 1.0, 0, 5, 5), ValueError, "qmin"),
        (lambda: quant.quantize(torch.ones(2), 1.0, 300, 0, 255), ValueError, "zero_point"),
        (lambda: quant.quantize(torch.ones(2), 1.0, 0.5, 0, 255), ValueError, "zero_point"),
        (lambda: quant.quantize(torch.ones(2, dtype=torch.int32), 1.0, 0, 0, 255), TypeError, "x"),
        (lambda: quant.quantize([1.0], 1.0, 0, 0, 255), TypeError, "x"),
        (lambda: quant.quantize(torch.ones(2, 3), torch.ones(4), 0, 0, 255), ValueError, "scale"),
        (lambda: quant.quantize(torch.ones(2), 1.0, 0, 0, 255, dtype=torch.int8), ValueError,
         "dtype"),
        (lambda: quant.dequantize(torch.ones(2), 1.0, 0), TypeError, "q"),
        (lambda: quant.fake_quantize(torch.tensor([1.0, float("nan")]), 8), ValueError, "x"),
        (lambda: quant.fake_quantize(torch.ones(2), 1, symmetric=True), ValueError, "num_bits"),
        (lambda: quant.fake_quantize_per_channel(torch.ones(2, 2), 4, axis=2), ValueError, "axis"),
        (lambda: quant.fake_quantize_per_channel(torch.ones(2, 2), 4, axis=0.5), TypeError,
         "axis"),
        (lambda: direct.direct_quantize(nn.ReLU(), 8), ValueError, "no layer to quantize"),
        (lambda: direct.direct_quantize("model", 8), TypeError, "model"),
        (lambda: direct.direct_quantize(nn.Linear(2, 2), 1), ValueError, "binarize"),
    ],
)
def test_bad_input_is_a_clear_error(call, error, names):
    with pytest.raises(error, match=names):
        call()
