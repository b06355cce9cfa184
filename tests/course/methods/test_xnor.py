"""XNOR-Net / BWN: sign STE, scales, layers, packed inference forms, model conversion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course.measure import model_size_bytes, tensor_bytes
from course.methods.xnor import (
    BinaryConv2d,
    BinaryLinear,
    PackedBinaryConv2d,
    PackedBinaryLinear,
    PackedXNORConv2d,
    PackedXNORLinear,
    XNORConv2d,
    XNORLinear,
    binarize_model,
    binary_weight,
    input_scale,
    input_scale_map,
    pack_model,
    sign_ste,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sign64(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, 1.0, -1.0).double()


def test_sign_ste_forward_and_clipped_gradient():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.7, 1.0, 1.0001, 5.0], requires_grad=True)
    out = sign_ste(x)
    assert torch.equal(out, torch.tensor([-1.0, -1, -1, 1, 1, 1, 1, 1]))
    upstream = torch.arange(1.0, 9.0)
    out.backward(upstream)
    assert torch.equal(x.grad, upstream * torch.tensor([0.0, 1, 1, 1, 1, 1, 0, 0]))


def test_sign_ste_without_clip_passes_the_gradient():
    x = torch.tensor([-3.0, 0.5, 4.0], requires_grad=True)
    sign_ste(x, clip=None).backward(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(x.grad, torch.tensor([1.0, 2.0, 3.0]))
    y = torch.tensor([-3.0, 0.5, 4.0], requires_grad=True)
    sign_ste(y, clip=3.0).sum().backward()
    assert torch.equal(y.grad, torch.tensor([1.0, 1.0, 0.0]))


def test_sign_ste_checks():
    with pytest.raises(ValueError, match="clip"):
        sign_ste(torch.ones(2), clip=0.0)
    with pytest.raises(TypeError, match="floating-point"):
        sign_ste(torch.ones(2, dtype=torch.int64))


def test_binary_weight_forward_and_gradient():
    w = torch.randn(6, 10, generator=gen(0), dtype=torch.float64) * 1.2
    w.requires_grad_(True)
    upstream = torch.randn(6, 10, generator=gen(1), dtype=torch.float64)
    out = binary_weight(w)
    alpha = w.detach().abs().mean(dim=1, keepdim=True)
    assert torch.allclose(out, alpha * sign64(w.detach()))
    out.backward(upstream)
    expected = alpha * upstream * (w.detach().abs() <= 1)
    assert torch.allclose(w.grad, expected)
    per_tensor = binary_weight(w.detach(), per_channel=False)
    assert torch.allclose(per_tensor, w.detach().abs().mean() * sign64(w.detach()))


def test_input_scales_against_loops():
    x = torch.randn(3, 4, 5, 6, generator=gen(2), dtype=torch.float64)
    beta = input_scale(x.reshape(3, -1))
    assert torch.allclose(beta[:, 0], torch.tensor([x[i].abs().mean() for i in range(3)]))
    k_map = input_scale_map(x, (3, 2), stride=(2, 1), padding=(1, 0))
    a = x.abs().mean(dim=1)
    padded = F.pad(a, (0, 0, 1, 1))
    out_h, out_w = (5 + 2 - 3) // 2 + 1, (6 - 2) // 1 + 1
    assert k_map.shape == (3, 1, out_h, out_w)
    for n in range(3):
        for oy in range(out_h):
            for ox in range(out_w):
                window = padded[n, 2 * oy:2 * oy + 3, ox:ox + 2]
                assert torch.isclose(k_map[n, 0, oy, ox], window.sum() / 6)


def test_xnor_linear_forward_and_analytic_gradient():
    torch.manual_seed(3)
    layer = XNORLinear(12, 5).double()
    x = (torch.randn(4, 12, generator=gen(4), dtype=torch.float64) * 1.5).requires_grad_(True)
    upstream = torch.randn(4, 5, generator=gen(5), dtype=torch.float64)
    out = layer(x)
    w = layer.weight.detach()
    wb = w.abs().mean(dim=1, keepdim=True) * sign64(w)
    s = sign64(x.detach())
    beta = x.detach().abs().mean(dim=1, keepdim=True)
    assert torch.allclose(out, beta * (s @ wb.T) + layer.bias.detach())
    out.backward(upstream)
    # d/dx of beta(x) * (sign(x) @ Wb.T): the beta term, plus beta times the STE term.
    through_beta = (upstream * (s @ wb.T)).sum(dim=1, keepdim=True) * torch.sign(x.detach()) / 12
    through_sign = beta * (upstream @ wb) * (x.detach().abs() <= 1)
    assert torch.allclose(x.grad, through_beta + through_sign)


def test_binary_linear_gradient_reaches_weight_through_ste():
    layer = BinaryLinear(8, 3).double()
    with torch.no_grad():
        layer.weight.mul_(4)  # some weights beyond |w| > 1: their gradient is cancelled
    x = torch.randn(5, 8, generator=gen(6), dtype=torch.float64)
    upstream = torch.randn(5, 3, generator=gen(7), dtype=torch.float64)
    layer(x).backward(upstream)
    w = layer.weight.detach()
    alpha = w.abs().mean(dim=1, keepdim=True)
    assert torch.allclose(layer.weight.grad, alpha * (upstream.T @ x) * (w.abs() <= 1))


def test_xnor_conv_matches_formula_with_k_map():
    torch.manual_seed(8)
    layer = XNORConv2d(5, 7, 3, stride=2, padding=1).double()
    x = torch.randn(2, 5, 9, 8, generator=gen(9), dtype=torch.float64)
    x[x.abs() < 0.2] = 0.0
    w = layer.weight.detach()
    wb = w.abs().mean(dim=(1, 2, 3), keepdim=True) * sign64(w)
    conv = F.conv2d(sign64(F.pad(x, (1, 1, 1, 1))), wb, stride=2)
    k_map = F.avg_pool2d(x.abs().mean(dim=1, keepdim=True), 3, 2, 1, count_include_pad=True)
    expected = conv * k_map + layer.bias.detach().view(1, -1, 1, 1)
    assert torch.allclose(layer(x), expected)


def test_xnor_conv_refuses_groups_and_dilation():
    with pytest.raises(ValueError, match="groups=1"):
        XNORConv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="dilation"):
        PackedBinaryConv2d.from_layer(nn.Conv2d(4, 4, 3, dilation=2))


@pytest.mark.parametrize(("layer", "shape"), [
    (BinaryLinear(70, 33), (9, 70)),
    (XNORLinear(70, 33), (9, 70)),
    (XNORLinear(64, 10, bias=False), (3, 2, 64)),
    (BinaryConv2d(70, 17, 3, stride=2, padding=1), (3, 70, 9, 8)),
    (XNORConv2d(70, 17, 3, stride=2, padding=1), (3, 70, 9, 8)),
    (XNORConv2d(3, 8, (3, 1), stride=(1, 2), padding=(0, 1), bias=False), (2, 3, 6, 7)),
])
def test_packed_form_computes_the_same(layer, shape):
    x = torch.randn(shape, generator=gen(10))
    packed = layer.to_packed()
    with torch.no_grad():
        torch.testing.assert_close(packed(x), layer(x), rtol=1e-5, atol=1e-5)


def test_packed_state_dict_holds_bits_and_scales():
    layer = XNORLinear(512, 64)
    packed = layer.to_packed()
    state = packed.state_dict()
    assert set(state) == {"weight_bits", "alpha", "bias"}
    assert tensor_bytes(state["weight_bits"]) * 32 == tensor_bytes(layer.weight)
    assert model_size_bytes(packed) == 512 * 64 // 8 + 64 * 4 + 64 * 4
    fresh = PackedXNORLinear(torch.zeros(64, 512), torch.zeros(64))
    fresh.load_state_dict(state)
    x = torch.randn(4, 512, generator=gen(11))
    assert torch.equal(fresh(x), packed(x))
    conv = PackedXNORConv2d.from_layer(XNORConv2d(64, 8, 3))
    assert tensor_bytes(conv.weight_bits) * 32 == 8 * 64 * 9 * 4
    assert isinstance(BinaryLinear(3, 2).to_packed(), PackedBinaryLinear)


def test_binarize_and_pack_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.BatchNorm1d(16),
                          nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model.eval()
    binary = binarize_model(model, binary_inputs=True, float_inputs=("1",), skip=("5",))
    assert type(binary[1]) is BinaryLinear
    assert type(binary[3]) is XNORLinear
    assert type(binary[5]) is nn.Linear
    assert type(model[1]) is nn.Linear  # the input model is untouched
    assert torch.equal(binary[3].weight, model[3].weight)
    bwn = binarize_model(model)
    assert type(bwn[3]) is BinaryLinear
    packed = pack_model(binary)
    assert type(packed[1]) is PackedBinaryLinear and type(packed[3]) is PackedXNORLinear
    x = torch.randn(6, 20, generator=gen(12))
    with torch.no_grad():
        torch.testing.assert_close(packed(x), binary(x), rtol=1e-5, atol=1e-5)
    # Each packed layer stores ceil(in / 64) words per output plus alpha instead of floats.
    saved = sum(4 * out * inp - (8 * out * -(-inp // 64) + 4 * out)
                for out, inp in ((16, 20), (8, 16)))
    assert model_size_bytes(packed) == model_size_bytes(model) - saved
    with pytest.raises(ValueError, match="does not have"):
        binarize_model(model, skip=("fc9",))
