"""The grader's own verdict on each graded test cell, from data the notebook recorded.

A test cell of a lab calls ``course.grading.check(LAB, name, fn[, hidden=True])``. In the
sandbox, each call appends the *outcome* of every case (what the student's function returned
or raised, as plain data) to the record file, and ``autograder.sandbox.execute`` keeps the
lines each cell appended. This module, running in the grader's process (which never runs
student code), reads the instructor's source of each test cell to know which checks it must
make (:func:`plan_test_cell`), then judges the recorded outcomes against the instructor's
references, hidden expected values included (:func:`judge_cell`). A case without a record
fails. So nothing in the notebook — a patched ``np.allclose``, a replaced ``check``, an input
transformer, a hijacked kernel — can change the verdict, except by returning right answers.

:func:`autograder.preprocessors.judged.apply_verdicts` writes the verdicts into the executed
notebook before nbgrader scores it: a failure becomes the cell's error output (score 0), a
pass a line of output. Displayed values are dropped from test cells (nbgrader would read them
as partial credit).

Cells with other code than imports, definitions and ``check`` calls (``assert`` statements,
other calls) are *plain*: that code is judged in the kernel and again in a fresh process
(``autograder.judging.rerun``; see ``autograder/README.md`` for what that guarantees).

>>> plan = plan_test_cell("test_q", 'check(LAB, "quantize", quantize, hidden=True)', "lab01")
>>> plan.calls, plan.plain
((CheckCall(lab='lab01', name='quantize', hidden=True),), False)
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nbformat.notebooknode import NotebookNode

from course.grading import Mismatch
from course.grading.encode import encode, loads
from course.grading.outcome import judge
from course.grading.record import Record, parse_records

# Statements that test nothing by themselves: a cell of these and `check` calls is judged
# entirely from recorded outcomes (the definitions only build what `check` is given).
_ALLOWED = (ast.Import, ast.ImportFrom, ast.Pass, ast.FunctionDef, ast.AsyncFunctionDef,
            ast.ClassDef)
VERIFIED = "(judged by the grader)"
FORGEABLE_KINDS = frozenset({"raises", "model"})
"""Case kinds whose right outcome needs no secret to claim: "raised ValueError", "the input
model was left unchanged". A kernel's record of them proves nothing, so the grader takes
them only from its own fresh re-run (``autograder.judging.rerun``), where the grader's code,
bound before any student code ran, calls the student's function and observes what happened."""


@dataclass(frozen=True)
class CheckCall:
    """One ``check(lab, name, fn, hidden)`` call of a test cell."""

    lab: str
    name: str
    hidden: bool
    fn: str = field(default="", compare=False, repr=False)
    """The source of the third argument (the function checked), as the instructor wrote it."""

    def key(self, index: int) -> str:
        """The name of case ``index`` of this call in the re-run's confirmations."""
        return f"{self.lab}|{self.name}|{int(self.hidden)}|{index}"


@dataclass(frozen=True)
class TestPlan:
    """How a graded test cell is judged: the checks it calls, and whether it also holds
    other code (``plain``), judged in the kernel. ``setup`` is the cell's source without its
    ``check`` calls (its imports and definitions): what the re-run executes before calling
    the checked functions itself."""

    grade_id: str
    calls: tuple[CheckCall, ...]
    plain: bool
    setup: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Verdict:
    """The grader's verdict on the checks of one test cell."""

    grade_id: str
    passed: bool
    message: str
    missing: bool = False


@dataclass(frozen=True)
class References:
    """The instructor's reference cases: visible and hidden, exercise name -> cases."""

    visible: Mapping[str, list[dict]]
    hidden: Mapping[str, list[dict]]

    @classmethod
    def from_files(cls, lab: str, visible: Path | None, hidden: Path | None) -> References:
        """Read ``visible`` / ``hidden`` reference files of ``lab`` (None or absent: empty)."""
        def read(path: Path | None) -> dict:
            if path is None or not Path(path).is_file():
                return {}
            data = loads(Path(path).read_bytes())
            if data.get("lab") != lab:
                raise ValueError(f"{path} holds references of {data.get('lab')!r}, not {lab!r}")
            if data.get("redacted"):
                raise ValueError(f"{path} is a redacted copy: the grader needs the originals")
            return data["cases"]
        return cls(read(visible), read(hidden))

    def cases(self, call: CheckCall) -> list[dict] | None:
        return (self.hidden if call.hidden else self.visible).get(call.name)


def _literal(node: ast.AST | None):
    return node.value if isinstance(node, ast.Constant) else None


def _check_call(node: ast.AST, lab: str) -> CheckCall | None:
    if not isinstance(node, ast.Expr) or not isinstance(node.value, ast.Call):
        return None
    call = node.value
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(
        func, ast.Attribute) else ""
    if name != "check" or len(call.args) < 3:
        return None
    lab_arg = call.args[0]
    lab_name = _literal(lab_arg) if isinstance(lab_arg, ast.Constant) else lab
    exercise = _literal(call.args[1])
    hidden_node = call.args[3] if len(call.args) > 3 else next(
        (k.value for k in call.keywords if k.arg == "hidden"), None)
    hidden = False if hidden_node is None else _literal(hidden_node)
    if not isinstance(lab_name, str) or not isinstance(exercise, str) \
            or not isinstance(hidden, bool):
        return None
    return CheckCall(lab_name, exercise, hidden, ast.unparse(call.args[2]))


def plan_test_cell(grade_id: str, source: str, lab: str) -> TestPlan:
    """The checks the instructor's ``source`` of a test cell makes (see :class:`TestPlan`).

    ``check`` calls are recognised where they are statements of their own with literal
    exercise names and ``hidden`` flags; the first argument (the lab) may be a name (``LAB``),
    taken to be ``lab``.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return TestPlan(grade_id, (), True)
    calls, plain, setup = [], False, []
    for node in body:
        found = _check_call(node, lab)
        if found is not None:
            calls.append(found)
            continue
        setup.append(node)
        if not isinstance(node, _ALLOWED) and not (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            plain = True
    return TestPlan(grade_id, tuple(calls), plain, ast.unparse(ast.Module(setup, [])))


def confirmations(plan: TestPlan, references: References) -> list[dict]:
    """What the fresh re-run must run itself for this cell: for each ``check`` call with
    cases of :data:`FORGEABLE_KINDS`, the checked function's source and those cases' inputs
    (JSON-safe). Empty when the cell has none."""
    out = []
    for call in plan.calls:
        cases = references.cases(call) or []
        wanted = [{"key": call.key(i), "kind": c["kind"], "args": encode(c.get("args", [])),
                   "kwargs": encode(c.get("kwargs", {}))}
                  for i, c in enumerate(cases) if c.get("kind") in FORGEABLE_KINDS]
        if wanted:
            out.append({"fn": call.fn, "cases": wanted})
    return out


def _judge_call(call: CheckCall, cases: list[dict], records: Sequence[Record],
                confirmed: Mapping[str, dict] | None = None) -> str:
    """'' when every case of ``call`` has a record and all pass, else the failure message.

    With ``confirmed`` (key -> outcome from the grader's fresh re-run), a case of
    :data:`FORGEABLE_KINDS` passes only if the re-run's outcome passes as well.
    """
    kind = "hidden" if call.hidden else "visible"
    outcomes: dict[int, list[dict]] = {}
    for record in records:
        if (record.lab, record.name, record.hidden) == (call.lab, call.name, call.hidden):
            outcomes.setdefault(record.index, []).append(record.outcome)
    missing = [i for i in range(len(cases)) if i not in outcomes]
    if missing:
        first = cases[missing[0]]
        return (f"{call.name}: {len(missing)} of {len(cases)} {kind} checks have no result "
                f"— the cell stopped before them, or the grading code was changed. First: "
                f"{first['call']} [{first['label']}]")
    failures = []
    for index, case in enumerate(cases):
        found = list(outcomes[index])
        confirm = confirmed is not None and case.get("kind") in FORGEABLE_KINDS
        if confirm:
            found.append(confirmed.get(call.key(index)))
        for position, outcome in enumerate(found):
            where = " (in the grader's fresh re-run)" if position >= len(outcomes[index]) else ""
            if outcome is None:
                failures.append(f"{case['call']} [{case['label']}]: the grader's fresh re-run "
                                "did not confirm this result (it never reached this case)")
                break
            try:
                judge(outcome, case)
            except Mismatch as err:
                failures.append(f"{case['call']} [{case['label']}]: {err}{where}")
                break
            except Exception as err:  # noqa: BLE001 - malformed data is a failure, not a crash
                failures.append(f"{case['call']} [{case['label']}]: the result could not be "
                                f"judged ({type(err).__name__}: {err})")
                break
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return (f"{call.name}: {len(failures)} of {len(cases)} {kind} checks failed. "
                f"{failures[0]}{more}")
    return ""


def judge_cell(plan: TestPlan, records: Sequence[Record], references: References,
               confirmed: Mapping[str, dict] | None = None) -> Verdict:
    """The verdict on all ``check`` calls of one test cell, from its ``records`` and, for
    cases of :data:`FORGEABLE_KINDS`, the re-run's ``confirmed`` outcomes (None: not
    required, as for a first look before the re-run)."""
    lines = []
    for call in plan.calls:
        cases = references.cases(call)
        if not cases:
            return Verdict(plan.grade_id, False, f"{call.name}: the grader has no "
                           f"{'hidden' if call.hidden else 'visible'} reference cases for it "
                           "(run `make references`)")
        failure = _judge_call(call, cases, records, confirmed)
        if failure:
            return Verdict(plan.grade_id, False, failure, missing="no result" in failure)
        lines.append(f"{call.name}: all {len(cases)} {'hidden' if call.hidden else 'visible'} "
                     f"checks passed {VERIFIED}")
    return Verdict(plan.grade_id, True, "\n".join(lines))


def is_test_cell(cell: NotebookNode) -> bool:
    """Whether ``cell`` is a graded test cell (graded code, not a solution, with a grade_id)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return (cell.get("cell_type") == "code" and bool(meta.get("grade"))
            and not meta.get("solution") and isinstance(meta.get("grade_id"), str))


@dataclass(frozen=True)
class CellReport:
    """What happened to one graded test cell: the kernel's error (if any) and the verdict."""

    grade_id: str
    kernel_error: str
    verdict: Verdict | None
    plain: bool


def records_of(cell_records: Mapping[str, Mapping], index: int, grade_id: str
               ) -> list[Record]:
    """The records cell ``index`` appended, if it is still the cell ``grade_id`` (else none)."""
    kept = cell_records.get(str(index), {})
    return parse_records(kept.get("records", "") if kept.get("grade_id") == grade_id else "")


def to_confirm(notebook: NotebookNode, plans: Mapping[str, TestPlan],
               cell_records: Mapping[str, Mapping], references: References
               ) -> dict[str, list[dict]]:
    """grade_id -> :func:`confirmations` for each test cell that passed on the kernel's
    records and has cases of :data:`FORGEABLE_KINDS`: what the fresh re-run must run."""
    out = {}
    for index, cell in enumerate(notebook.cells):
        if not is_test_cell(cell):
            continue
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        plan = plans.get(grade_id)
        if plan is None or not plan.calls or any(
                o.get("output_type") == "error" for o in cell.get("outputs", [])):
            continue
        wanted = confirmations(plan, references)
        if wanted and judge_cell(plan, records_of(cell_records, index, grade_id),
                                 references).passed:
            out[grade_id] = wanted
    return out


__all__ = ["CellReport", "CheckCall", "FORGEABLE_KINDS", "References", "TestPlan", "Verdict",
           "confirmations", "is_test_cell", "judge_cell", "plan_test_cell", "records_of",
           "to_confirm"]
