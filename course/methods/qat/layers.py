"""The QAT layers: Linear / Conv2d with batch norm folded in, fake-quantized weight and output.

:class:`QATLinear` and :class:`QATConv2d` are built from a float layer with ``from_float``
and carry the layer's batch norm (optional) and ReLU (optional). The weight is
fake-quantized per output channel (symmetric, :meth:`FakeQuantize.for_weights`), the output
per tensor (asymmetric, :meth:`FakeQuantize.for_activations`).

**Batch-norm folding.** Inference folds a batch norm into the layer before it:
``w_fold = w * k`` with ``k = gamma / sqrt(running_var + eps)`` per output channel
(:func:`fold_scale`) and ``b_fold = (b - running_mean) * k + beta``
(:func:`folded_parameters`, float32 and differentiable in ``w``, ``b``, ``gamma``, ``beta``;
``course.nn.fold_batch_norm`` is the same map on modules, in float64). That folded weight
is what the integer model stores, so QAT quantizes it too.

**Batch norm in QAT** (the "folded" training graph). While BN statistics are live (training
mode, not frozen) the layer computes ``bn(layer(x, Q(w * k)) / k + b)``: the weight is
quantized as it will be folded, and dividing by ``k`` hands batch norm the unscaled output,
which it normalizes with the batch statistics (and updates its running ones). Once frozen,
or in eval mode, the layer *is* the folded layer: ``layer(x, Q(w_fold)) + b_fold``.

**The bias on the int32 grid.** The integer model stores the bias as int32 codes
``round(b_fold / (s_in * s_w[C]))`` (:func:`bias_codes`); when the input scale is known the
folded layer adds exactly that bias, :func:`bias_ste` (straight-through gradient).

>>> bn = nn.BatchNorm1d(2).eval()
>>> with torch.no_grad():
...     _ = bn.weight.copy_(torch.tensor([2.0, 3.0]))
...     _ = bn.running_var.fill_(4.0)
>>> fold_scale(bn).detach()  # gamma / sqrt(4 + 1e-5)
tensor([1.0000, 1.5000])
>>> layer = QATLinear.from_float(nn.Linear(4, 2), 4, bn, relu=True, output_bits=4)
>>> layer(torch.rand(3, 4)).shape, layer.weight_fake_quant.num_bits
(torch.Size([3, 2]), 4)
>>> bias_codes(torch.tensor([0.5, 1.5, 0.26]), 1.0)  # half to even
tensor([0., 2., 0.])
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from course.nn.fake_quant import ACTIVATION_OBSERVER, FakeQuantize
from course.nn.folding import FOLDABLE
from course.nn.swap import like
from course.observe.calibration import ObserverFactory
from course.quant.ste import RoundSTE

# --------------------------------------------------------------------------- folding


def fold_scale(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> torch.Tensor:
    """``k = gamma / sqrt(running_var + eps)``, shape ``[C]``, differentiable in ``gamma``."""
    if not isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d):
        raise TypeError(f"bn must be nn.BatchNorm1d or nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.running_var is None:
        raise ValueError("bn has no running statistics (track_running_stats=False): "
                         "nothing to fold")
    std = torch.sqrt(bn.running_var + bn.eps)
    return bn.weight / std if bn.weight is not None else 1.0 / std


def folded_parameters(weight: torch.Tensor, bias: torch.Tensor | None,
                      bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w * k, (b - running_mean) * k + beta)`` of a layer followed by ``bn`` (eval mode).

    ``weight`` ``[C, ...]`` (Linear ``[C, in]``, Conv2d ``[C, in, kh, kw]``), ``bias``
    ``[C]`` or ``None``; float32 out, differentiable in the weight, bias, gamma and beta
    (the running statistics are constants). ``course.nn.fold_batch_norm`` is the same map
    on modules, in float64, without gradients.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise ValueError("weight must be a tensor [C, ...] with at least 2 dimensions")
    if bn.num_features != weight.shape[0]:
        raise ValueError(f"bn has {bn.num_features} channels but the weight has "
                         f"{weight.shape[0]} outputs")
    k = fold_scale(bn)
    w = weight * k.view((-1,) + (1,) * (weight.dim() - 1))
    b = -bn.running_mean if bias is None else bias - bn.running_mean
    b = b * k
    return w, (b + bn.bias if bn.bias is not None else b)


# --------------------------------------------------------------------------- the bias grid


def bias_codes(bias: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``round(bias / scale)`` in float32 (half to even): the int32 bias of the integer
    model, ``scale = input_scale * weight_scale[C]``. Float out, differentiable (STE)."""
    return RoundSTE.apply(bias / scale)


def bias_ste(bias: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """The bias on the grid ``scale`` of its int32 codes, straight-through gradient."""
    return bias_codes(bias, scale) * scale


# --------------------------------------------------------------------------- the layers


class _QATLayer:
    """What QATLinear and QATConv2d share (mixed into the nn.Linear / nn.Conv2d subclass)."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    training: bool

    @classmethod
    def from_float(cls, layer: nn.Module, bits: int, bn: nn.Module | None = None,
                   relu: bool = False, output_bits: int | None = None,
                   observer: ObserverFactory = ACTIVATION_OBSERVER) -> Any:
        """A QAT copy of the float ``layer`` followed by ``bn`` (optional, copied) and a
        ReLU (``relu``): weights fake-quantized to ``bits`` per output channel, the output
        to ``output_bits`` per tensor (``None``: not quantized). ``layer`` and ``bn`` are
        not modified."""
        float_type = next(t for t, q in QAT_LAYERS.items() if issubclass(cls, q))
        if type(layer) is not float_type:
            raise TypeError(f"layer must be an nn.{float_type.__name__}, got "
                            f"{type(layer).__name__}")
        if bn is not None and type(bn) is not FOLDABLE[float_type]:
            raise TypeError(f"an {float_type.__name__} folds an "
                            f"{FOLDABLE[float_type].__name__}, got {type(bn).__name__}")
        qat = like(cls, layer)
        qat._setup(bits, copy.deepcopy(bn).to(layer.weight.device) if bn is not None else None,
                   relu, output_bits, observer)
        return qat.to(layer.weight.device)

    def _setup(self, bits: int, bn: nn.Module | None, relu: bool,
               output_bits: int | None, observer: ObserverFactory) -> None:
        self.bn = bn
        self.relu = bool(relu)
        self.bn_frozen = False
        self.weight_fake_quant = FakeQuantize.for_weights(bits)
        self.output_fake_quant = (None if output_bits is None else
                                  FakeQuantize.for_activations(output_bits, observer))
        with torch.no_grad():  # the weight is known: its quantizer starts from it
            self.weight_fake_quant.observe(self.folded_parameters()[0])

    def _op(self, x: torch.Tensor, w: torch.Tensor,
            b: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def folded_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The float weight and bias of inference (batch norm folded with running stats)."""
        if self.bn is None:
            return self.weight, self.bias
        return folded_parameters(self.weight, self.bias, self.bn)

    def freeze_bn_stats(self, frozen: bool = True) -> None:
        """Stop (or resume) batch statistics: frozen, training uses the folded layer."""
        if not isinstance(frozen, bool):
            raise TypeError(f"frozen must be a bool, got {type(frozen).__name__}")
        self.bn_frozen = frozen

    def forward(self, x: torch.Tensor, input_scale: torch.Tensor | float | None = None
                ) -> torch.Tensor:
        """``x``: the layer's input; ``input_scale``: its quantization scale, when known
        (:class:`course.methods.qat.QATModel` passes it), to put the bias on the int32 grid of the
        integer model, ``input_scale * weight_scale``. Not with live batch statistics:
        there the folded bias changes every batch."""
        if self.bn is not None and self.training and not self.bn_frozen:
            k = fold_scale(self.bn)
            w = self.weight * k.view((-1,) + (1,) * (self.weight.dim() - 1))
            y = self._op(x, self.weight_fake_quant(w), None)
            channel = (1, -1) + (1,) * (y.dim() - 2)
            y = y / k.view(channel)
            if self.bias is not None:
                y = y + self.bias.view(channel)
            y = self.bn(y)
        else:
            w, b = self.folded_parameters()
            w = self.weight_fake_quant(w)
            if b is not None and input_scale is not None:
                b = bias_ste(b, input_scale * self.weight_fake_quant.scale)
            y = self._op(x, w, b)
        if self.relu:
            y = F.relu(y)
        if self.output_fake_quant is not None:
            y = self.output_fake_quant(y)
        return y


class QATLinear(_QATLayer, nn.Linear):
    """``nn.Linear`` (+ optional BatchNorm1d and ReLU) with fake-quantized weight and output.

    Input ``[B, in_features]`` float32, output ``[B, out_features]``. Submodules:
    ``weight_fake_quant`` (per channel, symmetric), ``bn`` (or ``None``),
    ``output_fake_quant`` (per tensor, asymmetric, or ``None``). Build with
    :meth:`from_float`.
    """

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)


class QATConv2d(_QATLayer, nn.Conv2d):
    """``nn.Conv2d`` (+ optional BatchNorm2d and ReLU) with fake-quantized weight and output.

    Input ``[B, C_in, H, W]`` float32, output ``[B, C_out, H', W']``. Same submodules as
    :class:`QATLinear`; build with :meth:`from_float`.
    """

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return self._conv_forward(x, w, b)


QAT_LAYERS = {nn.Linear: QATLinear, nn.Conv2d: QATConv2d}
"""The QAT class of each float layer type that QAT quantizes."""
