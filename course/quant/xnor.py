"""XNOR-Net and binary-weight networks (BWN): 1-bit weights and inputs with real scales.

Rastegari et al., 2016 approximate a layer's weight ``W`` by ``alpha * sign(W)`` with
``alpha = mean|W|`` per output channel (BWN), and, in XNOR-Net, also the input ``x`` by
``beta * sign(x)``: ``beta = mean|x|`` over the features of each sample for a linear layer,
and for a convolution the map ``K = A * k`` — ``A`` the mean of ``|x|`` over channels, ``k``
the ``kh x kw`` box filter ``1 / (kh * kw)``, with the convolution's stride and padding — one
``beta`` per output pixel. Then

    W x ≈ alpha * beta * (sign(W) · sign(x)),

and ``sign(W) · sign(x)`` is the XNOR + popcount dot product of :mod:`course.kernels`.

Training uses the straight-through estimator (STE) of the sign: forward ``sign(x)`` with
``sign(0) = +1``; backward the incoming gradient where ``|x| <= 1`` and 0 where ``|x| > 1``
(the gradient of ``clip(x, -1, 1)``, "gradient cancelling" in the paper). ``alpha`` is
treated as a constant in the backward pass (``course.quant.binary.binary_scale`` detaches
it); ``beta`` and ``K`` are functions of the input and are differentiated normally.

Layers (drop-in ``nn.Linear`` / ``nn.Conv2d`` subclasses, float weights kept for training):

* :class:`BinaryLinear`, :class:`BinaryConv2d` — binary weights (BWN), float inputs;
* :class:`XNORLinear`, :class:`XNORConv2d` — binary weights and binary inputs. They
  binarize what they receive: place them after batch norm, not after a ReLU (the sign of
  a ReLU output is always +1).

``layer.to_packed()`` returns the inference form (:class:`PackedBinaryLinear` ...): the
weight's signs packed 64 per uint64 word (stored as an int64 buffer) plus ``alpha`` and
the bias, so the state dict really holds 1 bit per weight plus the scales. The XNOR forms
run the packed XNOR + popcount kernels; the binary-weight forms unpack the signs and run
float matmul / convolution (their input is float). :func:`binarize_model` and
:func:`pack_model` convert whole models.

>>> w = torch.tensor([[0.5, -1.5], [2.0, 0.0]])
>>> binary_weight(w)                                  # alpha = 1.0 and 1.0 per row
tensor([[ 1., -1.],
        [ 1.,  1.]])
>>> sign_ste(torch.tensor([-3.0, 0.0, 0.4]))
tensor([-1.,  1.,  1.])
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Collection

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course.kernels.binary_conv import PackedConvWeight, binary_conv2d, pack_conv_weight
from course.kernels.bitpack import PackedBits, pack_sign_bits, unpack_signs
from course.kernels.xnor_gemm import xnor_gemm
from course.quant._checks import check_float_tensor
from course.quant.binary import binary_scale, sign
from course.quant.swap import check_layer_names, like, replace_module

STE_CLIP = 1.0
"""The sign STE passes the gradient where ``|x| <= STE_CLIP`` and cancels it elsewhere."""


class SignSTE(torch.autograd.Function):
    """``sign(x)`` (sign(0) = +1) forward; straight-through gradient backward.

    Backward: ``grad * (|x| <= clip)``; with ``clip=None`` the gradient passes unchanged
    (the plain STE that DoReFa-Net uses for its 1-bit weights).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, clip: float | None = STE_CLIP) -> torch.Tensor:
        ctx.clip = clip
        if clip is not None:
            ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        if ctx.clip is None:
            return grad, None
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= ctx.clip).to(grad.dtype), None


def sign_ste(x: torch.Tensor, clip: float | None = STE_CLIP) -> torch.Tensor:
    """``sign(x)`` with sign(0) = +1 and the straight-through gradient of :class:`SignSTE`.

    ``x``: float tensor, any shape; the result has its shape and dtype. ``clip``: a
    positive number (gradient zero where ``|x| > clip``) or None (gradient passed as is).

    >>> x = torch.tensor([-2.0, -0.5, 0.0, 1.0, 1.5], requires_grad=True)
    >>> sign_ste(x).sum().backward()
    >>> x.grad
    tensor([0., 1., 1., 1., 0.])
    """
    x = check_float_tensor(x, "x")
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not clip > 0:
            raise ValueError(f"clip must be a positive number or None, got {clip!r}")
        clip = float(clip)
    return SignSTE.apply(x, clip)


def binary_weight(w: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """BWN weight ``alpha * sign(w)``, differentiable with the sign STE (alpha constant).

    ``w``: float ``(out, ...)``; ``alpha = mean|w|`` per output channel (over all axes but 0)
    or, with ``per_channel=False``, per tensor. Same shape and dtype as ``w``.
    Gradient: ``alpha * grad`` where ``|w| <= 1``, 0 elsewhere.
    """
    w = check_float_tensor(w, "w")
    return binary_scale(w, per_channel) * sign_ste(w)


def input_scale(x: torch.Tensor) -> torch.Tensor:
    """XNOR-Net's ``beta`` for a linear layer: ``mean|x|`` over the last axis, kept.

    ``x``: float ``(..., features)``; returns ``(..., 1)``.

    >>> input_scale(torch.tensor([[1.0, -3.0], [0.0, 2.0]]))
    tensor([[2.],
            [1.]])
    """
    x = check_float_tensor(x, "x")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last axis, got shape {tuple(x.shape)}")
    return x.abs().mean(dim=-1, keepdim=True)


def _pair(value: object, name: str) -> tuple[int, int]:
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                              for v in items):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


def input_scale_map(x: torch.Tensor, kernel_size: int | tuple[int, int],
                    stride: int | tuple[int, int] = 1,
                    padding: int | tuple[int, int] = 0) -> torch.Tensor:
    """XNOR-Net's ``K`` for a convolution: ``A = mean_c |x|`` convolved with the box filter
    ``1 / (kh * kw)`` at the convolution's stride and zero padding.

    ``x``: float ``(N, C, H, W)``; returns ``(N, 1, Ho, Wo)``, one ``beta`` per output
    pixel (padded pixels count as 0 in the mean, as in a zero-padded convolution).

    >>> input_scale_map(torch.full((1, 2, 3, 3), -2.0), 3, padding=1)[0, 0]
    tensor([[0.8889, 1.3333, 0.8889],
            [1.3333, 2.0000, 1.3333],
            [0.8889, 1.3333, 0.8889]])
    """
    x = check_float_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    kernel = _pair(kernel_size, "kernel_size")
    ph, pw = _pair(padding, "padding")
    mean_abs = F.pad(x.abs().mean(dim=1, keepdim=True), (pw, pw, ph, ph))
    return F.avg_pool2d(mean_abs, kernel, _pair(stride, "stride"))


# ----------------------------------------------------------------------------- training layers


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


def _check_plain_conv(layer: nn.Conv2d) -> None:
    if layer.groups != 1 or tuple(layer.dilation) != (1, 1) or layer.padding_mode != "zeros":
        raise ValueError("XNOR and packed convolutions support groups=1, dilation=1 and zero "
                         f"padding only; got groups={layer.groups}, dilation={layer.dilation}, "
                         f"padding_mode={layer.padding_mode!r}")
    if isinstance(layer.padding, str):
        raise ValueError(f"padding must be given as numbers, got {layer.padding!r}")


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
        _check_plain_conv(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pad, then binarize: padded pixels are sign(0) = +1, as in the packed kernel.
        ph, pw = self.padding
        signs = sign_ste(F.pad(x, (pw, pw, ph, ph)))
        out = F.conv2d(signs, binary_weight(self.weight), None, self.stride)
        out = out * input_scale_map(x, self.kernel_size, self.stride, self.padding)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def to_packed(self) -> PackedXNORConv2d:
        return PackedXNORConv2d.from_layer(self)


# ----------------------------------------------------------------------------- packed inference


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
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self._init_buffers(packed.to_tensor(), weight, bias)

    @classmethod
    def from_layer(cls, layer: nn.Conv2d) -> PackedBinaryConv2d:
        _check_plain_conv(layer)
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


# ----------------------------------------------------------------------------- whole models


_BINARY_OF = {nn.Linear: (BinaryLinear, XNORLinear), nn.Conv2d: (BinaryConv2d, XNORConv2d)}


def binarize_model(model: nn.Module, *, binary_inputs: bool = False,
                   float_inputs: Collection[str] = (), skip: Collection[str] = ()) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Linear`` / ``nn.Conv2d`` (exactly those
    types) replaced by its binary version, weights and biases copied.

    ``binary_inputs=False``: :class:`BinaryLinear` / :class:`BinaryConv2d` (BWN);
    ``True``: :class:`XNORLinear` / :class:`XNORConv2d`, except the layers named in
    ``float_inputs`` (e.g. the first layer, whose input is the image), which get the
    binary-weight version. Layers named in ``skip`` stay float. ``model`` is not modified.
    """
    check_layer_names(model, float_inputs=float_inputs, skip=skip)
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        kinds = _BINARY_OF.get(type(module))
        if kinds is None or name in skip:
            continue
        kind = kinds[1] if binary_inputs and name not in float_inputs else kinds[0]
        replace_module(out, name, like(kind, module))
    return out


def pack_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every Binary/XNOR layer replaced by its
    packed inference form (``layer.to_packed()``); other modules are copied as they are."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model).eval()
    for name, module in list(out.named_modules()):
        if isinstance(module, (BinaryLinear, XNORLinear, BinaryConv2d, XNORConv2d)):
            replace_module(out, name, module.to_packed())
    return out
