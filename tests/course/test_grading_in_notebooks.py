"""What a student sees when a visible check fails in a notebook: the message, no library frames.

A notebook with a failing ``course.grading.check`` runs in a real kernel (nbclient, as
nbgrader's Validate and the grader run it); the error output's ``traceback`` (what JupyterLab,
Validate and the feedback page show) must be the one line ``Mismatch: <message>``, while the
exception stays a ``Mismatch`` (an AssertionError, which nbgrader and the grader count as a
failed test) and plain Python still prints the whole traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from course.grading import Mismatch, dumps

ROOT = Path(__file__).resolve().parents[2]
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


# --------------------------------------------- `make check` from any folder of the checkout
LABS = sorted(p.parent.name for p in (ROOT / "labs").glob("*/*.ipynb"))


def _course_check(cwd: Path, *args: str) -> tuple[int, str, str]:
    """``course-check --print ARGS`` run in ``cwd`` (in this process): (exit status, stdout,
    stderr); stdout is the make command it would run."""
    from course.grading.course_check import main

    previous = Path.cwd()
    out, err = io.StringIO(), io.StringIO()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["--print", *args])
    finally:
        os.chdir(previous)
    return status, out.getvalue(), err.getvalue()


def _checked(run: tuple[int, str, str]) -> str:
    """The NB= of the make command a ``--print`` run printed."""
    status, out, err = run
    assert status == 0, err
    words = out.split()
    assert words[:5] == ["make", "--no-print-directory", "-C", str(ROOT), "check"], out
    return words[5].removeprefix("NB=")


@pytest.mark.skipif(not LABS, reason="no released lab in labs/")
def test_course_check_finds_the_lab_of_the_folder_it_runs_in():
    lab = LABS[0]
    notebook = ROOT / "labs" / lab / f"{lab}.ipynb"
    assert _checked(_course_check(ROOT / "labs" / lab)) == str(notebook)
    assert _checked(_course_check(ROOT / "solutions" / lab)) == str(
        ROOT / "solutions" / lab / f"{lab}.ipynb")
    # From labs/ (where JupyterLab's terminal opens) and the root: a lab's name, or the path
    # the notebooks print (relative to the root), or one relative to the folder.
    assert _checked(_course_check(ROOT / "labs", lab)) == str(notebook)
    assert _checked(_course_check(ROOT / "labs", f"labs/{lab}/{lab}.ipynb")) == str(notebook)
    assert _checked(_course_check(ROOT / "labs", f"{lab}/{lab}.ipynb")) == str(notebook)
    assert _checked(_course_check(ROOT, lab)) == str(notebook)


@pytest.mark.skipif(not LABS, reason="no released lab in labs/")
def test_course_check_runs_as_a_command_in_a_lab_folder():
    lab = LABS[0]
    run = subprocess.run([sys.executable, "-m", "course.grading.course_check", "--print"],
                         cwd=ROOT / "labs" / lab, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == f"NB={ROOT / 'labs' / lab / f'{lab}.ipynb'}"


def test_course_check_says_what_it_cannot_find():
    status, _, err = _course_check(ROOT / "labs")
    assert status == 2 and "which notebook?" in err
    assert all(lab in err for lab in LABS)
    status, _, err = _course_check(ROOT / "labs", "lab99_no_such_lab")
    assert status == 2 and "no lab 'lab99_no_such_lab'" in err
    status, _, err = _course_check(ROOT, "labs/nothing.ipynb")
    assert status == 2 and "no notebook labs/nothing.ipynb" in err


def test_course_check_outside_the_checkout_uses_the_installed_one(tmp_path):
    from course.grading.course_check import NotFound, find_notebook, find_root

    assert find_root(tmp_path) == ROOT  # the checkout this library was imported from
    with pytest.raises(NotFound, match="which notebook"):
        find_notebook(ROOT, tmp_path)
    lab = tmp_path / "labs" / "lab01_x"  # JupyterLab's checkpoint copies are not the lab
    (lab / ".ipynb_checkpoints").mkdir(parents=True)
    (lab / "lab01_x.ipynb").write_text("{}")
    (lab / ".ipynb_checkpoints" / "lab01_x-checkpoint.ipynb").write_text("{}")
    assert find_notebook(tmp_path, lab / ".ipynb_checkpoints") == lab / "lab01_x.ipynb"
    (tmp_path / "a.ipynb").write_text("{}")
    (tmp_path / "b.ipynb").write_text("{}")
    with pytest.raises(NotFound, match="several notebooks"):
        find_notebook(tmp_path.parent, tmp_path)


def test_course_check_is_a_console_script_of_the_package():
    from importlib.metadata import entry_points

    [script] = entry_points(group="console_scripts", name="course-check")
    assert script.value == "course.grading.course_check:main"


@pytest.mark.skipif(not LABS, reason="no released lab in labs/")
def test_make_check_from_labs_forwards_to_the_root():
    """labs/Makefile: `make check` in JupyterLab's terminal runs the root's target on the
    same notebook (make -n: printed, not run)."""
    lab = LABS[0]
    expected = {f"{lab}/{lab}.ipynb": str(ROOT / "labs" / lab / f"{lab}.ipynb"),  # from labs/
                f"labs/{lab}/{lab}.ipynb": f"labs/{lab}/{lab}.ipynb"}  # from the root
    for nb, checked in expected.items():
        run = subprocess.run(["make", "-n", "check", f"NB={nb}"], cwd=ROOT / "labs",
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "No rule to make target" not in run.stderr
        [grade] = [line for line in run.stdout.splitlines() if "-m autograder check" in line]
        assert grade.split()[-1] == f'"{checked}"'


def test_course_check_and_labs_makefile_really_run_the_root_target(tmp_path):
    """Not just printed: both reach `python -m autograder check` through the root's Makefile,
    which answers for a notebook of no lab (quickly, before any grading) with exit status 2."""
    import nbformat
    from nbformat.v4 import new_notebook

    stray = tmp_path / "stray.ipynb"
    nbformat.write(new_notebook(), str(stray))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in ([sys.executable, "-m", "course.grading.course_check", str(stray)],
                    ["make", "--no-print-directory", "check", f"NB={stray}"]):
        run = subprocess.run(command, cwd=ROOT / "labs", capture_output=True, text=True,
                             timeout=600, env=env)
        assert run.returncode == 2, run.stdout + run.stderr
        assert "cannot tell which lab" in run.stderr and str(stray) in run.stderr, run.stderr
