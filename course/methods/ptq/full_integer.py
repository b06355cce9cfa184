"""Full-integer post-training quantization: float model -> :class:`IntegerModel`.

``to_full_integer(model, calibration_data)``:

1. reads the model as blocks and folds each batch norm into its layer
   (:func:`course.methods.ptq.plan.plan_model`);
2. calibrates the folded model (static activation ranges: the input and each layer block's
   output, after its ReLU) with an observer — or takes a :class:`Calibration` you made
   with :func:`course.observe.calibrate` on the same model;
3. quantizes weights (int8, symmetric per output channel) and biases (int32), computes each
   layer's fixed-point multipliers, and builds the integer layers: int8 activations
   everywhere between the input quantizer and the output dequantizer.

>>> from course.models import MLP
>>> model = MLP().eval()
>>> qmodel = to_full_integer(model, [torch.rand(16, 1, 28, 28)])
>>> qmodel(torch.rand(2, 1, 28, 28)).shape, qmodel.fc1.weight.dtype
(torch.Size([2, 10]), torch.int8)
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from course.methods.ptq.plan import FlattenBlock, LayerBlock, PoolBlock, folded_model, plan_model
from course.nn.integer import (
    DequantizeOutput,
    FakeQuantTwin,
    IntConv2d,
    IntegerModel,
    IntFlatten,
    IntLinear,
    IntMaxPool2d,
    IntReLU,
    QuantizeInput,
)
from course.observe.calibration import Calibration, ObserverFactory, calibrate
from course.observe.observers import Observer

ACTIVATION_BITS = 8
UNSIGNED_TO_SIGNED = 128
"""Asymmetric 8-bit qparams are computed on [0, 255]; int8 codes are those minus 128."""


def int8_qparams(observer: Observer, what: str) -> tuple[float, int]:
    """Signed int8 ``(scale, zero_point)`` of an observer's range (asymmetric)."""
    if not isinstance(observer, Observer):
        raise TypeError(f"the calibration of {what} is not an Observer: "
                        f"{type(observer).__name__}")
    if observer.batches == 0:
        raise ValueError(f"{what} was never observed: the model is not calibrated (run "
                         "calibration batches through it first)")
    scale, zero_point = observer.qparams(ACTIVATION_BITS, symmetric=False)
    return scale, zero_point - UNSIGNED_TO_SIGNED


def _flatten_inputs(float_model: nn.Sequential, input_shape: tuple[int, ...]
                    ) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every Flatten, from one zero batch."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in float_model.named_children():
        if isinstance(module, nn.Flatten):
            def hook(_m: nn.Module, args: Any, name: str = name) -> None:
                shapes[name] = tuple(args[0].shape[1:])
            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            float_model(torch.zeros((1, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def to_full_integer(model: nn.Module, calibration_data: Iterable[Any] | Calibration,
                    observer: ObserverFactory = "minmax",
                    num_batches: int | None = None) -> IntegerModel:
    """Convert a float ``nn.Sequential`` (see :mod:`course.methods.ptq.plan`) to integer-only.

    Args:
        model: the float model (eval mode: batch norms are folded with running stats). It
            is not modified.
        calibration_data: a loader (iterable of ``(x, y)`` or ``x`` batches of
            representative inputs), or a :class:`Calibration` of this model from
            :func:`course.observe.calibrate`.
        observer: observer class, factory or name, used when calibrating from a loader.
        num_batches: calibrate on the first ``num_batches`` batches only.

    Returns:
        :class:`IntegerModel` whose submodules carry the original layer names.
    """
    blocks = plan_model(model)
    float_model = folded_model(blocks)
    if isinstance(calibration_data, Calibration):
        cal = calibration_data
    elif isinstance(calibration_data, nn.Module | torch.Tensor | str | numbers.Number) \
            or not isinstance(calibration_data, Iterable):
        raise TypeError("calibration_data must be a loader of representative batches or a "
                        f"Calibration, got {type(calibration_data).__name__}")
    else:
        layers = [b.observe for b in blocks if isinstance(b, LayerBlock)]
        cal = calibrate(float_model, calibration_data, observer, num_batches, modules=layers)

    flatten_shapes = _flatten_inputs(float_model, cal.input_shape) if cal.input_shape else {}
    qparams = int8_qparams(cal.input, "the model input")
    modules: OrderedDict[str, nn.Module] = OrderedDict(quantize=QuantizeInput(*qparams))
    layout: tuple[int, int, int] | None = None  # (C, H, W) of a just-flattened 4-D map
    for block in blocks:
        if isinstance(block, LayerBlock):
            if block.observe not in cal.outputs:
                raise ValueError(f"layer {block.observe!r} was never observed: the model is "
                                 "not calibrated (no observer for it)")
            out_qparams = int8_qparams(cal.outputs[block.observe], f"layer {block.observe!r}")
            relu = block.relu is not None
            if isinstance(block.layer, nn.Linear):
                modules[block.name] = IntLinear.from_float(block.layer, qparams, out_qparams,
                                                           relu, input_layout=layout)
            else:
                pool = block.pool[1] if block.pool is not None else None
                modules[block.name] = IntConv2d.from_float(block.layer, qparams, out_qparams,
                                                           relu, pool)
            qparams, layout = out_qparams, None
        elif isinstance(block, PoolBlock):
            modules[block.name] = IntMaxPool2d.from_float(block.pool)
        elif isinstance(block, FlattenBlock):
            shape = flatten_shapes.get(block.name, ())
            layout = shape if len(shape) == 3 else None
            modules[block.name] = IntFlatten()
        else:
            modules[block.name] = IntReLU(qparams[1])
    modules["dequantize"] = DequantizeOutput(*qparams)
    return IntegerModel(modules).eval()


def fake_quant_twin(integer_model: IntegerModel) -> FakeQuantTwin:
    """The float32 model that simulates ``integer_model`` with the same qparams."""
    return FakeQuantTwin(integer_model).eval()
