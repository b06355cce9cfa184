"""Exact int8 GEMM on AVX2 without VNNI: ``vpmaddubsw`` on ``|a|`` and ``b * sign(a)``.

``gemm_maddubs(a, packed)`` computes ``c = a @ b`` for int8 ``a [M, K]`` (any value, -128
included) and int8 ``b [K, N]`` restricted to ``[-127, 127]`` (the course's weights:
symmetric, :data:`course.nn.integer.WEIGHT_QMAX`), int32 ``[M, N]``, bit for bit
equal to :func:`course.kernels.int8_gemm.int8_gemm_reference` for ``K <= MAX_K``.
:func:`pack_b` refuses a ``b`` holding -128 (``ValueError``); the caller then takes the
widened kernel of :mod:`course.kernels.int8_gemm_avx2`, exact for every input.

Why it is exact: ``a * b = |a| * (b * sign(a))``. ``vpabsb`` gives ``|a|``, which read as an
*unsigned* byte is in ``[0, 128]`` (``|-128| = 128``); ``vpsignb(b, a)`` gives ``b * sign(a)``
(0 where ``a`` is 0), in ``[-127, 127]`` because ``b`` is (it would wrap for ``b = -128``).
``vpmaddubsw`` (``llvm.x86.avx2.pmadd.ub.sw``) multiplies the unsigned by the signed bytes
and adds adjacent pairs into int16 with saturation, but a pair is at most
``2 * 128 * 127 = 32512 < 32767``: it never saturates. ``vpmaddwd`` with ones adds adjacent
int16 into int32 lanes (4 products each), and int32 sums of ``K <= MAX_K`` products cannot
overflow.

Per 32 multiply-adds: ``vpsignb``, ``vpmaddubsw``, ``vpmaddwd``, ``vpaddd`` (4 instructions,
as the widened kernel), but half the bytes of both operands, and no packing of ``a`` at all:
each row's 4 bytes ``a[i, k:k+4]`` are broadcast straight from the row-major matrix, and
``|a|`` is computed once per broadcast and used for all :data:`NV` vectors of ``b``.

Layout: ``a`` int8 row-major ``[M, Kp]`` (copied, zero padded, only where ``K`` is not a
multiple of 4, rows are not contiguous or ``M`` is not a multiple of :data:`MR`); ``b``
packed once into panels of :data:`NR` columns, 4 consecutive ``k`` per 32-bit lane
(int8 ``[Np/NR, Kp/4, NR, 4]``). Register tile :data:`MR` x :data:`NR` int32 (the
accumulators, the ``b`` vectors, the broadcast, ``|a|`` and a product: no spills, checked
by ``tests/course/kernels/test_int8.py`` on the assembly).

Only compiled when called, and only called on x86-64 with AVX2
(:func:`course.kernels.cpu_features.kernel_isa`): nothing here is compiled on ARM.
"""

from __future__ import annotations

import types as pytypes
from dataclasses import dataclass

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from course.kernels.int8_dynamic import dequantize_block
from course.kernels.requantize import RequantParams, requantize_block

B_MIN = -127
"""Smallest value ``b`` may hold (``b * sign(a)`` must fit int8)."""

MR = 2
"""Rows of ``a`` per register tile."""

NV = 4
"""ymm vectors (8 int32 columns each) per row of the register tile: 8 accumulators, 4 ``b``
vectors, the broadcast, ``|a|``, a product and the ones (16 ymm registers)."""

NR = 8 * NV
"""Columns of ``b`` per register tile (one packed panel)."""

KC = 1024
"""Block of K (a multiple of 4) per call of the register tile (measured at 1024^3 on a Zen 4
limited to AVX2: 256 and 512 were 15-20 % slower, 2048 the same; a task's ``b`` block stays
in L2). Tiles of 4 x 16, 5 x 16, 6 x 16 and 3 x 24 were slower; 1 x 64 about 4 % faster at
1024^3 but pads a layer of 10 or 16 outputs to 64 columns."""

PANELS_PER_TASK = 32
"""Panels of ``a`` (of MR rows) per parallel task: 64 rows."""

B_PANELS_PER_TASK = 4
"""Panels of ``b`` (of NR columns) per parallel task: 128 columns."""


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


# ----------------------------------------------------------------------------- IR tile


def _make_tile(mr: int, nv: int):
    """The register tile as a numba intrinsic, for ``mr`` rows and ``nv`` vectors of ``b``."""

    @intrinsic
    def tile(typingctx, a_addr, lda, b_addr, quads, c_addr, ldc, accumulate):
        """``c[0:mr, 0:8*nv] (+)= A @ B_panel`` over ``quads`` groups of 4 k (numba only).

        ``a_addr``: int8 row-major, row stride ``lda`` bytes; ``b_addr``: ``quads * nv``
        vectors of 32 int8; ``c_addr``: int32, row stride ``ldc`` elements, added to when
        ``accumulate`` is nonzero, else overwritten. Addresses are integers; no checks.
        """
        args = (a_addr, lda, b_addr, quads, c_addr, ldc, accumulate)
        if not all(isinstance(t, types.Integer) for t in args):
            return None
        signature = types.void(*([types.intp] * len(args)))

        def codegen(context, builder, sig, llargs):
            from numba.core import cgutils

            a_addr, lda, b_addr, quads, c_addr, ldc, accumulate = (
                context.cast(builder, v, t, types.intp)
                for v, t in zip(llargs, sig.args, strict=True))
            i1, i8, i16, i32, i64 = (ir.IntType(w) for w in (1, 8, 16, 32, 64))
            acc_t, pair_t, byte_t = (ir.VectorType(i32, 8), ir.VectorType(i16, 16),
                                     ir.VectorType(i8, 32))
            module = builder.module
            maddubs = cgutils.get_or_insert_function(
                module, ir.FunctionType(pair_t, [byte_t, byte_t]), "llvm.x86.avx2.pmadd.ub.sw")
            madd = cgutils.get_or_insert_function(
                module, ir.FunctionType(acc_t, [pair_t, pair_t]), "llvm.x86.avx2.pmadd.wd")
            sign = cgutils.get_or_insert_function(
                module, ir.FunctionType(byte_t, [byte_t, byte_t]), "llvm.x86.avx2.psign.b")
            absb = cgutils.get_or_insert_function(
                module, ir.FunctionType(byte_t, [byte_t, i1]), "llvm.abs.v32i8")
            ones = ir.Constant(pair_t, [1] * 16)
            zeros8 = ir.Constant(acc_t, [0] * 8)
            a_base = builder.inttoptr(a_addr, i8.as_pointer())
            b_ptr = builder.inttoptr(b_addr, byte_t.as_pointer())
            c_ptr = builder.inttoptr(c_addr, i32.as_pointer())
            rows = [builder.gep(a_base, [builder.mul(ir.Constant(i64, r), lda)])
                    for r in range(mr)]
            sums = [[cgutils.alloca_once_value(builder, ir.Constant(acc_t, [0] * 8))
                     for _ in range(nv)] for _ in range(mr)]
            with cgutils.for_range(builder, quads) as loop:
                q = loop.index
                b_vecs = [builder.load(builder.gep(b_ptr, [builder.add(
                    builder.mul(q, ir.Constant(i64, nv)), ir.Constant(i64, v))]), align=32)
                    for v in range(nv)]
                offset = builder.mul(q, ir.Constant(i64, 4))
                for r in range(mr):
                    word_ptr = builder.bitcast(builder.gep(rows[r], [offset]), i32.as_pointer())
                    word = builder.load(word_ptr, align=1)
                    first = builder.insert_element(ir.Constant(acc_t, ir.Undefined), word,
                                                   ir.Constant(i32, 0))
                    splat = builder.shuffle_vector(first, ir.Constant(acc_t, ir.Undefined),
                                                   zeros8)
                    a_vec = builder.bitcast(splat, byte_t)
                    a_abs = builder.call(absb, [a_vec, ir.Constant(i1, 0)])
                    for v in range(nv):
                        signed = builder.call(sign, [b_vecs[v], a_vec])
                        pairs = builder.call(maddubs, [a_abs, signed])
                        quad = builder.call(madd, [pairs, ones])
                        builder.store(builder.add(builder.load(sums[r][v]), quad), sums[r][v])
            add = builder.icmp_signed("!=", accumulate, ir.Constant(i64, 0))
            for r in range(mr):
                row = builder.gep(c_ptr, [builder.mul(ir.Constant(i64, r), ldc)])
                for v in range(nv):
                    target = builder.bitcast(builder.gep(row, [ir.Constant(i64, 8 * v)]),
                                             acc_t.as_pointer())
                    new = builder.load(sums[r][v])
                    old = builder.load(target, align=4)
                    builder.store(builder.select(add, builder.add(old, new), new), target,
                                  align=4)
            return context.get_dummy_value()

        return signature, codegen

    return tile


_tile = _make_tile(MR, NV)


# ----------------------------------------------------------------------------- numba


def _pack_b_body(b, out):  # pragma: no cover - compiled
    """int8 ``b [K, N]`` (any strides) -> int8 ``out [Np/NR, Kp/4, NR, 4]``, zero padded."""
    k, n = b.shape
    panels, quads = out.shape[0], out.shape[1]
    for p in prange(panels):
        for q in range(quads):
            for t in range(4):
                kk = 4 * q + t
                for c in range(NR):
                    j = p * NR + c
                    out[p, q, c, t] = b[kk, j] if (kk < k and j < n) else 0


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _task(a_base, kp, b_base, quads, c_base, ldc, a_panels, b_panels, t, row_blocks
          ):  # pragma: no cover - compiled
    """Task ``t``: the block of ``c`` of :data:`PANELS_PER_TASK` panels of ``a`` by
    :data:`B_PANELS_PER_TASK` panels of ``b``, over all of K (blocks of :data:`KC`; the first
    writes, later ones add), ``b`` panels outer so that one stays in L1 while the task's rows
    of ``a`` pass. Returns the block's first row and column."""
    rb = t % row_blocks
    cb = t // row_blocks
    for q0 in range(0, quads, KC // 4):
        qn = min(KC // 4, quads - q0)
        accumulate = 1 if q0 > 0 else 0
        for bp in range(cb * B_PANELS_PER_TASK, min((cb + 1) * B_PANELS_PER_TASK, b_panels)):
            b_addr = b_base + (bp * quads + q0) * NR * 4
            for ap in range(rb * PANELS_PER_TASK, min((rb + 1) * PANELS_PER_TASK, a_panels)):
                a_addr = a_base + ap * MR * kp + q0 * 4
                c_addr = c_base + ((ap * MR) * ldc + bp * NR) * 4
                _tile(a_addr, kp, b_addr, qn, c_addr, ldc, accumulate)
    return rb * PANELS_PER_TASK * MR, cb * B_PANELS_PER_TASK * NR


@numba.njit(cache=True, nogil=True)
def _tasks(a, b_packed):  # pragma: no cover - compiled
    """(number of tasks, row blocks) for ``a [Mp, Kp]`` and the packed ``b``."""
    row_blocks = (a.shape[0] // MR + PANELS_PER_TASK - 1) // PANELS_PER_TASK
    col_blocks = (b_packed.shape[0] + B_PANELS_PER_TASK - 1) // B_PANELS_PER_TASK
    return row_blocks * col_blocks, row_blocks


TASK_ROWS = PANELS_PER_TASK * MR
TASK_COLS = B_PANELS_PER_TASK * NR


def _gemm_body(a, b_packed, c):  # pragma: no cover - compiled
    """``c [Mp, Np]`` int32 ``= a @ B`` for row-major int8 ``a [Mp, Kp]`` (Mp a multiple of
    MR, Kp of 4) and the packed ``b``: the tasks of :func:`_task` over numba's threads."""
    tasks, row_blocks = _tasks(a, b_packed)
    for t in prange(tasks):
        _task(a.ctypes.data, a.shape[1], b_packed.ctypes.data, b_packed.shape[1],
              c.ctypes.data, c.shape[1], a.shape[0] // MR, b_packed.shape[0], t, row_blocks)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _task_requantize(a, b_packed, c, t, row_blocks, m, s, bias, zp, qmin, qmax,
                     out):  # pragma: no cover - compiled
    """Task ``t`` of :func:`_task`, then its block requantized to int8 ``out [M, N]`` while it
    is in cache (:func:`course.kernels.requantize.requantize_block`)."""
    rows, cols = out.shape
    r0, c0 = _task(a.ctypes.data, a.shape[1], b_packed.ctypes.data, b_packed.shape[1],
                   c.ctypes.data, c.shape[1], a.shape[0] // MR, b_packed.shape[0], t, row_blocks)
    requantize_block(c, r0, min(r0 + TASK_ROWS, rows), c0, min(c0 + TASK_COLS, cols),
                     m, s, bias, zp, qmin, qmax, out)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _task_dequantize(a, b_packed, c, t, row_blocks, correction, scale, bias,
                     out):  # pragma: no cover - compiled
    """Task ``t`` of :func:`_task`, then its block turned into float32 ``out [M, N]`` while it
    is in cache (:func:`course.kernels.int8_dynamic.dequantize_block`)."""
    rows, cols = out.shape
    r0, c0 = _task(a.ctypes.data, a.shape[1], b_packed.ctypes.data, b_packed.shape[1],
                   c.ctypes.data, c.shape[1], a.shape[0] // MR, b_packed.shape[0], t, row_blocks)
    dequantize_block(c, r0, min(r0 + TASK_ROWS, rows), c0, min(c0 + TASK_COLS, cols),
                     correction, scale, bias, out)


# The epilogues are called through these helpers, not written in the prange loops: inside a
# parallel loop's body the same block code measured 5-8x slower (256 x 1024 outputs).
@numba.njit(cache=True, parallel=True, boundscheck=False)
def _gemm_requantize(a, b_packed, c, m, s, bias, zp, qmin, qmax, out):  # pragma: no cover
    """:func:`_gemm_body` with each task's block requantized (:func:`_task_requantize`)."""
    tasks, row_blocks = _tasks(a, b_packed)
    for t in prange(tasks):
        _task_requantize(a, b_packed, c, t, row_blocks, m, s, bias, zp, qmin, qmax, out)


@numba.njit(cache=True, parallel=True, boundscheck=False)
def _gemm_dequantize(a, b_packed, c, correction, scale, bias, out):  # pragma: no cover
    """:func:`_gemm_body` with each task's block dequantized (:func:`_task_dequantize`)."""
    tasks, row_blocks = _tasks(a, b_packed)
    for t in prange(tasks):
        _task_dequantize(a, b_packed, c, t, row_blocks, correction, scale, bias, out)


def _twins(body):
    """(parallel, serial) compiled versions of ``body`` (see :mod:`.int8_gemm_avx2`)."""
    serial = pytypes.FunctionType(body.__code__, body.__globals__, body.__name__ + "_serial")
    serial.__qualname__ = body.__qualname__ + "_serial"
    return (numba.njit(cache=True, parallel=True, boundscheck=False)(body),
            numba.njit(cache=True, nogil=True, boundscheck=False)(serial))


_pack_b, _pack_b_serial = _twins(_pack_b_body)
_gemm, _gemm_serial = _twins(_gemm_body)


# ----------------------------------------------------------------------------- Python


@dataclass(frozen=True)
class PackedB:
    """``b [K, N]`` int8 in ``[-127, 127]`` packed for :func:`gemm_maddubs`."""

    data: np.ndarray
    k: int
    n: int


def restricted(b: torch.Tensor) -> bool:
    """True if int8 ``b`` holds no -128 (the condition for this kernel to be exact)."""
    return b.numel() == 0 or int(b.min()) >= B_MIN


def pack_b(b: torch.Tensor, *, parallel: bool = True) -> PackedB:
    """Pack int8 ``b [K, N]`` (any strides, e.g. ``weight.t()``) with values in [-127, 127].

    Raises ``ValueError`` if ``b`` holds -128 (``b * sign(a)`` would wrap).
    """
    if not restricted(b):
        raise ValueError("b holds -128: the vpmaddubsw kernel needs b in [-127, 127] (use the "
                         "widened int16 kernel)")
    k, n = b.shape
    aligned = np.empty(_round_up(n, NR) // NR * (_round_up(k, 4) // 4) * NR * 4 + 32,
                       dtype=np.int8)
    start = (-aligned.ctypes.data) % 32  # 32-byte aligned vectors of b
    out = aligned[start:start + aligned.size - 32].reshape(
        _round_up(n, NR) // NR, _round_up(k, 4) // 4, NR, 4)
    (_pack_b if parallel else _pack_b_serial)(b.numpy(), out)
    return PackedB(out, k, n)


def _rows_for_kernel(a: torch.Tensor, kp: int) -> np.ndarray:
    """``a`` as row-major int8 ``[Mp, Kp]``: itself when it already is, else a padded copy."""
    m, k = a.shape
    mp = _round_up(m, MR)
    if mp == m and kp == k and a.stride() == (k, 1):
        return a.numpy()
    out = np.zeros((mp, kp), dtype=np.int8)
    out[:m, :k] = a.numpy()
    return out


def _operands(a: torch.Tensor, packed: PackedB) -> tuple[np.ndarray, np.ndarray]:
    rows = _rows_for_kernel(a, packed.data.shape[1] * 4)
    return rows, np.empty((rows.shape[0], packed.data.shape[0] * NR), dtype=np.int32)


def gemm_maddubs(a: torch.Tensor, packed: PackedB, *, parallel: bool = True) -> torch.Tensor:
    """Exact int32 ``a @ b`` for int8 ``a [M, K]`` and a :func:`pack_b` of ``b [K, N]``.

    ``parallel=False`` runs on the calling thread only, without the GIL. Shapes are not
    checked here (see :func:`course.kernels.int8_gemm.int8_gemm`).
    """
    m, k = a.shape
    n = packed.n
    if m == 0 or n == 0 or k == 0:
        return torch.zeros(m, n, dtype=torch.int32)
    rows, c = _operands(a, packed)
    (_gemm if parallel else _gemm_serial)(rows, packed.data, c)
    out = torch.from_numpy(c)[:m]
    return out if out.shape[1] == n else out[:, :n].contiguous()


def gemm_maddubs_requantize(a: torch.Tensor, packed: PackedB, params: RequantParams
                            ) -> torch.Tensor:
    """int8 ``[M, N]``: ``requantize_prepared(a @ b, params)``, fused (same bits).

    ``a`` int8 ``[M, K]`` with ``M, K >= 1``; ``params`` for ``N`` channels. No checks here.
    """
    rows, c = _operands(a, packed)
    out = np.empty((a.shape[0], packed.n), dtype=np.int8)
    _gemm_requantize(rows, packed.data, c, params.multiplier.numpy(), params.shift.numpy(),
                     params.bias.numpy(), params.zero_point, params.qmin, params.qmax, out)
    return torch.from_numpy(out)


def gemm_maddubs_dequantize(a: torch.Tensor, packed: PackedB, correction: np.ndarray,
                            scale: np.ndarray, bias: np.ndarray) -> torch.Tensor:
    """float32 ``[M, N]``: ``float32(acc - correction[n]) * scale[n] + bias[n]`` of
    ``acc = a @ b``, fused (the arithmetic of
    :func:`course.kernels.int8_dynamic.dequantize_accumulators`; ``correction`` float64
    holding integers, ``scale`` and ``bias`` float32, contiguous ``[N]``). No checks here."""
    rows, c = _operands(a, packed)
    out = np.empty((a.shape[0], packed.n), dtype=np.float32)
    _gemm_dequantize(rows, packed.data, c, correction, scale, bias, out)
    return torch.from_numpy(out)
