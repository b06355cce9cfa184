"""What the sandbox gets instead of the instructor's files: nothing that holds an answer.

- :func:`build_grading_lib` copies the ``course`` package for the sandbox with the library's
  own implementation of each of the lab's exercises *withheld*: every top-level function of
  that name keeps its signature and docstring, and its body becomes
  ``raise NotImplementedError("... withheld while grading ...")``. A student whose answer
  just calls ``course.quant.quantize`` then fails that exercise with a message that says why
  — and reading the library's source inside the sandbox finds no answer either.
- :func:`write_redacted_references` writes the hidden reference cases with their inputs only
  (``call``, ``label``, ``kind``, ``args``, ``kwargs``): the notebook can run the hidden cases,
  the grader judges them against expected values the sandbox never sees.

>>> build_grading_lib({"quantize"}, Path("/tmp/lib"))                 # doctest: +SKIP
['course/quant/affine.py']
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable
from pathlib import Path

from course.grading.encode import dumps, loads

COURSE_PACKAGE = Path(__file__).resolve().parent.parent / "course"
# Never rewritten: the grading code itself.
_KEEP = ("grading",)
_INPUT_FIELDS = ("call", "label", "kind", "args", "kwargs")
WITHHELD_MESSAGE = ("{qualname} is the library's reference implementation of the exercise "
                    "`{name}`: it is withheld while grading. Write your own.")


def withhold_functions(source: str, names: Iterable[str], module: str) -> tuple[str, list[str]]:
    """``source`` with the body of each top-level function in ``names`` replaced by a raise.

    Returns the new source and the names withheld. Everything else (comments, decorators,
    signatures, docstrings, other functions) is kept byte for byte.

    >>> text = "def f(x):\\n    'Doc.'\\n    return x\\n"
    >>> print(withhold_functions(text, {"f"}, "m")[0])           # doctest: +ELLIPSIS
    def f(x):
        'Doc.'
        raise NotImplementedError("m.f is the library's reference implementation ...")
    <BLANKLINE>
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    wanted = set(names)
    lines = source.splitlines(keepends=True)
    spans = []
    for node in ast.parse(source).body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name not in wanted:
            continue
        body = node.body
        docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str)
        if docstring and len(body) > 1:
            body = body[1:]
        first, last = body[0], body[-1]
        spans.append((first.lineno, last.end_lineno, first.col_offset, node.name))
    withheld = []
    for start, end, indent, name in sorted(spans, reverse=True):
        message = WITHHELD_MESSAGE.format(qualname=f"{module}.{name}", name=name)
        if lines[start - 1][:indent].strip():  # body on the def line: `def f(): return 1`
            raise ValueError(f"source: cannot withhold one-line function {name!r}")
        lines[start - 1:end] = [" " * indent + f"raise NotImplementedError({message!r})\n"]
        withheld.append(name)
    return "".join(lines), sorted(withheld)


def build_grading_lib(exercises: Iterable[str], out: Path,
                      package: Path = COURSE_PACKAGE) -> list[str]:
    """Write ``out/course/``: ``package`` with the ``exercises``' implementations withheld.

    Returns the files changed (relative to ``out``). ``out/course`` is replaced if present.
    """
    if not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a path, got {type(out).__name__}")
    names = set(exercises)
    target = Path(out) / package.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    changed = []
    for path in sorted(target.rglob("*.py")):
        relative = path.relative_to(Path(out))
        if relative.parts[1] in _KEEP:
            continue
        source = path.read_text(encoding="utf-8")
        if not any(f"def {name}" in source for name in names):
            continue
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        new, withheld = withhold_functions(source, names, module)
        if withheld:
            compile(new, str(path), "exec")
            path.write_text(new, encoding="utf-8")
            changed.append(relative.as_posix())
    return changed


def redact_cases(cases: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The cases with their inputs only: no expected values, alternatives or notes."""
    return {name: [{k: case[k] for k in _INPUT_FIELDS if k in case} for case in items]
            for name, items in cases.items()}


def write_redacted_references(hidden_file: Path, lab: str, out_dir: Path) -> Path:
    """Write ``out_dir/<lab>.json``: ``hidden_file``'s cases, inputs only. Returns the path."""
    data = loads(Path(hidden_file).read_bytes())
    if data.get("lab") != lab:
        raise ValueError(f"hidden_file: {hidden_file} holds references of {data.get('lab')!r}, "
                         f"not {lab!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{lab}.json"
    path.write_bytes(dumps({"lab": lab, "redacted": True, "cases": redact_cases(data["cases"])}))
    return path


__all__ = ["build_grading_lib", "redact_cases", "withhold_functions",
           "write_redacted_references", "WITHHELD_MESSAGE"]
