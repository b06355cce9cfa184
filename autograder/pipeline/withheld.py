"""What the sandbox gets instead of the instructor's files: nothing that holds an answer.

- :func:`build_grading_lib` copies the ``course`` package for the sandbox with the library's
  own implementations of the lab's exercises *withheld*: every top-level function named like
  an exercise, and every object the lab *declares* (``WITHHELD`` in
  ``autograder/cases/<lab>.py``: exercise -> ``"module:qualname"`` of each function, class,
  method or helper of the library that computes that exercise's answer — a class stands for
  every function defined in its body) keeps its signature and docstring, and its body
  becomes ``raise NotImplementedError("... withheld while grading ...")``. Aliases (a name
  re-exported by a package, ``sign_ste = SignSTE.apply``) are the same objects, so they are
  withheld too. A student whose answer calls ``course.quant.quantize`` or
  ``FakeQuantize(...)`` then fails that exercise with a message that says why — and reading
  the library's source inside the sandbox finds no answer either. Outside grading the
  library is untouched: the students' experiments use it as it is.
- :func:`write_redacted_references` writes the hidden reference cases with their inputs only
  (``call``, ``label``, ``kind``, ``args``, ``kwargs``): the notebook can run the hidden cases,
  the grader judges them against expected values the sandbox never sees.

>>> build_grading_lib({"quantize"}, Path("/tmp/lib"))                 # doctest: +SKIP
['course/quant/affine.py']
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from course.grading.encode import dumps, loads

COURSE_PACKAGE = Path(__file__).resolve().parents[2] / "course"
# Never rewritten: the grading code itself.
_KEEP = ("grading",)
_INPUT_FIELDS = ("call", "label", "kind", "args", "kwargs")
WITHHELD_MESSAGE = ("{qualname} is the library's reference implementation of the exercise "
                    "`{name}`: it is withheld while grading. Write your own.")


def withhold_functions(source: str, names: Iterable[str], module: str) -> tuple[str, list[str]]:
    """``source`` with the body of each top-level function in ``names`` replaced by a raise
    (each is the reference implementation of the exercise of its own name).

    Returns the new source and the names withheld. Everything else (comments, decorators,
    signatures, docstrings, other functions) is kept byte for byte.

    >>> text = "def f(x):\\n    'Doc.'\\n    return x\\n"
    >>> print(withhold_functions(text, {"f"}, "m")[0])           # doctest: +ELLIPSIS
    def f(x):
        'Doc.'
        raise NotImplementedError("m.f is the library's reference implementation ...")
    <BLANKLINE>
    """
    return withhold_objects(source, {name: name for name in names}, module, strict=False)


def _definitions(tree: ast.Module) -> dict[str, ast.AST]:
    """qualname -> node of every top-level function and class, and of every function
    defined directly in a top-level class's body (``Class.method``)."""
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{item.name}"] = item
    return found


def withhold_objects(source: str, objects: Mapping[str, str], module: str,
                     strict: bool = True) -> tuple[str, list[str]]:
    """``source`` with each function of ``objects`` (qualname -> exercise) withheld.

    A qualname is a top-level function (``quantize``), a method (``SignSTE.backward``) or a
    class (``FakeQuantize``: every function defined in its body). Returns the new source and
    the qualnames of the functions withheld. ``strict``: a qualname not defined in
    ``source`` is a ValueError (a declaration that went stale), else it is skipped.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    lines = source.splitlines(keepends=True)
    definitions = _definitions(ast.parse(source))
    targets: dict[str, tuple[ast.AST, str]] = {}
    for qualname, exercise in objects.items():
        node = definitions.get(qualname)
        if node is None:
            if strict:
                raise ValueError(f"objects: {module} defines no {qualname!r}")
            continue
        if isinstance(node, ast.ClassDef):
            methods = [f"{qualname}.{item.name}" for item in node.body
                       if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
            if not methods and strict:
                raise ValueError(f"objects: class {module}.{qualname} defines no function")
            for method in methods:
                targets.setdefault(method, (definitions[method], exercise))
        else:
            targets[qualname] = (node, exercise)
    spans = []
    for qualname, (node, exercise) in targets.items():
        body = node.body
        docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str)
        if docstring and len(body) > 1:
            body = body[1:]
        first, last = body[0], body[-1]
        spans.append((first.lineno, last.end_lineno, first.col_offset, qualname, exercise))
    withheld = []
    for start, end, indent, qualname, exercise in sorted(spans, reverse=True):
        message = WITHHELD_MESSAGE.format(qualname=f"{module}.{qualname}", name=exercise)
        if lines[start - 1][:indent].strip():  # body on the def line: `def f(): return 1`
            raise ValueError(f"source: cannot withhold one-line function {qualname!r}")
        lines[start - 1:end] = [" " * indent + f"raise NotImplementedError({message!r})\n"]
        withheld.append(qualname)
    return "".join(lines), sorted(withheld)


def split_declared(declared: Mapping[str, Iterable[str]]) -> dict[str, dict[str, str]]:
    """``{exercise: ["module:qualname", ...]}`` -> ``{module: {qualname: exercise}}``.

    ValueError for a name without ``module:qualname`` form or outside ``course``.
    """
    out: dict[str, dict[str, str]] = {}
    for exercise, names in declared.items():
        if isinstance(names, str):
            raise TypeError(f"declared[{exercise!r}] must be a list of names, not one string")
        for name in names:
            module, sep, qualname = str(name).partition(":")
            if not sep or not qualname or not (module == "course" or
                                               module.startswith("course.")):
                raise ValueError(f"declared[{exercise!r}]: {name!r} is not "
                                 "'course.module:qualname'")
            out.setdefault(module, {}).setdefault(qualname, exercise)
    return out


def declared_withheld(lab: str) -> dict[str, tuple[str, ...]]:
    """The lab's declaration: ``WITHHELD`` of ``autograder.cases.<lab>`` (empty if the lab
    has no case module, like the toy lab)."""
    import importlib

    try:
        module = importlib.import_module(f"autograder.cases.{lab}")
    except ModuleNotFoundError:
        return {}
    return dict(getattr(module, "WITHHELD", {}))


def build_grading_lib(exercises: Iterable[str], out: Path,
                      package: Path = COURSE_PACKAGE,
                      declared: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Write ``out/course/``: ``package`` with the ``exercises``' implementations withheld:
    top-level functions named like an exercise, and every object ``declared`` (exercise ->
    ``"module:qualname"`` names, see the module docstring; each must exist).

    Returns the files changed (relative to ``out``). ``out/course`` is replaced if present.
    """
    if not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a path, got {type(out).__name__}")
    names = set(exercises)
    by_module = split_declared(declared or {})
    target = Path(out) / package.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    changed = []
    for path in sorted(target.rglob("*.py")):
        relative = path.relative_to(Path(out))
        if relative.parts[1] in _KEEP:
            continue
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        objects = by_module.pop(module, {})
        source = path.read_text(encoding="utf-8")
        if not objects and not any(f"def {name}" in source for name in names):
            continue
        new, withheld = withhold_functions(source, names, module)
        new, more = withhold_objects(new, objects, module)
        if withheld or more:
            compile(new, str(path), "exec")
            path.write_text(new, encoding="utf-8")
            changed.append(relative.as_posix())
    if by_module:
        raise ValueError(f"declared: no such module in {package}: {', '.join(sorted(by_module))}")
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


__all__ = ["build_grading_lib", "declared_withheld", "redact_cases", "split_declared",
           "withhold_functions", "withhold_objects", "write_redacted_references",
           "WITHHELD_MESSAGE"]
