"""The ``"gemm"`` path's im2col: rows of a chunk of images, ready for the int8 GEMM.

Channels-last int8 images ``[B, H, W, C]``; a row holds one output position's window
(``kh * kw * C`` items), in 8-byte words when ``C`` is a multiple of 8; padding is written on
the fly with the input zero point. :class:`course.kernels.conv.fused.Conv2dRequantize` runs
the GEMM on these rows and :func:`course.kernels.conv.pool.pool_requantize` on its sums.
"""

from __future__ import annotations

import numba
import numpy as np

from course.kernels.conv.direct import WORD
from course.kernels.numba_types import U64 as _U


@numba.njit(cache=True, nogil=True)
def im2col_rows(src, b0, g, height, width, units, kh, kw, sh, sw, ph, pw, pad, out_h, out_w,
                cols):  # pragma: no cover - compiled
    """im2col of images ``b0 .. b0+g-1`` of a flat channels-last ``src`` (``units`` items
    per pixel: bytes, or 8-byte words), padding with ``pad`` (one item) on the fly.

    Row ``(gi, i, j)`` of ``cols`` holds, for each kernel row ``di``, the ``kw * units``
    items of the window; windows wholly inside the image are copied as one run.
    """
    c = _U(units)
    span = _U(kw) * c
    k = _U(kh) * span
    for gi in range(g):
        image = _U(b0 + gi) * _U(height)
        for i in range(out_h):
            for di in range(kh):
                r = i * sh + di - ph
                row_base = _U((gi * out_h + i) * out_w) * k + _U(di) * span
                if r < 0 or r >= height:
                    for j in range(_U(out_w)):
                        dst = row_base + j * k
                        for t in range(span):
                            cols[dst + t] = pad
                    continue
                line = (image + _U(r)) * _U(width)
                for j in range(out_w):
                    dst = row_base + _U(j) * k
                    col0 = j * sw - pw
                    if col0 >= 0 and col0 + kw <= width:
                        src0 = (line + _U(col0)) * c
                        for t in range(span):
                            cols[dst + t] = src[src0 + t]
                    else:
                        for dj in range(kw):
                            col = col0 + dj
                            d = dst + _U(dj) * c
                            if col < 0 or col >= width:
                                for t in range(c):
                                    cols[d + t] = pad
                            else:
                                s0 = (line + _U(col)) * c
                                for t in range(c):
                                    cols[d + t] = src[s0 + t]


def im2col_chunk(x: np.ndarray, b0: int, g: int, kernel: tuple[int, int],
                  stride: tuple[int, int], padding: tuple[int, int], pad: int,
                  out_hw: tuple[int, int], cols: np.ndarray) -> None:
    """im2col rows of ``x[b0:b0+g]`` into ``cols`` (8-byte words when ``C % 8 == 0``)."""
    _, height, width, channels = x.shape
    if channels % WORD == 0:
        pad_word = np.full(WORD, pad, np.int8).view(np.uint64)[0]
        im2col_rows(x.reshape(-1).view(np.uint64), b0, g, height, width, channels // WORD,
                     *kernel, *stride, *padding, pad_word, *out_hw,
                     cols.reshape(-1).view(np.uint64))
    else:
        im2col_rows(x.reshape(-1), b0, g, height, width, channels, *kernel, *stride,
                     *padding, np.int8(pad), *out_hw, cols.reshape(-1))
