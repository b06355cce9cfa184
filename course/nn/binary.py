"""Binary training layers: drop-in ``nn.Linear`` / ``nn.Conv2d`` subclasses, float weights
kept for training (the math is :mod:`course.quant.xnor`'s).

* :class:`BinaryLinear`, :class:`BinaryConv2d` — binary weights (BWN), float inputs;
* :class:`XNORLinear`, :class:`XNORConv2d` — binary weights and binary inputs. They
  binarize what they receive: place them after batch norm, not after a ReLU (the sign of
  a ReLU output is always +1).

``layer.to_packed()`` returns the inference form of :mod:`course.nn.packed`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course.nn.packed import (
    PackedBinaryConv2d,
    PackedBinaryLinear,
    PackedXNORConv2d,
    PackedXNORLinear,
)
from course.quant.checks import check_plain_conv
from course.quant.ste import sign_ste
from course.quant.xnor import binary_weight, input_scale, input_scale_map


class BinaryLinear(nn.Linear):
    """``nn.Linear`` whose weight is binarized in the forward pass: ``alpha * sign(W)``
    (BWN, alpha per output feature). Input ``(..., in_features)`` float, output float."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, binary_weight(self.weight), self.bias)

    def to_packed(self) -> PackedBinaryLinear:
        return PackedBinaryLinear.from_layer(self)


class XNORLinear(nn.Linear):
    """``nn.Linear`` with binary weights and binary inputs (XNOR-Net):
    ``beta(x) * (sign(x) @ (alpha * sign(W)).T) + bias``, ``beta = mean|x|`` per sample."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(sign_ste(x), binary_weight(self.weight)) * input_scale(x)
        return out if self.bias is None else out + self.bias

    def to_packed(self) -> PackedXNORLinear:
        return PackedXNORLinear.from_layer(self)


class BinaryConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is binarized in the forward pass: ``alpha * sign(W)``
    (BWN, alpha per output channel). Input float ``(N, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, binary_weight(self.weight), self.bias)

    def to_packed(self) -> PackedBinaryConv2d:
        return PackedBinaryConv2d.from_layer(self)


class XNORConv2d(nn.Conv2d):
    """``nn.Conv2d`` with binary weights and inputs (XNOR-Net):
    ``(sign(pad(x)) * alpha sign(W)) ⊙ K + bias``, ``K`` from :func:`input_scale_map`.
    The input is zero-padded *before* the sign, so padded pixels are +1 (sign(0) = +1),
    exactly as in the packed kernel. groups=1, dilation=1, zero padding only."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        check_plain_conv(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pad, then binarize: padded pixels are sign(0) = +1, as in the packed kernel.
        ph, pw = self.padding
        signs = sign_ste(F.pad(x, (pw, pw, ph, ph)))
        out = F.conv2d(signs, binary_weight(self.weight), None, self.stride)
        out = out * input_scale_map(x, self.kernel_size, self.stride, self.padding)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def to_packed(self) -> PackedXNORConv2d:
        return PackedXNORConv2d.from_layer(self)


BINARY_LAYERS = (BinaryLinear, XNORLinear, BinaryConv2d, XNORConv2d)
"""The training layers :func:`course.methods.xnor.pack_model` packs."""
