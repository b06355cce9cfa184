"""course.methods.ptq: observers against numpy/torch statistics, calibration hooks that always come
off, batch-norm folding against the unfolded float model, the integer layers against an
explicit integer computation and their fake-quant twin, and the three conversions on the
trained course models (accuracy, agreement, bytes stored); bad input raises clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course.data import mnist_loaders
from course.kernels import (
    conv2d_int8_reference,
    int8_gemm_reference,
    max_pool2d_int8_reference,
    requantize_reference,
)
from course.measure import model_size_bytes
from course.methods import ptq
from course.models import MLP, SmallCNN, SmallResNet
from course.quant import affine_qparams, dequantize, quantize, symmetric_scale
from course.train import evaluate, trained_model


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batches(seed: int, n: int = 4, shape=(32, 1, 28, 28)) -> list[torch.Tensor]:
    return [torch.rand(shape, generator=_gen(seed + i)) for i in range(n)]


# ------------------------------------------------------------------------------ observers


def test_minmax_observer_tracks_global_extremes():
    obs = ptq.MinMaxObserver()
    data = [torch.randn(100, generator=_gen(i)) * (i + 1) for i in range(5)]
    for x in data:
        obs.update(x)
    allx = torch.cat(data)
    assert obs.range() == (allx.min().item(), allx.max().item())
    assert obs.qparams(8) == affine_qparams(allx.min().item(), allx.max().item(), 8)
    absmax = allx.abs().max().item()
    assert obs.qparams(8, symmetric=True) == (symmetric_scale(absmax, 8), 0)


def test_moving_average_observer_follows_the_recurrence():
    c = 0.25
    obs = ptq.MovingAverageMinMaxObserver(averaging_constant=c)
    data = [torch.randn(50, generator=_gen(i)) for i in range(6)]
    lo, hi = data[0].min().item(), data[0].max().item()
    for x in data[1:]:
        lo += c * (x.min().item() - lo)
        hi += c * (x.max().item() - hi)
    for x in data:
        obs.update(x)
    assert obs.range() == pytest.approx((lo, hi), rel=1e-12)


def test_percentile_observer_matches_numpy():
    data = [torch.randn(10_000, generator=_gen(i)) for i in range(3)]
    obs = ptq.PercentileObserver(percentile=99.0)
    for x in data:
        obs.update(x)
    lows = [np.percentile(x.double().numpy(), 1.0) for x in data]
    highs = [np.percentile(x.double().numpy(), 99.0) for x in data]
    assert obs.range() == pytest.approx((np.mean(lows), np.mean(highs)), rel=1e-9)
    allx = torch.cat(data)
    assert allx.min().item() < obs.range()[0] < obs.range()[1] < allx.max().item()


def _mse(x: torch.Tensor, scale: float, zp: int, bits: int) -> float:
    q = quantize(x, scale, zp, 0, 2**bits - 1)
    return torch.mean((dequantize(q, scale, zp) - x) ** 2).item()


def test_mse_observer_never_loses_to_minmax_and_clips_heavy_tails():
    torch.manual_seed(0)
    x = torch.distributions.StudentT(3.0).sample((4000,))  # all kept: 4000 <= 4096 samples
    mse, minmax = ptq.MSEObserver(), ptq.MinMaxObserver()
    mse.update(x)
    minmax.update(x)
    lo, hi = mse.range()
    assert minmax.range()[0] <= lo <= 0.0 <= hi <= minmax.range()[1]
    for bits in (8, 4):
        assert _mse(x, *mse.qparams(bits), bits) <= _mse(x, *minmax.qparams(bits), bits)
    assert _mse(x, *mse.qparams(4), 4) < 0.5 * _mse(x, *minmax.qparams(4), 4)
    scale, zp = mse.qparams(8, symmetric=True)
    assert zp == 0 and scale <= symmetric_scale(x.abs().max().item(), 8)


@pytest.mark.parametrize("name", sorted(ptq.OBSERVERS))
def test_observers_refuse_empty_state_and_bad_input(name):
    obs = ptq.OBSERVERS[name]()
    with pytest.raises(RuntimeError, match="has seen no data"):
        obs.qparams(8)
    with pytest.raises(TypeError, match="floating-point"):
        obs.update(torch.ones(3, dtype=torch.int8))
    with pytest.raises(ValueError, match="NaN or infinite"):
        obs.update(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="empty"):
        obs.update(torch.zeros(0))


def test_observer_constructors_check_arguments():
    with pytest.raises(ValueError, match="averaging_constant"):
        ptq.MovingAverageMinMaxObserver(averaging_constant=0.0)
    with pytest.raises(ValueError, match="percentile"):
        ptq.PercentileObserver(percentile=40.0)
    with pytest.raises(TypeError, match="samples_per_batch"):
        ptq.MSEObserver(samples_per_batch=2.5)


# ------------------------------------------------------------------------------ calibration


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_calibrate_observes_every_leaf_and_cleans_up():
    model = MLP().train()
    batches = _batches(0, n=5)
    cal = ptq.calibrate(model, [(x, None) for x in batches], "minmax", num_batches=3)
    assert cal.batches == 3 and cal.input_shape == (1, 28, 28)
    assert set(cal.outputs) == {n for n, m in model.named_modules()
                                if n and not list(m.children())}
    assert _hook_count(model) == 0 and model.training
    model.eval()
    with torch.no_grad():
        expected = torch.cat([model.relu1(model.bn1(model.fc1(model.flatten(x))))
                              for x in batches[:3]])
    assert cal.outputs["relu1"].range() == (expected.min().item(), expected.max().item())
    assert cal.input.range() == (torch.cat(batches[:3]).min().item(),
                                 torch.cat(batches[:3]).max().item())


def test_calibrate_removes_hooks_when_a_batch_fails():
    model = MLP()

    def loader():
        yield torch.rand(4, 784)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        ptq.calibrate(model, loader(), ptq.MinMaxObserver)
    assert _hook_count(model) == 0


def test_calibrate_rejects_bad_arguments():
    model = MLP()
    with pytest.raises(ValueError, match="no batch"):
        ptq.calibrate(model, [], "minmax")
    with pytest.raises(ValueError, match="unknown observer"):
        ptq.calibrate(model, _batches(1), "median")
    with pytest.raises(TypeError, match="must return an Observer"):
        ptq.calibrate(model, _batches(1), lambda: object())
    with pytest.raises(ValueError, match="no module named"):
        ptq.calibrate(model, _batches(1), "minmax", modules=["fc9"])
    with pytest.raises(ValueError, match="num_batches"):
        ptq.calibrate(model, _batches(1), "minmax", num_batches=0)
    assert _hook_count(model) == 0


# ------------------------------------------------------------------------------ folding, plan


@pytest.mark.parametrize("layer, bn, shape", [
    (nn.Linear(6, 4), nn.BatchNorm1d(4), (5, 6)),
    (nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), (2, 3, 6, 6)),
])
def test_fold_batch_norm_matches_layer_then_bn(layer, bn, shape):
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1, generator=_gen(1))
        bn.running_var.uniform_(0.5, 2, generator=_gen(2))
        bn.weight.uniform_(0.5, 2, generator=_gen(3))
        bn.bias.uniform_(-1, 1, generator=_gen(4))
    bn.eval()
    x = torch.randn(shape, generator=_gen(5))
    folded = ptq.fold_batch_norm(layer, bn)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(layer(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="folds an"):
        ptq.fold_batch_norm(layer, nn.BatchNorm2d(4) if shape[1] == 6 else nn.BatchNorm1d(4))


def test_unsupported_models_are_refused_by_name():
    with pytest.raises(ValueError, match="SmallResNet"):
        ptq.to_full_integer(SmallResNet().eval(), _batches(0, n=1))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Tanh())
    with pytest.raises(ValueError, match=r"'2' \(Tanh\)"):
        ptq.to_dynamic_int8(model)
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        ptq.to_float16(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="directly follow"):
        ptq.plan_model(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.BatchNorm1d(3)))


# ------------------------------------------------------------------------------ integer layers


@pytest.fixture(scope="module")
def random_cnn_int() -> ptq.IntegerModel:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    return ptq.to_full_integer(model, _batches(10, n=2))


def test_int_linear_is_exact_integer_arithmetic(random_cnn_int):
    fc = random_cnn_int.fc
    q = torch.randint(-128, 128, (7, fc.weight.shape[1]), generator=_gen(3), dtype=torch.int8)
    acc = int8_gemm_reference(q, fc.weight.t()).to(torch.int64)
    z_in = int(fc.input_zero_point)
    acc = acc + fc.bias.to(torch.int64) - z_in * fc.weight.to(torch.int64).sum(1)
    expected = requantize_reference(acc.to(torch.int32), fc.multiplier, fc.shift.long(),
                                    int(fc.output_zero_point))
    assert torch.equal(fc(q), expected)


@pytest.mark.parametrize("name, shape", [("conv1", (5, 28, 28, 1)), ("conv2", (5, 14, 14, 16))])
def test_int_conv_is_exact_integer_arithmetic(random_cnn_int, name, shape):
    """The fused conv layer (each on its own path) equals the unfused integer reference:
    int64 conv, int32 bias with the input zero point folded in, requantization with the ReLU
    clamp, then max pooling of the codes."""
    conv = getattr(random_cnn_int, name)
    q = torch.randint(-128, 128, shape, generator=_gen(8), dtype=torch.int8)
    q[0], q[1, :, :7] = -128, 127
    z_in, z_out = int(conv.input_zero_point), int(conv.output_zero_point)
    acc = conv2d_int8_reference(q, conv.weight, padding=conv.padding, pad_value=z_in)
    bias = conv.bias.to(torch.int64) - z_in * conv.weight.to(torch.int64).sum((1, 2, 3))
    codes = requantize_reference(acc, conv.multiplier, conv.shift.long(), z_out, bias=bias,
                                 qmin=z_out)
    assert torch.equal(conv(q), max_pool2d_int8_reference(codes, *conv.pool))
    assert f"{name}: {conv._conv.path}" in random_cnn_int.kernels["int8_conv"]


def test_integer_model_copies_and_pickles(random_cnn_int):
    import copy
    import io

    x = torch.rand(3, 1, 28, 28, generator=_gen(9))
    want = random_cnn_int(x)
    buffer = io.BytesIO()
    torch.save(random_cnn_int, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(random_cnn_int), torch.load(buffer, weights_only=False)):
        assert torch.equal(other(x), want)


def test_int_conv_matches_its_fake_quant_twin_within_one_lsb(random_cnn_int):
    conv = random_cnn_int.conv2
    q = torch.randint(-128, 128, (4, 14, 14, 16), generator=_gen(4), dtype=torch.int8)
    got = conv(q)
    x_hat = (q.float() - int(conv.input_zero_point)) * float(conv.input_scale)
    twin = conv.fake_quant_forward(x_hat)
    twin_codes = torch.round(twin / float(conv.output_scale)) + int(conv.output_zero_point)
    assert got.dtype == torch.int8 and got.shape == (4, 7, 7, 32)
    assert (got.float() - twin_codes).abs().max().item() <= 1


def test_integer_model_is_int8_between_quantizer_and_dequantizer(random_cnn_int):
    seen = {}
    handles = [m.register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o.dtype))
               for n, m in random_cnn_int.named_children()]
    try:
        out = random_cnn_int(torch.rand(3, 1, 28, 28))
    finally:
        for h in handles:
            h.remove()
    assert out.dtype == torch.float32 and out.shape == (3, 10)
    assert seen.pop("dequantize") == torch.float32
    assert set(seen.values()) == {torch.int8}
    for layer in (random_cnn_int.conv1, random_cnn_int.conv2, random_cnn_int.fc):
        assert layer.weight.dtype == torch.int8 and layer.bias.dtype == torch.int32
        assert layer.multiplier.dtype == torch.int32
        assert (layer.multiplier >= 2**30).all()
    assert random_cnn_int.kernels["int8_gemm"] in ("int_mm", "avx2_maddubs", "float32_blocked")


def test_integer_model_survives_a_state_dict_round_trip(random_cnn_int):
    torch.manual_seed(1)
    other = ptq.to_full_integer(SmallCNN().eval(), _batches(20, n=1))
    x = torch.rand(5, 1, 28, 28, generator=_gen(6))
    assert not torch.equal(other(x), random_cnn_int(x))
    other.load_state_dict(random_cnn_int.state_dict())
    assert torch.equal(other(x), random_cnn_int(x))


def test_integer_layers_reject_float_or_misshapen_codes(random_cnn_int):
    with pytest.raises(TypeError, match="int8 codes"):
        random_cnn_int.fc(torch.zeros(2, 1568))
    with pytest.raises(ValueError, match="features"):
        random_cnn_int.fc(torch.zeros(2, 100, dtype=torch.int8))
    with pytest.raises(ValueError, match="4-D"):
        random_cnn_int.conv1(torch.zeros(2, 28, 28, dtype=torch.int8))
    with pytest.raises(TypeError, match="float input"):
        random_cnn_int(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_uncalibrated_or_wrong_calibration_is_refused():
    model = MLP().eval()
    blank = ptq.Calibration(input=ptq.MinMaxObserver(), outputs={}, batches=0,
                            input_shape=(784,))
    with pytest.raises(ValueError, match="not calibrated"):
        ptq.to_full_integer(model, blank)
    cal = ptq.calibrate(model, _batches(0, n=1), "minmax", modules=["relu1"])
    with pytest.raises(ValueError, match="'relu2' was never observed"):
        ptq.to_full_integer(model, cal)
    with pytest.raises(TypeError, match="calibration_data"):
        ptq.to_full_integer(model, torch.rand(4, 784))


def test_full_integer_accepts_a_calibration_made_on_the_model():
    torch.manual_seed(2)
    model = MLP().eval()
    batches = _batches(30, n=2)
    from_loader = ptq.to_full_integer(model, batches, observer="percentile")
    from_calibration = ptq.to_full_integer(model, ptq.calibrate(model, batches, "percentile"))
    x = torch.rand(8, 1, 28, 28, generator=_gen(7))
    diff = (from_loader(x) - from_calibration(x)).abs().max().item()
    assert diff <= 2 * float(from_loader.dequantize.scale)  # BN folded or not: <= 2 LSB


# ------------------------------------------------------------------------------ trained models


@pytest.fixture(scope="module")
def loaders():
    return mnist_loaders()


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def trained(request):
    return request.param, trained_model(request.param, progress=False)


def _predictions(model: nn.Module, loader) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x).argmax(1) for x, _ in loader])


def test_full_integer_matches_fp32_accuracy_and_its_twin(trained, loaders):
    name, model = trained
    qmodel = ptq.to_full_integer(model, loaders.calibration)
    fp32_acc = evaluate(model, loaders.test)
    int_acc = evaluate(qmodel, loaders.test)
    assert int_acc >= fp32_acc - 0.01, (name, fp32_acc, int_acc)
    agree = (_predictions(qmodel, loaders.test)
             == _predictions(ptq.fake_quant_twin(qmodel), loaders.test)).double().mean()
    assert agree.item() >= 0.99
    ratio = model_size_bytes(qmodel) / model_size_bytes(model)
    assert 0.25 <= ratio < 0.27, ratio


def test_dynamic_int8_is_small_and_accurate(trained, loaders):
    name, model = trained
    dyn = ptq.to_dynamic_int8(model)
    assert all(m.weight.dtype == torch.int8 for m in dyn.modules()
               if isinstance(m, ptq.DynamicInt8Linear | ptq.DynamicInt8Conv2d))
    assert evaluate(dyn, loaders.test) >= evaluate(model, loaders.test) - 0.01
    x = next(iter(loaders.test))[0]
    with torch.no_grad():
        ref, got = model(x), dyn(x)
    assert (got - ref).abs().max().item() < 0.05 * ref.abs().max().item()
    assert 0.25 <= model_size_bytes(dyn) / model_size_bytes(model) < 0.27


def test_float16_halves_the_bytes_and_keeps_the_outputs(trained, loaders):
    name, model = trained
    half = ptq.to_float16(model)
    assert all(t.dtype == torch.float16 for t in half.state_dict().values())
    x = next(iter(loaders.test))[0]
    with torch.no_grad():
        torch.testing.assert_close(half(x), model(x), rtol=0, atol=2e-2)
    assert 0.49 <= model_size_bytes(half) / model_size_bytes(model) <= 0.5
