"""Tests for course.idx: IDX files decoded against an independent writer (conftest.idx_bytes)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from course import idx

IdxWriter = Callable[[np.ndarray], bytes]


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_idx_round_trip(dtype: str, tmp_path: Path, idx_bytes: IdxWriter) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    parsed = idx.parse_idx(idx_bytes(array))
    np.testing.assert_array_equal(parsed.numpy(), array)
    assert parsed.numpy().dtype == np.dtype(dtype).newbyteorder("=")
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "a.idx").numpy(), array)
    np.testing.assert_array_equal(idx.read_idx(str(tmp_path / "a.idx.gz")).numpy(), array)


@pytest.mark.parametrize("shape", [(5,), (3, 28, 28)])
def test_idx_reader_agrees_with_torchvisions(shape: tuple, tmp_path: Path,
                                            idx_bytes: IdxWriter) -> None:
    mnist = pytest.importorskip("torchvision.datasets.mnist")
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    (tmp_path / "a-ubyte").write_bytes(idx_bytes(array))
    ours = idx.read_idx(tmp_path / "a-ubyte")
    theirs = mnist.read_sn3_pascalvincent_tensor(str(tmp_path / "a-ubyte"))
    assert ours.dtype == theirs.dtype == torch.uint8 and torch.equal(ours, theirs)


def test_idx_is_big_endian() -> None:
    blob = bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])
    assert idx.parse_idx(blob).tolist() == [[258, -2]]


@pytest.mark.parametrize("blob, message", [
    (b"\x00\x00", "too short"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x00", "magic"),
    (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00", mtime=0), "still gzip"),  # stable id
    (b"\x00\x00\x0a\x01\x00\x00\x00\x00", "unknown IDX type code 0x0a"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "declares 3 dimensions"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "truncated"),
    (b"\x00\x00\x0c\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00", "trailing bytes"),
])
def test_malformed_idx_is_rejected(blob: bytes, message: str) -> None:
    with pytest.raises(idx.IdxFormatError, match=message) as info:
        idx.parse_idx(blob, source="x.idx")
    assert "x.idx" in str(info.value)


def test_damaged_gzip_names_the_file(tmp_path: Path, idx_bytes: IdxWriter) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-12])
    with pytest.raises(idx.IdxFormatError, match="broken.gz"):
        idx.read_idx(path)
