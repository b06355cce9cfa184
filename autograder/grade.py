"""``autograde``: grade a class's submissions of one lab, student by student.

``submissions`` holds nbgrader's submitted layout, ``<student_id>/<lab>/<notebook>.ipynb``.
For each student, in turn: the submission is copied into the work folder's ``submitted/``,
nbgrader's ``autograde`` runs on that student alone (so one broken submission cannot stop
the others: it is reported, with the reason, and the rest are graded), then feedback is
generated. The student is added to the gradebook automatically. Re-running regrades
everything and keeps the manual grades entered in the gradebook.

Written to ``out`` (default ``autograder/work/out``):

- ``grades.csv``   nbgrader's CSV export (see ``export.GRADES_COLUMNS``)
- ``scores.csv``   one row per student and graded cell (see ``export.SCORES_COLUMNS``)
- ``feedback/<student_id>/<lab>/<notebook>.html``   without hidden tests
- ``autograde.log``  nbgrader's log, student by student

>>> report = autograde("lab01_direct_quantization", Path("submissions"))  # doctest: +SKIP
>>> print(report.summary())                                               # doctest: +SKIP
lab01_direct_quantization: graded 2 of 3 students, mean score 9.00 / 12.00
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nbgrader.api import MissingEntry
from nbgrader.converters import Autograde, GenerateAssignment, GenerateFeedback
from traitlets.config import Config

from autograder.export import (
    cell_scores,
    graded_cell_ids,
    write_grades_csv,
    write_scores_csv,
)
from autograder.session import (
    GRADER_RELEASE,
    CourseLayout,
    GradingError,
    NbgraderRun,
    check_lab_name,
    notebook_problem,
    open_gradebook,
    run_converter,
)

DEFAULT_OUT = "out"  # inside the work folder
LOG_NAME = "autograde.log"


@dataclass(frozen=True)
class StudentResult:
    """How one student's submission went.

    ``graded`` is False when nbgrader could not grade it (``problem`` says why); a graded
    submission may still carry a ``problem`` (a missing notebook, scored 0).
    """

    student_id: str
    graded: bool
    score: float
    max_score: float
    problem: str = ""


@dataclass(frozen=True)
class AutogradeReport:
    """The outcome of one ``autograde`` run."""

    lab: str
    out: Path
    students: tuple[StudentResult, ...]

    @property
    def graded(self) -> tuple[StudentResult, ...]:
        return tuple(s for s in self.students if s.graded)

    @property
    def failed(self) -> tuple[StudentResult, ...]:
        return tuple(s for s in self.students if not s.graded)

    @property
    def mean_score(self) -> float | None:
        graded = self.graded
        return sum(s.score for s in graded) / len(graded) if graded else None

    def summary(self) -> str:
        """A few lines for the terminal: counts, mean score, one line per student."""
        max_score = max((s.max_score for s in self.students), default=0.0)
        mean = self.mean_score
        mean_text = "no score" if mean is None else f"mean score {mean:.2f} / {max_score:.2f}"
        lines = [
            f"{self.lab}: graded {len(self.graded)} of {len(self.students)} students, {mean_text}"
        ]
        for s in self.students:
            if s.graded:
                note = f"  ({s.problem})" if s.problem else ""
                lines.append(f"  {s.student_id}: {s.score:.2f} / {s.max_score:.2f}{note}")
            else:
                lines.append(f"  {s.student_id}: NOT GRADED: {s.problem}")
        lines.append(f"grades.csv, scores.csv and feedback/ written to {self.out}")
        return "\n".join(lines)


def record_lab(layout: CourseLayout, lab: str, config: Config | None = None) -> None:
    """Record ``lab``'s source (cells, points, test code) in the gradebook.

    nbgrader's ``generate_assignment`` does it; its student copy goes to the work folder,
    not to the release folder. Raises GradingError if nbgrader refuses (for instance cells
    added or removed after submissions were graded).
    """
    grader_layout = CourseLayout(
        root=layout.root,
        source=layout.source,
        release=f"{layout.work}/{GRADER_RELEASE}",
        work=layout.work,
    )
    run = run_converter(GenerateAssignment, grader_layout, lab, config=config, force=True)
    if not run.success:
        raise GradingError(f"could not record {lab} in the gradebook: {run.reason()}\n{run.log}")


def _students(submissions: Path) -> list[Path]:
    return sorted(
        path for path in submissions.iterdir() if path.is_dir() and not path.name.startswith(".")
    )


def _copy_submission(source: Path, dest: Path) -> None:
    """Replace ``dest`` by a copy of ``source`` (no stale files from an earlier run)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, symlinks=False)


def _scores(layout: CourseLayout, lab: str, student: str) -> tuple[float, float]:
    with open_gradebook(layout) as gradebook:
        max_score = float(gradebook.find_assignment(lab).max_score)
        try:
            score = float(gradebook.find_submission(lab, student).score)
        except MissingEntry:  # never graded
            score = 0.0
    return score, max_score


def _grade_student(
    layout: CourseLayout,
    lab: str,
    student_dir: Path,
    notebooks: list[str],
    out: Path,
    log: TextIO,
    config: Config | None,
) -> StudentResult:
    student = student_dir.name
    lab_dir = student_dir / lab
    if not lab_dir.is_dir():
        return StudentResult(student, False, 0.0, 0.0, f"no {lab}/ folder in {student_dir}")
    problems = [notebook_problem(lab_dir / f"{name}.ipynb") for name in notebooks]
    usable = [name for name, problem in zip(notebooks, problems, strict=True) if not problem]
    problem_text = "; ".join(p for p in problems if p)
    if not usable:
        with open_gradebook(layout) as gradebook:  # listed in grades.csv all the same
            gradebook.update_or_create_student(student)
        return StudentResult(student, False, 0.0, 0.0, problem_text)

    submitted = layout.step_dir("submitted") / student / lab
    _copy_submission(lab_dir, submitted)
    for name, problem in zip(notebooks, problems, strict=True):
        if problem and (submitted / f"{name}.ipynb").exists():
            (submitted / f"{name}.ipynb").unlink()  # graded as missing: 0 for that notebook

    run = run_converter(
        Autograde, layout, lab, student=student, config=config, force=True, create_student=True
    )
    _write_log(log, student, "autograde", run)
    if not run.success:
        return StudentResult(student, False, 0.0, 0.0, run.reason())
    run = run_converter(GenerateFeedback, layout, lab, student=student, config=config, force=True)
    _write_log(log, student, "feedback", run)
    score, max_score = _scores(layout, lab, student)
    if not run.success:
        problem_text = "; ".join(filter(None, [problem_text, f"no feedback: {run.reason()}"]))
    else:
        feedback = layout.step_dir("feedback") / student / lab
        _copy_feedback(feedback, out / "feedback" / student / lab)
    return StudentResult(student, True, score, max_score, problem_text)


def _copy_feedback(source: Path, target: Path) -> None:
    """Copy the HTML feedback files of one student (nothing else) to ``target``."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for page in sorted(source.glob("*.html")):
        shutil.copyfile(page, target / page.name)


def _write_log(log: TextIO, student: str, step: str, run: NbgraderRun) -> None:
    log.write(f"===== {student}: {step} ({'ok' if run.success else 'FAILED'}) =====\n")
    log.write(run.log)
    if run.error:
        log.write(run.error)


def autograde(
    lab: str,
    submissions: Path,
    out: Path | None = None,
    layout: CourseLayout | None = None,
    config: Config | None = None,
) -> AutogradeReport:
    """Grade every student folder of ``submissions`` for ``lab``; write ``out``'s files.

    ``config`` replaces ``nbgrader_config.py``'s settings (its folders are ``layout``'s).

    Raises ValueError for an unknown lab or a missing submissions folder, GradingError when
    the lab cannot be recorded in the gradebook; a student's failure only marks that
    student as not graded in the report.
    """
    layout = CourseLayout.from_config() if layout is None else layout
    check_lab_name(lab)
    notebooks = [path.stem for path in layout.lab_notebooks(lab)]
    if not isinstance(submissions, (str, Path)):
        raise TypeError(f"submissions must be a path, got {type(submissions).__name__}")
    submissions = Path(submissions).resolve()
    if not submissions.is_dir():
        raise ValueError(f"submissions: no such folder {submissions}")
    out = layout.work_dir / DEFAULT_OUT if out is None else Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    layout.work_dir.mkdir(parents=True, exist_ok=True)

    record_lab(layout, lab, config)
    results = []
    with (out / LOG_NAME).open("w") as log:
        for student_dir in _students(submissions):
            results.append(
                _grade_student(layout, lab, student_dir, notebooks, out, log, config)
            )

    order = [gid for path in layout.lab_notebooks(lab) for gid in graded_cell_ids(path)]
    with open_gradebook(layout) as gradebook:
        write_grades_csv(gradebook, lab, out / "grades.csv")
        write_scores_csv(cell_scores(gradebook, lab, order), out / "scores.csv")
    return AutogradeReport(lab, out, tuple(results))
