"""Dynamic-range int8: int8 weights stored, activations quantized per batch, float out.

Each ``Linear`` / ``Conv2d`` (batch norm folded in first) becomes a layer that stores its
weight as int8 (symmetric, per output channel, ``[-127, 127]``) and, on every call,
quantizes its float input with that batch's own min/max (per tensor, int8), multiplies
int8 x int8 -> int32 on the int8 GEMM, and rescales to float32 with the bias added
(:mod:`course.kernels.int8_dynamic`). ReLU, pooling and flatten stay float. No
calibration needed.

>>> from course.models import MLP
>>> dyn = to_dynamic_int8(MLP().eval())
>>> dyn.fc1.weight.dtype, dyn(torch.rand(3, 1, 28, 28)).shape
(torch.int8, torch.Size([3, 10]))
"""

from __future__ import annotations

import torch
from torch import nn

from course.kernels import (
    conv2d_int8,
    dequantize_accumulators,
    pack_int8,
    quantize_activations_int8,
)
from course.kernels.int8_linear import linear_dequantize
from course.methods.ptq.plan import folded_model, plan_model
from course.nn.integer import quantize_layer_weights


def _check_float(x: object, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    return x


class _DynamicLayer(nn.Module):
    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight_q.contiguous())
        self.register_buffer("weight_scale", weight_scale.to(torch.float32).contiguous())
        self.register_buffer("bias", None if bias is None
                             else bias.detach().to(torch.float32).contiguous())
        self.register_load_state_dict_post_hook(lambda module, _: module.refresh())
        self.refresh()

    def refresh(self) -> None:
        """Recompute the weights' row sums (the zero-point correction) after loading."""
        self._w_sum = self.weight.reshape(self.weight.shape[0], -1).to(torch.int64).sum(1)
        self._w_packed = pack_int8(self.weight.t()) if self.weight.dim() == 2 else None


class DynamicInt8Linear(_DynamicLayer):
    """float ``[..., K]`` -> float32 ``[..., N]`` through int8 x int8 -> int32."""

    @classmethod
    def from_float(cls, layer: nn.Linear) -> DynamicInt8Linear:
        w_q, w_s, _ = quantize_layer_weights(layer.weight, None, 1.0)
        return cls(w_q, w_s, layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_float(x)
        if x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"x has {x.shape[-1]} features, the layer expects "
                             f"{self.weight.shape[1]}")
        lead = x.shape[:-1]
        q, scale, zp = quantize_activations_int8(x.reshape(-1, x.shape[-1]))
        y = linear_dequantize(q, self._w_packed, scale, zp, self.weight_scale, self._w_sum,
                              self.bias)
        return y.reshape(*lead, -1)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, weight int8"


class DynamicInt8Conv2d(_DynamicLayer):
    """float ``[B, C, H, W]`` -> float32 ``[B, C', H', W']`` (channels-last memory)."""

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None, stride: tuple[int, int],
                 padding: tuple[int, int]) -> None:
        super().__init__(weight_q, weight_scale, bias)
        self.stride, self.padding = tuple(stride), tuple(padding)

    @classmethod
    def from_float(cls, layer: nn.Conv2d) -> DynamicInt8Conv2d:
        w_q, w_s, _ = quantize_layer_weights(layer.weight, None, 1.0)
        return cls(w_q.permute(0, 2, 3, 1), w_s, layer.bias, tuple(layer.stride),
                   tuple(layer.padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_float(x)
        if x.dim() != 4 or x.shape[1] != self.weight.shape[3]:
            raise ValueError(f"x must be [B, {self.weight.shape[3]}, H, W], got "
                             f"{tuple(x.shape)}")
        q, scale, zp = quantize_activations_int8(x.permute(0, 2, 3, 1))
        acc = conv2d_int8(q, self.weight, stride=self.stride, padding=self.padding,
                          pad_value=zp)
        channels = self.weight.shape[0]
        y = dequantize_accumulators(acc.view(-1, channels), scale, zp, self.weight_scale,
                                    self._w_sum, self.bias)
        return y.view(acc.shape).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"weight={tuple(self.weight.shape)} int8 [C_out, kh, kw, C_in], "
                f"stride={self.stride}, padding={self.padding}")


def to_dynamic_int8(model: nn.Module) -> nn.Sequential:
    """Dynamic-range int8 copy of a float ``nn.Sequential`` (see :mod:`course.methods.ptq.plan`).

    Batch norms are folded, then every Linear and Conv2d is replaced by its dynamic int8
    layer; the rest stays float. ``model`` is not modified.
    """
    converted = folded_model(plan_model(model))
    for name, module in list(converted.named_children()):
        if isinstance(module, nn.Linear):
            setattr(converted, name, DynamicInt8Linear.from_float(module))
        elif isinstance(module, nn.Conv2d):
            setattr(converted, name, DynamicInt8Conv2d.from_float(module))
    return converted.eval()
