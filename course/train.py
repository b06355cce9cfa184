"""Training and evaluation loops: seeding, device choice, Adam + cross-entropy, accuracy.

``trained_model(name)`` gives a course model trained on the embedded MNIST split, the same
weights every run (same seed, same thread count), cached on disk after the first call.

>>> from course.models import build_model
>>> set_seed(0)
>>> model = build_model("mlp")
>>> pick_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from course.models import build_model, canonical_name
from course.quant.checks import check_int, check_module

CACHE_ENV = "COURSE_CACHE_DIR"
"""Environment variable: when set, checkpoints live in ``$COURSE_CACHE_DIR/checkpoints``."""

CHECKPOINT_DIRNAME = "checkpoints"

CHECKPOINT_MODE = 0o644
"""File permissions of a saved checkpoint: readable by everyone, writable by its owner."""

TRAIN_THREADS = 1
"""CPU threads ``trained_model`` trains with: the weights then do not depend on the machine's
core count (a different thread count splits float sums differently), and one thread is
also the fastest for these small layers when other programs share the cores."""

MAX_SEED = 2**32 - 1
"""Largest seed every generator (random, numpy, torch) accepts."""


@dataclass(frozen=True)
class Recipe:
    """How ``trained_model`` trains: Adam on cross-entropy, the data module's batches."""

    epochs: int
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 0.0


RECIPES: dict[str, Recipe] = {
    "mlp": Recipe(epochs=10),
    "deck_mlp": Recipe(epochs=10),
    "cnn": Recipe(epochs=8, lr=3e-3),
    "resnet": Recipe(epochs=6),
}
"""The default training recipe per model name (tuned for the embedded 3,500-image split)."""


@dataclass(frozen=True)
class History:
    """What ``train_model`` saw, one entry per epoch.

    ``losses``: mean cross-entropy over the epoch's samples; ``accuracies``: fraction of the
    epoch's samples classified correctly *while* training (train mode, weights changing);
    ``seconds``: wall-clock time of the whole run; ``device``: where it ran.
    """

    losses: tuple[float, ...]
    accuracies: tuple[float, ...]
    seconds: float
    device: str

    @property
    def epochs(self) -> int:
        return len(self.losses)


# ----------------------------------------------------------------------------- checks


def _check_float(value: Any, name: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {kind} number, got {value}")
    return value


def _check_loader(loader: Any) -> Iterable[Any]:
    if isinstance(loader, (torch.Tensor, str, bytes)) or not isinstance(loader, Iterable):
        raise TypeError("loader must be an iterable of (x, y) batches such as a DataLoader, "
                        f"got {type(loader).__name__}")
    return loader


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(f"loader must yield (x, y) pairs, got a {type(batch).__name__}")
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("loader must yield (x, y) tensors, got "
                        f"({type(x).__name__}, {type(y).__name__})")
    return x, y


# ----------------------------------------------------------------------------- basics


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA).

    ``seed`` is an int in [0, 2**32 - 1].

    >>> set_seed(0); a = torch.rand(2); set_seed(0); torch.equal(a, torch.rand(2))
    True
    """
    seed = check_int(seed, "seed", 0, MAX_SEED)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``device`` if given (a string such as ``"cpu"``, ``"cuda:0"``, or
    a ``torch.device``), otherwise CUDA when available, else CPU.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str, a torch.device or None, "
                        f"got {type(device).__name__}")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a valid device: {err}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for CUDA, but CUDA is not available here; "
                         "use 'cpu' or device=None")
    return chosen


def _model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with none)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------- loops


def train_model(model: nn.Module, loader: Iterable[Any], epochs: int, lr: float = 1e-3,
                seed: int = 0, device: str | torch.device | None = None,
                progress: bool = True, weight_decay: float = 0.0) -> History:
    """Train ``model`` in place with Adam on cross-entropy; return the per-epoch ``History``.

    ``loader`` yields ``(x, y)``: x float32 inputs the model accepts, y int64 class indices
    ``[B]``; the model returns logits ``[B, C]``. ``set_seed(seed)`` runs first, so a
    loader without its own generator shuffles the same way every run. The model is moved
    to ``pick_device(device)`` and stays there, left in train mode. ``progress`` shows one
    tqdm bar per epoch with the running loss and accuracy.

    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    >>> net = nn.Linear(4, 2)
    >>> h = train_model(net, DataLoader(data, batch_size=16), epochs=2, progress=False)
    >>> h.epochs, len(h.accuracies)
    (2, 2)
    """
    model = check_module(model)
    loader = _check_loader(loader)
    epochs = check_int(epochs, "epochs", 1)
    lr = _check_float(lr, "lr", positive=True)
    weight_decay = _check_float(weight_decay, "weight_decay", positive=False)
    seed = check_int(seed, "seed", 0, MAX_SEED)
    dev = pick_device(device)

    set_seed(seed)
    model.to(dev)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    accuracies: list[float] = []
    start = time.perf_counter()
    for epoch in range(epochs):
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=True, unit="batch")
        for batch in bar:
            x, y = _split_batch(batch)
            x, y = x.to(dev), y.to(dev)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            n = y.shape[0]
            total_loss += loss.item() * n
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += n
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}",
                            refresh=False)
        bar.close()
        if seen == 0:
            raise ValueError("loader yielded no batches")
        losses.append(total_loss / seen)
        accuracies.append(correct / seen)
    return History(losses=tuple(losses), accuracies=tuple(accuracies),
                   seconds=time.perf_counter() - start, device=str(dev))


def evaluate(model: nn.Module, loader: Iterable[Any],
             device: str | torch.device | None = None) -> float:
    """Accuracy of ``model`` on ``loader``: fraction in [0, 1] of samples whose largest logit
    is the label.

    Runs in eval mode without gradients, on ``device`` (default: where the model already
    is); afterwards the model is back in its previous train/eval mode and on its previous
    device. ``loader`` yields ``(x, y)`` as in ``train_model``.

    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> data = TensorDataset(torch.eye(2), torch.tensor([0, 1]))
    >>> net = nn.Linear(2, 2)
    >>> with torch.no_grad(): _ = net.weight.copy_(torch.eye(2)), net.bias.zero_()
    >>> evaluate(net, DataLoader(data))
    1.0
    """
    model = check_module(model)
    loader = _check_loader(loader)
    home = _model_device(model)
    dev = home if device is None else pick_device(device)
    was_training = model.training
    correct, seen = 0, 0
    try:
        if dev != home:
            model.to(dev)
        model.eval()
        with torch.no_grad():
            for batch in loader:
                x, y = _split_batch(batch)
                logits = model(x.to(dev))
                if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
                    raise ValueError(f"model must return logits [B, C] for a batch of "
                                     f"{y.shape[0]}, got shape {tuple(logits.shape)}")
                correct += int((logits.argmax(dim=1).cpu() == y.cpu()).sum())
                seen += y.shape[0]
    finally:
        model.train(was_training)
        if dev != home:
            model.to(home)
    if seen == 0:
        raise ValueError("loader yielded no batches")
    return correct / seen


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_dir() -> Path:
    """Where ``trained_model`` caches weights: ``$COURSE_CACHE_DIR/checkpoints`` when that
    variable is set, else ``checkpoints`` next to the data cache (``course.data.cache_dir()``).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / CHECKPOINT_DIRNAME
    from course import data  # imported here: the data module is only needed for caching

    return Path(data.cache_dir()).parent / CHECKPOINT_DIRNAME


def _fingerprint(model: nn.Module, recipe: Recipe) -> str:
    """Short hash of the architecture and the recipe: code changes invalidate the cache."""
    text = f"{model!r}\n{recipe!r}\nthreads={TRAIN_THREADS}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _model_key(name: Any) -> str:
    key = canonical_name(name)
    if key not in RECIPES:
        raise ValueError(f"no training recipe for model {name!r}")
    return key


def checkpoint_path(name: str, epochs: int, seed: int) -> Path:
    """The cache file of ``trained_model(name, epochs, seed)`` for this torch version.

    The file name holds the model name, epochs, seed, torch version and a hash of the
    architecture and training recipe, e.g. ``mlp-e10-s0-torch2.13.0+cpu-1a2b3c4d5e.pt``.
    """
    key = _model_key(name)
    epochs = check_int(epochs, "epochs", 1)
    seed = check_int(seed, "seed", 0, MAX_SEED)
    recipe = RECIPES[key]
    with torch.random.fork_rng(devices=[]):  # building the model must not move the RNG
        model = build_model(key)
    fingerprint = _fingerprint(model, Recipe(epochs, recipe.lr, recipe.batch_size,
                                             recipe.weight_decay))
    filename = f"{key}-e{epochs}-s{seed}-torch{torch.__version__}-{fingerprint}.pt"
    return checkpoint_dir() / filename


def _save_atomic(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.chmod(tmp, CHECKPOINT_MODE)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def training_threads() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(TRAIN_THREADS)``; the previous thread
    count is restored afterwards, also on an exception."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fine_tune(model: nn.Module, loader: Iterable[Any], epochs: int, lr: float,
              seed: int = 0) -> nn.Module:
    """Train ``model`` in place from its current weights (``train_model``: Adam on
    cross-entropy, seeded, no progress bar) with ``TRAIN_THREADS`` threads, as
    ``trained_model`` does; return it in eval mode.

    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    >>> fine_tune(nn.Linear(4, 2), DataLoader(data, batch_size=8), 1, 1e-2).training
    False
    """
    with training_threads():
        train_model(model, loader, epochs=epochs, lr=lr, seed=seed, progress=False)
    return model.eval()


def trained_model(name: str, epochs: int | None = None, seed: int = 0, cache: bool = True,
                  progress: bool = True) -> nn.Module:
    """``build_model(name)`` trained on ``course.data.mnist_loaders(seed=seed).train``.

    ``epochs`` defaults to ``RECIPES[name].epochs``. Training runs on the CPU with
    ``TRAIN_THREADS`` threads (restored afterwards), seeded, so the same seed gives the same
    weights every run, whatever the machine's thread count. With ``cache`` the state
    dict is saved under ``checkpoint_dir()``, keyed by name, epochs, seed, torch version and
    a hash of the architecture and recipe; a later call loads it in milliseconds. Returns
    the model in eval mode, on the CPU.

    >>> model = trained_model("mlp", progress=False)  # doctest: +SKIP
    """
    key = _model_key(name)
    recipe = RECIPES[key]
    epochs = recipe.epochs if epochs is None else check_int(epochs, "epochs", 1)
    seed = check_int(seed, "seed", 0, MAX_SEED)
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be a bool, got {type(cache).__name__}")

    path = checkpoint_path(key, epochs, seed) if cache else None
    set_seed(seed)
    model = build_model(key)
    if path is not None and path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            return model.eval()
        except Exception as err:  # a damaged or stale file: train again and replace it
            warnings.warn(f"ignoring unreadable checkpoint {path} ({err}); training again",
                          stacklevel=2)
            set_seed(seed)
            model = build_model(key)

    from course import data  # imported here so models and loops work without the data

    loaders = data.mnist_loaders(batch_size=recipe.batch_size, seed=seed)
    with training_threads():
        train_model(model, loaders.train, epochs=epochs, lr=recipe.lr, seed=seed,
                    device="cpu", progress=progress, weight_decay=recipe.weight_decay)
    model.eval()
    if path is not None:
        _save_atomic(model.state_dict(), path)
    return model
