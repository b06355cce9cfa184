"""Uniform affine quantization: choose qparams, quantize, dequantize, fake-quantize.

Conventions used everywhere in the course:

* ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` with ``round`` = round half to
  even (``torch.round``), and ``x_hat = (q - zero_point) * scale``.
* Asymmetric (affine) quantization uses the unsigned range ``[0, 2**b - 1]`` and a zero point;
  symmetric quantization uses the *restricted* signed range ``[-(2**(b-1) - 1), 2**(b-1) - 1]``
  with zero point 0, so that ``+x`` and ``-x`` map to ``+q`` and ``-q``.
* A scale is never smaller than float32's machine epsilon (``EPS``), so a constant or
  all-zero tensor still gets a valid, positive scale.
"""

from __future__ import annotations

import torch

from course.quant.checks import (
    as_param,
    check_bits,
    check_float_tensor,
    check_int_tensor,
    check_qrange,
    check_real,
)
from course.quant.granularity import PerChannel

EPS = float(torch.finfo(torch.float32).eps)
"""Smallest scale ever returned: float32 machine epsilon, 2**-23."""

_CODE_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32)


def qrange(num_bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of a ``num_bits`` code.

    >>> qrange(8, signed=True), qrange(8, signed=False)
    ((-128, 127), (0, 255))
    """
    bits = check_bits(num_bits)
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be a bool, got {type(signed).__name__}")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def affine_qparams(x_min: float, x_max: float, num_bits: int) -> tuple[float, int]:
    """Scale and zero point mapping ``[x_min, x_max]`` onto the unsigned ``num_bits`` range.

    The range is first widened to include 0 (so 0.0 is exactly representable), then
    ``scale = max((x_max - x_min) / (qmax - qmin), EPS)`` and
    ``zero_point = clamp(qmin - round(x_min / scale), qmin, qmax)`` (round half to even).
    Arithmetic is float64 (Python floats).

    >>> affine_qparams(-1.0, 3.0, 8)
    (0.01568627450980392, 64)
    """
    lo = check_real(x_min, "x_min")
    hi = check_real(x_max, "x_max")
    if lo > hi:
        raise ValueError(f"x_min must not exceed x_max, got x_min={lo} > x_max={hi}")
    qmin, qmax = qrange(num_bits, signed=False)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / (qmax - qmin), EPS)
    zero_point = qmin - round(lo / scale)
    return scale, int(min(max(zero_point, qmin), qmax))


def symmetric_scale(x_absmax: float, num_bits: int) -> float:
    """Scale of symmetric quantization onto the restricted signed range, zero point 0.

    ``scale = max(x_absmax / (2**(b-1) - 1), EPS)``; ``num_bits`` must be at least 2 (a
    1-bit restricted range would be {0} only: use :func:`course.quant.binary.binarize`).

    >>> symmetric_scale(1.27, 8)
    0.01
    """
    bits = check_bits(num_bits, minimum=2)
    absmax = check_real(x_absmax, "x_absmax")
    if absmax < 0:
        raise ValueError(f"x_absmax must be >= 0, got {absmax}")
    return max(absmax / (2 ** (bits - 1) - 1), EPS)


def code_dtype(qmin: int, qmax: int) -> torch.dtype:
    """Smallest integer dtype among int8, uint8, int16, int32 that holds ``[qmin, qmax]``."""
    for dtype in _CODE_DTYPES:
        info = torch.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return dtype
    raise ValueError(f"no integer code dtype holds [{qmin}, {qmax}]")


def _check_scale(scale, like: torch.Tensor):
    s = as_param(scale, "scale", like, integer=False)
    positive = (s > 0).all() if isinstance(s, torch.Tensor) else s > 0
    if not positive:
        raise ValueError(f"scale must be > 0, got {scale}")
    return s


def quantize(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    qmin: int,
    qmax: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale) + zero_point, qmin, qmax)``.

    Args:
        x: floating tensor, any shape.
        scale: positive float, or a float tensor broadcastable to ``x`` (per channel).
        zero_point: int in ``[qmin, qmax]``, or an integer tensor broadcastable to ``x``.
        qmin, qmax: the integer range, ``qmin < qmax``.
        dtype: integer dtype of the result; default the smallest of int8 / uint8 / int16 /
            int32 that holds ``[qmin, qmax]``.

    Returns:
        Integer tensor with ``x``'s shape. ``round`` is round half to even.

    >>> quantize(torch.tensor([-1.0, 0.25, 0.5, 9.0]), 0.5, 0, -4, 3)
    tensor([-2,  0,  1,  3], dtype=torch.int8)
    """
    x = check_float_tensor(x, "x")
    lo, hi = check_qrange(qmin, qmax)
    s = _check_scale(scale, x)
    zp = as_param(zero_point, "zero_point", x, integer=True)
    zp_ok = ((zp >= lo) & (zp <= hi)).all() if isinstance(zp, torch.Tensor) else lo <= zp <= hi
    if not zp_ok:
        raise ValueError(f"zero_point must lie in [qmin, qmax] = [{lo}, {hi}], got {zero_point}")
    out_dtype = code_dtype(lo, hi) if dtype is None else dtype
    if out_dtype.is_floating_point or out_dtype == torch.bool:
        raise TypeError(f"dtype must be an integer dtype, got {out_dtype}")
    info = torch.iinfo(out_dtype)
    if lo < info.min or hi > info.max:
        raise ValueError(f"dtype {out_dtype} cannot hold [qmin, qmax] = [{lo}, {hi}]")
    xf = x if x.dtype == torch.float64 else x.to(torch.float32)
    q = torch.round(xf / s) + zp
    return torch.clamp(q, lo, hi).to(out_dtype)


def dequantize(q: torch.Tensor, scale: float | torch.Tensor,
               zero_point: int | torch.Tensor) -> torch.Tensor:
    """Float32 values ``(q - zero_point) * scale`` of integer codes ``q`` (any shape).

    >>> dequantize(torch.tensor([0, 64, 255], dtype=torch.uint8), 0.5, 64)
    tensor([-32.0000,   0.0000,  95.5000])
    """
    q = check_int_tensor(q, "q")
    s = _check_scale(scale, q)
    zp = as_param(zero_point, "zero_point", q, integer=True)
    return (q.to(torch.int64) - zp).to(torch.float32) * s


def _check_finite(x: torch.Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def fake_quantize(x: torch.Tensor, num_bits: int, symmetric: bool = False) -> torch.Tensor:
    """Quantize then dequantize ``x`` with per-tensor qparams taken from ``x``'s own range.

    Symmetric: ``scale = symmetric_scale(max|x|, b)``, zero point 0, restricted signed range
    (``num_bits >= 2``). Asymmetric: ``affine_qparams(min x, max x, b)`` on the unsigned range.

    Returns a float32 tensor of ``x``'s shape holding at most ``2**b`` distinct values.
    """
    x = check_float_tensor(x, "x")
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    bits = check_bits(num_bits, minimum=2 if symmetric else 1)
    if x.numel() == 0:
        return x.to(torch.float32).clone()
    _check_finite(x, "x")
    if symmetric:
        scale = symmetric_scale(x.abs().max().item(), bits)
        qmax = 2 ** (bits - 1) - 1
        return dequantize(quantize(x, scale, 0, -qmax, qmax), scale, 0)
    scale, zero_point = affine_qparams(x.min().item(), x.max().item(), bits)
    qmin, qmax = qrange(bits, signed=False)
    return dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point)


def per_channel_scale(w: torch.Tensor, num_bits: int, axis: int | PerChannel = 0) -> torch.Tensor:
    """Symmetric scales, one per slice of ``w`` along ``axis``, shaped to broadcast to ``w``.

    ``scale[c] = max(max|w[c]| / (2**(b-1) - 1), EPS)``, float32, with size 1 on every
    axis but ``axis`` (an int or a :class:`~course.quant.granularity.PerChannel`).
    """
    w = check_float_tensor(w, "w")
    bits = check_bits(num_bits, minimum=2)
    per_channel = axis if isinstance(axis, PerChannel) else PerChannel(axis)
    per_channel.resolve(w, "w")
    _check_finite(w, "w")
    reduce = list(per_channel.reduce_dims(w))
    absmax = w.detach().abs().to(torch.float32)
    if reduce:
        absmax = absmax.amax(dim=reduce, keepdim=True)
    return torch.clamp(absmax / (2 ** (bits - 1) - 1), min=EPS)


def fake_quantize_per_channel(w: torch.Tensor, num_bits: int,
                              axis: int | PerChannel = 0) -> torch.Tensor:
    """Symmetric fake quantization with one scale per slice of ``w`` along ``axis``.

    Used for weights: ``axis=0`` is the output channel of Linear ``[out, in]`` and Conv2d
    ``[out, in, kh, kw]`` weights. Returns float32 with ``w``'s shape.
    """
    scale = per_channel_scale(w, num_bits, axis)
    if w.numel() == 0:
        return w.to(torch.float32).clone()
    qmax = 2 ** (num_bits - 1) - 1
    return dequantize(quantize(w, scale, 0, -qmax, qmax), scale, 0)
