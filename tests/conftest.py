"""Fixtures shared by several test files.

``idx_bytes``: an IDX writer independent of :mod:`course.idx`, used by ``test_idx.py`` (the
format itself) and ``test_download.py`` (the files a loopback server hands out).
``execute_solution``: runs a lab's solution notebook top to bottom in a temporary copy of its
folder (used by the ``test_labNN.py`` files).
``cpu_burner`` / ``busy_cores()``: every core of this machine busy, plus one process more,
while a test runs (the grader's limits must hold on a loaded machine); the burners stop by
themselves after a bound and are ended by their ids when the test is done.
``pytest_report_header``: the kernel paths this CPU takes, so that a CI log says what was
tested (``course.kernels.backend_report()``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
             np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written independently of the library: struct header, big-endian values."""
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture(scope="session")
def idx_bytes() -> Callable[[np.ndarray], bytes]:
    """``idx_bytes(array) -> bytes``: the uncompressed IDX file holding ``array``."""
    return _idx_bytes


ROOT = Path(__file__).resolve().parents[1]
BURN_LIMIT_S = 1200
"""A burner stops by itself after this many seconds, whatever happens to the test run."""


def pytest_report_header(config) -> list[str]:
    """The machine's kernel paths, in the header of every test run."""
    try:
        from course.kernels import backend_report

        report = backend_report()
    except Exception as error:  # noqa: BLE001 - the header must never break a run
        return [f"course kernels: backend_report() failed: {type(error).__name__}: {error}"]
    if isinstance(report, dict):
        return ["course kernels: " + ", ".join(f"{k}={v}" for k, v in report.items())]
    return [f"course kernels: {report}"]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def busy_cores(extra: int = 1, limit_s: float = BURN_LIMIT_S) -> Iterator[list[int]]:
    """Keep every core busy (one spinning process per core, plus ``extra``) inside the
    ``with``; yields the burners' pids. Each burner ends by itself after ``limit_s``."""
    code = ("import time\nend = time.monotonic() + float(__import__('sys').argv[1])\n"
            "while time.monotonic() < end:\n    pass\n")
    burners = [subprocess.Popen([sys.executable, "-c", code, str(limit_s)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
               for _ in range(_cores() + extra)]
    try:
        yield [b.pid for b in burners]
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait(timeout=30)


@pytest.fixture()
def cpu_burner() -> Iterator[list[int]]:
    """Every core busy, plus one, for the duration of the test."""
    with busy_cores() as pids:
        yield pids


@pytest.fixture(scope="module")
def execute_solution(tmp_path_factory) -> Callable[[str], tuple]:
    """``execute_solution(lab) -> (notebook, results, seconds)``: the executed solution
    notebook, the ``results.json`` it wrote, and its wall time."""
    import nbformat
    from nbclient import NotebookClient

    def run(lab: str) -> tuple:
        work = tmp_path_factory.mktemp(lab)
        for f in (ROOT / "solutions" / lab).iterdir():
            if f.is_file():
                shutil.copy(f, work / f.name)
        nb = nbformat.read(work / f"{lab}.ipynb", as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(work)}}).execute()
        seconds = time.perf_counter() - start
        print(f"{lab} executed in {seconds:.1f} s")
        return nb, json.loads((work / "results.json").read_text()), seconds

    return run


def random_bn(bn, seed: int):
    """``bn`` with random affine parameters and running statistics drawn from ``seed``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 2 + 0.1)
    return bn


def notebook_errors(nb) -> list[dict]:
    """Error outputs of an executed notebook."""
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
