"""Fine-tuning a :class:`course.methods.qat.QATModel`: the recipe and the loop.

The forward pass sees b-bit values, the backward pass float32 gradients through the
straight-through estimator. Batch-norm statistics and observers can be frozen from a given
epoch on (:class:`QATRecipe`); :func:`train_qat` runs ``course.train.train_model`` one
epoch at a time.

>>> recipe = QATRecipe(epochs=3, lr=1e-3, lr_decay=0.5)
>>> [recipe.lr_at(epoch) for epoch in range(recipe.epochs)]
[0.001, 0.0005, 0.00025]
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from course.methods.qat.model import QATModel, check_qat_model, freeze_bn_stats
from course.nn.fake_quant import freeze_observers
from course.train import History, train_model, training_threads


@dataclass(frozen=True)
class QATRecipe:
    """How :func:`train_qat` fine-tunes: Adam, learning rate ``lr * lr_decay**epoch``.

    ``freeze_bn_epoch``: batch statistics frozen from that epoch on (0 = from the start,
    the folded layer of inference trained directly; ``None`` = never).
    ``freeze_observers_epoch``: qparams frozen from that epoch on (``None`` = never).
    The defaults were chosen on the course's MLP and CNN (see the lab03 results).
    """

    epochs: int = 5
    lr: float = 1e-3
    lr_decay: float = 0.5
    freeze_bn_epoch: int | None = 0
    freeze_observers_epoch: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, numbers.Integral) \
                or self.epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")
        for name in ("lr", "lr_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not 0 < value <= (1 if name == "lr_decay" else float("inf")):
                raise ValueError(f"{name} must be a number in "
                                 f"{'(0, 1]' if name == 'lr_decay' else '(0, inf)'}, "
                                 f"got {value!r}")
        for name in ("freeze_bn_epoch", "freeze_observers_epoch"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, numbers.Integral) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based)."""
        return float(self.lr * self.lr_decay**epoch)


def train_qat(model: QATModel, loader: Iterable[Any], recipe: QATRecipe | None = None,
              seed: int = 0, progress: bool = True) -> History:
    """Fine-tune a :class:`QATModel` in place with ``recipe`` (default :class:`QATRecipe`).

    Each epoch is one ``course.train.train_model`` call (Adam on cross-entropy, at the
    epoch's learning rate, seed ``seed + epoch``; the optimizer state starts afresh each
    epoch, the loader's shuffling continues); the freezing switches act at the start of
    their epoch. Training uses ``course.train.TRAIN_THREADS`` CPU threads (restored
    afterwards), like ``trained_model``: the same result on every machine. The model is
    left in **eval mode** — a training-mode call would let the observers move again.
    Returns the per-epoch :class:`course.train.History`.
    """
    model = check_qat_model(model)
    recipe = QATRecipe() if recipe is None else recipe
    if not isinstance(recipe, QATRecipe):
        raise TypeError(f"recipe must be a QATRecipe, got {type(recipe).__name__}")
    losses: list[float] = []
    accuracies: list[float] = []
    seconds, device = 0.0, "cpu"
    try:
        with training_threads():
            for epoch in range(recipe.epochs):
                if recipe.freeze_bn_epoch == epoch:
                    freeze_bn_stats(model)
                if recipe.freeze_observers_epoch == epoch:
                    freeze_observers(model)
                history = train_model(model, loader, epochs=1, lr=recipe.lr_at(epoch),
                                      seed=seed + epoch, progress=progress)
                losses += history.losses
                accuracies += history.accuracies
                seconds += history.seconds
                device = history.device
    finally:
        model.eval()
    return History(tuple(losses), tuple(accuracies), seconds, device)
