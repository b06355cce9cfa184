"""The conversion plan: a float ``nn.Sequential`` read as blocks the int8 kernels can run.

Supported layers, in a (possibly nested) ``nn.Sequential``: ``Linear`` and ``Conv2d``
(no groups, no dilation, zero padding), each optionally followed by its ``BatchNorm``
(folded in), a ``ReLU`` (fused as a clamp) and, after a conv, a ``MaxPool2d`` (fused into
the requantization); standalone ``ReLU`` and ``MaxPool2d``; ``Flatten`` (of everything but
the batch); ``Identity`` and ``Dropout`` (no-ops at inference). Anything else — a custom
``forward`` such as a residual block — is refused with a ``ValueError`` naming it.

:func:`plan_model` returns the blocks; :func:`folded_model` rebuilds the float model from
them (batch norms folded), for calibration; :func:`to_folded_fp32` is that model as the
fairest fp32 baseline (channels-last memory where it has convs).

>>> from course.models import MLP
>>> [type(b).__name__ for b in plan_model(MLP().eval())]
['FlattenBlock', 'LayerBlock', 'LayerBlock', 'LayerBlock']
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from course.nn.folding import FOLDABLE, fold_batch_norm

NO_OPS = (nn.Identity, nn.Dropout)


@dataclass(frozen=True, eq=False)
class LayerBlock:
    """A Linear/Conv2d with its batch norm folded in, then optional ReLU and max pool.

    ``observe`` names the folded model's module whose output gives this block's output
    qparams: the ReLU if there is one, else the layer (the pool does not change them).
    """

    name: str
    layer: nn.Linear | nn.Conv2d
    relu: str | None = None
    pool: tuple[str, nn.MaxPool2d] | None = None

    @property
    def observe(self) -> str:
        return self.relu or self.name


@dataclass(frozen=True, eq=False)
class ReluBlock:
    """A ReLU not preceded by a layer (clamp at the current zero point)."""

    name: str


@dataclass(frozen=True, eq=False)
class PoolBlock:
    """A MaxPool2d not directly after a conv block."""

    name: str
    pool: nn.MaxPool2d


@dataclass(frozen=True, eq=False)
class FlattenBlock:
    """``Flatten`` of all but the batch axis."""

    name: str


Block = LayerBlock | ReluBlock | PoolBlock | FlattenBlock

SUPPORTED = ("Linear", "Conv2d", "BatchNorm1d/2d after its layer", "ReLU", "MaxPool2d",
             "Flatten", "Identity", "Dropout")


def leaf_modules(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules of nested ``nn.Sequential``s in order, names joined with ``_`` (the
    names :func:`plan_model` gives them).

    >>> [n for n, _ in leaf_modules(nn.Sequential(nn.Flatten(), nn.Sequential(nn.ReLU())))]
    ['0', '1_0']
    """
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            out.extend(leaf_modules(child, f"{full}_"))
        else:
            out.append((full, child))
    return out


def _check_sequential(model: object) -> nn.Sequential:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"unsupported model {type(model).__name__}: the int8 conversions take "
                         "an nn.Sequential of " + ", ".join(SUPPORTED) + " (a custom forward, "
                         "e.g. residual additions, cannot be converted)")
    return model


def _check_layer(name: str, layer: nn.Module) -> None:
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or layer.dilation != (1, 1):
            raise ValueError(f"unsupported Conv2d {name!r}: groups and dilation must be 1")
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(f"unsupported Conv2d {name!r}: padding must be numeric zeros "
                             f"padding, got {layer.padding!r} ({layer.padding_mode})")


def _check_pool(name: str, pool: nn.MaxPool2d) -> None:
    if pool.padding not in (0, (0, 0)) or pool.dilation not in (1, (1, 1)) or pool.ceil_mode \
            or pool.return_indices:
        raise ValueError(f"unsupported MaxPool2d {name!r}: padding 0, dilation 1, floor mode "
                         "and no indices only")


def plan_model(model: nn.Module) -> list[Block]:
    """Read ``model`` (an ``nn.Sequential``, see the module doc) as a list of blocks.

    Batch norms are folded here (new modules; ``model`` is not modified). Use the model in
    eval mode: folding uses the running statistics.
    """
    model = _check_sequential(model)
    leaves = [(n, m) for n, m in leaf_modules(model) if not isinstance(m, NO_OPS)]
    blocks: list[Block] = []
    i = 0
    while i < len(leaves):
        name, module = leaves[i]
        i += 1
        if type(module) in FOLDABLE:
            _check_layer(name, module)
            layer = copy.deepcopy(module).float().eval()
            if i < len(leaves) and type(leaves[i][1]) is FOLDABLE[type(module)]:
                layer = fold_batch_norm(module, leaves[i][1])
                i += 1
            relu = None
            if i < len(leaves) and type(leaves[i][1]) is nn.ReLU:
                relu = leaves[i][0]
                i += 1
            pool = None
            if (isinstance(module, nn.Conv2d) and i < len(leaves)
                    and type(leaves[i][1]) is nn.MaxPool2d):
                _check_pool(*leaves[i])
                pool = leaves[i]
                i += 1
            blocks.append(LayerBlock(name, layer, relu, pool))
        elif type(module) is nn.ReLU:
            blocks.append(ReluBlock(name))
        elif type(module) is nn.MaxPool2d:
            _check_pool(name, module)
            blocks.append(PoolBlock(name, module))
        elif type(module) is nn.Flatten:
            if module.start_dim != 1 or module.end_dim != -1:
                raise ValueError(f"unsupported Flatten {name!r}: only start_dim=1, end_dim=-1")
            blocks.append(FlattenBlock(name))
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            raise ValueError(f"unsupported BatchNorm {name!r}: it must directly follow the "
                             "Linear or Conv2d it is folded into")
        else:
            raise ValueError(f"unsupported module {name!r} ({type(module).__name__}); the int8 "
                             "conversions support " + ", ".join(SUPPORTED))
    if not any(isinstance(b, LayerBlock) for b in blocks):
        raise ValueError("the model has no Linear or Conv2d layer to quantize")
    return blocks


def folded_model(blocks: list[Block]) -> nn.Sequential:
    """The float model the blocks describe, batch norms folded, in eval mode.

    Module names are the original ones (nested names joined with ``_``).
    """
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for block in blocks:
        if isinstance(block, LayerBlock):
            modules[block.name] = block.layer
            if block.relu is not None:
                modules[block.relu] = nn.ReLU()
            if block.pool is not None:
                modules[block.pool[0]] = block.pool[1]
        elif isinstance(block, ReluBlock):
            modules[block.name] = nn.ReLU()
        elif isinstance(block, PoolBlock):
            modules[block.name] = block.pool
        else:
            modules[block.name] = nn.Flatten()
    return nn.Sequential(modules).eval()


def to_folded_fp32(model: nn.Module) -> nn.Sequential:
    """The fastest plain-PyTorch fp32 form of ``model``, the fair baseline for int8 speed:
    batch norms folded into the layers before them (:func:`folded_model`), eval mode, and
    channels-last memory when it has Conv2d layers (PyTorch's CPU convolutions are faster
    so; inputs in the default layout are accepted and converted by the first conv).

    >>> from course.models import SmallCNN
    >>> [type(m).__name__ for m in to_folded_fp32(SmallCNN().eval())][:3]
    ['Conv2d', 'ReLU', 'MaxPool2d']
    """
    folded = folded_model(plan_model(model)).eval()
    if any(isinstance(m, nn.Conv2d) for m in folded.modules()):
        folded = folded.to(memory_format=torch.channels_last)
    return folded
