"""Tests for course.download, through the download path of course.data.load_dataset.

Downloads are exercised for real against an HTTP server on 127.0.0.1 that serves small IDX
gzip files written here (with conftest's independent IDX writer): temporary files, MD5
checks, damaged cached files, timeouts, HTTP errors, short bodies, the progress bar, and
what the dataset loader makes of the downloaded files. Nothing in this file needs the
internet unless COURSE_TEST_NETWORK=1 is set (then the real MNIST is fetched once).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from course import data, download

IdxWriter = Callable[[np.ndarray], bytes]

# --------------------------------------------------------------------------- helpers

def md5(blob: bytes) -> str:
    return hashlib.md5(blob, usedforsecurity=False).hexdigest()


REAL = data.DATASETS["mnist"].remote
N_TRAIN, N_TEST = 30, 20


@dataclasses.dataclass
class Served:
    """Small IDX gzip files with the real MNIST file names, and what they decode to."""

    blobs: dict[str, bytes]
    images: torch.Tensor
    labels: torch.Tensor

    def spec(self, **md5_overrides: str) -> data.DatasetSpec:
        """The real "mnist" spec with these files' MD5s (the base URL stays the real one)."""
        files = {}
        for field in ("train_images", "train_labels", "test_images", "test_labels"):
            f = getattr(REAL, field)
            files[field] = data.RemoteFile(f.filename,
                                           md5_overrides.get(field, md5(self.blobs[f.filename])))
        return dataclasses.replace(data.DATASETS["mnist"],
                                   remote=dataclasses.replace(REAL, **files))


def make_served(idx_bytes: IdxWriter) -> Served:
    rng = np.random.default_rng(1234)
    train_x = rng.integers(0, 256, size=(N_TRAIN, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(N_TEST, 28, 28), dtype=np.uint8)
    train_y = (np.arange(N_TRAIN) % 10).astype(np.uint8)
    test_y = rng.integers(0, 10, size=N_TEST, dtype=np.uint8)
    blobs = {
        REAL.train_images.filename: gzip.compress(idx_bytes(train_x)),
        REAL.train_labels.filename: gzip.compress(idx_bytes(train_y)),
        REAL.test_images.filename: gzip.compress(idx_bytes(test_x)),
        REAL.test_labels.filename: gzip.compress(idx_bytes(test_y)),
    }
    images = torch.from_numpy(np.concatenate([train_x, test_x]))
    labels = torch.from_numpy(np.concatenate([train_y, test_y]).astype(np.int64))
    return Served(blobs, images, labels)


@pytest.fixture
def served(idx_bytes: IdxWriter) -> Served:
    """Fresh served files for each test (tests may replace some before serving them)."""
    return make_served(idx_bytes)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class LocalServer:
    """An http.server on 127.0.0.1 (free port) in a background thread, serving ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.running = True

    def put(self, name: str, blob: bytes) -> None:
        (self.root / name).write_bytes(blob)

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.running = False


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "served"
    root.mkdir()
    srv = LocalServer(root)
    yield srv
    srv.stop()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache directory through $COURSE_DATA_DIR; returns the "mnist" folder in it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(data.DATA_DIR_ENV, str(cache))
    return cache / "mnist"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- downloads

def serve_all(server: LocalServer, served: Served) -> None:
    for name, blob in served.blobs.items():
        server.put(name, blob)


def test_download_then_load_from_cache_offline(server: LocalServer, served: Served, env: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    serve_all(server, served)
    spec = served.spec()
    monkeypatch.setenv("COURSE_MNIST_URL", server.url)  # the spec's base URL is the real one
    ds = data.load_dataset(spec, download=True)
    assert torch.equal(ds.images, served.images) and torch.equal(ds.labels, served.labels)
    assert ds.labels.dtype == torch.int64 and ds.name == "mnist"
    assert leftovers(env) == sorted(served.blobs)  # no temporary files
    for name, blob in served.blobs.items():
        assert (env / name).read_bytes() == blob

    server.stop()
    for allow_download in (False, True):  # cached files are used; the network is not touched
        again = data.load_dataset(spec, download=allow_download)
        assert torch.equal(again.images, served.images)
        assert torch.equal(again.labels, served.labels)


def test_progress_bar_for_large_files(server: LocalServer, served: Served, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    serve_all(server, served)
    spec = dataclasses.replace(served.spec(), remote=dataclasses.replace(
        served.spec().remote, base_url=server.url))
    monkeypatch.delenv("COURSE_MNIST_URL", raising=False)  # the spec's own base URL is used
    monkeypatch.setattr(download, "PROGRESS_MIN_BYTES", 0)
    data.load_dataset(spec, root=tmp_path / "c", download=True)
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_not_downloaded_says_how(tmp_path: Path) -> None:
    with pytest.raises(data.DatasetUnavailable) as info:
        data.load_dataset("mnist", root=tmp_path)
    message = str(info.value)
    assert 'load_dataset("mnist", download=True)' in message
    assert 'load_dataset("mnist_embedded")' in message
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert leftovers(tmp_path) == []


def test_corrupt_download_is_deleted(server: LocalServer, served: Served, env: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    serve_all(server, served)
    good = served.blobs[REAL.train_images.filename]
    bad = good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]  # one damaged byte
    server.put(REAL.train_images.filename, bad)
    monkeypatch.setenv("COURSE_MNIST_URL", server.url)
    spec = served.spec()
    with pytest.raises(data.ChecksumError) as info:
        data.load_dataset(spec, download=True)
    message = str(info.value)
    assert isinstance(info.value, data.DatasetUnavailable)
    assert REAL.train_images.filename in message
    assert spec.remote.train_images.md5 in message and md5(bad) in message
    assert not env.exists() or leftovers(env) == []  # nothing left in the cache


def test_corrupt_last_file_keeps_the_verified_ones(server: LocalServer, served: Served,
                                                   env: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    serve_all(server, served)
    monkeypatch.setenv("COURSE_MNIST_URL", server.url)
    spec = served.spec(test_labels="0" * 32)
    with pytest.raises(data.ChecksumError, match="0" * 32):
        data.load_dataset(spec, download=True)
    assert leftovers(env) == sorted(f.filename for f in spec.remote.files[:3])


def test_damaged_cached_file_is_deleted_and_fetched_again(server: LocalServer, served: Served,
                                                          env: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    serve_all(server, served)
    monkeypatch.setenv("COURSE_MNIST_URL", server.url)
    spec = served.spec()
    data.load_dataset(spec, download=True)
    cached = env / REAL.test_images.filename
    cached.write_bytes(cached.read_bytes()[:-1])
    with pytest.raises(data.ChecksumError, match="download=True"):
        data.load_dataset(spec)
    assert not cached.exists()
    cached.write_bytes(b"junk")
    with pytest.warns(UserWarning, match="damaged"):
        ds = data.load_dataset(spec, download=True)
    assert torch.equal(ds.images, served.images)


def test_unreachable_server_names_the_embedded_set(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_MNIST_URL", closed_port_url())
    with pytest.raises(data.DatasetUnavailable) as info:
        data.load_dataset("mnist", root=tmp_path, download=True)
    message = str(info.value)
    assert "Could not download the mnist dataset" in message
    assert 'load_dataset("mnist_embedded")' in message
    assert "COURSE_MNIST_URL" in message
    assert leftovers(tmp_path) == []


def test_http_error_is_reported(server: LocalServer, served: Served, env: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    # nothing is served: every file is a 404
    monkeypatch.setenv("COURSE_MNIST_URL", server.url)
    with pytest.raises(data.DatasetUnavailable, match="HTTP error 404"):
        data.load_dataset(served.spec(), download=True)
    assert leftovers(env) == []


def test_silent_server_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        monkeypatch.setenv("COURSE_MNIST_URL", f"http://127.0.0.1:{listener.getsockname()[1]}/")
        with pytest.raises(data.DatasetUnavailable, match="timed out"):
            data.load_dataset("mnist", root=tmp_path, download=True, timeout=0.3)


class _ShortBodyHandler(http.server.BaseHTTPRequestHandler):
    """Promises 1,000 bytes, sends 10, closes the connection."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + bytes(8))
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_connection_closed_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShortBodyHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("COURSE_MNIST_URL", f"http://127.0.0.1:{httpd.server_address[1]}/")
        with pytest.raises(data.DatasetUnavailable, match="Could not download") as info:
            data.load_dataset("mnist", root=tmp_path, download=True)
        assert not isinstance(info.value, data.ChecksumError)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert leftovers(tmp_path) == []


def test_malformed_idx_download(server: LocalServer, served: Served, env: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    served.blobs[REAL.train_labels.filename] = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09")
    serve_all(server, served)
    monkeypatch.setenv("COURSE_MNIST_URL", server.url)
    with pytest.raises(data.IdxFormatError, match=REAL.train_labels.filename):
        data.load_dataset(served.spec(), download=True)


def test_images_and_labels_must_agree(server: LocalServer, served: Served, env: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      idx_bytes: IdxWriter) -> None:
    served.blobs[REAL.test_labels.filename] = gzip.compress(idx_bytes(np.zeros(3, np.uint8)))
    serve_all(server, served)
    monkeypatch.setenv("COURSE_MNIST_URL", server.url)
    with pytest.raises(data.IdxFormatError, match="holds 20 images but"):
        data.load_dataset(served.spec(), download=True)


def test_base_url_must_be_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_FASHION_MNIST_URL", "/some/folder")
    with pytest.raises(ValueError, match="COURSE_FASHION_MNIST_URL"):
        data.load_dataset("fashion_mnist", root=tmp_path, download=True)


# --------------------------------------------------------------------------- the real thing

MNIST_CLASS_COUNTS = [6903, 7877, 6990, 7141, 6824, 6313, 6876, 7293, 6825, 6958]


@pytest.mark.skipif(os.environ.get("COURSE_TEST_NETWORK") != "1",
                    reason="set COURSE_TEST_NETWORK=1 to download the real MNIST")
def test_real_mnist_download() -> None:
    ds = data.load_dataset("mnist", download=True, timeout=30)
    assert ds.images.shape == (70000, 28, 28)
    assert ds.class_counts().tolist() == MNIST_CLASS_COUNTS
