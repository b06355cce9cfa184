"""A Dask scheduler and workers on loopback, started as a department starts them on other
machines (``autograder/README.md``, "Grading a large class"): for the throughput benchmark
and the tests.

>>> with LoopbackCluster(Path("/tmp/cluster"), workers=2) as cluster:   # doctest: +SKIP
...     autograde(lab, submissions, scheduler=cluster.address)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from autograder.pipeline.pool import ALLOWED_FAILURES
from autograder.session import REPO_ROOT

DASK = Path(sys.executable).parent / "dask"
"""The ``dask`` command of this environment."""


class LoopbackCluster:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1, each in
    its own process group; :meth:`stop` ends them all."""

    def __init__(self, folder: Path, workers: int = 2) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        folder = self.folder
        self.processes: list[subprocess.Popen] = []
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT),
                   DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=str(ALLOWED_FAILURES))
        scheduler_file = folder / "scheduler.json"
        self._start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--no-dashboard", "--scheduler-file", str(scheduler_file)], env, "scheduler")
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scheduler_file.is_file(), (folder / "scheduler.log").read_text()
        self.address = json.loads(scheduler_file.read_text())["address"]
        self.worker_dirs = []
        for index in range(workers):
            local = folder / f"worker{index}"
            local.mkdir()
            self.worker_dirs.append(local)
            self._start([str(DASK), "worker", self.address, "--nthreads", "1", "--no-nanny",
                         "--host", "127.0.0.1", "--no-dashboard", "--local-directory",
                         str(local), "--memory-limit", "0"], env, f"worker{index}")
        from distributed import Client

        try:
            with Client(self.address, timeout=60) as client:
                client.wait_for_workers(workers, timeout=120)
        except BaseException:
            self.stop()
            raise

    def _start(self, command: list[str], env: dict, name: str) -> None:
        with (self.folder / f"{name}.log").open("w") as log:
            self.processes.append(subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))

    def kill_worker(self, index: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.processes[1 + index].pid, signal.SIGKILL)

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    def __enter__(self) -> LoopbackCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["DASK", "LoopbackCluster"]
