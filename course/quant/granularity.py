"""Granularity of quantization parameters as a type: one scale per tensor, or one per channel.

* :class:`PerTensor` — one scale (and zero point) for the whole tensor;
* :class:`PerChannel` ``(axis)`` — one per slice along ``axis`` (``axis=0``: the output
  channel of Linear ``[out, in]`` and Conv2d ``[out, in, kh, kw]`` weights).

The library's functions also take the older spellings, normalised by :func:`granularity`:
``None`` or ``False`` per tensor, ``True`` per channel on axis 0, an int per channel on that
axis.

>>> granularity(True), granularity(None), granularity(1)
(PerChannel(axis=0), PerTensor(), PerChannel(axis=1))
>>> PerChannel(0).reduce_dims(torch.zeros(8, 3, 3, 3))
(1, 2, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PerTensor:
    """One scale for the whole tensor."""

    def reduce_dims(self, x: torch.Tensor) -> tuple[int, ...]:
        """The dimensions a scale is reduced over: all of ``x``'s."""
        return tuple(range(x.dim()))

    def __str__(self) -> str:
        return "per-tensor"


@dataclass(frozen=True)
class PerChannel:
    """One scale per slice along ``axis`` (an int, negative counting from the end)."""

    axis: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise TypeError(f"axis must be an int, got {type(self.axis).__name__}")

    def resolve(self, x: torch.Tensor, name: str = "w") -> int:
        """``axis`` in ``[0, x.dim())`` for ``x``; ``ValueError`` naming ``name`` and its shape
        when ``x`` has no such axis."""
        if x.dim() == 0:
            raise ValueError(f"{name} must have at least one dimension for per-channel "
                             "quantization")
        if not -x.dim() <= self.axis < x.dim():
            raise ValueError(f"axis must be in [{-x.dim()}, {x.dim() - 1}] for {name} of shape "
                             f"{tuple(x.shape)}, got {self.axis}")
        return self.axis % x.dim()

    def reduce_dims(self, x: torch.Tensor) -> tuple[int, ...]:
        """The dimensions a scale is reduced over: every one of ``x``'s but ``axis``."""
        axis = self.resolve(x, "x")
        return tuple(d for d in range(x.dim()) if d != axis)

    def __str__(self) -> str:
        return f"per-channel(axis={self.axis})"


Granularity = PerTensor | PerChannel
"""Either granularity."""


def granularity(value: Granularity | bool | int | None) -> Granularity:
    """``value`` as a :data:`Granularity`: itself; ``None`` or ``False`` -> :class:`PerTensor`;
    ``True`` -> ``PerChannel(0)``; an int ``a`` -> ``PerChannel(a)``. ``TypeError`` otherwise."""
    if isinstance(value, PerTensor | PerChannel):
        return value
    if value is None or value is False:
        return PerTensor()
    if value is True:
        return PerChannel(0)
    if isinstance(value, int):
        return PerChannel(value)
    raise TypeError("granularity must be PerTensor(), PerChannel(axis), a bool (per channel "
                    f"on axis 0) or an int axis, got {type(value).__name__}")


__all__ = ["Granularity", "PerChannel", "PerTensor", "granularity"]
