"""The course's networks: the lecture's MLP, a small CNN and a small ResNet, for MNIST.

Every model takes images ``x`` float32 ``[B, 1, 28, 28]`` (the MLP also ``[B, 784]``) with
values in [0, 1] and returns logits float32 ``[B, 10]``. Layers are *named* submodules
(``fc1``, ``bn1``, ``conv1`` ...), so a lab can find them (``model.fc1``), fuse them by name
(``[["conv1", "bn1", "relu1"]]``) or walk them with ``named_modules()``.

>>> model = build_model("mlp")
>>> model(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

NUM_CLASSES = 10
"""Digits 0-9."""

IMAGE_SIZE = 28
"""MNIST images are 28 x 28 pixels, one channel."""

IMAGE_PIXELS = IMAGE_SIZE * IMAGE_SIZE

MLP_WIDTHS = (512, 64)
"""Hidden widths of the lecture's MLP: 784 -> 512 -> 64 -> 10."""

CNN_CHANNELS = (16, 32)
"""Output channels of SmallCNN's two conv blocks (each halves the image with a max pool)."""

RESNET_CHANNELS = (16, 32, 64)
"""SmallResNet: stem and first block at 16 channels (28x28), then 32 (14x14), 64 (7x7)."""


class MLP(nn.Sequential):
    """The course's MLP, the widths of the lecture's hands-on network, in PyTorch's usual
    order: 784 -> 512 -> BN -> ReLU -> 64 -> BN -> ReLU -> 10 (the deck's own order, ReLU
    before BN, is :class:`DeckMLP`).

    Submodules, in order: ``flatten, fc1, bn1, relu1, fc2, bn2, relu2, fc3``.
    Input ``[B, 1, 28, 28]`` or ``[B, 784]`` float32; output logits ``[B, 10]``.
    436,554 trainable parameters (plus the batch norms' running statistics).

    >>> MLP()(torch.zeros(3, 784)).shape
    torch.Size([3, 10])
    """

    def __init__(self) -> None:
        hidden1, hidden2 = MLP_WIDTHS
        super().__init__(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(IMAGE_PIXELS, hidden1)),
            ("bn1", nn.BatchNorm1d(hidden1)),
            ("relu1", nn.ReLU()),
            ("fc2", nn.Linear(hidden1, hidden2)),
            ("bn2", nn.BatchNorm1d(hidden2)),
            ("relu2", nn.ReLU()),
            ("fc3", nn.Linear(hidden2, NUM_CLASSES)),
        ]))


class DeckMLP(nn.Sequential):
    """The lecture's hands-on network as the deck builds it in Keras: ``Dense(512,
    activation="relu")``, ``BatchNormalization``, ``Dense(64, activation="relu")``,
    ``BatchNormalization``, ``Dense(10)`` — batch norm *after* the ReLU.

    Submodules, in order: ``flatten, fc1, relu1, bn1, fc2, relu2, bn2, fc3`` (the same names
    and parameter count as :class:`MLP`; only the order of ReLU and BN differs, which
    matters once the layers' inputs are binarized: BN then hands the next layer inputs
    centred on 0).

    >>> [name for name, _ in DeckMLP().named_children()][1:4]
    ['fc1', 'relu1', 'bn1']
    """

    def __init__(self) -> None:
        hidden1, hidden2 = MLP_WIDTHS
        super().__init__(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(IMAGE_PIXELS, hidden1)),
            ("relu1", nn.ReLU()),
            ("bn1", nn.BatchNorm1d(hidden1)),
            ("fc2", nn.Linear(hidden1, hidden2)),
            ("relu2", nn.ReLU()),
            ("bn2", nn.BatchNorm1d(hidden2)),
            ("fc3", nn.Linear(hidden2, NUM_CLASSES)),
        ]))


class SmallCNN(nn.Sequential):
    """Two conv blocks and a linear classifier, fast on a CPU.

    ``conv1`` (1->16, 3x3, padding 1) ``bn1 relu1 pool1`` (2x2 max, 28->14), ``conv2``
    (16->32) ``bn2 relu2 pool2`` (14->7), ``flatten``, ``fc`` (32*7*7 -> 10).
    Input ``[B, 1, 28, 28]`` float32; output logits ``[B, 10]``.

    >>> SmallCNN()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self) -> None:
        c1, c2 = CNN_CHANNELS
        pooled = IMAGE_SIZE // 4
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(1, c1, kernel_size=3, padding=1)),
            ("bn1", nn.BatchNorm2d(c1)),
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(c1, c2, kernel_size=3, padding=1)),
            ("bn2", nn.BatchNorm2d(c2)),
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(c2 * pooled * pooled, NUM_CLASSES)),
        ]))


class ResidualBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, both convs 3x3, no bias.

    ``conv1`` has the block's ``stride``; when the stride is not 1 or the channel count
    changes, ``shortcut`` is a 1x1 conv (same stride) and a batch norm, otherwise identity.
    Input ``[B, in_channels, H, W]``; output ``[B, out_channels, H / stride, W / stride]``.

    >>> ResidualBlock(16, 32, stride=2)(torch.zeros(1, 16, 28, 28)).shape
    torch.Size([1, 32, 14, 14])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)),
                ("bn", nn.BatchNorm2d(out_channels)),
            ]))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small residual network for 28x28 digits.

    ``stem`` (conv 1->16 3x3, BN, ReLU), ``layer1`` (block 16->16, 28x28), ``layer2``
    (16->32, stride 2, 14x14), ``layer3`` (32->64, stride 2, 7x7), ``pool`` (global
    average), ``flatten``, ``fc`` (64 -> 10). Input ``[B, 1, 28, 28]``; logits ``[B, 10]``.

    >>> SmallResNet()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3 = RESNET_CHANNELS
        self.stem = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(1, c1, 3, padding=1, bias=False)),
            ("bn", nn.BatchNorm2d(c1)),
            ("relu", nn.ReLU()),
        ]))
        self.layer1 = ResidualBlock(c1, c1)
        self.layer2 = ResidualBlock(c1, c2, stride=2)
        self.layer3 = ResidualBlock(c2, c3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c3, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "mlp": MLP,
    "deck_mlp": DeckMLP,
    "cnn": SmallCNN,
    "resnet": SmallResNet,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
"""Names ``build_model`` accepts: ``("mlp", "deck_mlp", "cnn", "resnet")``."""


def build_model(name: str) -> nn.Module:
    """A freshly initialised model by name (see ``MODEL_NAMES``), in training mode, on CPU.

    The initial weights come from torch's global generator: call
    ``course.train.set_seed(seed)`` first for reproducible ones.

    >>> type(build_model("cnn")).__name__
    'SmallCNN'
    """
    return _BUILDERS[canonical_name(name)]()


def canonical_name(name: str) -> str:
    """``name`` lower-cased and stripped, checked against :data:`MODEL_NAMES`.

    >>> canonical_name(" MLP ")
    'mlp'
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {', '.join(MODEL_NAMES)}; "
                        f"got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown model name {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return key
