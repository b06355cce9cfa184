"""Speed and size benchmarks of the course kernels: ratios measured side by side in one run.

Every ``benchmarks/bench_*.py`` module defines ``run() -> dict`` with the keys

* ``speedups``: ``{name: baseline_time / candidate_time}`` (medians, > 1 means faster);
* ``size_ratios``: ``{name: candidate_bytes / baseline_bytes}`` (< 1 means smaller);
* ``notes``: a list of strings (what was compared, which kernel path ran, misses);

and may add ``timings_ms``: ``{name: median milliseconds}`` for both sides of each ratio.
``python -m benchmarks`` (``make bench``) runs them all, merges the results into
``benchmarks/results.json`` with the machine's thread count, CPU capability and torch
version, and prints a table.

Both sides of a ratio are timed in the same run, *interleaved*: one call of each function in
turn, ``repeats`` times after ``warmup`` rounds, so that a change in the machine's load hits
both sides alike; the median of each side is reported (see :func:`compare`).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping

import torch

from course.measure import Timing

WARMUP = 3
REPEATS = 20


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


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, object]:
    """What the numbers depend on: threads, CPU, torch version, the int8 kernel paths."""
    from course.kernels import backend_report

    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "kernels": backend_report(),
    }
