"""Integer ReLU and max pooling on int8 activations.

Activations stay int8 and channels-last ``[B, H, W, C]`` between the layers of an
integer-only network:

* ReLU of codes with zero point ``z`` is ``max(q, z)`` (``z`` is the code of 0.0);
* max pooling commutes with any non-decreasing map, so it works on the codes directly;
* requantization (:mod:`course.kernels.requantize`) is non-decreasing in the accumulator
  for every channel (its multiplier is positive), so ``pool(requantize(acc)) ==
  requantize(pool(acc))`` exactly: the fused convolution
  (:mod:`course.kernels.conv.fused`) pools its int32 accumulators first and
  requantizes a quarter of them (2x2 windows).

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

from course.kernels.numba_types import U64 as _U
from course.kernels.requantize import (
    INT8_MAX,
    INT8_MIN,
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
