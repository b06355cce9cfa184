"""DoReFa-Net layers (the quantizers are :mod:`course.quant.dorefa`'s).

:class:`DoReFaLinear` / :class:`DoReFaConv2d` quantize their weight, optionally their input
(``activation_bits``) and the gradient flowing back out of their output
(``gradient_bits``); :class:`DoReFaActivation` is the clip-and-quantize activation used
instead of ReLU between layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course.quant.dorefa import (
    FLOAT_BITS,
    check_dorefa_bits,
    quantize_activations,
    quantize_gradients,
    quantize_weights,
)


class DoReFaActivation(nn.Module):
    """``quantize_activations(x, bits)``: clip to [0, 1], then k bits (32: clip only)."""

    def __init__(self, bits: int = FLOAT_BITS) -> None:
        super().__init__()
        self.bits = check_dorefa_bits(bits, "bits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_activations(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class _DoReFaMixin:
    """Bit widths of a DoReFa layer and the forward pass shared by Linear and Conv2d."""

    weight_bits: int
    activation_bits: int | None
    gradient_bits: int

    scaled_sign: bool = True

    def _set_bits(self, weight_bits: int, activation_bits: int | None,
                  gradient_bits: int, scaled_sign: bool = True) -> None:
        if not isinstance(scaled_sign, bool):
            raise TypeError(f"scaled_sign must be a bool, got {type(scaled_sign).__name__}")
        self.scaled_sign = scaled_sign
        self.weight_bits = check_dorefa_bits(weight_bits, "weight_bits")
        self.activation_bits = (None if activation_bits is None
                                else check_dorefa_bits(activation_bits, "activation_bits"))
        self.gradient_bits = check_dorefa_bits(gradient_bits, "gradient_bits")

    def _quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_bits is None:
            return x
        return quantize_activations(x, self.activation_bits)

    def _quantized_weight(self) -> torch.Tensor:
        return quantize_weights(self.weight, self.weight_bits, scaled_sign=self.scaled_sign)

    def extra_repr(self) -> str:
        sign = "" if self.scaled_sign else ", scaled_sign=False"
        return (f"{super().extra_repr()}, weight_bits={self.weight_bits}, "
                f"activation_bits={self.activation_bits}, gradient_bits={self.gradient_bits}"
                f"{sign}")


class DoReFaLinear(_DoReFaMixin, nn.Linear):
    """``nn.Linear`` with DoReFa quantization (the float weight is kept for training).

    Forward: ``y = quantize_gradients(F.linear(a, quantize_weights(W, weight_bits), b),
    gradient_bits)`` where ``a = quantize_activations(x, activation_bits)``, or ``a = x``
    when ``activation_bits`` is None (a first layer, whose input is not an activation).
    The bias stays float.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 weight_bits: int = 1, activation_bits: int | None = None,
                 gradient_bits: int = FLOAT_BITS, scaled_sign: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._set_bits(weight_bits, activation_bits, gradient_bits, scaled_sign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(self._quantized_input(x), self._quantized_weight(), self.bias)
        return quantize_gradients(out, self.gradient_bits)


class DoReFaConv2d(_DoReFaMixin, nn.Conv2d):
    """``nn.Conv2d`` with DoReFa quantization; same rules as :class:`DoReFaLinear`.

    Takes ``nn.Conv2d``'s arguments, plus keyword-only ``weight_bits`` (default 1),
    ``activation_bits`` (default None: input not quantized) and ``gradient_bits``
    (default 32: float gradients).
    """

    def __init__(self, *args: object, weight_bits: int = 1, activation_bits: int | None = None,
                 gradient_bits: int = FLOAT_BITS, scaled_sign: bool = True,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._set_bits(weight_bits, activation_bits, gradient_bits, scaled_sign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv_forward(self._quantized_input(x), self._quantized_weight(), self.bias)
        return quantize_gradients(out, self.gradient_bits)
