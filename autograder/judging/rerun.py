"""A second opinion on plain test cells: the notebook re-run in a fresh sandboxed process.

Test cells written as plain ``assert`` statements are judged inside the student's kernel, and
a kernel is the student's to program: an input transformer can strip the asserts, a hook
can answer ``execute_request`` without running anything. So every plain test cell that
*passed* in the kernel is judged again by ``rerun_harness.py``, started in the sandbox with
no kernel: ordinary cells run in a plain IPython shell, and before each such test cell the
modules, classes and builtins the instructor's cells use are restored to what they were
before student code ran (see the harness's docstring). A test that fails there, or is never
reached, fails: its cell gets the error output and scores 0.

Cells that timed out or never ran in the kernel are skipped; test cells that only call
``course.grading.check`` are judged from their records (``autograder.judging.verdicts``), except the
outcomes a record cannot prove (``verdicts.FORGEABLE_KINDS``: "raised ValueError", "left the
input unchanged"): for a cell that passed on its records and has such cases, the re-run
executes the cell's definitions and then the harness itself — with the grader's ``capture``,
bound before any student code ran — calls the checked function on those cases and returns
the outcomes (``confirmed``), which the grader judges.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from IPython.core.inputtransformer2 import TransformerManager
from nbformat.notebooknode import NotebookNode

from autograder.judging.verdicts import TestPlan
from autograder.sandbox.bwrap import (
    LIB,
    Limits,
    Mount,
    SandboxSpec,
    Support,
    host_environment,
    prepare_owned,
    sandbox_command,
)
from autograder.sandbox.execute import KERNEL_STOPPED, NOT_RUN
from course.grading.outcome import loads_outcome

HARNESS = Path(__file__).with_name("rerun_harness.py")
INSIDE = "/grader/rerun"
REFS_INSIDE = "/grader/refs"
RERUN_NOTE = "judged again in a fresh process by the grader"
_SKIP_ERRORS = {"CellTimeoutError", KERNEL_STOPPED, NOT_RUN}
MAX_VERDICT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RerunVerdict:
    """The fresh re-run's verdict on one plain test cell."""

    grade_id: str
    passed: bool
    error: str
    backstop: bool = False
    """True when the wall-clock backstop, not the CPU-time limit, stopped the re-run."""


def _is_test(cell: NotebookNode) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) \
        and not meta.get("solution")


def _errors(cell: NotebookNode) -> list[str]:
    return [o.get("ename", "") for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _imports(source: str) -> set[str]:
    try:
        tree = ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def targets(notebook: NotebookNode, plans: Mapping[str, TestPlan]) -> list[str]:
    """grade_ids of the plain test cells that passed in the kernel (to be judged again)."""
    out = []
    for cell in notebook.cells:
        if _is_test(cell):
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            plan = plans.get(grade_id)
            if (plan is None or plan.plain) and not _errors(cell):
                out.append(grade_id)
    return out


def build_plan(notebook: NotebookNode, plans: Mapping[str, TestPlan], wanted: list[str],
               limits: Limits, confirm: Mapping[str, list[dict]] | None = None) -> dict:
    """The harness's plan: the code cells to run, in order, up to the last wanted test or
    cell to confirm (``confirm``: grade_id -> ``verdicts.confirmations``); the cells' CPU-time
    limit and wall-clock backstop from ``limits``."""
    confirm = confirm or {}
    cells, preimport = [], set()
    last = max((i for i, c in enumerate(notebook.cells)
                if _is_test(c) and (c.metadata["nbgrader"]["grade_id"] in wanted
                                    or c.metadata["nbgrader"]["grade_id"] in confirm)),
               default=-1)
    for cell in notebook.cells[: last + 1]:
        if cell.get("cell_type") != "code" or not cell.source.strip():
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("locked"):
            preimport |= _imports(cell.source)
        if set(_errors(cell)) & _SKIP_ERRORS:
            continue
        if _is_test(cell):
            grade_id = meta["grade_id"]
            plan = plans.get(grade_id)
            if grade_id in wanted:
                cells.append({"source": cell.source, "test": True, "grade_id": grade_id,
                              "confirm": confirm.get(grade_id, [])})
                continue
            if grade_id in confirm and plan is not None:
                cells.append({"source": plan.setup, "test": False, "grade_id": grade_id,
                              "confirm": confirm[grade_id]})
                continue
            if plan is not None and not plan.plain:
                continue  # only check() calls: judged from records, not re-run
        cells.append({"source": cell.source, "test": False, "grade_id": ""})
    return {"cells": cells, "preimport": sorted(preimport), "cell_cpu_s": limits.cell_cpu_s,
            "cell_wall_s": limits.cell_wall_s}


def rerun_notebook(notebook: NotebookNode, plans: Mapping[str, TestPlan], *, work: Path,
                   lab_files: list[Path], lib_dir: Path, refs_dir: Path | None, uid: int,
                   limits: Limits, support: Support,
                   confirm: Mapping[str, list[dict]] | None = None
                   ) -> tuple[dict[str, RerunVerdict], dict[str, dict[str, dict]]]:
    """Re-run ``notebook`` fresh: judge its plain test cells that passed in the kernel, and
    run the ``confirm`` cases (grade_id -> ``verdicts.confirmations``) with the grader's own
    ``capture``.

    ``work`` is a folder for the plan and verdict files; ``lab_files`` the lab's released
    files (the working folder's content). Returns (grade_id -> verdict for each plain cell,
    a cell the re-run did not reach failing; grade_id -> case key -> outcome for the cases
    confirmed, a case not reached absent). Time limits are ``limits``' CPU-time limits, with
    its wall-clock backstops; a verdict the backstop decided has ``backstop`` set.
    """
    confirm = dict(confirm or {})
    wanted = targets(notebook, plans)
    if not wanted and not confirm:
        return {}, {}
    work.mkdir(parents=True, exist_ok=True)
    plan_file, verdict_file = work / "plan.json", work / "verdicts.json"
    plan_file.write_text(json.dumps(build_plan(notebook, plans, wanted, limits, confirm)))
    verdict_file.write_text("")
    inside = support.available
    env = {"NBGRADER_EXECUTION": "autograde"}
    mounts = [Mount(lib_dir, LIB), Mount(HARNESS, f"{INSIDE}/harness.py"),
              Mount(plan_file, f"{INSIDE}/plan.json"),
              Mount(verdict_file, f"{INSIDE}/verdicts.json", writable=True)]
    if refs_dir is not None:
        mounts.append(Mount(refs_dir, REFS_INSIDE))
        env["COURSE_REFERENCES_DIR"] = REFS_INSIDE if inside else str(refs_dir)
    spec = SandboxSpec(uid=uid, files=tuple(Mount(p, p.name) for p in lab_files),
                       mounts=tuple(mounts), env=tuple(sorted(env.items())),
                       pythonpath=(LIB if inside else str(lib_dir),),
                       host_workdir=lab_files[0].parent if lab_files else work,
                       host_home=work)
    prepare_owned(verdict_file, spec, support, 0o600)
    paths = ((f"{INSIDE}/harness.py", f"{INSIDE}/plan.json", f"{INSIDE}/verdicts.json")
             if inside else (str(HARNESS), str(plan_file), str(verdict_file)))
    command = sandbox_command([sys.executable, *paths], spec, limits, support)
    walled = False
    try:
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=limits.notebook_wall_s,
                       env=None if inside else host_environment(spec),
                       cwd=spec.host_workdir, start_new_session=True)
    except subprocess.TimeoutExpired:
        walled = True
    try:
        raw = verdict_file.read_bytes()[:MAX_VERDICT_BYTES]
        written = json.loads(raw or b"{}")
    except (OSError, ValueError):
        written = {}
    written = written if isinstance(written, dict) else {}
    found = written.get("verdicts", {})
    confirmed = _confirmed(written.get("confirmed"), confirm)
    verdicts = {}
    for grade_id in wanted:
        entry = found.get(grade_id) if isinstance(found, dict) else None
        backstop = walled or (isinstance(found, dict) and "__backstop__" in found)
        if isinstance(entry, dict) and isinstance(entry.get("passed"), bool):
            verdicts[grade_id] = RerunVerdict(grade_id, entry["passed"],
                                              str(entry.get("error", ""))[:2000],
                                              entry.get("backstop") is True or (
                                                  backstop and not entry["passed"]))
        else:
            verdicts[grade_id] = RerunVerdict(grade_id, False, "NotReached: the grader's fresh "
                                              "re-run of the notebook did not reach this test",
                                              backstop)
    return verdicts, confirmed


def _confirmed(raw: object, confirm: Mapping[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """The well-formed outcomes of the cases asked for, as ``loads_outcome`` decodes them."""
    out: dict[str, dict[str, dict]] = {}
    if not isinstance(raw, dict):
        return out
    for grade_id, entries in confirm.items():
        got = raw.get(grade_id)
        if not isinstance(got, dict):
            continue
        keys = {case["key"] for entry in entries for case in entry["cases"]}
        for key in keys:
            try:
                out.setdefault(grade_id, {})[key] = loads_outcome(got[key])
            except (KeyError, TypeError, ValueError, RecursionError):
                continue
    return out


__all__ = ["RerunVerdict", "build_plan", "rerun_notebook",
           "targets"]
