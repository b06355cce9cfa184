"""Every stated requirement of an exercise has a hidden case that a violation fails (issue 11,
class 4): an answer correct except for one sentence of its exercise's text loses the exercise,
with a message naming that sentence. Expected values are exact or float64-then-rounded, so
the verdicts do not depend on this CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from course import quant
from course.grading import Mismatch, check
from course.kernels.requantize import requantize_reference

L1, L2 = "lab01_direct_quantization", "lab02_post_training_quantization"
L3, L4 = "lab03_quantization_aware_training", "lab04_binary_and_low_bit"


def quantized_linear_float32(x_q, x_zero_point, w_q, bias_q, multiplier, shift, out_zp):
    acc = (x_q.float() - x_zero_point) @ w_q.float().T + bias_q.float()
    return requantize_reference(acc.round().to(torch.int32), multiplier, shift, out_zp)


def fold_keeping_no_bias(model, index):
    layer, bn = model[index], model[index + 1]
    folded = copy.deepcopy(layer)
    k = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        folded.weight.copy_(layer.weight * k.reshape((-1,) + (1,) * (layer.weight.dim() - 1)))
        if folded.bias is not None:
            folded.bias.copy_((layer.bias - bn.running_mean) * k + bn.bias)
    return folded


def fold_into_a_fresh_layer(model, index):
    """Right values in a new layer built from the sizes only: stride and padding are lost."""
    layer, bn = model[index], model[index + 1]
    k = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    new = (nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size)
           if isinstance(layer, nn.Conv2d) else nn.Linear(layer.in_features, layer.out_features))
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        new.weight.copy_(layer.weight * k.reshape((-1,) + (1,) * (layer.weight.dim() - 1)))
        new.bias.copy_((bias - bn.running_mean) * k + bn.bias)
    return new


class RoundWithoutSTE(nn.Module):
    """The activation fake quantizer with torch.round and no STE: right values, no gradient."""

    def __init__(self, num_bits=8):
        super().__init__()
        self.num_bits, self.lo, self.hi = num_bits, None, None

    def forward(self, x):
        if self.training:
            lo, hi = x.min().item(), x.max().item()
            if self.lo is None:
                self.lo, self.hi = lo, hi
            else:
                self.lo += 0.01 * (lo - self.lo)
                self.hi += 0.01 * (hi - self.hi)
        scale, zp = quant.affine_qparams(self.lo, self.hi, self.num_bits)
        return (torch.clamp(torch.round(x / scale) + zp, 0, 2**self.num_bits - 1) - zp) * scale


def gradient_without_ste(batches, training, num_bits):
    module, grads = RoundWithoutSTE(num_bits), []
    for x, mode in zip(batches, training, strict=True):
        module.train(mode)
        x = x.clone().requires_grad_(True)
        module(x).sum().backward()
        grads.append(torch.zeros(x.numel()) if x.grad is None else x.grad.reshape(-1))
    return torch.cat(grads)


def ste_round_half_up(x, scale, zero_point, qmin, qmax):
    q = torch.clamp(torch.floor(x / scale + 0.5) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def sqnr_float32(x, x_hat):
    return float(10 * torch.log10((x**2).sum() / ((x - x_hat) ** 2).sum()))


def direct_quantize_children_only(model, num_bits, per_channel=False):
    out = copy.deepcopy(model)
    with torch.no_grad():
        for layer in out.children():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                w = layer.weight
                layer.weight.copy_(quant.fake_quantize_per_channel(w, num_bits) if per_channel
                                   else quant.fake_quantize(w, num_bits, True))
    return out


def dorefa_activations_any_bits(x, bits):
    if bits == 32:
        return torch.clamp(x, 0.0, 1.0)
    if bits < 1:
        raise ValueError("bits")
    levels = 2**bits - 1
    return torch.round(torch.clamp(x, 0.0, 1.0) * levels) / levels


@pytest.mark.parametrize(("lab", "name", "fn", "message"), [
    (L2, "quantized_linear", quantized_linear_float32, "which float32 cannot hold"),
    (L3, "fold_batch_norm", fold_keeping_no_bias, "the layer has no bias, the folded one"),
    (L3, "fold_batch_norm", fold_into_a_fresh_layer, "padding is [0, 0], expected [1, 1]"),
    (L3, "activation_fake_quant_grad", gradient_without_ste, "expected 1, got 0"),
    (L3, "ste_forward", ste_round_half_up, "round half to even"),
    (L1, "sqnr_db", sqnr_float32, "compute in float64"),
    (L1, "direct_quantize", direct_quantize_children_only, "inside sub-modules"),
    (L4, "dorefa_activations", dorefa_activations_any_bits, "17 bits is an error"),
], ids=["float32-accumulation", "fold-without-bias", "fold-geometry", "no-gradient-through-afq",
        "ste-ties", "sqnr-float32", "nested-layers", "dorefa-17-bits"])
def test_a_violated_requirement_fails_its_hidden_case(lab, name, fn, message):
    with pytest.raises(Mismatch) as err:
        check(lab, name, fn, hidden=True)
    assert message in str(err.value), str(err.value)[:500]


def test_the_float32_accumulation_case_fails_every_float32_order():
    from autograder.cases.lab02_post_training_quantization import _exact_accumulation_case

    case = _exact_accumulation_case()
    x_q, x_zp, w_q, bias, m, s, zp = case["args"]
    x, w = x_q.float() - x_zp, w_q.float()
    sequential = torch.zeros(2, w.shape[0])
    for i in range(x.shape[1]):
        sequential += x[:, i:i + 1] * w[:, i][None]
    for acc in (x @ w.T, sequential, (x[:, None, :] * w[None]).sum(-1)):
        got = requantize_reference((acc.double().round().to(torch.int64) + bias).to(torch.int32),
                                   m, s, zp)
        assert not torch.equal(got.to(torch.int64), case["expected"])
