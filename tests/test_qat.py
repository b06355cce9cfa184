"""course.qat: batch-norm folding for QAT, the QAT layers, prepare_qat, fine-tuning and the
conversion to the integer model of course.ptq.

References: course.ptq.fold_batch_norm (float64) and the unfolded conv-then-BN; PyTorch's
own fake-quantize and batch-norm functions for the training graph; course.ptq's
full-integer conversion for PTQ at 8 bits; the QAT model itself (fake-quant twin) for the
converted integer model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course import ptq
from course.data import mnist_loaders
from course.models import MLP, SmallCNN, SmallResNet
from course.qat import (
    IO_BITS,
    IntClamp,
    QATConv2d,
    QATLinear,
    QATModel,
    QATRecipe,
    bias_codes,
    calibrate_qat,
    convert,
    fold_scale,
    folded_parameters,
    freeze_bn_stats,
    prepare_qat,
    qat_layers,
    train_qat,
)
from course.quant.fake_quant import fake_quantizers
from course.train import evaluate, trained_model


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_bn(bn: nn.BatchNorm1d | nn.BatchNorm2d, seed: int) -> nn.Module:
    g = _gen(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 2 + 0.1)
    return bn


def _conv_bn(seed: int = 0, bias: bool = True) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    torch.manual_seed(seed)
    return nn.Conv2d(3, 8, 3, padding=1, bias=bias), _random_bn(nn.BatchNorm2d(8), seed)


def _linear_bn(seed: int = 0, bias: bool = True) -> tuple[nn.Linear, nn.BatchNorm1d]:
    torch.manual_seed(seed)
    return nn.Linear(12, 6, bias=bias), _random_bn(nn.BatchNorm1d(6), seed)


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


# ------------------------------------------------------------------------------ prepare


@pytest.mark.parametrize("model_cls", [MLP, SmallCNN])
def test_prepare_qat_keeps_the_float_model_unchanged(model_cls):
    torch.manual_seed(13)
    model = model_cls().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            _random_bn(m, 14)
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


def test_train_qat_applies_its_switches_and_leaves_eval_mode():
    qat = prepare_qat(MLP().eval(), 4)
    g = _gen(18)
    data = [(torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(2)]
    history = train_qat(qat, data, QATRecipe(epochs=2, freeze_observers_epoch=1),
                        progress=False)
    assert history.epochs == 2 and not qat.training
    assert all(layer.bn_frozen for layer in qat_layers(qat) if layer.bn is not None)
    assert not any(fq.observer_enabled for fq in fake_quantizers(qat))
    assert qat.quantize.batches.item() == 2  # observed during epoch 0 only
    assert QATRecipe(lr=1e-3, lr_decay=0.5).lr_at(2) == pytest.approx(2.5e-4)
    with pytest.raises(ValueError, match="epochs"):
        QATRecipe(epochs=0)
    with pytest.raises(ValueError, match="lr_decay"):
        QATRecipe(lr_decay=1.5)
    with pytest.raises(ValueError, match="freeze_bn_epoch"):
        QATRecipe(freeze_bn_epoch=-1)
    with pytest.raises(TypeError, match="recipe"):
        train_qat(qat, data, {"epochs": 1})
    with pytest.raises(ValueError, match="no QAT layer"):
        freeze_bn_stats(MLP())


# ------------------------------------------------------------------------------ conversion


def test_int_clamp_restricts_codes_and_its_twin_clamps_values():
    clamp = IntClamp(-128, -125, 0.5, -128)
    q = torch.tensor([-128, -126, -100, 127], dtype=torch.int8)
    assert clamp(q).tolist() == [-128, -126, -125, -125]
    x = (q.float() + 128) * 0.5
    assert torch.equal(clamp.fake_quant_forward(x), (clamp(q).float() + 128) * 0.5)
    with pytest.raises(ValueError, match="qmin < qmax"):
        IntClamp(0, 0, 1.0, 0)
    with pytest.raises(TypeError, match="int8"):
        clamp(q.float())


def test_convert_refuses_an_untrained_model():
    with pytest.raises(ValueError, match="never"):
        convert(prepare_qat(MLP().eval(), 4))
    with pytest.raises(TypeError, match="QATModel"):
        convert(MLP())


@pytest.fixture(scope="module")
def loaders():
    return mnist_loaders()


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def trained(request):
    return request.param, trained_model(request.param, progress=False)


def _predictions(model, loader) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x).argmax(1) for x, _ in loader])


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_converted_model_runs_int8_codes_and_agrees_with_its_qat_twin(trained, loaders, bits):
    name, model = trained
    qat = prepare_qat(model, bits)
    calibrate_qat(qat, loaders.calibration)
    train_qat(qat, loaders.train, QATRecipe(epochs=1), progress=False)
    int_model = convert(qat)
    agree = (_predictions(int_model, loaders.test) == _predictions(qat, loaders.test))
    assert agree.double().mean().item() >= 0.99, (name, bits)
    # weights: int8 codes in the b-bit symmetric range; biases int32
    layers = [m for m in int_model.modules() if isinstance(m, ptq.IntLinear | ptq.IntConv2d)]
    assert len(layers) == len(qat_layers(qat))
    for layer in layers:
        assert layer.weight.dtype == torch.int8 and layer.bias.dtype == torch.int32
        assert layer.weight.abs().max().item() <= 2 ** (bits - 1) - 1
    # activations: int8 codes restricted to [-128, -128 + 2**b - 1] after every layer but
    # the last (the logits keep 8 bits)
    children = list(int_model.children())
    clamps = [m for m in children if isinstance(m, IntClamp)]
    if bits == IO_BITS:
        assert not clamps
        return
    assert len(clamps) == len(layers) - 1
    for layer in layers[:-1]:
        after = children[children.index(layer) + 1]
        assert isinstance(after, IntClamp) and (after._qmin, after._qmax) == (
            -128, -128 + 2**bits - 1)
    codes = []
    hooks = [m.register_forward_hook(lambda _m, _a, out: codes.append(out)) for m in clamps]
    int_model(next(iter(loaders.test))[0])
    for h in hooks:
        h.remove()
    for c in codes:
        assert c.dtype == torch.int8 and c.max().item() <= -128 + 2**bits - 1


def test_ptq_through_qat_modules_at_8_bits_matches_course_ptq(trained, loaders):
    name, model = trained
    qat = prepare_qat(model, 8, observer="minmax")
    calibrate_qat(qat, loaders.calibration)
    ours = convert(qat)
    ref = ptq.to_full_integer(model, loaders.calibration)
    assert ours.quantize.scale.item() == pytest.approx(ref.quantize.scale.item(), rel=1e-6)
    for (n1, a), (n2, b) in zip(
            [(n, m) for n, m in ours.named_children() if isinstance(m, ptq.IntLinear |
                                                                   ptq.IntConv2d)],
            [(n, m) for n, m in ref.named_children() if isinstance(m, ptq.IntLinear |
                                                                  ptq.IntConv2d)], strict=True):
        assert n1 == n2
        assert a.output_scale.item() == pytest.approx(b.output_scale.item(), rel=1e-5)
        assert a.output_zero_point.item() == b.output_zero_point.item()
        assert (a.weight == b.weight).double().mean().item() > 0.999
        assert (a.weight.int() - b.weight.int()).abs().max().item() <= 1
    agree = _predictions(ours, loaders.test) == _predictions(ref, loaders.test)
    assert agree.double().mean().item() >= 0.99


def test_qat_beats_ptq_at_two_bits(loaders):
    model = trained_model("mlp", progress=False)
    ptq_model = prepare_qat(model, 2, observer="minmax")
    calibrate_qat(ptq_model, loaders.calibration)
    qat = prepare_qat(model, 2)
    calibrate_qat(qat, loaders.calibration)
    train_qat(qat, loaders.train, QATRecipe(epochs=2), progress=False)
    ptq_acc, qat_acc = evaluate(ptq_model, loaders.test), evaluate(qat, loaders.test)
    assert qat_acc >= ptq_acc + 0.03, (ptq_acc, qat_acc)


def test_bias_codes_round_half_to_even():
    assert bias_codes(torch.tensor([0.5, 1.5, -2.5, 0.26]), 1.0).tolist() == [0.0, 2.0, -2.0,
                                                                                0.0]
