"""The QAT model: a float ``nn.Sequential`` with fake quantizers, and its switches.

:func:`prepare_qat` turns a trained float model (the course's MLP or CNN, anything
:func:`course.methods.ptq.plan_model` accepts) into a :class:`QATModel`: an input fake
quantizer, then each Linear / Conv2d as a :class:`course.methods.qat.QATLinear` /
:class:`course.methods.qat.QATConv2d` that carries its batch norm and ReLU.
:func:`freeze_bn_stats` and :func:`calibrate_qat` act on every QAT layer or quantizer of it.

**Bit widths.** ``bits`` applies to every weight and to the activations between layers;
the model input and the final logits keep :data:`IO_BITS` = 8 (a 2-bit image or 2-bit
logits would change the task, not the network).

**Post-training quantization at the same bit widths** is the same model without the
fine-tuning: ``prepare_qat(model, bits, observer="minmax")`` then :func:`calibrate_qat`
(observers watch float activations, as ``course.observe.calibrate`` does).

>>> from course.models import MLP
>>> qat = prepare_qat(MLP().eval(), 4)
>>> list(dict(qat.named_children())), qat.fc1.weight_fake_quant.num_bits
(['quantize', 'flatten', 'fc1', 'fc2', 'fc3'], 4)
>>> calibrate_qat(qat, [torch.rand(8, 1, 28, 28)]), freeze_bn_stats(qat)
(1, 2)
"""

from __future__ import annotations

import copy
import numbers
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from course.methods.ptq.plan import NO_OPS, leaf_modules, plan_model
from course.methods.qat.layers import QAT_LAYERS, QATConv2d, QATLinear
from course.nn.fake_quant import (
    ACTIVATION_OBSERVER,
    FakeQuantize,
    check_fake_quant_bits,
    fake_quantizers,
)
from course.nn.folding import FOLDABLE
from course.observe.calibration import ObserverFactory, batch_inputs

IO_BITS = 8
"""Bits of the model input and of the final logits, whatever the layers' bit width."""


class QATModel(nn.Sequential):
    """A float model prepared for QAT: ``quantize`` (input fake quantizer), then the
    original layers by name (QAT layers with their batch norm and ReLU fused in; pools,
    flattens, standalone ReLUs as they were). Input and output as the float model's.

    ``weight_bits`` / ``activation_bits``: the bit widths it simulates. ``input_shape``:
    the per-sample shape of the last input seen (what :func:`course.methods.qat.convert` traces
    with).
    """

    def __init__(self, modules: OrderedDict[str, nn.Module], weight_bits: int,
                 activation_bits: int) -> None:
        super().__init__(modules)
        self.weight_bits = weight_bits
        self.activation_bits = activation_bits
        self.input_shape: tuple[int, ...] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the modules in order; each QAT layer gets the scale of the last activation
        quantizer before it (for its bias grid)."""
        self.input_shape = tuple(x.shape[1:])
        quantizer: FakeQuantize | None = None
        for module in self:
            if isinstance(module, QATLinear | QATConv2d):
                scale = quantizer.scale if quantizer is not None and quantizer.observed \
                    and quantizer.fake_quant_enabled else None
                x = module(x, scale)
                quantizer = module.output_fake_quant
            else:
                x = module(x)
                if isinstance(module, FakeQuantize):
                    quantizer = module
        return x

    def extra_repr(self) -> str:
        return f"weight_bits={self.weight_bits}, activation_bits={self.activation_bits}"


def prepare_qat(model: nn.Module, bits: int, activation_bits: int | None = None,
                observer: ObserverFactory = ACTIVATION_OBSERVER) -> QATModel:
    """A :class:`QATModel` copy of the float ``model``, in training mode; ``model`` is not
    modified.

    Args:
        model: a float ``nn.Sequential`` that :func:`course.methods.ptq.plan_model` accepts
            (Linear / Conv2d, each optionally followed by its BatchNorm and ReLU; MaxPool2d,
            Flatten).
            Dropout and Identity are left out.
        bits: weight bit width (2 to 8), per output channel, symmetric.
        activation_bits: bit width of the activations between layers (default ``bits``);
            the input and the logits keep :data:`IO_BITS`.
        observer: activation observer (a ``course.methods.ptq`` name, class or factory):
            ``"moving_average"`` for QAT, ``"minmax"`` to mirror ``course.methods.ptq``'s PTQ.

    Raises ``ValueError`` for bit widths outside [2, 8] (the integer model stores int8),
    a model with no Linear / Conv2d, or a layer the integer model cannot run.
    """
    weight_bits = check_fake_quant_bits(bits, "bits")
    act_bits = weight_bits if activation_bits is None else check_fake_quant_bits(
        activation_bits, "activation_bits")
    for name, value in (("bits", weight_bits), ("activation_bits", act_bits)):
        if value > IO_BITS:
            raise ValueError(f"{name} must be at most {IO_BITS} (the integer model stores "
                             f"int8 codes), got {value}")
    plan_model(model)  # refuses unsupported models and models without a quantizable layer
    leaves = [(n, m) for n, m in leaf_modules(model) if not isinstance(m, NO_OPS)]
    last = max(i for i, (_, m) in enumerate(leaves) if type(m) in QAT_LAYERS)
    modules: OrderedDict[str, nn.Module] = OrderedDict(
        quantize=FakeQuantize.for_activations(IO_BITS, observer))
    i = 0
    while i < len(leaves):
        name, module = leaves[i]
        if type(module) in QAT_LAYERS:
            index, bn, relu = i, None, False
            if i + 1 < len(leaves) and type(leaves[i + 1][1]) is FOLDABLE[type(module)]:
                bn = leaves[i + 1][1]
                i += 1
            if i + 1 < len(leaves) and type(leaves[i + 1][1]) is nn.ReLU:
                relu = True
                i += 1
            out_bits = IO_BITS if index == last else act_bits
            modules[name] = QAT_LAYERS[type(module)].from_float(module, weight_bits, bn, relu,
                                                                out_bits, observer)
        else:
            modules[name] = copy.deepcopy(module)
        i += 1
    return QATModel(modules, weight_bits, act_bits).train()


def qat_layers(model: nn.Module) -> list[QATLinear | QATConv2d]:
    """Every QAT layer inside ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, QATLinear | QATConv2d)]


def freeze_bn_stats(model: nn.Module, frozen: bool = True) -> int:
    """Freeze (or unfreeze) the batch statistics of every QAT layer with a batch norm.

    Returns how many layers were switched; ``ValueError`` if ``model`` has no QAT layer.
    """
    layers = qat_layers(model)
    if not layers:
        raise ValueError("model has no QAT layer (prepare it with prepare_qat first)")
    with_bn = [layer for layer in layers if layer.bn is not None]
    for layer in with_bn:
        layer.freeze_bn_stats(frozen)
    return len(with_bn)


def check_qat_model(model: object) -> QATModel:
    """``model`` if it is a :class:`QATModel`, else ``TypeError`` (for the package)."""
    if not isinstance(model, QATModel):
        raise TypeError(f"model must be a QATModel from prepare_qat, got "
                        f"{type(model).__name__}")
    return model


def calibrate_qat(model: QATModel, loader: Iterable[Any],
                  num_batches: int | None = None) -> int:
    """Set every quantizer's qparams from ``loader``'s batches, without training.

    The model runs in eval mode (batch norms with running statistics), fake quantization
    off, observers on: each sees the float values, as in ``course.observe.calibrate``. Modes
    and switches are restored afterwards. Returns the number of batches used.
    """
    model = check_qat_model(model)
    if num_batches is not None and (isinstance(num_batches, bool)
                                    or not isinstance(num_batches, numbers.Integral)
                                    or num_batches < 1):
        raise ValueError(f"num_batches must be a positive int or None, got {num_batches!r}")
    quantizers = fake_quantizers(model)
    saved = [(fq.training, fq.observer_enabled, fq.fake_quant_enabled) for fq in quantizers]
    was_training = model.training
    batches = 0
    try:
        model.eval()
        for fq in quantizers:
            fq.train()
            fq.enable_observer(True).enable_fake_quant(False)
        with torch.no_grad():
            for batch in loader:
                if num_batches is not None and batches >= num_batches:
                    break
                model(batch_inputs(batch))
                batches += 1
    finally:
        model.train(was_training)
        for fq, (training, observing, quantizing) in zip(quantizers, saved, strict=True):
            fq.train(training)
            fq.enable_observer(observing).enable_fake_quant(quantizing)
    if batches == 0:
        raise ValueError("loader gave no batch: calibration needs representative data")
    return batches
