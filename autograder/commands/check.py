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

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.utils import determine_grade

from autograder.gradebook.grades import record_lab
from autograder.pipeline.intake import read_notebook, take_in
from autograder.pipeline.materials import hidden_references_path, prepare
from autograder.pipeline.pool import again_note, job_for
from autograder.pipeline.worker import OUT, Job, run_job
from autograder.sandbox.bwrap import UID_BASE, Limits, probe_support, sandbox_mode
from autograder.session import CourseLayout, GradingError, check_lab_name, load_config

CHECK_STUDENT = "self-check"


@dataclass(frozen=True, kw_only=True)
class CellResult:
    """One graded cell: autograded test (``manual`` False) or answer graded by hand."""

    grade_id: str
    score: float
    max_score: float
    manual: bool
    error: str = ""  # "ename: evalue" of the error that decided the cell

    @property
    def passed(self) -> bool:
        return not self.manual and not self.error and self.score >= self.max_score


@dataclass(frozen=True, kw_only=True)
class CheckReport:
    """The grade of one notebook, cell by cell, in notebook order."""

    notebook: Path
    lab: str
    cells: tuple[CellResult, ...]
    notes: tuple[str, ...] = ()

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
        lines += [f"  note: {note}" for note in self.notes]
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


def check_notebook(
    notebook: Path, lab: str | None = None, layout: CourseLayout | None = None
) -> CheckReport:
    """Grade ``notebook`` as the autograder would; return each graded cell's result.

    The same pipeline as a class run, for one submission: intake, the sandboxed kernel, the
    grader's verdicts, the fresh re-run of plain tests. ``lab`` defaults to the one
    ``find_lab`` finds. Raises ValueError when the notebook or its lab cannot be found or
    read, GradingError when nbgrader cannot grade it.
    """
    layout = CourseLayout.from_config() if layout is None else layout
    if not isinstance(notebook, (str, Path)):
        raise TypeError(f"notebook must be a path, got {type(notebook).__name__}")
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise ValueError(f"notebook: no such file {notebook}")
    _, _, problem = read_notebook(notebook)
    if problem:
        raise ValueError(f"notebook: {problem}")
    if lab is None:
        lab, name = find_lab(notebook, layout)
    else:
        name = _source_name(notebook, check_lab_name(lab), layout)
    config = load_config()
    support = probe_support(sandbox_mode(config))

    with tempfile.TemporaryDirectory(prefix="course-check-") as tmp:
        os.chmod(tmp, 0o755)
        scratch = CourseLayout(
            root=Path(tmp), source=layout.source, release=layout.release, work=layout.work
        )
        shutil.copytree(layout.source_dir / lab, scratch.source_dir / lab)
        hidden = hidden_references_path(layout, lab)
        if hidden.is_file():
            hidden_refs = scratch.root / "autograder" / "references" / f"{lab}.json"
            hidden_refs.parent.mkdir(parents=True)
            shutil.copyfile(hidden, hidden_refs)
        record_lab(scratch, lab, config)
        materials = prepare(scratch, lab, config, Limits.from_config(config), support)
        student_dir = Path(tmp) / "submission" / CHECK_STUDENT
        (student_dir / lab).mkdir(parents=True)
        shutil.copyfile(notebook, student_dir / lab / f"{name}.ipynb")
        intake = take_in(student_dir, lab, materials.released)
        if intake.problem:
            raise ValueError(f"notebook: {intake.problem}")
        job = job_for(intake, materials, scratch, config)
        job = Job(**{**job.__dict__, "uid": UID_BASE + 1})
        result = run_job(job)
        notes = list(intake.notes)
        if result.get("backstop") or not result["graded"]:  # the machine may be the cause
            first, result = result, run_job(job)
            notes.append(again_note(first, result))
        if not result["graded"]:
            raise GradingError(f"grading {notebook.name} failed: {result['problem']}")
        graded = nbformat.read(str(Path(job.job_dir) / OUT / f"{name}.ipynb"), as_version=4)
        cells = []
        for cell in graded.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if not (meta.get("grade") or meta.get("task")):
                continue
            manual = bool(meta.get("task")) or bool(meta.get("solution")) or (
                cell.cell_type != "code")
            score, max_score = (0.0, float(meta.get("points", 0))) if manual else (
                determine_grade(cell))
            errors = [error_message(o) for o in cell.get("outputs", [])
                      if o.get("output_type") == "error"]
            cells.append(CellResult(grade_id=meta["grade_id"], score=float(score or 0.0),
                                    max_score=float(max_score), manual=manual,
                                    error="" if manual or not errors else errors[-1]))
    return CheckReport(notebook=notebook, lab=lab, cells=tuple(cells), notes=tuple(notes))
