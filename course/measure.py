"""Measuring what quantization buys and costs: bytes stored, latency, error (MSE, SQNR),
and how much an accuracy measured on a finite test set can be trusted (``accuracy_interval``).

Sizes count the bytes the tensors actually occupy (an int8 tensor is 1 byte per element, a
packed binary tensor its packed bytes), never "parameters x 4". Latency is the median of
repeated wall-clock runs after warm-up. Errors are computed in float64.

>>> import torch
>>> tensor_bytes(torch.zeros(10, dtype=torch.int8))
10
>>> round(sqnr_db(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0])), 2)
13.98
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from course.quant.checks import check_int

BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
"""Units of ``format_bytes``: powers of 1024."""

BYTES_PER_UNIT = 1024


# ----------------------------------------------------------------------------- sizes


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes the elements of ``t`` occupy: ``t.numel() * t.element_size()``.

    float32 4 bytes per element, float16/bfloat16 2, int8/uint8/qint8 1, int64 8; a tensor
    of bits packed 64 to a uint64 word counts 8 bytes per word.

    >>> tensor_bytes(torch.zeros(3, 4))
    48
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    return t.numel() * t.element_size()


def _tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Tensors inside a state-dict value: a tensor, or tuples/lists/dicts of them (the packed
    parameters of PyTorch's quantized layers are tuples). Other values (dtypes, numbers)
    hold no tensor storage and yield nothing."""
    if isinstance(value, torch.Tensor):
        yield value
        if value.is_quantized and value.qscheme() in (torch.per_channel_affine,
                                                      torch.per_channel_symmetric,
                                                      torch.per_channel_affine_float_qparams):
            # A per-channel quantized tensor also stores one scale and zero point per channel.
            yield value.q_per_channel_scales()
            yield value.q_per_channel_zero_points()
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors_in(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors_in(item)


def _byte_interval(t: torch.Tensor) -> tuple[int, int]:
    """Byte range ``[start, stop)`` of ``t``'s elements inside its storage."""
    size = t.element_size()
    start = t.storage_offset() * size
    if t.is_contiguous():
        return start, start + t.numel() * size
    span = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True))
    return start, start + span * size


def model_size_bytes(model_or_state_dict: nn.Module | Mapping[str, Any]) -> int:
    """Bytes stored by a model's state dict: parameters AND buffers, as actually stored.

    Each tensor counts ``numel * element_size`` (int8 1 byte per element, float16 2, packed
    integer words their real size). Tensors that share storage (tied weights, views) count
    the bytes they cover once. Tuples inside the state dict (the packed parameters of
    PyTorch's quantized layers) are opened; a per-channel quantized tensor adds its scales
    and zero points. Python numbers and dtypes in the state dict count nothing.

    Accepts an ``nn.Module`` (its ``state_dict()``) or a mapping name -> tensor.

    >>> model_size_bytes(torch.nn.Linear(3, 2))  # (6 weights + 2 biases) * 4 bytes
    32
    """
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        state = model_or_state_dict
    else:
        raise TypeError("model_or_state_dict must be an nn.Module or a mapping of name -> "
                        f"tensor, got {type(model_or_state_dict).__name__}")
    # Group byte ranges by storage so that shared storage is counted once.
    intervals: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for t in _tensors_in(dict(state)):
        if t.numel() == 0:
            continue
        if t.is_sparse or t.layout != torch.strided:
            raise ValueError(f"model_size_bytes counts strided (dense) tensors; got a tensor "
                             f"with layout {t.layout}")
        storage = t.untyped_storage()
        key = (t.device.type, t.device.index, storage.data_ptr(), storage.nbytes())
        if storage.data_ptr() == 0:  # meta tensors or storage-less tensors: no identity
            key = ("tensor", id(t))
        intervals.setdefault(key, []).append(_byte_interval(t))
    total = 0
    for ranges in intervals.values():
        ranges.sort()
        stop = -1
        for lo, hi in ranges:
            if lo >= stop:
                total += hi - lo
                stop = hi
            elif hi > stop:
                total += hi - stop
                stop = hi
    return total


def format_bytes(n: int) -> str:
    """Human-readable byte count in powers of 1024, two decimals above 1 KiB.

    >>> format_bytes(512), format_bytes(1536), format_bytes(3 * 1024**2)
    ('512 B', '1.50 KiB', '3.00 MiB')
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int number of bytes, got {type(n).__name__}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if n < BYTES_PER_UNIT:
        return f"{n} B"
    value = float(n)
    unit = 0
    while value >= BYTES_PER_UNIT and unit < len(BYTE_UNITS) - 1:
        value /= BYTES_PER_UNIT
        unit += 1
    return f"{value:.2f} {BYTE_UNITS[unit]}"


# ----------------------------------------------------------------------------- errors


def _as_float64(x: Any, name: str) -> np.ndarray:
    """``x`` (torch tensor or numpy array) as a float64 numpy array, checked finite."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_quantized:
            t = t.dequantize()
        if t.is_complex():
            raise TypeError(f"{name} must be real, got dtype {t.dtype}")
        arr = t.cpu().to(torch.float64).numpy()
    elif isinstance(x, np.ndarray):
        if np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        arr = x.astype(np.float64)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, "
                        f"got {type(x).__name__}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _pair(x: Any, y: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_float64(x, names[0]), _as_float64(y, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                         f"{a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty")
    return a, b


def mse(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Mean squared error ``mean((x - y)^2)``, computed in float64.

    ``x`` and ``y``: tensors or numpy arrays of the same shape, any real dtype.

    >>> mse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
    2.0
    """
    a, b = _pair(x, y, ("x", "y"))
    return float(np.mean((a - b) ** 2))


def sqnr_db(x: torch.Tensor | np.ndarray, x_hat: torch.Tensor | np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum x^2 / sum (x - x_hat)^2)``.

    Computed in float64. ``+inf`` when ``x_hat`` equals ``x`` exactly; ``-inf`` when ``x`` is
    all zeros but ``x_hat`` is not. ``x`` (the reference) and ``x_hat`` (its quantized
    version): tensors or numpy arrays of the same shape. Each extra bit of a uniform
    quantizer adds about 6.02 dB.

    >>> sqnr_db(torch.ones(4), torch.ones(4))
    inf
    """
    a, b = _pair(x, x_hat, ("x", "x_hat"))
    signal = float(np.sum(a * a))
    noise = float(np.sum((a - b) ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# ----------------------------------------------------------------------------- accuracy
Z_95 = 1.959963984540054
"""The two-sided 95 % quantile of the standard normal distribution."""


def accuracy_interval(accuracy: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of an accuracy measured on ``n`` test samples (95 % default).

    ``accuracy`` in [0, 1] (the fraction correct, as ``course.train.evaluate`` returns);
    the interval is in [0, 1] too. On 1,000 images around 96 % it is about +-1.2 points: two
    models whose intervals overlap are not shown to differ by the measurement.

    >>> lo, hi = accuracy_interval(0.96, 1000)
    >>> round(lo, 4), round(hi, 4)
    (0.946, 0.9705)
    """
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) \
            or not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")
    n = check_int(n, "n", 1)
    if not isinstance(z, (int, float)) or not z > 0:
        raise ValueError(f"z must be a positive number, got {z!r}")
    z2 = z * z
    centre = (accuracy + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def format_accuracy(accuracy: float, n: int) -> str:
    """``"96.00 % [94.60, 97.05]"``: the accuracy with its 95 % Wilson interval, in %."""
    lo, hi = accuracy_interval(accuracy, n)
    return f"{100 * accuracy:.2f} % [{100 * lo:.2f}, {100 * hi:.2f}]"


# ----------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class Timing:
    """Wall-clock latency of ``repeats`` calls after ``warmup`` untimed ones (seconds).

    ``median_s`` is the number to report; ``p25_s`` / ``p75_s`` (quartiles) show the spread.
    """

    median_s: float
    p25_s: float
    p75_s: float
    repeats: int
    warmup: int

    def __str__(self) -> str:
        scale, unit = _time_unit(self.median_s)
        return (f"{self.median_s * scale:.3g} {unit} median "
                f"(IQR {self.p25_s * scale:.3g}-{self.p75_s * scale:.3g} {unit}, "
                f"{self.repeats} runs)")


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 1.0:
        return 1.0, "s"
    if seconds >= 1e-3:
        return 1e3, "ms"
    return 1e6, "us"


def _synchronize() -> None:
    """Wait for queued CUDA work, so that a timer measures the work and not its launch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def latency(fn: Callable[..., Any], *args: Any, warmup: int = 3, repeats: int = 20,
            **kwargs: Any) -> Timing:
    """Time ``fn(*args, **kwargs)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Each call is timed with ``time.perf_counter``; when CUDA is in use the device is
    synchronized before and after each call. Gradients are the caller's choice: wrap the
    call in ``torch.no_grad()`` (or time a function that does) to measure inference.

    >>> t = latency(torch.matmul, torch.ones(64, 64), torch.ones(64, 64), repeats=5)
    >>> t.repeats, t.median_s > 0
    (5, True)
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    warmup = check_int(warmup, "warmup", 0)
    repeats = check_int(repeats, "repeats", 1)
    for _ in range(warmup):
        fn(*args, **kwargs)
    _synchronize()
    samples = []
    for _ in range(repeats):
        _synchronize()
        start = time.perf_counter()
        fn(*args, **kwargs)
        _synchronize()
        samples.append(time.perf_counter() - start)
    if repeats == 1:
        p25 = p75 = samples[0]
    else:
        p25, _, p75 = statistics.quantiles(samples, n=4, method="inclusive")
    return Timing(median_s=statistics.median(samples), p25_s=p25, p75_s=p75,
                  repeats=repeats, warmup=warmup)


def speedup(baseline: Timing, candidate: Timing) -> float:
    """How many times faster ``candidate`` is: ``baseline.median_s / candidate.median_s``.

    >>> speedup(Timing(2.0, 2.0, 2.0, 1, 0), Timing(0.5, 0.5, 0.5, 1, 0))
    4.0
    """
    for name, value in (("baseline", baseline), ("candidate", candidate)):
        if not isinstance(value, Timing):
            raise TypeError(f"{name} must be a Timing (from latency), got {type(value).__name__}")
    if not candidate.median_s > 0:
        raise ValueError(f"candidate.median_s must be positive, got {candidate.median_s}")
    return baseline.median_s / candidate.median_s


WARMUP = 3
"""Untimed calls before timing starts."""
REPEATS = 20
"""Timed calls (or rounds) by default."""


def compare_samples(fns: Mapping[str, Callable[[], object]], *, warmup: int = WARMUP,
                    repeats: int = REPEATS) -> dict[str, list[float]]:
    """Time several zero-argument functions round-robin; every sample (seconds) per name.

    Each round calls every function once, in order; ``warmup`` untimed rounds come first.
    Call under ``torch.no_grad()`` to time inference.

    >>> s = compare_samples({"a": lambda: None, "b": lambda: None}, repeats=3)
    >>> sorted(s), len(s["a"])
    (['a', 'b'], 3)
    """
    if not fns:
        raise ValueError("fns is empty: nothing to time")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"fns[{name!r}] must be callable, got {type(fn).__name__}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def timing(values: list[float], warmup: int = WARMUP) -> Timing:
    """Median and quartiles of timing samples (seconds) as a :class:`Timing`."""
    if not values:
        raise ValueError("no samples")
    if len(values) == 1:
        p25 = p75 = values[0]
    else:
        p25, _, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return Timing(median_s=statistics.median(values), p25_s=p25, p75_s=p75,
                  repeats=len(values), warmup=warmup)


def compare(fns: Mapping[str, Callable[[], object]], *, warmup: int = WARMUP,
            repeats: int = REPEATS) -> dict[str, Timing]:
    """:func:`compare_samples` summarized: one :class:`Timing` (median, quartiles) per name.

    >>> t = compare({"a": lambda: sum(range(100)), "b": lambda: sum(range(10))}, repeats=3)
    >>> sorted(t), t["a"].repeats
    (['a', 'b'], 3)
    """
    samples = compare_samples(fns, warmup=warmup, repeats=repeats)
    return {name: timing(values, warmup) for name, values in samples.items()}
