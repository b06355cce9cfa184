"""What this CPU can do, as the kernels need to know it: SIMD capability and int8 dot products.

``torch.backends.cpu.get_cpu_capability()`` names the widest vector instruction set PyTorch's
own kernels use (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"`` ...). The int8 dot-product instruction
sets that oneDNN's int8 GEMM needs are read from the flags Linux lists in ``/proc/cpuinfo``:
``avx512_vnni`` (AVX-512 VNNI), ``avx_vnni`` (its 256-bit form) and ``amx_int8`` (AMX tiles).

The course's own numba kernels pick their code by :func:`kernel_isa`, one of
:data:`KERNEL_ISAS`, from the real features of the CPU:

* ``"avx512"`` — x86-64 with AVX-512 F/BW and VPOPCNTDQ (512-bit XOR + popcount);
* ``"avx2"`` — x86-64 with AVX2 and FMA (256-bit integer multiply-adds, ``vpshufb``);
* ``"generic"`` — anything else (ARM64, older x86): only the portable, exact paths; nothing
  x86-specific is compiled.

The environment variable :data:`ISA_ENV` (``COURSE_KERNEL_ISA=avx2``) lowers the choice, so
that a test or benchmark on an AVX-512 machine can run the AVX2 paths; asking for more than
the CPU has raises ``ValueError``. With ``avx2`` or ``generic`` forced, the int8
dot-product instructions count as absent too (:func:`int8_dot_instructions`), so oneDNN's
VNNI paths are not chosen either.

>>> isinstance(cpu_flags(), frozenset)
True
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")

INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
"""cpuinfo flags of x86 int8 dot-product instruction sets, in the order they are reported."""

KERNEL_ISAS = ("avx512", "avx2", "generic")
"""Instruction-set levels of the course's kernels, widest first."""

ISA_ENV = "COURSE_KERNEL_ISA"
"""Environment variable that lowers :func:`kernel_isa` (``avx2`` or ``generic``)."""

_ISA_FLAGS = {"avx512": ("avx2", "fma", "avx512f", "avx512bw", "avx512_vpopcntdq"),
              "avx2": ("avx2", "fma")}
"""cpuinfo flags each level needs (x86-64 only)."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags listed in ``/proc/cpuinfo`` (empty where it does not exist)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_capability() -> str:
    """The SIMD level PyTorch dispatches its CPU kernels to, e.g. ``"AVX512"``."""
    return str(torch.backends.cpu.get_cpu_capability())


def is_x86_64() -> bool:
    """True on an x86-64 machine (the only one the x86 kernels are ever compiled for)."""
    return platform.machine().lower() in ("x86_64", "amd64")


@functools.cache
def native_isa() -> str:
    """The widest of :data:`KERNEL_ISAS` this CPU supports, from its real feature flags."""
    if not is_x86_64():
        return "generic"
    flags = cpu_flags()
    for isa in ("avx512", "avx2"):
        if all(flag in flags for flag in _ISA_FLAGS[isa]):
            return isa
    return "generic"


def kernel_isa() -> str:
    """The level the course's kernels use: :func:`native_isa`, lowered by ``COURSE_KERNEL_ISA``.

    >>> kernel_isa() in KERNEL_ISAS
    True
    """
    native = native_isa()
    wanted = os.environ.get(ISA_ENV, "").strip().lower()
    if not wanted:
        return native
    if wanted not in KERNEL_ISAS:
        raise ValueError(f"{ISA_ENV} must be one of {', '.join(KERNEL_ISAS)}, got {wanted!r}")
    if KERNEL_ISAS.index(wanted) < KERNEL_ISAS.index(native):
        raise ValueError(f"{ISA_ENV}={wanted} asks for more than this CPU has ({native})")
    return wanted


def isa_forced() -> bool:
    """True when ``COURSE_KERNEL_ISA`` lowers the level below the CPU's own."""
    return kernel_isa() != native_isa()


def int8_dot_instructions() -> tuple[str, ...]:
    """The int8 dot-product instruction sets present, e.g. ``("avx512_vnni", "amx_int8")``.

    Empty when ``COURSE_KERNEL_ISA`` forces a level below the CPU's own (an emulated CPU
    without VNNI).
    """
    if isa_forced():
        return ()
    flags = cpu_flags()
    return tuple(flag for flag in INT8_DOT_FLAGS if flag in flags)
