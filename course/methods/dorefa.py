"""DoReFa-Net (Zhou et al., 2016) as model -> model transforms: :func:`dorefa_model` and the
lecture's hands-on 1-bit configuration :func:`hands_on_binary_model`.

The quantizers (:mod:`course.quant.dorefa`) and layers (:mod:`course.nn.dorefa`) are
re-exported here: ``dorefa.quantize_weights`` is DoReFa's weight quantizer.
"""

from __future__ import annotations

import copy
from collections.abc import Collection

from torch import nn

from course.nn.dorefa import DoReFaActivation, DoReFaConv2d, DoReFaLinear
from course.nn.swap import check_layer_names, like, replace_module
from course.quant.dorefa import (
    FLOAT_BITS,
    MAX_QUANT_BITS,
    check_dorefa_bits,
    quantize_activations,
    quantize_gradients,
    quantize_k,
    quantize_weights,
    stochastic_quantize_gradient,
)

__all__ = [
    "FLOAT_BITS",
    "MAX_QUANT_BITS",
    "DoReFaActivation",
    "DoReFaConv2d",
    "DoReFaLinear",
    "dorefa_model",
    "hands_on_binary_model",
    "quantize_activations",
    "quantize_gradients",
    "quantize_k",
    "quantize_weights",
    "stochastic_quantize_gradient",
]


def dorefa_model(model: nn.Module, *, weight_bits: int = 1, activation_bits: int = FLOAT_BITS,
                 gradient_bits: int = FLOAT_BITS, float_inputs: Collection[str] = (),
                 skip: Collection[str] = (), scaled_sign: bool = True) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Linear`` / ``nn.Conv2d`` (exactly those
    types) replaced by :class:`DoReFaLinear` / :class:`DoReFaConv2d` with the given bit
    widths, weights and biases copied; ``model`` is not modified.

    Each converted layer quantizes its input to ``activation_bits`` (after clipping to
    [0, 1]; with 32, the clip only), except the layers named in ``float_inputs`` (e.g. the
    first layer, whose input is the data), which take their input as it is. Layers named in
    ``skip`` stay float (DoReFa-Net keeps the first and last layers in full precision).
    ``scaled_sign`` chooses the 1-bit weight rule (see
    :func:`course.quant.dorefa.quantize_weights`).

    >>> from torch import nn
    >>> net = dorefa_model(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)),
    ...                    weight_bits=2, activation_bits=4, float_inputs=("0",))
    >>> [type(m).__name__ for m in net], net[0].activation_bits, net[2].activation_bits
    (['DoReFaLinear', 'ReLU', 'DoReFaLinear'], None, 4)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(scaled_sign, bool):
        raise TypeError(f"scaled_sign must be a bool, got {type(scaled_sign).__name__}")
    bits = {"weight_bits": check_dorefa_bits(weight_bits, "weight_bits"),
            "gradient_bits": check_dorefa_bits(gradient_bits, "gradient_bits"),
            "scaled_sign": scaled_sign}
    activation_bits = check_dorefa_bits(activation_bits, "activation_bits")
    check_layer_names(model, float_inputs=float_inputs, skip=skip)
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if type(module) not in (nn.Linear, nn.Conv2d) or name in skip:
            continue
        layer_bits = dict(bits, activation_bits=None if name in float_inputs
                          else activation_bits)
        kind = DoReFaConv2d if isinstance(module, nn.Conv2d) else DoReFaLinear
        replace_module(out, name, like(kind, module, **layer_bits))
    return out


def hands_on_binary_model(model: nn.Module) -> nn.Module:
    """The lecture's hands-on 1-bit configuration (TF + Larq ``QuantDense`` layers with
    ``DoReFa(k_bit=1, mode="weights")`` kernels and ``DoReFa(k_bit=1, mode="activations")``
    inputs): a copy of ``model`` whose every ``nn.Linear`` / ``nn.Conv2d`` uses unscaled
    ``-1`` / ``+1`` weights and binarizes its input at 0.5 — the image included — with float
    gradients; batch norm and biases stay float. ``model`` is not modified.

    This is harsher than a per-channel ``alpha * sign(w)`` (XNOR-Net's scaled weights): the
    unscaled weights and the binarized image are what the deck's 51.78 % measures.

    >>> from torch import nn
    >>> net = hands_on_binary_model(nn.Sequential(nn.Linear(4, 3)))
    >>> net[0].weight_bits, net[0].activation_bits, net[0].scaled_sign
    (1, 1, False)
    """
    return dorefa_model(model, weight_bits=1, activation_bits=1, gradient_bits=FLOAT_BITS,
                        scaled_sign=False)
