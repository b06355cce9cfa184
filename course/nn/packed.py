"""Packed 1-bit inference layers: the weight's signs packed 64 per uint64 word (stored as an
int64 buffer) plus ``alpha`` and the bias, so the state dict really holds 1 bit per weight
plus the scales.

The XNOR forms run the packed XNOR + popcount kernels of :mod:`course.kernels`; the
binary-weight forms unpack the signs and run float matmul / convolution (their input is
float). Built from the training layers of :mod:`course.nn.binary` by ``from_layer``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course.kernels.binary.bitpack import PackedBits, pack_sign_bits, unpack_signs
from course.kernels.binary.conv import PackedConvWeight, binary_conv2d, pack_conv_weight
from course.kernels.binary.gemm import xnor_gemm
from course.quant.binary import binary_scale
from course.quant.checks import check_float_tensor, check_plain_conv, pair
from course.quant.xnor import input_scale


def _words(buffer: torch.Tensor) -> np.ndarray:
    return buffer.numpy().view(np.uint64)


class _PackedLayer(nn.Module):
    """Buffers: ``weight_bits`` (int64 words: the packed signs), ``alpha`` float32 (out,),
    ``bias`` float32 (out,) or None. Inference only; float32 CPU tensors in and out."""

    weight_bits: torch.Tensor
    alpha: torch.Tensor

    def _init_buffers(self, bits: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> None:
        self.register_buffer("weight_bits", bits)
        alpha = binary_scale(weight.detach().to(torch.float32)).reshape(-1)
        self.register_buffer("alpha", alpha.clone())
        self.register_buffer("bias", None if bias is None
                             else bias.detach().to(torch.float32).clone())

    def _bias_or_zeros(self) -> torch.Tensor:
        return self.bias if self.bias is not None else torch.zeros_like(self.alpha)


class PackedBinaryLinear(_PackedLayer):
    """Inference form of :class:`BinaryLinear`: 1-bit weight signs + alpha + bias.

    Forward: unpack the signs, ``x @ (alpha * signs).T + bias`` in float32.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = check_float_tensor(weight, "weight")
        if weight.dim() != 2:
            raise ValueError(f"weight must be (out, in), got shape {tuple(weight.shape)}")
        self.in_features = int(weight.shape[1])
        self.out_features = int(weight.shape[0])
        self._init_buffers(pack_sign_bits(weight.detach().cpu()).to_tensor(), weight, bias)

    @classmethod
    def from_layer(cls, layer: nn.Linear) -> PackedBinaryLinear:
        return cls(layer.weight, layer.bias)

    def packed_weight(self) -> PackedBits:
        return PackedBits(_words(self.weight_bits), self.in_features)

    def binary_weight(self) -> torch.Tensor:
        """``alpha * sign(W)`` as float32 ``(out, in)``, unpacked from the bits."""
        return unpack_signs(self.packed_weight()) * self.alpha[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.binary_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class PackedXNORLinear(PackedBinaryLinear):
    """Inference form of :class:`XNORLinear`: packs ``sign(x)`` and runs the XNOR + popcount
    GEMM with ``beta`` (per sample), ``alpha`` (per output) and the bias fused.

    Input float32 ``(..., in_features)``; output float32 ``(..., out_features)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_float_tensor(x, "x")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features, got shape "
                             f"{tuple(x.shape)}")
        rows = x.detach().reshape(-1, self.in_features).to(torch.float32)
        beta = input_scale(rows).reshape(-1)
        out = xnor_gemm(pack_sign_bits(rows), self.packed_weight(), row_scale=beta,
                        col_scale=self.alpha, bias=self._bias_or_zeros())
        return out.reshape(*x.shape[:-1], self.out_features)


class PackedBinaryConv2d(_PackedLayer):
    """Inference form of :class:`BinaryConv2d`: 1-bit weight signs + alpha + bias; forward
    unpacks the signs and runs float32 ``conv2d``. groups=1, dilation=1, zero padding."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None,
                 stride: tuple[int, int], padding: tuple[int, int]) -> None:
        super().__init__()
        weight = check_float_tensor(weight, "weight")
        if weight.dim() != 4:
            raise ValueError(f"weight must be (out, in, kh, kw), got {tuple(weight.shape)}")
        packed = pack_conv_weight(weight.detach().cpu())
        self.in_channels = packed.in_channels
        self.out_channels = packed.out_channels
        self.kernel_size = packed.kernel_size
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding")
        self._init_buffers(packed.to_tensor(), weight, bias)

    @classmethod
    def from_layer(cls, layer: nn.Conv2d) -> PackedBinaryConv2d:
        check_plain_conv(layer)
        return cls(layer.weight, layer.bias, layer.stride, layer.padding)

    def packed_weight(self) -> PackedConvWeight:
        return PackedConvWeight(_words(self.weight_bits), self.in_channels, self.kernel_size)

    def binary_weight(self) -> torch.Tensor:
        """``alpha * sign(W)`` as float32 ``(out, in, kh, kw)``, unpacked from the bits."""
        kh, kw = self.kernel_size
        words = _words(self.weight_bits).reshape(self.out_channels * kh * kw, -1)
        taps = unpack_signs(PackedBits(words, self.in_channels))
        signs = taps.reshape(self.out_channels, kh, kw, self.in_channels).permute(0, 3, 1, 2)
        return signs * self.alpha.view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.binary_weight(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class PackedXNORConv2d(PackedBinaryConv2d):
    """Inference form of :class:`XNORConv2d`: ``sign(x)`` packed along channels, im2col on
    bits, XNOR + popcount GEMM with ``alpha``, the ``K`` map and the bias fused.

    Output: float32 ``(N, O, Ho, Wo)`` in channels-last memory layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_float_tensor(x, "x")
        return binary_conv2d(x, self.packed_weight(), self.stride, self.padding,
                             out_scale=self.alpha, k_map=True, bias=self._bias_or_zeros())
