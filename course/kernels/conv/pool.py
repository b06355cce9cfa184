"""Pooling then requantization of int32 (or exact float32) accumulators, channels last.

Requantization is non-decreasing in the accumulator, so ``pool(requantize(acc)) ==
requantize(pool(acc))``: the max is taken over the accumulators and only the pooled ones
are requantized (:func:`course.kernels.requantize.requantize_step`). The ``"gemm"`` and
``"onednn"`` paths of :class:`course.kernels.conv.fused.Conv2dRequantize` end here.
"""

from __future__ import annotations

import numba
import numpy as np

from course.kernels.numba_types import U64 as _U
from course.kernels.requantize import requantize_step, rounding_term


@numba.njit(cache=True, nogil=True)
def pool_requantize(acc, a0, b0, g, conv_h, conv_w, pkh, pkw, psh, psw, m_row, s_row,
                    bias_row, zp, lo, hi, out):  # pragma: no cover - compiled
    """Accumulators of images ``a0 .. a0+g-1`` -> pooled, requantized ``out[b0:b0+g]``.

    ``acc``: flat channels-last ``[images, conv_h, conv_w, C]`` accumulators, int32 or
    float32 holding exact integers. ``m_row``, ``s_row``, ``bias_row`` (int64): the
    per-channel parameters tiled along an output row (``out_w * C`` entries), so that the
    requantization loop runs over whole rows.
    """
    _, out_h, out_w, channels = out.shape
    c = _U(channels)
    n = _U(out_w) * c
    best = np.empty(n, acc.dtype)
    rounding = np.empty(n, np.int64)
    for k in range(n):
        rounding[k] = rounding_term(s_row[k])
    flat_out = out.reshape(-1)
    for gi in range(g):
        for i in range(out_h):
            for a in range(pkh):
                row = _U((a0 + gi) * conv_h + i * psh + a) * _U(conv_w)
                for e in range(pkw):
                    for j in range(_U(out_w)):
                        src = (row + j * _U(psw) + _U(e)) * c
                        dst = j * c
                        if a == 0 and e == 0:
                            for ch in range(c):
                                best[dst + ch] = acc[src + ch]
                        else:
                            for ch in range(c):
                                v, b = acc[src + ch], best[dst + ch]
                                best[dst + ch] = v if v > b else b
            base = _U((b0 + gi) * out_h + i) * n
            for k in range(n):
                flat_out[base + k] = requantize_step(best[k], bias_row[k], m_row[k],
                                                     rounding[k], s_row[k], lo, hi, zp)
