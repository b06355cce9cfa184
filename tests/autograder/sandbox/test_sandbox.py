"""The grader's parts one by one: sandbox and limits, the bounded executor, the library copy
with answers withheld, submission intake, the grader's verdicts, the ledger.

End-to-end class runs are in ``commands/test_autograde.py``; attacks on them in
``test_adversarial.py``.
Tests that need bubblewrap are skipped where this machine cannot sandbox (the skip reason
says why); everything else runs everywhere.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.sandbox.bwrap import (
    LIMITS_SCRIPT,
    UID_BASE,
    WORKDIR,
    Limits,
    Mount,
    SandboxSpec,
    probe_support,
    sandbox_command,
)
from autograder.session import REPO_ROOT

SUPPORT = probe_support()
needs_sandbox = pytest.mark.skipif(not SUPPORT.available,
                                   reason=f"no sandbox here: {SUPPORT.reason}")


# ------------------------------------------------------------------------------ limits
def test_limits_check_their_values_and_read_the_config():
    with pytest.raises(TypeError, match="memory_mb"):
        Limits(memory_mb=1.5)
    with pytest.raises(ValueError, match="cpu_s"):
        Limits(cpu_s=0)
    limits = Limits.from_config({"Sandbox": {"memory_mb": 1024, "mode": "auto", "other": 1}})
    assert limits.memory_mb == 1024 and limits.cpu_s == Limits().cpu_s
    assert (limits.cell_wall_s, limits.notebook_wall_s) == (4 * 120 + 30, 4 * 600 + 30)
    with pytest.raises(ValueError, match="Sandbox.notebook_timeout_s is no longer read: set "
                                         "Sandbox.notebook_cpu_s"):
        Limits.from_config({"Sandbox": {"notebook_timeout_s": 600}})
    rl = limits.rlimits()
    assert rl["RLIMIT_AS"] == 1024 * 2**20 and rl["RLIMIT_FSIZE"] == limits.file_mb * 2**20
    assert rl["RLIMIT_NPROC"] == limits.processes and rl["RLIMIT_CORE"] == 0


def test_limits_script_sets_limits_before_running_the_command(tmp_path):
    limits = json.dumps({"RLIMIT_FSIZE": 4096, "RLIMIT_NOFILE": 32})
    code = ("import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE)); "
            "open('big', 'wb').write(b'x' * 10000)")
    done = subprocess.run([sys.executable, "-I", "-S", str(LIMITS_SCRIPT), limits, "--",
                           sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "(32, 32)"
    assert "File too large" in done.stderr and (tmp_path / "big").stat().st_size == 4096
    bad = subprocess.run([sys.executable, "-I", "-S", str(LIMITS_SCRIPT), '{"RLIMIT_NOPE": 1}',
                          "--", "true"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown resource" in bad.stderr


def test_without_a_sandbox_only_limits_apply_and_the_warning_is_loud():
    support = probe_support("off")
    assert not support.available and "NOT SANDBOXED" in support.warning
    assert "solutions/" in support.warning and "bubblewrap" in support.warning
    cmd = sandbox_command(["python", "-c", "pass"], SandboxSpec(uid=UID_BASE), Limits(), support)
    assert cmd[:3] == [sys.executable, "-I", "-S"] and cmd[-3:] == ["python", "-c", "pass"]
    assert "bwrap" not in " ".join(cmd)
    with pytest.raises(ValueError, match="mode"):
        probe_support("sometimes")


@needs_sandbox
def test_sandboxed_process_sees_only_its_working_copy(tmp_path):
    given = tmp_path / "references.json"
    given.write_text('{"given": 1}')
    code = f"""
import json, os, socket
seen = {{p: os.path.exists(p) for p in [{str(REPO_ROOT / 'solutions')!r},
        {str(REPO_ROOT / 'autograder')!r}, {str(REPO_ROOT / 'course')!r}, '/home',
        {str(tmp_path)!r}, '/etc/passwd', '/var', '/run']}}
try:
    socket.create_connection(('1.1.1.1', 53), timeout=3)
    net = 'open'
except OSError as error:
    net = type(error).__name__
try:
    open('/usr/grader-was-here', 'w')
    usr = 'writable'
except OSError:
    usr = 'read-only'
try:
    open('references.json', 'w')
    given = 'writable'
except OSError:
    given = 'read-only'
open('scratch.txt', 'w').write('ok')
try:
    open('huge', 'wb').write(b'0' * (3 * 2**20))
    huge = 'written'
except OSError as error:
    huge = error.strerror
caps = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1]
print(json.dumps({{'uid': os.getuid(), 'cwd': os.getcwd(), 'seen': seen, 'net': net,
                  'usr': usr, 'given': given, 'caps': caps, 'huge': huge,
                  'ls': sorted(os.listdir('.')), 'top': sorted(os.listdir('/'))}}))
"""
    spec = SandboxSpec(uid=UID_BASE + 7, files=(Mount(given, "references.json"),))
    done = subprocess.run(sandbox_command([sys.executable, "-c", code], spec,
                                          Limits(scratch_mb=2), SUPPORT),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["uid"] == UID_BASE + 7 and report["cwd"] == WORKDIR
    assert set(report["seen"].values()) == {False}, report["seen"]
    python = {Path(p).parts[1] for p in (sys.prefix, sys.base_prefix,
                                         os.path.realpath(sys.executable))}
    assert set(report["top"]) <= {"bin", "dev", "etc", "grader", "lib", "lib32", "lib64",
                                  "libx32", "proc", "sbin", "tmp", "usr"} | python
    assert report["net"] != "open" and report["usr"] == "read-only"
    assert report["given"] == "read-only" and int(report["caps"], 16) == 0
    assert report["huge"] == "No space left on device"  # the 2 MB working folder is full
    assert report["ls"] == ["huge", "references.json", "scratch.txt"]


# --------------------------------------------------------------------- bounded execution
def _execute(tmp_path: Path, sources: list[str], **sandbox) -> tuple[list, dict]:
    """Run ``sources`` as code cells through BoundedExecute in the sandbox."""
    from traitlets.config import Config

    from autograder.sandbox.execute import BoundedExecute

    config = Config()
    config.SandboxKernelManager.job_dir = str(tmp_path / "kernel")
    config.SandboxKernelManager.lib_dir = str(REPO_ROOT)
    config.SandboxKernelManager.uid = UID_BASE + 8
    config.BoundedExecute.record_file = str(tmp_path / "kernel" / "records.jsonl")
    config.BoundedExecute.records_dir = str(tmp_path / "records")
    config.Sandbox = Config({"cell_cpu_s": 10, **sandbox})
    notebook = new_notebook(cells=[new_code_cell(s) for s in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    work = tmp_path / "work"
    work.mkdir(parents=True)
    BoundedExecute(config=config).preprocess(
        notebook, {"metadata": {"path": str(work)}, "nbgrader": {"notebook": "nb"}})
    sidecar = json.loads((tmp_path / "records" / "nb.json").read_text())
    outputs = [[(o.get("name") or o.get("ename"), o.get("text") or o.get("evalue", ""))
                for o in cell.outputs] for cell in notebook.cells]
    return outputs, sidecar


@pytest.mark.slow
def test_memory_bomb_output_flood_and_exiting_kernel_are_scored_for_what_ran(tmp_path):
    outputs, sidecar = _execute(tmp_path, [
        "print('first')",
        "x = bytearray(64 * 2**30)",
        "print('y' * 100_000)",
        "print('still here')",
        "import os; os._exit(3)",
        "print('never')",
    ], memory_mb=4096, output_kb_per_cell=8)
    assert outputs[0] == [("stdout", "first\n")]
    assert outputs[1][0][0] == "MemoryError"
    assert len(outputs[2]) == 1 and "100001 characters of output dropped" in outputs[2][0][1]
    assert outputs[3] == [("stdout", "still here\n")]
    assert outputs[4] == [("KernelStopped", "the kernel exited (status 3)")]
    assert outputs[5] == [("NotRun", "not run: the kernel exited (status 3)")]
    assert sidecar["stopped"] == "the kernel exited (status 3)" and sidecar["stopped_at"] == 4


@pytest.mark.slow
def test_cpu_limits_interrupt_a_loop_and_stop_one_that_ignores_interrupts(tmp_path):
    outputs, sidecar = _execute(tmp_path, [
        "print('first')",
        "while True:\n    pass",  # interrupted after 2 s of CPU time: the notebook goes on
        "print('next')",
        # ipykernel restores SIGINT's handler before each cell: ignore it inside the loop's cell
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        "print('never')",
    ], cell_cpu_s=2)
    assert ("CellTimeoutError", "the cell used its CPU time limit (2 s) and was interrupted") \
        in outputs[1]
    assert outputs[2] == [("stdout", "next\n")]
    assert outputs[3][-1] == ("KernelStopped", "a cell did not stop when interrupted after its "
                              "CPU time limit (2 s); its kernel was stopped")
    assert outputs[4][0][0] == "NotRun" and sidecar["backstop"] == ""


@pytest.mark.slow
def test_the_notebook_cpu_limit_stops_the_kernel_and_sleeping_costs_no_cpu(tmp_path):
    outputs, sidecar = _execute(tmp_path / "a", [
        "import time\ntime.sleep(3)",  # 3 s of wall-clock time, no CPU: within the budget
        "t = time.process_time()\nwhile time.process_time() - t < 1.5:\n    pass",
        "while time.process_time() - t < 3:\n    pass",
        "print('never')",
    ], cell_cpu_s=10, notebook_cpu_s=3)
    assert not any(name == "CellTimeoutError" for name, _ in outputs[0] + outputs[1])
    assert sidecar["stopped"] == "the notebook's CPU time limit (3 s) was reached"
    assert outputs[-1][0][0] == "NotRun" and sidecar["backstop"] == ""


@pytest.mark.slow
def test_a_sleeping_cell_is_stopped_by_the_wall_clock_backstop_and_flagged(tmp_path):
    outputs, sidecar = _execute(tmp_path, [
        "import time\ntime.sleep(600)",
        "print('after')",
    ], cell_cpu_s=2, wall_factor=1, wall_margin_s=2)  # backstop: 1 * 2 + 2 = 4 s
    notes = [text for name, text in outputs[0] if name == "CellTimeoutError"]
    assert any("ran past its wall-clock backstop (4 s) after only" in t for t in notes), outputs
    assert outputs[1] == [("stdout", "after\n")]  # the interrupt worked: the notebook went on
    assert "wall-clock backstop (4 s)" in sidecar["backstop"]


@pytest.mark.slow
def test_cpu_limits_hold_while_the_machine_is_busy(tmp_path, cpu_burner):
    """Every core busy (and one more): a cell of 1.5 s of CPU time still fits its 3 s CPU
    limit, however long it waits for a core; an endless loop is still stopped."""
    outputs, sidecar = _execute(tmp_path, [
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5:\n"
        "    pass\nprint('done')",
        "while True:\n    pass",
    ], cell_cpu_s=3)
    assert outputs[0] == [("stdout", "done\n")]
    assert ("CellTimeoutError", "the cell used its CPU time limit (3 s) and was interrupted") \
        in outputs[1]
    assert sidecar["stopped"] == "" and sidecar["backstop"] == ""


@needs_sandbox
@pytest.mark.slow
def test_fork_bomb_hits_the_process_limit(tmp_path):
    outputs, _ = _execute(tmp_path, [
        "import os, time\nn = 0\nfor n in range(5000):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n"
        "        os._exit(0)\nprint('stopped after', n)",
        "print('alive')",
    ], processes=64)
    stopped = int(outputs[0][0][1].split()[-1])
    assert 10 < stopped < 64 and outputs[1] == [("stdout", "alive\n")]


def test_death_reasons_name_the_signal():
    from autograder.sandbox.execute import death_reason

    assert "out of CPU time or memory" in death_reason(128 + 9)
    assert "out of CPU time or memory" in death_reason(-24)
    assert death_reason(3) == "the kernel exited (status 3)"
    assert "SIGSEGV" in death_reason(139)


# ------------------------------------------------------------------------------ withheld
def test_withheld_functions_raise_and_everything_else_is_unchanged(tmp_path):
    from autograder.pipeline.withheld import build_grading_lib, withhold_functions

    source = ('"""Module."""\n\n\ndef keep(x):\n    # a comment\n    return x + 1\n\n\n'
              '@staticmethod\ndef answer(x, y=2):\n    """Doc."""\n    if x:\n'
              '        return x * y\n    return 0\n')
    text, names = withhold_functions(source, {"answer", "absent"}, "pkg.mod")
    assert names == ["answer"]
    assert text.startswith(source[: source.index("@staticmethod")])  # byte for byte
    namespace: dict = {}
    exec(compile(text.replace("@staticmethod\n", ""), "m", "exec"), namespace)
    assert namespace["keep"](1) == 2 and namespace["answer"].__doc__ == "Doc."
    with pytest.raises(NotImplementedError, match=r"pkg\.mod\.answer is the library's "
                       r"reference implementation of the exercise `answer`.*withheld"):
        namespace["answer"](3)

    changed = build_grading_lib({"quantize", "sqnr_db"}, tmp_path)
    assert changed == ["course/measure.py", "course/quant/affine.py"]
    original = ast.parse((REPO_ROOT / "course/quant/affine.py").read_text())
    copied = ast.parse((tmp_path / "course/quant/affine.py").read_text())
    kept = {n.name: ast.dump(n) for n in original.body if isinstance(n, ast.FunctionDef)}
    for node in copied.body:
        if isinstance(node, ast.FunctionDef):
            assert (ast.dump(node) == kept[node.name]) == (node.name != "quantize"), node.name
    assert not list(tmp_path.rglob("__pycache__"))
    assert (tmp_path / "course/grading/__init__.py").read_bytes() == \
        (REPO_ROOT / "course/grading/__init__.py").read_bytes()


def test_redacted_references_keep_inputs_only(tmp_path):
    from autograder.pipeline.withheld import write_redacted_references
    from course.grading import dumps, loads

    source = tmp_path / "hidden.json"
    source.write_bytes(dumps({"lab": "lab", "cases": {"f": [
        {"call": "f(1)", "label": "one", "kind": "float", "args": [1], "kwargs": {},
         "expected": 2.0, "alternatives": [3.0], "note": "secret", "notes": {"0": "x"}}]}}))
    path = write_redacted_references(source, "lab", tmp_path / "out")
    data = loads(path.read_bytes())
    assert data["redacted"] is True
    assert data["cases"] == {"f": [{"call": "f(1)", "label": "one", "kind": "float",
                                    "args": [1], "kwargs": {}}]}
    with pytest.raises(ValueError, match="not 'other'"):
        write_redacted_references(source, "other", tmp_path / "out")


# -------------------------------------------------------------------------------- intake
def _graded(grade_id, source, *, grade=False, solution=False, locked=False, points=None,
            markdown=False):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution}
    if points is not None:
        meta["points"] = points
    make = new_markdown_cell if markdown else new_code_cell
    return make(source, metadata={"nbgrader": meta})


def _release():
    return new_notebook(cells=[
        _graded("setup", "import os", locked=True),
        _graded("f", "def f(x):\n    raise NotImplementedError()", solution=True),
        _graded("test_f", "assert f(1) == 2", grade=True, locked=True, points=2),
        _graded("why", "YOUR ANSWER HERE", grade=True, solution=True, points=1, markdown=True),
    ])


def _released_lab():
    from autograder.pipeline.intake import ReleasedLab

    return ReleasedLab("lab", {"lab": _release()}, {"other": frozenset({"test_g", "g"})})


def _write(path: Path, notebook) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))
    return path


def test_text_that_is_not_utf8_is_decoded_with_a_note():
    from autograder.pipeline.intake import decode_text

    assert decode_text('{"a": "é"}'.encode()) == ('{"a": "é"}', "")
    assert decode_text('\ufeff{"a": 1}'.encode()) == ('{"a": 1}', "")
    assert decode_text('{"a": "é"}'.encode("utf-16")) == ('{"a": "é"}',
                                                           "the notebook was UTF-16 text: decoded")
    text, note = decode_text('{"a": "é"}'.encode("latin-1"))
    assert text == '{"a": "\ufffd"}' and "byte 0xe9 at offset 7" in note


@pytest.mark.parametrize(("content", "problem"), [
    (b'{"cells": [', "is not a notebook: invalid JSON at line 1 column 12"),
    (b"[1, 2]", "is not a notebook: no nbformat/cells structure"),
    (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "bogus"}]}',
     "is not a valid notebook"),
])
def test_unreadable_notebooks_say_why(tmp_path, content, problem):
    from autograder.pipeline.intake import read_notebook

    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    notebook, _, found = read_notebook(path)
    assert notebook is None and found.startswith("nb.ipynb ") and problem in found


def test_structure_is_restored_from_the_release():
    from autograder.pipeline.intake import restore_structure

    release = _release()
    submitted = nbformat.from_dict(json.loads(nbformat.writes(release)))
    cells = submitted.cells
    cells[1].source = "def f(x):\n    return 2 * x"
    cells[2].metadata["nbgrader"].update(grade=False, points=100)  # tampered test cell
    copy = nbformat.from_dict(json.loads(nbformat.writes(cells[1])))  # a copy-paste
    copy.source = "def f(x):\n    return x + 1"
    cells.insert(2, copy)
    cells.append(new_code_cell("x = 1", metadata={"nbgrader": {"grade_id": "bogus"}}))
    del cells[0]  # the locked setup cell, deleted
    notes = restore_structure(submitted, release)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in submitted.cells]
    assert ids == ["setup", None, "f", "test_f", "why", None]
    assert submitted.cells[2].source == "def f(x):\n    return x + 1"  # the last copy graded
    assert submitted.cells[1].source == "def f(x):\n    return 2 * x"  # runs as a plain cell
    assert submitted.cells[3].metadata["nbgrader"] == release.cells[2].metadata["nbgrader"]
    assert any("appears 2 times" in n for n in notes)
    assert any("1 cell(s) not in the lab" in n for n in notes)
    assert any("put back: setup" in n for n in notes)


def test_take_in_finds_renamed_notebooks_and_refuses_other_labs(tmp_path):
    from autograder.pipeline.intake import take_in

    lab = _released_lab()
    solved = _release()
    solved.cells[1].source = "def f(x):\n    return 2 * x"
    _write(tmp_path / "ann" / "lab" / "lab (1).ipynb", solved)
    (tmp_path / "ann" / "lab" / "numpy.py").write_text("raise SystemExit")
    intake = take_in(tmp_path / "ann", "lab", lab)
    assert intake.problem == "" and set(intake.notebooks) == {"lab"}
    assert "renamed notebook lab/lab (1).ipynb graded as lab.ipynb" in intake.notes
    assert "1 other file(s) in the submission ignored" in intake.notes
    assert b"return 2 * x" in intake.notebooks["lab"]

    other = new_notebook(cells=[_graded("test_g", "assert g()", grade=True, locked=True,
                                        points=1)])
    _write(tmp_path / "bea" / "lab" / "lab.ipynb", other)
    problem = take_in(tmp_path / "bea", "lab", lab).problem
    assert problem == ("lab.ipynb is not a notebook of lab: none of its graded cells is there "
                       "(it looks like other)")
    (tmp_path / "cid").mkdir()
    assert take_in(tmp_path / "cid", "lab", lab).problem == \
        "no notebook in the submission (empty folder?)"
    (tmp_path / "bad id!").mkdir()
    assert "cannot be a student id" in take_in(tmp_path / "bad id!", "lab", lab).problem
    _write(tmp_path / "dan" / "lab" / "lab.ipynb", solved)
    (tmp_path / "dan" / "lab" / "timestamp.txt").write_text("yesterday-ish")
    intake = take_in(tmp_path / "dan", "lab", lab)
    assert intake.timestamp == "" and any("is not a time" in n for n in intake.notes)


# ------------------------------------------------------------------------------ verdicts
def test_test_cells_are_planned_from_the_instructors_source():
    from autograder.judging.verdicts import CheckCall, plan_test_cell

    plan = plan_test_cell("t", 'from course.grading import check\ncheck(LAB, "q", q)\n'
                               "### BEGIN HIDDEN TESTS\ncheck(LAB, 'q', q, hidden=True)\n"
                               "### END HIDDEN TESTS", "lab")
    assert plan.calls == (CheckCall("lab", "q", False), CheckCall("lab", "q", True))
    assert not plan.plain
    mixed = plan_test_cell("t", 'grading.check("other", "q", q, True)\nassert q(1) == 2', "lab")
    assert mixed.calls == (CheckCall("other", "q", True),) and mixed.plain
    assert plan_test_cell("t", "%time assert q(1)", "lab") == \
        plan_test_cell("t", "%time assert q(1)", "lab")
    assert plan_test_cell("t", "%time assert q(1)", "lab").plain
    assert plan_test_cell("t", "check(LAB, name, q)", "lab").calls == ()
    wrapped = plan_test_cell("t", "def g(x):\n    return q(x)\n\ncheck(LAB, 'g', g)", "lab")
    assert wrapped.calls == (CheckCall("lab", "g", False),) and not wrapped.plain


def _references():
    from autograder.judging.verdicts import References

    case = {"call": "f(1)", "label": "one", "kind": "float", "args": [1], "kwargs": {},
            "expected": 2.0}
    return References({"f": [case]}, {"f": [case, {**case, "call": "f(3)", "args": [3],
                                                   "expected": 6.0, "note": "odd"}]})


def _records(*outcomes: tuple[int, dict], hidden=True) -> list:
    from course.grading.record import parse_records

    lines = [json.dumps({"lab": "lab", "name": "f", "hidden": hidden, "index": i,
                         "outcome": o}) for i, o in outcomes]
    return parse_records("\n".join(["garbage", '{"lab": 1}', *lines]))


def test_the_grader_judges_recorded_outcomes_and_missing_ones_fail():
    from autograder.judging.verdicts import CheckCall, TestPlan, judge_cell

    plan = TestPlan("t", (CheckCall("lab", "f", True),), False)
    refs = _references()
    good = judge_cell(plan, _records((0, {"returned": 2}), (1, {"returned": 6.0})), refs)
    assert good.passed and good.message == "f: all 2 hidden checks passed (judged by the grader)"
    wrong = judge_cell(plan, _records((0, {"returned": 2}), (1, {"returned": 9})), refs)
    assert not wrong.passed and wrong.message == ("f: 1 of 2 hidden checks failed. f(3) [one]: "
                                                  "expected 6, got 9 — odd")
    missing = judge_cell(plan, _records((0, {"returned": 2})), refs)
    assert not missing.passed and missing.missing and "1 of 2 hidden checks have no result" \
        in missing.message
    visible_only = judge_cell(plan, _records((0, {"returned": 2}), (1, {"returned": 6}),
                                             hidden=False), refs)
    assert visible_only.missing  # visible records do not stand in for hidden ones
    lying = judge_cell(plan, _records(
        (0, {"returned": {"__object__": {"type": "Yes", "repr": "2"}}}),
        (1, {"returned": 6})), refs)
    assert "must be a number, got Yes" in lying.message
    unknown = judge_cell(TestPlan("t", (CheckCall("lab", "g", True),), False), [], refs)
    assert not unknown.passed and "no hidden reference cases" in unknown.message


def test_verdicts_are_written_into_the_executed_notebook():
    from autograder.judging.verdicts import CheckCall, TestPlan
    from autograder.preprocessors.judged import apply_verdicts

    cells = [_graded("t1", "check(LAB, 'f', f, hidden=True)", grade=True, locked=True, points=1),
             _graded("t2", "check(LAB, 'f', f, hidden=True)", grade=True, locked=True, points=1),
             _graded("t3", "assert f(1) == 2", grade=True, locked=True, points=1)]
    cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "3.0"},
                                               execution_count=1)]
    notebook = new_notebook(cells=cells)
    plans = {"t1": TestPlan("t1", (CheckCall("lab", "f", True),), False),
             "t2": TestPlan("t2", (CheckCall("lab", "f", True),), False),
             "t3": TestPlan("t3", (), True)}
    ok = "\n".join(json.dumps({"lab": "lab", "name": "f", "hidden": True, "index": i,
                               "outcome": {"returned": v}}) for i, v in ((0, 2), (1, 6)))
    reports = apply_verdicts(notebook, plans, {"1": {"grade_id": "t2", "records": ok},
                                               "0": {"grade_id": "t2", "records": ok}},
                             _references())
    assert [(r.grade_id, r.verdict and r.verdict.passed) for r in reports] == [
        ("t1", False), ("t2", True), ("t3", None)]
    assert [o["output_type"] for o in notebook.cells[0].outputs] == ["error"]  # no score shown
    assert notebook.cells[0].outputs[0]["ename"] == "NoResult"  # records of another cell
    assert notebook.cells[1].outputs[0]["text"].startswith("f: all 2 hidden checks passed")
    assert notebook.cells[2].outputs == [] and reports[2].plain


# -------------------------------------------------------------------------------- ledger
def test_ledger_keys_change_with_the_submission_and_the_lab(tmp_path):
    from autograder.pipeline.ledger import Ledger, submission_key

    key = submission_key({"nb": b"1"}, "", "lab-v1")
    assert key == submission_key({"nb": b"1"}, "", "lab-v1")
    assert len({key, submission_key({"nb": b"2"}, "", "lab-v1"),
                submission_key({"nb": b"1"}, "", "lab-v2"),
                submission_key({"nb": b"1"}, "2026-01-01", "lab-v1")}) == 4
    ledger = Ledger.load(tmp_path, "lab")
    assert ledger.done("ann", key) is None
    ledger.record("ann", key, {"graded": True})
    again = Ledger.load(tmp_path, "lab")
    assert again.done("ann", key) == {"graded": True} and again.done("ann", "other") is None
    (tmp_path / "ledger" / "lab.json").write_text("{broken")
    assert Ledger.load(tmp_path, "lab").entries == {}


def test_two_class_runs_cannot_share_a_gradebook(tmp_path):
    from autograder.commands.autograde import exclusive
    from autograder.session import GradingError

    with exclusive(tmp_path):
        with pytest.raises(GradingError, match="another autograde is running"):
            with exclusive(tmp_path):
                pass
    with exclusive(tmp_path):  # released afterwards
        pass


def test_worker_config_swaps_in_the_bounded_sandboxed_executor(tmp_path):
    from nbgrader.preprocessors import Execute
    from traitlets.config import Config

    from autograder.pipeline.worker import Job, job_config, portable_overrides
    from autograder.sandbox.execute import BoundedExecute

    config = Config()
    config.Sandbox.cell_cpu_s = 7
    config.Sandbox.memory_mb = 2048
    config.GenerateFeedback.preprocessors = [Execute]  # not JSON: stays in the config file
    overrides = portable_overrides(config)
    assert overrides == {"Sandbox": {"cell_cpu_s": 7, "memory_mb": 2048}}
    job = Job(lab="l", student="s", job_dir=str(tmp_path), notebooks={}, source_lab="",
              template_db="", lib_dir="lib", refs_dir="refs", uid=UID_BASE + 3,
              overrides=overrides)
    assert Job.loads(job.dumps()) == job
    built = job_config(job)
    steps = built.Autograde.autograde_preprocessors
    assert BoundedExecute in steps and Execute not in steps
    assert built.SandboxKernelManager.uid == UID_BASE + 3
    assert built.Sandbox.cell_cpu_s == 7 and built.Sandbox.memory_mb == 2048


def test_the_probe_is_done_once_per_process():
    assert probe_support() is SUPPORT
