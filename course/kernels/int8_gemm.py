"""int8 x int8 -> int32 matrix multiply (GEMM), exact, on the fastest path this CPU has.

``int8_gemm(a, b)`` computes ``c[m, n] = sum_k a[m, k] * b[k, n]`` with ``a`` int8 ``[M, K]``,
``b`` int8 ``[K, N]`` and ``c`` int32 ``[M, N]``, exactly (no rounding, no overflow: ``K`` is
at most :data:`MAX_K`, so every sum fits in int32).

Three paths, chosen once per process and reported by :func:`gemm_backend`:

* ``"int_mm"`` — ``torch._int_mm``, which runs oneDNN's int8 kernels (AVX512-VNNI or AMX
  instructions: 4 int8 multiply-adds per 32-bit lane and instruction). Chosen only where the
  CPU advertises those instructions *and* a bit-exactness check against
  :func:`int8_gemm_reference` passes (pytorch issue 136746: an older release overflowed
  silently on CPUs without VNNI).
* ``"avx2_maddubs"`` — x86-64 with AVX2 but no VNNI (most laptops): the course's numba
  kernels, chosen where :func:`course.kernels.cpu_features.kernel_isa` is ``"avx2"`` or
  ``"avx512"`` and their exactness check passes. A ``b`` in ``[-127, 127]`` (every weight
  of the course) runs ``vpmaddubsw`` on ``|a|`` and ``b * sign(a)`` (32 exact multiply-adds
  per instruction pair, :mod:`course.kernels.int8_gemm_maddubs`); a ``b`` holding -128 runs
  the widened ``vpmaddwd`` kernel (:mod:`course.kernels.int8_gemm_avx2`, exact for every
  input). Never compiled elsewhere (ARM).
* ``"avx2_madd16"`` — the widened kernel alone, for every ``b`` (forced only).
* ``"float32_blocked"`` — a portable exact fallback (any other CPU): float32
  ``torch.matmul`` on blocks of ``K`` of at most :data:`FLOAT32_EXACT_BLOCK` = 1024. An
  int8 product is at most ``2**14`` in magnitude, so any partial sum of 1024 of them is an
  integer of magnitude at most ``2**24`` and float32 holds it exactly, in any summation
  order; the block results are converted to int32 and added. If float32 matmuls may use
  reduced precision (``torch.get_float32_matmul_precision() != "highest"``), float64 is
  used instead.

:func:`int8_gemm_reference` is the slow, obviously-correct version: an int64 sum of
outer products, one ``k`` at a time.

>>> a = torch.tensor([[1, -2], [127, -128]], dtype=torch.int8)
>>> b = torch.tensor([[3], [4]], dtype=torch.int8)
>>> int8_gemm(a, b)
tensor([[  -5],
        [-131]], dtype=torch.int32)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from numba.core.errors import NumbaError

from course.kernels import cpu_features

INT8_MIN, INT8_MAX = -128, 127
MAX_PRODUCT = INT8_MIN * INT8_MIN
"""Largest magnitude of one int8 x int8 product: (-128) * (-128) = 2**14."""

MAX_K = (2**31 - 1) // MAX_PRODUCT
"""Longest reduction whose int32 sum can never overflow: 131071."""

FLOAT32_EXACT_BLOCK = 2**24 // MAX_PRODUCT
"""Reduction length (1024) whose partial sums float32 holds exactly (|sum| <= 2**24)."""

BACKENDS = ("int_mm", "avx2_maddubs", "avx2_madd16", "float32_blocked", "reference")
"""Names accepted by ``int8_gemm(..., backend=...)``; ``None`` means the verified default."""

_CHECK_SHAPE = (7, 2 * FLOAT32_EXACT_BLOCK + 5, 9)
"""(M, K, N) of the once-per-process exactness check: K large enough that the extremes'
sums pass 2**24 (where float32 stops being exact)."""


@dataclass(frozen=True)
class GemmBackend:
    """Which int8 GEMM path ``int8_gemm`` takes by default, and why.

    Attributes:
        name: ``"int_mm"``, ``"avx2_maddubs"`` or ``"float32_blocked"``.
        reason: one sentence: the CPU features seen and the result of the exactness check.
        cpu_capability: ``torch.backends.cpu.get_cpu_capability()`` (e.g. ``"AVX512"``).
        int8_instructions: the int8 dot-product instruction sets the CPU advertises.
    """

    name: str
    reason: str
    cpu_capability: str
    int8_instructions: tuple[str, ...]
    kernel_isa: str = "generic"


@dataclass(frozen=True, eq=False)
class PackedInt8:
    """A right operand ``b [K, N]`` int8 prepared once for many :func:`int8_gemm` calls
    (a layer's weight): the tensor itself and, on the ``"avx2_maddubs"`` path, its packed
    panels (int8 for the ``vpmaddubsw`` kernel where ``b`` is in [-127, 127], else int16).
    If ``b`` is modified in place later (its version counter moves), the panels are ignored
    and ``b`` is used as it is now.
    """

    b: torch.Tensor
    panels: object
    version: int

    @property
    def shape(self) -> torch.Size:
        return self.b.shape


def pack_int8(b: torch.Tensor) -> PackedInt8:
    """Prepare int8 ``b [K, N]`` (e.g. ``weight.t()``) for the default path of int8_gemm."""
    if not isinstance(b, torch.Tensor) or b.dtype != torch.int8 or b.dim() != 2:
        raise TypeError(f"b must be a 2-D int8 tensor, got "
                        f"{getattr(b, 'dtype', type(b).__name__)}")
    panels = _pack_avx2(b) if gemm_backend().name == "avx2_maddubs" else None
    return PackedInt8(b, panels, b._version)


def _pack_avx2(b: torch.Tensor, parallel: bool = True) -> object:
    """Panels of ``b`` for the AVX2 kernels: int8 (``vpmaddubsw``) if ``b`` is in [-127, 127],
    else int16 (``vpmaddwd``)."""
    from course.kernels import int8_gemm_avx2, int8_gemm_maddubs

    if int8_gemm_maddubs.restricted(b):
        return int8_gemm_maddubs.pack_b(b, parallel=parallel)
    return int8_gemm_avx2.pack_b(b, parallel=parallel)


def _check_operands(a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(b, PackedInt8):
        b = b.b
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int8:
            raise TypeError(f"{name} must be an int8 tensor, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
        if t.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU, got {t.device}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: a is {tuple(a.shape)}, b is {tuple(b.shape)}"
                         " (need a [M, K] and b [K, N])")
    if a.shape[1] > MAX_K:
        raise ValueError(f"K = {a.shape[1]} exceeds MAX_K = {MAX_K}: the int32 sum could "
                         "overflow")
    return a, b


def int8_gemm_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Slow, obviously-correct ``a @ b``: int64 outer products summed one ``k`` at a time.

    Same contract as :func:`int8_gemm`: ``a`` int8 ``[M, K]``, ``b`` int8 ``[K, N]``;
    returns int32 ``[M, N]``.

    >>> int8_gemm_reference(torch.full((1, 2), -128, dtype=torch.int8),
    ...                     torch.full((2, 1), -128, dtype=torch.int8))
    tensor([[32768]], dtype=torch.int32)
    """
    a, b = _check_operands(a, b)
    acc = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int64)
    for k in range(a.shape[1]):
        acc += a[:, k : k + 1].to(torch.int64) * b[k : k + 1, :].to(torch.int64)
    return acc.to(torch.int32)


def blas_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself if it is a plain row-major or column-major matrix, else a contiguous copy.

    ``torch._int_mm`` (2.13, CPU) returns garbage for a ``[1, K]`` operand with strides
    ``(1, 1)`` — the transpose of a ``[K, 1]`` column, which PyTorch calls contiguous — so
    vectors and odd strides are copied into fresh row-major storage (cheap: a vector, or
    a matrix that would be copied inside anyway).
    """
    rows, cols = t.shape
    if rows > 1 and cols > 1:
        if t.stride(1) == 1 and t.stride(0) >= cols:
            return t
        if t.stride(0) == 1 and t.stride(1) >= rows:
            return t
    return torch.empty(rows, cols, dtype=t.dtype).copy_(t)


def _gemm_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch._int_mm(blas_layout(a), blas_layout(b))


def _gemm_float32_blocked(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    exact_float32 = torch.get_float32_matmul_precision() == "highest"
    dtype = torch.float32 if exact_float32 else torch.float64
    k = a.shape[1]
    if k <= FLOAT32_EXACT_BLOCK or not exact_float32:
        # float64 holds every sum up to MAX_K * 2**14 < 2**31 exactly.
        return torch.matmul(a.to(dtype), b.to(dtype)).to(torch.int32)
    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int32)
    for start in range(0, k, FLOAT32_EXACT_BLOCK):
        stop = min(start + FLOAT32_EXACT_BLOCK, k)
        part = torch.matmul(a[:, start:stop].to(dtype), b[start:stop].to(dtype))
        out += part.to(torch.int32)
    return out


def _check_avx2() -> None:
    if not cpu_features.is_x86_64() or cpu_features.native_isa() == "generic":
        raise RuntimeError("the AVX2 int8 GEMM kernels need an x86-64 CPU with AVX2 and FMA")


def avx2_gemm(a: torch.Tensor, b: torch.Tensor | PackedInt8, *,
              parallel: bool = True) -> torch.Tensor:
    """The ``"avx2_maddubs"`` path: int32 ``a @ b`` on the AVX2 kernels (no checks of ``a``;
    ``parallel=False`` runs on the calling thread, without the GIL)."""
    _check_avx2()
    from course.kernels import int8_gemm_avx2, int8_gemm_maddubs

    panels = None
    if isinstance(b, PackedInt8):
        if b.panels is not None and b.b._version == b.version:
            panels = b.panels
        b = b.b
    if panels is None:
        panels = _pack_avx2(b, parallel)
    if isinstance(panels, int8_gemm_maddubs.PackedB):
        return int8_gemm_maddubs.gemm_maddubs(a, panels, parallel=parallel)
    return int8_gemm_avx2.gemm_avx2(a, panels, parallel=parallel)


def _gemm_madd16(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _check_avx2()
    from course.kernels.int8_gemm_avx2 import gemm_avx2

    return gemm_avx2(a, b)


_IMPLEMENTATIONS = {
    "int_mm": _gemm_int_mm,
    "avx2_maddubs": avx2_gemm,
    "avx2_madd16": _gemm_madd16,
    "float32_blocked": _gemm_float32_blocked,
}


def _check_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """A small random problem with the extremes: rows/columns of -128 and 127."""
    m, k, n = _CHECK_SHAPE
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(INT8_MIN, INT8_MAX + 1, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(INT8_MIN, INT8_MAX + 1, (k, n), generator=gen, dtype=torch.int8)
    a[0], a[1] = INT8_MIN, INT8_MAX
    b[:, 0], b[:, 1] = INT8_MIN, INT8_MAX
    return a, b


def verify_exact(name: str) -> bool:
    """True if backend ``name`` matches :func:`int8_gemm_reference` bit for bit.

    The check problem is ``[7, 2053] x [2053, 9]`` with whole rows and columns at -128 and
    127 (sums up to ``2053 * 2**14``, past float32's exact range) and random entries elsewhere;
    for ``"avx2_maddubs"`` also with ``b`` clamped to [-127, 127] (its ``vpmaddubsw`` kernel).
    """
    if name not in _IMPLEMENTATIONS:
        raise ValueError(f"backend must be one of {', '.join(_IMPLEMENTATIONS)}, got {name!r}")
    a, b = _check_problem()
    problems = [(a, b)]
    if name == "avx2_maddubs":  # b in [-127, 127] takes the vpmaddubsw kernel: check it too
        problems.append((a, b.clamp(min=INT8_MIN + 1)))
    for a, b in problems:
        try:
            got = _IMPLEMENTATIONS[name](a, b)
        except (RuntimeError, NumbaError):
            return False
        if got.dtype != torch.int32 or not torch.equal(got, int8_gemm_reference(a, b)):
            return False
    return True


@functools.cache
def gemm_backend() -> GemmBackend:
    """The default path of :func:`int8_gemm`, chosen (and verified) once per process.

    >>> gemm_backend().name in ("int_mm", "avx2_maddubs", "float32_blocked")
    True
    """
    capability = cpu_features.cpu_capability()
    instructions = cpu_features.int8_dot_instructions()
    seen = f"capability {capability}, int8 dot instructions: {', '.join(instructions) or 'none'}"
    if instructions and hasattr(torch, "_int_mm"):
        if verify_exact("int_mm"):
            return GemmBackend("int_mm", f"torch._int_mm (oneDNN) verified bit-exact; {seen}",
                               capability, instructions, cpu_features.kernel_isa())
        reason = "torch._int_mm failed the exactness check"
    else:
        reason = "no int8 dot-product instructions for oneDNN"
    isa = cpu_features.kernel_isa()
    forced = (f" ({cpu_features.ISA_ENV}={isa}; the CPU has {cpu_features.native_isa()})"
              if cpu_features.isa_forced() else "")
    seen += f", course kernels: {isa}{forced}"
    if isa in ("avx2", "avx512"):
        if verify_exact("avx2_maddubs"):
            return GemmBackend("avx2_maddubs", f"numba AVX2 int8 GEMM verified bit-exact "
                               f"(vpmaddubsw on |a| and b*sign(a) for b in [-127, 127], "
                               f"vpmaddwd on int16 otherwise; int32 sums); {reason}; {seen}",
                               capability, instructions, isa)
        reason += "; the avx2_maddubs kernels failed the exactness check"
    if not verify_exact("float32_blocked"):  # pragma: no cover - would mean a broken BLAS
        raise RuntimeError(f"no exact int8 GEMM path on this machine ({reason})")
    return GemmBackend("float32_blocked", f"exact float32 blocked matmul: {reason}; {seen}",
                       capability, instructions, isa)


def int8_gemm(a: torch.Tensor, b: torch.Tensor | PackedInt8, *,
              backend: str | None = None) -> torch.Tensor:
    """Exact ``a @ b`` of int8 matrices with int32 accumulation.

    Args:
        a: int8 ``[M, K]`` (any strides), CPU.
        b: int8 ``[K, N]`` (any strides; ``w.t()`` of a contiguous ``[N, K]`` weight is the
            fast layout), CPU, or the same prepared once by :func:`pack_int8`.
            ``K <= MAX_K``.
        backend: ``None`` for :func:`gemm_backend` (verified once), or one of
            :data:`BACKENDS` to force a path (``"reference"`` is the slow loop).

    Returns:
        int32 ``[M, N]``, bit-identical to :func:`int8_gemm_reference` on every path.

    >>> int8_gemm(torch.ones(2, 3, dtype=torch.int8), torch.ones(3, 4, dtype=torch.int8)).sum()
    tensor(24)
    """
    packed = b
    a, b = _check_operands(a, b)
    if backend is None:
        name = gemm_backend().name
        return _IMPLEMENTATIONS[name](a, packed if name == "avx2_maddubs" else b)
    if backend == "reference":
        return int8_gemm_reference(a, b)
    if backend not in _IMPLEMENTATIONS:
        raise ValueError(f"backend must be None or one of {', '.join(BACKENDS)}, got {backend!r}")
    return _IMPLEMENTATIONS[backend](a, b)
