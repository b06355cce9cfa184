"""Weights that are 0 or ±2^n: b-bit codes, packed storage, and multiplication by shifting.

Incremental Network Quantization (Zhou et al., ICLR 2017) leaves every weight of a layer in
``{0} ∪ {±2^n : n2 <= n <= n1}``: ``2^(b-2)`` exponents, a sign, and zero. Such a weight is
stored as a ``b``-bit **code** (the layout of this module, one code per weight)::

    0                        for 0
    1 + (n1 - n)             for +2^n      (1 ... 2^(b-2))
    1 + (n1 - n) + 2^(b-2)   for -2^n      (2^(b-2) + 1 ... 2^(b-1))

so every code is below ``2**b`` and the layer needs only ``(n1, n2)`` besides its codes.
:func:`pack_codes` stores the codes ``b`` bits each in a byte stream (code ``i`` in bits
``i*b ... i*b + b - 1``, least significant bit first), so the bytes really shrink to
``ceil(numel * b / 8)``.

Multiplying by ``±2^n`` is a shift: with integer inputs ``x``, ``x * (w / 2^n2)`` is
``±(x << (n - n2))``, an integer, and the real product is that times ``2^n2``.
:func:`shift_matvec` computes ``x @ (w_q / 2^n2).T`` with shifts, masks and adds only (a
numba kernel, compiled for this CPU on first use and cached on disk);
:func:`shift_matvec_reference` is the plain integer product (int64 matmul) it must equal.

Dtypes: codes are ``torch.uint8`` (``num_bits`` from 2 to :data:`MAX_CODE_BITS`); decoded
weights ``torch.float32``; accumulators ``torch.int64``.

>>> w = torch.tensor([0.5, -0.25, 0.0, 0.125])
>>> codes = encode_pow2(w, -1, -3, 4)
>>> codes
tensor([1, 6, 0, 3], dtype=torch.uint8)
>>> torch.equal(decode_pow2(codes, -1, -3, 4), w)
True
>>> shift_matvec(torch.tensor([[8, 1, 5, 2]], dtype=torch.int32), codes[None], -1, -3, 4)
tensor([[32]])
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass

import numba
import numpy as np
import torch
from numba import prange

MIN_CODE_BITS = 2
"""Fewest bits of a code: one exponent, its sign, and zero."""

MAX_CODE_BITS = 8
"""Most bits of a code: codes are stored in uint8."""

BYTE_BITS = 8

ACCUMULATOR_BITS = 63
"""The shift-and-add accumulators are int64: magnitudes below 2**63."""


# ----------------------------------------------------------------------------- checks
def check_exponent(value: object, name: str) -> int:
    """``value`` as an int (a Python or numpy integer, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return int(value)


def check_exponents(n1: object, n2: object) -> tuple[int, int]:
    """``(n1, n2)`` as ints after checking ``n2 <= n1``."""
    top, bottom = check_exponent(n1, "n1"), check_exponent(n2, "n2")
    if bottom > top:
        raise ValueError(f"n2 must not exceed n1, got n1={top}, n2={bottom}")
    return top, bottom


def check_code_bits(num_bits: object, n1: int, n2: int) -> int:
    """``num_bits`` as an int in [2, 8] whose ``2^(b-2)`` exponents hold ``n2 ... n1``."""
    if isinstance(num_bits, bool) or not isinstance(num_bits, numbers.Integral):
        raise TypeError(f"num_bits must be an int, got {type(num_bits).__name__} {num_bits!r}")
    bits = int(num_bits)
    if not MIN_CODE_BITS <= bits <= MAX_CODE_BITS:
        raise ValueError(f"num_bits must be between {MIN_CODE_BITS} and {MAX_CODE_BITS}, "
                         f"got {bits}")
    exponents = 1 << (bits - 2)
    if n1 - n2 + 1 > exponents:
        raise ValueError(f"n2: {n1 - n2 + 1} exponents n2={n2} ... n1={n1} do not fit "
                         f"{bits}-bit codes, which hold {exponents}")
    return bits


def _check_tensor(value: object, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return list(np.unravel_index(flat, shape)) if shape else []


# ----------------------------------------------------------------------------- levels
def level_mask(w: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """Bool tensor of ``w``'s shape: True where the element is 0 or ±2^n, n2 <= n <= n1.

    Exact: ``torch.frexp`` splits ``|w|`` into a mantissa in [0.5, 1) and an exponent, and a
    power of two is the mantissa 0.5. NaN and infinities are never levels.

    >>> level_mask(torch.tensor([0.0, -0.5, 0.75, 2.0]), 0, -2).tolist()
    [True, True, False, False]
    """
    w = _check_tensor(w, "w")
    if not w.is_floating_point():
        raise TypeError(f"w must have a floating-point dtype, got {w.dtype}")
    n1, n2 = check_exponents(n1, n2)
    mantissa, exponent = torch.frexp(w.detach().abs())
    n = exponent.to(torch.int64) - 1
    return (w == 0) | ((mantissa == 0.5) & (n >= n2) & (n <= n1))


def encode_pow2(w_q: torch.Tensor, n1: int, n2: int, num_bits: int) -> torch.Tensor:
    """uint8 codes of ``w_q`` (every element 0 or ±2^n, n2 <= n <= n1), same shape.

    Code 0 for 0, ``1 + (n1 - n)`` for +2^n, ``1 + (n1 - n) + 2^(b-2)`` for -2^n
    (``b = num_bits``). ValueError naming ``w_q`` and the first offending element if one is
    not a level; ValueError naming ``n2`` if the exponents do not fit ``num_bits``.

    >>> encode_pow2(torch.tensor([[1.0, -1.0], [0.25, 0.0]]), 0, -2, 4).tolist()
    [[1, 5], [3, 0]]
    """
    w_q = _check_tensor(w_q, "w_q")
    if not w_q.is_floating_point():
        raise TypeError(f"w_q must have a floating-point dtype, got {w_q.dtype}")
    n1, n2 = check_exponents(n1, n2)
    bits = check_code_bits(num_bits, n1, n2)
    ok = level_mask(w_q, n1, n2)
    if not bool(ok.all()):
        flat = int((~ok).reshape(-1).nonzero()[0, 0])
        value = float(w_q.detach().reshape(-1)[flat])
        raise ValueError(f"w_q: element {_index(flat, tuple(w_q.shape))} = {value!r} is not 0 "
                         f"or ±2^n with {n2} <= n <= {n1}")
    _, exponent = torch.frexp(w_q.detach().abs())
    offset = n1 - (exponent.to(torch.int64) - 1)
    codes = 1 + offset + torch.where(w_q < 0, 1 << (bits - 2), 0)
    return torch.where(w_q == 0, 0, codes).to(torch.uint8)


def decode_table(n1: int, n2: int, num_bits: int) -> torch.Tensor:
    """float32 ``[2^(b-1) + 1]``: the weight of each code (codes of exponents below ``n2``
    are unused and hold NaN). Built with ``math.ldexp``: exact powers of two.

    >>> decode_table(0, -1, 3).tolist()
    [0.0, 1.0, 0.5, -1.0, -0.5]
    """
    n1, n2 = check_exponents(n1, n2)
    bits = check_code_bits(num_bits, n1, n2)
    half = 1 << (bits - 2)
    values = [0.0]
    for sign in (1.0, -1.0):
        for offset in range(half):
            n = n1 - offset
            values.append(sign * math.ldexp(1.0, n) if n >= n2 else math.nan)
    table = torch.tensor(values, dtype=torch.float64)
    finite = table[torch.isfinite(table)]
    if bool((finite.to(torch.float32).double() != finite).any()):
        raise ValueError(f"n1, n2: the levels ±2^{n2} ... ±2^{n1} are not all float32 numbers")
    return table.to(torch.float32)


def decode_pow2(codes: torch.Tensor, n1: int, n2: int, num_bits: int) -> torch.Tensor:
    """float32 weights of ``codes`` (the inverse of :func:`encode_pow2`), same shape.

    ValueError naming ``codes`` for a code that is not one of the layout's.

    >>> decode_pow2(torch.tensor([0, 1, 2, 3, 4], dtype=torch.uint8), 1, 0, 3).tolist()
    [0.0, 2.0, 1.0, -2.0, -1.0]
    """
    codes = _check_tensor(codes, "codes")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"codes must have an integer dtype, got {codes.dtype}")
    table = decode_table(n1, n2, num_bits)
    index = codes.to(torch.int64)
    bad = (index < 0) | (index >= table.numel())
    if not bool(bad.any()):
        bad = torch.isnan(table[index])
    if bool(bad.any()):
        flat = int(bad.reshape(-1).nonzero()[0, 0])
        raise ValueError(f"codes: element {_index(flat, tuple(codes.shape))} = "
                         f"{int(index.reshape(-1)[flat])} is not a code of {int(num_bits)}-bit "
                         f"weights with exponents {n2} ... {n1}")
    return table[index]


# ----------------------------------------------------------------------------- packing
@dataclass(frozen=True)
class PackedCodes:
    """Codes of ``num_bits`` bits each, packed into bytes (LSB first): what is stored.

    ``data``: uint8 ``[ceil(numel * num_bits / 8)]``; ``shape``: the weight's shape.
    """

    data: torch.Tensor
    num_bits: int
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the packed codes."""
        return self.data.numel()

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def pack_codes(codes: torch.Tensor, num_bits: int) -> PackedCodes:
    """``codes`` (integer tensor, values below ``2**num_bits``) packed ``num_bits`` bits each.

    >>> packed = pack_codes(torch.tensor([1, 2, 3], dtype=torch.uint8), 2)
    >>> packed.data.tolist(), packed.nbytes
    ([57], 1)
    """
    codes = _check_tensor(codes, "codes")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"codes must have an integer dtype, got {codes.dtype}")
    if isinstance(num_bits, bool) or not isinstance(num_bits, numbers.Integral):
        raise TypeError(f"num_bits must be an int, got {type(num_bits).__name__}")
    bits = int(num_bits)
    if not 1 <= bits <= MAX_CODE_BITS:
        raise ValueError(f"num_bits must be between 1 and {MAX_CODE_BITS}, got {bits}")
    flat = codes.detach().reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {(1 << bits) - 1}] for {bits}-bit packing")
    stream = ((flat[:, None] >> torch.arange(bits)) & 1).reshape(-1)
    padded = torch.zeros(math.ceil(stream.numel() / BYTE_BITS) * BYTE_BITS, dtype=torch.int64)
    padded[:stream.numel()] = stream
    data = (padded.reshape(-1, BYTE_BITS) << torch.arange(BYTE_BITS)).sum(dim=1)
    return PackedCodes(data.to(torch.uint8), bits, tuple(codes.shape))


def unpack_codes(packed: PackedCodes) -> torch.Tensor:
    """The uint8 codes of ``packed``, in their original shape."""
    if not isinstance(packed, PackedCodes):
        raise TypeError(f"packed must be PackedCodes, got {type(packed).__name__}")
    bits, count = packed.num_bits, packed.numel
    stream = ((packed.data.to(torch.int64)[:, None] >> torch.arange(BYTE_BITS)) & 1).reshape(-1)
    if stream.numel() < count * bits:
        raise ValueError(f"packed: {packed.nbytes} bytes cannot hold {count} codes of {bits} bits")
    groups = stream[:count * bits].reshape(count, bits)
    codes = (groups << torch.arange(bits)).sum(dim=1)
    return codes.to(torch.uint8).reshape(packed.shape)


# ----------------------------------------------------------------------------- shifts
@numba.njit(cache=True, parallel=True, boundscheck=False)
def _shift_matvec_kernel(x, codes, half, top, out):  # pragma: no cover
    """out[i, j] = sum_k ±(x[i, k] << (n - n2)) over the weights coded in codes[j, k].

    Each code is decoded on the fly with integer selects (no table lookup, so LLVM can
    vectorize along k): ``neg`` is -1 for a negative weight, ``keep`` -1 for a nonzero one,
    the shift ``top - (n1 - n)`` with ``top = n1 - n2``. Only shifts, ANDs, XORs and adds
    touch ``x``: ``(v ^ -1) - (-1) = -v`` in two's complement, and ``v & 0 = 0`` drops a
    zero weight.
    """
    rows, depth = x.shape
    outputs = codes.shape[0]
    for i in prange(rows):
        for j in range(outputs):
            acc = np.int64(0)
            for k in range(depth):
                c = np.int64(codes[j, k])
                neg = -np.int64(c > half)
                keep = -np.int64(c != 0)
                shift = (top - (c - 1 - (half & neg))) & keep
                v = (x[i, k] << shift) & keep
                acc += (v ^ neg) - neg
            out[i, j] = acc


def _check_codes(codes: torch.Tensor, n1: int, n2: int, bits: int) -> None:
    """ValueError naming ``codes`` unless every code is one of the layout's (cheap: a max, and
    a histogram only when some exponents are unused)."""
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"codes must have an integer dtype (uint8), got {codes.dtype}")
    flat = codes.detach().reshape(-1)
    if not flat.numel():
        return
    half, used = 1 << (bits - 2), n1 - n2 + 1
    bad = int(flat.min()) < 0 or int(flat.max()) > 2 * half
    if not bad and used < half:
        counts = torch.bincount(flat.to(torch.int64), minlength=2 * half + 1)
        unused = [1 + o for o in range(used, half)] + [1 + half + o for o in range(used, half)]
        bad = bool(counts[unused].any())
    if bad:
        decode_pow2(codes, n1, n2, bits)  # raises, naming the first invalid code
        raise AssertionError("unreachable: decode_pow2 accepted an invalid code")


def _check_matvec(x: object, codes: object, n1: object, n2: object,
                  num_bits: object) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
    x = _check_tensor(x, "x")
    codes = _check_tensor(codes, "codes")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"x must have an integer dtype (int8 or int32), got {x.dtype}")
    if x.dim() != 2 or codes.dim() != 2:
        raise ValueError(f"x must be [N, K] and codes [M, K], got shapes {tuple(x.shape)} and "
                         f"{tuple(codes.shape)}")
    if x.shape[1] != codes.shape[1]:
        raise ValueError(f"codes: K = {codes.shape[1]} differs from x's K = {x.shape[1]}")
    n1, n2 = check_exponents(n1, n2)
    bits = check_code_bits(num_bits, n1, n2)
    _check_codes(codes, n1, n2, bits)
    if x.numel():
        largest = int(x.detach().to(torch.int64).abs().max())
        if (largest << (n1 - n2)) * max(x.shape[1], 1) >= 1 << ACCUMULATOR_BITS:
            raise ValueError(f"x: |x| up to {largest} shifted by {n1 - n2} bits over K = "
                             f"{x.shape[1]} could overflow the int64 accumulators")
    return x, codes, n1, n2, bits


def shift_matvec(x: torch.Tensor, codes: torch.Tensor, n1: int, n2: int,
                 num_bits: int) -> torch.Tensor:
    """int64 ``[N, M]``: ``x @ (w_q / 2^n2).T`` with shifts and adds only (numba kernel).

    ``x``: integer ``[N, K]`` (int8, int32 ...); ``codes``: uint8 ``[M, K]`` of weights
    ``w_q`` in :func:`encode_pow2`'s layout. Each weight is ``±2^(n - n2)``, an integer, so
    the result is exact; the real product ``x @ w_q.T`` is it times ``2^n2``.
    ValueError for mismatched K, invalid codes, or a product that could overflow int64.
    """
    x, codes, n1, n2, bits = _check_matvec(x, codes, n1, n2, num_bits)
    out = np.zeros((x.shape[0], codes.shape[0]), dtype=np.int64)
    if out.size and x.shape[1]:
        xs = np.ascontiguousarray(x.detach().cpu().to(torch.int64).numpy())
        cs = np.ascontiguousarray(codes.detach().cpu().to(torch.uint8).numpy())
        _shift_matvec_kernel(xs, cs, np.int64(1 << (bits - 2)), np.int64(n1 - n2), out)
    return torch.from_numpy(out)


def shift_matvec_reference(x: torch.Tensor, codes: torch.Tensor, n1: int, n2: int,
                           num_bits: int) -> torch.Tensor:
    """The integer product ``x @ (w_q / 2^n2).T`` as an int64 matmul: what
    :func:`shift_matvec` must equal, element for element."""
    x, codes, n1, n2, bits = _check_matvec(x, codes, n1, n2, num_bits)
    weights = decode_pow2(codes, n1, n2, bits).double() * math.ldexp(1.0, -n2)
    return x.to(torch.int64) @ weights.to(torch.int64).T


@dataclass(frozen=True)
class CompileReport:
    """``seconds`` of the first call of the shift kernel (JIT compile or disk cache load)."""

    seconds: float


def compile_kernels() -> CompileReport:
    """Compile (or load from numba's disk cache) the shift kernel, timed."""
    start = time.perf_counter()
    shift_matvec(torch.ones(1, 1, dtype=torch.int32), torch.ones(1, 1, dtype=torch.uint8),
                 0, 0, MIN_CODE_BITS)
    return CompileReport(time.perf_counter() - start)


__all__ = [
    "MAX_CODE_BITS", "MIN_CODE_BITS", "CompileReport", "PackedCodes", "check_code_bits",
    "check_exponents", "compile_kernels", "decode_pow2", "decode_table", "encode_pow2",
    "level_mask", "pack_codes", "shift_matvec", "shift_matvec_reference", "unpack_codes",
]
