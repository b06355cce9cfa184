"""Input checks shared across the course's layers: one precise message per mistake.

The one home of the checks more than one module needs (bit widths, numbers, ranges,
tensors, pairs, a convolution's geometry); a module keeps a private check only for a rule
of its own. Imports nothing else of the course.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

MAX_BITS = 16
"""Largest bit width the primitives accept (integer codes up to int32 hold it exactly)."""


def check_bits(num_bits: object, name: str = "num_bits", minimum: int = 1) -> int:
    """Return ``num_bits`` as an int after checking it is an integer in [minimum, MAX_BITS]."""
    if isinstance(num_bits, bool) or not isinstance(num_bits, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(num_bits).__name__} {num_bits!r}")
    bits = int(num_bits)
    if not minimum <= bits <= MAX_BITS:
        raise ValueError(f"{name} must be between {minimum} and {MAX_BITS}, got {bits}")
    return bits


def check_int(value: object, name: str, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` as an int (a Python or numpy integer, not a bool), within ``[minimum,
    maximum]`` where given: ``TypeError`` or ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    low = minimum is not None and value < minimum
    if low or (maximum is not None and value > maximum):
        what = "" if minimum is None else f"at least {minimum}"
        if minimum == 0:
            what += " (non-negative)"
        if maximum is not None:
            what += (" and " if what else "") + f"at most {maximum}"
        raise ValueError(f"{name} must be {what}, got {value}")
    return value


def check_module(value: object, name: str = "model") -> nn.Module:
    """``value`` itself when it is a ``torch.nn.Module``; ``TypeError`` naming ``name``."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_real(value: object, name: str) -> float:
    """Return a finite Python float from a number or a one-element tensor/array."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got bool")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy scalar or array
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def check_qrange(qmin: object, qmax: object) -> tuple[int, int]:
    """``(qmin, qmax)`` as ints after checking both are integers and ``qmin < qmax``."""
    lo, hi = check_real(qmin, "qmin"), check_real(qmax, "qmax")
    if lo != int(lo) or hi != int(hi):
        raise ValueError(f"qmin and qmax must be integers, got {lo} and {hi}")
    if lo >= hi:
        raise ValueError(f"qmin must be smaller than qmax, got qmin={int(lo)}, qmax={int(hi)}")
    return int(lo), int(hi)


def check_float_tensor(x: object, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a floating-point torch tensor and return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    return x


def check_int_tensor(q: object, name: str = "q") -> torch.Tensor:
    """Check that ``q`` is an integer (not bool) torch tensor and return it."""
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(q).__name__}")
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {q.dtype}")
    return q


def as_param(value: object, name: str, like: torch.Tensor,
             integer: bool) -> torch.Tensor | float | int:
    """A scale or zero point: a Python number, or a tensor broadcastable to ``like``.

    Numbers come back as float (scale) or int (zero point); tensors come back on ``like``'s
    device, as float32 (scale) or int64 (zero point), after checking they broadcast.
    """
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        try:
            torch.broadcast_shapes(value.shape, like.shape)
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(value.shape)} does not broadcast to "
                             f"the input's shape {tuple(like.shape)}") from None
        if integer:
            if value.is_floating_point():
                if not torch.equal(value, value.round()):
                    raise ValueError(f"{name} must hold integers")
            return value.to(device=like.device, dtype=torch.int64)
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} must be finite")
        return value.to(device=like.device, dtype=torch.float32)
    number = check_real(value, name)
    if integer:
        if number != int(number):
            raise ValueError(f"{name} must be an integer, got {number}")
        return int(number)
    return number


def check_bits_or_float(bits: object, name: str, *, maximum: int, float_bits: int) -> int:
    """``bits`` as an int between 1 and ``maximum``, or exactly ``float_bits`` (the bit width
    that means "keep float", DoReFa's convention); TypeError / ValueError otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(bits).__name__} {bits!r}")
    bits = int(bits)
    if not (1 <= bits <= maximum or bits == float_bits):
        raise ValueError(f"{name} must be between 1 and {maximum}, or {float_bits} "
                         f"for float; got {bits}")
    return bits


def pair(value: object, name: str, minimum: int | None = None) -> tuple[int, int]:
    """An int or a pair of ints (a kernel size, stride, padding) as a pair of ints, each at
    least ``minimum`` when given (TypeError for a non-int, ValueError otherwise)."""
    items = value if isinstance(value, tuple | list) else (value, value)
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if minimum is not None and item < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
        out.append(int(item))
    return out[0], out[1]


def check_int8(t: object, name: str, dims: int, layout: str) -> torch.Tensor:
    """``t`` as an int8 tensor with ``dims`` axes (``layout`` names them in the message)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int8:
        raise TypeError(f"{name} must be an int8 tensor, got {t.dtype}")
    if t.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D {layout}, got shape {tuple(t.shape)}")
    return t


def check_pad_value(pad_value: object) -> int:
    """An int8 padding value (the input zero point) as an int."""
    if isinstance(pad_value, bool) or not isinstance(pad_value, numbers.Integral):
        raise TypeError(f"pad_value must be an int (the input zero point), got "
                        f"{type(pad_value).__name__}")
    if not -128 <= pad_value <= 127:
        raise ValueError(f"pad_value must lie in the int8 range [-128, 127], got {pad_value}")
    return int(pad_value)


def check_plain_conv(layer: nn.Conv2d) -> None:
    """Raise ``ValueError`` unless ``layer`` has groups=1, dilation=1 and numeric zero
    padding: the convolutions the binary kernels compute."""
    if layer.groups != 1 or tuple(layer.dilation) != (1, 1) or layer.padding_mode != "zeros":
        raise ValueError("XNOR and packed convolutions support groups=1, dilation=1 and zero "
                         f"padding only; got groups={layer.groups}, dilation={layer.dilation}, "
                         f"padding_mode={layer.padding_mode!r}")
    if isinstance(layer.padding, str):
        raise ValueError(f"padding must be given as numbers, got {layer.padding!r}")
