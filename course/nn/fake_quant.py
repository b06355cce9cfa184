"""``FakeQuantize``: an ``nn.Module`` that simulates b-bit quantization during training.

In training mode (and while its observer is enabled) the module first *observes* its
input and updates its qparams, then fake-quantizes with the straight-through estimator of
:mod:`course.quant.ste`; in eval mode, or once the observer is frozen, the qparams stay as
they are. Two granularities, the usual choice for quantization-aware training:

* **activations** (:meth:`FakeQuantize.for_activations`): per tensor, asymmetric, unsigned
  range ``[0, 2**b - 1]`` with a zero point. The range comes from an observer of
  :mod:`course.observe.observers`, by default the moving average of each batch's min and max
  (:class:`course.observe.MovingAverageMinMaxObserver`: the first batch sets it, each later
  batch moves it by ``AVERAGING_CONSTANT`` = 1% of the way).
* **weights** (:meth:`FakeQuantize.for_weights`): per output channel (axis 0), symmetric,
  restricted signed range ``[-(2**(b-1) - 1), 2**(b-1) - 1]``, zero point 0; the scale is
  ``course.quant.per_channel_scale`` of the weight as it is now (weights are known
  exactly, there is nothing to average).

The qparams in use are buffers (``scale``, ``zero_point``; ``batches`` counts updates), so
they travel with ``state_dict()`` and are what a conversion to integers reads. An observer
object itself is not part of the state dict: after loading, observing starts afresh.

Bit widths below 2 are refused: a 1-bit affine grid is {0, s} (asymmetric) or {0}
(restricted symmetric), not a useful quantizer; use ``course.quant.binarize`` for 1 bit.

>>> fq = FakeQuantize.for_activations(4)
>>> _ = fq.train()(torch.tensor([0.0, 1.5, 3.0]))     # observe: range [0, 3]
>>> scale, zero_point = fq.qparams(); round(scale, 6), zero_point
(0.2, 0)
>>> fq.eval()(torch.tensor([0.33, 3.5]))              # eval: qparams unchanged, clamp at 3
tensor([0.4000, 3.0000])
"""

from __future__ import annotations

import torch
from torch import nn

from course.observe.calibration import ObserverFactory, make_observer_factory
from course.observe.observers import Observer
from course.quant.affine import per_channel_scale, qrange
from course.quant.checks import check_bits, check_float_tensor
from course.quant.granularity import Granularity, PerChannel, PerTensor
from course.quant.ste import FakeQuantizeSTE

MIN_BITS = 2
"""Fewest bits an affine fake quantizer accepts (see the module doc)."""

ACTIVATION_OBSERVER = "moving_average"
"""Default observer of activation fake quantizers (a name in ``course.observe.OBSERVERS``)."""

WEIGHT_AXIS = 0
"""Output-channel axis of Linear ``[out, in]`` and Conv2d ``[out, in, kh, kw]`` weights."""


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_fake_quant_bits(num_bits: object, name: str = "num_bits") -> int:
    """``num_bits`` as an int in [MIN_BITS, 16]; the message says what to use for 1 bit."""
    try:
        return check_bits(num_bits, name, minimum=MIN_BITS)
    except ValueError as err:
        raise ValueError(f"{err}: an affine fake quantizer needs at least {MIN_BITS} bits "
                         "(for 1 bit use course.quant.binarize or course.quant.xnor)") from None


class FakeQuantize(nn.Module):
    """Observe (in training mode), then fake-quantize with a straight-through gradient.

    Args:
        num_bits: bit width, 2 to 16.
        symmetric: restricted signed range, zero point 0 (required per channel); else the
            unsigned range ``[0, 2**b - 1]`` with a zero point.
        axis: ``None`` (or :class:`~course.quant.granularity.PerTensor`) for one scale per
            tensor, or the channel axis (an int or a
            :class:`~course.quant.granularity.PerChannel`) for one scale per slice
            (symmetric only; the input must then have the same channel count every call).
        observer: per tensor only — a ``course.methods.ptq`` observer class, a factory returning
            one, or a name (``"moving_average"`` by default, ``"minmax"``, ...).

    ``forward(x)``: float tensor in, same shape and dtype out. Raises ``RuntimeError`` when
    asked to quantize before any observation (call it in training mode first, or
    calibrate). Switches: :meth:`enable_observer`, :meth:`enable_fake_quant`.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    batches: torch.Tensor

    def __init__(self, num_bits: int = 8, symmetric: bool = False,
                 axis: int | Granularity | None = None,
                 observer: ObserverFactory | None = None) -> None:
        super().__init__()
        self.num_bits = check_fake_quant_bits(num_bits)
        self.symmetric = _check_flag(symmetric, "symmetric")
        if isinstance(axis, PerTensor | PerChannel):
            axis = axis.axis if isinstance(axis, PerChannel) else None
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise TypeError(f"axis must be an int or None, got {type(axis).__name__}")
        if axis is not None and not symmetric:
            raise ValueError("per-channel fake quantization (axis given) is symmetric only: "
                             "pass symmetric=True")
        if axis is not None and observer is not None:
            raise ValueError("observer applies per tensor only: a per-channel quantizer "
                             "takes the scale from the tensor's own per-channel max |x|")
        self.axis = axis
        if axis is None:
            self._factory = make_observer_factory(observer or ACTIVATION_OBSERVER)
        else:
            self._factory = None
        self.observer: Observer | None = self._new_observer()
        if symmetric:
            qmax = 2 ** (self.num_bits - 1) - 1
            self.qmin, self.qmax = -qmax, qmax
        else:
            self.qmin, self.qmax = qrange(self.num_bits, signed=False)
        self.observer_enabled = True
        self.fake_quant_enabled = True
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int64))
        self.register_buffer("batches", torch.zeros((), dtype=torch.int64))

    @classmethod
    def for_activations(cls, num_bits: int = 8,
                        observer: ObserverFactory | None = None) -> FakeQuantize:
        """Per-tensor asymmetric quantizer (moving-average min/max by default)."""
        return cls(num_bits, symmetric=False, axis=None, observer=observer)

    @classmethod
    def for_weights(cls, num_bits: int = 8) -> FakeQuantize:
        """Per-output-channel symmetric quantizer (axis 0)."""
        return cls(num_bits, symmetric=True, axis=WEIGHT_AXIS)

    def _new_observer(self) -> Observer | None:
        if self._factory is None:
            return None
        obs = self._factory()
        if not isinstance(obs, Observer):
            raise TypeError(f"observer must make a course.observe Observer, got "
                            f"{type(obs).__name__}")
        return obs

    # ------------------------------------------------------------------ switches

    def enable_observer(self, enabled: bool = True) -> FakeQuantize:
        """Let training-mode calls update the qparams (``False`` freezes them)."""
        self.observer_enabled = _check_flag(enabled, "enabled")
        return self

    def enable_fake_quant(self, enabled: bool = True) -> FakeQuantize:
        """Quantize (``True``) or pass the input through unchanged (``False``)."""
        self.fake_quant_enabled = _check_flag(enabled, "enabled")
        return self

    def reset(self) -> FakeQuantize:
        """Forget everything observed (a fresh observer; the next update sets the range)."""
        self.observer = self._new_observer()
        self.batches.zero_()
        return self

    # ------------------------------------------------------------------ qparams

    @property
    def observed(self) -> bool:
        """Whether the qparams come from at least one observation."""
        return bool(self.batches.item() > 0)

    def qparams(self) -> tuple[float, int] | tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` in use: a float and an int per tensor, or two ``[C]``
        tensors (float32, int64) per channel. ``RuntimeError`` before any observation."""
        self._require_observed()
        if self.axis is None:
            return float(self.scale.item()), int(self.zero_point.item())
        return self.scale.clone(), self.zero_point.clone()

    def _require_observed(self) -> None:
        if not self.observed:
            raise RuntimeError("FakeQuantize has observed nothing: run it in training mode "
                               "(or calibrate the model) before quantizing or reading qparams")

    def observe(self, x: torch.Tensor) -> None:
        """Update the qparams from ``x`` (what a training-mode call does first)."""
        x = check_float_tensor(x, "x").detach()
        if self.axis is None:
            assert self.observer is not None
            self.observer.update(x)
            scale, zero_point = self.observer.qparams(self.num_bits, self.symmetric)
            self.scale.fill_(scale)
            self.zero_point.fill_(zero_point)
        else:
            scale = per_channel_scale(x, self.num_bits, self.axis).reshape(-1)
            if self.scale.shape != scale.shape:
                self.scale = torch.empty_like(scale)
                self.zero_point = torch.zeros(scale.shape, dtype=torch.int64,
                                              device=scale.device)
            self.scale.copy_(scale)
        self.batches += 1

    def _broadcast(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not -x.dim() <= self.axis < x.dim():
            raise ValueError(f"axis {self.axis} is out of range for x of shape "
                             f"{tuple(x.shape)}")
        axis = self.axis % x.dim()
        if x.shape[axis] != t.numel():
            raise ValueError(f"x has {x.shape[axis]} channels on axis {self.axis}, the "
                             f"quantizer's scale has {t.numel()}")
        shape = [1] * x.dim()
        shape[axis] = -1
        return t.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_float_tensor(x, "x")
        if self.training and self.observer_enabled:
            self.observe(x)
        if not self.fake_quant_enabled:
            return x
        self._require_observed()
        if self.axis is None:
            return FakeQuantizeSTE.apply(x, self.scale, self.zero_point, self.qmin, self.qmax)
        scale = self._broadcast(self.scale, x)
        return FakeQuantizeSTE.apply(x, scale, 0, self.qmin, self.qmax)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Per-channel qparams have the shape of the channels they were observed on.
        for name in ("scale", "zero_point"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def granularity(self) -> Granularity:
        """``PerTensor()`` or ``PerChannel(axis)``."""
        return PerTensor() if self.axis is None else PerChannel(self.axis)

    def extra_repr(self) -> str:
        kind = str(self.granularity)
        sym = "symmetric" if self.symmetric else "asymmetric"
        observer = type(self.observer).__name__ if self.observer is not None else "absmax"
        return (f"num_bits={self.num_bits}, {kind}, {sym}, qrange=({self.qmin}, {self.qmax}), "
                f"observer={observer}, observer_enabled={self.observer_enabled}, "
                f"fake_quant_enabled={self.fake_quant_enabled}")


def fake_quantizers(model: nn.Module) -> list[FakeQuantize]:
    """Every :class:`FakeQuantize` inside ``model`` (in ``modules()`` order)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, FakeQuantize)]


def freeze_observers(model: nn.Module, frozen: bool = True) -> int:
    """Freeze (or, with ``frozen=False``, unfreeze) every observer in ``model``.

    Returns how many fake quantizers were switched; ``ValueError`` if there is none.
    """
    _check_flag(frozen, "frozen")
    found = fake_quantizers(model)
    if not found:
        raise ValueError("model has no FakeQuantize module (prepare it for QAT first)")
    for fq in found:
        fq.enable_observer(not frozen)
    return len(found)


def enable_fake_quant(model: nn.Module, enabled: bool = True) -> int:
    """Switch fake quantization on or off in every :class:`FakeQuantize` of ``model``.

    Returns how many were switched; ``ValueError`` if there is none.
    """
    _check_flag(enabled, "enabled")
    found = fake_quantizers(model)
    if not found:
        raise ValueError("model has no FakeQuantize module (prepare it for QAT first)")
    for fq in found:
        fq.enable_fake_quant(enabled)
    return len(found)
