"""The straight-through estimator (STE) of uniform affine fake quantization.

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
"""

from __future__ import annotations

import torch

from course.quant._checks import as_param, check_float_tensor, check_qrange

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
