"""course.methods.qat.conversion: IntClamp and convert, the QAT model to course.methods.ptq's
integer model.

References: course.methods.ptq's full-integer conversion for PTQ at 8 bits; the QAT model itself
(fake-quant twin) for the converted integer model; plain integer ranges for the b-bit
codes."""

from __future__ import annotations

import pytest
import torch

from course.data import mnist_loaders
from course.methods import ptq
from course.methods.qat import (
    IO_BITS,
    IntClamp,
    QATRecipe,
    calibrate_qat,
    convert,
    prepare_qat,
    qat_layers,
    train_qat,
)
from course.models import MLP
from course.train import trained_model


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
