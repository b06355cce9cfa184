"""Every straight-through estimator (STE) of the course, one autograd function each.

* :class:`FakeQuantizeSTE` / :func:`fake_quantize_ste` — uniform affine fake quantization
  (below);
* :class:`SignSTE` / :func:`sign_ste` — the sign, gradient cancelled where ``|x| > clip``
  (XNOR-Net, BWN);
* :class:`RoundSTE` — ``round(x)``, identity gradient (QAT's bias on its int32 grid);
* :class:`QuantizeKSTE` — DoReFa's ``round(x * n) / n``, identity gradient;
* :class:`SignTimesMeanAbsSTE` — DoReFa's 1-bit weight ``sign(w) * mean|w|``, identity
  gradient.

The STE of uniform affine fake quantization:

Fake quantization ``x_hat = (clamp(round(x / s) + z, qmin, qmax) - z) * s`` is a staircase:
its true derivative is 0 almost everywhere, so no gradient would reach the weights. The
STE (Bengio et al., 2013) keeps the staircase in the forward pass and, in the backward
pass, pretends the rounding was the identity. What is left is the derivative of the
clipping, ``clamp(x, lo, hi)`` with the clipping range

    lo = (qmin - z) * s,    hi = (qmax - z) * s:

    d x_hat / d x := 1  where  lo <= x <= hi,   0 elsewhere (the clipped values).

Both ends are inclusive (``torch.clamp``'s own gradient is 1 at its bounds in torch 2.13 but 0
in 2.14: this STE does not depend on it). No gradient flows to the scale or the zero point
(they come from an observer, not from learning).

``scale`` and ``zero_point`` are per tensor (numbers) or per channel (tensors that
broadcast to ``x``, e.g. shape ``[C, 1, 1, 1]`` for a conv weight ``[C, C_in, kh, kw]``).
Rounding is half to even (``torch.round``), the course's convention.

>>> x = torch.tensor([-1.0, 0.26, 0.9, 3.0], requires_grad=True)
>>> y = fake_quantize_ste(x, 0.5, 0, -2, 1)   # clipping range [-1.0, 0.5]
>>> y
tensor([-1.0000,  0.5000,  0.5000,  0.5000], grad_fn=<FakeQuantizeSTEBackward>)
>>> y.sum().backward(); x.grad
tensor([1., 1., 0., 0.])
>>> sign_ste(torch.tensor([-3.0, 0.0, 0.4]))
tensor([-1.,  1.,  1.])
"""

from __future__ import annotations

import numbers

import torch

from course.quant.binary import sign
from course.quant.checks import as_param, check_float_tensor, check_qrange

ScaleLike = float | torch.Tensor
ZeroPointLike = int | torch.Tensor


def clipping_range(scale: ScaleLike, zero_point: ZeroPointLike, qmin: int,
                   qmax: int) -> tuple[ScaleLike, ScaleLike]:
    """The real interval ``[(qmin - z) * s, (qmax - z) * s]`` that fake quantization keeps.

    Numbers in, floats out; a tensor scale or zero point gives tensors of their broadcast
    shape.

    >>> clipping_range(0.5, 1, 0, 3)
    (-0.5, 1.0)
    """
    return (qmin - zero_point) * scale, (qmax - zero_point) * scale


class FakeQuantizeSTE(torch.autograd.Function):
    """Autograd Function: affine fake quantization forward, clipped identity backward.

    ``FakeQuantizeSTE.apply(x, scale, zero_point, qmin, qmax)`` with arguments already
    checked (see :func:`fake_quantize_ste`); ``scale`` a positive float or float32 tensor,
    ``zero_point`` an int or int64 tensor, both broadcastable to ``x``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: ScaleLike, zero_point: ZeroPointLike,
                qmin: int, qmax: int) -> torch.Tensor:
        codes = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
        lo, hi = clipping_range(scale, zero_point, qmin, qmax)
        ctx.save_for_backward((x >= lo) & (x <= hi))
        return ((codes - zero_point) * scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None, None, None


def fake_quantize_ste(x: torch.Tensor, scale: ScaleLike, zero_point: ZeroPointLike,
                      qmin: int, qmax: int) -> torch.Tensor:
    """Fake-quantize ``x`` (quantize then dequantize) with a straight-through gradient.

    Args:
        x: floating tensor, any shape; the result has its shape and dtype.
        scale: positive float, or a positive float tensor broadcastable to ``x``.
        zero_point: int in ``[qmin, qmax]``, or an integer tensor broadcastable to ``x``.
        qmin, qmax: the integer code range, ``qmin < qmax`` (e.g. ``(0, 255)`` for 8-bit
            asymmetric, ``(-7, 7)`` for 4-bit symmetric restricted).

    Forward: ``(clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``,
    the values of ``course.quant.dequantize(course.quant.quantize(...))``. Backward: the
    incoming gradient where ``x`` lies in :func:`clipping_range` (ends included), 0 outside;
    nothing for ``scale`` and ``zero_point``.

    >>> fake_quantize_ste(torch.tensor([0.15, 0.7]), torch.tensor([0.2, 0.5]), 0, -3, 3)
    tensor([0.2000, 0.5000])
    """
    x = check_float_tensor(x, "x")
    lo, hi = check_qrange(qmin, qmax)
    s = as_param(scale, "scale", x, integer=False)
    positive = (s > 0).all() if isinstance(s, torch.Tensor) else s > 0
    if not positive:
        raise ValueError(f"scale must be > 0, got {scale}")
    zp = as_param(zero_point, "zero_point", x, integer=True)
    zp_ok = ((zp >= lo) & (zp <= hi)).all() if isinstance(zp, torch.Tensor) else lo <= zp <= hi
    if not zp_ok:
        raise ValueError(f"zero_point must lie in [qmin, qmax] = [{lo}, {hi}], got {zero_point}")
    return FakeQuantizeSTE.apply(x, s, zp, lo, hi)


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


class QuantizeKSTE(torch.autograd.Function):
    """``round(x * levels) / levels`` (half to even) forward, identity gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: int) -> torch.Tensor:
        return torch.round(x * levels) / levels

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class SignTimesMeanAbsSTE(torch.autograd.Function):
    """``sign(w) * mean|w|`` (sign(0) = +1) forward, identity gradient backward."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        return sign(w) * w.abs().mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class RoundSTE(torch.autograd.Function):
    """``round(x)`` (half to even) forward, identity gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad
