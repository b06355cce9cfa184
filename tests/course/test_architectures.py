"""course.architectures: torchvision's models with random weights, their table rows, and the
lecture's and convnet-burden's figures beside them."""

from __future__ import annotations

import pytest

from course import architectures, cost

pytest.importorskip("torchvision")


def test_squeezenet_row_is_counted_by_the_library():
    model = architectures.build("squeezenet1_0")
    row = architectures.size_row("squeezenet1_0", model)
    assert row["parameters"] == 1_248_424 == sum(p.numel() for p in model.parameters())
    assert row["bytes fp32"] == cost.storage_bytes(model, 32)
    assert row["MACs"] == cost.count_macs(model, (1, 3, 224, 224)) == 818_924_576
    assert row["MiB int8"] == pytest.approx(row["bytes int8"] / 2**20)


def test_size_row_uses_the_functions_it_is_given():
    model = architectures.build("squeezenet1_0")
    row = architectures.size_row("squeezenet1_0", model, macs_fn=lambda m, s: 7,
                                 bytes_fn=lambda m, b: b)
    assert row["MACs"] == 7 and row["bytes 1-bit"] == 1 and row["bytes fp32"] == 32


def test_the_lecture_sizes_that_are_feature_memory():
    for name in ("mobilenet_v2", "squeezenet1_0", "inception_v3"):
        assert architectures.LECTURE_MB[name] == architectures.CONVNET_BURDEN[name].feature_mb
    assert architectures.LECTURE_MB["alexnet"] == architectures.CONVNET_BURDEN["alexnet"].param_mb


def test_inception_is_built_for_inference_at_299():
    model = architectures.build("inception_v3")
    assert not model.training and model.AuxLogits is None
    assert architectures.INPUT_SIZE["inception_v3"] == 299


def test_unknown_name_is_an_error():
    with pytest.raises(ValueError, match="name"):
        architectures.build("lenet")


@pytest.fixture(scope="module")
def mobilenet_int8() -> architectures.PyTorchInt8:
    return architectures.pytorch_int8("mobilenet_v2", calibration_images=2)


def test_pytorchs_int8_mobilenet_is_a_quantized_copy_of_the_folded_float(mobilenet_int8):
    import torch

    pair = mobilenet_int8
    assert pair.engine in torch.backends.quantized.supported_engines
    int8_convs = [m for m in pair.int8.modules() if type(m).__name__.startswith("Conv")
                  and ".quantized" in type(m).__module__]
    fp32_convs = [m for m in pair.fp32.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(int8_convs) == len(fp32_convs) == 52   # every conv of MobileNetV2 is int8
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in pair.fp32.modules())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y_fp32, y_int8 = pair.fp32(x), pair.int8(x)
    assert y_int8.shape == y_fp32.shape == (2, 1000)
    cos = torch.nn.functional.cosine_similarity(y_fp32.flatten(), y_int8.flatten(), dim=0)
    assert cos > 0.9, f"int8 output far from the float one (cosine {cos:.3f})"


def test_network_latency_times_both_and_restores_what_it_changes(mobilenet_int8):
    import torch

    engine, threads = torch.backends.quantized.engine, torch.get_num_threads()
    r = architectures.network_latency(mobilenet_int8, batch=1, repeats=2, warmup=1)
    assert r["fp32"].repeats == r["int8"].repeats == 2
    assert r["speedup"] == pytest.approx(r["fp32"].median_s / r["int8"].median_s)
    assert 0.2 < r["size ratio"] < 0.3          # int8 weights, a few float scales and biases
    assert r["int8 bytes"] == round(r["size ratio"] * r["fp32 bytes"])
    assert torch.backends.quantized.engine == engine and torch.get_num_threads() == threads


def test_pytorch_int8_checks_its_arguments(mobilenet_int8):
    with pytest.raises(ValueError, match="name must be one of"):
        architectures.pytorch_int8("alexnet")
    with pytest.raises(ValueError, match="calibration_images"):
        architectures.pytorch_int8("resnet18", calibration_images=0)
    with pytest.raises(TypeError, match="pair must be a PyTorchInt8"):
        architectures.network_latency(object())
    with pytest.raises(ValueError, match="batch"):
        architectures.network_latency(mobilenet_int8, batch=0)
