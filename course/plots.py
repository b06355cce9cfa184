"""The labs' matplotlib figures: SQNR and accuracy vs bits, weight histograms, bar charts.

Each function builds and returns a ``matplotlib.figure.Figure`` without touching pyplot's
global state and never calls ``plt.show``: in a notebook, leave the figure as the cell's
last expression (or ``IPython.display.display(fig)``); in a script, ``fig.savefig(path)``.

>>> fig = plot_bars(["fp32", "int8"], [4.0, 1.0], ylabel="latency (ms)")
>>> len(fig.axes[0].patches)
2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

FIGSIZE = (6.4, 4.0)
"""Width and height (inches) of every figure."""

RULE_DB_PER_BIT = 6.02
"""Each bit of a uniform quantizer adds 20 log10(2) ~ 6.02 dB of SQNR."""

HISTOGRAM_BINS = 100
LEVEL_COLOR = "tab:red"
REFERENCE_COLOR = "0.4"
MARKS_LABEL = "quantized model"
"""Legend entry of the points ``plot_loss_curves`` marks (each is annotated with its label)."""


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    return fig, fig.add_subplot()


def _check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _numbers(values: Any, name: str, allow_missing: bool = False) -> np.ndarray:
    """A 1-D float array from a sequence of numbers (``None`` -> NaN when allowed)."""
    if isinstance(values, (torch.Tensor, np.ndarray)):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if v is None and allow_missing:
            out.append(math.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name}[{i}] must be a number, got {type(v).__name__}")
        out.append(float(v))
    return np.asarray(out, dtype=np.float64)


def _scalar(value: Any, name: str) -> float:
    """A finite float from a number or a one-element tensor/array."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if (value.numel() if isinstance(value, torch.Tensor) else value.size) != 1:
            raise ValueError(f"{name} must be a single number")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _series(by_label: Any, name: str, length: int, allow_missing: bool = False
            ) -> dict[str, np.ndarray]:
    if not isinstance(by_label, Mapping):
        raise TypeError(f"{name} must be a dict of label -> list of numbers, "
                        f"got {type(by_label).__name__}")
    out = {}
    for label, values in by_label.items():
        _check_str(label, f"{name} key")
        arr = _numbers(values, f"{name}[{label!r}]", allow_missing)
        if arr.shape[0] != length:
            raise ValueError(f"{name}[{label!r}] has {arr.shape[0]} values, expected {length} "
                             "(one per bit width)")
        out[label] = arr
    return out


def plot_sqnr_vs_bits(bits: Sequence[int], sqnr_by_label: Mapping[str, Sequence[float]],
                      rule_db_per_bit: float = RULE_DB_PER_BIT) -> Figure:
    """Measured SQNR (dB) against bit width, one line per label, and the dB-per-bit rule.

    ``bits``: the bit widths (x axis); ``sqnr_by_label``: label -> one SQNR per bit width
    (``inf`` values, from lossless cases, are left out of the line). The rule is a dashed
    line of slope ``rule_db_per_bit`` through the median offset of the measured points, so
    slopes can be compared by eye. Lines: one per label, then the rule.

    >>> fig = plot_sqnr_vs_bits([2, 4, 8], {"uniform": [12.0, 24.1, 48.2]})
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['uniform', '6.02 dB/bit rule']
    """
    x = _numbers(bits, "bits")
    if x.size == 0:
        raise ValueError("bits must not be empty")
    series = _series(sqnr_by_label, "sqnr_by_label", x.size)
    rule_db_per_bit = _scalar(rule_db_per_bit, "rule_db_per_bit")
    fig, ax = _figure()
    offsets = []
    for label, y in series.items():
        y = np.where(np.isfinite(y), y, np.nan)
        ax.plot(x, y, marker="o", label=label)
        offsets.extend((y - rule_db_per_bit * x)[np.isfinite(y)])
    offset = float(np.median(offsets)) if offsets else 0.0
    ax.plot(x, rule_db_per_bit * x + offset, linestyle="--", color=REFERENCE_COLOR,
            label=f"{rule_db_per_bit:g} dB/bit rule")
    ax.set_xlabel("bits")
    ax.set_ylabel("SQNR (dB)")
    ax.set_xticks(x)
    ax.set_title("Signal-to-quantization-noise ratio vs bit width")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def plot_accuracy_vs_bits(bits_labels: Sequence[Any], accuracies: Mapping[str, Sequence[float]],
                          float_accuracy: float,
                          reference: Mapping[str, Any] | None = None) -> Figure:
    """Accuracy against bit width, one line per method, with the float model as a line.

    ``bits_labels``: the x positions' labels in order (``[8, 6, 4, 3, 2, 1]`` or strings);
    ``accuracies``: method -> one accuracy in [0, 1] per bit width (``None`` = not run);
    ``float_accuracy``: the float model's accuracy, drawn as a horizontal dotted line;
    ``reference``: optional published figures drawn as star markers, label -> a list
    aligned with ``bits_labels`` (``None`` where missing) or a dict bits label -> accuracy.
    Lines, in order: one per method, the float line, one per reference label.

    >>> fig = plot_accuracy_vs_bits([8, 4, 1], {"direct": [0.97, 0.95, 0.52]}, 0.9776,
    ...                             reference={"lecture": {1: 0.5178}})
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['direct', 'float 97.8%', 'lecture']
    """
    if isinstance(bits_labels, (str, bytes)) or not isinstance(bits_labels, Sequence):
        raise TypeError(f"bits_labels must be a sequence, got {type(bits_labels).__name__}")
    ticks = [str(b) for b in bits_labels]
    if not ticks:
        raise ValueError("bits_labels must not be empty")
    x = np.arange(len(ticks), dtype=np.float64)
    series = _series(accuracies, "accuracies", len(ticks), allow_missing=True)
    float_acc = np.array([_scalar(float_accuracy, "float_accuracy")])
    refs: dict[str, np.ndarray] = {}
    if reference is not None:
        if not isinstance(reference, Mapping):
            raise TypeError(f"reference must be a dict or None, got {type(reference).__name__}")
        for label, values in reference.items():
            if isinstance(values, Mapping):
                unknown = [k for k in values if str(k) not in ticks]
                if unknown:
                    raise ValueError(f"reference[{label!r}] has bit widths {unknown} that are "
                                     f"not in bits_labels {ticks}")
                by_tick = {str(k): v for k, v in values.items()}
                values = [by_tick.get(t) for t in ticks]
            refs.update(_series({label: values}, "reference", len(ticks), allow_missing=True))
    for name, arr in [*series.items(), *refs.items(), ("float", float_acc)]:
        finite = arr[np.isfinite(arr)]
        if ((finite < 0) | (finite > 1)).any():
            raise ValueError(f"accuracies must be fractions in [0, 1]; {name!r} has "
                             f"{finite[(finite < 0) | (finite > 1)].tolist()}")
    fig, ax = _figure()
    for label, y in series.items():
        ax.plot(x, y, marker="o", label=label)
    ax.axhline(float_acc[0], linestyle=":", color="k", label=f"float {float_acc[0]:.1%}")
    for label, y in refs.items():
        ax.plot(x, y, linestyle="none", marker="*", markersize=12, label=label)
    ax.set_xticks(x, ticks)
    ax.set_xlabel("bits")
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_title("Accuracy vs bit width")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def plot_histogram_with_levels(w: torch.Tensor | np.ndarray, levels: Any = None,
                               title: str = "") -> Figure:
    """Histogram of the values of ``w`` (any shape, flattened) and, when given, the
    quantization ``levels`` (values a quantized weight can take) as vertical lines.

    Lines: one per level; bars: ``HISTOGRAM_BINS`` patches.

    >>> fig = plot_histogram_with_levels(torch.randn(1000), levels=[-1.0, 0.0, 1.0])
    >>> len(fig.axes[0].lines)
    3
    """
    if isinstance(w, torch.Tensor):
        values = w.detach().cpu()
        values = values.dequantize() if values.is_quantized else values
        values = values.to(torch.float64).flatten().numpy()
    elif isinstance(w, np.ndarray):
        values = np.asarray(w, dtype=np.float64).ravel()
    else:
        raise TypeError(f"w must be a torch.Tensor or numpy.ndarray, got {type(w).__name__}")
    if values.size == 0:
        raise ValueError("w must not be empty")
    if not np.isfinite(values).all():
        raise ValueError("w contains NaN or infinite values")
    lv = None if levels is None else _numbers(levels, "levels")
    _check_str(title, "title")
    fig, ax = _figure()
    ax.hist(values, bins=HISTOGRAM_BINS, color="tab:blue", alpha=0.8)
    if lv is not None:
        for i, level in enumerate(np.unique(lv)):
            ax.axvline(level, color=LEVEL_COLOR, linewidth=0.8, alpha=0.7,
                       label="quantization levels" if i == 0 else None)
        if lv.size:
            ax.legend()
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.set_title(title)
    return fig


def plot_bars(labels: Sequence[str], values: Sequence[float], ylabel: str,
              title: str = "") -> Figure:
    """A bar chart, each bar annotated with its value (e.g. latency per method).

    >>> fig = plot_bars(["fp32", "int8", "binary"], [10.0, 2.5, 0.8], "latency (ms)")
    >>> [float(p.get_height()) for p in fig.axes[0].patches]
    [10.0, 2.5, 0.8]
    """
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a sequence of str, got {type(labels).__name__}")
    names = [_check_str(label, "labels[i]") for label in labels]
    heights = _numbers(values, "values")
    if len(names) != heights.size:
        raise ValueError(f"labels and values must have the same length, got {len(names)} "
                         f"and {heights.size}")
    if not names:
        raise ValueError("labels must not be empty")
    _check_str(ylabel, "ylabel")
    _check_str(title, "title")
    fig, ax = _figure()
    bars = ax.bar(names, heights, color="tab:blue")
    ax.bar_label(bars, fmt="%.3g")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def plot_lines(x: Any, ys: Mapping[str, Any], xlabel: str = "", ylabel: str = "",
               title: str = "") -> Figure:
    """One line per entry of ``ys`` (label -> values, same length as ``x``) against ``x``
    (tensors, arrays or sequences of numbers), with a legend.

    >>> fig = plot_lines([0, 1, 2], {"a": [0, 1, 4], "b": [1, 1, 1]}, xlabel="x")
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['a', 'b']
    """
    xs = _numbers(x.tolist() if isinstance(x, (torch.Tensor, np.ndarray)) else x, "x")
    if xs.size == 0:
        raise ValueError("x must not be empty")
    if not isinstance(ys, Mapping) or not ys:
        raise TypeError("ys must be a non-empty dict of label -> values")
    series = _series({k: v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else v
                      for k, v in ys.items()}, "ys", xs.size)
    for name in (xlabel, ylabel, title):
        _check_str(name, "xlabel, ylabel and title")
    fig, ax = _figure()
    for label, values in series.items():
        ax.plot(xs, values, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_loss_curves(alphas: Sequence[float], curves: Mapping[str, Sequence[float]],
                     marks: Mapping[str, tuple[float, float]] | None = None,
                     title: str = "", log: bool = True) -> Figure:
    """Loss along directions: one line per entry of ``curves`` (label -> losses at
    ``alphas``), and a marker with its label for each entry of ``marks`` (label ->
    ``(alpha, loss)``), e.g. where the quantized model lands. ``log``: a log-scaled loss
    axis (losses must then be positive).

    >>> fig = plot_loss_curves([0, 1], {"a": [0.1, 0.5]}, marks={"4 bits": (1, 0.5)})
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['a', 'quantized model']
    >>> [t.get_text() for t in fig.axes[0].texts]
    ['4 bits']
    """
    xs = _numbers(alphas, "alphas")
    if xs.size == 0:
        raise ValueError("alphas must not be empty")
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError("curves must be a non-empty dict of label -> losses")
    series = _series(curves, "curves", xs.size)
    _check_str(title, "title")
    fig, ax = _figure()
    for label, values in series.items():
        ax.plot(xs, values, label=label)
    points = [(label, _scalar(p[0], f"marks[{label!r}][0]"), _scalar(p[1], f"marks[{label!r}][1]"))
              for label, p in (marks or {}).items()]
    if points:
        ax.plot([a for _, a, _ in points], [v for _, _, v in points], marker="o",
                linestyle="none", color=LEVEL_COLOR, label=MARKS_LABEL)
    for label, a, loss in points:
        ax.annotate(label, (a, loss), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("alpha (step along the direction)")
    ax.set_ylabel("mean cross-entropy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_loss_contour(alphas: Sequence[float], betas: Sequence[float], surface: Any,
                      points: Mapping[str, tuple[float, float]] | None = None,
                      title: str = "", xlabel: str = "alpha (direction 1)",
                      ylabel: str = "beta (direction 2)") -> Figure:
    """Contours of ``surface`` (``[len(betas), len(alphas)]``, e.g.
    ``course.landscape.loss_surface``) on a log scale, with a labelled marker per entry of
    ``points`` (label -> ``(alpha, beta)``).

    >>> fig = plot_loss_contour([0, 1], [0, 1], [[0.1, 0.2], [0.3, 0.4]], {"q": (0.5, 0.5)})
    >>> len(fig.axes) >= 1
    True
    """
    xs, ys = _numbers(alphas, "alphas"), _numbers(betas, "betas")
    grid = np.asarray(surface, dtype=np.float64)
    if grid.shape != (ys.size, xs.size):
        raise ValueError(f"surface must have shape [len(betas), len(alphas)] = "
                         f"[{ys.size}, {xs.size}], got {list(grid.shape)}")
    if not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError("surface must hold finite positive losses")
    for name in (title, xlabel, ylabel):
        _check_str(name, "title, xlabel and ylabel")
    fig, ax = _figure()
    levels = np.geomspace(grid.min(), grid.max(), 15) if grid.max() > grid.min() else None
    contours = ax.contour(xs, ys, grid, levels=levels, cmap="viridis")
    ax.clabel(contours, fontsize=7, fmt="%.3g")
    for label, (a, b) in (points or {}).items():
        ax.plot([a], [b], marker="o", color=LEVEL_COLOR, linestyle="none")
        ax.annotate(label, (a, b), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def plot_accuracy_vs_portion(portions: Sequence[float], accuracies: Mapping[str, Sequence[float]],
                             float_accuracy: float, title: str = "") -> Figure:
    """Accuracy against the accumulated portion of quantized weights (INQ), one line per
    label (e.g. per bit width), with the float model as a horizontal dotted line.

    ``portions``: fractions in [0, 1], increasing (drawn as percentages); ``accuracies``:
    label -> one accuracy in [0, 1] per portion.

    >>> fig = plot_accuracy_vs_portion([0.5, 1.0], {"5 bits": [0.97, 0.96]}, 0.975)
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['5 bits', 'float 97.5%']
    """
    xs = _numbers(portions, "portions")
    if xs.size == 0 or ((xs < 0) | (xs > 1)).any() or (np.diff(xs) <= 0).any():
        raise ValueError(f"portions must be increasing fractions in [0, 1], got {xs.tolist()}")
    series = _series(accuracies, "accuracies", xs.size)
    float_acc = _scalar(float_accuracy, "float_accuracy")
    for name, arr in [*series.items(), ("float_accuracy", np.array([float_acc]))]:
        if ((arr < 0) | (arr > 1)).any():
            raise ValueError(f"accuracies must be fractions in [0, 1]; {name!r} has "
                             f"{arr.tolist()}")
    _check_str(title, "title")
    fig, ax = _figure()
    for label, y in series.items():
        ax.plot(100 * xs, y, marker="o", label=label)
    ax.axhline(float_acc, linestyle=":", color="k", label=f"float {float_acc:.1%}")
    ax.set_xticks(100 * xs, [f"{100 * p:g} %" for p in xs])
    ax.set_xlabel("accumulated portion of quantized weights")
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_title(title or "INQ: accuracy as the quantized portion grows")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def plot_tradeoffs(rows: Sequence[Mapping[str, Any]], n_test: int, title: str = "") -> Figure:
    """Size, speed and accuracy of each mode, one group of bars per model: the PTQ table as a
    figure. Each row needs ``model``, ``mode``, ``size vs fp32``, ``speedup vs fp32`` and
    ``accuracy`` (a fraction); accuracies get 95 % intervals for ``n_test`` test images
    (``course.measure.accuracy_interval``), so differences inside them read as noise.

    >>> rows = [{"model": "mlp", "mode": m, "size vs fp32": s, "speedup vs fp32": v,
    ...          "accuracy": 0.95} for m, s, v in (("fp32", 1.0, 1.0), ("int8", 0.25, 2.0))]
    >>> [ax.get_ylabel() for ax in plot_tradeoffs(rows, 1000).axes]
    ['bytes vs fp32', 'speed vs fp32', 'test accuracy']
    """
    from course.measure import accuracy_interval

    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty sequence of dicts")
    keys = ("model", "mode", "size vs fp32", "speedup vs fp32", "accuracy")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or any(k not in row for k in keys):
            raise ValueError(f"rows[{i}] must be a dict with keys {list(keys)}")
    _check_str(title, "title")
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    modes = list(dict.fromkeys(str(r["mode"]) for r in rows))
    table = {(str(r["model"]), str(r["mode"])): r for r in rows}
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    width = 0.8 / len(modes)
    xs = np.arange(len(models))
    for j, mode in enumerate(modes):
        present = [m for m in models if (m, mode) in table]
        pos = xs[[models.index(m) for m in present]] + (j - (len(modes) - 1) / 2) * width
        got = [table[m, mode] for m in present]
        axes[0].bar(pos, [r["size vs fp32"] for r in got], width, label=mode)
        axes[1].bar(pos, [r["speedup vs fp32"] for r in got], width, label=mode)
        acc = np.array([float(r["accuracy"]) for r in got])
        bounds = np.array([accuracy_interval(a, n_test) for a in acc]).reshape(-1, 2)
        axes[2].errorbar(pos, acc, yerr=[acc - bounds[:, 0], bounds[:, 1] - acc], fmt="o",
                         capsize=3, label=mode)
    for ax, label in zip(axes, ("bytes vs fp32", "speed vs fp32", "test accuracy"),
                         strict=True):
        ax.set_xticks(xs, models)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[1].axhline(1.0, color="k", linestyle=":")
    axes[2].yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axes[2].set_title(f"95 % intervals, {n_test} images", fontsize=9)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle(title or "Post-training quantization: size, speed, accuracy")
    return fig


def plot_grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[float]],
                      ylabel: str, title: str = "", *, stacked: bool = False,
                      log: bool = False) -> Figure:
    """Bars for each of ``groups`` (x axis), one bar per entry of ``series`` (label -> one
    value per group) side by side, or stacked on each other when ``stacked``; ``log``: a
    logarithmic y axis (latencies that span orders of magnitude).

    >>> fig = plot_grouped_bars(["batch 1", "batch 256"], {"fp32": [3.0, 300.0],
    ...                         "int8": [1.0, 40.0]}, "latency (ms)", log=True)
    >>> len(fig.axes[0].patches)
    4
    """
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or not groups:
        raise TypeError("groups must be a non-empty sequence of str")
    names = [_check_str(g, "groups[i]") for g in groups]
    values = _series(series, "series", len(names))
    if not values:
        raise ValueError("series must not be empty")
    _check_str(ylabel, "ylabel")
    _check_str(title, "title")
    fig, ax = _figure()
    x = np.arange(len(names), dtype=np.float64)
    width = 0.8 if stacked else 0.8 / len(values)
    bottom = np.zeros(len(names))
    for i, (label, heights) in enumerate(values.items()):
        offset = 0.0 if stacked else (i - (len(values) - 1) / 2) * width
        bars = ax.bar(x + offset, heights, width, bottom=bottom if stacked else None,
                      label=label)
        if not stacked:
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        if stacked:
            bottom = bottom + heights
    ax.set_xticks(x, names)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return fig
