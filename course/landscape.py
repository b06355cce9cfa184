"""Loss landscapes: directions in weight space, the loss along them, and the sharpness.

A *direction* is a dict ``{parameter name: tensor}`` with one entry per
``model.named_parameters()`` entry, each of the parameter's shape and dtype. Moving the model
along it by ``alpha`` gives the weights ``theta + alpha * d`` (:func:`perturbed`); batch-norm
running statistics are never moved, and losses are measured in eval mode.

* :func:`filter_normalized_direction` — Li et al., "Visualizing the Loss Landscape of Neural
  Nets" (NeurIPS 2018): a Gaussian direction whose every *filter* (a slice along dim 0: one
  output channel of a conv, one output row of a Linear) is rescaled to the norm of the same
  filter of the weights, so that ``alpha = 1`` moves each filter by its own size, whatever
  the scale the weights happen to have (batch norm makes a net invariant to it). Parameters
  with at most one dimension (biases, batch-norm weight and bias) get zeros, the paper's
  ``--xignore biasbn``.
* :func:`quantization_direction` — the quantization step ``Q_b(W) - W`` of every Linear and
  Conv2d weight (symmetric, per output channel, ``course.quant.fake_quantize_per_channel``):
  ``alpha = 0`` is the float model, ``alpha = 1`` exactly its b-bit quantized version.
* :func:`loss_curve`, :func:`loss_surface` — the mean per-sample cross-entropy along one
  direction, over the plane of two.
* :func:`top_hessian_eigenvalue` — the sharpness: the largest eigenvalue of the Hessian of the
  cross-entropy, by power iteration on Hessian-vector products (double backward).
* :func:`plane_coordinates` — where a direction lands in the plane of two others (least
  squares, float64), and how much of it lies outside that plane.

>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 2))
>>> d = filter_normalized_direction(net, torch.Generator().manual_seed(0))
>>> sorted(d), bool(torch.allclose(d["0.weight"].norm(dim=1), net[0].weight.norm(dim=1)))
(['0.bias', '0.weight'], True)
>>> bool(d["0.bias"].abs().sum() == 0)
True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from course.quant import fake_quantize_per_channel
from course.quant.checks import check_int, check_module

Direction = dict[str, torch.Tensor]
"""One tensor per ``named_parameters()`` entry, same shape (see the module doc)."""

QUANTIZED_LAYERS = (nn.Linear, nn.Conv2d)
"""Layers whose weight the quantization direction moves (as
``course.methods.direct.direct_quantize``)."""


# ----------------------------------------------------------------------------- checks
def _check_generator(generator: Any) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_alphas(alphas: Any, name: str = "alphas") -> list[float]:
    """``alphas`` (a sequence, tensor or array of finite numbers) as a list of floats;
    ``TypeError`` or ``ValueError`` naming ``name``."""
    if isinstance(alphas, (torch.Tensor, np.ndarray)):
        alphas = alphas.tolist()
    if isinstance(alphas, (str, bytes)) or not isinstance(alphas, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(alphas).__name__}")
    if len(alphas) == 0:
        raise ValueError(f"{name} must not be empty")
    return [_check_number(a, f"{name}[{i}]") for i, a in enumerate(alphas)]


def check_direction(model: nn.Module, direction: Any, name: str = "direction") -> Direction:
    """``direction`` checked against ``model``: a Mapping with a tensor of the right shape for
    every parameter. ``KeyError`` names a missing parameter, ``ValueError`` one whose tensor
    has the wrong shape or an entry that is no parameter of ``model``; ``TypeError`` a value
    that is not a tensor."""
    if not isinstance(direction, Mapping):
        raise TypeError(f"{name} must be a dict of parameter name -> tensor, "
                        f"got {type(direction).__name__}")
    params = dict(model.named_parameters())
    for key, p in params.items():
        if key not in direction:
            raise KeyError(f"{name} has no entry for parameter {key!r}")
        d = direction[key]
        if not isinstance(d, torch.Tensor):
            raise TypeError(f"{name}[{key!r}] must be a torch.Tensor, got {type(d).__name__}")
        if d.shape != p.shape:
            raise ValueError(f"{name}[{key!r}] has shape {list(d.shape)}, but parameter "
                             f"{key!r} has shape {list(p.shape)}")
    extra = [k for k in direction if k not in params]
    if extra:
        raise ValueError(f"{name}[{extra[0]!r}] is not a parameter of the model")
    return dict(direction)


# ----------------------------------------------------------------------------- directions
def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> Direction:
    """A random direction, filter-normalized as in Li et al. (2018).

    For every ``model.named_parameters()`` entry, in that order, draws
    ``torch.randn(p.shape, generator=generator)`` (1-D parameters too, so that the draws of
    later parameters do not depend on how earlier ones are treated). Parameters with
    ``dim() <= 1`` then get zeros; for the others, each filter ``d[i]`` (slice along dim 0)
    is rescaled to ``||theta[i]|| / ||d[i]||`` times itself (Frobenius norms): a filter
    of zeros gets zeros. Returns float tensors of each parameter's shape, dtype and device;
    the model is not modified.
    """
    model = check_module(model)
    generator = _check_generator(generator)
    out: Direction = {}
    for key, p in model.named_parameters():
        d = torch.randn(p.shape, generator=generator)
        theta = p.detach()
        if p.dim() <= 1:
            out[key] = torch.zeros_like(theta)
            continue
        d = d.to(dtype=theta.dtype, device=theta.device)
        theta_norm = theta.reshape(theta.shape[0], -1).norm(dim=1)
        d_norm = d.reshape(d.shape[0], -1).norm(dim=1)
        factor = torch.where(theta_norm > 0, theta_norm / d_norm, torch.zeros_like(theta_norm))
        out[key] = d * factor.reshape((-1,) + (1,) * (d.dim() - 1))
    return out


def quantization_direction(model: nn.Module, num_bits: int) -> Direction:
    """The quantization step as a direction: ``fake_quantize_per_channel(W, num_bits, 0) - W``
    for the weight of every ``nn.Linear`` and ``nn.Conv2d`` (symmetric, one scale per output
    channel, as in lab 01), zeros for every other parameter (biases, batch norm).

    ``perturbed(model, d, 1.0)`` is then the directly quantized model. Fewer than 2 bits is a
    ``ValueError`` (a restricted symmetric grid needs 2). The model is not modified.
    """
    model = check_module(model)
    check_int(num_bits, "num_bits", 2)
    weights = {id(m.weight) for m in model.modules()
               if isinstance(m, QUANTIZED_LAYERS) and isinstance(m.weight, torch.Tensor)}
    out: Direction = {}
    for key, p in model.named_parameters():
        w = p.detach()
        if id(p) in weights:
            out[key] = (fake_quantize_per_channel(w, num_bits, axis=0) - w).to(w.dtype)
        else:
            out[key] = torch.zeros_like(w)
    return out


def combine(directions: Mapping[str, Direction] | Sequence[Direction],
            weights: Sequence[float]) -> Direction:
    """``sum_k weights[k] * directions[k]``, key by key (the directions must share keys)."""
    items = list(directions.values()) if isinstance(directions, Mapping) else list(directions)
    weights = check_alphas(weights, "weights")
    if len(items) != len(weights) or not items:
        raise ValueError(f"weights must give one number per direction: {len(items)} "
                         f"directions, {len(weights)} weights")
    keys = list(items[0])
    for i, d in enumerate(items[1:], 1):
        if list(d) != keys:
            raise ValueError(f"directions[{i}] has other keys than directions[0]")
    return {k: sum(w * d[k] for w, d in zip(weights, items, strict=True)) for k in keys}


def _set_weights(target: nn.Module, base: Mapping[str, torch.Tensor], direction: Direction,
                 alpha: float) -> None:
    with torch.no_grad():
        for key, p in target.named_parameters():
            p.copy_(base[key] + alpha * direction[key].to(base[key]))


def perturbed(model: nn.Module, direction: Mapping[str, torch.Tensor], alpha: float) -> nn.Module:
    """A deep copy of ``model`` with every parameter ``theta + alpha * direction[name]``.

    Buffers (batch-norm running statistics) are copied unchanged; the input model is not
    modified. ``KeyError`` names a parameter whose direction is missing, ``ValueError`` one
    whose direction has the wrong shape.
    """
    model = check_module(model)
    direction = check_direction(model, direction)
    alpha = _check_number(alpha, "alpha")
    out = copy.deepcopy(model)
    base = {k: p.detach().clone() for k, p in model.named_parameters()}
    _set_weights(out, base, direction, alpha)
    return out


# ----------------------------------------------------------------------------- losses
def _batches(loader: Any) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(loader, (torch.Tensor, str, bytes)) or not isinstance(loader, Iterable):
        raise TypeError("loader must be an iterable of (x, y) batches such as a DataLoader, "
                        f"got {type(loader).__name__}")
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"loader must yield (x, y) pairs, got a {type(batch).__name__}")
        yield batch[0], batch[1]


def loss_and_accuracy(model: nn.Module, loader: Any) -> tuple[float, float]:
    """``(mean per-sample cross-entropy, accuracy)`` of ``model`` over the whole ``loader``.

    The sum of the per-sample losses divided by the number of samples (not a mean of batch
    means), in eval mode without gradients; the model's train/eval mode is restored.
    """
    model = check_module(model)
    was_training = model.training
    total, correct, seen = 0.0, 0, 0
    try:
        model.eval()
        with torch.no_grad():
            for x, y in _batches(loader):
                logits = model(x)
                total += F.cross_entropy(logits, y, reduction="sum").item()
                correct += int((logits.argmax(dim=1) == y).sum())
                seen += int(y.shape[0])
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("loader yielded no samples")
    return total / seen, correct / seen


def loss_curve(model: nn.Module, direction: Mapping[str, torch.Tensor], alphas: Sequence[float],
               loader: Any) -> list[float]:
    """The mean per-sample cross-entropy over the whole ``loader`` at ``theta + alpha * d``
    for each ``alpha`` of ``alphas`` (a list of Python floats, in order).

    Evaluated on one copy of the model, in eval mode, without gradients; the input model is
    not modified. Errors as :func:`perturbed`.
    """
    model = check_module(model)
    direction = check_direction(model, direction)
    alphas = check_alphas(alphas)
    work = copy.deepcopy(model)
    base = {k: p.detach().clone() for k, p in model.named_parameters()}
    losses = []
    for alpha in alphas:
        _set_weights(work, base, direction, alpha)
        losses.append(loss_and_accuracy(work, loader)[0])
    return losses


def loss_surface(model: nn.Module, directions: tuple[Mapping[str, torch.Tensor],
                                                     Mapping[str, torch.Tensor]],
                 alphas: Sequence[float], betas: Sequence[float], loader: Any) -> np.ndarray:
    """The loss at ``theta + a * d1 + b * d2`` for ``directions = (d1, d2)``: float64
    ``[len(betas), len(alphas)]`` (row ``j`` is ``betas[j]``, as matplotlib's
    ``contour(alphas, betas, surface)`` expects). One :func:`loss_curve` along ``d1`` per
    ``b``, from ``perturbed(model, d2, b)``."""
    model = check_module(model)
    if not isinstance(directions, (tuple, list)) or len(directions) != 2:
        raise TypeError("directions must be a pair (d1, d2) of directions")
    d1 = check_direction(model, directions[0], "directions[0]")
    d2 = check_direction(model, directions[1], "directions[1]")
    alphas, betas = check_alphas(alphas), check_alphas(betas, "betas")
    rows = [loss_curve(perturbed(model, d2, b), d1, alphas, loader) for b in betas]
    return np.asarray(rows, dtype=np.float64)


# ----------------------------------------------------------------------------- geometry
def _flat64(direction: Mapping[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    return torch.cat([direction[k].detach().reshape(-1).to(torch.float64).cpu() for k in keys])


def direction_norm(direction: Mapping[str, torch.Tensor]) -> float:
    """The Euclidean norm of a direction, all its tensors together (float64)."""
    return float(_flat64(direction, list(direction)).norm())


def plane_coordinates(direction: Mapping[str, torch.Tensor],
                      basis: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]
                      ) -> tuple[float, float, float]:
    """``(a, b, outside)``: ``a * d1 + b * d2`` is the point of the plane of ``basis = (d1,
    d2)`` closest to ``direction`` (least squares, float64), and ``outside`` the fraction of
    the direction's norm left out of that plane (0: in the plane; 1: orthogonal to it)."""
    if not isinstance(basis, (tuple, list)) or len(basis) != 2:
        raise TypeError("basis must be a pair (d1, d2) of directions")
    keys = list(basis[0])
    if list(basis[1]) != keys or sorted(direction) != sorted(keys):
        raise ValueError("direction and basis must have the same keys")
    v, e1, e2 = (_flat64(d, keys) for d in (direction, basis[0], basis[1]))
    gram = torch.tensor([[e1 @ e1, e1 @ e2], [e2 @ e1, e2 @ e2]], dtype=torch.float64)
    rhs = torch.tensor([e1 @ v, e2 @ v], dtype=torch.float64)
    a, b = torch.linalg.solve(gram, rhs).tolist()
    norm = float(v.norm())
    outside = float((v - a * e1 - b * e2).norm()) / norm if norm > 0 else 0.0
    return a, b, outside


# ----------------------------------------------------------------------------- sharpness
def _dot(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(xs, ys, strict=True))


def top_hessian_eigenvalue(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                           iters: int, generator: torch.Generator) -> float:
    """The eigenvalue of largest magnitude of the Hessian of the mean cross-entropy on
    ``batch = (x, y)`` with respect to all of the model's parameters, in eval mode.

    Power iteration: ``v`` starts as ``torch.randn(p.shape, generator=generator)`` for each
    parameter in ``named_parameters()`` order, normalized (all parameters together); each of
    the ``iters`` steps computes ``Hv`` by double backward (the gradient of ``g . v``, where
    ``g`` is the gradient built with ``create_graph=True``), takes the Rayleigh quotient
    ``v . Hv`` as the estimate and ``Hv / ||Hv||`` as the next ``v``. Returns the last
    estimate as a Python float (0.0 if ``Hv`` vanishes). Works on a copy: the input model,
    its mode included, is not modified.
    """
    model = check_module(model)
    if not isinstance(batch, (tuple, list)) or len(batch) != 2 or not all(
            isinstance(t, torch.Tensor) for t in batch):
        raise TypeError("batch must be a pair (x, y) of tensors")
    iters = check_int(iters, "iters", 1)
    generator = _check_generator(generator)
    net = copy.deepcopy(model).eval()
    params = [p.requires_grad_(True) for _, p in net.named_parameters()]
    if not params:
        raise ValueError("model has no parameters")
    x, y = batch
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    v = [torch.randn(p.shape, generator=generator).to(p) for p in params]
    norm = torch.sqrt(_dot(v, v))
    v = [t / norm for t in v]
    estimate = 0.0
    for _ in range(iters):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        estimate = float(_dot(v, hv))
        norm = torch.sqrt(_dot(hv, hv))
        if norm == 0:
            return 0.0
        v = [t.detach() / norm for t in hv]
    return estimate


__all__ = ["Direction", "QUANTIZED_LAYERS", "check_direction", "combine", "direction_norm",
           "filter_normalized_direction", "loss_and_accuracy",
           "loss_curve", "loss_surface", "perturbed", "plane_coordinates",
           "quantization_direction", "top_hessian_eigenvalue"]
