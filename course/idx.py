"""The IDX file format of MNIST and Fashion-MNIST: decode a file into a tensor.

An IDX file is two zero bytes, a type code, the number of dimensions ``d``, ``d`` big-endian
uint32 sizes, then the values, big-endian, row-major. :func:`parse_idx` decodes the bytes of
one; :func:`read_idx` reads one from disk, gzip-compressed or not. Anything malformed raises
:class:`IdxFormatError` with the file's name in the message. :mod:`course.data` re-exports all
three.

Why not torchvision's reader (``torchvision.datasets.mnist.read_sn3_pascalvincent_tensor``,
which ``tests/course/test_idx.py`` checks this one against): it reads uncompressed files only (the
course caches the published ``.gz`` files and checks their MD5s as published), and it checks
the header with ``assert`` — no message naming the file, and no check at all under
``python -O``.

>>> parse_idx(bytes([0, 0, 0x08, 2, 0, 0, 0, 1, 0, 0, 0, 2, 7, 9]))
tensor([[7, 9]], dtype=torch.uint8)
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["IdxFormatError", "parse_idx", "read_idx"]


class IdxFormatError(ValueError):
    """A file is not a valid IDX file (bad magic number, unknown type, wrong size, not gzip)."""


_IDX_TYPES = {  # type code -> big-endian numpy dtype
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, source: str = "<bytes>") -> torch.Tensor:
    """Decode an (uncompressed) IDX file into a tensor.

    Layout: two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C``
    int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions ``d``, then ``d``
    big-endian uint32 sizes, then the values, big-endian, row-major. The data must have exactly
    the size the header promises. ``source`` names the file in error messages.

    >>> parse_idx(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9]))
    tensor([7, 8, 9], dtype=torch.uint8)
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 4:
        raise IdxFormatError(f"{source}: only {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        hint = " (it is still gzip-compressed)" if data[:2] == _GZIP_MAGIC else ""
        raise IdxFormatError(f"{source}: bad IDX magic number 0x{data[:4].hex()}: the first two "
                             f"bytes must be zero{hint}")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        raise IdxFormatError(f"{source}: unknown IDX type code 0x{code:02x} "
                             f"(known: {', '.join(f'0x{c:02x}' for c in _IDX_TYPES)})")
    if ndim == 0:
        raise IdxFormatError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{source}: header declares {ndim} dimensions but the file ends "
                             f"after {len(data)} bytes")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise IdxFormatError(f"{source}: {kind}: shape {list(shape)} of {dtype.name} needs "
                             f"{expected} data bytes, the file has {actual}")
    values = np.frombuffer(data, dtype=dtype, offset=header).astype(dtype.newbyteorder("="))
    return torch.from_numpy(values.reshape(shape))


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file, gzip-compressed (detected from its first bytes) or not.

    >>> from course.data import cache_dir
    >>> read_idx(cache_dir() / "mnist" / "t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
    torch.Size([10000])
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{path}: damaged gzip data ({exc})") from exc
    return parse_idx(raw, source=str(path))
