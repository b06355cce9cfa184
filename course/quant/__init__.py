"""Quantization primitives and the methods of the lecture, one module each.

* :mod:`course.quant.affine` — qrange, qparams, quantize / dequantize / fake-quantize.
* :mod:`course.quant.binary` — the sign quantizer (sign(0) = +1, alpha = mean|w|).
* :mod:`course.quant.direct` — direct quantization of a trained model's weights.
* :mod:`course.quant.xnor` — XNOR-Net: the sign STE, binary weights (BWN) and inputs, layers
  and their packed 1-bit inference form.
* :mod:`course.quant.dorefa` — DoReFa-Net: k-bit weights, activations and gradients.
* :mod:`course.quant.ste` — the straight-through estimator of fake quantization.
* :mod:`course.quant.fake_quant` — the ``FakeQuantize`` module (observer-driven qparams).
* :mod:`course.quant.swap` — swapping Linear/Conv2d layers for quantized versions.
"""

from course.measure import sqnr_db
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
from course.quant.direct import QUANTIZED_LAYERS, direct_quantize, quantize_weights
from course.quant.fake_quant import (
    FakeQuantize,
    enable_fake_quant,
    fake_quantizers,
    freeze_observers,
)
from course.quant.ste import FakeQuantizeSTE, clipping_range, fake_quantize_ste

__all__ = [
    "EPS",
    "FakeQuantize",
    "FakeQuantizeSTE",
    "clipping_range",
    "enable_fake_quant",
    "fake_quantize_ste",
    "fake_quantizers",
    "freeze_observers",
    "QUANTIZED_LAYERS",
    "affine_qparams",
    "binarize",
    "binary_scale",
    "code_dtype",
    "dequantize",
    "direct_quantize",
    "fake_quantize",
    "fake_quantize_per_channel",
    "per_channel_scale",
    "qrange",
    "quantize",
    "quantize_weights",
    "sign",
    "sqnr_db",
    "symmetric_scale",
]
