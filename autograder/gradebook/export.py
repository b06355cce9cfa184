"""Grades out of the gradebook: nbgrader's own CSV, and one row per graded cell.

- ``grades.csv`` is nbgrader's CSV export (``CsvExportPlugin``), one row per student of the
  gradebook: ``GRADES_COLUMNS``. A student without a submission scores 0, as in nbgrader.
- ``scores.csv`` has one row per submission and graded cell, autograded tests and manually
  graded answers alike: ``SCORES_COLUMNS``. ``score`` is the gradebook's: the manual score
  where a grader entered one, else the autograder's, else 0.

>>> with open_gradebook(layout) as gb:                     # doctest: +SKIP
...     rows = cell_scores(gb, "lab01_direct_quantization")
>>> rows[0]                                               # doctest: +SKIP
CellScore(student_id='alice', lab='lab01_direct_quantization', notebook='lab01_...',
          grade_id='test_qrange', score=2.0, max_score=2.0, needs_manual_grade=False)
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins.export import CsvExportPlugin

from autograder.session import LOGGER_NAME, check_lab_name

GRADES_COLUMNS = (
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
)
SCORES_COLUMNS = ("student_id", "lab", "grade_id", "score", "max_score")


@dataclass(frozen=True, kw_only=True)
class CellScore:
    """The gradebook's score of one graded cell of one student's submission."""

    student_id: str
    lab: str
    notebook: str
    grade_id: str
    score: float
    max_score: float
    needs_manual_grade: bool
    graded_by_hand: bool = False
    """A grader entered a manual score (it overrides the autograder's)."""


def graded_cell_ids(notebook_path: Path) -> list[str]:
    """grade_ids of the graded cells of a notebook (tests, answers, tasks), in cell order."""
    notebook = nbformat.read(str(notebook_path), as_version=4)
    ids = []
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") or meta.get("task"):
            ids.append(meta["grade_id"])
    return ids


def cell_scores(
    gradebook: Gradebook, lab: str, order: Sequence[str] | None = None
) -> list[CellScore]:
    """Every graded cell of every submission of ``lab``, by student, notebook, then ``order``.

    ``order`` lists grade_ids in the order rows should come (the source notebook's cell
    order, see ``graded_cell_ids``); ids it does not list come after, by name.
    """
    check_lab_name(lab)
    rank = {grade_id: index for index, grade_id in enumerate(order or ())}
    try:
        assignment = gradebook.find_assignment(lab)
    except MissingEntry:
        return []
    rows = []
    for submission in sorted(assignment.submissions, key=lambda s: s.student_id):
        for notebook in sorted(submission.notebooks, key=lambda n: n.name):
            grades = sorted(notebook.grades, key=lambda g: (rank.get(g.name, len(rank)), g.name))
            for grade in grades:
                rows.append(
                    CellScore(
                        student_id=submission.student_id,
                        lab=lab,
                        notebook=notebook.name,
                        grade_id=grade.name,
                        score=float(grade.score),
                        max_score=float(grade.max_score),
                        needs_manual_grade=bool(grade.needs_manual_grade),
                        graded_by_hand=grade.manual_score is not None,
                    )
                )
    return rows


def write_scores_csv(rows: Sequence[CellScore], path: Path) -> Path:
    """Write ``rows`` as ``scores.csv`` (columns ``SCORES_COLUMNS``); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SCORES_COLUMNS)
        for row in rows:
            if not isinstance(row, CellScore):
                raise TypeError(f"rows must hold CellScore, got {type(row).__name__}")
            writer.writerow([getattr(row, column) for column in SCORES_COLUMNS])
    return path


def write_grades_csv(gradebook: Gradebook, lab: str, path: Path) -> Path:
    """nbgrader's CSV export of ``lab`` (columns ``GRADES_COLUMNS``) to ``path``, its rows
    sorted by student id: nbgrader writes them in the gradebook's order, the order students
    were first recorded in, which a parallel run's completion order decides."""
    check_lab_name(lab)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plugin = CsvExportPlugin(to=str(path), assignment=[lab], log=logging.getLogger(LOGGER_NAME))
    plugin.export(gradebook)
    header, *rows = path.read_text().splitlines(keepends=True)
    column = next(csv.reader([header])).index("student_id")
    rows.sort(key=lambda line: next(csv.reader([line]))[column])
    path.write_text(header + "".join(rows))
    return path
