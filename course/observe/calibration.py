"""Calibration: run representative batches through a float model and observe activations.

``calibrate(model, loader, observer_factory)`` puts one observer on the model's input and
one on the output of every leaf module (or of the modules named in ``modules``) with
forward hooks, runs the batches in eval mode without gradients, removes the hooks (also
when a batch fails) and restores the model's train/eval mode.

>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
>>> cal = calibrate(model, [torch.randn(8, 4) for _ in range(3)], "minmax")
>>> sorted(cal.outputs), cal.batches, cal.outputs["1"].range()[0]
(['0', '1'], 3, 0.0)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from course.observe.observers import OBSERVERS, Observer

ObserverFactory = Callable[[], Observer] | str


@dataclass(frozen=True)
class Calibration:
    """What calibration saw: the input's observer, each module output's observer by name,
    the number of batches, and the shape of one input sample (without the batch axis)."""

    input: Observer
    outputs: dict[str, Observer]
    batches: int
    input_shape: tuple[int, ...]

    def output(self, name: str) -> Observer:
        """The observer of module ``name``'s output; ``KeyError`` names the known ones."""
        if name not in self.outputs:
            raise KeyError(f"no observer for module {name!r}; observed: "
                           f"{', '.join(self.outputs) or 'none'}")
        return self.outputs[name]


def make_observer_factory(observer_factory: object) -> Callable[[], Observer]:
    """Accept an Observer subclass, a zero-argument callable, or a name in ``OBSERVERS``."""
    if isinstance(observer_factory, str):
        if observer_factory not in OBSERVERS:
            raise ValueError(f"unknown observer {observer_factory!r}; choose one of "
                             f"{', '.join(OBSERVERS)}")
        return OBSERVERS[observer_factory]
    if not callable(observer_factory):
        raise TypeError(f"observer_factory must be an Observer class, a callable returning one "
                        f"or a name ({', '.join(OBSERVERS)}), got "
                        f"{type(observer_factory).__name__}")
    return observer_factory


def _new_observer(factory: Callable[[], Observer]) -> Observer:
    obs = factory()
    if not isinstance(obs, Observer):
        raise TypeError(f"observer_factory must return an Observer, got {type(obs).__name__}")
    return obs


def batch_inputs(batch: Any) -> torch.Tensor:
    """The model input of a loader batch: ``x`` of ``(x, y)``, or the tensor itself."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Sequence) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"a batch must be a tensor or an (inputs, labels) pair, got "
                    f"{type(batch).__name__}")


def calibrate(model: nn.Module, loader: Iterable[Any], observer_factory: ObserverFactory,
              num_batches: int | None = None,
              modules: Sequence[str] | None = None) -> Calibration:
    """Observe ``model``'s input and module outputs on the batches of ``loader``.

    Args:
        model: a float ``nn.Module``; it is run in eval mode, its mode restored afterwards.
        loader: an iterable of batches: tensors or ``(inputs, labels)`` pairs.
        observer_factory: Observer class, zero-argument callable returning an Observer,
            or a name of ``OBSERVERS`` (``"minmax"``, ``"moving_average"``, ...).
        num_batches: use only the first ``num_batches`` batches (default: all).
        modules: names (as in ``model.named_modules()``) whose outputs to observe
            (default: every leaf module).

    Returns:
        :class:`Calibration`. Raises ``ValueError`` if the loader gave no batch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    factory = make_observer_factory(observer_factory)
    if num_batches is not None:
        if isinstance(num_batches, bool) or not isinstance(num_batches, numbers.Integral):
            raise TypeError(f"num_batches must be an int or None, got "
                            f"{type(num_batches).__name__}")
        if num_batches < 1:
            raise ValueError(f"num_batches must be at least 1, got {num_batches}")
    named = dict(model.named_modules())
    if modules is None:
        names = [n for n, m in named.items() if n and not any(True for _ in m.children())]
    else:
        if isinstance(modules, str):
            raise TypeError("modules must be a sequence of module names, not one string")
        names = list(modules)
        unknown = [n for n in names if n not in named]
        if unknown:
            raise ValueError(f"no module named {', '.join(map(repr, unknown))} in the model")

    input_observer = _new_observer(factory)
    outputs = {name: _new_observer(factory) for name in names}

    def observe_output(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                outputs[name].update(output)
        return hook

    handles = [named[name].register_forward_hook(observe_output(name)) for name in names]
    was_training = model.training
    batches = 0
    input_shape: tuple[int, ...] = ()
    try:
        model.eval()
        with torch.no_grad():
            for batch in loader:
                if num_batches is not None and batches >= num_batches:
                    break
                x = batch_inputs(batch)
                input_observer.update(x)
                input_shape = tuple(x.shape[1:])
                model(x)
                batches += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if batches == 0:
        raise ValueError("loader gave no batch: calibration needs representative data")
    return Calibration(input=input_observer, outputs=outputs, batches=batches,
                       input_shape=input_shape)
