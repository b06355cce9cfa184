"""The class run's worker processes, ``jobs`` submissions graded at a time.

:class:`Workers` keeps one ``python -m autograder.pipeline.worker --serve`` process per slot
(each slot its own sandbox user, ``UID_BASE + 1 + slot``), between submissions, and replaces
one that hangs or dies. :func:`grade_in_pool` hands it the submissions, ``jobs`` at a time,
and returns those to grade again alone: a submission a wall-clock backstop stopped while it
was under its CPU budget, or one the grader could not grade (the machine may be the cause).
A job is a folder holding the submission's notebooks (:func:`job_for`); its result is the
worker's ``result.json`` (``autograder.pipeline.worker``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from traitlets.config import Config

from autograder.pipeline.intake import Intake
from autograder.pipeline.materials import Materials
from autograder.pipeline.worker import OUT, RESULT, Job, portable_overrides
from autograder.sandbox.bwrap import UID_BASE
from autograder.sandbox.kernel import IPC_BASE_ENV
from autograder.session import REPO_ROOT, CourseLayout

JOBS_DIR = "jobs"
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


class Workers:
    """The class run's worker processes: one per slot (each slot its own sandbox user),
    kept between submissions, replaced when one hangs or dies."""

    def __init__(self, jobs: int, log_dir: Path) -> None:
        base = "/tmp" if os.access("/tmp", os.W_OK) else None
        self.ipc_base = Path(tempfile.mkdtemp(prefix="grader-", dir=base))
        self.slots: queue.Queue[int] = queue.Queue()
        for slot in range(jobs):
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
                start_new_session=True)
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


def grade_in_pool(pending: Sequence[tuple], *, jobs: int, timeout: float,
                  materials: Materials, layout: CourseLayout, config: Config, keep: Keep,
                  alone: bool = False) -> list[tuple[Intake, str, dict]]:
    """Grade ``pending`` (``(intake, key)``, or ``(intake, key, first result)`` when
    ``alone``) ``jobs`` at a time; ``keep(intake, key, job, result, note)`` records each
    result. Returns the submissions to grade again alone, with their first result: those a
    wall-clock backstop stopped under their CPU budget, and those the grader could not grade
    (a kernel that died starting, a worker that failed: the machine's fault as often as the
    submission's). When ``alone``, every result is kept."""
    if not pending:
        return []
    again: list[tuple[Intake, str, dict]] = []
    workers = Workers(jobs, layout.work_dir / JOBS_DIR / materials.lab)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for intake, key, *first in pending:
            job = job_for(intake, materials, layout, config)
            futures[pool.submit(workers.run, job, timeout)] = (intake, key, job, first)
        remaining = set(futures)
        try:
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    intake, key, job, first = futures[future]
                    result = future.result()
                    if not alone and (result.get("backstop") or not result.get("graded")):
                        again.append((intake, key, result))
                    else:
                        keep(intake, key, job, result,
                             again_note(first[0], result) if alone else "")
        except BaseException:
            workers.stop()
            for future in remaining:
                future.cancel()
            raise
        finally:
            workers.close()
    return again


__all__ = ["JOBS_DIR", "WORKER_MARGIN_S", "Workers", "again_note", "default_jobs",
           "grade_in_pool", "job_for", "worker_timeout"]
