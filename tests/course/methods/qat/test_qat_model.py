"""course.methods.qat.model: prepare_qat (structure, bit widths, the float model left alone), the
observers' modes, calibrate_qat.

References: the float model's own state dict and module types; PyTorch's SGD step on the
QAT copy; the quantizers' own switches and counters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course.methods.qat import IO_BITS, QATLinear, QATModel, calibrate_qat, prepare_qat
from course.models import MLP, SmallCNN, SmallResNet
from course.nn.fake_quant import fake_quantizers
from tests.conftest import random_bn


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)




@pytest.mark.parametrize("model_cls", [MLP, SmallCNN])
def test_prepare_qat_keeps_the_float_model_unchanged(model_cls):
    torch.manual_seed(13)
    model = model_cls().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            random_bn(m, 14)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    qat = prepare_qat(model, 4)
    x = torch.rand(16, 1, 28, 28, generator=_gen(15))
    opt = torch.optim.SGD(qat.parameters(), lr=0.1)
    qat(x).sum().backward()
    opt.step()
    qat(x)
    assert not model.training and [type(m) for m in model.modules()] == types
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    float_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not float_ptrs & {p.data_ptr() for p in qat.parameters()}


def test_prepare_qat_structure_and_bit_widths():
    qat = prepare_qat(MLP().eval(), 3)
    assert isinstance(qat, QATModel) and qat.training
    assert list(dict(qat.named_children())) == ["quantize", "flatten", "fc1", "fc2", "fc3"]
    assert qat.quantize.num_bits == IO_BITS
    for name in ("fc1", "fc2"):
        layer = getattr(qat, name)
        assert isinstance(layer, QATLinear) and layer.relu and layer.bn is not None
        assert layer.weight_fake_quant.num_bits == 3 and layer.output_fake_quant.num_bits == 3
    assert qat.fc3.bn is None and not qat.fc3.relu
    assert qat.fc3.weight_fake_quant.num_bits == 3 and qat.fc3.output_fake_quant.num_bits == 8
    cnn = prepare_qat(SmallCNN().eval(), 4, activation_bits=6)
    assert [type(m).__name__ for m in cnn.children()] == [
        "FakeQuantize", "QATConv2d", "MaxPool2d", "QATConv2d", "MaxPool2d", "Flatten",
        "QATLinear"]
    assert cnn.conv2.output_fake_quant.num_bits == 6 and cnn.conv2.weight_fake_quant.num_bits == 4


@pytest.mark.parametrize("model, bits, error, match", [
    (MLP(), 1, ValueError, "at least 2 bits"),
    (MLP(), 9, ValueError, "at most 8"),
    (MLP(), 4.0, TypeError, "bits must be an int"),
    (nn.Sequential(nn.Flatten(), nn.ReLU()), 4, ValueError, "no Linear or Conv2d"),
    (SmallResNet(), 4, ValueError, "unsupported model"),
    ("mlp", 4, TypeError, "model must be an nn.Module"),
])
def test_prepare_qat_refuses_bad_input(model, bits, error, match):
    with pytest.raises(error, match=match):
        prepare_qat(model, bits)


def test_observers_move_only_in_training_mode():
    qat = prepare_qat(SmallCNN().eval(), 4)
    x = torch.rand(8, 1, 28, 28, generator=_gen(16))
    qat(x)  # training mode: every quantizer observes
    assert all(fq.observed for fq in fake_quantizers(qat))
    before = {k: v.clone() for k, v in qat.state_dict().items()}
    qat.eval()(x * 3)
    assert all(torch.equal(v, qat.state_dict()[k]) for k, v in before.items())
    qat.train()(x * 3)
    assert not torch.equal(before["quantize.scale"], qat.quantize.scale)


def test_calibrate_qat_observes_float_values_and_restores_switches():
    qat = prepare_qat(MLP().eval(), 4).train()
    data = [torch.rand(8, 1, 28, 28, generator=_gen(17 + i)) for i in range(3)]
    assert calibrate_qat(qat, data, num_batches=2) == 2
    assert qat.training and all(fq.fake_quant_enabled and fq.observer_enabled and fq.training
                                for fq in fake_quantizers(qat))
    assert qat.quantize.batches.item() == 2
    with pytest.raises(ValueError, match="no batch"):
        calibrate_qat(qat, [])
    with pytest.raises(TypeError, match="QATModel"):
        calibrate_qat(MLP(), data)
