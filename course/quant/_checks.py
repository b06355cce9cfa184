"""Input checks shared by the quantization primitives: one precise message per mistake."""

from __future__ import annotations

import math
import numbers

import torch

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
