"""course.methods.qat.layers: batch-norm folding for QAT, the QAT layers' training graph, the bias
grid.

References: course.nn.fold_batch_norm (float64) and the unfolded layer-then-BN; PyTorch's
own fake-quantize and batch-norm functions for the training graph; PyTorch's rounding for
the bias codes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course.methods import ptq
from course.methods.qat import QATConv2d, QATLinear, bias_codes, fold_scale, folded_parameters
from tests.conftest import random_bn


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)




def _conv_bn(seed: int = 0, bias: bool = True) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    torch.manual_seed(seed)
    return nn.Conv2d(3, 8, 3, padding=1, bias=bias), random_bn(nn.BatchNorm2d(8), seed)


def _linear_bn(seed: int = 0, bias: bool = True) -> tuple[nn.Linear, nn.BatchNorm1d]:
    torch.manual_seed(seed)
    return nn.Linear(12, 6, bias=bias), random_bn(nn.BatchNorm1d(6), seed)


# ------------------------------------------------------------------------------ folding


@pytest.mark.parametrize("make", [_conv_bn, _linear_bn])
@pytest.mark.parametrize("bias", [True, False])
def test_folded_parameters_match_course_ptq_folding(make, bias):
    layer, bn = make(1, bias)
    w, b = folded_parameters(layer.weight, layer.bias, bn.eval())
    ref = ptq.fold_batch_norm(layer, bn)
    torch.testing.assert_close(w, ref.weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b, ref.bias, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make, shape", [(_conv_bn, (4, 3, 10, 10)), (_linear_bn, (16, 12))])
def test_folded_qat_layer_matches_layer_then_bn_in_eval(make, shape):
    layer, bn = make(2)
    cls = QATConv2d if isinstance(layer, nn.Conv2d) else QATLinear
    qat = cls.from_float(layer, 8, bn).eval()
    qat.weight_fake_quant.enable_fake_quant(False)
    x = torch.randn(shape, generator=_gen(3))
    with torch.no_grad():
        torch.testing.assert_close(qat(x), bn.eval()(layer(x)), rtol=0, atol=1e-5)


def test_live_bn_training_graph_is_conv_then_bn_with_batch_statistics():
    conv, bn = _conv_bn(4)
    qat = QATConv2d.from_float(conv, 8, bn).train()
    qat.weight_fake_quant.enable_fake_quant(False)
    float_bn = copy.deepcopy(bn).train()
    x = torch.randn(8, 3, 10, 10, generator=_gen(5))
    with torch.no_grad():
        torch.testing.assert_close(qat(x), float_bn(conv(x)), rtol=0, atol=1e-5)
    torch.testing.assert_close(qat.bn.running_mean, float_bn.running_mean)
    torch.testing.assert_close(qat.bn.running_var, float_bn.running_var)


def test_live_bn_training_graph_quantizes_the_folded_weight():
    conv, bn = _conv_bn(6)
    qat = QATConv2d.from_float(conv, 4, bn).train()
    x = torch.randn(8, 3, 10, 10, generator=_gen(7))
    # the hand formula with PyTorch's ops: bn_batch(conv(x, Q(w k)) / k + b)
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w_fold = conv.weight * k.view(-1, 1, 1, 1)
    scale = (w_fold.abs().amax(dim=(1, 2, 3)) / 7).detach()
    w_q = torch.fake_quantize_per_channel_affine(w_fold, scale, torch.zeros(8, dtype=torch.int32),
                                                 0, -7, 7)
    y = F.conv2d(x, w_q, None, padding=1) / k.view(1, -1, 1, 1) + conv.bias.view(1, -1, 1, 1)
    ref = F.batch_norm(y, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    with torch.no_grad():
        torch.testing.assert_close(qat(x), ref, rtol=0, atol=1e-5)


def test_frozen_bn_trains_the_folded_layer_and_keeps_running_stats():
    layer, bn = _linear_bn(8)
    qat = QATLinear.from_float(layer, 4, bn)
    x = torch.randn(32, 12, generator=_gen(9))
    assert qat.weight_fake_quant.observed  # from the folded weight, at construction
    qat.train()
    qat.freeze_bn_stats()
    stats = (qat.bn.running_mean.clone(), qat.bn.running_var.clone())
    out_train = qat(x)
    assert torch.equal(qat.bn.running_mean, stats[0]) and torch.equal(qat.bn.running_var,
                                                                      stats[1])
    with torch.no_grad():
        torch.testing.assert_close(out_train, qat.eval()(x), rtol=0, atol=0)
    qat.train()
    out_train.sum().backward()
    assert qat.weight.grad is not None and qat.bias.grad is not None
    assert qat.bn.weight.grad is not None and qat.bn.bias.grad is not None


def test_weight_gradient_is_the_straight_through_gradient():
    torch.manual_seed(10)
    layer = nn.Linear(12, 5)
    qat = QATLinear.from_float(layer, 3).train()
    x = torch.randn(20, 12, generator=_gen(11))
    upstream = torch.randn(20, 5, generator=_gen(12))
    qat(x).backward(upstream)
    scale = layer.weight.detach().abs().amax(dim=1) / 3
    w_hat = torch.fake_quantize_per_channel_affine(
        layer.weight.detach(), scale, torch.zeros(5, dtype=torch.int32), 0, -3, 3)
    w_hat.requires_grad_(True)
    F.linear(x, w_hat, layer.bias.detach()).backward(upstream)
    torch.testing.assert_close(qat.weight.grad, w_hat.grad)


def test_fold_scale_and_folding_refuse_bad_input():
    with pytest.raises(TypeError, match="bn must be"):
        fold_scale(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no running statistics"):
        fold_scale(nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="channels"):
        folded_parameters(torch.zeros(4, 3), None, nn.BatchNorm1d(3))
    with pytest.raises(TypeError, match="nn.Linear"):
        QATLinear.from_float(nn.Conv2d(1, 1, 1), 4)
    with pytest.raises(TypeError, match="folds an BatchNorm2d"):
        QATConv2d.from_float(nn.Conv2d(1, 2, 1), 4, nn.BatchNorm1d(2))


# ------------------------------------------------------------------------------ bias grid


def test_bias_codes_round_half_to_even():
    assert bias_codes(torch.tensor([0.5, 1.5, -2.5, 0.26]), 1.0).tolist() == [0.0, 2.0, -2.0,
                                                                                0.0]
