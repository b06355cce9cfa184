"""Direct quantization of a trained network: replace every weight by its quantized version."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from course.quant.affine import fake_quantize, fake_quantize_per_channel
from course.quant.checks import check_bits
from course.quant.granularity import Granularity, PerChannel, PerTensor, granularity

QUANTIZED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
"""Layer types whose weights direct quantization replaces."""


def map_weights(
    model: nn.Module,
    weight_fn: Callable[[torch.Tensor], torch.Tensor],
    layer_types: tuple[type[nn.Module], ...] = QUANTIZED_LAYERS,
) -> nn.Module:
    """A deep copy of ``model`` whose layers of ``layer_types`` have ``weight_fn(weight)`` as
    weight. Biases, batch norm and activations are untouched; ``model`` is not modified.

    >>> from course.quant.binary import binarize
    >>> one_bit = map_weights(nn.Sequential(nn.Linear(4, 2)), binarize)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(weight_fn):
        raise TypeError("weight_fn must be callable")
    quantized = copy.deepcopy(model)
    layers = [m for m in quantized.modules() if isinstance(m, layer_types)]
    if not layers:
        names = ", ".join(t.__name__ for t in layer_types)
        raise ValueError(f"model has no layer to quantize (looked for {names})")
    with torch.no_grad():
        for layer in layers:
            new = weight_fn(layer.weight.detach())
            if new.shape != layer.weight.shape:
                raise ValueError(f"weight_fn changed a weight's shape from "
                                 f"{tuple(layer.weight.shape)} to {tuple(new.shape)}")
            layer.weight.copy_(new)
    return quantized


def direct_quantize(model: nn.Module, num_bits: int,
                    per_channel: bool | Granularity = False) -> nn.Module:
    """Copy of ``model`` with every Linear and Conv2d weight symmetrically fake-quantized.

    Per tensor, or per output channel (axis 0) when ``per_channel`` is true; a
    :class:`~course.quant.granularity.PerChannel` names another axis. ``num_bits >= 2``; for
    1 bit use ``map_weights(model, course.quant.binarize)``.
    """
    bits = check_bits(num_bits, minimum=1)
    if bits < 2:
        raise ValueError("num_bits must be at least 2 for symmetric quantization; for 1 bit use "
                         "map_weights(model, course.quant.binarize)")
    kind = (per_channel if isinstance(per_channel, PerTensor | PerChannel)
            else granularity(bool(per_channel)))
    if isinstance(kind, PerChannel):
        return map_weights(model, lambda w: fake_quantize_per_channel(w, bits, axis=kind))
    return map_weights(model, lambda w: fake_quantize(w, bits, symmetric=True))
