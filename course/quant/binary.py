"""The 1-bit (sign) quantizer: values become ``±alpha``.

Convention: ``sign(0) = +1`` (a binary code has no zero). ``alpha = mean|w|`` is the
scale that minimises ``||w - alpha * sign(w)||²`` (the BWN / XNOR-Net closed form).
"""

from __future__ import annotations

import torch

from course.quant.checks import check_float_tensor
from course.quant.granularity import Granularity, PerChannel, granularity


def sign(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0``, ``-1`` elsewhere, in ``x``'s dtype (so ``sign(0) = +1``).

    >>> sign(torch.tensor([-2.0, 0.0, 3.0]))
    tensor([-1.,  1.,  1.])
    """
    x = check_float_tensor(x, "x")
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def binary_scale(w: torch.Tensor, per_channel: bool | Granularity = True) -> torch.Tensor:
    """``alpha = mean|w|``: per output channel (``True``: axis 0, or any
    :class:`~course.quant.granularity.PerChannel`; shaped to broadcast) or per tensor
    (``False``, :class:`~course.quant.granularity.PerTensor`). A 1-D ``w`` has one scale."""
    w = check_float_tensor(w, "w")
    if w.numel() == 0:
        raise ValueError("w must not be empty")
    kind = granularity(per_channel)
    if isinstance(kind, PerChannel) and w.dim() > 1:
        return w.detach().abs().mean(dim=kind.reduce_dims(w), keepdim=True)
    return w.detach().abs().mean()


def binarize(w: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """``alpha * sign(w)`` with ``alpha = mean|w|`` (see :func:`binary_scale`); ``w``'s shape.

    >>> binarize(torch.tensor([[1.0, -3.0], [0.0, 2.0]]))
    tensor([[ 2., -2.],
            [ 1.,  1.]])
    """
    return binary_scale(w, per_channel) * sign(w)
