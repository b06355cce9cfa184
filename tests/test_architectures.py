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
