"""Fixtures shared by several test files.

``idx_bytes``: an IDX writer independent of :mod:`course.idx`, used by ``test_idx.py`` (the
format itself) and ``test_download.py`` (the files a loopback server hands out).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

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
