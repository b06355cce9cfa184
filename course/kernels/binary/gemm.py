"""Binary matrix multiply with XNOR + popcount on bits packed along K (see ``bitpack``).

For ±1 rows ``a`` and ``b`` of length ``K`` packed as bits (1 = +1, 0 = -1), the products
``a_k * b_k`` are +1 where the bits agree and -1 where they differ, so

    dot(a, b) = (K - d) - d = K - 2 * popcount(a XOR b),   d = number of differing bits.

(XNOR-Net writes it with XNOR and ``2 * popcount - K``: the same number.) Padding bits are 0
in both operands, so they never differ and ``K`` is the true length.

``xnor_gemm(a, b)`` computes ``c[i, j] = dot(a[i], b[j])`` for ``a`` packed ``(M, K)`` and
``b`` packed ``(N, K)`` — the second operand is given row by row, like ``nn.Linear``'s
weight, so ``c = A @ B.T`` on the ±1 matrices — as int32 ``(M, N)``, or, with scales,
``c * row_scale[:, None] * col_scale[None, :] + bias`` in float32, fused into the kernel.

Four versions, chosen by name (``backend=``; ``None`` picks :func:`default_backend` by the
CPU, see :func:`course.kernels.cpu_features.kernel_isa`), all exact:

* ``"tiled"`` (the default on AVX-512 CPUs and non-x86 ones) — a register tile of
  :data:`TILE_ROWS` rows of ``a`` by :data:`TILE_COLS` rows of ``b``: per packed word, the
  tile's ``b`` words are loaded as vectors of :data:`VECTOR_WORDS` words (one 512-bit
  register each), every ``a`` word is broadcast, and XOR, popcount and add run on whole
  vectors, so every loaded word is used several times and the 4 x 16 sums stay in registers
  for the whole K loop. ``b`` is first re-laid out in panels of 16 rows, word-interleaved
  (:func:`panel_layout`), so that the 16 words of one panel at one position of K are
  contiguous. The tile is written as a numba ``@intrinsic`` emitting LLVM vector IR
  (``llvm.ctpop.v8i64``): LLVM's auto-vectorizer, left alone, vectorizes along K and pays a
  horizontal sum per output, and prefers 256-bit vectors on recent Intel CPUs. Blocks of
  rows of ``a`` run in parallel (numba ``parallel=True``).
* ``"tiled_avx2"`` (the default on AVX2 CPUs without AVX-512) — a 3 x 8 tile of 256-bit
  vectors with a ``vpshufb`` nibble-lookup popcount summed in bytes and reduced once per 31
  words (:mod:`course.kernels.binary.gemm_avx2`); x86 only, never compiled elsewhere.
* ``"naive"`` — one output at a time with the scalar :func:`popcount64` (LLVM's
  ``llvm.ctpop.i64``), parallel over rows; LLVM vectorizes its loop along K. The difference
  to ``"tiled"`` is what register tiling buys.
* ``"reference"`` — plain numpy with a 256-entry popcount table, obviously correct, slow.

Popcount: numba has no ``int.bit_count`` / ``np.bitwise_count`` support, hence the
intrinsics; LLVM lowers ``ctpop`` to the CPU's instruction (``vpopcntq`` with AVX-512
VPOPCNTDQ, ``popcnt`` or a bit-trick sequence elsewhere). :func:`kernel_info` reports what
this CPU got.

The numba functions are compiled for this CPU on first use and cached to disk
(``cache=True``: later processes load the machine code). :func:`compile_kernels` does it
up front and reports its time, apart from any speed measurement.

>>> import torch
>>> from course.kernels.binary.bitpack import pack_signs
>>> a = pack_signs(torch.tensor([[1, -1, 1], [-1, -1, 1]]))
>>> b = pack_signs(torch.tensor([[1, 1, 1], [1, -1, 1]]))
>>> xnor_gemm(a, b)
tensor([[ 1,  3],
        [-1,  1]], dtype=torch.int32)
"""

from __future__ import annotations

import numbers
import re
import time
from dataclasses import dataclass

import numba
import numpy as np
import torch
from numba import prange

from course.kernels import cpu_features
from course.kernels.binary.bitpack import WORD_BITS, WORD_DTYPE, PackedBits
from course.kernels.binary.intrinsics import (
    TILE_COLS,
    TILE_ROWS,
    popcount64,
    tile_into,
    tile_popcounts,
)

BACKENDS = ("tiled", "tiled_avx2", "naive", "reference")
"""The implementations of :func:`xnor_gemm`."""

MAX_LENGTH = 2**31 - 1
"""Longest K: every dot product lies in [-K, K] and is returned as int32."""

PANEL_BLOCK_BYTES = 512 * 1024
"""Bytes of ``b`` panels the tiled kernel sweeps per block (they stay in a core's L2)."""

_POPCOUNT_TABLE = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def default_backend() -> str:
    """The path :func:`xnor_gemm` takes when none is named: ``"tiled_avx2"`` where
    :func:`~course.kernels.cpu_features.kernel_isa` is ``"avx2"``, else ``"tiled"`` (AVX-512
    vectors; portable LLVM IR on other CPUs)."""
    return "tiled_avx2" if cpu_features.kernel_isa() == "avx2" else "tiled"


def _check_backend(backend: str | None, allowed: tuple[str, ...]) -> str:
    if backend is None:
        return default_backend()
    if backend not in allowed:
        raise ValueError(f"backend must be None or one of {', '.join(allowed)}, got "
                         f"{backend!r}")
    if backend == "tiled_avx2" and cpu_features.native_isa() == "generic":
        raise RuntimeError("backend 'tiled_avx2' needs an x86-64 CPU with AVX2")
    return backend


# ----------------------------------------------------------------------------- numba kernels


@numba.njit(cache=True)
def _store(out, i, j, length, count, row_scale, col_scale, bias):
    """out[i, j] = K - 2 * count, scaled when scales are given (resolved at compile time)."""
    dot = length - 2 * np.int64(count)
    if row_scale is None:
        out[i, j] = dot
    else:
        out[i, j] = np.float32(dot) * row_scale[i] * col_scale[j] + bias[j]


@numba.njit(cache=True)
def _store_tile(out, i, j, counts, length, row_scale, col_scale, bias):
    """Store the part of a tile's counts that falls inside ``out``."""
    rows = min(TILE_ROWS, out.shape[0] - i)
    cols = min(TILE_COLS, out.shape[1] - j)
    for r in range(rows):
        for c in range(cols):
            _store(out, i + r, j + c, length, counts[r * TILE_COLS + c], row_scale,
                   col_scale, bias)


@numba.njit(cache=True, parallel=True, boundscheck=False)
def _xnor_gemm_tiled(a, panels, length, panel_block, row_scale, col_scale, bias, out):
    m, n_words = a.shape
    n = out.shape[1]
    n_panels = panels.shape[0]
    n_tiles = (m + TILE_ROWS - 1) // TILE_ROWS
    for first_panel in range(0, n_panels, panel_block):
        last_panel = min(first_panel + panel_block, n_panels)
        for tile in prange(n_tiles):
            i = tile * TILE_ROWS
            rows = a
            row = i
            if i + TILE_ROWS > m:  # the last, partial tile: zero rows below the matrix
                rows = np.zeros((TILE_ROWS, n_words), dtype=np.uint64)
                rows[: m - i] = a[i:]
                row = 0
            full_rows = i + TILE_ROWS <= m
            for p in range(first_panel, last_panel):
                j = p * TILE_COLS
                if full_rows and j + TILE_COLS <= n:
                    tile_into(rows, row, panels, p, length, out, i, j, row_scale, col_scale,
                               bias)
                else:
                    counts = tile_popcounts(rows, row, panels, p)
                    _store_tile(out, i, j, counts, length, row_scale, col_scale, bias)


@numba.njit(cache=True)
def _dot(a, i, b, j):
    count = np.uint64(0)
    for w in range(a.shape[1]):
        count += popcount64(a[i, w] ^ b[j, w])
    return count


@numba.njit(cache=True, parallel=True, boundscheck=False)
def _xnor_gemm_naive(a, b, length, row_scale, col_scale, bias, out):
    for i in prange(a.shape[0]):
        for j in range(b.shape[0]):
            _store(out, i, j, length, _dot(a, i, b, j), row_scale, col_scale, bias)


def panel_layout(b_words: np.ndarray, cols: int = TILE_COLS) -> np.ndarray:
    """Rows of ``b`` (uint64 ``(N, W)``) in panels of ``cols`` rows (:data:`TILE_COLS` = 16
    by default), interleaved word by word: ``(ceil(N / cols), W, cols)``, with zero rows after
    row ``N - 1``.

    ``panels[p, w, c] == b_words[cols * p + c, w]``. The tiled kernel reads the 16 words of a
    panel at position ``w`` as two contiguous vectors.
    """
    if not isinstance(b_words, np.ndarray) or b_words.dtype != WORD_DTYPE or b_words.ndim != 2:
        raise TypeError("b_words must be a uint64 numpy.ndarray of shape (N, W)")
    n, n_words = b_words.shape
    n_panels = -(-n // cols)
    padded = np.zeros((n_panels * cols, n_words), dtype=WORD_DTYPE)
    padded[:n] = b_words
    return np.ascontiguousarray(padded.reshape(n_panels, cols, n_words).transpose(0, 2, 1))


# ----------------------------------------------------------------------------- reference


def xnor_gemm_reference(a: PackedBits, b: PackedBits) -> torch.Tensor:
    """Plain numpy version of :func:`xnor_gemm` (int32 ``(M, N)``): one row of ``a`` at a
    time, XOR against every row of ``b``, popcount by a 256-entry table of bytes.

    >>> from course.kernels.binary.bitpack import pack_signs
    >>> xnor_gemm_reference(pack_signs(torch.tensor([[1, 1]])), pack_signs(torch.tensor([[1, -1]])))
    tensor([[0]], dtype=torch.int32)
    """
    length = _check_operands(a, b)
    out = np.empty((a.words.shape[0], b.words.shape[0]), dtype=np.int32)
    for i in range(a.words.shape[0]):
        differing = a.words[i][None, :] ^ b.words  # (N, words)
        bytes_ = np.ascontiguousarray(differing).view(np.uint8)
        counts = _POPCOUNT_TABLE[bytes_].sum(axis=1)
        out[i] = length - 2 * counts
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------- public API


def _check_operands(a: object, b: object) -> int:
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, PackedBits):
            raise TypeError(f"{name} must be a PackedBits (from pack_signs or pack_sign_bits), "
                            f"got {type(value).__name__}")
        if value.words.ndim != 2:
            raise ValueError(f"{name} must be packed from a 2-D tensor (rows, K), got logical "
                             f"shape {value.shape}")
    if a.length != b.length:
        raise ValueError(f"a and b must have the same K (packed length): a is {a.shape}, "
                         f"b is {b.shape}")
    return a.length


def _scale_vector(value: object, name: str, size: int) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, "
                        f"got {type(value).__name__}")
    if value.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {value.shape}")
    if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(value.dtype,
                                                                         np.integer):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    return np.ascontiguousarray(value, dtype=np.float32)


def _word_matrix(value: object, name: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != WORD_DTYPE or value.ndim != 2:
        raise TypeError(f"{name} must be a uint64 numpy.ndarray of shape (rows, words)")
    return np.ascontiguousarray(value)


def xnor_gemm_words(a_words: np.ndarray, b_words: np.ndarray, length: int,
                    row_scale: object = None, col_scale: object = None, bias: object = None,
                    backend: str | None = None) -> np.ndarray:
    """Low-level form of :func:`xnor_gemm` on raw words, for kernels that lay bits out
    themselves (the packed convolution puts padding bits after every group of channels).

    ``a_words`` uint64 ``(M, W)`` and ``b_words`` uint64 ``(N, W)`` with padding bits 0 in
    both; ``length``: the number of real bits per row (the K of the dot product, at most
    ``64 W``). Scales (tensors or arrays of shapes ``(M,)``, ``(N,)``, ``(N,)``): the first
    two together or none; ``bias`` only with them. Returns a numpy array ``(M, N)``: int32
    without scales, float32 with.
    """
    backend = _check_backend(backend, ("tiled", "tiled_avx2", "naive"))
    a_words = _word_matrix(a_words, "a_words")
    b_words = _word_matrix(b_words, "b_words")
    (m, n_words), n = a_words.shape, b_words.shape[0]
    if b_words.shape[1] != n_words:
        raise ValueError(f"a_words and b_words must have the same number of words per row, "
                         f"got {n_words} and {b_words.shape[1]}")
    if isinstance(length, bool) or not isinstance(length, numbers.Integral):
        raise TypeError(f"length must be an int, got {type(length).__name__}")
    if not 0 <= length <= min(WORD_BITS * n_words, MAX_LENGTH):
        raise ValueError(f"length must be between 0 and {WORD_BITS} x {n_words} words "
                         f"(and at most {MAX_LENGTH}), got {length}")
    if (row_scale is None) != (col_scale is None):
        raise ValueError("row_scale and col_scale must be given together (or neither)")
    if bias is not None and row_scale is None:
        raise ValueError("bias needs row_scale and col_scale (the output is then float32)")
    scales = (None, None, None)
    if row_scale is not None:
        scales = (_scale_vector(row_scale, "row_scale", m),
                  _scale_vector(col_scale, "col_scale", n),
                  np.zeros(n, dtype=np.float32) if bias is None
                  else _scale_vector(bias, "bias", n))
    out = np.empty((m, n), dtype=np.float32 if row_scale is not None else np.int32)
    if m == 0 or n == 0:
        return out
    if backend == "tiled":
        panel_bytes = TILE_COLS * WORD_DTYPE.itemsize * max(1, n_words)
        block = max(1, PANEL_BLOCK_BYTES // panel_bytes)
        _xnor_gemm_tiled(a_words, panel_layout(b_words), np.int64(length), np.int64(block),
                         *scales, out)
    elif backend == "tiled_avx2":
        from course.kernels.binary import gemm_avx2 as avx2

        panel_bytes = avx2.TILE_COLS * WORD_DTYPE.itemsize * max(1, n_words)
        block = max(1, PANEL_BLOCK_BYTES // panel_bytes)
        avx2.xnor_gemm_tiled_avx2(a_words, panel_layout(b_words, avx2.TILE_COLS),
                                  np.int64(length), np.int64(block), *scales, out)
    else:
        _xnor_gemm_naive(a_words, b_words, np.int64(length), *scales, out)
    return out


def xnor_gemm(a: PackedBits, b: PackedBits, *, row_scale: torch.Tensor | None = None,
              col_scale: torch.Tensor | None = None, bias: torch.Tensor | None = None,
              backend: str | None = None) -> torch.Tensor:
    """``A @ B.T`` for ±1 matrices packed along K: ``a`` is ``(M, K)``, ``b`` is ``(N, K)``.

    Returns int32 ``(M, N)`` exact dot products ``K - 2 * popcount(a_i XOR b_j)``. With
    ``row_scale`` ``(M,)`` and ``col_scale`` ``(N,)`` (both, or neither) and optional
    ``bias`` ``(N,)``, returns float32 ``dot * row_scale[i] * col_scale[j] + bias[j]``
    computed in the same pass (XNOR-Net: ``beta`` per input row, ``alpha`` per output).
    ``backend``: ``None`` (:func:`default_backend`) or one of :data:`BACKENDS`. Different
    ``K`` is a ``ValueError``.

    >>> from course.kernels.binary.bitpack import pack_signs
    >>> x = pack_signs(torch.tensor([[1, -1]]))
    >>> xnor_gemm(x, x, row_scale=torch.tensor([0.5]), col_scale=torch.tensor([3.0]))
    tensor([[3.]])
    """
    length = _check_operands(a, b)
    backend = _check_backend(backend, BACKENDS)
    if backend != "reference":
        return torch.from_numpy(xnor_gemm_words(a.words, b.words, length, row_scale,
                                                col_scale, bias, backend=backend))
    if (row_scale is None) != (col_scale is None):
        raise ValueError("row_scale and col_scale must be given together (or neither)")
    if bias is not None and row_scale is None:
        raise ValueError("bias needs row_scale and col_scale (the output is then float32)")
    out = xnor_gemm_reference(a, b)
    if row_scale is None:
        return out
    m, n = out.shape
    rows = torch.from_numpy(_scale_vector(row_scale, "row_scale", m))
    cols = torch.from_numpy(_scale_vector(col_scale, "col_scale", n))
    result = out.to(torch.float32) * rows[:, None] * cols[None, :]
    if bias is not None:
        result = result + torch.from_numpy(_scale_vector(bias, "bias", n))
    return result


# ----------------------------------------------------------------------------- compile, report


@dataclass(frozen=True)
class CompileReport:
    """Time to make the kernels callable in this process, and where the code came from.

    ``seconds``: wall time of the first calls (JIT compilation, or loading the disk cache);
    ``cache_hits`` / ``cache_misses``: signatures loaded from / not found in numba's cache.
    """

    seconds: float
    cache_hits: int
    cache_misses: int

    @property
    def source(self) -> str:
        """``"disk cache"`` when nothing had to be compiled, else ``"compiled"``."""
        return "disk cache" if self.cache_misses == 0 else "compiled"


def _kernels() -> tuple:
    kernels = [_xnor_gemm_tiled, _xnor_gemm_naive]
    if "tiled_avx2" in _compiled_backends():
        from course.kernels.binary.gemm_avx2 import xnor_gemm_tiled_avx2

        kernels.append(xnor_gemm_tiled_avx2)
    return tuple(kernels)


def _compiled_backends() -> tuple[str, ...]:
    """What :func:`compile_kernels` prepares: this CPU's default tile and the naive loop."""
    return (default_backend(), "naive")


def _cache_counts() -> tuple[int, int]:
    kernels = _kernels()
    hits = sum(sum(kernel.stats.cache_hits.values()) for kernel in kernels)
    misses = sum(sum(kernel.stats.cache_misses.values()) for kernel in kernels)
    return hits, misses


def compile_kernels() -> CompileReport:
    """Compile (or load from the disk cache) every signature the library uses, timed.

    The signatures: int32 output, and float32 output with scales, for this CPU's default
    tile (:func:`default_backend`) and the naive loop. Calling it again in the same process
    costs nothing and reports the first time's figures.
    """
    global _COMPILE_REPORT
    if _COMPILE_REPORT is not None:
        return _COMPILE_REPORT
    hits_before, misses_before = _cache_counts()
    words = np.zeros((TILE_COLS + 1, 1), dtype=WORD_DTYPE)
    scale = np.ones(TILE_COLS + 1, dtype=np.float32)
    start = time.perf_counter()
    for backend in _compiled_backends():
        xnor_gemm_words(words, words, 1, backend=backend)
        xnor_gemm_words(words, words, 1, scale, scale, scale, backend=backend)
    seconds = time.perf_counter() - start
    hits, misses = _cache_counts()
    _COMPILE_REPORT = CompileReport(seconds, hits - hits_before, misses - misses_before)
    return _COMPILE_REPORT


_COMPILE_REPORT: CompileReport | None = None


def _tile_probe(a, panels):
    """One call of the tiled kernel's tile (not cached, so that its assembly can be read)."""
    return tile_popcounts(a, 0, panels, 0)




def kernel_info() -> dict[str, object]:
    """How LLVM compiled the default tile's inner loop on this CPU: the backend
    (:func:`default_backend`), the popcount instruction (``"vpopcntq"``, ``"popcnt"``,
    ``"vpshufb"`` for a nibble lookup, or ``"other"``), the widest vector register it uses
    (bits, 64 for scalar code) and numba's thread count.

    Numba does not keep the assembly of cached code, so the tile alone is compiled again
    without the cache (under a second) and its assembly read.

    >>> sorted(kernel_info())
    ['backend', 'popcount', 'threads', 'vector_bits']
    """
    backend = default_backend()
    if backend == "tiled_avx2":
        from course.kernels.binary.gemm_avx2 import TILE_COLS as cols
        from course.kernels.binary.gemm_avx2 import TILE_ROWS as rows
        from course.kernels.binary.gemm_avx2 import tile_probe

        probe = numba.njit(cache=False)(tile_probe)
    else:
        rows, cols = TILE_ROWS, TILE_COLS
        probe = numba.njit(cache=False)(_tile_probe)
    probe(np.zeros((rows, 1), dtype=WORD_DTYPE), np.zeros((1, 1, cols), WORD_DTYPE))
    assembly = "\n".join(probe.inspect_asm().values())
    if re.search(r"vpopcntq\s", assembly):
        popcount = "vpopcntq"
    elif re.search(r"\bpopcnt", assembly):
        popcount = "popcnt"
    elif re.search(r"vpshufb\s", assembly):
        popcount = "vpshufb"
    else:
        popcount = "other"
    bits = 64
    for register, width in (("%zmm", 512), ("%ymm", 256), ("%xmm", 128)):
        if re.search(r"(vpxorq|vpxor|vpaddq)\s[^\n]*" + register, assembly):
            bits = width
            break
    return {"backend": backend, "popcount": popcount, "vector_bits": bits,
            "threads": numba.get_num_threads()}
