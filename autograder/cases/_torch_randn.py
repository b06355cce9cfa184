"""``torch.randn`` on the CPU, recomputed in float64 so that reference files do not depend on
the CPU that writes them.

The float32 normals of ``torch.randn(shape, generator=g)`` are last-bit different on
different CPUs: the uniform numbers drawn from the generator are exact (integers from the
Mersenne twister, scaled by a power of two), but the Box-Muller transform that turns them
into normals runs in float32 with the CPU's own ``log``/``cos``/``sin`` (a vectorized
AVX2 version on some machines, the C library's on others). :class:`RandnReplay` draws the
same exact uniform numbers from a twin generator (``torch.rand``) and replays the transform
of PyTorch 2.x's CPU kernel in float64 with Python's ``math``, rounding once to float32:

- ``numel >= 16`` (float32): ``numel`` uniforms ``u`` in float32 (24 bits), transformed in
  blocks of 16: for ``j < 8``, ``r = sqrt(-2 log(1 - u[j]))``, ``theta = 2 pi u[j + 8]``
  (``2 pi`` rounded to float32, the product too, as the kernel computes them),
  ``out[j] = r cos(theta)``, ``out[j + 8] = r sin(theta)``. A tail that is not a multiple of
  16 is redone: 16 new uniforms replace the last 16 values and are transformed as a block.
- ``numel < 16``: per element, the generator's float64 normal: two 53-bit uniforms
  ``u1, u2``, ``r = sqrt(-2 log1p(-u2))``, ``theta = 2 pi u1``, value ``r cos(theta)``;
  ``r sin(theta)`` is kept by the generator and returned by the next such draw.

``tests/labs/test_lab06_cases.py`` checks the replay against ``torch.randn`` to a few float32
units in the last place, so a PyTorch that draws differently is noticed.
"""

from __future__ import annotations

import math
import struct

import torch

BLOCK = 16
"""The CPU kernel transforms uniforms 16 at a time (8 radii, 8 angles)."""


def f32(value: float) -> float:
    """``value`` rounded to the nearest float32 (as a Python float)."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


TWO_PI_F32 = f32(2.0 * f32(math.pi))


def _block(u: list[float]) -> list[float]:
    out = list(u)
    half = BLOCK // 2
    for j in range(half):
        radius = math.sqrt(-2.0 * math.log(1.0 - u[j]))
        theta = f32(TWO_PI_F32 * u[j + half])
        out[j] = radius * math.cos(theta)
        out[j + half] = radius * math.sin(theta)
    return out


class RandnReplay:
    """The float64 replay of a fresh ``torch.Generator().manual_seed(seed)``'s ``randn``."""

    def __init__(self, seed: int) -> None:
        self._generator = torch.Generator().manual_seed(seed)
        self._cached: float | None = None

    def _uniform32(self, n: int) -> list[float]:
        return torch.rand(n, generator=self._generator, dtype=torch.float32).tolist()

    def _uniform64(self, n: int) -> list[float]:
        return torch.rand(n, generator=self._generator, dtype=torch.float64).tolist()

    def _normal64(self) -> float:
        if self._cached is not None:
            value, self._cached = self._cached, None
            return value
        u1, u2 = self._uniform64(2)
        radius = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        self._cached = radius * math.sin(theta)
        return radius * math.cos(theta)

    def randn(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """What ``torch.randn(shape, generator=g)`` gives, as float64 values each rounded to
        float32 (returned as a float64 tensor)."""
        n = math.prod(shape)
        if n >= BLOCK:
            values = self._uniform32(n)
            for start in range(0, n - BLOCK + 1, BLOCK):
                values[start:start + BLOCK] = _block(values[start:start + BLOCK])
            if n % BLOCK:
                values[n - BLOCK:] = _block(self._uniform32(BLOCK))
        else:
            values = [self._normal64() for _ in range(n)]
        return torch.tensor([f32(v) for v in values], dtype=torch.float64).reshape(tuple(shape))
