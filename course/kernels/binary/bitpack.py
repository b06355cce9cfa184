"""Bit packing: ±1 values along the last axis (K) stored 64 to a ``uint64`` word.

Conventions (the binary kernels rely on them):

* bit value 1 encodes +1, bit value 0 encodes -1; ``sign(0) = +1``, so a float ``x`` packs
  to bit ``x >= 0``;
* element ``k`` of a row lives in word ``k // 64``, bit ``k % 64`` (least significant bit
  first);
* a row of ``K`` values takes ``ceil(K / 64)`` words; the padding bits of the last word are
  **0 in every packed operand**. Two rows therefore agree on every padding bit, XOR is 0
  there, and the dot product of two ±1 rows is exactly
  ``K - 2 * popcount(a XOR b)`` with the true ``K``: the padding adds nothing.

A packed row costs ``8 * ceil(K / 64)`` bytes instead of ``4 * K`` in float32: 1/32 when
``K`` is a multiple of 64, slightly more otherwise (K = 784: 832 bits stored).

>>> import torch
>>> p = pack_signs(torch.tensor([[1.0, -1.0, -1.0, 1.0]]))
>>> p.shape, p.words.shape, int(p.words[0, 0])          # bits 0 and 3 set: 1 + 8
((1, 4), (1, 1), 9)
>>> unpack_signs(p)
tensor([[ 1., -1., -1.,  1.]])
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

WORD_BITS = 64
"""Bits per packed word."""

WORD_DTYPE = np.dtype(np.uint64)
"""The numpy dtype of packed words."""

_LITTLE_ENDIAN_WORD = np.dtype("<u8")
_BYTE_BITS = 8


def words_for(length: int) -> int:
    """Number of 64-bit words that hold ``length`` bits: ``ceil(length / 64)``.

    >>> words_for(64), words_for(65), words_for(784)
    (1, 2, 13)
    """
    if isinstance(length, bool) or not isinstance(length, numbers.Integral):
        raise TypeError(f"length must be an int, got {type(length).__name__}")
    if length < 0:
        raise ValueError(f"length must be non-negative, got {length}")
    return -(-int(length) // WORD_BITS)


@dataclass(frozen=True)
class PackedBits:
    """±1 values packed along the last axis: ``words`` (uint64, ``(*rows, ceil(K/64))``)
    and ``length`` = K, the number of valid bits per row.

    ``shape`` is the logical shape ``(*rows, K)``; ``nbytes`` the bytes really stored.
    Padding bits (past ``length`` in the last word) are always 0.
    """

    words: np.ndarray
    length: int

    def __post_init__(self) -> None:
        if not isinstance(self.words, np.ndarray):
            raise TypeError(f"words must be a numpy.ndarray, got {type(self.words).__name__}")
        if self.words.dtype != WORD_DTYPE:
            raise TypeError(f"words must have dtype uint64, got {self.words.dtype}")
        if self.words.ndim < 1:
            raise ValueError("words must have at least one axis (the word axis)")
        expected = words_for(self.length)
        if self.words.shape[-1] != expected:
            raise ValueError(f"length {self.length} needs {expected} words per row, but words "
                             f"has {self.words.shape[-1]} on its last axis")
        tail = self.length % WORD_BITS
        if tail and self.words.size and np.any(self.words[..., -1] >> np.uint64(tail)):
            raise ValueError(f"padding bits past length {self.length} must be 0")

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical shape ``(*rows, K)`` of the ±1 tensor."""
        return (*self.words.shape[:-1], self.length)

    @property
    def nbytes(self) -> int:
        """Bytes the packed words occupy (8 per word)."""
        return int(self.words.nbytes)

    def to_tensor(self) -> torch.Tensor:
        """The words as a torch.int64 tensor (same bits, same shape): a storable buffer."""
        return torch.from_numpy(np.ascontiguousarray(self.words).view(np.int64))

    @classmethod
    def from_tensor(cls, words: torch.Tensor, length: int) -> PackedBits:
        """Inverse of :meth:`to_tensor`: int64 (or uint64) words and the row length K."""
        if not isinstance(words, torch.Tensor):
            raise TypeError(f"words must be a torch.Tensor, got {type(words).__name__}")
        if words.dtype not in (torch.int64, torch.uint64):
            raise TypeError(f"words must have dtype int64 or uint64, got {words.dtype}")
        array = words.detach().cpu().contiguous().numpy()
        return cls(array.view(WORD_DTYPE), int(length))


def _as_numpy(x: object, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must be real, got dtype {x.dtype}")
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        if np.iscomplexobj(x):
            raise TypeError(f"{name} must be real, got dtype {x.dtype}")
        return x
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _pack_bool(bits: np.ndarray) -> PackedBits:
    """Pack a boolean array (True = +1) along its last axis."""
    if bits.ndim < 1:
        raise ValueError("the input must have at least one axis (K, the packed axis)")
    length = bits.shape[-1]
    pad = words_for(length) * WORD_BITS - length
    if pad:
        bits = np.concatenate([bits, np.zeros((*bits.shape[:-1], pad), dtype=bool)], axis=-1)
    packed_bytes = np.packbits(bits, axis=-1, bitorder="little")
    words = np.ascontiguousarray(packed_bytes).view(_LITTLE_ENDIAN_WORD).astype(WORD_DTYPE,
                                                                               copy=False)
    return PackedBits(words, length)


def pack_signs(x: torch.Tensor | np.ndarray) -> PackedBits:
    """Pack a tensor whose values are exactly -1 or +1, along its last axis.

    ``x``: any real dtype, shape ``(..., K)`` with ``K >= 1``. Any other value (0, 0.5, NaN)
    is a ``ValueError`` that names the first offending element; use
    :func:`pack_sign_bits` to pack ``sign(x)`` of arbitrary values.

    >>> pack_signs(torch.tensor([-1, 1, 1])).words
    array([6], dtype=uint64)
    """
    arr = _as_numpy(x, "x")
    if arr.ndim < 1 or arr.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last axis (K), got shape {arr.shape}")
    positive = arr == 1
    bad = ~(positive | (arr == -1))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"x must contain only -1 and +1; element {index} is {arr[index]!r} "
                         "(use pack_sign_bits to pack sign(x) of arbitrary values)")
    return _pack_bool(positive)


def pack_sign_bits(x: torch.Tensor | np.ndarray) -> PackedBits:
    """Pack ``sign(x)`` along the last axis (bit 1 where ``x >= 0``, so sign(0) = +1).

    ``x``: real tensor or array of shape ``(..., K)``; NaN is a ``ValueError``.

    >>> pack_sign_bits(torch.tensor([0.0, -0.5, 2.0])).words
    array([5], dtype=uint64)
    """
    arr = _as_numpy(x, "x")
    if arr.ndim < 1 or arr.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last axis (K), got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError("x contains NaN, which has no sign")
    return _pack_bool(arr >= 0)


def unpack_signs(packed: PackedBits, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ±1 tensor of shape ``packed.shape`` in ``dtype`` (float32 by default).

    >>> unpack_signs(pack_signs(torch.tensor([1.0, -1.0])), dtype=torch.int8)
    tensor([ 1, -1], dtype=torch.int8)
    """
    if not isinstance(packed, PackedBits):
        raise TypeError(f"packed must be a PackedBits, got {type(packed).__name__}")
    if not isinstance(dtype, torch.dtype) or dtype == torch.bool or dtype.is_complex:
        raise TypeError(f"dtype must be a real torch dtype, got {dtype!r}")
    raw = np.ascontiguousarray(packed.words.astype(_LITTLE_ENDIAN_WORD, copy=False))
    as_bytes = raw.view(np.uint8).reshape(*raw.shape[:-1], raw.shape[-1] * _BYTE_BITS)
    bits = np.unpackbits(as_bytes, axis=-1, count=packed.length, bitorder="little")
    signs = torch.from_numpy(bits.astype(np.int8) * 2 - 1)
    return signs.to(dtype)
