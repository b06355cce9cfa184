"""Exact int8 GEMM for x86 CPUs with AVX2 but no int8 dot-product instructions (no VNNI).

``gemm_avx2(a, b)`` computes ``c = a @ b`` for int8 ``a [M, K]`` and ``b [K, N]`` as int32
``[M, N]``, bit for bit equal to :func:`course.kernels.int8_gemm.int8_gemm_reference`, for
*every* int8 input (-128 included) and ``K <= MAX_K``.

How: both operands are widened to int16 and multiplied with ``vpmaddwd``
(``llvm.x86.avx2.pmadd.wd``), which multiplies 16 pairs of int16 and adds adjacent products
into 8 int32 lanes. With ``k`` and ``k + 1`` of ``a`` interleaved in one 32-bit lane and the
same two rows of ``b`` interleaved per column, one instruction does 16 multiply-adds of
``c[i, j:j+8]``. It is exact: a pair of int8 products is at most ``2 * 2**14 = 2**15`` in
magnitude, so nothing saturates, and the int32 accumulator holds any sum of
``K <= MAX_K`` products. (``vpmaddubsw`` on raw bytes multiplies *unsigned* by signed bytes
and saturates its int16 pair sums — 255 * 127 * 2 > 32767 — so it is not exact for every
input; on ``|a|`` and ``b * sign(a)`` with ``b`` in [-127, 127] it is, and that kernel,
:mod:`course.kernels.int8_gemm_maddubs`, is the one the ``"avx2_maddubs"`` path runs for
such a ``b``. This widened kernel remains for a ``b`` holding -128.)

Layout: ``a`` is packed per call into panels of :data:`MR` rows, pairs of ``k`` interleaved
(int16 ``[M/MR, K/2, MR, 2]``); ``b`` into panels of :data:`NR` columns
(int16 ``[N/NR, K/2, NR, 2]``) — once, for a layer's weight (:func:`pack_b`). The register
tile is ``MR x NR`` = 6 x 16 int32 (12 of the 16 ymm registers), written as LLVM vector IR
through a numba ``@intrinsic`` (its inner loop: 2 loads, 6 broadcasts, 12 ``vpmaddwd``, 12
``vpaddd``, no spills). ``K`` is cut into blocks of :data:`KC`; per block, tasks of
8 x 8 tiles run in parallel over numba's threads (:func:`_gemm_packed_body`).

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

MR = 6
"""Rows of ``a`` per register tile."""

NV = 2
"""ymm vectors (8 int32 columns each) per row of the register tile."""

NR = 8 * NV
"""Columns of ``b`` per register tile (one packed panel)."""

KC = 512
"""Block of K (a multiple of 2): one packed panel of ``b`` over a block (``KC * NR * 2`` =
16 KB) stays in L1 while a task's panels of ``a`` (``8 * MR * KC * 2`` = 48 KB) pass."""

PANELS_PER_TASK = 8
"""Panels of ``a`` (of MR rows) per parallel task."""

B_PANELS_PER_TASK = 8
"""Panels of ``b`` (of NR columns) per parallel task."""


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


# ----------------------------------------------------------------------------- IR tile


@intrinsic
def _tile_madd16(typingctx, a_addr, b_addr, pairs, c_addr, ldc):
    """``c[0:MR, 0:NR] += A_panel @ B_panel`` over ``pairs`` pairs of k (numba only).

    ``a_addr``: address of ``pairs * MR`` int32 lanes (two int16 ``a`` values each);
    ``b_addr``: of ``pairs * NV`` vectors of 16 int16; ``c_addr``: int32, row stride ``ldc``
    elements. All addresses are integers; no checks: the caller's job.
    """
    if not all(isinstance(t, types.Integer) for t in (a_addr, b_addr, pairs, c_addr, ldc)):
        return None
    signature = types.void(types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        from numba.core import cgutils

        a_addr, b_addr, pairs, c_addr, ldc = (
            context.cast(builder, v, t, types.intp) for v, t in zip(args, sig.args, strict=True))
        i64, i32, i16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
        acc_t = ir.VectorType(i32, 8)
        in_t = ir.VectorType(i16, 16)
        madd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(acc_t, [in_t, in_t]), "llvm.x86.avx2.pmadd.wd")
        a_ptr = builder.inttoptr(a_addr, i32.as_pointer())
        b_ptr = builder.inttoptr(b_addr, in_t.as_pointer())
        c_ptr = builder.inttoptr(c_addr, i32.as_pointer())
        sums = [[cgutils.alloca_once_value(builder, ir.Constant(acc_t, None))
                 for _ in range(NV)] for _ in range(MR)]
        lane = ir.IntType(32)
        zeros8 = ir.Constant(ir.VectorType(lane, 8), [0] * 8)
        with cgutils.for_range(builder, pairs) as loop:
            p = loop.index
            b_vecs = [builder.load(builder.gep(b_ptr, [builder.add(
                builder.mul(p, ir.Constant(i64, NV)), ir.Constant(i64, v))]), align=2)
                for v in range(NV)]
            for r in range(MR):
                word = builder.load(builder.gep(a_ptr, [builder.add(
                    builder.mul(p, ir.Constant(i64, MR)), ir.Constant(i64, r))]), align=4)
                first = builder.insert_element(ir.Constant(acc_t, ir.Undefined), word,
                                               ir.Constant(lane, 0))
                splat = builder.shuffle_vector(first, ir.Constant(acc_t, ir.Undefined), zeros8)
                a_vec = builder.bitcast(splat, in_t)
                for v in range(NV):
                    prod = builder.call(madd, [a_vec, b_vecs[v]])
                    builder.store(builder.add(builder.load(sums[r][v]), prod), sums[r][v])
        for r in range(MR):
            row = builder.gep(c_ptr, [builder.mul(ir.Constant(i64, r), ldc)])
            for v in range(NV):
                target = builder.bitcast(builder.gep(row, [ir.Constant(i64, 8 * v)]),
                                         acc_t.as_pointer())
                old = builder.load(target, align=4)
                builder.store(builder.add(old, builder.load(sums[r][v])), target, align=4)
        return context.get_dummy_value()

    return signature, codegen


# ----------------------------------------------------------------------------- numba


def _pack_a_body(a, out):  # pragma: no cover - compiled
    """int8 ``a [M, K]`` (any strides) -> int16 ``out [Mp/MR, Kp/2, MR, 2]``, zero padded."""
    m, k = a.shape
    panels, pairs = out.shape[0], out.shape[1]
    for p in prange(panels):
        for r in range(MR):
            i = p * MR + r
            if i < m:
                for q in range(pairs):
                    k0 = 2 * q
                    out[p, q, r, 0] = a[i, k0] if k0 < k else 0
                    out[p, q, r, 1] = a[i, k0 + 1] if k0 + 1 < k else 0
            else:
                for q in range(pairs):
                    out[p, q, r, 0] = 0
                    out[p, q, r, 1] = 0


def _pack_b_body(b, out):  # pragma: no cover - compiled
    """int8 ``b [K, N]`` (any strides) -> int16 ``out [Np/NR, Kp/2, NR, 2]``, zero padded."""
    k, n = b.shape
    panels, pairs = out.shape[0], out.shape[1]
    for p in prange(panels):
        for q in range(pairs):
            for t in range(2):
                kk = 2 * q + t
                for c in range(NR):
                    j = p * NR + c
                    out[p, q, c, t] = b[kk, j] if (kk < k and j < n) else 0


def _gemm_packed_body(a_packed, b_packed, c):  # pragma: no cover - compiled
    """``c [Mp, Np]`` int32 (zeroed) ``+= A @ B`` from the packed operands.

    Per block of K: tasks of :data:`PANELS_PER_TASK` panels of ``a`` by
    :data:`B_PANELS_PER_TASK` panels of ``b`` (48 x 128 outputs), the ``b`` panels outer so
    that one (16 KB at ``KC = 512``) stays in L1 while every ``a`` panel of the task passes;
    consecutive tasks share their ``b`` block (128 KB, in L2).
    """
    a_panels, pairs = a_packed.shape[0], a_packed.shape[1]
    b_panels = b_packed.shape[0]
    ldc = c.shape[1]
    a_base = a_packed.ctypes.data
    b_base = b_packed.ctypes.data
    c_base = c.ctypes.data
    row_blocks = (a_panels + PANELS_PER_TASK - 1) // PANELS_PER_TASK
    col_blocks = (b_panels + B_PANELS_PER_TASK - 1) // B_PANELS_PER_TASK
    tasks = row_blocks * col_blocks
    for k0 in range(0, pairs, KC // 2):
        kn = min(KC // 2, pairs - k0)
        for t in prange(tasks):
            rb = t % row_blocks
            cb = t // row_blocks
            for bp in range(cb * B_PANELS_PER_TASK, min((cb + 1) * B_PANELS_PER_TASK,
                                                         b_panels)):
                b_addr = b_base + ((bp * pairs + k0) * NR * 2) * 2
                for ap in range(rb * PANELS_PER_TASK, min((rb + 1) * PANELS_PER_TASK,
                                                          a_panels)):
                    a_addr = a_base + ((ap * pairs + k0) * MR * 2) * 2
                    c_addr = c_base + ((ap * MR) * ldc + bp * NR) * 4
                    _tile_madd16(a_addr, b_addr, kn, c_addr, ldc)


# Each kernel twice: on numba's threads (``prange``), and serial without the GIL, for callers
# that already run one task per core in their own Python threads (the fused int8 conv):
# numba's workqueue layer must not be entered from several threads at once.
def _twins(body):
    """(parallel, serial) compiled versions of ``body``. The serial one is a copy under its
    own name: numba's disk cache is keyed by the function's name, not its flags."""
    serial = pytypes.FunctionType(body.__code__, body.__globals__, body.__name__ + "_serial")
    serial.__qualname__ = body.__qualname__ + "_serial"
    return (numba.njit(cache=True, parallel=True, boundscheck=False)(body),
            numba.njit(cache=True, nogil=True, boundscheck=False)(serial))


_pack_a, _pack_a_serial = _twins(_pack_a_body)
_pack_b, _pack_b_serial = _twins(_pack_b_body)
_gemm_packed, _gemm_packed_serial = _twins(_gemm_packed_body)


# ----------------------------------------------------------------------------- Python


@dataclass(frozen=True)
class PackedB:
    """``b [K, N]`` int8 packed for :func:`gemm_avx2` (int16 panels, zero padded)."""

    data: np.ndarray
    k: int
    n: int


def pack_b(b: torch.Tensor, *, parallel: bool = True) -> PackedB:
    """Pack int8 ``b [K, N]`` (any strides, e.g. ``weight.t()``) once for many products."""
    k, n = b.shape
    out = np.empty((_round_up(n, NR) // NR, _round_up(k, 2) // 2, NR, 2), dtype=np.int16)
    (_pack_b if parallel else _pack_b_serial)(b.numpy(), out)
    return PackedB(out, k, n)


def gemm_avx2(a: torch.Tensor, b: torch.Tensor | PackedB, *,
              parallel: bool = True) -> torch.Tensor:
    """Exact int32 ``a @ b`` for int8 ``a [M, K]`` and int8 ``b [K, N]`` (or :func:`pack_b`).

    ``parallel=False`` runs on the calling thread only, without the GIL. Operands are not
    checked here (see :func:`course.kernels.int8_gemm.int8_gemm`).
    """
    packed = b if isinstance(b, PackedB) else pack_b(b, parallel=parallel)
    m, k = a.shape
    n = packed.n
    if m == 0 or n == 0 or k == 0:
        return torch.zeros(m, n, dtype=torch.int32)
    a_packed = np.empty((_round_up(m, MR) // MR, packed.data.shape[1], MR, 2), dtype=np.int16)
    c = np.zeros((a_packed.shape[0] * MR, packed.data.shape[0] * NR), dtype=np.int32)
    if parallel:
        _pack_a(a.numpy(), a_packed)
        _gemm_packed(a_packed, packed.data, c)
    else:
        _pack_a_serial(a.numpy(), a_packed)
        _gemm_packed_serial(a_packed, packed.data, c)
    out = torch.from_numpy(c)[:m]
    return out if out.shape[1] == n else out[:, :n].contiguous()
