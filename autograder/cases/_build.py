"""Helpers the case modules share: deterministic inputs and case records.

Inputs come from ``random.Random`` (the same numbers on every machine), rounded to float32,
so ``make references`` writes the same bytes everywhere.
"""

from __future__ import annotations

import math
import random

import torch

from course.grading import dumps


def uniform(seed: int, shape: tuple[int, ...], low: float = -1.0,
            high: float = 1.0) -> torch.Tensor:
    """Float32 tensor of ``shape`` with values uniform in [low, high) from ``seed``."""
    rng = random.Random(seed)
    values = [rng.uniform(low, high) for _ in range(math.prod(shape))]
    return torch.tensor(values, dtype=torch.float64).to(torch.float32).reshape(shape)


def integers(seed: int, shape: tuple[int, ...], low: int, high: int,
             dtype: torch.dtype) -> torch.Tensor:
    """Integer tensor of ``shape`` with values in [low, high] from ``seed``."""
    rng = random.Random(seed)
    values = [rng.randint(low, high) for _ in range(math.prod(shape))]
    return torch.tensor(values, dtype=dtype).reshape(shape)


def describe(value: object) -> str:
    """Short text for an argument in a case's displayed call."""
    if isinstance(value, torch.Tensor):
        return f"<{str(value.dtype).replace('torch.', '')} tensor {list(value.shape)}>"
    if isinstance(value, dict) and "__model__" in value:
        return f"<{value['__model__']} model, seed {value['seed']}>"
    if isinstance(value, float):
        return repr(value) if len(repr(value)) <= 10 else f"{value:.6g}"
    return repr(value)


def case(fn: str, label: str, kind: str, args: list, expected: object, *,
         kwargs: dict | None = None, **extra: object) -> dict:
    """One reference case: how to call ``fn``, what it must give, and why."""
    kwargs = kwargs or {}
    shown = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    record = {"call": f"{fn}({', '.join(shown)})", "label": label, "kind": kind,
              "args": args, "kwargs": kwargs, "expected": expected}
    record.update({k: v for k, v in extra.items() if v not in (None, [], {})})
    return record


def distinct(expected: torch.Tensor, variants: list[torch.Tensor]) -> list[torch.Tensor]:
    """The variants whose values differ from ``expected`` (other valid implementations)."""
    out = []
    for v in variants:
        v = v.to(expected.dtype)
        if not torch.equal(v, expected) and not any(torch.equal(v, o) for o in out):
            out.append(v)
    return out


def reference_files(lab: str, exercises: dict) -> dict[str, bytes]:
    """The visible and hidden reference files of ``lab``, as ``{path from repo root: bytes}``.

    ``exercises`` maps an exercise name to ``make(hidden: bool) -> list of cases``.
    """
    out = {}
    for hidden, path in ((False, f"solutions/{lab}/references.json"),
                         (True, f"autograder/references/{lab}.json")):
        cases = {name: make(hidden) for name, make in exercises.items()}
        out[path] = dumps({"lab": lab, "hidden": hidden, "cases": cases,
                           "generated_by": f"make references (autograder/cases/{lab}.py)"})
    return out


def quantize_variants(x, scale, zero_point, qmin, qmax) -> list[torch.Tensor]:
    """Integer codes (int64) of ``x`` by other valid implementations of ``quantize``: other
    rounding paths that can land on the other side of a near-tie."""
    s = torch.as_tensor(scale, dtype=torch.float32)
    s64 = torch.as_tensor(scale, dtype=torch.float64)
    outs = [
        torch.round(x * (1.0 / s)),                           # multiply by the reciprocal
        torch.round(x.double() / s64),                        # float64 arithmetic
        torch.round(x.double() * (1.0 / s64)),
    ]
    return [torch.clamp(o + torch.as_tensor(zero_point), qmin, qmax).to(torch.int64) for o in outs]
