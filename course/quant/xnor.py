"""XNOR-Net's tensor math (Rastegari et al., 2016): binary weights and input scales.

A layer's weight ``W`` is approximated by ``alpha * sign(W)`` with ``alpha = mean|W|`` per
output channel (BWN); in XNOR-Net the input ``x`` also by ``beta * sign(x)``: ``beta =
mean|x|`` over the features of each sample for a linear layer, and for a convolution the map
``K = A * k`` — ``A`` the mean of ``|x|`` over channels, ``k`` the ``kh x kw`` box filter
``1 / (kh * kw)``, with the convolution's stride and padding — one ``beta`` per output
pixel. Then

    W x ≈ alpha * beta * (sign(W) · sign(x)),

and ``sign(W) · sign(x)`` is the XNOR + popcount dot product of :mod:`course.kernels`.

Training uses the sign's straight-through estimator (:func:`course.quant.ste.sign_ste`):
forward ``sign(x)`` with ``sign(0) = +1``; backward the incoming gradient where ``|x| <= 1``
and 0 where ``|x| > 1``. ``alpha`` is treated as a constant in the backward pass
(:func:`course.quant.binary.binary_scale` detaches it); ``beta`` and ``K`` are functions of
the input and are differentiated normally. The layers are in :mod:`course.nn.binary` and
:mod:`course.nn.packed`, the whole-model transforms in :mod:`course.methods.xnor`.

>>> w = torch.tensor([[0.5, -1.5], [2.0, 0.0]])
>>> binary_weight(w)                                  # alpha = 1.0 and 1.0 per row
tensor([[ 1., -1.],
        [ 1.,  1.]])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course.quant.binary import binary_scale
from course.quant.checks import check_float_tensor, pair
from course.quant.ste import sign_ste


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
    kernel = pair(kernel_size, "kernel_size")
    ph, pw = pair(padding, "padding")
    mean_abs = F.pad(x.abs().mean(dim=1, keepdim=True), (pw, pw, ph, ph))
    return F.avg_pool2d(mean_abs, kernel, pair(stride, "stride"))
