"""What this CPU can do, as the kernels need to know it: SIMD capability and int8 dot products.

``torch.backends.cpu.get_cpu_capability()`` names the widest vector instruction set PyTorch's
own kernels use (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"`` ...). The int8 dot-product instruction
sets that oneDNN's int8 GEMM needs are read from the flags Linux lists in ``/proc/cpuinfo``:
``avx512_vnni`` (AVX-512 VNNI), ``avx_vnni`` (its 256-bit form) and ``amx_int8`` (AMX tiles).

>>> isinstance(cpu_flags(), frozenset)
True
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")

INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
"""cpuinfo flags of x86 int8 dot-product instruction sets, in the order they are reported."""


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


def int8_dot_instructions() -> tuple[str, ...]:
    """The int8 dot-product instruction sets present, e.g. ``("avx512_vnni", "amx_int8")``."""
    flags = cpu_flags()
    return tuple(flag for flag in INT8_DOT_FLAGS if flag in flags)
