"""int8 Conv2d: int8 in, int32 or (fused with requantization, ReLU and max pooling) int8 out.

Channels last throughout: ``x`` int8 ``[B, H, W, C_in]``, ``weight`` int8
``[C_out, kh, kw, C_in]``. :class:`Conv2dRequantize` (:mod:`course.kernels.conv.fused`) runs,
per layer, one of three exact paths for the accumulators, all giving the same bits, chosen by
:func:`choose_path` (:mod:`course.kernels.conv.paths`, the one place the choice is made):

* ``"direct"`` — stride 1, small ``K = kh * kw * C_in``: a direct convolution in exact
  float32 arithmetic (:mod:`course.kernels.conv.direct`);
* ``"onednn"`` — PyTorch's oneDNN int8 convolution asked for its exact sums, verified per
  input shape (:mod:`course.kernels.conv.onednn`);
* ``"gemm"`` — im2col rows of a chunk of images (:mod:`course.kernels.conv.gemm`) and the
  verified int8 GEMM.

The ``"gemm"`` and ``"onednn"`` sums are pooled, then requantized, by
:mod:`course.kernels.conv.pool`; :mod:`course.kernels.conv.im2col` holds the unfused int32
convolution (the reference) and the geometry helpers.

Requantization is :mod:`course.kernels.requantize`'s, max pooling
:mod:`course.kernels.int8_activation`'s.
"""

from course.kernels.conv.fused import (
    FUSED_CONV_PATH,
    Conv2dRequantize,
    conv2d_requantize_int8,
    conv2d_requantize_int8_reference,
)
from course.kernels.conv.im2col import conv2d_int8, conv2d_int8_reference, im2col_int8
from course.kernels.conv.paths import DIRECT_MAX_K, PATHS, choose_path

__all__ = [
    "DIRECT_MAX_K",
    "FUSED_CONV_PATH",
    "PATHS",
    "Conv2dRequantize",
    "choose_path",
    "conv2d_int8",
    "conv2d_int8_reference",
    "conv2d_requantize_int8",
    "conv2d_requantize_int8_reference",
    "im2col_int8",
]
