"""PyTorch's own post-training quantization of the course's models, as a reference.

The labs and benchmarks put the course's int8 models side by side with what PyTorch's
eager-mode tooling (``torch.ao.quantization``, deprecated in favour of torchao but still
running in torch 2.x on CPU) makes of the same float model:

* :func:`pytorch_dynamic` — ``quantize_dynamic``: int8 Linear weights, activations
  quantized per batch;
* :func:`pytorch_static` — fuse (Conv/Linear + BatchNorm + ReLU), insert observers,
  calibrate, convert: int8 weights and activations, quantized kernels of the chosen engine.

Both work on an ``nn.Sequential`` of named children such as ``course.models.MLP`` and
``SmallCNN`` and leave the input model unchanged. Deprecation warnings are silenced here.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from course.observe.calibration import batch_inputs

ENGINES = ("x86", "fbgemm", "qnnpack")
"""PyTorch's quantized CPU engines, in the order the course prefers them: ``x86`` (fbgemm and
oneDNN kernels), ``fbgemm``, ``qnnpack`` (ARM)."""


def quantized_engine(supported: Iterable[str] | None = None) -> str:
    """The quantized engine PyTorch should use on this CPU: the first of :data:`ENGINES` in
    ``supported`` (by default the engines this build of PyTorch supports); ``RuntimeError``
    if there is none."""
    engines = list(torch.backends.quantized.supported_engines if supported is None
                   else supported)
    for engine in ENGINES:
        if engine in engines:
            return engine
    raise RuntimeError(f"this PyTorch build has no quantized CPU engine (it has {engines})")

_LAYERS = (nn.Linear, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _ao():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.ao.quantization as tq
    return tq


def _check_sequential(model: Any) -> nn.Sequential:
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential of named layers, got "
                        f"{type(model).__name__}")
    return model


def fusion_groups(model: nn.Sequential) -> list[list[str]]:
    """Names of consecutive children PyTorch can fuse: Conv2d [+ BN] [+ ReLU], Linear + BN,
    Linear + ReLU (groups of one are left out).

    >>> from course.models import SmallCNN
    >>> fusion_groups(SmallCNN())
    [['conv1', 'bn1', 'relu1'], ['conv2', 'bn2', 'relu2']]
    """
    children = list(_check_sequential(model).named_children())
    groups, i = [], 0
    while i < len(children):
        name, module = children[i]
        if isinstance(module, _LAYERS):
            group = [name]
            if i + 1 < len(children) and isinstance(children[i + 1][1], _NORMS):
                group.append(children[i + 1][0])
            # PyTorch fuses Linear+BN or Linear+ReLU, but not Linear+BN+ReLU
            relu_ok = isinstance(module, nn.Conv2d) or len(group) == 1
            if relu_ok and i + len(group) < len(children) and isinstance(
                    children[i + len(group)][1], nn.ReLU):
                group.append(children[i + len(group)][0])
            if len(group) > 1:
                groups.append(group)
            i += len(group)
        else:
            i += 1
    return groups


def pytorch_dynamic(model: nn.Module) -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` of a copy of ``model`` (Linear layers)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    tq = _ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tq.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def pytorch_static(model: nn.Sequential, calibration: Iterable[Any],
                   engine: str | None = None) -> nn.Module:
    """PyTorch's static int8 model of a copy of ``model``, calibrated on ``calibration``
    (batches, or ``(x, y)`` pairs as a DataLoader yields them). Input float, output float.

    ``engine``: PyTorch's quantized engine; by default :func:`quantized_engine` (``x86`` on
    x86 CPUs, ``qnnpack`` on ARM). It stays selected: the model runs on it."""
    model = _check_sequential(model)
    engine = quantized_engine() if engine is None else engine
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"engine {engine!r} is not supported here; choose one of "
                         f"{torch.backends.quantized.supported_engines}")
    tq = _ao()
    torch.backends.quantized.engine = engine
    body = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = fusion_groups(body)
        if groups:
            tq.fuse_modules(body, groups, inplace=True)
        wrapped = nn.Sequential(tq.QuantStub(), body, tq.DeQuantStub()).eval()
        wrapped.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(wrapped, inplace=True)
        seen = 0
        with torch.no_grad():
            for batch in calibration:
                wrapped(batch_inputs(batch))
                seen += 1
        if not seen:
            raise ValueError("calibration must yield at least one batch")
        return tq.convert(wrapped, inplace=True)
