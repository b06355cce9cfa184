"""course.cost against hand-computed counts: MACs of small models (groups, stride, padding,
dilation, a layer called twice, a 3-D Linear input), bytes of packed weights (rounded up per
tensor, shared tensors once, other tensors at their own dtype), and the energy formula."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from course.cost import DRAM_PJ_PER_WORD, ENERGY_PJ, count_macs, energy_pj, storage_bytes
from course.grading import fixtures


def _conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0,
              dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ----------------------------------------------------------------------------- count_macs
def test_linear_counts_every_row_of_a_3d_input():
    assert count_macs(nn.Linear(6, 5), (2, 7, 6)) == 2 * 7 * 5 * 6


@pytest.mark.parametrize("stride, padding, dilation, groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (1, 1, 1, 4), (2, 3, 3, 2), (1, 1, 1, 8),
])
def test_conv2d_by_hand(stride, padding, dilation, groups):
    conv = nn.Conv2d(8, 8, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    h = _conv_out(13, 3, stride, padding, dilation)
    w = _conv_out(10, 3, stride, padding, dilation)
    assert count_macs(conv, (3, 8, 13, 10)) == 3 * 8 * h * w * (8 // groups) * 3 * 3


def test_the_convs_fixture_by_hand():
    model = fixtures.build("convs", 0)
    # [2, 3, 9, 11] -> conv s2 p1 -> [2, 8, 5, 6] -> dilated grouped conv -> [2, 8, 5, 6]
    # -> depthwise stride (2, 1) -> [2, 8, 3, 6] -> 1x3 conv -> [2, 4, 3, 6] -> pool -> Linear
    expected = (2 * 8 * 5 * 6 * 3 * 9 + 2 * 8 * 5 * 6 * 2 * 9 + 2 * 8 * 3 * 6 * 1 * 9
                + 2 * 4 * 3 * 6 * 8 * 3 + 2 * 5 * 4)
    assert count_macs(model, (2, 3, 9, 11)) == expected == 27688


def test_a_layer_called_twice_counts_twice():
    assert count_macs(fixtures.TiedLinear(), (5, 4)) == 3 * 5 * 4 * 4


def test_bias_batch_norm_pooling_and_activations_count_nothing():
    with_extras = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 3))
    plain = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4, 3, bias=False))
    assert count_macs(with_extras, (1, 2, 4, 4)) == count_macs(plain, (1, 2, 4, 4)) \
        == 4 * 2 * 2 * 2 * 9 + 3 * 4


def test_the_model_is_left_as_it_was():
    model = fixtures.build("conv_linear_train", 1)
    before = copy.deepcopy(model.state_dict())
    assert count_macs(model, (1, 2, 4, 4)) == 264
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_batch_one_works_with_batch_norm_in_training_mode():
    # BatchNorm1d refuses a batch of one in training mode: the count runs in eval mode
    model = fixtures.build("mlp", 2).train()
    assert count_macs(model, (1, 6)) == 5 * 6 + 3 * 5


def test_torchvision_resnet18_is_the_published_count():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)
    # ResNet-18 at 224x224: 1.814 G multiply-accumulates (He et al. 2016 quote 1.8 GFLOPs)
    assert count_macs(model, (1, 3, 224, 224)) == 1_814_073_344


def test_count_macs_checks_its_arguments():
    with pytest.raises(TypeError, match="model"):
        count_macs("resnet", (1, 3))
    with pytest.raises(TypeError, match="input_shape"):
        count_macs(nn.Linear(3, 2), 3)
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(nn.Linear(3, 2), (0, 3))


# ----------------------------------------------------------------------------- storage_bytes
def _plain_bytes(model: nn.Module, bits: int) -> int:
    """Independent count from the state dict: weights of MAC layers by key, ties by pointer."""
    weight_keys = {f"{n}.weight" for n, m in model.named_modules()
                   if isinstance(m, (nn.Linear, nn.Conv2d))}
    seen, total = set(), 0
    for key, t in model.state_dict(keep_vars=True).items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += math.ceil(t.numel() * bits / 8) if key in weight_keys \
            else t.numel() * t.element_size()
    return total


@pytest.mark.parametrize("name", ["conv_linear", "mlp", "convs", "tied_linear", "mlp_half"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 16, 32])
def test_storage_matches_an_independent_count(name, bits):
    model = fixtures.build(name, 0)
    assert storage_bytes(model, bits) == _plain_bytes(model, bits)


def test_storage_by_hand():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    # conv weight 18 x 3 bits = 54 bits -> 7 B; linear weight 6 x 3 bits -> 3 B;
    # biases 2 + 3 floats; batch norm 4 x 2 floats + num_batches_tracked (int64)
    assert storage_bytes(model, 3) == 7 + 3 + 5 * 4 + 8 * 4 + 8
    assert storage_bytes(model) == (18 + 6 + 5 + 8) * 4 + 8


def test_fp32_storage_is_what_the_state_dict_holds():
    from course.measure import model_size_bytes

    model = fixtures.build("convs", 3)
    assert storage_bytes(model, 32) == model_size_bytes(model)


def test_shared_weights_count_once():
    model = fixtures.TiedLinear()
    assert storage_bytes(model, 8) == 16 + 4 * 4


def test_storage_checks_its_arguments():
    with pytest.raises(TypeError, match="model"):
        storage_bytes({"w": torch.zeros(3)}, 8)
    with pytest.raises(ValueError, match="bits_per_weight"):
        storage_bytes(nn.Linear(2, 2), 0)
    with pytest.raises(TypeError, match="bits_per_weight"):
        storage_bytes(nn.Linear(2, 2), 8.0)


# ----------------------------------------------------------------------------- energy_pj
@pytest.mark.parametrize("fmt, mult, add", [("fp32", 3.7, 0.9), ("fp16", 1.1, 0.4),
                                            ("int8", 0.2, 0.03)])
def test_energy_formula(fmt, mult, add):
    assert ENERGY_PJ[fmt].mult_pj == mult and ENERGY_PJ[fmt].add_pj == add
    assert energy_pj(1000, 0, fmt) == pytest.approx(1000 * (mult + add), rel=1e-12)
    assert energy_pj(0, 9, fmt) == 3 * 640.0
    assert energy_pj(3, 4, fmt) == pytest.approx(3 * (mult + add) + 640.0, rel=1e-12)


def test_a_dram_word_costs_more_than_a_hundred_fp32_macs():
    assert 100 < DRAM_PJ_PER_WORD / ENERGY_PJ["fp32"].mac_pj < 200


def test_energy_checks_its_arguments():
    with pytest.raises(ValueError, match="fmt"):
        energy_pj(1, 1, "bf16")
    with pytest.raises(ValueError, match="macs"):
        energy_pj(-1, 1, "fp32")
    with pytest.raises(TypeError, match="bytes_moved"):
        energy_pj(1, 1.5, "fp32")
