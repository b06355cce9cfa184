"""PyTorch's own int8 models (course.methods.ptq.pytorch_reference): the engine they run on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course.methods.ptq.pytorch_reference import ENGINES, pytorch_static, quantized_engine


@pytest.mark.parametrize(("supported", "expected"), [
    (["none", "onednn", "x86", "fbgemm", "qnnpack"], "x86"),  # a recent x86 build
    (["none", "fbgemm", "qnnpack"], "fbgemm"),                 # an older x86 build
    (["none", "qnnpack"], "qnnpack"),                          # ARM (Apple silicon, Linux)
])
def test_the_engine_is_the_first_this_build_supports(supported, expected):
    assert quantized_engine(supported) == expected


def test_a_build_without_a_quantized_engine_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no quantized CPU engine"):
        quantized_engine(["none"])


def test_static_model_runs_on_this_builds_engine_by_default():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    batches = [torch.randn(64, 16) for _ in range(4)]
    int8 = pytorch_static(model, batches)
    assert torch.backends.quantized.engine == quantized_engine() in ENGINES
    x = batches[0]
    with torch.no_grad():
        want, got = model(x), int8(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_an_engine_this_build_lacks_names_the_choices():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="engine 'no-such-engine' is not supported here"):
        pytorch_static(model, [torch.randn(2, 4)], engine="no-such-engine")
