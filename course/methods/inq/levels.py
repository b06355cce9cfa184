"""INQ's level set: powers of two or zero, chosen per layer from its largest weight.

For a layer with ``s = max|W|`` and ``b`` bits (Zhou et al., ICLR 2017, section 2.1), the
levels are ``P = {0} ∪ {±2^n : n2 <= n <= n1}`` with

    n1 = floor(log2(4 s / 3)),        n2 = n1 + 1 - 2^(b-2)

(one of the ``b`` bits encodes zero, so there are ``2^(b-2)`` exponents; ``b = 5`` gives
``n1 - 7 ... n1``). A weight goes to the nearest level, ties to the larger magnitude: with
adjacent levels ``α < β`` of ``P``, ``β sign(w)`` where ``(α + β)/2 <= |w| < 3β/2``, and 0
below ``2^(n2 - 1)``. Since ``2^n1 <= 4s/3``, every ``|w| <= s`` lies below ``3·2^n1 / 2``:
inside the top level's interval. Larger values (weights that grew while retraining) go to
the top level ``2^n1``.

Everything here is exact: ``n1`` is found with rational arithmetic, the thresholds
``3·2^(n-2)`` and the levels are exact powers of two built with ``math.ldexp``.

>>> inq_exponents(1.0, 5)
(0, -7)
>>> quantize_pow2(torch.tensor([0.7, -0.3, 0.01, 0.375]), 0, -3).tolist()
[0.5, -0.25, 0.0, 0.5]
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from course.kernels.pow2 import check_exponents, level_mask
from course.quant.checks import check_bits, check_float_tensor, check_real

ZERO_BITS = 1
"""Bits of ``b`` that encode zero: the remaining ``b - 1`` hold a sign and ``2^(b-2)``
exponents."""


def inq_exponents(w_absmax: float, num_bits: int) -> tuple[int, int]:
    """``(n1, n2)``: the largest and smallest exponent of a layer's levels.

    ``n1`` is the largest integer with ``2^n1 <= 4·w_absmax/3`` (computed exactly, so a
    float32 ``w_absmax`` on a boundary such as ``0.75 · 2^k`` gives ``k``), and
    ``n2 = n1 + 1 - 2^(num_bits - 2)``. ValueError for ``num_bits < 2`` or
    ``w_absmax <= 0``; TypeError for non-numbers.

    >>> inq_exponents(0.75, 3), inq_exponents(0.7499, 3), inq_exponents(3.0, 2)
    ((0, -1), (-1, -2), (2, 2))
    """
    bits = check_bits(num_bits, "num_bits", minimum=2)
    s = check_real(w_absmax, "w_absmax")
    if s <= 0:
        raise ValueError(f"w_absmax must be positive (the largest |w| of a layer), got {s}")
    bound = Fraction(s) * 4 / 3
    n1 = math.floor(math.log2(bound))
    while Fraction(2) ** n1 > bound:
        n1 -= 1
    while Fraction(2) ** (n1 + 1) <= bound:
        n1 += 1
    return n1, n1 + 1 - 2 ** (bits - 1 - ZERO_BITS)  # 2^(b-2) exponents


def _float64_powers(n1: int, n2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The thresholds (float64) and levels (float64, 0 first) of the nearest-level rule."""
    thresholds = [math.ldexp(1.0, n2 - 1)] + [3 * math.ldexp(1.0, n - 2)
                                              for n in range(n2 + 1, n1 + 1)]
    levels = [0.0] + [math.ldexp(1.0, n) for n in range(n2, n1 + 1)]
    return (torch.tensor(thresholds, dtype=torch.float64),
            torch.tensor(levels, dtype=torch.float64))


def quantize_pow2(w: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """``w`` with every element replaced by its level: 0 or ``±2^n``, ``n2 <= n <= n1``.

    ``w``: a floating tensor (float32 in the course); the result has its dtype and shape.
    Nearest level, ties to the larger magnitude, the sign kept; below ``2^(n2-1)`` zero;
    above ``3·2^n1 / 2`` the top level. ValueError if ``n2 > n1``, if ``w`` holds NaN or
    infinities, or if the levels are not numbers of ``w``'s dtype.

    >>> quantize_pow2(torch.tensor([0.125, 0.124, 0.75, -3.0]), 0, -2).tolist()
    [0.25, 0.0, 1.0, -1.0]
    """
    w = check_float_tensor(w, "w")
    n1, n2 = check_exponents(n1, n2)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w must be finite (it holds NaN or infinite values)")
    info = torch.finfo(w.dtype)
    if math.ldexp(1.0, n1) > info.max:
        raise ValueError(f"n1: 2^{n1} is too large for {w.dtype}")
    if math.ldexp(1.0, n2) < info.smallest_normal * info.eps:
        raise ValueError(f"n2: 2^{n2} is too small for {w.dtype}")
    thresholds, levels = _float64_powers(n1, n2)
    magnitude = w.detach().to(torch.float64).abs()
    level = levels[torch.bucketize(magnitude, thresholds, right=True)]
    return torch.where(w < 0, -level, level).to(w.dtype)


def pow2_levels(n1: int, n2: int) -> torch.Tensor:
    """float32, sorted: every level ``-2^n1 ... -2^n2, 0, 2^n2 ... 2^n1``.

    >>> pow2_levels(0, -1).tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    n1, n2 = check_exponents(n1, n2)
    _, levels = _float64_powers(n1, n2)
    return torch.cat([-levels.flip(0)[:-1], levels]).to(torch.float32)


def is_pow2_or_zero(w: torch.Tensor, n1: int, n2: int) -> bool:
    """True when every element of ``w`` is 0 or ``±2^n`` with ``n2 <= n <= n1`` (exactly).

    >>> is_pow2_or_zero(torch.tensor([0.5, -0.25, 0.0]), -1, -2)
    True
    """
    return bool(level_mask(w, n1, n2).all())


def bits_for(n1: int, n2: int) -> int:
    """Fewest code bits whose ``2^(b-2)`` exponents hold ``n2 ... n1``.

    >>> bits_for(0, -7)
    5
    """
    n1, n2 = check_exponents(n1, n2)
    return 2 + max(0, math.ceil(math.log2(n1 - n2 + 1)))


__all__ = ["bits_for", "inq_exponents", "is_pow2_or_zero", "pow2_levels",
           "quantize_pow2"]
