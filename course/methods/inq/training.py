"""INQ's retraining: one masked step, and the whole partition-quantize-retrain loop.

After each partition, the frozen (quantized) weights must stay **exactly** where they are
while the others retrain. Masking the gradient is not enough: SGD's momentum buffer, Adam's
moment estimates and weight decay all move a weight whose gradient is zero (the reference
Caffe code masks only on the GPU; public PyTorch ports trip over this). :func:`inq_step`
masks the gradient *and* puts every frozen weight back to its value after the optimizer's
step, so the guarantee holds for any optimizer.

Only ``nn.Linear`` and ``nn.Conv2d`` weights are quantized (:func:`inq_weight_names`):
biases and batch norm stay float and keep training, as in the paper.

>>> from course.models import build_model
>>> inq_weight_names(build_model("mlp"))
['fc1.weight', 'fc2.weight', 'fc3.weight']
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from course.methods.inq.levels import inq_exponents, quantize_pow2
from course.methods.inq.partition import check_portion, inq_partition, random_partition

QUANTIZED_LAYERS = (nn.Linear, nn.Conv2d)
"""Layers whose weight INQ quantizes; everything else (biases, batch norm) stays float."""

PARTITIONS = ("pruning", "random")
"""How :func:`incremental_quantize` chooses the next group: largest |w| first, or at random."""

OPTIMIZERS = ("sgd", "adam")


def inq_weight_names(model: nn.Module) -> list[str]:
    """``named_parameters`` names of every Linear and Conv2d weight, in model order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [f"{name}.weight" if name else "weight" for name, module in model.named_modules()
            if isinstance(module, QUANTIZED_LAYERS)]


def _check_step(model: object, masks: object, optimizer: object,
                batch: object) -> tuple[dict[str, tuple[nn.Parameter, torch.Tensor]], Any, Any]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict of parameter name -> bool tensor, got "
                        f"{type(masks).__name__}")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError("batch must be a pair (x, y) of tensors")
    x, y = batch
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"batch must be (x, y) tensors, got ({type(x).__name__}, "
                        f"{type(y).__name__})")
    params = dict(model.named_parameters())
    out = {}
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"masks: {name!r} is not a parameter of the model "
                             f"(known: {sorted(params)[:6]}...)")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"masks[{name!r}] must be a bool tensor")
        if mask.shape != params[name].shape:
            raise ValueError(f"masks[{name!r}] has shape {tuple(mask.shape)}, the parameter "
                             f"{tuple(params[name].shape)}")
        out[name] = (params[name], mask.to(params[name].device))
    return out, x, y


def inq_step(model: nn.Module, masks: dict[str, torch.Tensor],
             optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """One training step on ``batch = (x, y)`` (cross-entropy) that leaves every frozen
    weight — ``masks[name]`` True — exactly at its value before the step, with SGD momentum,
    Adam or weight decay alike. Returns the loss (a float, before the step).

    Parameters without a mask train normally; the model's train/eval mode is left as the
    caller set it. The gradient of frozen weights is zeroed (so they do not feed the
    optimizer's statistics with useless gradients), and after ``optimizer.step()`` they are
    put back from a copy taken before it (so momentum and decay cannot move them).
    """
    frozen, x, y = _check_step(model, masks, optimizer, batch)
    before = {name: p.detach().clone() for name, (p, m) in frozen.items() if bool(m.any())}
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for name in before:
            p, m = frozen[name]
            if p.grad is not None:
                p.grad.masked_fill_(m, 0.0)
        optimizer.step()
        for name, saved in before.items():
            p, m = frozen[name]
            p.copy_(torch.where(m, saved, p))
    return float(loss.detach())


@dataclass(frozen=True)
class InqRecipe:
    """How :func:`incremental_quantize` runs.

    ``portions``: accumulated portions, increasing, the last 1.0 (every weight quantized);
    ``epochs``: retraining epochs after each partition; ``optimizer``: ``"sgd"`` (with
    ``momentum``) or ``"adam"``; ``partition``: ``"pruning"`` (largest |w| first) or
    ``"random"``.
    """

    portions: tuple[float, ...] = (0.5, 0.75, 0.875, 1.0)
    epochs: int = 1
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    partition: str = "pruning"

    def __post_init__(self) -> None:
        portions = tuple(check_portion(p) for p in self.portions)
        if not portions or portions[-1] != 1.0 or list(portions) != sorted(set(portions)):
            raise ValueError(f"portions must increase and end at 1.0, got {self.portions}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {self.epochs!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {self.partition!r}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")


@dataclass(frozen=True)
class InqParts:
    """The four pieces the loop calls: the library's by default, or a student's."""

    exponents: Callable[[float, int], tuple[int, int]] = inq_exponents
    quantize: Callable[[torch.Tensor, int, int], torch.Tensor] = quantize_pow2
    partition: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = inq_partition
    step: Callable[..., float] = inq_step


@dataclass
class InqResult:
    """What :func:`incremental_quantize` returns.

    ``model``: the quantized copy (eval mode); ``exponents``: weight name -> ``(n1, n2)``;
    ``masks``: weight name -> frozen mask (all True at the end); ``history``: one dict per
    portion (``portion``, ``frozen``: fraction of quantized weights, ``loss``: mean
    retraining loss, ``accuracy`` when an ``evaluate`` function was given).
    """

    model: nn.Module
    num_bits: int
    exponents: dict[str, tuple[int, int]]
    masks: dict[str, torch.Tensor]
    history: list[dict] = field(default_factory=list)


def _optimizer(model: nn.Module, recipe: InqRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def incremental_quantize(model: nn.Module, num_bits: int, loader: Iterable[Any],
                         recipe: InqRecipe = InqRecipe(), *, seed: int = 0,
                         evaluate: Callable[[nn.Module], float] | None = None,
                         parts: InqParts = InqParts()) -> InqResult:
    """INQ on a deep copy of ``model``: for each accumulated portion, partition every
    Linear/Conv2d weight, quantize the new group to powers of two (the layer's exponents
    come from its float weights at the start), retrain the rest for ``recipe.epochs``
    epochs of ``loader`` with ``parts.step``. The input model is not modified.

    ``evaluate(model) -> accuracy`` is called after each portion when given. Seeded:
    ``torch.manual_seed(seed)`` (the loader's shuffling) and the random partition's
    generator.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(recipe, InqRecipe):
        raise TypeError(f"recipe must be an InqRecipe, got {type(recipe).__name__}")
    if isinstance(loader, (torch.Tensor, str, bytes)) or not isinstance(loader, Iterable):
        raise TypeError(f"loader must be an iterable of (x, y) batches, got "
                        f"{type(loader).__name__}")
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate must be a function model -> accuracy or None, got "
                        f"{type(evaluate).__name__}")
    if not isinstance(parts, InqParts):
        raise TypeError(f"parts must be an InqParts, got {type(parts).__name__}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(model)
    params = dict(model.named_parameters())
    names = inq_weight_names(model)
    exponents = {n: tuple(parts.exponents(params[n].detach().abs().max().item(), num_bits))
                 for n in names}
    masks = {n: torch.zeros_like(params[n], dtype=torch.bool) for n in names}
    optimizer = _optimizer(model, recipe)
    total = sum(params[n].numel() for n in names)
    result = InqResult(model, num_bits, exponents, masks)
    for portion in recipe.portions:
        with torch.no_grad():
            for n in names:
                w = params[n]
                if recipe.partition == "pruning":
                    new = parts.partition(w.detach(), masks[n], portion)
                else:
                    new = random_partition(masks[n], portion, generator)
                added = new & ~masks[n]
                w.copy_(torch.where(added, parts.quantize(w.detach(), *exponents[n]), w))
                masks[n] = new
        model.train()
        losses = [parts.step(model, masks, optimizer, (x, y))
                  for _ in range(recipe.epochs) for x, y in loader]
        model.eval()
        row = {"portion": portion,
               "frozen": sum(int(m.sum()) for m in masks.values()) / total,
               "loss": sum(losses) / len(losses) if losses else None}
        if evaluate is not None:
            row["accuracy"] = evaluate(model)
        result.history.append(row)
    return result


def direct_pow2(model: nn.Module, num_bits: int,
                exponents: Callable[[float, int], tuple[int, int]] = inq_exponents,
                quantize: Callable[[torch.Tensor, int, int], torch.Tensor] = quantize_pow2,
                ) -> nn.Module:
    """A deep copy of ``model`` with every Linear/Conv2d weight rounded to its layer's
    powers of two at once, without retraining (the baseline INQ improves on)."""
    model = copy.deepcopy(model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in inq_weight_names(model):
            w = params[n]
            w.copy_(quantize(w.detach(), *exponents(w.detach().abs().max().item(), num_bits)))
    return model.eval()


__all__ = ["InqParts", "InqRecipe", "InqResult", "OPTIMIZERS", "PARTITIONS",
           "QUANTIZED_LAYERS", "direct_pow2", "incremental_quantize", "inq_step",
           "inq_weight_names"]
