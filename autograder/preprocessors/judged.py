"""The worker's rewrites of an executed notebook, before nbgrader scores it: ``JUDGED``, a
list of nbgrader preprocessors run in order on every notebook of a submission.

1. :class:`DropDisplayedValues`: a test cell's displayed values go (nbgrader would read one
   as partial credit, and a test cell must not give any);
2. :class:`StderrToStdout`: a test cell's stderr becomes stdout under a heading (nbgrader
   scores a cell 0 for any stderr; the student still sees what was written);
3. :class:`WriteVerdicts`: the grader's verdict on each test cell's ``check`` calls, judged
   from the recorded outcomes (``autograder.judging.verdicts``), becomes the cell's error
   output (a failure: score 0) or a line of output (a pass);
4. :class:`WriteRerunErrors`: a plain test cell that failed the grader's fresh re-run
   (``autograder.judging.rerun``) gets that error as an output.

What they need is a :class:`Judging` in ``resources[JUDGING]``; :class:`WriteVerdicts` leaves
a :class:`~autograder.judging.verdicts.CellReport` per test cell in its ``reports``.

>>> judging = Judging(plans=plans, cell_records=cells, references=refs)  # doctest: +SKIP
>>> reports = judge_executed(notebook, judging, JUDGED)                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from autograder.judging.rerun import RERUN_NOTE, RerunVerdict
from autograder.judging.verdicts import (
    CellReport,
    References,
    TestPlan,
    is_test_cell,
    judge_cell,
    records_of,
)
from course.grading.quiet import HEADING

JUDGING = "autograder_judging"
"""The key of :class:`Judging` in the preprocessors' ``resources``."""


@dataclass(kw_only=True)
class Judging:
    """What the judging preprocessors read (and, for ``reports``, write) for one notebook.

    ``plans``: grade_id -> plan from the instructor's source; ``cell_records``: cell index (as
    str) -> ``{"grade_id", "records"}`` as ``BoundedExecute`` wrote them; ``confirmed``:
    grade_id -> the fresh re-run's outcomes of the cell's forgeable cases (None: a look
    without a re-run); ``reruns``: grade_id -> the fresh re-run's verdict on a plain cell.
    """

    plans: Mapping[str, TestPlan]
    cell_records: Mapping[str, Mapping]
    references: References
    confirmed: Mapping[str, Mapping[str, dict]] | None = None
    reruns: Mapping[str, RerunVerdict] = field(default_factory=dict)
    reports: list[CellReport] = field(default_factory=list)


class _TestCells(NbGraderPreprocessor):
    """Runs :meth:`rewrite` on every graded test cell (not on solution or answer cells)."""

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        if is_test_cell(cell):
            self.rewrite(cell, resources, index)
        return cell, resources

    def rewrite(self, cell: NotebookNode, resources: dict, index: int) -> None:
        raise NotImplementedError


class DropDisplayedValues(_TestCells):
    """A test cell's ``execute_result`` outputs removed: no partial credit."""

    def rewrite(self, cell: NotebookNode, resources: dict, index: int) -> None:
        cell.outputs = [o for o in cell.get("outputs", [])
                        if o.get("output_type") != "execute_result"]


def stderr_to_stdout(cell: NotebookNode) -> bool:
    """Turn the stderr stream outputs of ``cell`` into stdout under a heading (in place).

    nbgrader scores a test cell 0 for any stderr output; what student code writes to stderr
    while it is checked (a log line, a debug print, C code writing to file descriptor 2 —
    also output that arrives late from an earlier cell) must not change a score, but the
    student should see it. Returns True if anything was moved.
    """
    moved = False
    outputs = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            text = output.get("text", "")
            if not moved:
                text = f"{HEADING}\n{text}"
            moved = True
            outputs.append(NotebookNode(output_type="stream", name="stdout", text=text))
        else:
            outputs.append(output)
    cell.outputs = outputs
    return moved


class StderrToStdout(_TestCells):
    """A test cell's stderr outputs as stdout (:func:`stderr_to_stdout`)."""

    def rewrite(self, cell: NotebookNode, resources: dict, index: int) -> None:
        stderr_to_stdout(cell)


class WriteVerdicts(_TestCells):
    """The grader's verdict on each test cell's ``check`` calls, written into its outputs
    unless the kernel already gave it an error; a :class:`CellReport` per test cell is
    appended to the :class:`Judging`'s ``reports``."""

    def rewrite(self, cell: NotebookNode, resources: dict, index: int) -> None:
        judging: Judging = resources[JUDGING]
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        plan = judging.plans.get(grade_id, TestPlan(grade_id, (), True))
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        kernel_error = f"{errors[0].get('ename', '')}: {errors[0].get('evalue', '')}" \
            if errors else ""
        verdict = None
        if plan.calls:
            confirmed = None if judging.confirmed is None else \
                judging.confirmed.get(grade_id, {})
            verdict = judge_cell(plan, records_of(judging.cell_records, index, grade_id),
                                 judging.references, confirmed)
            if not errors:
                cell.outputs.append(_verdict_output(verdict))
        judging.reports.append(CellReport(grade_id, kernel_error, verdict, plan.plain))


def _verdict_output(verdict) -> NotebookNode:
    if verdict.passed:
        return NotebookNode(output_type="stream", name="stdout", text=verdict.message + "\n")
    ename = "NoResult" if verdict.missing else "Mismatch"
    return NotebookNode(output_type="error", ename=ename, evalue=verdict.message,
                        traceback=[f"{ename}: {verdict.message}"])


class WriteRerunErrors(_TestCells):
    """A test cell whose fresh re-run failed gets that error as an output."""

    def rewrite(self, cell: NotebookNode, resources: dict, index: int) -> None:
        verdict = resources[JUDGING].reruns.get(cell.metadata["nbgrader"]["grade_id"])
        if verdict is None or verdict.passed:
            return
        ename, _, evalue = verdict.error.partition(": ")
        evalue = f"{evalue} ({RERUN_NOTE})" if evalue else f"({RERUN_NOTE})"
        cell.outputs.append(NotebookNode(output_type="error", ename=ename or "Error",
                                         evalue=evalue, traceback=[f"{ename}: {evalue}"]))


VERDICTS: tuple[type[NbGraderPreprocessor], ...] = (DropDisplayedValues, StderrToStdout,
                                                     WriteVerdicts)
"""The verdicts of the recorded outcomes alone (a look without the fresh re-run's errors)."""
JUDGED: tuple[type[NbGraderPreprocessor], ...] = (*VERDICTS, WriteRerunErrors)
"""The worker's pipeline: every rewrite of an executed notebook, in order."""


def judge_executed(notebook: NotebookNode, judging: Judging,
                   steps: Sequence[type[NbGraderPreprocessor]] = JUDGED) -> list[CellReport]:
    """Run ``steps`` on ``notebook`` (in place) with ``judging``; its reports, in notebook
    order."""
    resources = {JUDGING: judging}
    for step in steps:
        notebook, resources = step().preprocess(notebook, resources)
    return judging.reports


def apply_verdicts(notebook: NotebookNode, plans: Mapping[str, TestPlan],
                   cell_records: Mapping[str, Mapping], references: References,
                   confirmed: Mapping[str, Mapping[str, dict]] | None = None
                   ) -> list[CellReport]:
    """Judge every graded test cell of the executed ``notebook`` and write the verdicts into
    its outputs (in place, :data:`VERDICTS`); return a report per cell, in notebook order.
    Displayed values are dropped and stderr becomes stdout: only errors decide. With
    ``confirmed`` given, a forgeable case passes only on the re-run's outcome too; the class
    run always gives it (None only for a look without a re-run)."""
    judging = Judging(plans=plans, cell_records=cell_records, references=references,
                      confirmed=confirmed)
    return judge_executed(notebook, judging, VERDICTS)


__all__ = ["JUDGED", "JUDGING", "VERDICTS", "DropDisplayedValues", "Judging", "StderrToStdout",
           "WriteRerunErrors", "WriteVerdicts", "apply_verdicts", "judge_executed",
           "stderr_to_stdout"]
