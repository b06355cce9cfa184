"""Float16 post-training quantization: weights stored in half precision, computed in float32.

Each ``Linear`` / ``Conv2d`` (batch norm folded in first) stores its weight and bias as
float16 — half the bytes — and converts them to float32 on every call, which is what a
CPU without fast float16 arithmetic does: smaller, not faster.

>>> from course.models import MLP
>>> half = to_float16(MLP().eval())
>>> half.fc1.weight.dtype, half(torch.rand(3, 784)).dtype
(torch.float16, torch.float32)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course.methods.ptq.plan import folded_model, plan_model


class _Float16Layer(nn.Module):
    def __init__(self, layer: nn.Linear | nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("weight", layer.weight.detach().to(torch.float16))
        self.register_buffer("bias", None if layer.bias is None
                             else layer.bias.detach().to(torch.float16))

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        bias = None if self.bias is None else self.bias.to(torch.float32)
        return self.weight.to(torch.float32), bias


class Float16Linear(_Float16Layer):
    """``nn.Linear`` with float16 storage: float32 in, float32 out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self._weights())


class Float16Conv2d(_Float16Layer):
    """``nn.Conv2d`` with float16 storage: float32 in, float32 out."""

    def __init__(self, layer: nn.Conv2d) -> None:
        super().__init__(layer)
        self.stride, self.padding = tuple(layer.stride), tuple(layer.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, *self._weights(), self.stride, self.padding)


def to_float16(model: nn.Module) -> nn.Sequential:
    """Float16-weight copy of a float ``nn.Sequential`` (see :mod:`course.methods.ptq.plan`).

    Batch norms are folded, then every Linear and Conv2d stores float16 weights and bias.
    ``model`` is not modified.
    """
    converted = folded_model(plan_model(model))
    for name, module in list(converted.named_children()):
        if isinstance(module, nn.Linear):
            setattr(converted, name, Float16Linear(module))
        elif isinstance(module, nn.Conv2d):
            setattr(converted, name, Float16Conv2d(module))
    return converted.eval()
