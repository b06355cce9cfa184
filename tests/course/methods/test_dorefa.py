"""DoReFa quantizers: values against float64 formulas, gradients against analytic
derivatives, and the stochastic gradient quantizer's unbiasedness (seeded)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course.methods.dorefa import (
    DoReFaActivation,
    DoReFaConv2d,
    DoReFaLinear,
    dorefa_model,
    quantize_activations,
    quantize_gradients,
    quantize_k,
    quantize_weights,
    stochastic_quantize_gradient,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def on_grid(values: torch.Tensor, step: torch.Tensor | float, offset=0.0) -> bool:
    position = (values - offset) / step
    return bool(torch.allclose(position, position.round(), atol=1e-6))


def test_quantize_k_levels_and_identity_gradient():
    x = torch.linspace(0, 1, 101, dtype=torch.float64).requires_grad_(True)
    out = quantize_k(x, 3)
    assert torch.allclose(out, torch.round(x.detach() * 7) / 7)
    upstream = torch.randn(101, generator=gen(0), dtype=torch.float64)
    out.backward(upstream)
    assert torch.equal(x.grad, upstream)
    assert quantize_k(x, 32) is x


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_k_bit_weights_forward(bits):
    w = torch.randn(7, 9, generator=gen(bits), dtype=torch.float64)
    out = quantize_weights(w, bits)
    n = 2**bits - 1
    t = torch.tanh(w)
    expected = 2 * torch.round((t / (2 * t.abs().max()) + 0.5) * n) / n - 1
    assert torch.allclose(out, expected)
    assert on_grid(out, 2 / n, offset=-1.0)
    assert out.abs().max() <= 1


@pytest.mark.parametrize("bits", [2, 4])
def test_k_bit_weights_gradient_is_the_derivative_of_tanh_normalisation(bits):
    w = torch.randn(5, 6, generator=gen(10 + bits), dtype=torch.float64).requires_grad_(True)
    upstream = torch.randn(5, 6, generator=gen(20 + bits), dtype=torch.float64)
    quantize_weights(w, bits).backward(upstream)
    # Straight through the rounding, the output is t / M, t = tanh(w), M = max|t|.
    t = torch.tanh(w.detach())
    big_m = t.abs().max()
    top = t.abs().argmax()
    expected = upstream * (1 - t**2) / big_m
    correction = torch.zeros(30, dtype=torch.float64)
    correction[top] = -(upstream * t).sum() / big_m**2 * torch.sign(t.flatten()[top]) \
        * (1 - t.flatten()[top] ** 2)
    assert torch.allclose(w.grad, expected + correction.view(5, 6))


def test_one_bit_weights_are_sign_times_mean_abs_with_identity_gradient():
    w = torch.tensor([[-0.5, 0.0, 2.0], [1.5, -3.0, 0.25]], requires_grad=True)
    out = quantize_weights(w, 1)
    scale = w.detach().abs().mean()
    assert torch.allclose(out, scale * torch.tensor([[-1.0, 1, 1], [1, -1, 1]]))
    upstream = torch.arange(6.0).view(2, 3)
    out.backward(upstream)
    assert torch.equal(w.grad, upstream)
    assert quantize_weights(w, 32) is w


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_activations_clip_then_quantize(bits):
    x = (torch.randn(200, generator=gen(bits), dtype=torch.float64) * 0.8 + 0.5)
    x.requires_grad_(True)
    out = quantize_activations(x, bits)
    n = 2**bits - 1
    assert torch.allclose(out, torch.round(x.detach().clamp(0, 1) * n) / n)
    assert on_grid(out, 1 / n) and out.min() >= 0 and out.max() <= 1
    upstream = torch.randn(200, generator=gen(5), dtype=torch.float64)
    out.backward(upstream)
    inside = (x.detach() >= 0) & (x.detach() <= 1)
    assert torch.equal(x.grad, upstream * inside)
    assert torch.allclose(quantize_activations(x.detach(), 32), x.detach().clamp(0, 1))


def test_gradient_quantizer_reproduces_the_papers_formula():
    grad = torch.randn(3, 4, 5, generator=gen(6), dtype=torch.float64)
    out = stochastic_quantize_gradient(grad, 3, generator=gen(7))
    # The same draw, by the paper's formula: 2m (quantize_k(dr / 2m + 1/2 + N(k)) - 1/2).
    noise = torch.rand(grad.shape, generator=gen(7), dtype=torch.float64) - 0.5
    m = grad.abs().flatten(1).max(dim=1).values.view(3, 1, 1)
    n = 7
    expected = 2 * m * (torch.round((grad / (2 * m) + 0.5) * n + noise).clamp(0, n) / n - 0.5)
    assert torch.allclose(out, expected)
    for i in range(3):  # every value on that sample's grid 2m (j / n - 1/2)
        assert on_grid(out[i], 2 * m[i, 0, 0] / n, offset=-m[i, 0, 0])
    assert (out - grad).abs().max() <= (2 * m / n).max() + 1e-12


def test_gradient_quantizer_is_unbiased_on_average():
    base = torch.randn(4, 50, generator=gen(8), dtype=torch.float64)
    draws = 4000
    out = stochastic_quantize_gradient(base.repeat(draws, 1), 2, generator=gen(9))
    mean = out.view(draws, 4, 50).mean(dim=0)
    m = base.abs().max(dim=1, keepdim=True).values
    step = 2 * m / 3
    # Each draw is off by less than one step; the mean of 4000 has std <= step / (2 sqrt(4000)).
    assert ((mean - base).abs() <= 5 * step / (2 * draws**0.5)).all()
    # Deterministic rounding would be biased by up to half a step: far outside that bound.
    rounded = 2 * m * (torch.round((base / (2 * m) + 0.5) * 3) / 3 - 0.5)
    assert (rounded - base).abs().max() > 10 * (5 * step / (2 * draws**0.5)).max()


def test_gradient_quantizer_edge_cases():
    zeros = torch.zeros(2, 3)
    assert torch.equal(stochastic_quantize_gradient(zeros, 4), zeros)
    one_d = torch.tensor([0.5, -1.0, 0.25])
    out = stochastic_quantize_gradient(one_d, 8, generator=gen(1))
    assert (out - one_d).abs().max() <= 2 / 255 + 1e-6
    assert stochastic_quantize_gradient(one_d, 32) is one_d
    again = stochastic_quantize_gradient(one_d, 8, generator=gen(1))
    assert torch.equal(out, again)


def test_quantize_gradients_is_identity_forward_and_quantizes_backward():
    x = torch.randn(3, 8, generator=gen(2), dtype=torch.float64).requires_grad_(True)
    y = quantize_gradients(x, 2, generator=gen(3))
    assert torch.equal(y, x)
    upstream = torch.randn(3, 8, generator=gen(4), dtype=torch.float64)
    y.backward(upstream)
    assert torch.equal(x.grad, stochastic_quantize_gradient(upstream, 2, generator=gen(3)))


def test_dorefa_linear_forward_and_gradients():
    torch.manual_seed(0)
    layer = DoReFaLinear(10, 4, weight_bits=2, activation_bits=3).double()
    x = torch.rand(6, 10, generator=gen(5), dtype=torch.float64) * 1.4 - 0.2
    x.requires_grad_(True)
    out = layer(x)
    expected = F.linear(quantize_activations(x.detach(), 3),
                        quantize_weights(layer.weight.detach(), 2), layer.bias.detach())
    assert torch.allclose(out, expected)
    out.sum().backward()
    # Float gradients (gradient_bits=32): through the weight quantizer's STE and the clip.
    wq = quantize_weights(layer.weight.detach(), 2)
    inside = (x.detach() >= 0) & (x.detach() <= 1)
    assert torch.allclose(x.grad, wq.sum(dim=0).expand(6, 10) * inside)
    assert torch.allclose(layer.bias.grad, torch.full((4,), 6.0, dtype=torch.float64))


def test_dorefa_layers_quantize_the_output_gradient():
    torch.manual_seed(1)
    layer = DoReFaLinear(5, 3, weight_bits=1, gradient_bits=2).double()
    x = torch.randn(4, 5, generator=gen(6), dtype=torch.float64).requires_grad_(True)
    upstream = torch.randn(4, 3, generator=gen(7), dtype=torch.float64)
    torch.manual_seed(123)
    layer(x).backward(upstream)
    torch.manual_seed(123)
    g_q = stochastic_quantize_gradient(upstream, 2)
    wq = quantize_weights(layer.weight.detach(), 1)
    assert torch.allclose(x.grad, g_q @ wq)
    assert torch.allclose(layer.bias.grad, g_q.sum(dim=0))


def test_dorefa_conv_and_activation_module():
    conv = DoReFaConv2d(3, 4, 3, padding=1, weight_bits=4, activation_bits=2)
    x = torch.randn(2, 3, 6, 6, generator=gen(8))
    expected = F.conv2d(quantize_activations(x, 2), quantize_weights(conv.weight, 4),
                        conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)
    act = DoReFaActivation(2)
    assert torch.equal(act(x), quantize_activations(x, 2))
    assert "weight_bits=4" in repr(conv)


@pytest.mark.parametrize("bad", [0, 17, 31, 33])
def test_bit_widths_are_checked(bad):
    with pytest.raises(ValueError, match="bits must be between 1 and 16, or 32"):
        quantize_weights(torch.ones(3), bad)
    with pytest.raises(ValueError, match="gradient_bits"):
        DoReFaLinear(2, 2, gradient_bits=bad)


def test_bit_width_types_are_checked():
    with pytest.raises(TypeError, match="bits must be an int"):
        quantize_activations(torch.ones(3), 2.0)
    with pytest.raises(TypeError, match="activation_bits must be an int"):
        DoReFaConv2d(1, 1, 1, activation_bits=True)
    with pytest.raises(TypeError, match="generator"):
        quantize_gradients(torch.ones(3), 2, generator=0)


def test_dorefa_model_converts_layers_and_keeps_the_original():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3))
    net = dorefa_model(model, weight_bits=2, activation_bits=4, gradient_bits=8,
                       float_inputs=("0",), skip=("5",))
    assert type(net[0]) is DoReFaConv2d and net[0].activation_bits is None
    assert type(net[3]) is DoReFaLinear and net[3].activation_bits == 4
    assert net[3].weight_bits == 2 and net[3].gradient_bits == 8
    assert type(net[5]) is nn.Linear and type(model[3]) is nn.Linear
    x = torch.rand(2, 1, 4, 4, generator=gen(9))
    hidden = F.relu(F.conv2d(x, quantize_weights(model[0].weight, 2), model[0].bias,
                             padding=1)).flatten(1)
    hidden = F.relu(F.linear(quantize_activations(hidden, 4),
                             quantize_weights(model[3].weight, 2), model[3].bias))
    torch.testing.assert_close(net(x), model[5](hidden))
    with pytest.raises(ValueError, match="does not have"):
        dorefa_model(model, float_inputs=("conv1",))


# ------------------------------------------------------------- the lecture's hands-on 1 bit
from course.methods import dorefa as _dorefa  # noqa: E402


def test_unscaled_one_bit_weights_follow_the_k_bit_formula_like_larq():
    w = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 0.7], requires_grad=True)
    q = _dorefa.quantize_weights(w, 1, scaled_sign=False)
    assert q.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0]  # tanh(0)/.. + 1/2 = 1/2 rounds to 0
    t = torch.tanh(w.detach().double())
    expected = 2 * torch.round(t / (2 * t.abs().max()) + 0.5) - 1
    assert torch.equal(q.detach().double(), expected)
    q.sum().backward()
    assert w.grad.abs().sum() > 0  # the gradient flows through tanh (straight through round)
    assert torch.equal(_dorefa.quantize_weights(w.detach(), 1), torch.tensor(
        [-1.0, -1.0, 1.0, 1.0, 1.0]) * w.detach().abs().mean())  # the paper's rule unchanged
    with pytest.raises(TypeError, match="scaled_sign"):
        _dorefa.quantize_weights(w, 1, scaled_sign=1)


def test_the_hands_on_model_binarizes_every_layer_and_its_image_input():
    from course.models import DeckMLP

    model = DeckMLP().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = _dorefa.hands_on_binary_model(model).eval()
    layers = [m for m in net.modules() if isinstance(m, _dorefa.DoReFaLinear)]
    assert len(layers) == 3
    assert all((m.weight_bits, m.activation_bits, m.scaled_sign) == (1, 1, False)
               for m in layers)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    x = torch.rand(4, 1, 28, 28)
    # the first layer sees the image thresholded at 0.5 and weights of -1 / +1
    fc1 = layers[0]
    want = torch.nn.functional.linear((x.reshape(4, -1) > 0.5).float(),
                                      torch.where(fc1.weight > 0, 1.0, -1.0), fc1.bias)
    assert torch.allclose(fc1(x.reshape(4, -1)), want, atol=1e-4)
    assert "scaled_sign=False" in repr(fc1)
