"""``check``: grade one notebook exactly as the grader would, and say what failed.

A student (or an instructor trying a lab) runs ``make check NB=labs/<lab>/<lab>.ipynb``.
The notebook is graded in a temporary course folder with the course's own configuration
and preprocessors: the lab's source is recorded in a fresh gradebook, the notebook is
submitted and autograded by nbgrader, hidden tests included. For every graded cell it
prints the grade_id, score / max_score and, for a failed test, the message the test raised
(``ename: evalue``, the last line of the traceback: where ``course.grading`` explains).

>>> nb = Path("labs/lab01_direct_quantization/lab01_direct_quantization.ipynb")
>>> print(check_notebook(nb).format())                                    # doctest: +SKIP
lab01_direct_quantization.ipynb, graded as lab01_direct_quantization (hidden tests included)
  test_qrange     2.00 / 2.00  passed
  test_sqnr_db    0.00 / 2.00  FAILED  AssertionError: sqnr_db: expected 49.9 dB, got -1.0
  ...
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.converters import Autograde

from autograder.grade import record_lab
from autograder.session import (
    CourseLayout,
    GradingError,
    check_lab_name,
    notebook_problem,
    open_gradebook,
    run_converter,
)

CHECK_STUDENT = "self-check"


@dataclass(frozen=True)
class CellResult:
    """One graded cell: autograded test (``manual`` False) or answer graded by hand."""

    grade_id: str
    score: float
    max_score: float
    manual: bool
    error: str = ""  # "ename: evalue" of the first error the cell raised

    @property
    def passed(self) -> bool:
        return not self.manual and not self.error and self.score >= self.max_score


@dataclass(frozen=True)
class CheckReport:
    """The grade of one notebook, cell by cell, in notebook order."""

    notebook: Path
    lab: str
    cells: tuple[CellResult, ...]

    @property
    def auto_score(self) -> float:
        return sum(c.score for c in self.cells if not c.manual)

    @property
    def auto_max_score(self) -> float:
        return sum(c.max_score for c in self.cells if not c.manual)

    @property
    def manual_max_score(self) -> float:
        return sum(c.max_score for c in self.cells if c.manual)

    @property
    def failed(self) -> tuple[CellResult, ...]:
        return tuple(c for c in self.cells if not c.manual and not c.passed)

    def format(self) -> str:
        """The lines ``make check`` prints."""
        width = max((len(c.grade_id) for c in self.cells), default=0)
        lines = [f"{self.notebook.name}, graded as {self.lab} (hidden tests included)"]
        for c in self.cells:
            head = f"  {c.grade_id:<{width}}"
            if c.manual:
                lines.append(f"{head}     - / {c.max_score:5.2f}  graded by hand")
                continue
            status = "passed" if c.passed else "FAILED"
            line = f"{head} {c.score:5.2f} / {c.max_score:5.2f}  {status}"
            if c.error:
                message = c.error.splitlines()
                line += "  " + message[0] + "".join("\n      " + m for m in message[1:])
            lines.append(line)
        summary = f"autograded: {self.auto_score:.2f} / {self.auto_max_score:.2f}"
        if self.failed:
            summary += f"; failed: {', '.join(c.grade_id for c in self.failed)}"
        if self.manual_max_score:
            summary += f"; {self.manual_max_score:.2f} more points are graded by hand"
        lines.append(summary)
        return "\n".join(lines)


def find_lab(notebook: Path, layout: CourseLayout) -> tuple[str, str]:
    """(lab, source notebook name) that ``notebook`` is a copy of.

    The lab is the notebook's folder name if the source has such a lab, else the lab with
    a source notebook of the same name; within the lab, the source notebook of the same
    name, else the lab's only notebook. ValueError if neither resolves.
    """
    labs = layout.labs()
    candidates = [notebook.parent.name] if notebook.parent.name in labs else [
        lab for lab in labs if (layout.source_dir / lab / notebook.name).is_file()
    ]
    if len(candidates) != 1:
        raise ValueError(
            f"notebook: cannot tell which lab {notebook} belongs to (labs: "
            f"{', '.join(labs) or 'none'}); pass the lab explicitly"
        )
    return candidates[0], _source_name(notebook, candidates[0], layout)


def _source_name(notebook: Path, lab: str, layout: CourseLayout) -> str:
    names = [path.stem for path in layout.lab_notebooks(lab)]
    if notebook.stem in names:
        return notebook.stem
    if len(names) == 1:
        return names[0]
    raise ValueError(f"notebook: {notebook.name} is none of {lab}'s notebooks {names}")


def error_message(output: dict) -> str:
    """``ename: evalue`` of an error output (just ``ename`` when evalue is empty)."""
    ename, evalue = output.get("ename", ""), output.get("evalue", "")
    return f"{ename}: {evalue}" if evalue else ename


def _cell_errors(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """grade_id -> 'ename: evalue' of the first error output of each graded cell."""
    errors = {}
    for cell in notebook.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        for output in cell.get("outputs", []):
            if grade_id and output.get("output_type") == "error":
                errors[grade_id] = error_message(output)
                break
    return errors


def _graded_cells(notebook: nbformat.NotebookNode) -> list[tuple[str, bool]]:
    """(grade_id, graded by hand) of each graded cell, in order."""
    cells = []
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") or meta.get("task"):
            manual = bool(meta.get("task")) or bool(meta.get("solution")) or (
                cell.cell_type != "code"
            )
            cells.append((meta["grade_id"], manual))
    return cells


def check_notebook(
    notebook: Path, lab: str | None = None, layout: CourseLayout | None = None
) -> CheckReport:
    """Grade ``notebook`` as the autograder would; return each graded cell's result.

    ``lab`` defaults to the one ``find_lab`` finds. Raises ValueError when the notebook or
    its lab cannot be found or read, GradingError when nbgrader cannot grade it.
    """
    layout = CourseLayout.from_config() if layout is None else layout
    if not isinstance(notebook, (str, Path)):
        raise TypeError(f"notebook must be a path, got {type(notebook).__name__}")
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise ValueError(f"notebook: no such file {notebook}")
    problem = notebook_problem(notebook)
    if problem:
        raise ValueError(f"notebook: {problem}")
    if lab is None:
        lab, name = find_lab(notebook, layout)
    else:
        name = _source_name(notebook, check_lab_name(lab), layout)
    source_notebook = layout.source_dir / lab / f"{name}.ipynb"
    graded = _graded_cells(nbformat.read(str(source_notebook), as_version=4))

    with tempfile.TemporaryDirectory(prefix="course-check-") as tmp:
        scratch = CourseLayout(
            root=Path(tmp), source=layout.source, release=layout.release, work=layout.work
        )
        shutil.copytree(layout.source_dir / lab, scratch.source_dir / lab)
        record_lab(scratch, lab)
        submitted = scratch.step_dir("submitted") / CHECK_STUDENT / lab
        submitted.mkdir(parents=True)
        shutil.copyfile(notebook, submitted / f"{name}.ipynb")
        run = run_converter(Autograde, scratch, lab, student=CHECK_STUDENT, force=True)
        if not run.success:
            raise GradingError(f"grading {notebook.name} failed: {run.reason()}\n{run.log}")
        autograded = scratch.step_dir("autograded") / CHECK_STUDENT / lab / f"{name}.ipynb"
        errors = _cell_errors(nbformat.read(str(autograded), as_version=4))
        with open_gradebook(scratch) as gradebook:
            grades = {
                grade.name: grade
                for grade in gradebook.find_submission_notebook(name, lab, CHECK_STUDENT).grades
            }
            cells = tuple(
                CellResult(
                    grade_id=grade_id,
                    score=float(grades[grade_id].score),
                    max_score=float(grades[grade_id].max_score),
                    manual=manual,
                    error="" if manual else errors.get(grade_id, ""),
                )
                for grade_id, manual in graded
            )
    return CheckReport(notebook, lab, cells)
