"""Quantization primitives, layer 0 of the library: tensors in, tensors out.

Imports nothing else of the course (checked by ``tests/test_import_layers.py``).

* :mod:`course.quant.affine` — qrange, qparams, quantize / dequantize / fake-quantize, per
  tensor or per channel.
* :mod:`course.quant.binary` — the sign quantizer (sign(0) = +1, alpha = mean|w|).
* :mod:`course.quant.xnor` — XNOR-Net's tensor math: binary weights, input scales.
* :mod:`course.quant.dorefa` — DoReFa-Net's k-bit weight, activation and gradient quantizers.
* :mod:`course.quant.ste` — every straight-through estimator (fake quantization, sign,
  DoReFa's rounding).
* :mod:`course.quant.granularity` — per tensor or per channel(axis), as a type.
* :mod:`course.quant.checks` — the input checks shared across the library.

Modules (``FakeQuantize``, quantized layers) are in :mod:`course.nn`, model transforms
(``direct_quantize``) in :mod:`course.methods`, metrics (``sqnr_db``) in
:mod:`course.measure`.
"""

from course.quant.affine import (
    EPS,
    affine_qparams,
    code_dtype,
    dequantize,
    fake_quantize,
    fake_quantize_per_channel,
    per_channel_scale,
    qrange,
    quantize,
    symmetric_scale,
)
from course.quant.binary import binarize, binary_scale, sign
from course.quant.granularity import Granularity, PerChannel, PerTensor, granularity
from course.quant.ste import FakeQuantizeSTE, clipping_range, fake_quantize_ste, sign_ste

__all__ = [
    "EPS",
    "FakeQuantizeSTE",
    "Granularity",
    "PerChannel",
    "PerTensor",
    "affine_qparams",
    "binarize",
    "binary_scale",
    "clipping_range",
    "code_dtype",
    "dequantize",
    "fake_quantize",
    "fake_quantize_per_channel",
    "granularity",
    "fake_quantize_ste",
    "per_channel_scale",
    "qrange",
    "quantize",
    "sign",
    "sign_ste",
    "symmetric_scale",
]
