"""Which exact path computes a layer's int8 conv accumulators: the one choice, in one place.

Every path gives the same bits; they differ in speed and in what they need:

* ``"direct"`` — stride 1 and ``K = kh * kw * C_in <= FLOAT32_EXACT_K`` (float32 sums stay
  exact); chosen by default for ``K <= DIRECT_MAX_K`` (the first layers of a CNN);
* ``"onednn"`` — ``torch.ops.onednn`` present and ``K <= ONEDNN_EXACT_K``; chosen by default
  when oneDNN's int8 conv returns exact sums on this CPU (:func:`onednn_exact`);
* ``"gemm"`` — im2col + the int8 GEMM: always possible, the default otherwise.
"""

from __future__ import annotations

from course.kernels.conv.direct import FLOAT32_EXACT_K
from course.kernels.conv.onednn import ONEDNN_EXACT_K, onednn_available, onednn_exact

PATHS = ("direct", "onednn", "gemm")
"""Names accepted by ``Conv2dRequantize(..., path=...)``; ``None`` picks one."""

DIRECT_MAX_K = 32
"""Longest reduction for which ``path=None`` picks ``"direct"`` (stride 1 only): a 3x3
kernel on 1 or 3 input channels (K = 9, 27). Wider layers go to the int8 dot-product
instructions of oneDNN or the GEMM, which do 4x the work of a float32 multiply-add."""


def choose_path(k: int, stride: tuple[int, int], path: str | None = None) -> str:
    """The path for a layer of reduction length ``k`` (``kh * kw * C_in``) and ``stride``:
    ``path`` itself when given and possible (``ValueError`` naming what it needs when not),
    else the default above."""
    direct_ok = tuple(stride) == (1, 1) and k <= FLOAT32_EXACT_K
    onednn_ok = onednn_available() and k <= ONEDNN_EXACT_K
    if path is None:
        return ("direct" if direct_ok and k <= DIRECT_MAX_K
                else "onednn" if onednn_ok and onednn_exact() else "gemm")
    if path not in PATHS:
        raise ValueError(f"path must be None or one of {', '.join(PATHS)}, got {path!r}")
    if path == "direct" and not direct_ok:
        raise ValueError(f"path 'direct' needs stride 1 and kh * kw * C_in <= "
                         f"{FLOAT32_EXACT_K}, got stride {tuple(stride)} and K = {k}")
    if path == "onednn" and not onednn_ok:
        raise ValueError(f"path 'onednn' needs torch.ops.onednn (available: "
                         f"{onednn_available()}) and kh * kw * C_in <= {ONEDNN_EXACT_K}, "
                         f"got K = {k}")
    return path
