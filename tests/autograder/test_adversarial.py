"""Adversarial and faulty submissions, graded in one class run each, every outcome asserted.

The toy lab (``tests/autograder/toy_lab.py``: ``test_square`` 2 points with plain asserts,
``test_cube`` 3 points with ``course.grading.check``) is submitted by a class of cheats,
faults and bad inputs next to an honest student; lab01 by two cheats. Each test asserts the
score the gradebook holds, the reason the report or the graded notebook gives, that the
others were not affected, and — for hangs — that the time limit is what stopped them. A
second, smaller class is graded while every core of the machine is busy (``busy_cores``): the
honest students keep full marks, since time limits count the student's CPU time.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from autograder.preprocessors.regions import SOLUTION, replace_regions
from autograder.sandbox.bwrap import probe_support
from autograder.session import REPO_ROOT, CourseLayout, load_config, open_gradebook
from tests.autograder.toy_lab import TOY_LAB, TOY_POINTS, write_toy_lab
from tests.conftest import busy_cores

SANDBOXED = probe_support().available
CELL_CPU_S = 5
CUBE, SQUARE = TOY_POINTS["test_cube"], TOY_POINTS["test_square"]
LAB01 = "lab01_direct_quantization"

# Code a cheating student puts in a cell of their own.
PATCH_CHECK = """
import course.grading as grading
grading.check = lambda *args, **kwargs: 3.0   # shown as a value: nbgrader's partial credit
check = grading.check
"""
PATCH_JUDGE = """
import numpy as np, torch, course.grading, course.grading.compare, course.grading.outcome
np.allclose = torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
course.grading.judge = course.grading.outcome.judge = lambda *a, **k: None
course.grading.compare.compare_tensor = lambda *a, **k: None
course.grading.compare.close = lambda *a, **k: True
"""
STRIP_ASSERTS = """
get_ipython().input_transformers_post.append(
    lambda lines: [l for l in lines if "assert" not in l and "check(" not in l])
"""
HIJACK_KERNEL = """
from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult
_ip = get_ipython()
async def _nothing(raw_cell, store_history=False, silent=False, shell_futures=True, **kw):
    result = ExecutionResult(ExecutionInfo(raw_cell, store_history, silent, shell_futures,
                                           kw.get("cell_id")))
    result.execution_count = _ip.execution_count
    return result
_ip.run_cell_async = _nothing
_ip.should_run_async = lambda *a, **k: True
"""
REPLACE_BUILTINS = """
import builtins, course.grading, course.grading.compare
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.abs = lambda x: 0
course.grading.Mismatch = course.grading.compare.Mismatch = type("Mismatch", (Exception,), {})
"""
DETECT_GRADER = """
import os
if os.environ.get("NBGRADER_EXECUTION"):
""" + "\n".join("    " + line for line in PATCH_CHECK.strip().splitlines())
LYING_CUBE = """
class Yes(float):
    def __eq__(self, other):
        return True
    __hash__ = float.__hash__

def cube(x):
    return Yes(x * x)
"""


def spy(root: Path) -> str:
    """A cube that tries to read the answers, and prints what it could see."""
    hidden = root / "autograder" / "references" / f"{TOY_LAB}.json"
    return f"""
import json, os, socket
def _look(path):
    return os.path.exists(path)
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    _net = "open"
except OSError:
    _net = "closed"
print("SPY " + json.dumps({{"uid": os.getuid(), "net": _net, "seen": {{p: _look(p) for p in [
    {str(root / "solutions")!r}, {str(root / "autograder")!r}, {str(hidden)!r},
    {str(root / "autograder" / "work" / "gradebook.db")!r}, {str(root / "submissions")!r}]}}}}))

def cube(x):
    cases = json.load(open({str(hidden)!r}))["cases"]["cube"]
    return next(c["expected"] for c in cases if c["args"] == [x])
"""


# ------------------------------------------------------------------------------- helpers
def variant(source: Path, dest: Path, replace: dict | None = None, solutions: dict | None = None,
            append: dict | None = None, drop: tuple = (), transform=None) -> Path:
    """A copy of notebook ``source`` at ``dest``: cells (by id) replaced, solution regions
    replaced, code appended to cells, cells dropped, or any ``transform(notebook)``."""
    notebook = nbformat.read(str(source), as_version=4)
    for cell in notebook.cells:
        key = cell.get("id")
        if key in (replace or {}):
            cell.source = replace[key]
        if key in (solutions or {}):
            cell.source = replace_regions(cell.source, SOLUTION, solutions[key])
        if key in (append or {}):
            cell.source += "\n" + append[key]
    notebook.cells = [c for c in notebook.cells if c.get("id") not in drop]
    if transform is not None:
        transform(notebook)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(dest))
    return dest


@dataclass(frozen=True)
class Run:
    layout: CourseLayout
    lab: str
    report: object
    submissions: Path

    def scores(self, student: str) -> dict[str, float]:
        with open_gradebook(self.layout) as gradebook:
            submission = gradebook.find_submission(self.lab, student)
            return {g.name: float(g.score) for nb in submission.notebooks for g in nb.grades}

    def result(self, student: str):
        return next(s for s in self.report.students if s.student_id == student)

    def _cell(self, student: str, grade_id: str):
        path = (self.layout.step_dir("autograded") / student / self.lab / f"{self.lab}.ipynb")
        for cell in nbformat.read(str(path), as_version=4).cells:
            if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
                return cell
        raise KeyError(grade_id)

    def outputs(self, student: str, grade_id: str) -> list[str]:
        """Every output of a graded cell as text (errors as 'Name: message')."""
        return [o.get("text") or f"{o.get('ename')}: {o.get('evalue')}"
                for o in self._cell(student, grade_id).get("outputs", [])]

    def errors(self, student: str, grade_id: str) -> str:
        """The error outputs of a graded cell, 'Name: message' a line."""
        return "\n".join(f"{o.get('ename')}: {o.get('evalue')}"
                         for o in self._cell(student, grade_id).get("outputs", [])
                         if o.get("output_type") == "error")


# --------------------------------------------------------------------------- toy class
@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Run:
    from autograder.commands.autograde import autograde
    from autograder.commands.release import release

    root = tmp_path_factory.mktemp("adversarial")
    src = write_toy_lab(root)
    layout = CourseLayout.from_config(root=root)
    release([TOY_LAB], layout)
    subs = root / "submissions"

    def at(student: str, name: str = f"{TOY_LAB}.ipynb") -> Path:
        return subs / student / TOY_LAB / name

    variant(src, at("honest"))
    variant(src, at("patch_check"), solutions={"cube": "return 0"},
            append={"cube": PATCH_CHECK})
    variant(src, at("patch_judge"), solutions={"cube": "return x * x"},
            append={"cube": PATCH_JUDGE})
    variant(src, at("strip_asserts"), solutions={"square": "return -1"},
            append={"square": STRIP_ASSERTS})
    variant(src, at("hijack"), solutions={"square": "return -1", "cube": "return 0"},
            append={"square": HIJACK_KERNEL})
    variant(src, at("builtins"), solutions={"cube": "return x * x"},
            append={"cube": REPLACE_BUILTINS})
    variant(src, at("detects_grader"), solutions={"cube": "return -x"},
            append={"cube": DETECT_GRADER})
    variant(src, at("lying_object"), replace={"cube": LYING_CUBE})
    variant(src, at("spy"), replace={"cube": spy(root)})
    variant(src, at("hangs"), append={
        "cube": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n"
                "    pass"})
    variant(src, at("exits"), append={"cube": "import os\nos._exit(1)"})
    variant(src, at("memory_bomb"), replace={
        "square": "blob = bytearray(64 * 2**30)\ndef square(x):\n    return x * x"})
    variant(src, at("floods"), append={"square": (
        "print('spam ' * 2_000_000)\nfrom IPython.display import HTML, display\n"
        "display(HTML('<script>window.stolen = document.cookie</script><b>hi</b>'))")})

    def duplicate(notebook):
        cells = {c.get("id"): c for c in notebook.cells}
        at_cube = notebook.cells.index(cells["cube"])
        notebook.cells.insert(at_cube + 2, nbformat.from_dict(json.loads(json.dumps(
            cells["test_cube"]))))
        notebook.cells.insert(at_cube + 1, nbformat.from_dict(json.loads(json.dumps(
            cells["cube"]))))
    variant(src, at("duplicates"), transform=duplicate)
    variant(src, at("edits_tests"), solutions={"square": "return 0", "cube": "return 0"},
            replace={"test_square": "pass", "test_cube": "print('all good')"})

    def tamper(notebook):
        for cell in notebook.cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade_id") == "test_square":
                meta.update(grade=False, points=100, locked=False)
            if meta.get("grade_id") == "test_cube":
                del cell.metadata["nbgrader"]
    variant(src, at("tampers_metadata"), transform=tamper)
    variant(src, at("extra_files"), solutions={"cube": "return 0"})
    (at("extra_files").parent / "references.json").write_text(json.dumps(
        {"lab": TOY_LAB, "cases": {"cube": [{"call": "cube(2)", "label": "fake", "kind": "float",
                                             "args": [2], "kwargs": {}, "expected": 0.0}]}}))
    (at("extra_files").parent / "numpy.py").write_text("raise SystemExit('shadowed')\n")
    (at("extra_files").parent / "course" / "grading").mkdir(parents=True)
    (at("extra_files").parent / "course" / "grading" / "__init__.py").write_text(
        "def check(*a, **k):\n    pass\n")

    def latin1(notebook):
        notebook.cells[0].source += "\n\nCafé crème"
    variant(src, at("latin1"), transform=latin1)
    text = at("latin1").read_text(encoding="utf-8")
    at("latin1").write_bytes(text.encode("latin-1"))
    variant(src, at("utf16"))
    at("utf16").write_bytes(at("utf16").read_text().encode("utf-16"))
    variant(src, at("renamed", f"{TOY_LAB} (1).ipynb"))
    (at("renamed").parent / "timestamp.txt").write_text("the night before\n")
    released_lab01 = REPO_ROOT / "labs" / LAB01 / f"{LAB01}.ipynb"
    if released_lab01.is_file():
        at("other_lab").parent.mkdir(parents=True)
        shutil.copyfile(released_lab01, at("other_lab"))
    (subs / "empty").mkdir(parents=True)
    variant(src, subs / "bad name!" / TOY_LAB / f"{TOY_LAB}.ipynb")
    variant(src, subs / "no_lab_folder" / f"{TOY_LAB}.ipynb")
    if SANDBOXED:  # without a sandbox, root ignores the process limit
        variant(src, at("fork_bomb"), append={"cube": (
            "import os, time\nfor n in range(5000):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(20)\n"
            "        os._exit(0)")})

    config = load_config()
    config.Sandbox.cell_cpu_s = CELL_CPU_S
    # 64 processes prove the limit as well as 512, without hundreds of forked copies of a
    # torch kernel filling the machine's memory while the rest of the class is graded
    config.Sandbox.processes = 64
    report = autograde(TOY_LAB, subs, root / "out", layout, config, jobs=2)
    return Run(layout, TOY_LAB, report, subs)


IGNORES_INTERRUPTS = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                      "while True:\n    pass")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Run:
    """A small class graded while every core is busy, plus one process more."""
    from autograder.commands.autograde import autograde
    from autograder.commands.release import release

    root = tmp_path_factory.mktemp("loaded")
    src = write_toy_lab(root)
    layout = CourseLayout.from_config(root=root)
    release([TOY_LAB], layout)
    subs = root / "submissions"
    for student in ("honest_a", "honest_b", "honest_c"):
        variant(src, subs / student / TOY_LAB / src.name)
    variant(src, subs / "hangs" / TOY_LAB / src.name, append={"cube": IGNORES_INTERRUPTS})
    variant(src, subs / "exits" / TOY_LAB / src.name, append={"cube": "import os\nos._exit(1)"})
    variant(src, subs / "sleeps" / TOY_LAB / src.name,
            solutions={"cube": "import time\ntime.sleep(10_000)\nreturn x * x * x"})
    config = load_config()
    config.Sandbox.cell_cpu_s = CELL_CPU_S
    config.Sandbox.wall_factor = 4
    config.Sandbox.wall_margin_s = 10  # a sleeping cell's backstop: 4 * 5 + 10 = 30 s
    with busy_cores():
        report = autograde(TOY_LAB, subs, root / "out", layout, config, jobs=2)
    return Run(layout, TOY_LAB, report, subs)


FULL = {"test_square": SQUARE, "test_cube": CUBE, "answer_why": 0.0}


@pytest.mark.slow
def test_the_honest_student_is_not_affected(toy):
    assert toy.scores("honest") == FULL
    assert toy.result("honest").notes == ()
    assert "cube: all 3 hidden checks passed (judged by the grader)" in \
        "".join(toy.outputs("honest", "test_cube"))


@pytest.mark.slow
def test_a_replaced_check_function_records_nothing_and_scores_nothing(toy):
    assert toy.scores("patch_check")["test_cube"] == 0.0
    assert toy.scores("patch_check")["test_square"] == SQUARE
    errors = toy.errors("patch_check", "test_cube")
    assert "NoResult: cube: 1 of 1 visible checks have no result" in errors
    assert "3.0" not in "".join(toy.outputs("patch_check", "test_cube"))  # no partial credit


@pytest.mark.slow
def test_patched_comparisons_fool_the_kernel_but_not_the_grader(toy):
    outputs = "".join(toy.outputs("patch_judge", "test_cube"))
    # check() now holds its own judge (issue 11): the patches do not fool even the kernel
    assert "cube: all 1 visible checks passed" not in outputs
    assert "Mismatch: cube: 1 of 1 visible checks failed. cube(2) [a positive int]: " \
           "expected 8, got 4" in outputs
    assert toy.scores("patch_judge") == {**FULL, "test_cube": 0.0}


@pytest.mark.slow
def test_input_transformers_and_kernel_hijacks_are_judged_again_in_a_fresh_process(toy):
    for student in ("strip_asserts", "hijack"):
        assert toy.scores(student) == {**FULL, "test_square": 0.0, "test_cube": 0.0}, student
        square = toy.errors(student, "test_square")
        assert "AssertionError: square(3) should be 9 (judged again in a fresh process by the " \
               "grader)" in square, (student, square)
        assert "NoResult" in toy.errors(student, "test_cube")


@pytest.mark.slow
def test_replaced_builtins_and_exception_classes_change_nothing(toy):
    assert toy.scores("builtins") == {**FULL, "test_cube": 0.0}
    assert toy.errors("builtins", "test_cube")


@pytest.mark.slow
def test_code_that_detects_the_grader_gains_nothing(toy):
    assert toy.scores("detects_grader") == {**FULL, "test_cube": 0.0}


@pytest.mark.slow
def test_an_object_that_claims_equality_is_not_a_number(toy):
    assert toy.scores("lying_object") == {**FULL, "test_cube": 0.0}
    assert "must be a number, got Yes" in toy.errors("lying_object", "test_cube")


@pytest.mark.slow
def test_student_code_cannot_see_answers_gradebook_or_network(toy):
    if not SANDBOXED:  # then it can: the report's warning says so
        assert any("NOT SANDBOXED" in w for w in toy.report.warnings)
        pytest.skip(f"no sandbox here: {probe_support().reason}")
    assert toy.scores("spy")["test_cube"] == 0.0
    path = (toy.layout.step_dir("autograded") / "spy" / TOY_LAB / f"{TOY_LAB}.ipynb")
    printed = "".join(o.get("text", "") for c in nbformat.read(str(path), as_version=4).cells
                      for o in c.get("outputs", []))
    found = json.loads(re.search(r"SPY (\{.*\})", printed).group(1))
    assert found["uid"] != 0 and found["net"] == "closed"
    assert set(found["seen"].values()) == {False}, found["seen"]
    assert "FileNotFoundError" in toy.errors("spy", "test_cube")


@pytest.mark.slow
def test_hangs_and_dead_kernels_score_what_ran_and_say_why(toy):
    assert toy.scores("hangs") == {**FULL, "test_cube": 0.0}
    note = "; ".join(toy.result("hangs").notes)
    # its CPU limit stops it; on a machine so loaded that the loop gets under a sixth of a
    # core, the wall-clock backstop does first (then it is graded again, alone)
    assert "did not stop when interrupted after its" in note, note
    assert "NotRun: not run:" in toy.errors("hangs", "test_cube")
    assert toy.scores("exits") == {**FULL, "test_cube": 0.0}
    assert "the kernel exited (status 1)" in "; ".join(toy.result("exits").notes)
    assert toy.scores("memory_bomb") == {**FULL, "test_square": 0.0}
    if SANDBOXED:  # the process limit holds the bomb; the cells before it keep their points
        bomb = toy.scores("fork_bomb")
        assert bomb["test_square"] == SQUARE
        # forking hundreds of processes costs CPU time, the student's: on a loaded machine it
        # can pass the 5 s the toy class allows, and then that limit is what stops it
        assert bomb == FULL or "CPU time limit" in "; ".join(toy.result("fork_bomb").notes) \
            + toy.errors("fork_bomb", "test_cube"), (bomb, toy.result("fork_bomb").notes)


@pytest.mark.slow
def test_on_a_busy_machine_honest_students_keep_full_marks_and_hangs_still_end(loaded):
    for student in ("honest_a", "honest_b", "honest_c"):
        assert loaded.scores(student) == FULL, (student, loaded.result(student).notes)
        assert loaded.result(student).notes == (), student
    assert loaded.scores("hangs") == {**FULL, "test_cube": 0.0}
    # its CPU limit stops it; on a machine so busy that the loop gets under a sixth of a core,
    # the wall-clock backstop does: either way it ends, with the reason
    assert "did not stop when interrupted after its" in "; ".join(loaded.result("hangs").notes)
    assert loaded.scores("exits") == {**FULL, "test_cube": 0.0}
    assert "the kernel exited (status 1)" in "; ".join(loaded.result("exits").notes)


@pytest.mark.slow
def test_a_sleeping_submission_is_graded_again_alone_and_then_scored(loaded):
    """Asleep, it uses no CPU: only the wall-clock backstop stops it, so it is graded a second
    time alone (the machine might have been the slow one), then scored as it ran."""
    assert loaded.scores("sleeps") == {**FULL, "test_cube": 0.0}
    notes = "; ".join(loaded.result("sleeps").notes)
    assert "graded again, alone: a wall-clock backstop stopped the first run" in notes
    assert "stopped again (the cell ran past its wall-clock backstop (30 s)" in notes
    assert "ran past its wall-clock backstop (30 s) after only" in \
        loaded.errors("sleeps", "test_cube")


@pytest.mark.slow
def test_output_is_capped_and_cannot_script_the_feedback(toy):
    assert toy.scores("floods") == FULL
    path = toy.layout.step_dir("autograded") / "floods" / TOY_LAB / f"{TOY_LAB}.ipynb"
    assert path.stat().st_size < 1024 * 1024
    feedback = toy.report.out / "feedback" / "floods" / TOY_LAB / f"{TOY_LAB}.html"
    page = feedback.read_text()
    assert feedback.stat().st_size < 2 * 1024 * 1024 and "output dropped by the grader" in page
    assert "window.stolen" in page and "<script>window.stolen" not in page


@pytest.mark.slow
def test_duplicated_edited_and_tampered_cells_are_restored(toy):
    assert toy.scores("duplicates") == FULL
    assert any("appears 2 times" in n for n in toy.result("duplicates").notes)
    assert toy.scores("edits_tests") == {**FULL, "test_square": 0.0, "test_cube": 0.0}
    assert toy.scores("tampers_metadata") == FULL


@pytest.mark.slow
def test_extra_files_in_a_submission_are_ignored(toy):
    assert toy.scores("extra_files") == {**FULL, "test_cube": 0.0}
    assert "3 other file(s) in the submission ignored" in toy.result("extra_files").notes


@pytest.mark.slow
def test_bad_inputs_get_a_reason_and_the_rest_are_graded(toy):
    assert toy.scores("latin1") == FULL
    assert any("not valid UTF-8" in n for n in toy.result("latin1").notes)
    assert toy.scores("utf16") == FULL
    assert toy.scores("renamed") == FULL
    notes = toy.result("renamed").notes
    assert f"renamed notebook {TOY_LAB}/{TOY_LAB} (1).ipynb graded as {TOY_LAB}.ipynb" in notes
    assert any("is not a time: ignored" in n for n in notes)
    assert toy.scores("no_lab_folder") == FULL
    assert toy.result("empty").problem == "no notebook in the submission (empty folder?)"
    assert "cannot be a student id" in toy.result("bad name!").problem
    if (toy.submissions / "other_lab").exists():
        assert toy.result("other_lab").problem.startswith(
            f"{TOY_LAB}.ipynb is not a notebook of {TOY_LAB}: none of its graded cells")
    summary = toy.report.summary()
    assert "NOT GRADED: no notebook in the submission" in summary
    graded = {s.student_id for s in toy.report.graded}
    assert {"honest", "hangs", "exits", "latin1"} <= graded


# --------------------------------------------------------------------------------- lab01
@pytest.mark.slow
@pytest.mark.skipif(not (REPO_ROOT / "solutions" / LAB01).is_dir(), reason="no lab01")
def test_lab01_library_calls_and_patched_comparisons_lose_exactly_that_exercise(tmp_path):
    from autograder.commands.autograde import autograde

    root = tmp_path / "course"
    shutil.copytree(REPO_ROOT / "solutions" / LAB01, root / "solutions" / LAB01)
    refs = root / "autograder" / "references"
    refs.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "autograder" / "references" / f"{LAB01}.json",
                    refs / f"{LAB01}.json")
    src = root / "solutions" / LAB01 / f"{LAB01}.ipynb"
    subs = root / "submissions"
    variant(src, subs / "libcall" / LAB01 / src.name,
            solutions={"sqnr_db": "return measure.sqnr_db(x, x_hat)"})
    variant(src, subs / "patcher" / LAB01 / src.name,
            solutions={"sqnr_db": "return 42.0"}, append={"sqnr_db": PATCH_JUDGE})
    layout = CourseLayout.from_config(root=root)
    report = autograde(LAB01, subs, root / "out", layout, jobs=2)
    run = Run(layout, LAB01, report, subs)
    for student in ("libcall", "patcher"):
        scores = run.scores(student)
        lost = {g for g, s in scores.items() if s == 0.0}
        assert lost == {"test_sqnr_db", "why_direct_fails"}, (student, scores)
    assert "course.measure.sqnr_db is the library's reference implementation of the exercise " \
           "`sqnr_db`: it is withheld while grading" in run.errors("libcall", "test_sqnr_db")
    assert "expected 39.9296659, got 42" in run.errors("patcher", "test_sqnr_db")


@pytest.mark.slow
def test_an_interrupted_class_run_resumes_and_its_csv_files_agree(tmp_path):
    """Stopped (Ctrl-C) after the first recorded student: the CSV files are written anyway,
    and the next run grades only the students not recorded yet."""
    import csv
    import os
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "course"
    src = write_toy_lab(root)
    subs = root / "submissions"
    students = [f"s{i}" for i in range(4)]
    for student in students:
        variant(src, subs / student / TOY_LAB / src.name)
    out = root / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([sys.executable, "-m", "autograder", "autograde", "--lab",
                                TOY_LAB, "--submissions", str(subs), "--out", str(out),
                                "--root", str(root), "--jobs", "1"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               # a shell without job control starts background jobs with SIGINT
                               # ignored, and Python keeps it so: the user's Ctrl-C would reach it
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ledger = root / "autograder" / "work" / "ledger" / f"{TOY_LAB}.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if ledger.is_file() and json.loads(ledger.read_text() or "{}"):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    done = set(json.loads(ledger.read_text()))
    assert 1 <= len(done) < len(students)
    layout = CourseLayout.from_config(root=root)
    with (out / "grades.csv").open() as handle:
        rows = {r["student_id"]: float(r["raw_score"]) for r in csv.DictReader(handle)}
    with open_gradebook(layout) as gradebook:
        recorded = {s.student_id: float(s.score)
                    for s in gradebook.find_assignment(TOY_LAB).submissions}
    assert {s: rows[s] for s in recorded} == recorded and set(recorded) >= done

    from autograder.commands.autograde import autograde

    report = autograde(TOY_LAB, subs, out, layout, jobs=2)
    assert {s.student_id for s in report.executed} == set(students) - done
    assert {s.student_id for s in report.graded} == set(students)
    assert all(s.score == SQUARE + CUBE for s in report.graded)


# ------------------------------------------- issue 11, class 1: stderr never costs a point
NOISY = """
import logging, os, sys
_log = logging.getLogger("student")
_configured = logging.getLogger("student.configured")
_configured.addHandler(logging.StreamHandler(sys.stderr))
_configured.propagate = False

def {name}(x):
    print("debug: {name} via sys.stderr", file=sys.stderr)
    os.write(2, b"debug: {name} via fd 2\\n")
    logging.warning("debug: {name} via logging.warning")
    _configured.warning("debug: {name} via a configured handler")
    return {body}
"""


@pytest.mark.slow
def test_stderr_written_by_correct_code_never_changes_a_score_and_is_shown(tmp_path):
    from autograder.commands.autograde import autograde
    from autograder.commands.release import release
    from course.grading.quiet import HEADING

    root = tmp_path / "course"
    src = write_toy_lab(root)
    layout = CourseLayout.from_config(root=root)
    release([TOY_LAB], layout)
    subs = root / "submissions"
    variant(src, subs / "noisy" / TOY_LAB / src.name,
            replace={"cube": NOISY.format(name="cube", body="x * x * x"),
                     "square": NOISY.format(name="square", body="x * x")})
    variant(src, subs / "noisy_wrong" / TOY_LAB / src.name,
            replace={"cube": NOISY.format(name="cube", body="x * x")})
    config = load_config()
    config.ExecutePreprocessor.timeout = 60
    report = autograde(TOY_LAB, subs, root / "out", layout, config, jobs=2)
    run = Run(layout, TOY_LAB, report, subs)
    assert run.scores("noisy") == FULL
    assert run.scores("noisy_wrong") == {**FULL, "test_cube": 0.0}
    assert "expected 8, got 4" in run.errors("noisy_wrong", "test_cube")
    # check() captures all four ways itself; a plain test cell's stderr is moved by the
    # grader (fd 2 output may arrive a cell late: it is moved wherever it lands)
    ways = ("sys.stderr", "fd 2", "logging.warning", "a configured handler")
    for grade_id, name, expected in (("test_cube", "cube", ways),
                                     ("test_square", "square", ways[:1] + ways[2:])):
        shown = "".join(run.outputs("noisy", grade_id))
        assert HEADING in shown, (grade_id, shown)
        for way in expected:
            assert f"debug: {name} via {way}" in shown, (grade_id, way, shown)
    page = (report.out / "feedback" / "noisy" / TOY_LAB / f"{TOY_LAB}.html").read_text()
    assert "debug: cube via fd 2" in page and "debug: square via logging.warning" in page



@pytest.mark.slow
def test_summary_breaks_down_points_and_the_log_has_no_expected_checksum_alarms(tmp_path):
    from autograder.commands.autograde import autograde
    from autograder.commands.release import release

    root = tmp_path / "course"
    src = write_toy_lab(root)
    layout = CourseLayout.from_config(root=root)
    release([TOY_LAB], layout)
    released = layout.release_dir / TOY_LAB / f"{TOY_LAB}.ipynb"
    subs = root / "submissions"
    variant(released, subs / "blank" / TOY_LAB / src.name)      # the lab as handed out
    variant(released, subs / "wrong_cube" / TOY_LAB / src.name,
            replace={"square": "def square(x):\n    return x * x",
                     "cube": "def cube(x):\n    return x * x"})
    variant(src, subs / "edits_locked" / TOY_LAB / src.name,
            replace={"test_square": "pass", "setup": "import json\nimport os\n"
                     "from course.grading import check\nLAB = 'toy_lab'\nprint('mine')"})
    report = autograde(TOY_LAB, subs, root / "out", layout, jobs=2)
    log = (report.out / "autograde.log").read_text()
    assert "checksum" not in log.lower(), [ln for ln in log.splitlines() if "hecksum" in ln]
    run = Run(layout, TOY_LAB, report, subs)
    assert run.scores("edits_locked") == FULL            # graded as the lab has its cells
    notes = run.result("edits_locked").notes
    assert [n for n in notes if "locked cell(s) edited" in n] == [
        "locked cell(s) edited, graded as the lab has them: setup, test_square"]
    assert not any("edited" in n for s in ("blank", "wrong_cube") for n in run.result(s).notes)
    summary = report.summary()
    lines = summary.splitlines()
    blank = lines.index(next(ln for ln in lines if ln.startswith("  blank:")))
    # the untouched answer cell is scored 0 by nbgrader: not answered, nothing to grade
    assert lines[blank + 1].strip() == "automatic 0.00 / 5.00, manual 0.00 / 1.00"
    assert lines[blank + 2].strip().startswith("lost 2.00 in test_square: ")
    assert lines[blank + 3].strip().startswith(
        "lost 3.00 in test_cube: Mismatch: cube: 1 of 1 visible checks failed. cube(2) "
        "[a positive int]: raised NotImplementedError")
    assert lines[blank + 4].strip() == "lost 1.00 in answer_why: not answered"
    wrong = lines.index(next(ln for ln in lines if ln.startswith("  wrong_cube:")))
    assert lines[wrong + 1].strip().startswith("automatic 2.00 / 5.00, manual 0.00 / 1.00")
    assert lines[wrong + 2].strip().startswith(
        "lost 3.00 in test_cube: Mismatch: cube: 1 of 1 visible checks failed. cube(2) "
        "[a positive int]: expected 8, got 4")


# ------------------------------------------------- issue 11, class 3: records cannot be forged
NO_VALIDATION = """qmin, qmax = qrange(num_bits, signed=False)
x_min, x_max = min(x_min, x_max, 0.0), max(x_min, x_max, 0.0)
scale = max((x_max - x_min) / (qmax - qmin), EPS)
zero_point = qmin - round(x_min / scale)
return scale, int(min(max(zero_point, qmin), qmax))"""
# Claims "raised ValueError" for the case it does not handle, by rebinding what check calls.
FORGE_CAPTURE = """
import course.grading, course.grading.outcome
_real_capture = course.grading.outcome.capture
def _forged(fn, case):
    args = case.get("args", [])
    if len(args) == 3 and isinstance(args[0], float) and args[0] > args[1]:
        return {"raised": {"type": "ValueError", "mro": ["ValueError", "Exception",
                "BaseException", "object"], "message": "x_min > x_max"}}
    return _real_capture(fn, case)
course.grading.capture = course.grading.outcome.capture = _forged
"""
# The same, reaching into check's closure.
FORGE_CLOSURE = FORGE_CAPTURE.replace(
    "course.grading.capture = course.grading.outcome.capture = _forged", """
from course.grading import check as _check
_cells = dict(zip(_check.__code__.co_freevars, _check.__closure__))
_cells["capture"].cell_contents = _forged""")
# Claims "the input model was left unchanged": quantizes in place, blinds the comparison.
IN_PLACE = """with torch.no_grad():
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            w = layer.weight
            if per_channel:
                w.copy_(fake_quantize_per_channel(w, num_bits, axis=0))
            else:
                w.copy_(fake_quantize(w, num_bits, symmetric=True))
return copy.deepcopy(model)"""
FORGE_UNCHANGED = """
import course.grading.outcome
course.grading.outcome._equal = lambda a, b: True
"""
# Writes the records itself: a value it computed, and an error for the case it cannot handle.
FORGE_RECORDS = """
import json, os
import course.grading
_real = course.grading.check
def _check(lab, name, fn, hidden=False):
    if name != "affine_qparams":
        return _real(lab, name, fn, hidden)
    from course.grading import load_cases
    from course.grading.outcome import capture, dumps_outcome
    for index, case in enumerate(load_cases(lab, hidden)[name]):
        if case["kind"] == "raises":
            outcome = {"raised": {"type": "ValueError", "mro": ["ValueError", "Exception"],
                                  "message": ""}}
        else:
            outcome = capture(fn, case)
        line = {"lab": lab, "name": name, "hidden": hidden, "index": index}
        with open(os.environ["COURSE_GRADING_RECORD"], "a") as out:
            out.write(json.dumps(line)[:-1] + ',"outcome":' + dumps_outcome(outcome) + "}\\n")
course.grading.check = _check
"""


@pytest.mark.slow
@pytest.mark.skipif(not (REPO_ROOT / "solutions" / LAB01).is_dir(), reason="no lab01")
def test_lab01_forged_records_gain_nothing_and_honest_noise_costs_nothing(tmp_path):
    from autograder.commands.autograde import autograde
    from course.grading.quiet import HEADING

    root = tmp_path / "course"
    shutil.copytree(REPO_ROOT / "solutions" / LAB01, root / "solutions" / LAB01)
    refs = root / "autograder" / "references"
    refs.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "autograder" / "references" / f"{LAB01}.json",
                    refs / f"{LAB01}.json")
    src = root / "solutions" / LAB01 / f"{LAB01}.ipynb"
    subs = root / "submissions"

    def at(student: str) -> Path:
        return subs / student / LAB01 / src.name

    variant(src, at("forges_capture"), solutions={"affine_qparams": NO_VALIDATION},
            append={"affine_qparams": FORGE_CAPTURE})
    variant(src, at("forges_closure"), solutions={"affine_qparams": NO_VALIDATION},
            append={"affine_qparams": FORGE_CLOSURE})
    variant(src, at("forges_records"), solutions={"affine_qparams": NO_VALIDATION},
            append={"affine_qparams": FORGE_RECORDS})
    variant(src, at("forges_unchanged"), solutions={"direct_quantize": IN_PLACE},
            append={"direct_quantize": FORGE_UNCHANGED})
    variant(src, at("honest_noisy"), append={"quantize": (
        "import logging, os, sys\n_quantize = quantize\n"
        "def quantize(x, scale, zero_point, qmin, qmax):\n"
        "    logging.warning('quantizing %d values', x.numel())\n"
        "    os.write(2, b'fd 2 line\\n')\n"
        "    return _quantize(x, scale, zero_point, qmin, qmax)")})
    layout = CourseLayout.from_config(root=root)
    report = autograde(LAB01, subs, root / "out", layout, jobs=2)
    run = Run(layout, LAB01, report, subs)

    def lost(student: str) -> set[str]:
        return {g for g, s in run.scores(student).items() if s == 0.0}

    assert lost("honest_noisy") == {"why_direct_fails"}
    shown = "".join(run.outputs("honest_noisy", "test_quantize"))
    assert HEADING in shown and "quantizing" in shown and "fd 2 line" in shown
    for student in ("forges_capture", "forges_closure", "forges_records"):
        assert lost(student) == {"test_affine_qparams", "why_direct_fails"}, student
        errors = run.errors(student, "test_affine_qparams")
        assert "x_min > x_max is an error]: returned" in errors, (student, errors)
        assert "instead of raising ValueError" in errors, (student, errors)
        # check() keeps its own capture: rebinding the module's does not even fool the
        # kernel; reaching into its closure or writing records does, but not the re-run
        if student != "forges_capture":
            assert "(in the grader's fresh re-run)" in errors, (student, errors)
    assert lost("forges_unchanged") == {"test_direct_quantize", "why_direct_fails"}
    errors = run.errors("forges_unchanged", "test_direct_quantize")
    assert "the input model was modified" in errors and "fresh re-run" in errors, errors


# --------------------------- issue 11, class 2: the library's answers under other names
# Answers that call the library's own implementation under another name than the exercise's.
LAB03_CHEATS = {
    "FakeQuantSTE": "FakeQuantSTE = quant.FakeQuantizeSTE\n",
    "ActivationFakeQuant": '''from course.nn.fake_quant import FakeQuantize


class ActivationFakeQuant(nn.Module):
    def __init__(self, num_bits: int = 8, averaging_constant: float = 0.01):
        super().__init__()
        self.num_bits = num_bits
        self.averaging_constant = averaging_constant
        self.fq = FakeQuantize.for_activations(num_bits, observer="moving_average")

    def forward(self, x):
        self.fq.train(self.training)
        return self.fq(x)
''',
    "fold_batch_norm": '''import copy
from course.methods.qat.layers import folded_parameters


def fold_batch_norm(layer, bn):
    folded = copy.deepcopy(layer)
    bias = None if layer.bias is None else layer.bias.detach()
    w, b = folded_parameters(layer.weight.detach(), bias, bn)
    folded.weight = nn.Parameter(w.detach().clone())
    folded.bias = nn.Parameter(b.detach().clone())
    return folded
''',
}
LAB04_CHEATS = {
    "binarize": "def binarize(w):\n    return xnor.binary_weight(w).detach()\n",
    "sign_ste_backward": '''def sign_ste_backward(x, grad_output):
    x = x.clone().requires_grad_(True)
    xnor.sign_ste(x).backward(grad_output)
    return x.grad
''',
    "pack_signs": '''WORD_BITS = 64


def pack_signs(x):
    return bitpack.pack_signs(x).to_tensor()
''',
    "xnor_matmul": '''import numpy as np
from course.kernels.binary.gemm import xnor_gemm_words


def xnor_matmul(a_words, b_words, length):
    out = xnor_gemm_words(a_words.numpy().view(np.uint64), b_words.numpy().view(np.uint64),
                          length)
    return torch.from_numpy(out)
''',
    "dorefa_weights": ("FLOAT_BITS = 32\n\n\ndef dorefa_weights(w, bits):\n"
                       "    return dorefa.quantize_weights(w, bits)\n"),
    "dorefa_activations": ("def dorefa_activations(x, bits):\n"
                           "    return dorefa.quantize_activations(x, bits)\n"),
}
# (each passes every visible and hidden check outside grading: the library is right)
LAB03 = "lab03_quantization_aware_training"
LAB04 = "lab04_binary_and_low_bit"


def _lab_class(tmp_path: Path, lab: str, cheats: dict[str, str]) -> Run:
    from autograder.commands.autograde import autograde

    root = tmp_path / lab
    shutil.copytree(REPO_ROOT / "solutions" / lab, root / "solutions" / lab)
    refs = root / "autograder" / "references"
    refs.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "autograder" / "references" / f"{lab}.json",
                    refs / f"{lab}.json")
    src = root / "solutions" / lab / f"{lab}.ipynb"
    subs = root / "submissions"
    variant(src, subs / "honest" / lab / src.name)
    variant(src, subs / "libcalls" / lab / src.name, replace=cheats)
    layout = CourseLayout.from_config(root=root)
    return Run(layout, lab, autograde(lab, subs, root / "out", layout, jobs=2), subs)


@pytest.mark.slow
@pytest.mark.parametrize(("lab", "cheats", "cells"), [
    (LAB03, LAB03_CHEATS, {"test_FakeQuantSTE", "test_ActivationFakeQuant",
                           "test_fold_batch_norm"}),
    (LAB04, LAB04_CHEATS, {"test_binarize", "test_sign_ste_backward", "test_pack_signs",
                           "test_xnor_matmul", "test_dorefa_weights", "test_dorefa_activations"}),
], ids=["lab03", "lab04"])
def test_library_equivalents_under_other_names_earn_nothing(tmp_path, lab, cheats, cells):
    """Each cheat passes every check outside grading (the library is right); while grading,
    each loses its exercise with the withheld message, and the honest solution loses
    nothing."""
    if not (REPO_ROOT / "solutions" / lab).is_dir():
        pytest.skip(f"no {lab}")
    run = _lab_class(tmp_path, lab, cheats)
    honest = run.scores("honest")
    manual = {g for g, s in honest.items() if s == 0.0}
    assert all(g.startswith("answer") for g in manual), honest
    lost = {g for g, s in run.scores("libcalls").items() if s == 0.0} - manual
    assert lost == cells, (lost, cells)
    for grade_id in cells:
        assert "withheld while grading" in run.errors("libcalls", grade_id), grade_id
