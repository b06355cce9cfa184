"""The worker's rewrites of an executed notebook as one list of nbgrader preprocessors
(``autograder.preprocessors.judged``): each step on the test cells only, in order.
``TestPlan`` is used through its module (pytest would take the name for a test class)."""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_notebook, new_output

from autograder.judging import verdicts
from autograder.judging.rerun import RERUN_NOTE, RerunVerdict
from autograder.preprocessors.judged import (
    JUDGED,
    VERDICTS,
    DropDisplayedValues,
    Judging,
    StderrToStdout,
    WriteRerunErrors,
    WriteVerdicts,
    judge_executed,
)
from course.grading.quiet import HEADING


def _cell(grade_id: str, *, grade: bool, solution: bool = False):
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "points": 1,
            "schema_version": 3, "solution": solution}
    cell = new_code_cell("assert f(1) == 2", metadata={"nbgrader": meta})
    cell.outputs = [new_output("execute_result", {"text/plain": "3"}, execution_count=1),
                    new_output("stream", name="stderr", text="a warning\n")]
    return cell


def test_the_pipelines_are_lists_of_preprocessors_in_order():
    assert VERDICTS == (DropDisplayedValues, StderrToStdout, WriteVerdicts)
    assert JUDGED == (*VERDICTS, WriteRerunErrors)


def test_a_failed_rerun_is_written_after_the_test_cells_outputs_are_cleaned():
    notebook = new_notebook(cells=[_cell("answer", grade=False, solution=True),
                                   _cell("plain_ok", grade=True), _cell("plain_bad", grade=True)])
    judging = Judging(
        plans={"plain_ok": verdicts.TestPlan("plain_ok", (), True),
               "plain_bad": verdicts.TestPlan("plain_bad", (), True)},
        cell_records={}, references=verdicts.References({}, {}),
        reruns={"plain_ok": RerunVerdict("plain_ok", True, ""),
                "plain_bad": RerunVerdict("plain_bad", False, "AssertionError: f(1) is 3")})
    reports = judge_executed(notebook, judging)
    assert [(r.grade_id, r.kernel_error, r.verdict, r.plain) for r in reports] == [
        ("plain_ok", "", None, True), ("plain_bad", "", None, True)]
    answer, ok, bad = notebook.cells
    assert [o["output_type"] for o in answer.outputs] == ["execute_result", "stream"]
    assert answer.outputs[1]["name"] == "stderr"          # not a test cell: left alone
    assert [(o["output_type"], o.get("name")) for o in ok.outputs] == [("stream", "stdout")]
    assert ok.outputs[0]["text"] == f"{HEADING}\na warning\n"
    assert [o["output_type"] for o in bad.outputs] == ["stream", "error"]
    assert bad.outputs[1]["ename"] == "AssertionError"
    assert bad.outputs[1]["evalue"] == f"f(1) is 3 ({RERUN_NOTE})"


def test_the_verdicts_alone_leave_the_reruns_out():
    notebook = new_notebook(cells=[_cell("plain_bad", grade=True)])
    judging = Judging(plans={}, cell_records={}, references=verdicts.References({}, {}),
                      reruns={"plain_bad": RerunVerdict("plain_bad", False, "Error: no")})
    judge_executed(notebook, judging, VERDICTS)
    assert [o["output_type"] for o in notebook.cells[0].outputs] == ["stream"]
