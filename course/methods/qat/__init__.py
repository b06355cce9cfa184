"""Quantization-aware training (QAT): fake-quantized fine-tuning, then integer conversion.

The recipe (Jacob et al., 2018; Krishnamoorthi, 2018), one module per step:

* :mod:`course.methods.qat.layers` — :class:`QATLinear` / :class:`QATConv2d`: a Linear / Conv2d
  carrying its batch norm and ReLU, its folded weight fake-quantized per output channel
  and its output per tensor (:class:`course.nn.fake_quant.FakeQuantize`); batch-norm
  folding with gradients (``fold_scale``, ``folded_parameters``); the bias on the int32
  grid (``bias_codes``, ``bias_ste``).
* :mod:`course.methods.qat.model` — :func:`prepare_qat` turns a trained float ``nn.Sequential``
  (the course's MLP or CNN, anything :func:`course.methods.ptq.plan_model` accepts) into a
  :class:`QATModel`: an input fake quantizer, then the QAT layers; ``calibrate_qat``,
  ``freeze_bn_stats``, ``qat_layers``. Bit widths: ``bits`` for weights and inner
  activations, :data:`IO_BITS` = 8 for the input and the logits.
* :mod:`course.methods.qat.training` — :func:`train_qat` fine-tunes it a few epochs with a
  :class:`QATRecipe`: the forward pass sees b-bit values, the backward pass float32
  gradients through the straight-through estimator; observers and batch-norm statistics
  can be frozen after some epochs.
* :mod:`course.methods.qat.conversion` — :func:`convert` builds the integer-only
  :class:`course.nn.IntegerModel` of lab02 with exactly the qparams the QAT model used:
  int8 x int8 -> int32 kernels throughout, codes restricted to b bits by :class:`IntClamp`.

**Post-training quantization at the same bit widths** is the same model without the
fine-tuning: ``prepare_qat(model, bits, observer="minmax")`` then :func:`calibrate_qat`.

>>> import torch
>>> from course.models import MLP
>>> qat = prepare_qat(MLP().eval(), 4)
>>> calibrate_qat(qat, [torch.rand(8, 1, 28, 28)])
1
>>> int_model = convert(qat)
>>> int_model(torch.rand(2, 1, 28, 28)).shape, int(int_model.fc1.weight.abs().max()) <= 7
(torch.Size([2, 10]), True)
"""

from course.methods.qat.conversion import INT8_MAX as INT8_MAX
from course.methods.qat.conversion import INT8_MIN as INT8_MIN
from course.methods.qat.conversion import UNSIGNED_TO_SIGNED as UNSIGNED_TO_SIGNED
from course.methods.qat.conversion import IntClamp, convert
from course.methods.qat.layers import QAT_LAYERS as QAT_LAYERS
from course.methods.qat.layers import (
    QATConv2d,
    QATLinear,
    bias_codes,
    bias_ste,
    fold_scale,
    folded_parameters,
)
from course.methods.qat.model import (
    IO_BITS,
    QATModel,
    calibrate_qat,
    freeze_bn_stats,
    prepare_qat,
    qat_layers,
)
from course.methods.qat.training import QATRecipe, train_qat
from course.nn.fake_quant import enable_fake_quant, freeze_observers

__all__ = [
    "IO_BITS", "IntClamp", "QATConv2d", "QATLinear", "QATModel", "QATRecipe", "bias_codes",
    "bias_ste", "calibrate_qat", "convert", "enable_fake_quant", "fold_scale",
    "folded_parameters", "freeze_bn_stats", "freeze_observers", "prepare_qat", "qat_layers",
    "train_qat",
]
