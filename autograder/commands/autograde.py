"""``autograde``: grade a class's submissions of one lab, in parallel, sandboxed.

``submissions`` holds ``<student_id>/<lab>/<notebook>.ipynb`` (a renamed notebook, or one
outside the ``<lab>/`` folder, is found too). A class run:

1. records the lab's source in the gradebook and prepares the run's materials once
   (``autograder.pipeline.materials``: the grading copy of ``course``, inputs-only hidden
   references, a template gradebook);
2. takes in each submission (``autograder.pipeline.intake``): only its notebooks, repaired
   where they can be, or a reason why not — that student is reported NOT GRADED, the others go on;
3. grades the submissions on a Dask cluster (``autograder.pipeline.pool``): a local one of
   ``jobs`` single-threaded workers, or an existing one (``scheduler``); each task grades one
   submission in a scratch course, the notebook's kernel in the sandbox
   (``autograder.pipeline.task``, ``autograder.pipeline.worker``), and returns its results
   as data;
4. records each graded submission in the class gradebook, one at a time, here, through nbgrader's
   own ``Autograde`` (``autograder.gradebook.grades``), writes its feedback, and notes it
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
import dataclasses
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from traitlets.config import Config

from autograder.gradebook.grades import (
    AutogradeReport,
    ClassGradebook,
    StudentResult,
    record_lab,
)
from autograder.pipeline.intake import STUDENT_ID, Intake, take_in
from autograder.pipeline.ledger import Ledger, submission_key
from autograder.pipeline.materials import Materials, prepare
from autograder.pipeline.pool import Pool, default_jobs, grade_in_pool, worker_timeout
from autograder.pipeline.worker import Job
from autograder.sandbox.bwrap import Limits, Support, probe_support, sandbox_mode
from autograder.session import CourseLayout, GradingError, check_lab_name, load_config

DEFAULT_OUT = "out"  # inside the work folder
LOG_NAME = "autograde.log"
LOCK_NAME = "autograde.lock"
TEMPLATE_SOURCE = "template-source.db"


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


def _submissions_dir(submissions: Path) -> Path:
    if not isinstance(submissions, (str, Path)):
        raise TypeError(f"submissions must be a path, got {type(submissions).__name__}")
    submissions = Path(submissions).resolve()
    if not submissions.is_dir():
        raise ValueError(f"submissions: no such folder {submissions}")
    return submissions


def _jobs(jobs: int | None) -> int:
    jobs = default_jobs() if jobs is None else jobs
    if type(jobs) is not int or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    return jobs


def _support(config: Config) -> Support:
    """The sandbox this machine gives; GradingError if the config requires one it cannot."""
    support = probe_support(sandbox_mode(config))
    if sandbox_mode(config) == "require" and not support.available:
        raise GradingError(f"Sandbox.mode is 'require' but {support.reason}")
    return support


def _template_source(layout: CourseLayout, lab: str, config: Config) -> Path | None:
    """A SQLite gradebook with ``lab`` recorded, for the workers' template, when the class
    gradebook is a database server's (None: the class gradebook file is one)."""
    if not layout.database:
        return None
    path = layout.work_dir / TEMPLATE_SOURCE
    path.unlink(missing_ok=True)
    record_lab(dataclasses.replace(layout, database=f"sqlite:///{path}"), lab, config)
    return path


def _students(submissions: Path) -> list[Path]:
    return sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))


def _take_in_class(submissions: Path, *, materials: Materials, ledger: Ledger,
                   book: ClassGradebook, regrade: bool,
                   results: dict[str, StudentResult]) -> list[tuple[Intake, str]]:
    """Take in every student folder of ``submissions``; the submissions to grade, as
    ``(intake, ledger key)``. Those that cannot be taken in, and (unless ``regrade``) those
    unchanged since they were recorded, go to ``results`` instead (an unchanged one with
    ``executed`` False, to be refreshed from the gradebook)."""
    pending: list[tuple[Intake, str]] = []
    for student_dir in _students(submissions):
        intake = take_in(student_dir, materials.lab, materials.released)
        student = intake.student_id
        if intake.problem:
            results[student] = StudentResult(student_id=student, graded=False,
                                             problem=intake.problem)
            if STUDENT_ID.match(student):
                book.add_student(student)  # listed in grades.csv anyway
            continue
        key = submission_key(intake.notebooks, intake.timestamp, materials.fingerprint)
        previous = ledger.done(student, key)
        if previous and previous.get("graded") and not regrade and book.holds(student):
            results[student] = StudentResult(student_id=student, graded=True,
                                             notes=tuple(previous.get("notes", ())),
                                             executed=False)
            continue
        pending.append((intake, key))
    return pending


def _grade_class(pending: list[tuple[Intake, str]], *, pool: Pool, limits: Limits,
                 materials: Materials, layout: CourseLayout, book: ClassGradebook,
                 ledger: Ledger, results: dict[str, StudentResult]) -> None:
    """Grade ``pending`` on ``pool``'s workers, then those to grade again alone; each result
    is recorded in ``book``, ``ledger`` and ``results`` as it comes."""
    timeout = worker_timeout(limits.notebook_wall_s, len(materials.released.notebooks))

    def keep(intake: Intake, key: str, job: Job, result: dict, note: str = "") -> None:
        record = book.record(intake, job, result, note)
        results[intake.student_id] = record
        if record.graded:
            ledger.record(intake.student_id, key, record.to_json())
        else:
            ledger.forget(intake.student_id)

    common = {"pool": pool, "timeout": timeout, "materials": materials, "layout": layout,
              "config": book.config, "keep": keep}
    again = grade_in_pool(pending, **common)
    # Stopped by a wall-clock backstop while under the CPU budget, or not graded at all: the
    # machine, not the student, may be the cause. Graded once more, alone, and scored from
    # that run.
    grade_in_pool(again, alone=True, **common)


def autograde(
    lab: str,
    submissions: Path,
    out: Path | None = None,
    layout: CourseLayout | None = None,
    config: Config | None = None,
    jobs: int | None = None,
    regrade: bool = False,
    scheduler: str | None = None,
    db_url: str | None = None,
) -> AutogradeReport:
    """Grade every student folder of ``submissions`` for ``lab``; write ``out``'s files.

    ``config`` replaces ``nbgrader_config.py``'s settings (its folders are ``layout``'s);
    ``jobs`` submissions are graded at a time (default: the number of cores); ``regrade``
    runs unchanged submissions again; ``scheduler`` (``tcp://host:port``) grades on that
    existing Dask cluster instead of a local one of ``jobs`` workers; ``db_url`` (nbgrader's
    ``db_url``, e.g. ``postgresql://grader@dbhost/course``) is the class gradebook instead of
    ``<work>/gradebook.db``.

    Raises ValueError/TypeError for bad arguments, GradingError when the lab cannot be
    recorded, another run holds the gradebook, or the config requires a sandbox this machine
    cannot provide; a student's failure only marks that student as not graded.
    """
    layout = CourseLayout.from_config() if layout is None else layout
    if db_url:
        layout = dataclasses.replace(layout, database=db_url)
    check_lab_name(lab)
    layout.lab_notebooks(lab)
    submissions = _submissions_dir(submissions)
    jobs = _jobs(jobs)
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise ValueError(f"scheduler must be an address like tcp://host:8786, got {scheduler!r}")
    config = load_config() if config is None else config
    limits = Limits.from_config(config)
    support = _support(config)
    out = layout.work_dir / DEFAULT_OUT if out is None else Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, StudentResult] = {}
    with exclusive(layout.work_dir), (out / LOG_NAME).open("w") as log:
        if support.warning:
            log.write(support.warning + "\n")
        record_lab(layout, lab, config)
        materials = prepare(layout, lab, config, limits, support, _template_source(
            layout, lab, config))
        ledger = Ledger.load(layout.work_dir, lab)
        book = ClassGradebook(layout=layout, lab=lab, out=out, config=config, log=log)
        pending = _take_in_class(submissions, materials=materials, ledger=ledger, book=book,
                                 regrade=regrade, results=results)
        unchanged = [s for s, r in results.items() if r.graded and not r.executed]
        try:
            with Pool(jobs, scheduler) as pool:
                _grade_class(pending, pool=pool, limits=limits, materials=materials,
                             layout=layout, book=book, ledger=ledger, results=results)
            for student in unchanged:
                results[student] = book.refresh(results[student])
        finally:
            book.write_csvs()
    return AutogradeReport(
        lab=lab, out=out, students=tuple(results[s] for s in sorted(results)), jobs=jobs,
        seconds=time.monotonic() - started,
        sandbox=f"bubblewrap ({support.kind})" if support.available else "NONE",
        warnings=(support.warning,) if support.warning else ())


__all__ = ["autograde", "exclusive"]
