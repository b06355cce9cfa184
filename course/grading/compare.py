"""Compare a student's result with a reference value, in plain Python, with precise messages.

Everything a comparison needs is bound when this module is imported (before any student
cell runs), so a notebook that later rebinds ``np.allclose``, ``torch.allclose``,
``torch.Tensor.tolist`` or ``builtins.abs`` cannot change a verdict.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_Tensor = torch.Tensor
_ndarray = np.ndarray
_generic = np.generic
_tolist = torch.Tensor.tolist
_detach = torch.Tensor.detach
_cpu = torch.Tensor.cpu
_reshape = torch.Tensor.reshape
_np_tolist = np.ndarray.tolist
_np_ravel = np.ravel
_isnan = math.isnan
_isinf = math.isinf
_abs, _len, _isinstance, _float, _int, _range, _zip = abs, len, isinstance, float, int, range, zip
_Integral, _Real = numbers.Integral, numbers.Real

FLOAT_RTOL = 1e-5
"""Relative tolerance between float results (float32 arithmetic in a different order)."""
FLOAT_ATOL = 1e-7
"""Absolute tolerance between float results."""


class Mismatch(AssertionError):
    """A result that differs from the reference; the message says where and how.

    In a notebook the message is all a student sees: IPython shows an exception that has a
    ``_render_traceback_`` method as the lines it returns, so a failed check shows one line,
    ``Mismatch: <message>``, with no frames of ``course.grading`` above it (they would say
    nothing about the student's code, which ran inside the check). That line is the error
    output's ``traceback``, which nbgrader's Validate and feedback show too: the same line the
    grader writes for the verdicts it reaches itself. Plain Python and pytest ignore the method
    and print the full traceback.
    """

    def _render_traceback_(self) -> list[str]:
        """The lines IPython shows for this error: ``["Mismatch: <message>"]``."""
        return [f"{type(self).__name__}: {self}"]


@dataclass(frozen=True)
class ArrayData:
    """A tensor or numpy array as recorded data: dtype name, kind, shape, flat values.

    ``kind`` is 'float', 'int', 'bool' or 'other'; ``values`` is None when the array was too
    large to record or of a kind without real values (complex, quantized). Produced by
    ``course.grading.outcome`` so that results can be judged outside the student's process.

    >>> ArrayData("torch.int32", "int", (2,), [3, 4])
    <int32 array [2]>
    """

    dtype: str
    kind: str
    shape: tuple[int, ...]
    values: list | None

    def __repr__(self) -> str:
        return f"<{self.dtype.replace('torch.', '')} array {list(self.shape)}>"


def _index(flat: int, shape: tuple[int, ...]) -> str:
    if not shape:
        return "[]"
    idx = []
    for size in reversed(shape):
        idx.append(flat % size)
        flat //= size
    return "[" + ", ".join(str(i) for i in reversed(idx)) + "]"


def _fmt(value: Any) -> str:
    if _isinstance(value, float):
        return f"{value:.9g}"
    return repr(value)


def flatten(value: Any, what: str) -> tuple[list, tuple[int, ...], str]:
    """Flat Python list, shape and kind ('int', 'float' or 'bool') of a tensor or array."""
    if _isinstance(value, ArrayData):
        if value.kind not in ("int", "float", "bool"):
            raise Mismatch(f"{what} has dtype {value.dtype}; expected real numbers")
        if value.values is None:
            raise Mismatch(f"{what} has shape {list(value.shape)}: far too large to be the result")
        return list(value.values), tuple(value.shape), value.kind
    if _isinstance(value, _Tensor):
        t = _cpu(_detach(value))
        if t.dtype == torch.bool:
            kind = "bool"
        elif t.dtype.is_floating_point:
            kind = "float"
        elif t.dtype.is_complex:
            raise Mismatch(f"{what} is a complex tensor ({t.dtype}); expected real values")
        else:
            kind = "int"
        return _tolist(_reshape(t, (-1,))), tuple(t.shape), kind
    if _isinstance(value, (_ndarray, _generic)):
        arr = np.asarray(value)
        kinds = {"b": "bool", "i": "int", "u": "int", "f": "float"}
        if arr.dtype.kind not in kinds:
            raise Mismatch(f"{what} is a numpy array of dtype {arr.dtype}; expected numbers")
        return _np_tolist(_np_ravel(arr)), tuple(arr.shape), kinds[arr.dtype.kind]
    name = getattr(value, "type_name", None) or type(value).__name__
    raise Mismatch(f"{what} must be a torch.Tensor, got {name}")


def close(got: float, expected: float, rtol: float, atol: float) -> bool:
    """``|got - expected| <= atol + rtol * |expected|``; inf equals inf of the same sign."""
    if _isnan(expected):
        return _isnan(got)
    if _isinf(expected) or _isinf(got):
        return got == expected
    if _isnan(got):
        return False
    return _abs(got - expected) <= atol + rtol * _abs(expected)


def to_real(value: Any, what: str) -> float:
    """A Python float from a number, numpy scalar or one-element tensor."""
    if _isinstance(value, bool):
        raise Mismatch(f"{what} must be a number, got bool {value!r}")
    if _isinstance(value, (_Tensor, _ndarray, _generic, ArrayData)):
        flat, shape, _ = flatten(value, what)
        if _len(flat) != 1:
            raise Mismatch(f"{what} must be a single number, got shape {list(shape)}")
        value = flat[0]
    if not _isinstance(value, _Real):
        name = getattr(value, "type_name", None) or type(value).__name__
        raise Mismatch(f"{what} must be a number, got {name}")
    return _float(value)


def to_int(value: Any, what: str) -> int:
    """A Python int from an integer-valued number, numpy scalar or one-element tensor."""
    number = to_real(value, what)
    if not math.isfinite(number) or number != _int(number):
        raise Mismatch(f"{what} must be an integer, got {_fmt(number)}")
    return _int(number)


def compare_tensor(
    got: Any,
    expected: torch.Tensor,
    what: str,
    alternatives: list[torch.Tensor] = (),
    notes: dict[str, str] | None = None,
    integer: bool = False,
    rtol: float = FLOAT_RTOL,
    atol: float = FLOAT_ATOL,
    boolean: bool = False,
) -> None:
    """Raise :class:`Mismatch` unless ``got`` matches ``expected`` element by element.

    ``integer``: ``got`` must have an integer dtype (any width, signed or not) and equal
    values; otherwise a floating dtype and values within ``atol + rtol * |expected|``.
    An element also passes when it matches the same element of any of ``alternatives``
    (results of other valid implementations, e.g. where float rounding meets a tie).
    ``boolean``: ``got`` must be a bool tensor (a mask) with equal values.
    ``notes`` maps a flat index to an explanation added to the message for that element.
    """
    values, shape, kind = flatten(got, what)
    exp_values, exp_shape, _ = flatten(expected, "reference")
    if shape != exp_shape:
        raise Mismatch(f"{what} has shape {list(shape)}, expected {list(exp_shape)}")
    if boolean and kind != "bool":
        dtype = getattr(got, "dtype", kind)
        raise Mismatch(f"{what} has dtype {dtype}; a mask must be a bool tensor "
                       "(e.g. torch.zeros(shape, dtype=torch.bool))")
    if integer and kind != "int":
        dtype = getattr(got, "dtype", kind)
        raise Mismatch(f"{what} has dtype {dtype}; integer codes need an integer dtype "
                       "(e.g. .to(torch.int32) after rounding and clamping)")
    if not integer and not boolean and kind != "float":
        dtype = getattr(got, "dtype", kind)
        raise Mismatch(f"{what} has dtype {dtype}; expected floating-point values "
                       "(e.g. torch.float32)")
    alt_values = [flatten(a, "alternative")[0] for a in alternatives]
    bad = []
    for i in _range(_len(values)):
        g, e = values[i], exp_values[i]
        candidates = [e] + [alt[i] for alt in alt_values]
        if integer or boolean:
            ok = any(g == c for c in candidates)
        else:
            ok = any(close(_float(g), _float(c), rtol, atol) for c in candidates)
        if not ok:
            bad.append(i)
    if not bad:
        return
    i = bad[0]
    message = (f"{what}: element {_index(i, shape)}: expected {_fmt(exp_values[i])}, "
               f"got {_fmt(values[i])}")
    note = (notes or {}).get(str(i))
    if note:
        message += f" — {note}"
    if _len(bad) > 1:
        message += f" ({_len(bad)} of {_len(values)} elements differ)"
    raise Mismatch(message)
