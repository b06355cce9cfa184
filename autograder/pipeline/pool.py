"""The class run's workers: a Dask cluster, each task one submission graded in its sandbox.

:class:`Pool` is the run's Dask client: by default a ``LocalCluster`` of ``JOBS``
single-threaded worker processes, or an existing cluster (``SCHEDULER=tcp://host:port``).
:func:`grade_in_pool` submits one task a submission (``autograder.pipeline.task``), records
each reply here, in the coordinator, as it comes (``keep``), and returns those to grade
again alone: a submission a wall-clock backstop stopped while it was under its CPU budget,
or one the grader could not grade (the machine may be the cause). A task whose worker dies
is graded by another (Dask's rescheduling, bounded by ``allowed-failures``); the student's
notes say so.

On each Dask worker, :class:`Workers` keeps a ``python -m autograder.pipeline.worker --serve``
process per slot (each slot its own sandbox user, ``UID_BASE + 1 + slot``) between
submissions, and replaces one that hangs or dies. A job is a folder holding the
submission's notebooks (:func:`job_for`); its result is the worker's ``result.json``
(``autograder.pipeline.worker``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from traitlets.config import Config

from autograder.pipeline.intake import Intake
from autograder.pipeline.materials import Materials
from autograder.pipeline.worker import OUT, RESULT, Job, portable_overrides
from autograder.sandbox.bwrap import UID_BASE, sandbox_mode
from autograder.sandbox.kernel import IPC_BASE_ENV
from autograder.session import REPO_ROOT, CourseLayout

JOBS_DIR = "jobs"
RETRIES = 2
"""Times a task that raised is tried again (Dask's ``retries``)."""
ALLOWED_FAILURES = 2
"""Worker deaths a task survives on the local cluster: the third death ends it."""
CONNECT_TIMEOUT_S = 60
IN_FLIGHT_PER_THREAD = 2
"""Submissions handed to the cluster ahead of the results, per worker thread."""
DASK_CONFIG = {
    "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
    # No memory-based pausing, spilling or killing (see ``Pool``).
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": False,
    "distributed.worker.memory.terminate": False,
}
WORKER_MARGIN_S = 240
"""Seconds a worker may take beyond its notebooks' time limits (start-up, judging)."""

Keep = Callable[[Intake, str, Job, dict, str], None]
"""``keep(intake, key, job, result, note)``: what the class run does with one result."""


def default_jobs() -> int:
    """Submissions graded at a time by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_timeout(notebook_wall_s: float, notebooks: int) -> float:
    """Seconds one worker may take for a submission of ``notebooks`` notebooks: the kernel's
    run and the fresh re-run each have the notebook's wall-clock backstop, plus a margin."""
    return 2 * notebook_wall_s * notebooks + WORKER_MARGIN_S


def _die_with_parent() -> None:
    """In the forked child: be killed when the process that started it dies (Linux), so a
    Dask worker killed mid-task leaves no grading process behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Workers:
    """The class run's worker processes: one per slot (each slot its own sandbox user),
    kept between submissions, replaced when one hangs or dies."""

    def __init__(self, jobs: int, log_dir: Path, slots: Sequence[int] | None = None) -> None:
        base = "/tmp" if os.access("/tmp", os.W_OK) else None
        self.ipc_base = Path(tempfile.mkdtemp(prefix="grader-", dir=base))
        self.slots: queue.Queue[int] = queue.Queue()
        for slot in range(jobs) if slots is None else slots:
            self.slots.put(slot)
        self.log_dir = log_dir
        self.processes: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping = False

    def _process(self, slot: int) -> subprocess.Popen:
        process = self.processes.get(slot)
        if process is not None and process.poll() is None:
            return process
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env[IPC_BASE_ENV] = str(self.ipc_base)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"worker-{slot}.log").open("a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "autograder.pipeline.worker", "--serve"], cwd=REPO_ROOT,
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                start_new_session=True, preexec_fn=_die_with_parent)
        with self.lock:
            self.processes[slot] = process
        return process

    def run(self, job: Job, timeout: float) -> dict:
        """Grade ``job`` in the next free slot; the worker's result (or why there is none)."""
        slot = self.slots.get()
        try:
            if self.stopping:
                return {"graded": False, "problem": "the class run was stopped"}
            job = Job(**{**job.__dict__, "uid": UID_BASE + 1 + slot})
            job_dir = Path(job.job_dir)
            (job_dir / "job.json").write_text(job.dumps())
            process = self._process(slot)
            try:
                process.stdin.write(f"{job_dir / 'job.json'}\n")
                process.stdin.flush()
                ready, _, _ = select.select([process.stdout], [], [], timeout)
                line = process.stdout.readline() if ready else None
            except (BrokenPipeError, OSError, ValueError):
                line = ""
            if line is None:
                self._kill(slot)
                return {"graded": False,
                        "problem": f"the grader's worker did not finish in {timeout:.0f} s"}
            result_path = job_dir / OUT / RESULT
            if not line or not result_path.is_file():
                self._kill(slot)
                return {"graded": False, "problem": "the grader's worker failed (see "
                                                    f"{self.log_dir / f'worker-{slot}.log'})"}
            return json.loads(result_path.read_text())
        finally:
            self.slots.put(slot)

    def _kill(self, slot: int) -> None:
        with self.lock:
            process = self.processes.pop(slot, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            process.wait(timeout=10)
        self._close_pipes(process)

    @staticmethod
    def _close_pipes(process: subprocess.Popen) -> None:
        for pipe in (process.stdin, process.stdout):
            with contextlib.suppress(Exception):
                pipe.close()

    def stop(self) -> None:
        """Kill every worker (and the sandboxes they run)."""
        self.stopping = True
        for slot in list(self.processes):
            self._kill(slot)

    def close(self) -> None:
        """Let idle workers end (end of input), killing any that does not."""
        for slot, process in list(self.processes.items()):
            with contextlib.suppress(Exception):
                process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._kill(slot)
            self._close_pipes(process)
        shutil.rmtree(self.ipc_base, ignore_errors=True)


def job_for(intake: Intake, materials: Materials, layout: CourseLayout, config: Config) -> Job:
    """The worker job grading ``intake`` (its notebooks written to a fresh job folder)."""
    job_dir = layout.work_dir / JOBS_DIR / materials.lab / intake.student_id
    if job_dir.exists():
        shutil.rmtree(job_dir)
    (job_dir / "submitted").mkdir(parents=True)
    notebooks = {}
    for name, data in intake.notebooks.items():
        path = job_dir / "submitted" / f"{name}.ipynb"
        path.write_bytes(data)
        notebooks[name] = str(path)
    return Job(lab=materials.lab, student=intake.student_id, job_dir=str(job_dir),
               notebooks=notebooks, source_lab=str(layout.source_dir / materials.lab),
               template_db=str(materials.template_db), lib_dir=str(materials.lib_dir),
               refs_dir=str(materials.refs_dir), uid=UID_BASE,
               visible_refs=str(materials.visible_refs or ""),
               hidden_refs=str(materials.hidden_refs or ""), timestamp=intake.timestamp,
               overrides=portable_overrides(config))


def again_note(first: dict, result: dict) -> str:
    """The note of a submission graded a second time, alone, after ``first``."""
    if first.get("backstop"):
        note = ("graded again, alone: a wall-clock backstop stopped the first run while it "
                "was under its CPU budget")
    else:
        note = f"graded again, alone: the first run could not grade it ({first.get('problem')})"
    if result.get("backstop"):
        note += f"; stopped again ({result['backstop']}): scored as it ran"
    return note


class Pool:
    """The class run's Dask cluster: a ``LocalCluster`` of ``jobs`` single-threaded worker
    processes started on first use, or the existing cluster whose scheduler is at
    ``scheduler`` (``tcp://host:port``). A context manager: closing it stops a local cluster
    (and, through their ``--serve`` processes' parent-death signal, any grading left).

    The local workers have no memory limit: a submission's kernel and its fresh re-runs are
    child processes of the worker's ``--serve`` process, bounded by the sandbox's own limits
    (``Sandbox.memory_mb``), which Dask neither sees nor should second-guess; Dask's memory
    manager would otherwise pause or restart a worker for memory that is not its own.
    A task whose worker dies is given to another worker; after ``ALLOWED_FAILURES`` + 1
    such deaths Dask gives up on it (``KilledWorker``) and the submission is reported as
    crashing its worker (on an existing cluster, its scheduler's own
    ``distributed.scheduler.allowed-failures`` applies)."""

    def __init__(self, jobs: int, scheduler: str | None = None) -> None:
        self.jobs = jobs
        self.scheduler = scheduler or None
        self._client = None
        self._cluster = None

    def client(self):
        """The Dask client (the local cluster started on first call)."""
        if self._client is None:
            import dask
            from distributed import Client, LocalCluster

            if self.scheduler:
                self._client = Client(self.scheduler, timeout=CONNECT_TIMEOUT_S)
            else:
                with dask.config.set(DASK_CONFIG):
                    self._cluster = LocalCluster(
                        n_workers=self.jobs, threads_per_worker=1, processes=True,
                        memory_limit=0, dashboard_address=None, silence_logs=logging.ERROR,
                        host="127.0.0.1")
                    self._client = Client(self._cluster)
        return self._client

    def submit(self, job: Job, notebooks: dict[str, bytes], timeout: float, mode: str):
        """A future of ``grade_submission``'s reply for ``job`` (retried ``RETRIES`` times
        if the task itself raises)."""
        from autograder.pipeline.task import grade_submission

        return self.client().submit(grade_submission, asdict(job), dict(notebooks), timeout,
                                    mode, key=f"grade-{job.lab}-{job.student}-{uuid.uuid4().hex}",
                                    pure=False, retries=RETRIES)

    def deaths(self, key: str) -> int:
        """How many workers died while running task ``key`` (the scheduler's count)."""
        def suspicious(dask_scheduler, key=key):
            task = dask_scheduler.tasks.get(key)
            return 0 if task is None else task.suspicious

        try:
            return int(self.client().run_on_scheduler(suspicious))
        except Exception:  # noqa: BLE001 - only the report's note depends on it
            return 0

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close(timeout=30)
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close(timeout=30)
        self._client = self._cluster = None

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reply(pool: Pool, future, job: Job) -> dict:
    """The result of ``future`` (written into ``job``'s folder), or why there is none."""
    from distributed.scheduler import KilledWorker

    from autograder.pipeline.task import write_reply

    try:
        return write_reply(future.result(), job)
    except KilledWorker:
        return {"graded": False, "crashed": True,
                "problem": f"it crashed the grader's worker {ALLOWED_FAILURES + 1} times "
                           "(each time on another worker): not graded"}
    except Exception as error:  # noqa: BLE001 - this student is not graded, the others go on
        return {"graded": False, "problem": f"the grader failed (tried {RETRIES + 1} times): "
                                            f"{type(error).__name__}: {error}"}


def retried_note(deaths: int) -> str:
    """The note of a submission whose worker died ``deaths`` times while grading it."""
    return (f"graded again on another worker: the worker grading it died "
            f"({deaths} time{'s' if deaths != 1 else ''})")


def grade_in_pool(pending: Sequence[tuple], *, pool: Pool, timeout: float,
                  materials: Materials, layout: CourseLayout, config: Config, keep: Keep,
                  alone: bool = False) -> list[tuple[Intake, str, dict]]:
    """Grade ``pending`` (``(intake, key)``, or ``(intake, key, first result)`` when
    ``alone``) on ``pool``'s workers; ``keep(intake, key, job, result, note)`` records each
    result, here, as it comes. Returns the submissions to grade again alone, with their first
    result: those a wall-clock backstop stopped under their CPU budget, and those the grader
    could not grade (a kernel that died starting, a worker that failed: the machine's fault
    as often as the submission's). When ``alone``, they are graded one at a time and every
    result is kept. One that crashed its worker every time it was tried is kept as not
    graded, never tried again."""
    if not pending:
        return []
    from distributed import as_completed, wait

    mode = sandbox_mode(config)
    again: list[tuple[Intake, str, dict]] = []

    def handle(future, intake: Intake, key: str, job: Job, first: list) -> None:
        result = _reply(pool, future, job)
        deaths = pool.deaths(future.key)
        future.release()
        notes = [again_note(first[0], result)] if alone else []
        if deaths and not result.get("crashed"):
            notes.append(retried_note(deaths))
        if not alone and not result.get("crashed") and (
                result.get("backstop") or not result.get("graded")):
            again.append((intake, key, result))
        else:
            keep(intake, key, job, result, "; ".join(notes))

    futures = {}
    try:
        if alone:
            for intake, key, *first in pending:
                job = job_for(intake, materials, layout, config)
                future = pool.submit(job, intake.notebooks, timeout, mode)
                futures[future] = None
                wait([future])
                futures.pop(future)
                handle(future, intake, key, job, first)
            return again
        # Submitted a few per worker thread ahead, not all at once: a class of thousands
        # would otherwise hold every notebook in the scheduler's memory.
        items = iter(pending)
        running = as_completed(loop=pool.client().loop)

        def top_up() -> None:
            window = IN_FLIGHT_PER_THREAD * max(1, sum(pool.client().nthreads().values()))
            while len(futures) < window:
                item = next(items, None)
                if item is None:
                    return
                intake, key, *first = item
                job = job_for(intake, materials, layout, config)
                future = pool.submit(job, intake.notebooks, timeout, mode)
                futures[future] = (intake, key, job, first)
                running.add(future)

        top_up()
        for future in running:
            handle(future, *futures.pop(future))
            top_up()
    except BaseException:
        for future in futures:
            with contextlib.suppress(Exception):
                future.cancel()
        raise
    return again


__all__ = ["ALLOWED_FAILURES", "JOBS_DIR", "RETRIES", "WORKER_MARGIN_S", "Pool", "Workers",
           "again_note", "default_jobs", "grade_in_pool", "job_for", "retried_note",
           "worker_timeout"]
