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

The layers are in :mod:`course.nn.dorefa`, the whole-model transforms in
:mod:`course.methods.dorefa`.

>>> quantize_k(torch.tensor([0.0, 0.2, 0.5, 1.0]), 2)     # levels 0, 1/3, 2/3, 1
tensor([0.0000, 0.3333, 0.6667, 1.0000])
>>> quantize_activations(torch.tensor([-1.0, 0.4, 2.0]), 1)
tensor([0., 0., 1.])
"""

from __future__ import annotations

import torch

from course.quant.checks import check_bits_or_float, check_float_tensor
from course.quant.ste import QuantizeKSTE, SignTimesMeanAbsSTE

FLOAT_BITS = 32
"""Bit width that means "keep float" (no quantization), DoReFa's convention."""

MAX_QUANT_BITS = 16
"""Largest bit width that is actually quantized (2^16 levels); 17 to 31 are refused."""

def check_dorefa_bits(bits: object, name: str = "bits") -> int:
    """A DoReFa bit width: 1 to :data:`MAX_QUANT_BITS`, or :data:`FLOAT_BITS` for float."""
    return check_bits_or_float(bits, name, maximum=MAX_QUANT_BITS, float_bits=FLOAT_BITS)


def quantize_k(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``round(x * n) / n`` with ``n = 2^bits - 1``, straight-through gradient (identity).

    ``x``: float tensor with values in [0, 1] (not checked: callers clip or normalise
    first); same shape and dtype out. Rounds half to even.
    """
    x = check_float_tensor(x, "x")
    bits = check_dorefa_bits(bits, "bits")
    if bits == FLOAT_BITS:
        return x
    return QuantizeKSTE.apply(x, 2**bits - 1)


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
    bits = check_dorefa_bits(bits, "bits")
    if not isinstance(scaled_sign, bool):
        raise TypeError(f"scaled_sign must be a bool, got {type(scaled_sign).__name__}")
    if w.numel() == 0:
        raise ValueError("w must not be empty")
    if bits == FLOAT_BITS:
        return w
    if bits == 1 and scaled_sign:
        return SignTimesMeanAbsSTE.apply(w)
    t = torch.tanh(w)
    normalised = t / (2 * t.abs().max()) + 0.5
    return 2 * quantize_k(normalised, bits) - 1


def quantize_activations(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``quantize_k(clip(x, 0, 1))``: values ``i / (2^bits - 1)`` in [0, 1]; gradient 0
    where ``x`` is outside [0, 1]. ``bits=32``: the clip only."""
    x = check_float_tensor(x, "x")
    bits = check_dorefa_bits(bits, "bits")
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
    bits = check_dorefa_bits(bits, "bits")
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
    bits = check_dorefa_bits(bits, "bits")
    if bits == FLOAT_BITS:
        return x
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return _GradientQuantize.apply(x, bits, generator)
