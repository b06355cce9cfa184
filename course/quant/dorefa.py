"""DoReFa-Net (Zhou et al., 2016): k-bit weights, activations and gradients.

All three use ``quantize_k``: a value in [0, 1] rounded to the nearest of the ``2^k``
levels ``i / (2^k - 1)``, with a straight-through (identity) gradient for the rounding.
A bit width of :data:`FLOAT_BITS` (32) means "not quantized", as in the paper's tables.

* **weights** (:func:`quantize_weights`), k bits:
  ``2 * quantize_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1`` — values in [-1, 1]; the max is
  over the whole tensor and is differentiated normally. With 1 bit:
  ``sign(w) * E(|w|)`` (per tensor), gradient passed straight through (identity),
  ``E(|w|)`` a constant.
* **activations** (:func:`quantize_activations`), k bits: ``quantize_k(clip(x, 0, 1))``;
  the gradient is 0 where the clip is active (outside [0, 1]).
* **gradients** (:func:`quantize_gradients`), k bits, in the backward pass only (the
  forward pass is the identity). For the incoming gradient ``dr``, with
  ``m = max|dr|`` over all axes but the first (one per sample):

      dr_q = 2m * (quantize_k(dr / (2m) + 1/2 + N(k)) - 1/2),   N(k) = sigma / (2^k - 1),

  ``sigma ~ Uniform(-1/2, 1/2)``: stochastic rounding, so ``E[dr_q] = dr`` — the gradient
  is unbiased on average.

Layers :class:`DoReFaLinear` / :class:`DoReFaConv2d` quantize their weight, optionally
their input (``activation_bits``) and the gradient flowing back out of their output
(``gradient_bits``); :class:`DoReFaActivation` is the clip-and-quantize activation used
instead of ReLU between layers. :func:`dorefa_model` converts a whole model.

>>> quantize_k(torch.tensor([0.0, 0.2, 0.5, 1.0]), 2)     # levels 0, 1/3, 2/3, 1
tensor([0.0000, 0.3333, 0.6667, 1.0000])
>>> quantize_activations(torch.tensor([-1.0, 0.4, 2.0]), 1)
tensor([0., 0., 1.])
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from course.quant._checks import check_float_tensor
from course.quant.binary import sign
from course.quant.swap import check_layer_names, like, replace_module

FLOAT_BITS = 32
"""Bit width that means "keep float" (no quantization), DoReFa's convention."""

MAX_QUANT_BITS = 16
"""Largest bit width that is actually quantized (2^16 levels); 17 to 31 are refused."""


def _check_bits(bits: object, name: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(bits).__name__} {bits!r}")
    bits = int(bits)
    if not (1 <= bits <= MAX_QUANT_BITS or bits == FLOAT_BITS):
        raise ValueError(f"{name} must be between 1 and {MAX_QUANT_BITS}, or {FLOAT_BITS} "
                         f"for float; got {bits}")
    return bits


class _QuantizeK(torch.autograd.Function):
    """``round(x * levels) / levels`` (half to even) forward, identity gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: int) -> torch.Tensor:
        return torch.round(x * levels) / levels

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _SignTimesMeanAbs(torch.autograd.Function):
    """``sign(w) * mean|w|`` (sign(0) = +1) forward, identity gradient backward."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        return sign(w) * w.abs().mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def quantize_k(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``round(x * n) / n`` with ``n = 2^bits - 1``, straight-through gradient (identity).

    ``x``: float tensor with values in [0, 1] (not checked: callers clip or normalise
    first); same shape and dtype out. Rounds half to even.
    """
    x = check_float_tensor(x, "x")
    bits = _check_bits(bits, "bits")
    if bits == FLOAT_BITS:
        return x
    return _QuantizeK.apply(x, 2**bits - 1)


def quantize_weights(w: torch.Tensor, bits: int, *, scaled_sign: bool = True) -> torch.Tensor:
    """DoReFa's weight quantizer (see the module doc); same shape and dtype as ``w``.

    ``bits=1``: ``sign(w) * mean|w|`` (sign(0) = +1), identity gradient — the paper's 1-bit
    rule. With ``scaled_sign=False`` the k-bit formula below is used at 1 bit too, as Larq's
    ``DoReFa(k_bit=1, mode="weights")`` does (the lecture's hands-on): unscaled ``-1`` / ``+1``
    (``w = 0`` gives ``-1``: the rounding is half to even), gradient through ``tanh``.
    ``2 <= bits <= 16``: values ``2i / (2^bits - 1) - 1``; gradient through ``tanh`` and the
    normalisation, straight through the rounding. ``bits=32``: ``w`` unchanged.

    >>> quantize_weights(torch.tensor([-2.0, 0.0, 1.0]), 1)
    tensor([-1.,  1.,  1.])
    >>> quantize_weights(torch.tensor([-2.0, 0.0, 1.0]), 1, scaled_sign=False)
    tensor([-1., -1.,  1.])
    """
    w = check_float_tensor(w, "w")
    bits = _check_bits(bits, "bits")
    if not isinstance(scaled_sign, bool):
        raise TypeError(f"scaled_sign must be a bool, got {type(scaled_sign).__name__}")
    if w.numel() == 0:
        raise ValueError("w must not be empty")
    if bits == FLOAT_BITS:
        return w
    if bits == 1 and scaled_sign:
        return _SignTimesMeanAbs.apply(w)
    t = torch.tanh(w)
    normalised = t / (2 * t.abs().max()) + 0.5
    return 2 * quantize_k(normalised, bits) - 1


def quantize_activations(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``quantize_k(clip(x, 0, 1))``: values ``i / (2^bits - 1)`` in [0, 1]; gradient 0
    where ``x`` is outside [0, 1]. ``bits=32``: the clip only."""
    x = check_float_tensor(x, "x")
    bits = _check_bits(bits, "bits")
    return quantize_k(torch.clamp(x, 0.0, 1.0), bits)


class _GradientQuantize(torch.autograd.Function):
    """Identity forward; DoReFa's stochastic k-bit quantization of the gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int,
                generator: torch.Generator | None) -> torch.Tensor:
        ctx.bits = bits
        ctx.generator = generator
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return stochastic_quantize_gradient(grad, ctx.bits, ctx.generator), None, None


def stochastic_quantize_gradient(grad: torch.Tensor, bits: int,
                                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The gradient quantizer itself (used in the backward pass of
    :func:`quantize_gradients`): ``2m * (quantize_k(grad / 2m + 1/2 + N(k)) - 1/2)``.

    ``m = max|grad|`` per sample (over all axes but the first; over the whole tensor for a
    0-d or 1-d gradient); rows whose max is 0 stay 0. The noise ``N(k)`` is
    ``Uniform(-1/2, 1/2) / (2^k - 1)`` drawn with ``generator`` (torch's default when
    None). Unbiased: ``E[result] = grad``. Values lie on the grid ``2m (i/n - 1/2)``.
    """
    grad = check_float_tensor(grad, "grad")
    bits = _check_bits(bits, "bits")
    if bits == FLOAT_BITS or grad.numel() == 0:
        return grad
    if grad.dim() >= 2:
        m = grad.abs().amax(dim=tuple(range(1, grad.dim())), keepdim=True)
    else:
        m = grad.abs().max()
    safe_m = torch.where(m > 0, m, torch.ones_like(m))
    levels = 2**bits - 1
    noise = torch.rand(grad.shape, generator=generator, dtype=grad.dtype,
                       device=grad.device) - 0.5
    position = (grad / (2 * safe_m) + 0.5) * levels + noise  # in [-1/2, levels + 1/2]
    quantized = torch.clamp(torch.round(position), 0, levels) / levels
    return torch.where(m > 0, 2 * safe_m * (quantized - 0.5), torch.zeros_like(grad))


def quantize_gradients(x: torch.Tensor, bits: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Identity in the forward pass; in the backward pass the gradient arriving at ``x`` is
    replaced by :func:`stochastic_quantize_gradient` of it (``bits=32``: unchanged).

    >>> x = torch.tensor([[0.3, -0.1]], requires_grad=True)
    >>> quantize_gradients(x, 4).equal(x)
    True
    """
    x = check_float_tensor(x, "x")
    bits = _check_bits(bits, "bits")
    if bits == FLOAT_BITS:
        return x
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return _GradientQuantize.apply(x, bits, generator)


# ----------------------------------------------------------------------------- layers


class DoReFaActivation(nn.Module):
    """``quantize_activations(x, bits)``: clip to [0, 1], then k bits (32: clip only)."""

    def __init__(self, bits: int = FLOAT_BITS) -> None:
        super().__init__()
        self.bits = _check_bits(bits, "bits")

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
        self.weight_bits = _check_bits(weight_bits, "weight_bits")
        self.activation_bits = (None if activation_bits is None
                                else _check_bits(activation_bits, "activation_bits"))
        self.gradient_bits = _check_bits(gradient_bits, "gradient_bits")

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


# ----------------------------------------------------------------------------- whole models


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
    ``scaled_sign`` chooses the 1-bit weight rule (see :func:`quantize_weights`).

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
    bits = {"weight_bits": _check_bits(weight_bits, "weight_bits"),
            "gradient_bits": _check_bits(gradient_bits, "gradient_bits"),
            "scaled_sign": scaled_sign}
    activation_bits = _check_bits(activation_bits, "activation_bits")
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
