"""Helpers of the grader's end-to-end tests: a class of submissions, the CLI as `make` runs
it, and what nbgrader's gradebook and the outputs hold.

Used by ``tests/autograder/commands/test_autograde.py`` (the toy class and lab01) and by the
labs' grading tests (``tests/labs/test_lab00.py``, ``test_lab05.py``, ``test_lab06.py``).
"""

from __future__ import annotations

import csv
import html
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograder.preprocessors.regions import SOLUTION, replace_regions
from autograder.session import REPO_ROOT, CourseLayout, open_gradebook
from tests.autograder.toy_lab import TOY_POINTS

# The toy class's students, one per case that matters.
SOLVED, BLANK, WRONG, NOT_JSON, MISSING, SHADOW, DELETED = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace")
GRADED = (SOLVED, BLANK, WRONG, SHADOW, DELETED)
NOT_GRADED = (NOT_JSON, MISSING)
TOY_MAX = sum(TOY_POINTS.values())


def run_cli(*args: str, root: Path) -> subprocess.CompletedProcess:
    """``python -m autograder ARGS --root ROOT`` from the repository, as `make` runs it, but
    with this environment's bin NOT on PATH: the tool must find `alembic` by itself."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir)
    return subprocess.run(
        [sys.executable, "-m", "autograder", *args, "--root", str(root)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def gradebook_grades(layout: CourseLayout, lab: str) -> dict[tuple[str, str], tuple]:
    """(student, grade_id) -> (score, max_score, auto_score, manual_score), straight from
    nbgrader's gradebook."""
    grades = {}
    with open_gradebook(layout) as gradebook:
        for submission in gradebook.find_assignment(lab).submissions:
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    grades[(submission.student_id, grade.name)] = (
                        float(grade.score), float(grade.max_score),
                        grade.auto_score, grade.manual_score,
                    )
    return grades


def gradebook_totals(layout: CourseLayout, lab: str) -> dict[str, float]:
    with open_gradebook(layout) as gradebook:
        return {s.student_id: float(s.score) for s in gradebook.find_assignment(lab).submissions}


def page_text(path: Path) -> str:
    """What a browser shows of an HTML page: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def break_function(source: Path, function: str, replacement: str, dest: Path) -> None:
    """Copy notebook ``source`` to ``dest`` with the solution region of ``def function(``
    replaced by ``replacement``."""
    notebook = nbformat.read(str(source), as_version=4)
    cells = [c for c in notebook.cells if f"def {function}(" in c.source
             and c.metadata.get("nbgrader", {}).get("solution")]
    assert len(cells) == 1, f"expected one solution cell defining {function}"
    cells[0].source = replace_regions(cells[0].source, SOLUTION, replacement)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(dest))


def submit(submissions: Path, student: str, lab: str, notebook: Path) -> Path:
    folder = submissions / student / lab
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(notebook, folder / notebook.name))


@dataclass(frozen=True)
class ClassRun:
    layout: CourseLayout
    lab: str
    submissions: Path
    out: Path
    process: subprocess.CompletedProcess | None = None


def autograded_test_cells(source: Path) -> dict[str, str]:
    """grade_id -> source of notebook ``source``'s autograded test cells (graded code cells
    that are not solutions)."""
    cells = {}
    for cell in nbformat.read(str(source), as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
            cells[meta["grade_id"]] = cell.source
    return cells


def grade_lab_class(root: Path, lab: str, source: Path,
                    broken: dict[str, tuple[str, str]]) -> CourseLayout:
    """Release ``lab`` (``source``'s folder copied to ``root``) and grade a class: SOLVED submits
    ``source``, BLANK the released notebook, and each student of ``broken`` the solution with
    ``function``'s solution region replaced by ``replacement`` (``{student: (function,
    replacement)}``). Asserts every submission was graded; returns the course layout."""
    from autograder.commands.autograde import autograde
    from autograder.commands.release import release

    shutil.copytree(source.parent, root / "solutions" / lab)
    layout = CourseLayout.from_config(root=root)
    released = release([lab], layout)[lab]
    subs = root / "submissions"
    submit(subs, SOLVED, lab, source)
    submit(subs, BLANK, lab, next(p for p in released if p.suffix == ".ipynb"))
    for student, (function, replacement) in broken.items():
        break_function(source, function, replacement, subs / student / lab / source.name)
    report = autograde(lab, subs, root / "out", layout)
    assert not report.failed, report.summary()
    return layout
