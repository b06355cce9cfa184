"""The XNOR + popcount GEMM's register tile for x86 CPUs with AVX2 but no AVX-512.

Same contract as the ``"tiled"`` kernel of :mod:`course.kernels.binary.gemm` (``a`` packed
words ``(M, W)``, ``b`` in panels from ``panel_layout(b, TILE_COLS)``, exact counts), with a
popcount that suits 256-bit integer units. On AVX2 there is no vector popcount instruction:
LLVM's ``ctpop`` of a vector becomes a nibble lookup *and* a horizontal sum (``vpsadbw``) per
vector and word, and the 512-bit vectors of the AVX-512 tile are split in two and spill. Here:

* per word of K, ``x = a XOR b`` on ``<4 x i64>`` vectors (4 words of ``b``, one word of
  ``a`` broadcast);
* the bits set in each *byte* of ``x`` are looked up by nibble with ``vpshufb``
  (``llvm.x86.avx2.pshuf.b``: a 16-entry table, low nibble and high nibble) and added into
  byte accumulators — at most 8 per byte and word, so :data:`BYTE_BLOCK` = 31 words fit in a
  byte (31 * 8 = 248 < 256);
* after each block of 31 words, ``vpsadbw`` against zero (``llvm.x86.avx2.psad.bw``) sums
  the 8 bytes of every 64-bit lane into the lane's count: one reduction per 31 words
  instead of one per word.

The tile is :data:`TILE_ROWS` rows of ``a`` by :data:`TILE_COLS` = 4 x :data:`VECTORS`
rows of ``b``: 6 byte accumulators, 2 vectors of ``b``, the table and the nibble mask in the
16 ymm registers. Only compiled when called, and only called where
:func:`course.kernels.cpu_features.kernel_isa` is ``"avx2"``: never on ARM.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

TILE_ROWS = 3
"""Rows of ``a`` per register tile."""

VECTORS = 2
"""ymm vectors (4 words = 4 rows of ``b`` each) per row of the tile."""

TILE_COLS = 4 * VECTORS
"""Rows of ``b`` per tile (one panel)."""

BYTE_BLOCK = 31
"""Words of K whose per-byte counts (at most 8 each) are summed in a byte: 31 * 8 < 256."""

_NIBBLE_COUNTS = [bin(i).count("1") for i in range(16)]

_WORDS_2D = types.Array(types.uint64, 2, "C")
_WORDS_3D = types.Array(types.uint64, 3, "C")


def _splat(builder, value, vector_type):
    lane = ir.IntType(32)
    first = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                                   ir.Constant(lane, 0))
    return builder.shuffle_vector(first, ir.Constant(vector_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(lane, vector_type.count),
                                              [0] * vector_type.count))


@intrinsic
def _tile_counts_avx2(typingctx, a, row, panels, panel):
    """Popcounts of ``a[row + r] XOR b[panel * TILE_COLS + c]`` over all words, for
    ``r < TILE_ROWS`` and ``c < TILE_COLS``: a tuple of uint64 in row-major order (numba only;
    no bounds checks). ``a``: C-contiguous uint64 ``(M, W)``; ``panels``: C-contiguous
    uint64 ``(P, W, TILE_COLS)``.
    """
    if not (a == _WORDS_2D and panels == _WORDS_3D and isinstance(row, types.Integer)
            and isinstance(panel, types.Integer)):
        return None
    signature = types.UniTuple(types.uint64, TILE_ROWS * TILE_COLS)(a, row, panels, panel)

    def codegen(context, builder, sig, args):
        i64, i32, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(8)
        words_t = ir.VectorType(i64, 4)
        bytes_t = ir.VectorType(i8, 32)
        pshufb = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(bytes_t, [bytes_t, bytes_t]),
            "llvm.x86.avx2.pshuf.b")
        psadbw = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(words_t, [bytes_t, bytes_t]),
            "llvm.x86.avx2.psad.bw")
        row_index = context.cast(builder, args[1], sig.args[1], types.intp)
        panel_index = context.cast(builder, args[3], sig.args[3], types.intp)
        a_array = context.make_array(sig.args[0])(context, builder, args[0])
        p_array = context.make_array(sig.args[2])(context, builder, args[2])
        n_words = cgutils.unpack_tuple(builder, a_array.shape, 2)[1]
        a_rows = [builder.gep(a_array.data, [builder.mul(
            builder.add(row_index, ir.Constant(i64, r)), n_words)]) for r in range(TILE_ROWS)]
        panel_start = builder.gep(p_array.data, [builder.mul(
            panel_index, builder.mul(n_words, ir.Constant(i64, TILE_COLS)))])
        table = ir.Constant(bytes_t, _NIBBLE_COUNTS * 2)
        low_mask = ir.Constant(bytes_t, [15] * 32)
        zero_bytes = ir.Constant(bytes_t, [0] * 32)
        four = ir.Constant(ir.VectorType(ir.IntType(16), 16), [4] * 16)
        sums = [[cgutils.alloca_once_value(builder, ir.Constant(words_t, None))
                 for _ in range(VECTORS)] for _ in range(TILE_ROWS)]
        counts = [[cgutils.alloca_once_value(builder, zero_bytes) for _ in range(VECTORS)]
                  for _ in range(TILE_ROWS)]
        block = ir.Constant(i64, BYTE_BLOCK)
        n_blocks = builder.udiv(builder.add(n_words, ir.Constant(i64, BYTE_BLOCK - 1)), block)
        with cgutils.for_range(builder, n_blocks) as outer:
            start = builder.mul(outer.index, block)
            stop = builder.select(builder.icmp_unsigned("<", builder.add(start, block), n_words),
                                  builder.add(start, block), n_words)
            for r in range(TILE_ROWS):
                for v in range(VECTORS):
                    builder.store(zero_bytes, counts[r][v])
            with cgutils.for_range_slice(builder, start, stop, ir.Constant(i64, 1)) as (w, _):
                b_vectors = []
                for v in range(VECTORS):
                    offset = builder.add(builder.mul(w, ir.Constant(i64, TILE_COLS)),
                                         ir.Constant(i64, 4 * v))
                    pointer = builder.bitcast(builder.gep(panel_start, [offset]),
                                              words_t.as_pointer())
                    b_vectors.append(builder.load(pointer, align=8))
                for r in range(TILE_ROWS):
                    a_vector = _splat(builder, builder.load(builder.gep(a_rows[r], [w])),
                                      words_t)
                    for v in range(VECTORS):
                        x = builder.bitcast(builder.xor(a_vector, b_vectors[v]), bytes_t)
                        low = builder.and_(x, low_mask)
                        high = builder.and_(builder.bitcast(builder.lshr(
                            builder.bitcast(x, four.type), four), bytes_t), low_mask)
                        n = builder.add(builder.call(pshufb, [table, low]),
                                        builder.call(pshufb, [table, high]))
                        builder.store(builder.add(builder.load(counts[r][v]), n), counts[r][v])
            for r in range(TILE_ROWS):
                for v in range(VECTORS):
                    lanes = builder.call(psadbw, [builder.load(counts[r][v]), zero_bytes])
                    builder.store(builder.add(builder.load(sums[r][v]), lanes), sums[r][v])
        result = ir.Constant(context.get_value_type(sig.return_type), ir.Undefined)
        for r in range(TILE_ROWS):
            for v in range(VECTORS):
                total = builder.load(sums[r][v])
                for k in range(4):
                    result = builder.insert_value(
                        result, builder.extract_element(total, ir.Constant(i32, k)),
                        r * TILE_COLS + 4 * v + k)
        return result

    return signature, codegen


def tile_probe(a, panels):
    """One call of the tile (for ``kernel_info``: compiled without the cache, to read its
    assembly)."""
    return _tile_counts_avx2(a, 0, panels, 0)


@numba.njit(cache=True)
def _store(out, i, j, length, count, row_scale, col_scale, bias):  # pragma: no cover
    """out[i, j] = K - 2 * count, scaled when scales are given (resolved at compile time)."""
    dot = length - 2 * np.int64(count)
    if row_scale is None:
        out[i, j] = dot
    else:
        out[i, j] = np.float32(dot) * row_scale[i] * col_scale[j] + bias[j]


@numba.njit(cache=True, parallel=True, boundscheck=False)
def xnor_gemm_tiled_avx2(a, panels, length, panel_block, row_scale, col_scale, bias,
                         out):  # pragma: no cover - compiled
    """``out[i, j]`` for every row of ``a`` and row of ``b`` (given as ``panels``), blocks of
    ``panel_block`` panels at a time (they stay in L2), tiles of rows in parallel."""
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
            n_rows = min(TILE_ROWS, m - i)
            for p in range(first_panel, last_panel):
                j = p * TILE_COLS
                counts = _tile_counts_avx2(rows, row, panels, p)
                n_cols = min(TILE_COLS, n - j)
                for r in range(n_rows):
                    for c in range(n_cols):
                        _store(out, i + r, j + c, length, counts[r * TILE_COLS + c],
                               row_scale, col_scale, bias)
