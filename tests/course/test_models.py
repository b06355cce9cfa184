"""course.models: shapes, hand-counted parameter counts, layer layout, and forward passes
checked against the same computation written with torch.nn.functional."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course import models
from course.train import set_seed


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_every_model_maps_images_to_ten_logits(name):
    model = models.build_model(name).eval()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (5, 10)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_model_names_and_builder():
    assert models.MODEL_NAMES == ("mlp", "deck_mlp", "cnn", "resnet")
    assert isinstance(models.build_model("mlp"), models.MLP)
    assert isinstance(models.build_model("deck_mlp"), models.DeckMLP)
    assert isinstance(models.build_model("cnn"), models.SmallCNN)
    assert isinstance(models.build_model("resnet"), models.SmallResNet)
    assert isinstance(models.build_model(" MLP "), models.MLP)  # case and spaces forgiven


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ValueError, match="mlp, deck_mlp, cnn, resnet") as err:
        models.build_model("vgg")
    assert "'vgg'" in str(err.value)
    with pytest.raises(TypeError, match="name"):
        models.build_model(3)


def test_mlp_parameter_count_by_hand():
    # Linear(784, 512): 784*512 weights + 512 biases;  BatchNorm1d(512): gamma + beta
    # Linear(512, 64):  512*64 + 64;                   BatchNorm1d(64): 2*64
    # Linear(64, 10):   64*10 + 10
    expected = (784 * 512 + 512) + 2 * 512 + (512 * 64 + 64) + 2 * 64 + (64 * 10 + 10)
    assert expected == 436_554
    assert _n_params(models.MLP()) == expected
    # Buffers: running mean and var per BN feature, one int64 counter per BN.
    buffers = dict(models.MLP().named_buffers())
    assert sum(b.numel() for b in buffers.values()) == 2 * 512 + 2 * 64 + 2


def test_mlp_layers_are_named_in_the_lecture_order():
    layout = [(name, type(m)) for name, m in models.MLP().named_children()]
    assert layout == [
        ("flatten", nn.Flatten), ("fc1", nn.Linear), ("bn1", nn.BatchNorm1d),
        ("relu1", nn.ReLU), ("fc2", nn.Linear), ("bn2", nn.BatchNorm1d),
        ("relu2", nn.ReLU), ("fc3", nn.Linear),
    ]
    mlp = models.MLP()
    assert (mlp.fc1.in_features, mlp.fc1.out_features) == (784, 512)
    assert (mlp.fc2.in_features, mlp.fc2.out_features) == (512, 64)
    assert (mlp.fc3.in_features, mlp.fc3.out_features) == (64, 10)
    assert mlp.bn1.num_features == 512 and mlp.bn2.num_features == 64


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Give every batch norm non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                        training=False, eps=bn.eps)


def test_mlp_forward_matches_functional_reference_for_both_input_shapes():
    mlp = models.MLP().eval()
    _randomize_bn(mlp, 1)
    x = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    flat = x.reshape(7, 784)
    h = F.relu(_bn(F.linear(flat, mlp.fc1.weight, mlp.fc1.bias), mlp.bn1))
    h = F.relu(_bn(F.linear(h, mlp.fc2.weight, mlp.fc2.bias), mlp.bn2))
    expected = F.linear(h, mlp.fc3.weight, mlp.fc3.bias)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), expected)
        torch.testing.assert_close(mlp(flat), expected)


def test_small_cnn_parameter_count_by_hand_and_layout():
    # conv1: 16*1*3*3 + 16; bn1: 2*16; conv2: 32*16*3*3 + 32; bn2: 2*32; fc: 32*7*7*10 + 10
    expected = (16 * 9 + 16) + 32 + (32 * 16 * 9 + 32) + 64 + (32 * 7 * 7 * 10 + 10)
    cnn = models.SmallCNN()
    assert _n_params(cnn) == expected == 20_586
    kinds = [type(m) for m in cnn.children()]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
                     nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear]
    assert cnn.conv1.padding == (1, 1) and cnn.conv2.kernel_size == (3, 3)


def test_small_cnn_forward_matches_functional_reference():
    cnn = models.SmallCNN().eval()
    _randomize_bn(cnn, 3)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    h = F.max_pool2d(F.relu(_bn(F.conv2d(x, cnn.conv1.weight, cnn.conv1.bias, padding=1),
                                cnn.bn1)), 2)
    h = F.max_pool2d(F.relu(_bn(F.conv2d(h, cnn.conv2.weight, cnn.conv2.bias, padding=1),
                                cnn.bn2)), 2)
    expected = F.linear(h.flatten(1), cnn.fc.weight, cnn.fc.bias)
    with torch.no_grad():
        torch.testing.assert_close(cnn(x), expected)


def test_every_conv_and_hidden_linear_is_followed_by_batch_norm():
    resnet = models.SmallResNet()
    convs = [m for m in resnet.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in resnet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 1 + 2 + 3 + 3  # stem, identity block, 2 projecting blocks
    for conv in convs:
        assert conv.bias is None  # the batch norm after it carries the bias
    linears = [m for m in models.MLP().modules() if isinstance(m, nn.Linear)]
    bn1d = [m for m in models.MLP().modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(linears) == 3 and len(bn1d) == 2


def test_residual_block_matches_functional_reference():
    for in_c, out_c, stride, projects in [(8, 8, 1, False), (8, 16, 2, True)]:
        block = models.ResidualBlock(in_c, out_c, stride=stride).eval()
        _randomize_bn(block, stride)
        assert isinstance(block.shortcut, nn.Sequential) == projects
        x = torch.randn(2, in_c, 12, 12, generator=torch.Generator().manual_seed(5))
        h = F.relu(_bn(F.conv2d(x, block.conv1.weight, stride=stride, padding=1), block.bn1))
        h = _bn(F.conv2d(h, block.conv2.weight, padding=1), block.bn2)
        if projects:
            skip = _bn(F.conv2d(x, block.shortcut.conv.weight, stride=stride),
                       block.shortcut.bn)
        else:
            skip = x
        with torch.no_grad():
            out = block(x)
        torch.testing.assert_close(out, F.relu(h + skip))
        assert out.shape == (2, out_c, 12 // stride, 12 // stride)


def test_residual_block_rejects_bad_sizes():
    with pytest.raises(ValueError, match="stride"):
        models.ResidualBlock(4, 4, stride=0)
    with pytest.raises(TypeError, match="in_channels"):
        models.ResidualBlock(4.0, 4)


def test_resnet_is_small_and_every_parameter_gets_a_gradient():
    resnet = models.SmallResNet()
    assert _n_params(resnet) < 150_000
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    resnet(x).sum().backward()
    missing = [n for n, p in resnet.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_seeded_builds_are_identical_and_unseeded_differ():
    set_seed(11)
    a = models.build_model("cnn").state_dict()
    set_seed(11)
    b = models.build_model("cnn").state_dict()
    c = models.build_model("cnn").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_the_decks_mlp_puts_batch_norm_after_relu_with_the_same_parameters():
    deck, ours = models.DeckMLP(), models.MLP()
    names = [name for name, _ in deck.named_children()]
    assert names == ["flatten", "fc1", "relu1", "bn1", "fc2", "relu2", "bn2", "fc3"]
    assert sorted(deck.state_dict()) == sorted(ours.state_dict())
    ours.load_state_dict(deck.state_dict())
    deck.eval()
    x = torch.rand(3, 784)
    h = deck.bn1(torch.relu(deck.fc1(x)))  # ReLU first, then batch norm
    rest = torch.nn.Sequential(*list(deck.children())[4:])
    assert torch.allclose(rest(h), deck(x), atol=1e-6)
