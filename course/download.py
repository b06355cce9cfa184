"""Fetching a remote file into the data cache: temporary file, MD5 check, timeout, progress.

A :class:`RemoteFile` names one file and its published MD5. The package-internal helper
``_download`` streams a URL into a temporary ``.<name>.*.part`` file next to its destination
(a tqdm bar shows progress for files of at least :data:`PROGRESS_MIN_BYTES`), hashes it on the
way, and renames it into place only if the MD5 matches; otherwise nothing is left behind.
Failures raise :class:`DatasetUnavailable` (unreachable server, HTTP error, no answer within
the timeout, a connection closed early) or its subclass :class:`ChecksumError`, with a message
that says why and what to do. :mod:`course.data` builds its downloads on this module and
re-exports its public names.

Why not ``torchvision.datasets`` (``MNIST(download=True)`` and friends): its
``download_url`` opens the URL with no timeout (a network that drops packets hangs a
student's notebook for good), and its failures are bare ``RuntimeError``/``URLError`` from
deep inside, with no offline alternative named. The files and MD5s :mod:`course.data` asks
for are torchvision's own (``MNIST.resources``, ``FashionMNIST.resources``): a test checks
that they agree.

>>> RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c").md5[:8]
'ec29112d'
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

__all__ = ["CHUNK_BYTES", "DOWNLOAD_TIMEOUT_S", "PROGRESS_MIN_BYTES", "USER_AGENT",
           "ChecksumError", "DatasetUnavailable", "RemoteFile"]

DOWNLOAD_TIMEOUT_S = 5.0
"""Default seconds to wait for a server to connect or send data before giving up."""

PROGRESS_MIN_BYTES = 1 << 20
"""Downloads at least this large (by their Content-Length) show a tqdm progress bar."""

CHUNK_BYTES = 1 << 16
"""Bytes read per step while downloading and hashing."""

USER_AGENT = "course-data/0.1"

_MD5_RE = re.compile(r"[0-9a-f]{32}")


class DatasetUnavailable(RuntimeError):
    """A dataset cannot be loaded: not downloaded yet, the download failed, or a file is damaged.

    The message says why and names the offline alternative, ``load_dataset("mnist_embedded")``.
    """


class ChecksumError(DatasetUnavailable):
    """A downloaded or cached file does not have its published MD5; the file has been deleted."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: its name (appended to the base URL) and its published MD5.

    >>> RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c").filename
    't10k-labels-idx1-ubyte.gz'
    """

    filename: str
    md5: str

    def __post_init__(self) -> None:
        if not isinstance(self.filename, str) or not self.filename or "/" in self.filename:
            raise ValueError(f"filename must be a plain file name, got {self.filename!r}")
        if not isinstance(self.md5, str) or not _MD5_RE.fullmatch(self.md5):
            raise ValueError(f"md5 must be 32 lowercase hex digits, got {self.md5!r}")


def _md5_file(path: Path) -> str:
    """The MD5 of the file at ``path``, as 32 lowercase hex digits."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _download(dataset: str, url: str, dest: Path, md5: str, timeout: float,
              url_env: str, hint: str) -> None:
    """Fetch ``url`` into a temporary file next to ``dest``; rename it only if its MD5 matches.

    ``dataset`` and ``url_env`` (the variable that overrides the base URL) are named in error
    messages, which end with ``hint`` (the offline alternative).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _fetch_into(dataset, url, out, timeout, url_env, hint)
        if actual != md5:
            raise ChecksumError(
                f"Checksum mismatch for {dest.name} of the {dataset} dataset downloaded from "
                f"{url}: expected MD5 {md5}, got {actual}. The file was deleted; the server "
                f"sent a different or damaged file. {hint}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_into(dataset: str, url: str, out: BinaryIO, timeout: float, url_env: str,
                hint: str) -> str:
    """Stream ``url`` into the binary file ``out``; return the MD5 of what was received."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length_header = response.headers.get("Content-Length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            received = 0
            with tqdm(total=length, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=url.rsplit("/", 1)[-1], leave=False,
                      disable=length is None or length < PROGRESS_MIN_BYTES) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if length is not None and received != length:
                reason = f"the connection closed after {received} of {length} bytes"
            else:
                return digest.hexdigest()
    except urllib.error.HTTPError as exc:
        reason = f"HTTP error {exc.code} {exc.reason}"
        exc.close()
    except urllib.error.URLError as exc:
        reason = _reason(exc.reason, timeout)
    except (OSError, http.client.HTTPException) as exc:
        reason = _reason(exc, timeout)
    raise DatasetUnavailable(
        f"Could not download the {dataset} dataset: {url} failed: {reason}. Check the network "
        f"connection, or point ${url_env} at a mirror. {hint}")


def _reason(exc: object, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s (timed out)"
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return str(exc)
