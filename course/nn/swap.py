"""Swapping a model's Linear / Conv2d layers for quantized versions of the same geometry.

The methods that train with quantization in the loop (XNOR-Net, DoReFa-Net, QAT) all turn a
float model into a copy whose layers are their own subclasses of ``nn.Linear`` /
``nn.Conv2d``; these helpers hold that once.
"""

from __future__ import annotations

import copy
from collections.abc import Collection

from torch import nn


def check_layer_names(model: nn.Module, **named: Collection[str]) -> None:
    """Raise ``ValueError`` if a collection (keyword = argument name) names a layer that
    ``model`` does not have."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    names = {name for name, _ in model.named_modules()}
    for argument, listed in named.items():
        if isinstance(listed, str):
            raise TypeError(f"{argument} must be a collection of layer names, not a str")
        unknown = sorted(set(listed) - names)
        if unknown:
            raise ValueError(f"{argument} names layers the model does not have: {unknown}")


def like(kind: type[nn.Module], module: nn.Linear | nn.Conv2d, **extra: object) -> nn.Module:
    """A ``kind`` layer (a subclass of Linear or Conv2d) with ``module``'s geometry, weights,
    bias, device and dtype; ``extra`` goes to ``kind``'s constructor."""
    if isinstance(module, nn.Conv2d):
        layer = kind(module.in_channels, module.out_channels, module.kernel_size,
                     stride=module.stride, padding=module.padding, dilation=module.dilation,
                     groups=module.groups, bias=module.bias is not None,
                     padding_mode=module.padding_mode, **extra)
    elif isinstance(module, nn.Linear):
        layer = kind(module.in_features, module.out_features, bias=module.bias is not None,
                     **extra)
    else:
        raise TypeError(f"can only swap Linear or Conv2d layers, got {type(module).__name__}")
    layer.load_state_dict(module.state_dict(), strict=False)
    return layer.to(module.weight.device, module.weight.dtype)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule called ``name`` (dotted) inside ``model``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def without_relu(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose ``nn.ReLU`` modules are ``nn.Identity``: XNOR layers
    binarize what they receive, so they must see batch-norm outputs, not ReLU outputs (the
    sign of a ReLU output is always +1). ``model`` is not modified.

    >>> without_relu(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))[1]
    Identity()
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, nn.ReLU):
            replace_module(out, name, nn.Identity())
    return out
