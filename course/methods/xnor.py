"""XNOR-Net and binary-weight networks (BWN) as model -> model transforms.

:func:`binarize_model` swaps a float model's Linear / Conv2d layers for the training layers
of :mod:`course.nn.binary`; :func:`pack_model` turns those into the packed inference layers
of :mod:`course.nn.packed`. The method's pieces are re-exported here, so ``xnor.sign_ste``,
``xnor.binary_weight``, ``xnor.XNORLinear`` and ``xnor.PackedXNORLinear`` all read as the
lecture names them.
"""

from __future__ import annotations

import copy
from collections.abc import Collection

from torch import nn

from course.nn.binary import BINARY_LAYERS, BinaryConv2d, BinaryLinear, XNORConv2d, XNORLinear
from course.nn.packed import (
    PackedBinaryConv2d,
    PackedBinaryLinear,
    PackedXNORConv2d,
    PackedXNORLinear,
)
from course.nn.swap import check_layer_names, like, replace_module
from course.quant.ste import STE_CLIP, SignSTE, sign_ste
from course.quant.xnor import binary_weight, input_scale, input_scale_map

__all__ = [
    "STE_CLIP",
    "BinaryConv2d",
    "BinaryLinear",
    "PackedBinaryConv2d",
    "PackedBinaryLinear",
    "PackedXNORConv2d",
    "PackedXNORLinear",
    "SignSTE",
    "XNORConv2d",
    "XNORLinear",
    "binarize_model",
    "binary_weight",
    "input_scale",
    "input_scale_map",
    "pack_model",
    "sign_ste",
]

_BINARY_OF = {nn.Linear: (BinaryLinear, XNORLinear), nn.Conv2d: (BinaryConv2d, XNORConv2d)}


def binarize_model(model: nn.Module, *, binary_inputs: bool = False,
                   float_inputs: Collection[str] = (), skip: Collection[str] = ()) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Linear`` / ``nn.Conv2d`` (exactly those
    types) replaced by its binary version, weights and biases copied.

    ``binary_inputs=False``: :class:`BinaryLinear` / :class:`BinaryConv2d` (BWN);
    ``True``: :class:`XNORLinear` / :class:`XNORConv2d`, except the layers named in
    ``float_inputs`` (e.g. the first layer, whose input is the image), which get the
    binary-weight version. Layers named in ``skip`` stay float. ``model`` is not modified.
    """
    check_layer_names(model, float_inputs=float_inputs, skip=skip)
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        kinds = _BINARY_OF.get(type(module))
        if kinds is None or name in skip:
            continue
        kind = kinds[1] if binary_inputs and name not in float_inputs else kinds[0]
        replace_module(out, name, like(kind, module))
    return out


def pack_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every Binary/XNOR layer replaced by its
    packed inference form (``layer.to_packed()``); other modules are copied as they are."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model).eval()
    for name, module in list(out.named_modules()):
        if isinstance(module, BINARY_LAYERS):
            replace_module(out, name, module.to_packed())
    return out
