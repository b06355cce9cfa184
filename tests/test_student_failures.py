"""What a student sees when a visible check fails in a notebook: the message, no library frames.

A notebook with a failing ``course.grading.check`` runs in a real kernel (nbclient, as
nbgrader's Validate and the grader run it); the error output's ``traceback`` (what JupyterLab,
Validate and the feedback page show) must be the one line ``Mismatch: <message>``, while the
exception stays a ``Mismatch`` (an AssertionError, which nbgrader and the grader count as a
failed test) and plain Python still prints the whole traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from course.grading import Mismatch, dumps

ROOT = Path(__file__).resolve().parents[1]
LAB = "student_failures_lab"
CASES = {"double": [{"call": "double(3)", "label": "a small int", "kind": "float", "args": [3],
                     "kwargs": {}, "expected": 6.0}]}
WRONG_MESSAGE = ("double: 1 of 1 visible checks failed. double(3) [a small int]: expected 6, "
                 "got 9")


def test_mismatch_stays_an_assertion_error_with_its_message():
    error = Mismatch("quantize: 1 of 4 visible checks failed")
    assert isinstance(error, AssertionError)
    assert str(error) == "quantize: 1 of 4 visible checks failed"
    assert error._render_traceback_() == ["Mismatch: quantize: 1 of 4 visible checks failed"]


def test_plain_python_still_prints_the_full_traceback(tmp_path):
    (tmp_path / "references.json").write_bytes(dumps({"lab": LAB, "cases": CASES}))
    script = textwrap.dedent(f"""
        from course.grading import check
        check({LAB!r}, "double", lambda x: x * 3)
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr
    assert str(Path("course") / "grading" / "__init__.py") in run.stderr
    assert run.stderr.rstrip().endswith(f"Mismatch: {WRONG_MESSAGE}")


def _execute(tmp_path: Path, cells: list[str]):
    """Run ``cells`` in a fresh kernel in ``tmp_path`` (which holds the lab's references) and
    return the executed notebook; errors are kept as outputs."""
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    (tmp_path / "references.json").write_bytes(dumps({"lab": LAB, "cases": CASES}))
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nbformat.from_dict(notebook)


def _errors(cell) -> list[dict]:
    return [o for o in cell.outputs if o.output_type == "error"]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.slow
def test_a_failed_check_shows_only_its_message_in_a_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's library
    notebook = _execute(tmp_path, [
        "from course.grading import check",
        "def double(x):\n    return x * 3",
        f"check({LAB!r}, 'double', double)",
        "def double(x):\n    return x * 2",
        f"check({LAB!r}, 'double', double)",
        "assert 1 + 1 == 3, 'an ordinary failing assert'",
    ])
    failed, passed, ordinary = notebook.cells[2], notebook.cells[4], notebook.cells[5]

    [error] = _errors(failed)
    assert error.ename == "Mismatch"  # what nbgrader and the grader read
    assert error.evalue == WRONG_MESSAGE
    assert error.traceback == [f"Mismatch: {WRONG_MESSAGE}"]
    assert not any("course/grading" in line or "__init__.py" in line
                   for line in error.traceback)

    assert _errors(passed) == []
    assert _text(passed) == "double: all 1 visible checks passed\n"

    # Any other error keeps IPython's usual traceback, frames and all.
    [other] = _errors(ordinary)
    assert other.ename == "AssertionError" and len(other.traceback) > 1

