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

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from course.cost import count_macs, storage_bytes
from course.latency import pinned_threads
from course.measure import Timing, compare, model_size_bytes
from course.methods.ptq.pytorch_reference import quantized_engine

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


QUANTIZABLE = ("mobilenet_v2", "resnet18", "resnet50")
"""Architectures of :data:`ARCHITECTURES` that ``torchvision.models.quantization`` also builds
as quantizable models (with quant/dequant stubs and a ``fuse_model`` method)."""


@contextlib.contextmanager
def _quantized_engine(engine: str) -> Iterator[None]:
    """PyTorch's quantized engine set to ``engine`` within the block, restored after."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


@dataclass(frozen=True, kw_only=True)
class PyTorchInt8:
    """torchvision's quantizable ``name`` with random weights, as PyTorch quantizes it.

    ``fp32``: the float model with its batch norms folded into the convolutions (the same
    fusion the int8 model gets: the fair float baseline); ``int8``: the same network after
    eager-mode static quantization (int8 weights per output channel, int8 activations
    calibrated with min/max observers on random images), running PyTorch's ``engine``.
    """

    name: str
    engine: str
    fp32: nn.Module
    int8: nn.Module


def _batch_norm_statistics(model: nn.Module, images: torch.Tensor) -> None:
    """Set every batch norm's running mean and variance to those of ``images`` (one pass in
    training mode, cumulative averages), then put ``model`` in eval mode: with random weights
    and the initial statistics (mean 0, variance 1) the activations shrink layer after layer
    to nothing; with these, each layer's output has the unit scale a trained network's has."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def pytorch_int8(name: str = "mobilenet_v2", *, calibration_images: int = 4,
                 seed: int = 0) -> PyTorchInt8:
    """PyTorch's own int8 version of a real architecture, from ``torchvision.models.quantization``
    (``quantize=False``: built with random weights, fused, observed, calibrated and converted
    here; nothing is downloaded). Random weights give the sizes and latency of the real
    network, not its accuracy.

    ``calibration_images``: random ``[3, H, W]`` images (normal, from ``seed``) that set the
    batch norms' statistics and are shown to the observers. Both models are in eval mode;
    their input is ``[B, 3, H, W]`` float32.
    """
    if name not in QUANTIZABLE:
        raise ValueError(f"name must be one of {', '.join(QUANTIZABLE)}, got {name!r}")
    if isinstance(calibration_images, bool) or not isinstance(calibration_images, int) \
            or calibration_images < 1:
        raise ValueError(f"calibration_images must be a positive int, got {calibration_images!r}")
    from torchvision.models import quantization as tvq

    engine = quantized_engine()
    size = INPUT_SIZE[name]
    builder = getattr(tvq, name)
    with warnings.catch_warnings(), _quantized_engine(engine):
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        import torch.ao.quantization as tq

        torch.manual_seed(seed)
        fp32 = builder(weights=None, quantize=False)
        images = torch.randn(calibration_images, 3, size, size,
                             generator=torch.Generator().manual_seed(seed))
        _batch_norm_statistics(fp32, images)
        fp32.fuse_model(is_qat=False)
        model = copy.deepcopy(fp32)
        # min/max activations (histogram observers, PyTorch's default, take tens of seconds on
        # 224 x 224 images); reduce_range keeps the int8 products exact on CPUs without VNNI.
        model.qconfig = tq.QConfig(
            activation=tq.MinMaxObserver.with_args(reduce_range=True),
            weight=tq.default_per_channel_weight_observer)
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            model(images)
        tq.convert(model, inplace=True)
    return PyTorchInt8(name=name, engine=engine, fp32=fp32, int8=model)


def network_latency(pair: PyTorchInt8, batch: int = 1, *, threads: int | None = 1,
                    repeats: int = 10, warmup: int = 2) -> dict:
    """Sizes and median latency of one batch through ``pair.fp32`` and ``pair.int8``, timed
    round-robin under ``torch.no_grad()`` on ``threads`` threads (1: one core, steady on a
    shared machine; ``None``: as set).

    Returns ``{"fp32": Timing, "int8": Timing, "fp32 bytes": int, "int8 bytes": int,
    "speedup": float, "size ratio": float}`` (ratios int8 over fp32: time fp32/int8, bytes
    int8/fp32).
    """
    if not isinstance(pair, PyTorchInt8):
        raise TypeError(f"pair must be a PyTorchInt8 from pytorch_int8(), got "
                        f"{type(pair).__name__}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    size = INPUT_SIZE[pair.name]
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with _quantized_engine(pair.engine), pinned_threads(threads), torch.no_grad():
        t: dict[str, Timing] = compare({"fp32": lambda: pair.fp32(x),
                                        "int8": lambda: pair.int8(x)},
                                       warmup=warmup, repeats=repeats)
    fp32_bytes, int8_bytes = model_size_bytes(pair.fp32), model_size_bytes(pair.int8)
    return {"fp32": t["fp32"], "int8": t["int8"], "fp32 bytes": fp32_bytes,
            "int8 bytes": int8_bytes, "speedup": t["fp32"].median_s / t["int8"].median_s,
            "size ratio": int8_bytes / fp32_bytes}


__all__ = ["ARCHITECTURES", "CONVNET_BURDEN", "INPUT_SIZE", "LECTURE_MB", "QUANTIZABLE",
           "STORED_BITS", "Burden", "PyTorchInt8", "build", "network_latency", "pytorch_int8",
           "quantized_engine", "size_row"]
