"""Integer ReLU and max pooling on int8 activations, and max pooling fused with requantization.

Activations stay int8 and channels-last ``[B, H, W, C]`` between the layers of an
integer-only network:

* ReLU of codes with zero point ``z`` is ``max(q, z)`` (``z`` is the code of 0.0);
* max pooling commutes with any non-decreasing map, so it works on the codes directly;
* requantization (:mod:`course.kernels.requantize`) is non-decreasing in the accumulator
  for every channel (its multiplier is positive), so ``pool(requantize(acc)) ==
  requantize(pool(acc))`` exactly: :func:`requantize_max_pool2d` pools the int32
  accumulators first and requantizes a quarter of them (2x2 windows) in one pass.

Pooling windows: ``kernel_size`` and ``stride`` (default: the kernel size), no padding,
floor mode, as ``torch.nn.MaxPool2d(kernel_size, stride)``.

>>> q = torch.tensor([[[[-5], [3]], [[0], [-128]]]], dtype=torch.int8)  # [1, 2, 2, 1]
>>> relu_int8(q, zero_point=-2).flatten().tolist()
[-2, 3, 0, -2]
>>> max_pool2d_int8(q, 2).flatten().tolist()
[3]
"""

from __future__ import annotations

import numbers

import numba
import numpy as np
import torch
import torch.nn.functional as F

from course.kernels.requantize import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    INT32_MIN,
    RequantParams,
    check_accumulators,
    prepare_requantize,
    requantize_reference,
)
from course.quant.checks import check_int8, pair


def relu_int8(q: torch.Tensor, zero_point: int) -> torch.Tensor:
    """ReLU on int8 codes: ``max(q, zero_point)``, any shape, int8 out.

    >>> relu_int8(torch.tensor([-128, 0, 5], dtype=torch.int8), 3).tolist()
    [3, 3, 5]
    """
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"q must be a torch.Tensor, got {type(q).__name__}")
    if q.dtype != torch.int8:
        raise TypeError(f"q must be an int8 tensor, got {q.dtype}")
    if isinstance(zero_point, bool) or not isinstance(zero_point, numbers.Integral):
        raise TypeError(f"zero_point must be an int, got {type(zero_point).__name__}")
    if not INT8_MIN <= zero_point <= INT8_MAX:
        raise ValueError(f"zero_point must lie in [-128, 127], got {zero_point}")
    return torch.clamp_min(q, int(zero_point))


def _pool_shape(x: torch.Tensor, kernel_size, stride) -> tuple[int, int, int, int]:
    kh, kw = pair(kernel_size, "kernel_size", 1)
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride", 1)
    if x.shape[1] < kh or x.shape[2] < kw:
        raise ValueError(f"pooling window {(kh, kw)} is larger than the image "
                         f"{tuple(x.shape[1:3])}")
    return kh, kw, sh, sw


# Unsigned index arithmetic: numba drops its negative-index checks and the loops vectorize.
_U = numba.uint64


@numba.njit(cache=True, nogil=True)
def _pool_row(x, b, i, kh, kw, sh, sw, best):  # pragma: no cover - compiled
    """Max over the windows of output row ``(b, i)`` into ``best`` ([out_w * C], preset)."""
    _, height, width, channels = x.shape
    c = _U(channels)
    out_w = _U(best.size) // c
    flat = x.reshape(-1)
    for di in range(kh):
        row = (_U(b) * _U(height) + _U(i) * _U(sh) + _U(di)) * _U(width) * c
        for dj in range(kw):
            for j in range(out_w):
                src = row + (j * _U(sw) + _U(dj)) * c
                dst = j * c
                for n in range(c):
                    best[dst + n] = max(best[dst + n], flat[src + n])


@numba.njit(cache=True, nogil=True)
def _max_pool(x, kh, kw, sh, sw, out):  # pragma: no cover - compiled
    batch, out_h, out_w, channels = out.shape
    best = np.empty(out_w * channels, np.int8)
    flat_out = out.reshape(-1)
    for b in range(batch):
        for i in range(out_h):
            best[:] = INT8_MIN
            _pool_row(x, b, i, kh, kw, sh, sw, best)
            base = _U(b * out_h + i) * _U(best.size)
            for t in range(_U(best.size)):
                flat_out[base + t] = best[t]


def max_pool2d_int8(x: torch.Tensor, kernel_size: int | tuple[int, int],
                    stride: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Max pooling of channels-last int8 codes ``[B, H, W, C]`` -> int8 ``[B, H', W', C]``.

    ``H' = (H - kh) // stride + 1``; no padding.

    >>> max_pool2d_int8(torch.arange(16, dtype=torch.int8).reshape(1, 4, 4, 1), 2)[0, :, :, 0]
    tensor([[ 5,  7],
            [13, 15]], dtype=torch.int8)
    """
    x = check_int8(x, "x", 4, "[B, H, W, C] (channels last)")
    kh, kw, sh, sw = _pool_shape(x, kernel_size, stride)
    shape = (x.shape[0], (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1, x.shape[3])
    out = torch.empty(shape, dtype=torch.int8)
    _max_pool(x.contiguous().numpy(), kh, kw, sh, sw, out.numpy())
    return out


def max_pool2d_int8_reference(x: torch.Tensor, kernel_size: int | tuple[int, int],
                              stride: int | tuple[int, int] | None = None) -> torch.Tensor:
    """:func:`max_pool2d_int8` by PyTorch's float64 ``max_pool2d`` (exact on int8 values)."""
    x = check_int8(x, "x", 4, "[B, H, W, C] (channels last)")
    kh, kw, sh, sw = _pool_shape(x, kernel_size, stride)
    pooled = F.max_pool2d(x.to(torch.float64).permute(0, 3, 1, 2), (kh, kw), (sh, sw))
    return pooled.permute(0, 2, 3, 1).to(torch.int8).contiguous()


@numba.njit(cache=True, nogil=True)
def _requantize_max_pool(acc, kh, kw, sh, sw, m, s, bias, zp, qmin, qmax,
                         out):  # pragma: no cover - compiled
    """Per output row: max of the int32 windows (vectorized), then requantize that row."""
    batch, out_h, out_w, channels = out.shape
    c = _U(channels)
    rounding = np.empty(channels, np.int64)
    for n in range(channels):
        rounding[n] = np.int64(1) << (s[n] - 1)
    lo, hi = np.int64(qmin - zp), np.int64(qmax - zp)
    best = np.empty(out_w * channels, np.int32)
    flat_out = out.reshape(-1)
    for b in range(batch):
        for i in range(out_h):
            best[:] = INT32_MIN
            _pool_row(acc, b, i, kh, kw, sh, sw, best)
            base = _U(b * out_h + i) * _U(best.size)
            for j in range(_U(out_w)):
                for n in range(c):
                    t = j * c + n
                    v = min(max(np.int64(best[t]) + bias[n], INT32_MIN), INT32_MAX)
                    q = (v * m[n] + rounding[n]) >> s[n]
                    flat_out[base + t] = np.int8(min(max(q, lo), hi) + zp)


def _check_acc(acc: object) -> torch.Tensor:
    if not isinstance(acc, torch.Tensor):
        raise TypeError(f"acc must be a torch.Tensor, got {type(acc).__name__}")
    if acc.dtype != torch.int32:
        raise TypeError(f"acc must be an int32 tensor (the accumulators), got {acc.dtype}")
    if acc.dim() != 4:
        raise ValueError(f"acc must be 4-D [B, H, W, C] (channels last), got shape "
                         f"{tuple(acc.shape)}")
    return acc


def requantize_max_pool2d(acc: torch.Tensor, multiplier: int | torch.Tensor,
                          shift: int | torch.Tensor, zero_point: int, *,
                          kernel_size: int | tuple[int, int] = 2,
                          stride: int | tuple[int, int] | None = None,
                          bias: torch.Tensor | None = None, qmin: int = INT8_MIN,
                          qmax: int = INT8_MAX) -> torch.Tensor:
    """``max_pool2d_int8(requantize(acc, ...), kernel_size, stride)`` in one pass.

    Args:
        acc: int32 accumulators ``[B, H, W, C]`` (a conv's output, channels last).
        multiplier, shift, zero_point, bias, qmin, qmax: as
            :func:`course.kernels.requantize.requantize` (per channel = last axis;
            ``qmin = zero_point`` fuses a ReLU as well).
        kernel_size, stride: the pooling window (stride defaults to the kernel size).

    Returns:
        int8 ``[B, H', W', C]``, equal to :func:`requantize_max_pool2d_reference`.
    """
    acc = _check_acc(acc)
    params = prepare_requantize(acc.shape[-1], multiplier, shift, zero_point, bias=bias,
                                qmin=qmin, qmax=qmax)
    return requantize_max_pool2d_prepared(acc, params, kernel_size, stride)


def requantize_max_pool2d_prepared(acc: torch.Tensor, params: RequantParams,
                                   kernel_size: int | tuple[int, int] = 2,
                                   stride: int | tuple[int, int] | None = None) -> torch.Tensor:
    """:func:`requantize_max_pool2d` with parameters from
    :func:`course.kernels.requantize.prepare_requantize`."""
    if not isinstance(params, RequantParams):
        raise TypeError(f"params must be RequantParams (from prepare_requantize), got "
                        f"{type(params).__name__}")
    acc = check_accumulators(_check_acc(acc), params.channels)
    kh, kw, sh, sw = _pool_shape(acc, kernel_size, stride)
    shape = (acc.shape[0], (acc.shape[1] - kh) // sh + 1, (acc.shape[2] - kw) // sw + 1,
             acc.shape[3])
    out = torch.empty(shape, dtype=torch.int8)
    _requantize_max_pool(acc.contiguous().numpy(), kh, kw, sh, sw, params.multiplier.numpy(),
                         params.shift.numpy(), params.bias.numpy(), params.zero_point,
                         params.qmin, params.qmax, out.numpy())
    return out


def requantize_max_pool2d_reference(acc: torch.Tensor, multiplier: int | torch.Tensor,
                                    shift: int | torch.Tensor, zero_point: int, *,
                                    kernel_size: int | tuple[int, int] = 2,
                                    stride: int | tuple[int, int] | None = None,
                                    bias: torch.Tensor | None = None, qmin: int = INT8_MIN,
                                    qmax: int = INT8_MAX) -> torch.Tensor:
    """The unfused definition: requantize every accumulator, then max-pool the codes."""
    acc = _check_acc(acc)
    codes = requantize_reference(acc, multiplier, shift, zero_point, bias=bias, qmin=qmin,
                                 qmax=qmax)
    return max_pool2d_int8_reference(codes, kernel_size, stride)
