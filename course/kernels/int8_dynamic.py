"""Dynamic-range int8: quantize float activations on the fly, dequantize int32 results to float.

A dynamic-range int8 Linear (per-channel int8 weights ``w_q [N, K]`` with scales ``s_w[N]``)
runs, for each batch:

1. :func:`quantize_activations_int8` — per-tensor asymmetric qparams from the batch's own
   min/max (``course.quant.affine_qparams`` on 8 bits, zero point moved by -128 to the
   signed int8 range), then ``clamp(round(x / s_x) + z_x, -128, 127)`` with float32
   division and round half to even: the same codes as ``course.quant.quantize``.
2. ``acc = int8_gemm(x_q, w_q.t())`` (exact int32).
3. :func:`dequantize_accumulators` — ``y[m, n] = float32(acc[m, n] - z_x * w_sum[n]) *
   (s_x * s_w[n]) + bias[n]`` in float32, where ``w_sum[n] = sum_k w_q[n, k]``: the
   zero-point correction of ``sum_k (x_q - z_x) * w_q``.

Both steps are one pass each (numba), so the only full-size float traffic is reading
``x`` twice (min/max, quantize) and writing ``y`` once.

>>> q, scale, zp = quantize_activations_int8(torch.tensor([[0.0, 0.25, 1.0]]))
>>> q.tolist(), round(scale * 255, 6), zp
([[-128, -64, 127]], 1.0, -128)
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from course.kernels.numba_types import U64 as _U
from course.quant import affine_qparams

INT8_MIN, INT8_MAX = -128, 127
UNSIGNED_TO_SIGNED = 128
"""Codes of the unsigned 8-bit range [0, 255] minus 128 are the int8 range [-128, 127]."""

ACTIVATION_BITS = 8


def activation_qparams(x_min: float, x_max: float) -> tuple[float, int]:
    """Scale and int8 zero point for values in ``[x_min, x_max]`` (widened to include 0).

    ``course.quant.affine_qparams(x_min, x_max, 8)`` with its zero point minus 128.

    >>> activation_qparams(-1.0, 3.0)
    (0.01568627450980392, -64)
    """
    scale, zero_point = affine_qparams(x_min, x_max, ACTIVATION_BITS)
    return scale, zero_point - UNSIGNED_TO_SIGNED


# Unsigned loop indices let numba drop its negative-index checks, so the loops vectorize.


@numba.njit(cache=True, nogil=True)
def _quantize(x, scale, zp, out):  # pragma: no cover - compiled
    s, z = np.float32(scale), np.float32(zp)
    lo, hi = np.float32(INT8_MIN), np.float32(INT8_MAX)
    for i in range(_U(x.size)):
        q = np.rint(x[i] / s) + z
        out[i] = np.int8(min(max(q, lo), hi))


def quantize_to_int8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """``clamp(round(x / scale) + zero_point, -128, 127)`` as int8, in one pass.

    ``x`` float32 (any shape; other float dtypes are converted), ``scale`` > 0,
    ``zero_point`` in [-128, 127]. Division in float32, round half to even.

    >>> quantize_to_int8(torch.tensor([0.25, 0.75, -9.0]), 0.5, 1).tolist()
    [1, 3, -17]
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if not scale > 0 or not np.isfinite(scale):
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    if not INT8_MIN <= zero_point <= INT8_MAX:
        raise ValueError(f"zero_point must lie in [-128, 127], got {zero_point}")
    flat = x.detach().to(torch.float32).contiguous()
    out = torch.empty(flat.shape, dtype=torch.int8)
    _quantize(flat.numpy().reshape(-1), float(scale), int(zero_point), out.numpy().reshape(-1))
    return out


def quantize_activations_int8(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """Per-tensor dynamic int8 quantization: ``(codes int8 like x, scale, zero_point)``.

    qparams from :func:`activation_qparams` of ``x``'s min and max; raises ``ValueError``
    on NaN or infinite values (they have no int8 code).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.numel() == 0:
        raise ValueError("x is empty: no range to quantize")
    lo, hi = torch.aminmax(x.detach())
    lo, hi = lo.item(), hi.item()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("x contains NaN or infinite values")
    scale, zero_point = activation_qparams(lo, hi)
    return quantize_to_int8(x, scale, zero_point), scale, zero_point


@numba.njit(cache=True, nogil=True)
def _dequantize(acc, correction, scale, bias, out):  # pragma: no cover - compiled
    rows, channels = acc.shape
    flat_acc, flat_out = acc.reshape(-1), out.reshape(-1)
    c = _U(channels)
    for r in range(_U(rows)):
        base = r * c
        for n in range(c):
            v = np.float32(np.int64(flat_acc[base + n]) - correction[n])
            flat_out[base + n] = v * scale[n] + bias[n]


@numba.njit(cache=True, nogil=True)
def dequantize_block(acc, r0, r1, c0, c1, correction, scale, bias,
                     out):  # pragma: no cover - compiled
    """``out[r, n] = float32(acc[r, n] - correction[n]) * scale[n] + bias[n]`` for
    ``r0 <= r < r1``, ``c0 <= n < c1`` (the arithmetic of :func:`dequantize_accumulators`),
    for kernels that finish a block of their own accumulators while it is in cache.

    ``correction`` is float64 (the integers ``z_x * w_sum[n]``, exact below 2**53): the
    difference of two exact doubles is the exact integer, rounded once to float32 — the same
    bits as the int64 difference converted, and it vectorizes on AVX2 (no int64 -> float
    conversion there)."""
    for r in range(_U(r0), _U(r1)):
        for n in range(_U(c0), _U(c1)):  # unsigned: no wraparound checks
            v = np.float32(np.float64(acc[r, n]) - correction[n])
            out[r, n] = v * scale[n] + bias[n]


def _check_vector(t: object, name: str, channels: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.shape != (channels,):
        raise ValueError(f"{name} must have shape [{channels}] (one per output channel), got "
                         f"{tuple(t.shape)}")
    return t


def dequantize_accumulators(acc: torch.Tensor, x_scale: float, x_zero_point: int,
                            w_scale: torch.Tensor, w_sum: torch.Tensor,
                            bias: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 outputs of an int8 layer from its int32 accumulators (see the module doc).

    Args:
        acc: int32 ``[M, N]``.
        x_scale, x_zero_point: the input's qparams.
        w_scale: float ``[N]`` per-channel weight scales; w_sum: integer ``[N]``, row sums
            of the int8 weight; bias: optional float ``[N]``.

    Returns:
        float32 ``[M, N]``.

    >>> dequantize_accumulators(torch.tensor([[10, 20]], dtype=torch.int32), 0.5, 2,
    ...                         torch.tensor([1.0, 0.1]), torch.tensor([3, -5]))
    tensor([[2.0000, 1.5000]])
    """
    if not isinstance(acc, torch.Tensor) or acc.dtype != torch.int32 or acc.dim() != 2:
        raise TypeError(f"acc must be a 2-D int32 tensor, got "
                        f"{getattr(acc, 'dtype', type(acc).__name__)} "
                        f"{tuple(getattr(acc, 'shape', ()))}")
    channels = acc.shape[1]
    w_scale = _check_vector(w_scale, "w_scale", channels)
    w_sum = _check_vector(w_sum, "w_sum", channels)
    if w_sum.is_floating_point():
        raise TypeError(f"w_sum must be an integer tensor, got {w_sum.dtype}")
    b = torch.zeros(channels) if bias is None else _check_vector(bias, "bias", channels)
    scale = (w_scale.to(torch.float32) * np.float32(x_scale)).contiguous()
    out = torch.empty(acc.shape, dtype=torch.float32)
    correction = w_sum.to(torch.int64) * int(x_zero_point)
    _dequantize(acc.contiguous().numpy(), correction.numpy(), scale.numpy(),
                b.detach().to(torch.float32).contiguous().numpy(), out.numpy())
    return out
