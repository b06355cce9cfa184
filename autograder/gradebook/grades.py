"""A class run's grades: each student's submission recorded in the class gradebook and read
back from it.

:func:`record_lab` records the lab's source (cells, points, test code) before any
submission. :class:`ClassGradebook` then records each worker's result, one submission at a
time, through nbgrader's own ``Autograde`` with ``ReplayExecution`` in place of ``Execute``
(``autograder.preprocessors.replay``: the worker's executed notebook, not a second run),
writes the student's feedback (``autograder.gradebook.feedback``) and reads the scores back
as a :class:`StudentResult` with its :class:`Breakdown`; its :meth:`ClassGradebook.write_csvs`
writes ``grades.csv`` and ``scores.csv`` (``autograder.gradebook.export``).
:class:`AutogradeReport` is the whole run, with the summary the terminal shows.

Every record here is a keyword-only dataclass.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from nbgrader.api import MissingEntry
from nbgrader.converters import Autograde, GenerateAssignment
from nbgrader.preprocessors import Execute
from traitlets.config import Config

from autograder.gradebook.export import (
    cell_scores,
    graded_cell_ids,
    write_grades_csv,
    write_scores_csv,
)
from autograder.gradebook.feedback import write_feedback
from autograder.pipeline.intake import Intake
from autograder.pipeline.worker import OUT, Job
from autograder.preprocessors.overwrite import quiet_preprocessors
from autograder.preprocessors.replay import ReplayExecution
from autograder.session import (
    GRADER_RELEASE,
    CourseLayout,
    GradingError,
    open_gradebook,
    run_converter,
)

REASON_CHARS = 200
"""Characters of a failing cell's first reason shown in the summary (feedback has it all)."""


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class StudentResult:
    """How one student's submission went.

    ``graded`` is False when it could not be graded (``problem`` says why); ``notes`` say what
    was repaired, ignored or cut short in a graded one. ``executed`` is False when an
    unchanged submission was not run again.
    """

    student_id: str
    graded: bool
    score: float = 0.0
    max_score: float = 0.0
    problem: str = ""
    notes: tuple[str, ...] = ()
    executed: bool = True
    seconds: float = 0.0
    breakdown: Breakdown | None = None

    def to_json(self) -> dict:
        return {"graded": self.graded, "score": self.score, "max_score": self.max_score,
                "problem": self.problem, "notes": list(self.notes), "seconds": self.seconds}


@dataclass(frozen=True, kw_only=True)
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
            lines += _student_lines(s)
        rate = self.per_minute
        speed = "" if rate is None else f": {rate:.1f} submissions per minute"
        lines.append(f"executed {len(self.executed)} submission(s) in {self.seconds:.1f} s with "
                     f"JOBS={self.jobs}, sandbox: {self.sandbox}{speed}")
        lines.append(f"grades.csv, scores.csv and feedback/ written to {self.out}")
        return "\n".join(lines)


def _student_lines(s: StudentResult) -> list[str]:
    if not s.graded:
        return [f"  {s.student_id}: NOT GRADED: {s.problem}"]
    note = f"  ({'; '.join(s.notes)})" if s.notes else ""
    again = "" if s.executed else "  [unchanged, not run again]"
    lines = [f"  {s.student_id}: {s.score:.2f} / {s.max_score:.2f}{again}{note}"]
    if s.breakdown is not None:
        lines += [f"      {line}" for line in s.breakdown.lines()]
    return lines


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
    return Breakdown(auto=auto, auto_max=auto_max, manual=manual, manual_max=manual_max,
                     to_grade=to_grade, lost=tuple(lost))


def record_lab(layout: CourseLayout, lab: str, config: Config | None = None) -> None:
    """Record ``lab``'s source (cells, points, test code) in the gradebook.

    nbgrader's ``generate_assignment`` does it; its student copy goes to the work folder,
    not to the release folder. Raises GradingError if nbgrader refuses (for instance cells
    added or removed after submissions were graded).
    """
    grader_layout = CourseLayout(root=layout.root, source=layout.source,
                                 release=f"{layout.work}/{GRADER_RELEASE}", work=layout.work,
                                 database=layout.database)
    run = run_converter(GenerateAssignment, grader_layout, lab, config=config, force=True)
    if not run.success:
        raise GradingError(f"could not record {lab} in the gradebook: {run.reason()}\n{run.log}")


def _worker_notes(result: dict) -> list[str]:
    if result.get("stopped"):
        return [f"stopped early: {result['stopped']}; the cells after it scored 0"]
    return []


@dataclass(kw_only=True)
class ClassGradebook:
    """The class gradebook of one run of ``lab``: feedback goes to ``out``, nbgrader's logs to
    ``log``; ``config`` is the run's nbgrader configuration."""

    layout: CourseLayout
    lab: str
    out: Path
    config: Config
    log: TextIO

    def scores(self, student: str) -> tuple[float, float]:
        """(score, max score) of ``student`` (score 0 if never graded)."""
        with open_gradebook(self.layout) as gradebook:
            max_score = float(gradebook.find_assignment(self.lab).max_score)
            try:
                score = float(gradebook.find_submission(self.lab, student).score)
            except MissingEntry:  # never graded
                score = 0.0
        return score, max_score

    def holds(self, student: str) -> bool:
        """Whether ``student``'s submission is in the gradebook and its autograded folder."""
        with open_gradebook(self.layout) as gradebook:
            try:
                gradebook.find_submission(self.lab, student)
            except MissingEntry:
                return False
        return (self.layout.step_dir("autograded") / student / self.lab).is_dir()

    def add_student(self, student: str) -> None:
        """List ``student`` (one whose submission could not be taken in) in the gradebook."""
        with open_gradebook(self.layout) as gradebook:
            gradebook.update_or_create_student(student)

    def feedback(self, student: str) -> str:
        """Write ``student``'s feedback; '' or the reason it failed."""
        return write_feedback(self.layout, self.lab, student, out=self.out, config=self.config,
                              log=self.log)

    def _submit(self, intake: Intake) -> None:
        submitted = self.layout.step_dir("submitted") / intake.student_id / self.lab
        if submitted.exists():
            shutil.rmtree(submitted)
        submitted.mkdir(parents=True)
        for name, data in intake.notebooks.items():
            (submitted / f"{name}.ipynb").write_bytes(data)
        if intake.timestamp:
            (submitted / "timestamp.txt").write_text(intake.timestamp + "\n")

    def _replay_config(self, job: Job) -> Config:
        replay = Config()
        replay.merge(self.config)
        steps = list(self.config.Autograde.get(
            "autograde_preprocessors",
            Autograde.class_traits()["autograde_preprocessors"].default()))
        replay.Autograde.autograde_preprocessors = [ReplayExecution if p is Execute else p
                                                    for p in steps]
        replay.Autograde.sanitize_preprocessors = quiet_preprocessors(self.config)
        replay.ReplayExecution.executed_dir = str(Path(job.job_dir) / OUT)
        return replay

    def record(self, intake: Intake, job: Job, result: dict, note: str = "") -> StudentResult:
        """Record a worker's ``result`` for ``intake``, then write the feedback; ``note`` (if
        any) is added to the student's notes."""
        student = intake.student_id
        extra = (note,) if note else ()
        if not result.get("graded"):
            return StudentResult(student_id=student, graded=False,
                                 problem=result.get("problem") or "not graded",
                                 notes=(*intake.notes, *extra),
                                 seconds=result.get("seconds", 0.0))
        self._submit(intake)
        run = run_converter(Autograde, self.layout, self.lab, student=student,
                            config=self._replay_config(job), force=True, create_student=True)
        run.write_to(self.log, student, "autograde")
        if not run.success:
            return StudentResult(student_id=student, graded=False, problem=run.reason(),
                                 notes=tuple(intake.notes))
        notes = [*intake.notes, *_worker_notes(result), *extra]
        problem = self.feedback(student)
        if problem:
            notes.append(problem)
        score, max_score = self.scores(student)
        return StudentResult(student_id=student, graded=True, score=score, max_score=max_score,
                             notes=tuple(notes), seconds=result.get("seconds", 0.0),
                             breakdown=breakdown(self.layout, self.lab, student))

    def refresh(self, unchanged: StudentResult) -> StudentResult:
        """An unchanged submission's result, read again from the gradebook (manual grades
        show), its feedback rewritten."""
        student = unchanged.student_id
        problem = self.feedback(student)
        score, max_score = self.scores(student)
        return StudentResult(student_id=student, graded=True, score=score, max_score=max_score,
                             notes=unchanged.notes + ((problem,) if problem else ()),
                             executed=False, breakdown=breakdown(self.layout, self.lab, student))

    def write_csvs(self) -> None:
        """``grades.csv`` and ``scores.csv`` in ``out``, each replaced whole."""
        order = [gid for path in self.layout.lab_notebooks(self.lab)
                 for gid in graded_cell_ids(path)]
        with open_gradebook(self.layout) as gradebook:
            for name, write in (
                    ("grades.csv", lambda p: write_grades_csv(gradebook, self.lab, p)),
                    ("scores.csv", lambda p: write_scores_csv(
                        cell_scores(gradebook, self.lab, order), p))):
                temporary = self.out / f".{name}.tmp"
                write(temporary)
                os.replace(temporary, self.out / name)


__all__ = ["AutogradeReport", "Breakdown", "ClassGradebook", "StudentResult", "breakdown",
           "record_lab"]
