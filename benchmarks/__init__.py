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
both sides alike; the median of each side is reported (see :func:`course.measure.compare`,
re-exported here).
"""

from __future__ import annotations

import platform

import torch

from course.measure import WARMUP, compare, compare_samples, timing  # noqa: F401


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
    import numba

    from course.kernels import backend_report

    return {
        "threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "kernels": backend_report(),
    }
