"""What a network costs: multiply-accumulates, bytes stored at a given weight width, energy.

* :func:`count_macs` — multiply-accumulates (MACs) of one forward pass, counted by forward
  hooks on ``nn.Linear`` and ``nn.Conv2d`` (the layers that hold nearly all of a CNN's
  arithmetic). A multiply-accumulate ``acc += w * x`` is one multiplication and one
  addition; tables that quote "FLOPs" for CNNs usually count MACs (convnet-burden says so:
  "fused multiply-adds are counted as single operations").
* :func:`storage_bytes` — the bytes of every parameter and buffer when the Linear/Conv2d
  weights are stored at ``bits_per_weight`` bits (packed) and the rest at its own dtype.
* :func:`energy_pj` — a first-order energy estimate: arithmetic plus DRAM traffic, with the
  45 nm figures of :data:`ENERGY_PJ`. Moving a 32-bit word from DRAM costs about 140x an
  fp32 multiply-add: memory, not arithmetic, dominates inference at batch 1.

>>> from torch import nn
>>> count_macs(nn.Linear(3, 2), (4, 3))         # 4 rows x 2 outputs x 3 inputs
24
>>> storage_bytes(nn.Linear(3, 2), bits_per_weight=8)   # 6 weights x 1 B + 2 biases x 4 B
14
>>> energy_pj(10, 8, "int8")                     # 10 x (0.2 + 0.03) + 2 words x 640
1282.3
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from course.quant.checks import check_int, check_module

MAC_LAYERS = (nn.Linear, nn.Conv2d)
"""Layers whose multiply-accumulates :func:`count_macs` counts (subclasses included) and
whose weights :func:`storage_bytes` stores at ``bits_per_weight``."""


@dataclass(frozen=True)
class OpEnergy:
    """Energy of one multiplication and one addition in a number format, picojoules."""

    mult_pj: float
    add_pj: float

    @property
    def mac_pj(self) -> float:
        """One multiply-accumulate: a multiplication and an addition."""
        return self.mult_pj + self.add_pj


ENERGY_PJ: dict[str, OpEnergy] = {
    "fp32": OpEnergy(mult_pj=3.7, add_pj=0.9),
    "fp16": OpEnergy(mult_pj=1.1, add_pj=0.4),
    "int8": OpEnergy(mult_pj=0.2, add_pj=0.03),
}
"""Energy per operation at 45 nm, 0.9 V: M. Horowitz, "Computing's energy problem (and what
we can do about it)", ISSCC 2014, Fig. 1.1.9 (also Han et al. 2016, EIE, Table I)."""

DRAM_WORD_BITS = 32
DRAM_PJ_PER_WORD = 640.0
"""Energy of one 32-bit DRAM access at 45 nm: S. Han, J. Pool, J. Tran, W. Dally, "Learning
both weights and connections for efficient neural networks", NeurIPS 2015, Fig. 1 (after
Horowitz 2014). A 32-bit SRAM access costs 5 pJ, an fp32 multiply 3.7 pJ."""


def _layer_macs(layer: nn.Module, output: torch.Tensor) -> int:
    """MACs of one call of ``layer`` that produced ``output``.

    Linear: every output element is a dot product of ``in_features`` terms. Conv2d: every
    output element sums ``in_channels / groups * kh * kw`` products; stride, padding and
    dilation act only through the output's size. Bias additions are not counted.
    """
    if isinstance(layer, nn.Linear):
        return output.numel() * layer.in_features
    kh, kw = layer.kernel_size
    return output.numel() * (layer.in_channels // layer.groups) * kh * kw


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of a batch of shape ``input_shape``.

    Runs a deep copy of ``model`` in eval mode (``model`` itself, its mode and its batch-norm
    statistics stay as they were) on zeros of that shape (the dtype and device of the
    model's first floating-point parameter, else float32 on the CPU), counting every call
    of an ``nn.Linear`` or ``nn.Conv2d`` through forward hooks: a layer called twice counts
    twice. Bias additions and every other layer count nothing.

    Args:
        model: any ``nn.Module`` whose forward takes one tensor.
        input_shape: the batch's shape, batch dimension first, e.g. ``(1, 3, 224, 224)``.

    >>> count_macs(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 4, 4))   # 16 positions x 8 x 27
    3456
    """
    check_module(model)
    if not isinstance(input_shape, (tuple, list, torch.Size)) or not input_shape:
        raise TypeError(f"input_shape must be a non-empty tuple of ints, got {input_shape!r}")
    for size in input_shape:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"input_shape must hold positive ints, got {tuple(input_shape)}")
    probe = copy.deepcopy(model).eval()
    first = next((p for p in probe.parameters() if p.is_floating_point()), None)
    x = torch.zeros(tuple(input_shape), dtype=first.dtype if first is not None else None,
                    device=first.device if first is not None else None)
    total = 0

    def hook(layer: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(layer, output)

    handles = [m.register_forward_hook(hook) for m in probe.modules()
               if isinstance(m, MAC_LAYERS)]
    try:
        with torch.no_grad():
            probe(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def storage_bytes(model: nn.Module, bits_per_weight: int = 32) -> int:
    """Bytes of every parameter and buffer of ``model``, the Linear/Conv2d weights stored at
    ``bits_per_weight`` bits.

    A Linear or Conv2d weight of ``n`` elements takes ``ceil(n * bits_per_weight / 8)``
    bytes (bits packed, each tensor rounded up to whole bytes); every other tensor (biases,
    batch-norm parameters and statistics, ``num_batches_tracked``, any other parameter)
    takes ``numel * element_size`` at its own dtype. A tensor that several modules share
    (tied weights, a module used twice) counts once.

    >>> storage_bytes(nn.Conv2d(1, 1, 3, bias=False), bits_per_weight=1)   # 9 bits: 2 bytes
    2
    """
    check_module(model)
    if isinstance(bits_per_weight, bool) or not isinstance(bits_per_weight, int):
        raise TypeError(f"bits_per_weight must be an int, got {type(bits_per_weight).__name__}")
    if bits_per_weight < 1:
        raise ValueError(f"bits_per_weight must be at least 1, got {bits_per_weight}")
    weights = {id(m.weight) for m in model.modules()
               if isinstance(m, MAC_LAYERS) and isinstance(m.weight, torch.Tensor)}
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if id(tensor) in weights:
            total += math.ceil(tensor.numel() * bits_per_weight / 8)
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def energy_pj(macs: int, bytes_moved: int, fmt: str) -> float:
    """Energy estimate in picojoules: ``macs * (mult + add) + ceil(bytes_moved / 4) * 640``.

    ``fmt`` is ``"fp32"``, ``"fp16"`` or ``"int8"`` (:data:`ENERGY_PJ`); ``bytes_moved`` are
    read from DRAM in 32-bit words of :data:`DRAM_PJ_PER_WORD`. Bad input: ``TypeError`` or
    ``ValueError`` naming the argument.

    >>> energy_pj(1, 0, "fp32"), energy_pj(0, 5, "fp32")
    (4.6000000000000005, 1280.0)
    """
    macs = check_int(macs, "macs", 0)
    bytes_moved = check_int(bytes_moved, "bytes_moved", 0)
    if fmt not in ENERGY_PJ:
        raise ValueError(f"fmt must be one of {', '.join(ENERGY_PJ)}, got {fmt!r}")
    op = ENERGY_PJ[fmt]
    words = -(-bytes_moved // (DRAM_WORD_BITS // 8))
    return macs * (op.mult_pj + op.add_pj) + words * DRAM_PJ_PER_WORD


__all__ = ["DRAM_PJ_PER_WORD", "DRAM_WORD_BITS", "ENERGY_PJ", "MAC_LAYERS", "OpEnergy",
           "count_macs", "energy_pj", "storage_bytes"]
