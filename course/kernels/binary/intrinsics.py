"""The LLVM intrinsics of the XNOR GEMM (:mod:`course.kernels.binary.gemm`), apart from it.

numba has no ``int.bit_count`` / ``np.bitwise_count`` support, and LLVM's auto-vectorizer,
left alone, vectorizes the tile along K and pays a horizontal sum per output; so the
popcount and the register tile are numba ``@intrinsic`` functions that emit LLVM IR:

* :func:`popcount64` — ``llvm.ctpop.i64`` on one 64-bit word;
* :func:`tile_popcounts` / :func:`tile_into` — a :data:`TILE_ROWS` x :data:`TILE_COLS`
  register tile: per packed word of K, the tile's ``b`` words (one panel, word-interleaved)
  are loaded as vectors of :data:`VECTOR_WORDS` words (one 512-bit register each), every
  ``a`` word broadcast, and XOR, ``llvm.ctpop.v8i64`` and add run on whole vectors.

They are called from numba code only (``@numba.njit``); from Python they raise.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

TILE_ROWS = 4
"""Rows of ``a`` per register tile of the tiled kernel."""

VECTOR_WORDS = 8
"""Packed words per vector in the tiled kernel (8 x 64 bits = one 512-bit register)."""

TILE_COLS = 2 * VECTOR_WORDS
"""Rows of ``b`` per register tile (one panel): two vectors."""


@intrinsic
def popcount64(typingctx, x):
    """Number of set bits of a 64-bit integer, as LLVM's ``llvm.ctpop.i64`` (numba only)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


_WORD_ARRAY_2D = types.Array(types.uint64, 2, "C")
_WORD_ARRAY_3D = types.Array(types.uint64, 3, "C")
_INT32_OUT = types.Array(types.int32, 2, "C")
_FLOAT32_OUT = types.Array(types.float32, 2, "C")
_FLOAT32_VECTOR = types.Array(types.float32, 1, "C")


def _splat(builder, value, vector_type):
    """IR: a vector with every lane equal to the scalar ``value``."""
    lane = ir.IntType(32)
    first = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                                   ir.Constant(lane, 0))
    return builder.shuffle_vector(first, ir.Constant(vector_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(lane, vector_type.count),
                                              [0] * vector_type.count))


def _emit_tile_sums(context, builder, a_type, a_value, row, panels_type, panels_value, panel):
    """LLVM IR of one register tile: the loop over the W packed words of K.

    Returns ``sums[r][v]``: ``<VECTOR_WORDS x i64>`` popcount totals of row ``row + r`` of
    ``a`` against rows ``VECTOR_WORDS * v ...`` of the panel. Per word ``w`` the tile loads
    the panel's ``TILE_COLS`` words as vectors, broadcasts each of its ``TILE_ROWS`` words of
    ``a`` and adds ``ctpop(a XOR b)`` into accumulators that LLVM keeps in registers.
    """
    word = ir.IntType(64)
    vector = ir.VectorType(word, VECTOR_WORDS)
    ctpop = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector, [vector]), f"llvm.ctpop.v{VECTOR_WORDS}i64")
    a_array = context.make_array(a_type)(context, builder, a_value)
    p_array = context.make_array(panels_type)(context, builder, panels_value)
    n_words = cgutils.unpack_tuple(builder, a_array.shape, 2)[1]
    a_rows = [builder.gep(a_array.data, [builder.mul(builder.add(row, ir.Constant(word, r)),
                                                     n_words)]) for r in range(TILE_ROWS)]
    panel_start = builder.gep(p_array.data, [builder.mul(
        panel, builder.mul(n_words, ir.Constant(word, TILE_COLS)))])
    n_vectors = TILE_COLS // VECTOR_WORDS
    sums = [[cgutils.alloca_once_value(builder, ir.Constant(vector, None))
             for _ in range(n_vectors)] for _ in range(TILE_ROWS)]
    with cgutils.for_range(builder, n_words) as loop:
        w = loop.index
        b_vectors = []
        for v in range(n_vectors):
            offset = builder.add(builder.mul(w, ir.Constant(word, TILE_COLS)),
                                 ir.Constant(word, v * VECTOR_WORDS))
            pointer = builder.bitcast(builder.gep(panel_start, [offset]), vector.as_pointer())
            b_vectors.append(builder.load(pointer, align=8))
        for r in range(TILE_ROWS):
            a_vector = _splat(builder, builder.load(builder.gep(a_rows[r], [w])), vector)
            for v in range(n_vectors):
                counts = builder.call(ctpop, [builder.xor(a_vector, b_vectors[v])])
                builder.store(builder.add(builder.load(sums[r][v]), counts), sums[r][v])
    return [[builder.load(slot) for slot in row_slots] for row_slots in sums]


def tile_arguments_ok(a, row, panels, panel) -> bool:
    return (a == _WORD_ARRAY_2D and panels == _WORD_ARRAY_3D
            and isinstance(row, types.Integer) and isinstance(panel, types.Integer))


@intrinsic
def tile_popcounts(typingctx, a, row, panels, panel):
    """Popcounts of ``a[row + r] XOR b[panel * TILE_COLS + c]`` summed over all words, for
    ``r < TILE_ROWS``, ``c < TILE_COLS``: a tuple of ``TILE_ROWS * TILE_COLS`` uint64 in
    row-major order. ``a``: C-contiguous uint64 ``(M, W)``; ``panels``: C-contiguous uint64
    ``(P, W, TILE_COLS)`` from :func:`panel_layout`. No bounds checks: the caller's job.
    """
    if not tile_arguments_ok(a, row, panels, panel):
        return None
    signature = types.UniTuple(types.uint64, TILE_ROWS * TILE_COLS)(a, row, panels, panel)

    def codegen(context, builder, sig, args):
        row_index = context.cast(builder, args[1], sig.args[1], types.intp)
        panel_index = context.cast(builder, args[3], sig.args[3], types.intp)
        sums = _emit_tile_sums(context, builder, sig.args[0], args[0], row_index,
                               sig.args[2], args[2], panel_index)
        lane = ir.IntType(32)
        result = ir.Constant(context.get_value_type(sig.return_type), ir.Undefined)
        for r, row_sums in enumerate(sums):
            for v, total in enumerate(row_sums):
                for k in range(VECTOR_WORDS):
                    result = builder.insert_value(
                        result, builder.extract_element(total, ir.Constant(lane, k)),
                        r * TILE_COLS + v * VECTOR_WORDS + k)
        return result

    return signature, codegen


@intrinsic
def tile_into(typingctx, a, row, panels, panel, length, out, i, j, row_scale, col_scale,
               bias):
    """Compute one full tile and store it at ``out[i:i+TILE_ROWS, j:j+TILE_COLS]``, as
    vectors: int32 ``K - 2 * count`` when the scales are None, else float32
    ``(K - 2 * count) * row_scale[i + r] * col_scale[j + c] + bias[j + c]`` (the same
    operations, in the same order, as the scalar ``_store``). No bounds checks.
    """
    if not tile_arguments_ok(a, row, panels, panel):
        return None
    if not all(isinstance(t, types.Integer) for t in (length, i, j)):
        return None
    scaled = row_scale != types.none
    if scaled:
        if out != _FLOAT32_OUT or any(t != _FLOAT32_VECTOR for t in (row_scale, col_scale,
                                                                      bias)):
            return None
    elif out != _INT32_OUT or col_scale != types.none or bias != types.none:
        return None
    signature = types.none(a, row, panels, panel, length, out, i, j, row_scale, col_scale,
                           bias)

    def codegen(context, builder, sig, args):
        intp = types.intp
        row_index, panel_index, k, i_index, j_index = (
            context.cast(builder, args[n], sig.args[n], intp) for n in (1, 3, 4, 6, 7))
        sums = _emit_tile_sums(context, builder, sig.args[0], args[0], row_index,
                               sig.args[2], args[2], panel_index)
        word = ir.IntType(64)
        lane = ir.IntType(32)
        wide = ir.VectorType(word, VECTOR_WORDS)
        out_array = context.make_array(sig.args[5])(context, builder, args[5])
        n_cols = cgutils.unpack_tuple(builder, out_array.shape, 2)[1]
        lengths = _splat(builder, k, wide)
        one = ir.Constant(wide, [1] * VECTOR_WORDS)
        if scaled:
            single = ir.FloatType()
            floats = ir.VectorType(single, VECTOR_WORDS)
            rows_data, cols_data, bias_data = (
                context.make_array(sig.args[n])(context, builder, args[n]).data
                for n in (8, 9, 10))
        for r, row_sums in enumerate(sums):
            out_row = builder.gep(out_array.data, [builder.add(
                builder.mul(builder.add(i_index, ir.Constant(word, r)), n_cols), j_index)])
            if scaled:
                row_factor = builder.load(builder.gep(rows_data, [
                    builder.add(i_index, ir.Constant(word, r))]))
                row_factors = _splat(builder, row_factor, floats)
            for v, total in enumerate(row_sums):
                dots = builder.sub(lengths, builder.shl(total, one))
                target = builder.gep(out_row, [ir.Constant(word, v * VECTOR_WORDS)])
                if not scaled:
                    values = builder.trunc(dots, ir.VectorType(lane, VECTOR_WORDS))
                    builder.store(values, builder.bitcast(target, values.type.as_pointer()),
                                  align=4)
                    continue
                column = builder.add(j_index, ir.Constant(word, v * VECTOR_WORDS))
                col_factors, offsets = (
                    builder.load(builder.bitcast(builder.gep(data, [column]),
                                                 floats.as_pointer()), align=4)
                    for data in (cols_data, bias_data))
                values = builder.fadd(builder.fmul(builder.fmul(
                    builder.sitofp(dots, floats), row_factors), col_factors), offsets)
                builder.store(values, builder.bitcast(target, floats.as_pointer()), align=4)
        return context.get_dummy_value()

    return signature, codegen
