"""course.nn.swap: layers swapped for subclasses keep geometry, weights and place."""

import pytest
import torch
from torch import nn

from course.nn.swap import check_layer_names, like, replace_module


class MyConv(nn.Conv2d):
    def __init__(self, *args, tag="", **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag


def test_like_copies_geometry_and_weights_and_replace_puts_it_in_place():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)))
    old = model[0][0]
    new = like(MyConv, old, tag="x")
    assert (new.stride, new.padding, new.bias, new.tag) == ((2, 2), (1, 1), None, "x")
    assert torch.equal(new.weight, old.weight) and new.weight is not old.weight
    replace_module(model, "0.0", new)
    assert model[0][0] is new
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(model(x), old(x))


def test_bad_names_and_layers_are_clear_errors():
    model = nn.Sequential(nn.Linear(2, 2))
    check_layer_names(model, skip=["0"])
    with pytest.raises(ValueError, match=r"skip names layers the model does not have: \['9'\]"):
        check_layer_names(model, skip=["9"])
    with pytest.raises(TypeError, match="not a str"):
        check_layer_names(model, skip="0")
    with pytest.raises(TypeError, match="Linear or Conv2d"):
        like(MyConv, nn.ReLU())
