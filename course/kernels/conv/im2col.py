"""int8 2-D convolution, channels-last, with int32 accumulation: im2col + int8 GEMM.

Layouts (channels last, so that a conv's output feeds the next conv without a transpose):

* input ``x``: int8 ``[B, H, W, C_in]``;
* weight ``w``: int8 ``[C_out, kh, kw, C_in]`` (PyTorch's ``[C_out, C_in, kh, kw]`` weight
  permuted with ``w.permute(0, 2, 3, 1)``);
* output: int32 accumulators ``[B, H_out, W_out, C_out]`` with
  ``H_out = (H + 2 * padding - kh) // stride + 1`` (same for W).

    acc[b, i, j, o] = sum over (di, dj, c) of
                      x_pad[b, i * stride + di, j * stride + dj, c] * w[o, di, dj, c]

where ``x_pad`` is ``x`` padded with ``pad_value`` — the input *zero point*, the code of
real 0.0, so that padding adds exactly what a float conv's zero padding adds. Subtracting
the input zero point is not done here: fold ``-z_x * w[o].sum()`` into the int32 bias of
:func:`course.kernels.requantize.requantize` (that is exact, padding included).

The fast path lays the receptive fields out as rows (:func:`im2col_int8`, one pass in
numba) and multiplies them with :func:`course.kernels.int8_gemm.int8_gemm`; its
``[B * H_out * W_out, C_out]`` result *is* the channels-last output, no copy needed.
A layer of an integer-only network does not call this function on its whole batch: it
runs :class:`course.kernels.conv.fused.Conv2dRequantize`, which fuses the conv with
requantization and max pooling over chunks of images (and may take its accumulators from
a direct float32-exact kernel or from PyTorch's oneDNN int8 convolution, verified against
this one); :func:`conv2d_int8` stays the plain, exact int32 convolution.

>>> x = torch.ones(1, 3, 3, 1, dtype=torch.int8)
>>> w = torch.ones(1, 3, 3, 1, dtype=torch.int8)
>>> conv2d_int8(x, w, padding=1)[0, :, :, 0]
tensor([[4, 6, 4],
        [6, 9, 6],
        [4, 6, 4]], dtype=torch.int32)
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from course.kernels.int8_gemm import MAX_K, int8_gemm
from course.kernels.numba_types import U64 as _U
from course.quant.checks import check_int8, check_pad_value, pair

INT8_MIN, INT8_MAX = -128, 127


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a conv along one axis: ``(size + 2 * padding - kernel) // stride + 1``.

    >>> output_size(28, 3, 1, 1), output_size(28, 3, 2, 1)
    (28, 14)
    """
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"kernel {kernel} does not fit an input of size {size} with padding "
                         f"{padding}")
    return out


@numba.njit(cache=True, nogil=True)
def _pad(x, ph, pw, pad_value):  # pragma: no cover - compiled
    batch, height, width, channels = x.shape
    xp = np.full((batch, height + 2 * ph, width + 2 * pw, channels), pad_value, np.int8)
    xp[:, ph : ph + height, pw : pw + width, :] = x
    return xp


# Index arithmetic in unsigned integers: numba then skips its negative-index wraparound
# checks, and the byte-copy loops vectorize (about 10x faster).


@numba.njit(cache=True, nogil=True)
def _im2col(xp, kh, kw, sh, sw, out):  # pragma: no cover - compiled
    """Rows of the padded image: for each tap row ``di`` the ``kw * C`` bytes are contiguous."""
    batch, height, width, channels = xp.shape
    out_h = (height - kh) // sh + 1
    out_w = (width - kw) // sw + 1
    span = _U(kw * channels)
    k = _U(kh) * span
    src_flat = xp.reshape(-1)
    dst_flat = out.reshape(-1)
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                row = _U((b * out_h + i) * out_w + j)
                for di in range(kh):
                    src = _U(((b * height + i * sh + di) * width + j * sw) * channels)
                    dst = row * k + _U(di) * span
                    for t in range(span):
                        dst_flat[dst + t] = src_flat[src + t]


@numba.njit(cache=True, nogil=True)
def _im2col_transposed(xp, kh, kw, out_t):  # pragma: no cover - compiled
    """One input channel, stride 1: row ``t = (di, dj)`` of the transposed matrix holds,
    for each image and output row, ``out_w`` contiguous bytes of the padded image."""
    batch, height, width, _ = xp.shape
    out_h = height - kh + 1
    out_w = _U(width - kw + 1)
    src_flat = xp.reshape(-1)
    for di in range(kh):
        for dj in range(kw):
            dst_row = out_t[di * kw + dj]
            for b in range(batch):
                for i in range(out_h):
                    src = _U((b * height + i + di) * width + dj)
                    dst = _U(b * out_h + i) * out_w
                    for j in range(out_w):
                        dst_row[dst + j] = src_flat[src + j]


def im2col_int8(x: torch.Tensor, kernel_size: int | tuple[int, int], *,
                stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                pad_value: int = 0) -> torch.Tensor:
    """Receptive fields of a channels-last int8 image as the rows of a matrix.

    Args:
        x: int8 ``[B, H, W, C]``.
        kernel_size, stride, padding: ints or ``(h, w)`` pairs.
        pad_value: the int8 code written where the window leaves the image.

    Returns:
        int8 ``[B * H_out * W_out, kh * kw * C]``; row ``(b, i, j)`` in row-major order, its
        columns ordered ``(di, dj, c)`` like a ``[C_out, kh, kw, C_in]`` weight's rows.
        With one input channel and stride 1 (a network's first layer) the result is the
        transpose of a contiguous ``[kh * kw, rows]`` matrix: each tap then copies runs of
        ``W_out`` contiguous bytes instead of one byte per row, and the GEMM reads it
        transposed.

    >>> im2col_int8(torch.arange(4, dtype=torch.int8).reshape(1, 2, 2, 1), 2)
    tensor([[0, 1, 2, 3]], dtype=torch.int8)
    """
    x = check_int8(x, "x", 4, "[B, H, W, C] (channels last)")
    kh, kw = pair(kernel_size, "kernel_size", 1)
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    pad = check_pad_value(pad_value)
    batch, height, width, channels = x.shape
    out_h, out_w = output_size(height, kh, sh, ph), output_size(width, kw, sw, pw)
    xp = x.contiguous().numpy()
    if ph or pw:
        xp = _pad(xp, ph, pw, pad)
    rows, cols = batch * out_h * out_w, kh * kw * channels
    if channels == 1 and sh == sw == 1:
        out_t = torch.empty(cols, rows, dtype=torch.int8)
        _im2col_transposed(xp, kh, kw, out_t.numpy())
        return out_t.t()
    out = torch.empty(rows, cols, dtype=torch.int8)
    _im2col(xp, kh, kw, sh, sw, out.numpy())
    return out


def _check_conv(x, weight, stride, padding, pad_value):
    x = check_int8(x, "x", 4, "[B, H, W, C_in] (channels last)")
    weight = check_int8(weight, "weight", 4, "[C_out, kh, kw, C_in]")
    if weight.shape[3] != x.shape[3]:
        raise ValueError(f"x has {x.shape[3]} channels (last axis) but weight expects "
                         f"{weight.shape[3]} (weight is [C_out, kh, kw, C_in] = "
                         f"{tuple(weight.shape)})")
    if weight.shape[1] * weight.shape[2] * weight.shape[3] > MAX_K:
        raise ValueError(f"kh * kw * C_in exceeds MAX_K = {MAX_K}: the int32 sum could overflow")
    stride, padding = pair(stride, "stride", 1), pair(padding, "padding", 0)
    pad = check_pad_value(pad_value)
    out_h = output_size(x.shape[1], weight.shape[1], stride[0], padding[0])
    out_w = output_size(x.shape[2], weight.shape[2], stride[1], padding[1])
    return x, weight, stride, padding, pad, (x.shape[0], out_h, out_w, weight.shape[0])


def conv2d_int8(x: torch.Tensor, weight: torch.Tensor, *, stride: int | tuple[int, int] = 1,
                padding: int | tuple[int, int] = 0, pad_value: int = 0,
                gemm_backend: str | None = None) -> torch.Tensor:
    """Exact int8 convolution with int32 accumulation, channels last (see the module doc).

    Args:
        x: int8 ``[B, H, W, C_in]``.
        weight: int8 ``[C_out, kh, kw, C_in]``; ``kh * kw * C_in <= MAX_K``.
        stride, padding: ints or ``(h, w)`` pairs (no dilation, no groups).
        pad_value: code of the padding, the input zero point.
        gemm_backend: passed to :func:`course.kernels.int8_gemm.int8_gemm`.

    Returns:
        int32 ``[B, H_out, W_out, C_out]``, equal to :func:`conv2d_int8_reference`.
    """
    x, weight, stride, padding, pad, shape = _check_conv(x, weight, stride, padding, pad_value)
    cols = im2col_int8(x, tuple(weight.shape[1:3]), stride=stride, padding=padding,
                       pad_value=pad)
    w2d = weight.reshape(weight.shape[0], -1)
    return int8_gemm(cols, w2d.t(), backend=gemm_backend).view(shape)


def conv2d_int8_reference(x: torch.Tensor, weight: torch.Tensor, *,
                          stride: int | tuple[int, int] = 1,
                          padding: int | tuple[int, int] = 0,
                          pad_value: int = 0) -> torch.Tensor:
    """Slow, obviously-correct :func:`conv2d_int8`: int64, one kernel tap at a time.

    For each tap ``(di, dj)``: the strided window of the padded input ``[B, H_out, W_out,
    C_in]`` times that tap's weights ``[C_out, C_in]``, summed over the input channels
    with an int64 broadcast product.
    """
    x, weight, stride, padding, pad, shape = _check_conv(x, weight, stride, padding, pad_value)
    (sh, sw), (ph, pw) = stride, padding
    _, out_h, out_w, c_out = shape
    xp = torch.full((x.shape[0], x.shape[1] + 2 * ph, x.shape[2] + 2 * pw, x.shape[3]), pad,
                    dtype=torch.int64)
    xp[:, ph : ph + x.shape[1], pw : pw + x.shape[2]] = x.to(torch.int64)
    acc = torch.zeros(shape, dtype=torch.int64)
    for di in range(weight.shape[1]):
        for dj in range(weight.shape[2]):
            window = xp[:, di : di + sh * (out_h - 1) + 1 : sh, dj : dj + sw * (out_w - 1) + 1 : sw]
            tap = weight[:, di, dj, :].to(torch.int64)  # [C_out, C_in]
            acc += (window[..., None, :] * tap).sum(-1)
    return acc.to(torch.int32)
