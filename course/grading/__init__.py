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

import torch
from torch import nn

from course.grading import fixtures
from course.grading.compare import Mismatch, close, compare_tensor, to_int, to_real
from course.grading.encode import dumps, loads

__all__ = ["Mismatch", "check", "load_cases", "references_path", "dumps", "loads", "grading"]

REFERENCES_FILE = "references.json"
"""Name of the visible reference file inside a lab folder."""

_REPO = Path(__file__).resolve().parents[2]
_Module, _isinstance, _print, _type = nn.Module, isinstance, print, type
_catch_warnings = warnings.catch_warnings


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


def _materialize(arg: Any) -> Any:
    if _isinstance(arg, dict) and "__model__" in arg:
        return fixtures.build(arg["__model__"], arg["seed"])
    return arg


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _check_model(got: Any, case: dict, model: nn.Module, before: dict) -> None:
    for key, value in model.state_dict().items():
        if not torch.equal(value, before[key]):
            raise Mismatch(f"the input model was modified ('{key}' changed); work on "
                           "copy.deepcopy(model) and leave the input as it was")
    if not _isinstance(got, _Module):
        raise Mismatch(f"expected an nn.Module, got {_type(got).__name__}")
    if got is model:
        raise Mismatch("returned the input model itself; return a quantized deep copy")
    state = got.state_dict()
    expected: dict = case["expected"]
    if sorted(state) != sorted(expected):
        raise Mismatch(f"the returned model's state_dict keys {sorted(state)} differ from the "
                       f"input model's {sorted(expected)}")
    quantized = set(case.get("quantized", ()))
    for key, exp in expected.items():
        what = f"returned model's '{key}'"
        try:
            compare_tensor(state[key], exp, what, case.get("alternatives", {}).get(key, []),
                           integer=not exp.is_floating_point())
        except Mismatch as err:
            if key in quantized:
                raise
            raise Mismatch(f"{err} — only Linear and Conv2d weights change; biases, batch "
                           "norm and activations stay untouched") from None


def _run_case(fn: Any, case: dict) -> None:
    args = [_materialize(a) for a in case.get("args", [])]
    kwargs = {k: _materialize(v) for k, v in case.get("kwargs", {}).items()}
    kind = case["kind"]
    model = next((a for a in args if _isinstance(a, _Module)), None)
    before = _snapshot(model) if model is not None else None
    try:
        got = fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any student error is a failed case
        if kind == "raises":
            names = {cls.__name__ for cls in _type(err).__mro__}
            if case["expected"] in names:
                return
            raise Mismatch(f"raised {_type(err).__name__}({err}), expected "
                           f"{case['expected']}") from None
        if _isinstance(err, NotImplementedError) and not str(err):
            raise Mismatch("raised NotImplementedError: not answered yet") from None
        raise Mismatch(f"raised {_type(err).__name__}: {err}") from None
    if kind == "raises":
        raise Mismatch(f"returned {got!r} instead of raising {case['expected']}")
    expected = case["expected"]
    alternatives = case.get("alternatives", [])
    if kind == "int_tuple":
        if not _isinstance(got, (tuple, list)) or len(got) != len(expected):
            raise Mismatch(f"expected a tuple of {len(expected)} ints like {expected}, got {got!r}")
        values = tuple(to_int(v, f"item {i}") for i, v in enumerate(got))
        if values != tuple(expected):
            raise Mismatch(f"expected {tuple(expected)}, got {values}")
    elif kind == "qparams":
        if not _isinstance(got, (tuple, list)) or len(got) != 2:
            raise Mismatch(f"expected a tuple (scale, zero_point), got {got!r}")
        scale, zp = to_real(got[0], "scale"), to_int(got[1], "zero_point")
        ok = any(close(scale, s, case.get("rtol", 1e-6), 0.0) and zp == z
                 for s, z in [expected, *alternatives])
        if not ok:
            raise Mismatch(f"expected (scale, zero_point) = ({expected[0]:.9g}, {expected[1]}), "
                           f"got ({scale:.9g}, {zp})" + _note(case))
    elif kind == "float":
        value = to_real(got, "the result")
        if not any(close(value, e, case.get("rtol", 1e-5), case.get("atol", 0.0))
                   for e in [expected, *alternatives]):
            raise Mismatch(f"expected {expected:.9g}, got {value:.9g}" + _note(case))
    elif kind in ("int_tensor", "float_tensor"):
        compare_tensor(got, expected, "the result", alternatives, case.get("notes"),
                       integer=kind == "int_tensor", rtol=case.get("rtol", 1e-5),
                       atol=case.get("atol", 1e-7))
    elif kind == "model":
        _check_model(got, case, model, before)
    else:
        raise ValueError(f"unknown case kind {kind!r}")


def _note(case: dict) -> str:
    return f" — {case['note']}" if case.get("note") else ""


def check(lab: str, name: str, fn: Any, hidden: bool = False) -> None:
    """Run every reference case of exercise ``name`` of ``lab`` on ``fn``.

    Prints one line when all pass; raises :class:`Mismatch` naming the first failing case
    (its label and call) and the number of failures. Returns None on purpose: nbgrader reads
    a number shown as a test cell's result as partial credit. Warnings raised by the student's
    code are kept out of the cell's stderr, which nbgrader would count as a failure.
    """
    cases = load_cases(lab, hidden).get(name)
    if not cases:
        raise KeyError(f"{lab} has no {'hidden' if hidden else 'visible'} cases for {name!r}")
    if not callable(fn):
        raise Mismatch(f"{name} must be a function, got {_type(fn).__name__}")
    failures = []
    with _catch_warnings(record=True):
        for case in cases:
            try:
                _run_case(fn, case)
            except Mismatch as err:
                failures.append(f"{case['call']} [{case['label']}]: {err}")
    kind = "hidden" if hidden else "visible"
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise Mismatch(f"{name}: {len(failures)} of {len(cases)} {kind} checks failed. "
                       f"{failures[0]}{more}")
    _print(f"{name}: all {len(cases)} {kind} checks passed")
