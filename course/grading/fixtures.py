"""Small, fully deterministic models that reference cases name instead of storing."""

from __future__ import annotations

import random

import torch
from torch import nn


def _conv_linear() -> nn.Module:
    # input [B, 2, 4, 4] -> conv 3x3 -> [B, 3, 2, 2] -> 12 features -> 4 classes
    return nn.Sequential(
        nn.Conv2d(2, 3, kernel_size=3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
        nn.Linear(12, 4),
    )


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3),
    )


def _linear() -> nn.Module:
    # softmax regression: 4 features -> 3 classes (its cross-entropy Hessian is known exactly)
    return nn.Sequential(nn.Linear(4, 3))


def _linear_no_bias() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3, bias=False))


def _dropout_linear() -> nn.Module:
    # in eval mode the dropout is the identity: the same Hessian as _linear
    return nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 3))


def _conv_nobias() -> nn.Module:
    # _conv_linear with a convolution that has no bias (batch norm follows it)
    return nn.Sequential(
        nn.Conv2d(2, 3, kernel_size=3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
        nn.Linear(12, 4),
    )


def _mlp_nobias() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3),
    )


def _conv_strided() -> nn.Module:
    # a convolution with stride, padding and dilation (not in its state_dict) and no bias
    return nn.Sequential(
        nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1, dilation=1, bias=False),
        nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4),
    )


def _nested() -> nn.Module:
    # layers inside a sub-module: model.children() alone does not reach them
    block = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU())
    return nn.Sequential(nn.Flatten(), block, nn.Sequential(nn.Sequential(nn.Linear(5, 3))))


def _convs() -> nn.Module:
    # input [B, 3, H, W]: strided, dilated + grouped, depthwise with stride (2, 1), a 1x3
    # kernel; a PReLU and a batch norm whose `weight`s are not Linear/Conv2d weights
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.PReLU(8),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, bias=False), nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, stride=(2, 1), padding=1, groups=8),
        nn.Conv2d(8, 4, (1, 3), padding=(0, 1)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    )


class TiedLinear(nn.Module):
    """Two Linear(4, 4) sharing one weight; ``encode`` runs twice: ``decode(encode(relu(
    encode(x))))`` on an input [..., 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(4, 4)
        self.decode = nn.Linear(4, 4, bias=False)
        self.decode.weight = self.encode.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(torch.relu(self.encode(x))))


BUILDERS = {"conv_linear": _conv_linear, "mlp": _mlp, "linear": _linear,
            "linear_no_bias": _linear_no_bias, "dropout_linear": _dropout_linear,
            "conv_nobias": _conv_nobias, "mlp_nobias": _mlp_nobias, "nested": _nested,
            "conv_strided": _conv_strided, "convs": _convs, "tied_linear": TiedLinear}

VARIANTS: dict[str, tuple[str, dict[str, list[int] | None]]] = {
    "conv_linear_dead_filter": ("conv_linear", {"0.weight": [1]}),
    "mlp_dead_units": ("mlp", {"1.weight": [2], "4.weight": [0]}),
    "linear_at_zero": ("linear_no_bias", {"0.weight": None}),
}
"""A base model with some filters (rows along dim 0) set to zero; None: the whole tensor."""

MODES: dict[str, tuple[str, str]] = {
    "mlp_half": ("mlp", "half"),
    "conv_linear_train": ("conv_linear", "train"),
}
"""A base model converted to float16 ("half") or left in training mode ("train")."""

NAMES = sorted([*BUILDERS, *VARIANTS, *MODES])
"""Model names a reference case may use."""


def build(name: str, seed: int) -> nn.Module:
    """Model ``name`` with every parameter and batch-norm statistic drawn from ``seed``.

    Values come from Python's ``random.Random(seed)`` (identical on every machine), rounded
    to float32; batch-norm running statistics are set away from their defaults so that a
    change to them is visible. A name of ``VARIANTS`` then sets the listed filters to zero;
    a name of ``MODES`` converts the model to float16 or returns it in training mode.
    """
    if name not in NAMES:
        raise ValueError(f"unknown fixture model {name!r}; known: {NAMES}")
    if name in MODES:
        base, mode = MODES[name]
        model = build(base, seed)
        return model.half() if mode == "half" else model.train()
    base, zeroed = VARIANTS.get(name, (name, {}))
    rng = random.Random(seed)
    model = BUILDERS[base]()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                tensor.fill_(rng.randrange(1, 100))
                continue
            low, high = (0.5, 2.0) if key.endswith("running_var") else (-1.0, 1.0)
            values = [rng.uniform(low, high) for _ in range(tensor.numel())]
            tensor.copy_(torch.tensor(values, dtype=torch.float64).reshape(tensor.shape))
        state = model.state_dict()
        for key, rows in zeroed.items():
            if rows is None:
                state[key].zero_()
            for row in rows or ():
                state[key][row] = 0.0
    return model.eval()
