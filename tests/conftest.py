"""Fixtures shared by several test files.

``idx_bytes``: an IDX writer independent of :mod:`course.idx`, used by ``test_idx.py`` (the
format itself) and ``test_download.py`` (the files a loopback server hands out).
``execute_solution``: runs a lab's solution notebook top to bottom in a temporary copy of its
folder (used by the ``test_labNN.py`` files).
"""

from __future__ import annotations

import json
import shutil
import struct
import time
from collections.abc import Callable
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
