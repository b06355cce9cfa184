"""Quantization primitives, layer 0 of the library: tensors in, tensors out.

Imports nothing else of the course (checked by ``tests/test_import_layers.py``).

* :mod:`course.quant.affine` — qrange, qparams, quantize / dequantize / fake-quantize, per
  tensor or per channel.
* :mod:`course.quant.binary` — the sign quantizer (sign(0) = +1, alpha = mean|w|).
* :mod:`course.quant.xnor` — XNOR-Net's tensor math: binary weights, input scales.
* :mod:`course.quant.dorefa` — DoReFa-Net's k-bit weight, activation and gradient quantizers.
* :mod:`course.quant.ste` — every straight-through estimator (fake quantization, sign,
  DoReFa's rounding).
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
from course.quant.ste import FakeQuantizeSTE, clipping_range, fake_quantize_ste, sign_ste

__all__ = [
    "EPS",
    "FakeQuantizeSTE",
    "affine_qparams",
    "binarize",
    "binary_scale",
    "clipping_range",
    "code_dtype",
    "dequantize",
    "fake_quantize",
    "fake_quantize_per_channel",
    "fake_quantize_ste",
    "per_channel_scale",
    "qrange",
    "quantize",
    "sign",
    "sign_ste",
    "symmetric_scale",
]

# Two names that graded notebooks' namespaces still offered as ``quant.<name>`` before the
# primitives became layer 0, and that the autograder's adversarial tests call there (a
# student answer calling the library's own implementation must meet the withheld message).
# They are looked up when asked for, by module name, so this package imports nothing above
# it; nothing in the course uses them. Remove once those tests use the new homes.
_MOVED_UP = {"sqnr_db": "course.measure", "FakeQuantize": "course.nn.fake_quant"}


def __getattr__(name: str) -> object:
    if name in _MOVED_UP:
        import importlib

        return getattr(importlib.import_module(_MOVED_UP[name]), name)
    raise AttributeError(f"module 'course.quant' has no attribute {name!r}")
