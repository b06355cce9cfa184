"""Quantization-aware training (QAT): fake-quantized fine-tuning, then integer conversion.

The recipe (Jacob et al., 2018; Krishnamoorthi, 2018):

1. :func:`prepare_qat` turns a trained float ``nn.Sequential`` (the course's MLP or CNN,
   anything :func:`course.ptq.plan_model` accepts) into a :class:`QATModel`: an input
   fake quantizer, then each Linear / Conv2d as a :class:`QATLinear` / :class:`QATConv2d`
   that carries its batch norm and ReLU and fake-quantizes its (folded) weight per output
   channel and its output per tensor (:class:`course.quant.fake_quant.FakeQuantize`).
2. :func:`train_qat` fine-tunes it a few epochs: the forward pass sees b-bit values, the
   backward pass float32 gradients through the straight-through estimator. Observers and
   batch-norm statistics can be frozen after some epochs.
3. :func:`convert` builds the integer-only :class:`course.ptq.IntegerModel` of lab02 with
   exactly the qparams the QAT model used: int8 x int8 -> int32 kernels throughout.

**Batch norm in QAT** (the "folded" training graph). Inference folds BN into the layer:
``w_fold = w * k`` with ``k = gamma / sqrt(running_var + eps)`` per output channel and
``b_fold = (b - running_mean) * k + beta``; that folded weight is what gets quantized, so
QAT must quantize it too. While BN statistics are live (training mode, not frozen) the
layer computes ``bn(layer(x, Q(w * k)) / k + b)``: the weight is quantized as it will be
folded, and dividing by ``k`` hands batch norm the unscaled output, which it normalizes
with the batch statistics (and updates its running ones). Once frozen, or in eval mode,
the layer *is* the folded layer: ``layer(x, Q(w_fold)) + b_fold``.

**Bit widths.** ``bits`` applies to every weight and to the activations between layers;
the model input and the final logits keep :data:`IO_BITS` = 8 (a 2-bit image or 2-bit
logits would change the task, not the network). The integer model stores int8 codes
throughout; for ``bits < 8`` they are restricted to the b-bit range: weights in
``[-(2**(b-1) - 1), 2**(b-1) - 1]``, activations in ``[-128, -128 + 2**b - 1]`` (the
unsigned b-bit codes moved by -128), enforced by an :class:`IntClamp` after each layer.

**Post-training quantization at the same bit widths** is the same model without the
fine-tuning: ``prepare_qat(model, bits, observer="minmax")`` then :func:`calibrate_qat`
(observers watch float activations, as ``course.ptq.calibrate`` does).

>>> from course.models import MLP
>>> qat = prepare_qat(MLP().eval(), 4)
>>> calibrate_qat(qat, [torch.rand(8, 1, 28, 28)])
1
>>> int_model = convert(qat)
>>> int_model(torch.rand(2, 1, 28, 28)).shape, int(int_model.fc1.weight.abs().max()) <= 7
(torch.Size([2, 10]), True)
"""

from __future__ import annotations

import copy
import numbers
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from course.ptq.calibration import ObserverFactory, batch_inputs
from course.ptq.folding import FOLDABLE
from course.ptq.integer_layers import (
    DequantizeOutput,
    IntConv2d,
    IntegerModel,
    IntFlatten,
    IntLinear,
    IntMaxPool2d,
    IntModule,
    IntReLU,
    QuantizeInput,
)
from course.ptq.plan import NO_OPS, plan_model
from course.quant.fake_quant import (
    ACTIVATION_OBSERVER,
    FakeQuantize,
    check_fake_quant_bits,
    enable_fake_quant,
    fake_quantizers,
    freeze_observers,
)
from course.quant.swap import like
from course.train import TRAIN_THREADS, History, train_model

IO_BITS = 8
"""Bits of the model input and of the final logits, whatever the layers' bit width."""

INT8_MIN, INT8_MAX = -128, 127
UNSIGNED_TO_SIGNED = 128
"""Unsigned b-bit activation codes ``[0, 2**b - 1]`` are stored as int8 minus 128."""

__all__ = [
    "IO_BITS", "IntClamp", "QATConv2d", "QATLinear", "QATModel", "QATRecipe", "bias_codes",
    "bias_ste", "calibrate_qat", "convert", "enable_fake_quant", "fold_scale",
    "folded_parameters", "freeze_bn_stats", "freeze_observers", "prepare_qat", "qat_layers",
    "train_qat",
]

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
    (the running statistics are constants). ``course.ptq.fold_batch_norm`` is the same map
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


# --------------------------------------------------------------------------- QAT layers


class _RoundSTE(torch.autograd.Function):
    """``round(x)`` (half to even) forward, identity gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def bias_codes(bias: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``round(bias / scale)`` in float32 (half to even): the int32 bias of the integer
    model, ``scale = input_scale * weight_scale[C]``. Float out, differentiable (STE)."""
    return _RoundSTE.apply(bias / scale)


def bias_ste(bias: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """The bias on the grid ``scale`` of its int32 codes, straight-through gradient."""
    return bias_codes(bias, scale) * scale


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
        (:class:`QATModel` passes it), to put the bias on the int32 grid of the integer
        model, ``input_scale * weight_scale``. Not with live batch statistics: there the
        folded bias changes every batch."""
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


# --------------------------------------------------------------------------- the model


class QATModel(nn.Sequential):
    """A float model prepared for QAT: ``quantize`` (input fake quantizer), then the
    original layers by name (QAT layers with their batch norm and ReLU fused in; pools,
    flattens, standalone ReLUs as they were). Input and output as the float model's.

    ``weight_bits`` / ``activation_bits``: the bit widths it simulates. ``input_shape``:
    the per-sample shape of the last input seen (what :func:`convert` traces with).
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


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules of nested ``nn.Sequential``s, names joined with ``_`` (as course.ptq)."""
    out = []
    for name, child in module.named_children():
        if type(child) is nn.Sequential:
            out.extend(_leaves(child, f"{prefix}{name}_"))
        else:
            out.append((f"{prefix}{name}", child))
    return out


def prepare_qat(model: nn.Module, bits: int, activation_bits: int | None = None,
                observer: ObserverFactory = ACTIVATION_OBSERVER) -> QATModel:
    """A :class:`QATModel` copy of the float ``model``, in training mode; ``model`` is not
    modified.

    Args:
        model: a float ``nn.Sequential`` that :func:`course.ptq.plan_model` accepts (Linear /
            Conv2d, each optionally followed by its BatchNorm and ReLU; MaxPool2d, Flatten).
            Dropout and Identity are left out.
        bits: weight bit width (2 to 8), per output channel, symmetric.
        activation_bits: bit width of the activations between layers (default ``bits``);
            the input and the logits keep :data:`IO_BITS`.
        observer: activation observer (a ``course.ptq`` name, class or factory):
            ``"moving_average"`` for QAT, ``"minmax"`` to mirror ``course.ptq``'s PTQ.

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
    leaves = [(n, m) for n, m in _leaves(model) if not isinstance(m, NO_OPS)]
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


def _check_qat_model(model: object) -> QATModel:
    if not isinstance(model, QATModel):
        raise TypeError(f"model must be a QATModel from prepare_qat, got "
                        f"{type(model).__name__}")
    return model


def calibrate_qat(model: QATModel, loader: Iterable[Any],
                  num_batches: int | None = None) -> int:
    """Set every quantizer's qparams from ``loader``'s batches, without training.

    The model runs in eval mode (batch norms with running statistics), fake quantization
    off, observers on: each sees the float values, as in ``course.ptq.calibrate``. Modes
    and switches are restored afterwards. Returns the number of batches used.
    """
    model = _check_qat_model(model)
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


@dataclass(frozen=True)
class QATRecipe:
    """How :func:`train_qat` fine-tunes: Adam, learning rate ``lr * lr_decay**epoch``.

    ``freeze_bn_epoch``: batch statistics frozen from that epoch on (0 = from the start,
    the folded layer of inference trained directly; ``None`` = never).
    ``freeze_observers_epoch``: qparams frozen from that epoch on (``None`` = never).
    The defaults were chosen on the course's MLP and CNN (see the lab03 results).
    """

    epochs: int = 5
    lr: float = 1e-3
    lr_decay: float = 0.5
    freeze_bn_epoch: int | None = 0
    freeze_observers_epoch: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, numbers.Integral) \
                or self.epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")
        for name in ("lr", "lr_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not 0 < value <= (1 if name == "lr_decay" else float("inf")):
                raise ValueError(f"{name} must be a number in "
                                 f"{'(0, 1]' if name == 'lr_decay' else '(0, inf)'}, "
                                 f"got {value!r}")
        for name in ("freeze_bn_epoch", "freeze_observers_epoch"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, numbers.Integral) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based)."""
        return float(self.lr * self.lr_decay**epoch)


def train_qat(model: QATModel, loader: Iterable[Any], recipe: QATRecipe | None = None,
              seed: int = 0, progress: bool = True) -> History:
    """Fine-tune a :class:`QATModel` in place with ``recipe`` (default :class:`QATRecipe`).

    Each epoch is one ``course.train.train_model`` call (Adam on cross-entropy, at the
    epoch's learning rate, seed ``seed + epoch``; the optimizer state starts afresh each
    epoch, the loader's shuffling continues); the freezing switches act at the start of
    their epoch. Training uses ``course.train.TRAIN_THREADS`` CPU threads (restored
    afterwards), like ``trained_model``: the same result on every machine. The model is
    left in **eval mode** — a training-mode call would let the observers move again.
    Returns the per-epoch :class:`course.train.History`.
    """
    model = _check_qat_model(model)
    recipe = QATRecipe() if recipe is None else recipe
    if not isinstance(recipe, QATRecipe):
        raise TypeError(f"recipe must be a QATRecipe, got {type(recipe).__name__}")
    losses: list[float] = []
    accuracies: list[float] = []
    seconds, device = 0.0, "cpu"
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        for epoch in range(recipe.epochs):
            if recipe.freeze_bn_epoch == epoch:
                freeze_bn_stats(model)
            if recipe.freeze_observers_epoch == epoch:
                freeze_observers(model)
            history = train_model(model, loader, epochs=1, lr=recipe.lr_at(epoch),
                                  seed=seed + epoch, progress=progress)
            losses += history.losses
            accuracies += history.accuracies
            seconds += history.seconds
            device = history.device
    finally:
        torch.set_num_threads(threads)
        model.eval()
    return History(tuple(losses), tuple(accuracies), seconds, device)


# --------------------------------------------------------------------------- conversion


class IntClamp(IntModule):
    """Clamp int8 codes to ``[qmin, qmax]``: restricts a layer's output to b-bit codes.

    ``scale`` / ``zero_point`` are the codes' qparams (for the float twin, which clamps
    the dequantized values to ``[(qmin - z) s, (qmax - z) s]``).
    """

    def __init__(self, qmin: int, qmax: int, scale: float, zero_point: int) -> None:
        super().__init__()
        if not INT8_MIN <= qmin < qmax <= INT8_MAX:
            raise ValueError(f"need -128 <= qmin < qmax <= 127, got [{qmin}, {qmax}]")
        self._scalar("qmin", qmin, torch.int32)
        self._scalar("qmax", qmax, torch.int32)
        self._scalar("scale", scale, torch.float64)
        self._scalar("zero_point", zero_point, torch.int32)
        self.refresh()

    def refresh(self) -> None:
        self._qmin, self._qmax = int(self.qmin), int(self.qmax)
        s, z = float(self.scale), int(self.zero_point)
        self._lo, self._hi = (self._qmin - z) * s, (self._qmax - z) * s

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if not isinstance(q, torch.Tensor) or q.dtype != torch.int8:
            raise TypeError(f"q must be an int8 tensor, got {getattr(q, 'dtype', type(q))}")
        return torch.clamp(q, self._qmin, self._qmax)

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self._lo, self._hi)

    def extra_repr(self) -> str:
        return f"qmin={self._qmin}, qmax={self._qmax}"


def _int8_qparams(fq: FakeQuantize, what: str) -> tuple[float, int]:
    if not fq.observed:
        raise ValueError(f"{what} was never observed: train or calibrate the QAT model first")
    scale, zero_point = fq.qparams()
    return scale, zero_point - UNSIGNED_TO_SIGNED


def _clamp_for(fq: FakeQuantize, qparams: tuple[float, int]) -> IntClamp | None:
    """An IntClamp to the b-bit codes of ``fq``, or None when they fill int8."""
    lo, hi = fq.qmin - UNSIGNED_TO_SIGNED, fq.qmax - UNSIGNED_TO_SIGNED
    if (lo, hi) == (INT8_MIN, INT8_MAX):
        return None
    return IntClamp(lo, hi, *qparams)


def _flatten_input_shapes(model: QATModel) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every Flatten, traced with one zero batch in eval mode."""
    if model.input_shape is None:
        raise ValueError("the QAT model has never run: train or calibrate it first")
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_children():
        if isinstance(module, nn.Flatten):
            def hook(_m: nn.Module, args: Any, name: str = name) -> None:
                shapes[name] = tuple(args[0].shape[1:])
            handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *model.input_shape)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


def _int_layer(layer: QATLinear | QATConv2d, in_qparams: tuple[float, int],
               out_qparams: tuple[float, int], layout: tuple[int, ...] | None,
               pool: nn.MaxPool2d | None) -> IntLinear | IntConv2d:
    with torch.no_grad():
        w, b = layer.folded_parameters()
        fq = layer.weight_fake_quant
        scale = fq.scale.view((-1,) + (1,) * (w.dim() - 1))
        codes = torch.clamp(torch.round(w / scale), fq.qmin, fq.qmax).to(torch.int8)
        s_w = fq.scale.to(torch.float32)
        bias_q = (torch.zeros(w.shape[0]) if b is None
                  else bias_codes(b, torch.tensor(in_qparams[0], dtype=torch.float32) * s_w))
    if bias_q.abs().max() > 2**31 - 1:
        raise ValueError("a quantized bias does not fit int32 (tiny weights, large bias)")
    bias_q = bias_q.to(torch.int32)
    if isinstance(layer, QATLinear):
        if layout is not None and len(layout) == 3:
            c, h, wd = layout
            codes = codes.reshape(-1, c, h, wd).permute(0, 2, 3, 1).reshape(codes.shape[0], -1)
        return IntLinear(codes, s_w, bias_q, in_qparams, out_qparams, layer.relu)
    pool_args = None
    if pool is not None:
        k = nn.modules.utils._pair(pool.kernel_size)
        pool_args = (tuple(k), tuple(nn.modules.utils._pair(pool.stride or k)))
    return IntConv2d(codes.permute(0, 2, 3, 1), s_w, bias_q, in_qparams, out_qparams,
                     layer.relu, tuple(layer.stride), tuple(layer.padding), pool_args)


def convert(model: QATModel) -> IntegerModel:
    """The integer-only model (``course.ptq.IntegerModel``) computing what ``model`` does
    in eval mode: the same qparams, the same integer weight codes (folded weights), an
    int32 bias ``round(b_fold / (s_in * s_w))``, int8 activations restricted to the b-bit
    codes. ``model`` must have been trained or calibrated; it is not modified.
    """
    model = _check_qat_model(model)
    flatten_shapes = _flatten_input_shapes(model)
    children = list(model.named_children())
    name, first = children[0]
    qparams = _int8_qparams(first, "the model input")
    modules: OrderedDict[str, nn.Module] = OrderedDict(quantize=QuantizeInput(*qparams))
    clamp = _clamp_for(first, qparams)
    if clamp is not None:
        modules["quantize_clamp"] = clamp
    layout: tuple[int, ...] | None = None
    i = 1
    while i < len(children):
        name, module = children[i]
        if isinstance(module, QATLinear | QATConv2d):
            if module.output_fake_quant is None:
                raise ValueError(f"layer {name!r} has no output quantizer")
            out_qparams = _int8_qparams(module.output_fake_quant, f"layer {name!r}")
            pool = None
            if (isinstance(module, QATConv2d) and i + 1 < len(children)
                    and type(children[i + 1][1]) is nn.MaxPool2d):
                pool = children[i + 1][1]
                i += 1
            modules[name] = _int_layer(module, qparams, out_qparams, layout, pool)
            clamp = _clamp_for(module.output_fake_quant, out_qparams)
            if clamp is not None:
                modules[f"{name}_clamp"] = clamp
            qparams, layout = out_qparams, None
        elif type(module) is nn.MaxPool2d:
            modules[name] = IntMaxPool2d.from_float(module)
        elif type(module) is nn.Flatten:
            layout = flatten_shapes.get(name)
            modules[name] = IntFlatten()
        elif type(module) is nn.ReLU:
            modules[name] = IntReLU(qparams[1])
        else:
            raise ValueError(f"cannot convert module {name!r} ({type(module).__name__})")
        i += 1
    modules["dequantize"] = DequantizeOutput(*qparams)
    return IntegerModel(modules).eval()
