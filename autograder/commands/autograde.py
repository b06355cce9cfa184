"""``autograde``: grade a class's submissions of one lab, in parallel, sandboxed.

``submissions`` holds ``<student_id>/<lab>/<notebook>.ipynb`` (a renamed notebook, or one
outside the ``<lab>/`` folder, is found too). A class run:

1. records the lab's source in the gradebook and prepares the run's materials once
   (``autograder.pipeline.materials``: the grading copy of ``course``, inputs-only hidden
   references, a template gradebook);
2. takes in each submission (``autograder.pipeline.intake``): only its notebooks, repaired
   where they can be, or a reason why not — that student is reported NOT GRADED, the others go on;
3. grades up to ``jobs`` submissions at a time, each in its own worker process and scratch
   course, the notebook's kernel in the sandbox (``autograder.pipeline.worker``);
4. records each graded submission in the class gradebook, one at a time, through nbgrader's
   own ``Autograde`` (``autograder.preprocessors.replay``), writes its feedback, and notes it
   in the ledger (``autograder.pipeline.ledger``): re-running skips what is unchanged and
   resumes a run that was stopped; manual grades are kept;
5. writes ``grades.csv`` and ``scores.csv`` from the gradebook, also when stopped early.

Written to ``out`` (default ``autograder/work/out``): ``grades.csv``, ``scores.csv``,
``feedback/<student_id>/<lab>/<notebook>.html`` (no hidden tests), ``autograde.log``.

>>> report = autograde("lab01_direct_quantization", Path("submissions"), jobs=2)  # doctest: +SKIP
>>> print(report.summary())                                                     # doctest: +SKIP
lab01_direct_quantization: graded 2 of 3 students, mean score 9.00 / 15.00
...
"""

from __future__ import annotations

import contextlib
import fcntl
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
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from nbgrader.api import MissingEntry
from nbgrader.converters import Autograde, GenerateAssignment, GenerateFeedback
from nbgrader.preprocessors import Execute
from traitlets.config import Config

from autograder.gradebook.export import (
    cell_scores,
    graded_cell_ids,
    write_grades_csv,
    write_scores_csv,
)
from autograder.pipeline.intake import STUDENT_ID, Intake, take_in
from autograder.pipeline.ledger import Ledger, submission_key
from autograder.pipeline.materials import Materials, prepare
from autograder.pipeline.worker import OUT, RESULT, Job, portable_overrides
from autograder.preprocessors.overwrite import quiet_preprocessors
from autograder.preprocessors.replay import ReplayExecution
from autograder.sandbox.bwrap import UID_BASE, Limits, probe_support, sandbox_mode
from autograder.sandbox.kernel import IPC_BASE_ENV
from autograder.session import (
    GRADER_RELEASE,
    REPO_ROOT,
    CourseLayout,
    GradingError,
    NbgraderRun,
    check_lab_name,
    load_config,
    open_gradebook,
    run_converter,
)

DEFAULT_OUT = "out"  # inside the work folder
LOG_NAME = "autograde.log"
JOBS_DIR = "jobs"
LOCK_NAME = "autograde.lock"
WORKER_MARGIN_S = 240
"""Seconds a worker may take beyond its notebooks' time limits (start-up, judging)."""


def default_jobs() -> int:
    """Submissions graded at a time by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Breakdown:
    """One student's points split into automatic (test cells) and manual (answers), and the
    cells that lost points, each with the first reason (``grade_id``, points lost, reason)."""

    auto: float
    auto_max: float
    manual: float
    manual_max: float
    to_grade: int
    lost: tuple[tuple[str, float, str], ...] = ()

    def lines(self) -> list[str]:
        pending = f", {self.to_grade} to grade by hand" if self.to_grade else ""
        out = [f"automatic {self.auto:.2f} / {self.auto_max:.2f}, manual {self.manual:.2f} / "
               f"{self.manual_max:.2f}{pending}"]
        out += [f"lost {lost:.2f} in {grade_id}: {reason}" for grade_id, lost, reason in self.lost]
        return out


REASON_CHARS = 200
"""Characters of a failing cell's first reason shown in the summary (feedback has it all)."""


def _first_reason(cell) -> str:
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if not errors:
        return "no error shown (partial credit or a changed cell)"
    text = f"{errors[0].get('ename', '')}: {errors[0].get('evalue', '')}".strip()
    line = text.splitlines()[0] if text else "error"
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


def breakdown(layout: CourseLayout, lab: str, student: str) -> Breakdown | None:
    """``student``'s :class:`Breakdown` from the gradebook and the autograded notebooks."""
    import nbformat

    with open_gradebook(layout) as gradebook:
        scores = {(row.notebook, row.grade_id): row for row in cell_scores(gradebook, lab)
                  if row.student_id == student}
    if not scores:
        return None
    auto = auto_max = manual = manual_max = 0.0
    to_grade, lost = 0, []
    folder = layout.step_dir("autograded") / student / lab
    for path in sorted(folder.glob("*.ipynb")):
        for cell in nbformat.read(str(path), as_version=4).cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            row = scores.get((path.stem, meta.get("grade_id")))
            if row is None or not (meta.get("grade") or meta.get("task")):
                continue
            is_manual = bool(meta.get("solution") or meta.get("task")) or \
                cell.cell_type != "code"
            if is_manual:
                manual, manual_max = manual + row.score, manual_max + row.max_score
                if row.needs_manual_grade:
                    to_grade += 1
                elif row.score < row.max_score:
                    why = "graded by hand" if row.graded_by_hand else "not answered"
                    lost.append((row.grade_id, row.max_score - row.score, why))
                continue
            auto, auto_max = auto + row.score, auto_max + row.max_score
            if row.score < row.max_score:
                lost.append((row.grade_id, row.max_score - row.score, _first_reason(cell)))
    return Breakdown(auto, auto_max, manual, manual_max, to_grade, tuple(lost))


@dataclass(frozen=True)
class StudentResult:
    """How one student's submission went.

    ``graded`` is False when it could not be graded (``problem`` says why); ``notes`` say what
    was repaired, ignored or cut short in a graded one. ``executed`` is False when an
    unchanged submission was not run again.
    """

    student_id: str
    graded: bool
    score: float
    max_score: float
    problem: str = ""
    notes: tuple[str, ...] = ()
    executed: bool = True
    seconds: float = 0.0
    breakdown: Breakdown | None = None

    def to_json(self) -> dict:
        return {"graded": self.graded, "score": self.score, "max_score": self.max_score,
                "problem": self.problem, "notes": list(self.notes), "seconds": self.seconds}


@dataclass(frozen=True)
class AutogradeReport:
    """The outcome of one ``autograde`` run."""

    lab: str
    out: Path
    students: tuple[StudentResult, ...]
    jobs: int = 1
    seconds: float = 0.0
    sandbox: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def graded(self) -> tuple[StudentResult, ...]:
        return tuple(s for s in self.students if s.graded)

    @property
    def failed(self) -> tuple[StudentResult, ...]:
        return tuple(s for s in self.students if not s.graded)

    @property
    def executed(self) -> tuple[StudentResult, ...]:
        return tuple(s for s in self.students if s.executed and s.graded)

    @property
    def mean_score(self) -> float | None:
        graded = self.graded
        return sum(s.score for s in graded) / len(graded) if graded else None

    @property
    def per_minute(self) -> float | None:
        """Submissions executed per minute of this run (None if none was executed)."""
        if not self.executed or self.seconds <= 0:
            return None
        return 60.0 * len(self.executed) / self.seconds

    def summary(self) -> str:
        """The lines for the terminal: counts, mean, one line per student, throughput."""
        max_score = max((s.max_score for s in self.students), default=0.0)
        mean = self.mean_score
        mean_text = "no score" if mean is None else f"mean score {mean:.2f} / {max_score:.2f}"
        lines = [*self.warnings,
                 f"{self.lab}: graded {len(self.graded)} of {len(self.students)} students, "
                 f"{mean_text}"]
        for s in self.students:
            if s.graded:
                note = f"  ({'; '.join(s.notes)})" if s.notes else ""
                again = "" if s.executed else "  [unchanged, not run again]"
                lines.append(f"  {s.student_id}: {s.score:.2f} / {s.max_score:.2f}{again}{note}")
                if s.breakdown is not None:
                    lines += [f"      {line}" for line in s.breakdown.lines()]
            else:
                lines.append(f"  {s.student_id}: NOT GRADED: {s.problem}")
        rate = self.per_minute
        speed = "" if rate is None else f": {rate:.1f} submissions per minute"
        lines.append(f"executed {len(self.executed)} submission(s) in {self.seconds:.1f} s with "
                     f"JOBS={self.jobs}, sandbox: {self.sandbox}{speed}")
        lines.append(f"grades.csv, scores.csv and feedback/ written to {self.out}")
        return "\n".join(lines)


def record_lab(layout: CourseLayout, lab: str, config: Config | None = None) -> None:
    """Record ``lab``'s source (cells, points, test code) in the gradebook.

    nbgrader's ``generate_assignment`` does it; its student copy goes to the work folder,
    not to the release folder. Raises GradingError if nbgrader refuses (for instance cells
    added or removed after submissions were graded).
    """
    grader_layout = CourseLayout(root=layout.root, source=layout.source,
                                 release=f"{layout.work}/{GRADER_RELEASE}", work=layout.work)
    run = run_converter(GenerateAssignment, grader_layout, lab, config=config, force=True)
    if not run.success:
        raise GradingError(f"could not record {lab} in the gradebook: {run.reason()}\n{run.log}")


@contextlib.contextmanager
def exclusive(work_dir: Path) -> Iterator[None]:
    """Hold the work folder's lock: two class runs must not write one gradebook at once."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with (work_dir / LOCK_NAME).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GradingError(f"another autograde is running on {work_dir} (lock "
                               f"{work_dir / LOCK_NAME})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _students(submissions: Path) -> list[Path]:
    return sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scores(layout: CourseLayout, lab: str, student: str) -> tuple[float, float]:
    with open_gradebook(layout) as gradebook:
        max_score = float(gradebook.find_assignment(lab).max_score)
        try:
            score = float(gradebook.find_submission(lab, student).score)
        except MissingEntry:  # never graded
            score = 0.0
    return score, max_score


def _in_gradebook(layout: CourseLayout, lab: str, student: str) -> bool:
    with open_gradebook(layout) as gradebook:
        try:
            gradebook.find_submission(lab, student)
        except MissingEntry:
            return False
    return (layout.step_dir("autograded") / student / lab).is_dir()


def _write_log(log: TextIO, student: str, step: str, run: NbgraderRun) -> None:
    log.write(f"===== {student}: {step} ({'ok' if run.success else 'FAILED'}) =====\n")
    log.write(run.log)
    if run.error:
        log.write(run.error)
    log.flush()


class _Workers:
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
                env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                start_new_session=True)
        with self.lock:
            self.processes[slot] = process
        return process

    def run(self, job: Job, timeout: float) -> dict:
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


def _worker_notes(result: dict) -> list[str]:
    notes = []
    if result.get("stopped"):
        notes.append(f"stopped early: {result['stopped']}; the cells after it scored 0")
    return notes


def _copy_feedback(source: Path, target: Path) -> None:
    """Copy the HTML feedback files of one student (nothing else) to ``target``."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for page in sorted(source.glob("*.html")):
        shutil.copyfile(page, target / page.name)


def _feedback(layout: CourseLayout, lab: str, student: str, out: Path, config: Config,
              log: TextIO) -> str:
    """Generate one student's feedback; '' or the reason it failed."""
    run = run_converter(GenerateFeedback, layout, lab, student=student, config=config,
                        force=True)
    _write_log(log, student, "feedback", run)
    if not run.success:
        return f"no feedback: {run.reason()}"
    _copy_feedback(layout.step_dir("feedback") / student / lab, out / "feedback" / student / lab)
    return ""


def _record(layout: CourseLayout, lab: str, intake: Intake, job: Job, result: dict,
            out: Path, config: Config, log: TextIO, note: str = "") -> StudentResult:
    """Record a worker's result in the class gradebook, then write the feedback; ``note``
    (if any) is added to the student's notes."""
    student = intake.student_id
    extra = (note,) if note else ()
    if not result.get("graded"):
        return StudentResult(student, False, 0.0, 0.0, result.get("problem") or "not graded",
                             (*intake.notes, *extra), seconds=result.get("seconds", 0.0))
    submitted = layout.step_dir("submitted") / student / lab
    if submitted.exists():
        shutil.rmtree(submitted)
    submitted.mkdir(parents=True)
    for name, data in intake.notebooks.items():
        (submitted / f"{name}.ipynb").write_bytes(data)
    if intake.timestamp:
        (submitted / "timestamp.txt").write_text(intake.timestamp + "\n")
    replay = Config()
    replay.merge(config)
    steps = list(config.Autograde.get("autograde_preprocessors",
                                      Autograde.class_traits()["autograde_preprocessors"].default()))
    replay.Autograde.autograde_preprocessors = [ReplayExecution if p is Execute else p
                                                for p in steps]
    replay.Autograde.sanitize_preprocessors = quiet_preprocessors(config)
    replay.ReplayExecution.executed_dir = str(Path(job.job_dir) / OUT)
    run = run_converter(Autograde, layout, lab, student=student, config=replay, force=True,
                        create_student=True)
    _write_log(log, student, "autograde", run)
    if not run.success:
        return StudentResult(student, False, 0.0, 0.0, run.reason(), tuple(intake.notes))
    notes = [*intake.notes, *_worker_notes(result), *extra]
    problem = _feedback(layout, lab, student, out, config, log)
    if problem:
        notes.append(problem)
    score, max_score = _scores(layout, lab, student)
    return StudentResult(student, True, score, max_score, "", tuple(notes),
                         seconds=result.get("seconds", 0.0),
                         breakdown=breakdown(layout, lab, student))


def _write_csvs(layout: CourseLayout, lab: str, out: Path) -> None:
    order = [gid for path in layout.lab_notebooks(lab) for gid in graded_cell_ids(path)]
    with open_gradebook(layout) as gradebook:
        for name, write in (("grades.csv", lambda p: write_grades_csv(gradebook, lab, p)),
                            ("scores.csv", lambda p: write_scores_csv(
                                cell_scores(gradebook, lab, order), p))):
            temporary = out / f".{name}.tmp"
            write(temporary)
            os.replace(temporary, out / name)


def _grade_in_pool(pending: list[tuple], jobs: int, timeout: float, materials: Materials,
                   layout: CourseLayout, config: Config, keep,
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
    workers = _Workers(jobs, layout.work_dir / JOBS_DIR / materials.lab)
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


def autograde(
    lab: str,
    submissions: Path,
    out: Path | None = None,
    layout: CourseLayout | None = None,
    config: Config | None = None,
    jobs: int | None = None,
    regrade: bool = False,
) -> AutogradeReport:
    """Grade every student folder of ``submissions`` for ``lab``; write ``out``'s files.

    ``config`` replaces ``nbgrader_config.py``'s settings (its folders are ``layout``'s);
    ``jobs`` submissions are graded at a time (default: the number of cores); ``regrade``
    runs unchanged submissions again.

    Raises ValueError/TypeError for bad arguments, GradingError when the lab cannot be
    recorded, another run holds the gradebook, or the config requires a sandbox this machine
    cannot provide; a student's failure only marks that student as not graded.
    """
    layout = CourseLayout.from_config() if layout is None else layout
    check_lab_name(lab)
    layout.lab_notebooks(lab)
    if not isinstance(submissions, (str, Path)):
        raise TypeError(f"submissions must be a path, got {type(submissions).__name__}")
    submissions = Path(submissions).resolve()
    if not submissions.is_dir():
        raise ValueError(f"submissions: no such folder {submissions}")
    jobs = default_jobs() if jobs is None else jobs
    if type(jobs) is not int or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    config = load_config() if config is None else config
    limits = Limits.from_config(config)
    support = probe_support(sandbox_mode(config))
    if sandbox_mode(config) == "require" and not support.available:
        raise GradingError(f"Sandbox.mode is 'require' but {support.reason}")
    out = layout.work_dir / DEFAULT_OUT if out is None else Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, StudentResult] = {}
    with exclusive(layout.work_dir), (out / LOG_NAME).open("w") as log:
        if support.warning:
            log.write(support.warning + "\n")
        record_lab(layout, lab, config)
        materials = prepare(layout, lab, config, limits, support)
        ledger = Ledger.load(layout.work_dir, lab)
        pending: list[tuple[Intake, str]] = []
        unchanged: list[str] = []
        for student_dir in _students(submissions):
            intake = take_in(student_dir, lab, materials.released)
            student = intake.student_id
            if intake.problem:
                results[student] = StudentResult(student, False, 0.0, 0.0, intake.problem)
                if STUDENT_ID.match(student):
                    with open_gradebook(layout) as gradebook:  # listed in grades.csv anyway
                        gradebook.update_or_create_student(student)
                continue
            key = submission_key(intake.notebooks, intake.timestamp, materials.fingerprint)
            previous = ledger.done(student, key)
            if previous and previous.get("graded") and not regrade \
                    and _in_gradebook(layout, lab, student):
                unchanged.append(student)
                results[student] = StudentResult(student, True, 0.0, 0.0, "",
                                                 tuple(previous.get("notes", ())), False)
                continue
            pending.append((intake, key))
        # The kernel's run and the fresh re-run each have the notebook's wall-clock backstop.
        timeout = (2 * limits.notebook_wall_s * len(materials.released.notebooks)
                   + WORKER_MARGIN_S)

        def keep(intake: Intake, key: str, job: Job, result: dict, note: str = "") -> None:
            record = _record(layout, lab, intake, job, result, out, config, log, note)
            results[intake.student_id] = record
            if record.graded:
                ledger.record(intake.student_id, key, record.to_json())
            else:
                ledger.forget(intake.student_id)

        try:
            again = _grade_in_pool(pending, jobs, timeout, materials, layout, config, keep)
            # Stopped by a wall-clock backstop while under the CPU budget, or not graded at all:
            # the machine, not the student, may be the cause. Graded once more, alone, and
            # scored from that run.
            _grade_in_pool(again, 1, timeout, materials, layout, config, keep, alone=True)
            for student in unchanged:
                problem = _feedback(layout, lab, student, out, config, log)
                score, max_score = _scores(layout, lab, student)
                old = results[student]
                notes = old.notes + ((problem,) if problem else ())
                results[student] = StudentResult(student, True, score, max_score, "", notes,
                                                 False, breakdown=breakdown(layout, lab, student))
        finally:
            _write_csvs(layout, lab, out)
    ordered = tuple(results[s] for s in sorted(results))
    sandbox = f"bubblewrap ({support.kind})" if support.available else "NONE"
    warnings = (support.warning,) if support.warning else ()
    return AutogradeReport(lab, out, ordered, jobs, time.monotonic() - started, sandbox,
                           warnings)


__all__ = ["AutogradeReport", "Breakdown", "StudentResult", "autograde", "breakdown",
           "default_jobs", "exclusive", "job_for", "record_lab"]
