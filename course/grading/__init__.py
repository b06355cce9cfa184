"""What notebook test cells call: check a student's function against reference outputs.

A test cell is one line::

    from course.grading import check
    check("lab01_direct_quantization", "quantize", quantize)               # visible cases
    check("lab01_direct_quantization", "quantize", quantize, hidden=True)  # hidden cases

Reference cases are JSON files written by ``make references`` from the library's own
implementation (``autograder/cases/<lab>.py``): the visible ones travel with the released lab
as ``references.json``; the hidden ones stay in ``autograder/references/<lab>.json``.
A failing check raises :class:`Mismatch` (an AssertionError) whose message says which case,
which element, what was expected and what came back, and why when the reason is known
(a tie rounded the wrong way, a value not clamped, the input model modified ...).
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

from course.grading.compare import Mismatch
from course.grading.encode import dumps, loads
from course.grading.outcome import capture, dumps_outcome, judge, loads_outcome
from course.grading.quiet import HEADING, StderrCapture
from course.grading.record import append_record

__all__ = ["Mismatch", "check", "load_cases", "references_path", "dumps", "loads", "grading"]

REFERENCES_FILE = "references.json"
"""Name of the visible reference file inside a lab folder."""

_REPO = Path(__file__).resolve().parents[2]


def grading() -> bool:
    """True while nbgrader executes the notebook (autograde or validate)."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def references_path(lab: str, hidden: bool) -> Path:
    """Where the reference cases of ``lab`` are read from.

    Visible: ``references.json`` in the current folder (the lab's own folder when Jupyter
    runs it), else the checkout's ``labs/<lab>/`` or ``solutions/<lab>/``.
    Hidden: ``$COURSE_REFERENCES_DIR/<lab>.json`` or the checkout's
    ``autograder/references/<lab>.json``.
    """
    if hidden:
        base = os.environ.get("COURSE_REFERENCES_DIR")
        return Path(base or _REPO / "autograder" / "references") / f"{lab}.json"
    candidates = [Path.cwd() / REFERENCES_FILE, _REPO / "labs" / lab / REFERENCES_FILE,
                  _REPO / "solutions" / lab / REFERENCES_FILE]
    return next((p for p in candidates if p.is_file()), candidates[0])


@functools.lru_cache(maxsize=16)
def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def load_cases(lab: str, hidden: bool = False) -> dict[str, list[dict]]:
    """All reference cases of ``lab``: exercise name -> list of cases (fresh objects)."""
    path = references_path(lab, hidden)
    if not path.is_file():
        where = "the instructor's checkout (autograder/references/)" if hidden else "the lab folder"
        raise FileNotFoundError(f"reference outputs for {lab} not found at {path}; they live in "
                                f"{where} — run `make references` in the course repository")
    data = loads(_read(str(path)))
    if data.get("lab") != lab:
        raise ValueError(f"{path} holds references of {data.get('lab')!r}, not {lab!r}")
    return data["cases"]


def _bind_check(load_cases, capture, append_record, judge, dumps_outcome, loads_outcome,
                StderrCapture, catch_warnings, print, type, callable, enumerate, len, any,
                Mismatch, KeyError, HEADING):
    """``check``, with every name it uses bound now, as closure variables.

    A notebook that rebinds ``course.grading.capture``, ``course.grading.record.append_record``
    or a builtin after this module was imported changes nothing that ``check`` does. (Code that
    reaches into the closure itself can still change what the kernel records; the grader does
    not take the kernel's word for the outcomes that need no secret to forge — raised errors,
    unmodified inputs — see ``autograder/judging/verdicts.py``.)
    """

    def check(lab: str, name: str, fn: Any, hidden: bool = False) -> None:
        """Run every reference case of exercise ``name`` of ``lab`` on ``fn``.

        Prints one line when all pass; raises :class:`Mismatch` naming the first failing case
        (its label and call) and the number of failures. Returns None on purpose: nbgrader
        reads a number shown as a test cell's result as partial credit. Warnings raised by the
        student's code, and whatever it writes to stderr (``sys.stderr``, file descriptor 2,
        ``logging``), are kept out of the cell's stderr, which nbgrader would count as a
        failure: what was written is printed to stdout under a heading instead
        (``course.grading.quiet``).

        Each case's outcome is captured as plain data (``course.grading.outcome``) and judged
        from that data alone. Under the autograder every outcome is also appended to the
        record file (``course.grading.record``) and the grader judges it again in its own
        process; there the hidden references hold inputs only, so this call runs the hidden
        cases and the verdict is the grader's.
        """
        cases = load_cases(lab, hidden).get(name)
        if not cases:
            raise KeyError(f"{lab} has no {'hidden' if hidden else 'visible'} cases for "
                           f"{name!r}")
        if not callable(fn):
            raise Mismatch(f"{name} must be a function, got {type(fn).__name__}")
        kind = "hidden" if hidden else "visible"
        withheld = any("expected" not in case for case in cases)
        failures = []
        with catch_warnings(record=True), StderrCapture() as written:
            for index, case in enumerate(cases):
                outcome = capture(fn, case)
                append_record(lab, name, hidden, index, outcome)
                if withheld:
                    continue
                try:
                    judge(loads_outcome(dumps_outcome(outcome)), case)
                except Mismatch as err:
                    failures.append(f"{case['call']} [{case['label']}]: {err}")
        text = written.text()
        if text:
            print(f"{HEADING}\n{text}", end="" if text.endswith("\n") else "\n")
        if withheld:
            print(f"{name}: {len(cases)} {kind} cases ran; the grader judges their results")
            return
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise Mismatch(f"{name}: {len(failures)} of {len(cases)} {kind} checks failed. "
                           f"{failures[0]}{more}")
        print(f"{name}: all {len(cases)} {kind} checks passed")

    return check


check = _bind_check(load_cases, capture, append_record, judge, dumps_outcome, loads_outcome,
                    StderrCapture, warnings.catch_warnings, print, type, callable, enumerate,
                    len, any, Mismatch, KeyError, HEADING)
