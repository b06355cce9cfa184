"""Granularity as a type (course.quant.granularity) and the functions that take it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course.methods.direct import direct_quantize
from course.nn.fake_quant import FakeQuantize
from course.quant import (
    PerChannel,
    PerTensor,
    binary_scale,
    fake_quantize_per_channel,
    granularity,
    per_channel_scale,
)


@pytest.mark.parametrize(("value", "expected"), [
    (None, PerTensor()), (False, PerTensor()), (True, PerChannel(0)), (2, PerChannel(2)),
    (-1, PerChannel(-1)), (PerChannel(3), PerChannel(3)), (PerTensor(), PerTensor()),
])
def test_older_spellings_become_the_type(value, expected):
    assert granularity(value) == expected


@pytest.mark.parametrize("value", ["axis0", 1.0, [0]])
def test_anything_else_is_refused_by_name(value):
    with pytest.raises(TypeError, match="granularity must be PerTensor\\(\\), PerChannel"):
        granularity(value)


def test_per_channel_axis_must_be_an_int_and_exist():
    with pytest.raises(TypeError, match="axis must be an int, got bool"):
        PerChannel(True)
    with pytest.raises(ValueError, match=r"axis must be in \[-2, 1\] for x of shape \(4, 3\), "
                                         "got 2"):
        PerChannel(2).reduce_dims(torch.zeros(4, 3))


def test_reduce_dims_are_every_axis_but_the_channel():
    x = torch.zeros(8, 3, 5, 5)
    assert PerTensor().reduce_dims(x) == (0, 1, 2, 3)
    assert PerChannel(0).reduce_dims(x) == (1, 2, 3)
    assert PerChannel(-1).reduce_dims(x) == (0, 1, 2)
    assert str(PerChannel(1)) == "per-channel(axis=1)" and str(PerTensor()) == "per-tensor"


def test_the_type_and_the_int_axis_give_the_same_bits():
    w = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    for axis in (0, 1, -1):
        assert torch.equal(per_channel_scale(w, 4, PerChannel(axis)), per_channel_scale(w, 4, axis))
        assert torch.equal(fake_quantize_per_channel(w, 4, PerChannel(axis)),
                           fake_quantize_per_channel(w, 4, axis))
    assert torch.equal(binary_scale(w, PerChannel(0)), binary_scale(w, True))
    assert torch.equal(binary_scale(w, PerTensor()), binary_scale(w, False))
    assert binary_scale(w, PerChannel(1)).shape == (1, 4)  # one alpha per column


def test_fake_quantize_module_takes_the_type():
    typed, plain = FakeQuantize(4, symmetric=True, axis=PerChannel(0)), FakeQuantize(4, True, 0)
    assert typed.axis == 0 and typed.granularity == PerChannel(0) == plain.granularity
    assert FakeQuantize(8, axis=PerTensor()).axis is None
    assert "per-channel(axis=0)" in repr(typed)


def test_direct_quantize_takes_the_type():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    for typed, flag in ((PerChannel(0), True), (PerTensor(), False)):
        a, b = direct_quantize(model, 3, typed), direct_quantize(model, 3, flag)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(),
                                                     strict=True))
    other = direct_quantize(model, 3, PerChannel(1))
    assert not torch.equal(other[0].weight, direct_quantize(model, 3, True)[0].weight)
