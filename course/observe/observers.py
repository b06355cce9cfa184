"""Observers: watch the values a tensor takes during calibration, then choose its qparams.

Every observer has ``update(x)`` (called once per batch with a float tensor), ``range()``
(the ``(lo, hi)`` it would quantize, floats) and ``qparams(num_bits=8, symmetric=False)``
(``(scale, zero_point)`` in ``course.quant``'s conventions: asymmetric = unsigned range
``[0, 2**b - 1]`` via ``affine_qparams``; symmetric = restricted signed range, zero point
0, via ``symmetric_scale``). An observer that has seen nothing raises ``RuntimeError``.

* :class:`MinMaxObserver` — the smallest and largest value ever seen.
* :class:`MovingAverageMinMaxObserver` — exponential moving average of each batch's
  min and max (less sensitive to one outlier batch).
* :class:`PercentileObserver` — the mean over batches of each batch's low and high
  percentiles (clips rare outliers).
* :class:`MSEObserver` — the clipping range, among shrunk versions of the min/max range,
  whose fake quantization has the smallest mean squared error on a sample of the values.

>>> obs = MinMaxObserver()
>>> obs.update(torch.tensor([-1.0, 0.5])); obs.update(torch.tensor([3.0]))
>>> obs.range(), obs.qparams(8)
((-1.0, 3.0), (0.01568627450980392, 64))
"""

from __future__ import annotations

import math
import numbers

import torch

from course.quant import affine_qparams, dequantize, qrange, quantize, symmetric_scale

DEFAULT_BITS = 8
AVERAGING_CONSTANT = 0.01
"""Weight of the newest batch in :class:`MovingAverageMinMaxObserver` (PyTorch's default)."""

PERCENTILE = 99.99
"""Default high percentile of :class:`PercentileObserver` (the low one is 100 - it)."""

QUANTILE_MAX_ELEMENTS = 2**24
"""``torch.quantile`` refuses larger inputs: bigger batches are subsampled with a stride."""

MSE_SAMPLES_PER_BATCH = 4096
"""Values kept per batch by :class:`MSEObserver` (an evenly strided sample)."""

MSE_GRID = 100
"""Candidate clipping ranges tried by :class:`MSEObserver`: fractions 1/100 ... 100/100."""


def _as_values(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError("x is empty: nothing to observe")
    values = x.detach().reshape(-1)
    if not torch.isfinite(values).all():
        raise ValueError("x contains NaN or infinite values")
    return values


def _check_bits_symmetric(num_bits: object, symmetric: object) -> tuple[int, bool]:
    if isinstance(num_bits, bool) or not isinstance(num_bits, numbers.Integral):
        raise TypeError(f"num_bits must be an int, got {type(num_bits).__name__}")
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    return int(num_bits), symmetric


class Observer:
    """Base class: subclasses implement ``update`` and ``range``."""

    def __init__(self) -> None:
        self.batches = 0

    def update(self, x: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def range(self) -> tuple[float, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _require_data(self) -> None:
        if self.batches == 0:
            raise RuntimeError(f"{type(self).__name__} has seen no data: call update(x) "
                               "(calibrate the model) before asking for qparams")

    def qparams(self, num_bits: int = DEFAULT_BITS, symmetric: bool = False) -> tuple[float, int]:
        """``(scale, zero_point)`` for :meth:`range` (see the module doc for conventions)."""
        bits, symmetric = _check_bits_symmetric(num_bits, symmetric)
        lo, hi = self.range()
        if symmetric:
            return symmetric_scale(max(abs(lo), abs(hi)), bits), 0
        return affine_qparams(lo, hi, bits)

    def __repr__(self) -> str:
        if self.batches == 0:
            return f"{type(self).__name__}(no data)"
        lo, hi = self.range()
        return f"{type(self).__name__}(range=({lo:.4g}, {hi:.4g}), batches={self.batches})"


class MinMaxObserver(Observer):
    """Range = the smallest and largest value seen over all batches."""

    def __init__(self) -> None:
        super().__init__()
        self.min_val = math.inf
        self.max_val = -math.inf

    def update(self, x: torch.Tensor) -> None:
        lo, hi = torch.aminmax(_as_values(x))
        self.min_val = min(self.min_val, lo.item())
        self.max_val = max(self.max_val, hi.item())
        self.batches += 1

    def range(self) -> tuple[float, float]:
        self._require_data()
        return self.min_val, self.max_val


class MovingAverageMinMaxObserver(Observer):
    """Range = exponential moving averages of the per-batch min and max.

    The first batch sets them; batch ``t`` then moves each by ``averaging_constant`` of
    the way to its own value: ``min <- min + c * (batch_min - min)``.

    >>> obs = MovingAverageMinMaxObserver(averaging_constant=0.5)
    >>> obs.update(torch.tensor([0.0, 4.0])); obs.update(torch.tensor([0.0, 2.0]))
    >>> obs.range()
    (0.0, 3.0)
    """

    def __init__(self, averaging_constant: float = AVERAGING_CONSTANT) -> None:
        super().__init__()
        if isinstance(averaging_constant, bool) or not isinstance(averaging_constant,
                                                                  numbers.Real):
            raise TypeError(f"averaging_constant must be a number, got "
                            f"{type(averaging_constant).__name__}")
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must lie in (0, 1], got {averaging_constant}")
        self.averaging_constant = float(averaging_constant)
        self.min_val = 0.0
        self.max_val = 0.0

    def update(self, x: torch.Tensor) -> None:
        lo, hi = (v.item() for v in torch.aminmax(_as_values(x)))
        if self.batches == 0:
            self.min_val, self.max_val = lo, hi
        else:
            c = self.averaging_constant
            self.min_val += c * (lo - self.min_val)
            self.max_val += c * (hi - self.max_val)
        self.batches += 1

    def range(self) -> tuple[float, float]:
        self._require_data()
        return self.min_val, self.max_val


class PercentileObserver(Observer):
    """Range = mean over batches of each batch's ``100 - p`` and ``p`` percentiles.

    >>> obs = PercentileObserver(percentile=90.0)
    >>> obs.update(torch.arange(11, dtype=torch.float32))
    >>> [round(v, 6) for v in obs.range()]
    [1.0, 9.0]
    """

    def __init__(self, percentile: float = PERCENTILE) -> None:
        super().__init__()
        if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real):
            raise TypeError(f"percentile must be a number, got {type(percentile).__name__}")
        if not 50 < percentile <= 100:
            raise ValueError(f"percentile must lie in (50, 100], got {percentile}")
        self.percentile = float(percentile)
        self._lo_sum = 0.0
        self._hi_sum = 0.0

    def update(self, x: torch.Tensor) -> None:
        values = _as_values(x).to(torch.float64)
        if values.numel() > QUANTILE_MAX_ELEMENTS:
            values = values[:: math.ceil(values.numel() / QUANTILE_MAX_ELEMENTS)]
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100],
                         dtype=torch.float64)
        lo, hi = torch.quantile(values, q).tolist()
        self._lo_sum += lo
        self._hi_sum += hi
        self.batches += 1

    def range(self) -> tuple[float, float]:
        self._require_data()
        return self._lo_sum / self.batches, self._hi_sum / self.batches


class MSEObserver(Observer):
    """Range minimizing the fake-quantization MSE on a sample of the observed values.

    Keeps the exact min/max and an evenly strided sample of each batch (at most
    ``samples_per_batch`` values). ``qparams(b, symmetric)`` tries range ends shrunk by
    ``k / MSE_GRID`` for ``k = 1 .. MSE_GRID`` (the full range included), fake-quantizes
    the sample with each, and keeps the one with the smallest mean squared
    error (``max`` first with ``min`` fixed, then ``min``; symmetric: ``max |x|``); ties
    go to the wider range. ``range()`` is that choice for 8-bit asymmetric.

    >>> obs = MSEObserver()
    >>> obs.update(torch.cat([torch.linspace(0, 1, 4000), torch.tensor([8.0])]))
    >>> lo, hi = obs.range()
    >>> lo, 1.0 < hi < 8.0
    (0.0, True)
    """

    def __init__(self, samples_per_batch: int = MSE_SAMPLES_PER_BATCH) -> None:
        super().__init__()
        if isinstance(samples_per_batch, bool) or not isinstance(samples_per_batch,
                                                                 numbers.Integral):
            raise TypeError(f"samples_per_batch must be an int, got "
                            f"{type(samples_per_batch).__name__}")
        if samples_per_batch < 1:
            raise ValueError(f"samples_per_batch must be at least 1, got {samples_per_batch}")
        self.samples_per_batch = int(samples_per_batch)
        self.min_val = math.inf
        self.max_val = -math.inf
        self._samples: list[torch.Tensor] = []

    def update(self, x: torch.Tensor) -> None:
        values = _as_values(x)
        lo, hi = torch.aminmax(values)
        self.min_val = min(self.min_val, lo.item())
        self.max_val = max(self.max_val, hi.item())
        step = math.ceil(values.numel() / self.samples_per_batch)
        self._samples.append(values[::step].to(torch.float32).clone())
        self.batches += 1

    def _error(self, sample: torch.Tensor, lo: float, hi: float, bits: int,
               symmetric: bool) -> float:
        if symmetric:
            scale, zp = symmetric_scale(max(abs(lo), abs(hi)), bits), 0
            qmin, qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        else:
            scale, zp = affine_qparams(lo, hi, bits)
            qmin, qmax = qrange(bits, signed=False)
        codes = quantize(sample, scale, zp, qmin, qmax)
        return torch.mean((dequantize(codes, scale, zp) - sample) ** 2).item()

    def _search(self, bits: int, symmetric: bool) -> tuple[float, float]:
        """Shrink ``max`` with ``min`` fixed, then ``min`` with the best ``max``.

        Symmetric ranges shrink both ends together (only ``max |x|`` matters).
        """
        sample = torch.cat(self._samples)
        fractions = [k / MSE_GRID for k in range(MSE_GRID, 0, -1)]  # widest first
        lo, hi = self.min_val, self.max_val
        if symmetric:
            errors = [self._error(sample, lo * f, hi * f, bits, True) for f in fractions]
            f = fractions[errors.index(min(errors))]
            return lo * f, hi * f
        errors = [self._error(sample, lo, hi * f, bits, False) for f in fractions]
        hi *= fractions[errors.index(min(errors))]
        errors = [self._error(sample, lo * f, hi, bits, False) for f in fractions]
        lo *= fractions[errors.index(min(errors))]
        return lo, hi

    def range(self) -> tuple[float, float]:
        self._require_data()
        return self._search(DEFAULT_BITS, symmetric=False)

    def qparams(self, num_bits: int = DEFAULT_BITS, symmetric: bool = False) -> tuple[float, int]:
        bits, symmetric = _check_bits_symmetric(num_bits, symmetric)
        self._require_data()
        lo, hi = self._search(bits, symmetric)
        if symmetric:
            return symmetric_scale(max(abs(lo), abs(hi)), bits), 0
        return affine_qparams(lo, hi, bits)


OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}
"""The observers by short name (what ``calibrate`` and the conversions accept as a string)."""
