"""The classic ImageNet architectures, from torchvision, with random weights: their sizes and
multiply-accumulates, beside the figures the lecture quotes.

Sizes, MACs and latency depend on the architecture only, so ``weights=None`` is all we need
(nothing is downloaded). The lecture's table of model sizes and "GFLOPS" matches the
convnet-burden estimates (S. Albanie, github.com/albanie/convnet-burden, README and
reports), whose notes say: every datum 4 bytes, "fused multiply-adds are counted as single
operations" — its "FLOPS" are MACs — and whose "MB" are 2^20 bytes (AlexNet's 61.1 M
parameters x 4 B = 233 MiB = 244 * 10^6 B). Three of the lecture's sizes are convnet-burden's
*feature* memory (activations of one image), not parameters.

>>> sorted(INPUT_SIZE.items())[0]
('alexnet', 224)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from course.cost import count_macs, storage_bytes

ARCHITECTURES = ("alexnet", "vgg16", "resnet18", "resnet50", "inception_v3", "mobilenet_v2",
                 "squeezenet1_0")
"""torchvision model builders used for the size table, in the lecture's order."""

INPUT_SIZE = {name: 224 for name in ARCHITECTURES} | {"inception_v3": 299}
"""Input height = width of each architecture's ImageNet evaluation (Inception-v3: 299)."""

MIB = 2**20
STORED_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "1-bit": 1}
"""Weight widths of the size table: label -> bits per Linear/Conv2d weight."""


@dataclass(frozen=True)
class Burden:
    """convnet-burden's estimate for one model: MB (2^20 bytes) of parameters and of
    features at batch 1, and GMACs (its "GFLOPS"), at ``input_size``."""

    model: str
    input_size: int
    param_mb: float
    feature_mb: float
    gmacs: float


CONVNET_BURDEN: dict[str, Burden] = {
    "alexnet": Burden("alexnet", 227, 233, 3, 0.727),
    "vgg16": Burden("vgg-vd-16", 224, 528, 58, 16),
    "resnet18": Burden("resnet18", 224, 45, 23, 2),
    "resnet50": Burden("resnet-50", 224, 98, 103, 4),
    "inception_v3": Burden("inception-v3", 299, 91, 89, 6),
    "mobilenet_v2": Burden("mcn-mobilenet (v1)", 224, 16, 38, 0.579),
    "squeezenet1_0": Burden("squeezenet1-0", 224, 5, 30, 0.837),
}
"""convnet-burden's figures for the closest model it lists (MobileNet is v1 there; torchvision
builds v2)."""

LECTURE_MB: dict[str, float] = {"alexnet": 233, "inception_v3": 89, "mobilenet_v2": 38,
                                "squeezenet1_0": 30}
"""Model sizes the lecture's table gives, in its "MB" (as quoted in the course's issue 15;
the lecture's MobileNet is v1)."""


def build(name: str) -> nn.Module:
    """torchvision's ``name`` architecture with random weights, in eval mode.

    Inception-v3 is built without its auxiliary classifier (used in training only).
    Needs torchvision; an unknown name is a ``ValueError``.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"name must be one of {', '.join(ARCHITECTURES)}, got {name!r}")
    import torchvision

    kwargs = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
    return getattr(torchvision.models, name)(weights=None, **kwargs).eval()


def size_row(name: str, model: nn.Module | None = None, *,
             macs_fn: Callable[[nn.Module, tuple], int] = count_macs,
             bytes_fn: Callable[[nn.Module, int], int] = storage_bytes) -> dict:
    """One row of the size table: parameters, bytes and MiB stored at 32/16/8/1-bit weights
    (the rest at fp32), MACs and GMACs of one image, convnet-burden's and the lecture's
    figures.

    ``model``: the built architecture (else built here). ``macs_fn`` and ``bytes_fn`` count
    MACs and bytes (the library's by default; a lab passes the student's).
    """
    model = build(name) if model is None else model
    size = INPUT_SIZE[name]
    burden = CONVNET_BURDEN[name]
    row = {"model": name, "input": size,
           "parameters": sum(p.numel() for p in model.parameters())}
    for label, bits in STORED_BITS.items():
        row[f"bytes {label}"] = bytes_fn(model, bits)
        row[f"MiB {label}"] = row[f"bytes {label}"] / MIB
    row["MACs"] = macs_fn(model, (1, 3, size, size))
    row["GMACs"] = row["MACs"] / 1e9
    row["lecture MB"] = LECTURE_MB.get(name)
    row["convnet-burden param MB"] = burden.param_mb
    row["convnet-burden feature MB"] = burden.feature_mb
    row["convnet-burden GFLOPS (= GMACs)"] = burden.gmacs
    return row


__all__ = ["ARCHITECTURES", "CONVNET_BURDEN", "INPUT_SIZE", "LECTURE_MB", "STORED_BITS",
           "Burden", "build", "size_row"]
