"""Number formats: what each of the course's types can represent, derived from its bit layout.

A binary floating-point format with ``e`` exponent bits (bias ``2**(e-1) - 1``) and ``m``
stored mantissa bits represents ``(-1)**s * 1.f * 2**(E - bias)`` for normal numbers. Three
figures describe it (:func:`format_summary`):

* ``eps`` — the gap between 1.0 and the next larger number: ``2**-m``, the relative
  resolution;
* ``smallest_normal`` — ``2**(1 - bias)``; below it, subnormal numbers lose precision;
* ``max`` — the largest finite number. IEEE formats reserve the top exponent for infinity and
  NaN: ``(2 - 2**-m) * 2**(2**e - 2 - bias)``. The ``fn`` ("finite, NaN") float8 format
  E4M3FN has no infinity and only one NaN mantissa, so its top exponent holds numbers too:
  ``(2 - 2**(1-m)) * 2**(2**e - 1 - bias)`` = 448 (a cast of 500 saturates to 448, OCP
  8-bit floating point specification, 2023).

A ``b``-bit integer covers ``[-2**(b-1), 2**(b-1) - 1]`` (two's complement) or
``[0, 2**b - 1]`` unsigned; its resolution is 1 everywhere.

>>> format_summary(torch.float16)
{'bits': 16, 'max': 65504.0, 'smallest_normal': 6.103515625e-05, 'eps': 0.0009765625}
>>> format_summary(torch.int8)
{'bits': 8, 'min': -128, 'max': 127}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FloatLayout:
    """The bit layout of a binary floating-point format (1 sign bit, always).

    ``finite_only``: no infinity, and the all-ones exponent holds numbers except the one NaN
    pattern (all-ones mantissa) — the ``fn`` float8 formats.
    """

    exponent_bits: int
    mantissa_bits: int
    finite_only: bool = False

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1


FLOAT_LAYOUTS: dict[torch.dtype, FloatLayout] = {
    torch.float64: FloatLayout(11, 52),
    torch.float32: FloatLayout(8, 23),
    torch.float16: FloatLayout(5, 10),
    torch.bfloat16: FloatLayout(8, 7),
    torch.float8_e5m2: FloatLayout(5, 2),
    torch.float8_e4m3fn: FloatLayout(4, 3, finite_only=True),
}
"""Floating-point formats :func:`format_summary` knows, by torch dtype (IEEE 754 binary64,
binary32, binary16; bfloat16; the OCP float8 formats E5M2 and E4M3FN)."""

INT_DTYPES: dict[torch.dtype, tuple[int, bool]] = {
    torch.int8: (8, True),
    torch.uint8: (8, False),
    torch.int16: (16, True),
    torch.int32: (32, True),
    torch.int64: (64, True),
}
"""Integer formats :func:`format_summary` knows: dtype -> (bits, signed)."""


def _float_summary(layout: FloatLayout) -> dict[str, int | float]:
    m, bias = layout.mantissa_bits, layout.bias
    top = 2**layout.exponent_bits - 1          # the all-ones exponent field
    if layout.finite_only:                     # top exponent usable; mantissa 1...1 is NaN
        largest = (2.0 - 2.0 ** (1 - m)) * 2.0 ** (top - bias)
    else:                                      # top exponent reserved for inf and NaN
        largest = (2.0 - 2.0**-m) * 2.0 ** (top - 1 - bias)
    return {"bits": layout.bits, "max": largest, "smallest_normal": 2.0 ** (1 - bias),
            "eps": 2.0**-m}


def format_summary(dtype: torch.dtype) -> dict[str, int | float]:
    """What ``dtype`` can represent, from its bit layout.

    Floating types give ``{"bits", "max", "smallest_normal", "eps"}`` (Python int, then
    floats: the largest finite value, the smallest positive normal value, the gap above 1.0);
    integer types give ``{"bits", "min", "max"}`` (Python ints). Known: ``FLOAT_LAYOUTS``
    (float64, float32, float16, bfloat16, float8_e5m2, float8_e4m3fn) and ``INT_DTYPES``.
    Anything else: ``TypeError`` (not a dtype) or ``ValueError`` (another dtype), naming
    ``dtype``.

    >>> format_summary(torch.float8_e4m3fn)["max"]
    448.0
    >>> format_summary(torch.bfloat16)["eps"] == 2**-7
    True
    """
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float16), got "
                        f"{type(dtype).__name__}")
    if dtype in FLOAT_LAYOUTS:
        return _float_summary(FLOAT_LAYOUTS[dtype])
    if dtype in INT_DTYPES:
        bits, signed = INT_DTYPES[dtype]
        if signed:
            return {"bits": bits, "min": -(2 ** (bits - 1)), "max": 2 ** (bits - 1) - 1}
        return {"bits": bits, "min": 0, "max": 2**bits - 1}
    known = ", ".join(str(d).removeprefix("torch.") for d in [*FLOAT_LAYOUTS, *INT_DTYPES])
    raise ValueError(f"dtype {dtype} is not one of the formats described here ({known})")


__all__ = ["FLOAT_LAYOUTS", "INT_DTYPES", "FloatLayout", "format_summary"]
