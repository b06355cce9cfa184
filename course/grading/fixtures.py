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


BUILDERS = {"conv_linear": _conv_linear, "mlp": _mlp, "linear": _linear,
            "linear_no_bias": _linear_no_bias, "dropout_linear": _dropout_linear,
            "conv_nobias": _conv_nobias, "mlp_nobias": _mlp_nobias, "nested": _nested,
            "conv_strided": _conv_strided}
"""Model names a reference case may use."""

VARIANTS: dict[str, tuple[str, dict[str, list[int] | None]]] = {
    "conv_linear_dead_filter": ("conv_linear", {"0.weight": [1]}),
    "mlp_dead_units": ("mlp", {"1.weight": [2], "4.weight": [0]}),
    "linear_at_zero": ("linear_no_bias", {"0.weight": None}),
}
"""A base model with some filters (rows along dim 0) set to zero; None: the whole tensor."""

NAMES = sorted([*BUILDERS, *VARIANTS])


def build(name: str, seed: int) -> nn.Module:
    """Model ``name`` with every parameter and batch-norm statistic drawn from ``seed``.

    Values come from Python's ``random.Random(seed)`` (identical on every machine), rounded
    to float32; batch-norm running statistics are set away from their defaults so that a
    change to them is visible. A name of ``VARIANTS`` then sets the listed filters to zero.
    """
    if name not in NAMES:
        raise ValueError(f"unknown fixture model {name!r}; known: {NAMES}")
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
