"""Records cannot be forged: outcomes that need no secret to claim ("raised ValueError",
"the input model was left unchanged") are judged from the grader's fresh re-run only.

Unit level: ``check`` keeps its own references to what it calls; the verdict on a forgeable
case needs the re-run's confirmation. Process level: a real re-run (``autograder.judging.rerun``) of
a small notebook whose solution cell rebinds ``course.grading.capture`` and writes forged
record lines. Whole class runs of such cheats are in ``test_adversarial.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook

from autograder.judging.verdicts import (
    FORGEABLE_KINDS,
    References,
    confirmations,
    judge_cell,
    plan_test_cell,
    to_confirm,
)
from autograder.preprocessors.judged import apply_verdicts
from autograder.sandbox.bwrap import UID_BASE, Limits, probe_support
from autograder.session import REPO_ROOT
from course.grading.record import parse_records

LAB = "forge_lab"
CASES = [
    {"call": "f(2.0)", "label": "a value", "kind": "float", "args": [2.0], "kwargs": {},
     "expected": 4.0},
    {"call": "f(-1.0)", "label": "negative is an error", "kind": "raises", "args": [-1.0],
     "kwargs": {}, "expected": "ValueError"},
]
REFS = References({}, {"f": CASES})
SOURCE = 'from course.grading import check\ncheck(LAB, "f", f, hidden=True)'
FORGED = {"raised": {"type": "ValueError", "mro": ["ValueError", "Exception"], "message": ""}}


def _lines(*outcomes: dict) -> str:
    return "\n".join(json.dumps({"lab": LAB, "name": "f", "hidden": True, "index": i,
                                 "outcome": o}) for i, o in enumerate(outcomes))


def test_a_forgeable_case_needs_the_reruns_confirmation():
    plan = plan_test_cell("t", SOURCE, LAB)
    assert plan.calls[0].fn == "f" and plan.setup == "from course.grading import check"
    records = parse_records(_lines({"returned": 4.0}, FORGED))
    assert judge_cell(plan, records, REFS).passed  # the kernel's word alone would pass
    unconfirmed = judge_cell(plan, records, REFS, confirmed={})
    assert not unconfirmed.passed
    assert "f(-1.0) [negative is an error]: the grader's fresh re-run did not confirm" in \
        unconfirmed.message
    key = plan.calls[0].key(1)
    returned = judge_cell(plan, records, REFS, confirmed={key: {"returned": 1.0}})
    assert "returned 1.0 instead of raising ValueError (in the grader's fresh re-run)" in \
        returned.message
    assert judge_cell(plan, records, REFS, confirmed={key: FORGED}).passed
    wanted = confirmations(plan, REFS)
    assert wanted == [{"fn": "f", "cases": [{"key": key, "kind": "raises", "args": [-1.0],
                                            "kwargs": {}}]}]
    assert FORGEABLE_KINDS == {"raises", "model"}


def test_check_cannot_be_redirected_by_rebinding_what_it_calls(tmp_path, monkeypatch):
    import course.grading as grading
    import course.grading.outcome as outcome
    import course.grading.record as record
    from course.grading import Mismatch, check

    path = tmp_path / "records.jsonl"
    monkeypatch.setenv(record.RECORD_ENV, str(path))
    monkeypatch.setattr(grading, "capture", lambda fn, case: FORGED)
    monkeypatch.setattr(outcome, "capture", lambda fn, case: FORGED)
    monkeypatch.setattr(grading, "append_record", lambda *a: None)
    monkeypatch.setattr(grading, "judge", lambda *a: None)
    from course import quant

    def never_validates(lo, hi, bits):
        return quant.affine_qparams(min(lo, hi), max(lo, hi), bits)

    with pytest.raises(Mismatch, match=r"1 of \d+ hidden checks failed.*x_min > x_max is an "
                                       r"error\]: returned .* instead of raising ValueError"):
        check("lab01_direct_quantization", "affine_qparams", never_validates, hidden=True)
    kinds = {"raised" in r.outcome for r in parse_records(path.read_text())}
    assert kinds == {False}   # what was recorded is what the function did


def _notebook(solution: str) -> object:
    def cell(grade_id, source, **meta):
        nbgrader = {"grade_id": grade_id, "grade": False, "solution": False, "locked": False,
                    "schema_version": 3, **meta}
        return new_code_cell(source, metadata={"nbgrader": nbgrader})

    return new_notebook(cells=[
        cell("setup", f'from course.grading import check\nLAB = "{LAB}"', locked=True),
        cell("f", solution, solution=True),
        cell("t", SOURCE, grade=True, locked=True, points=1),
    ])


HONEST = "def f(x):\n    if x < 0:\n        raise ValueError('x < 0')\n    return x * x\n"
FORGER = f"""
import json, os
import course.grading, course.grading.outcome
_forged = {FORGED!r}
course.grading.capture = course.grading.outcome.capture = lambda fn, case: _forged
_real_check = course.grading.check
def _forge_records(*args, **kwargs):
    path = os.environ.get("COURSE_GRADING_RECORD")
    if path:
        with open(path, "a") as out:
            out.write({_lines({"returned": 4.0}, FORGED)!r} + "\\n")
course.grading.check = _forge_records
def f(x):
    return x * x
"""


@pytest.mark.parametrize(("solution", "passes"), [(HONEST, True), (FORGER, False)],
                         ids=["validates", "forges"])
def test_the_rerun_confirms_with_the_graders_own_capture(tmp_path, solution, passes):
    from autograder.judging.rerun import rerun_notebook

    notebook = _notebook(solution)
    plans = {"t": plan_test_cell("t", SOURCE, LAB)}
    kernel = {"2": {"grade_id": "t", "records": _lines({"returned": 4.0}, FORGED)}}
    confirm = to_confirm(notebook, plans, kernel, REFS)
    assert list(confirm) == ["t"]   # the kernel's records pass: the re-run must confirm
    support = probe_support()
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "references.json").write_text("{}")
    reruns, confirmed = rerun_notebook(
        notebook, plans, work=tmp_path / "rerun", lab_files=[lab / "references.json"],
        lib_dir=REPO_ROOT, refs_dir=None, uid=UID_BASE + 7, limits=Limits(cell_cpu_s=60),
        support=support, confirm=confirm)
    assert reruns == {}
    key = plans["t"].calls[0].key(1)
    assert set(confirmed["t"]) == {key}
    verdicts = apply_verdicts(notebook, plans, kernel, REFS, confirmed)
    assert verdicts[0].verdict.passed is passes, verdicts[0].verdict.message
    if not passes:
        assert "returned 1.0 instead of raising ValueError (in the grader's fresh re-run)" \
            in verdicts[0].verdict.message
        assert notebook.cells[2].outputs[-1]["ename"] == "Mismatch"


def test_a_rerun_that_never_reaches_the_cell_confirms_nothing(tmp_path):
    from autograder.judging.rerun import rerun_notebook

    notebook = _notebook("import os\nos._exit(0)\n" + HONEST)
    plans = {"t": plan_test_cell("t", SOURCE, LAB)}
    kernel = {"2": {"grade_id": "t", "records": _lines({"returned": 4.0}, FORGED)}}
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "references.json").write_text("{}")
    _, confirmed = rerun_notebook(
        notebook, plans, work=tmp_path / "rerun", lab_files=[lab / "references.json"],
        lib_dir=REPO_ROOT, refs_dir=None, uid=UID_BASE + 7, limits=Limits(cell_cpu_s=60),
        support=probe_support(), confirm=to_confirm(notebook, plans, kernel, REFS))
    assert confirmed == {}
    verdict = apply_verdicts(notebook, plans, kernel, REFS, confirmed)[0].verdict
    assert not verdict.passed and "did not confirm" in verdict.message


def test_model_cases_are_confirmed_too():
    case = {"call": "g(model)", "label": "m", "kind": "model",
            "args": [{"__model__": "mlp", "seed": 1}], "kwargs": {}, "expected": {}}
    plan = plan_test_cell("t", "check(LAB, 'g', lambda m: g(m))", LAB)
    wanted = confirmations(plan, References({"g": [case]}, {}))
    assert wanted[0]["fn"] == "lambda m: g(m)" and wanted[0]["cases"][0]["kind"] == "model"
    assert Path(__file__).name == "test_forging.py"
