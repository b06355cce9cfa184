"""``references``: regenerate the reference outputs the labs' tests compare against.

Each module ``autograder/cases/<name>.py`` (names starting with ``_`` are helpers, skipped)
defines ``LAB: str`` and ``build() -> dict[str, bytes]``, mapping a path relative to the
repository root to the exact bytes that belong there (visible references go to
``solutions/<lab>/`` and are released with the lab; hidden ones stay under
``autograder/``). ``write_references`` writes them and reports what changed;
``stale_references`` only compares, for tests and ``--check``.

>>> changes = write_references()                    # doctest: +SKIP
>>> [(c.path.name, c.status) for c in changes]      # doctest: +SKIP
[('references.json', 'unchanged')]
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from autograder.session import REPO_ROOT

CASES_PACKAGE = "autograder.cases"
HELPER_PREFIX = "_"


@dataclass(frozen=True)
class Reference:
    """One generated file: where it goes, its bytes, and the case module that built it."""

    path: Path
    data: bytes
    case: str


@dataclass(frozen=True, kw_only=True)
class Change:
    """What writing one reference did: ``status`` is 'created', 'changed' or 'unchanged';
    ``detail`` says where a changed file first differs (``first_difference``)."""

    path: Path
    status: str
    case: str
    detail: str = ""


_LAST_BITS = 1e-6
"""Relative differences below this between two floats are last-bit differences."""


def _leaf_difference(where: str, old: object, new: object) -> str | None:
    if type(old) is not type(new) and not (isinstance(old, (int, float))
                                           and isinstance(new, (int, float))):
        return f"{where}: committed {old!r:.80}, built {new!r:.80}"
    if isinstance(old, dict):
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                side = "committed" if key in old else "built"
                return f"{where}.{key}: only in the {side} file"
            found = _leaf_difference(f"{where}.{key}", old[key], new[key])
            if found:
                return found
        return None
    if isinstance(old, list):
        if len(old) != len(new):
            return f"{where}: {len(old)} items committed, {len(new)} built"
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _leaf_difference(f"{where}[{i}]", a, b)
            if found:
                return found
        return None
    if old == new:
        return None
    text = f"{where}: committed {old!r:.80}, built {new!r:.80}"
    if isinstance(old, float) and isinstance(new, float) and old and new \
            and abs(old - new) <= _LAST_BITS * abs(old):
        text += (" (a last-bit float difference: the case computes this value with "
                 "arithmetic that depends on the CPU or thread count; compute it in float64 "
                 "with a fixed order, see autograder/cases/_build.py, rather than "
                 "regenerating)")
    return text


def first_difference(committed: bytes, built: bytes) -> str:
    """Where two reference files first differ, as ``path: committed X, built Y`` (JSON
    paths such as ``cases.requantize[1].expected[0]``), or why they cannot be compared."""
    try:
        old, new = json.loads(committed), json.loads(built)
    except ValueError:
        return "the committed file is not valid JSON" if committed != built else ""
    return _leaf_difference("$", old, new) or "the same values, written differently"


def case_modules(package: str = CASES_PACKAGE) -> list[ModuleType]:
    """The case modules of ``package`` (files starting with ``_`` skipped), by name."""
    if not isinstance(package, str) or not package:
        raise TypeError(f"package must be a dotted module name, got {package!r}")
    try:
        pkg = importlib.import_module(package)
    except ModuleNotFoundError as error:
        if error.name != package:  # the package exists but imports something missing
            raise
        return []
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", []))
        if not info.name.startswith(HELPER_PREFIX) and not info.ispkg
    )
    return [importlib.import_module(f"{package}.{name}") for name in names]


def _resolve(root: Path, relative: object, case: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise TypeError(f"{case}.build(): keys must be relative path strings, got {relative!r}")
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{case}.build(): path {relative!r} must be relative to the repo root")
    return root / path


def build_references(package: str = CASES_PACKAGE, root: Path = REPO_ROOT) -> list[Reference]:
    """Call every case's ``build()``; check what it returns; sorted by path.

    TypeError/ValueError name the case when ``LAB`` or ``build`` is missing, when ``build()``
    returns something other than ``{relative path: bytes}``, or when two cases (or one case
    twice) claim the same file.
    """
    root = Path(root)
    references: dict[Path, Reference] = {}
    for module in case_modules(package):
        case = module.__name__
        lab = getattr(module, "LAB", None)
        if not isinstance(lab, str) or not lab:
            raise TypeError(f"{case}: LAB must be a non-empty str, got {lab!r}")
        build: Callable[[], object] | None = getattr(module, "build", None)
        if not callable(build):
            raise TypeError(f"{case}: build() is missing")
        built = build()
        if not isinstance(built, dict):
            raise TypeError(f"{case}.build() must return a dict, got {type(built).__name__}")
        for relative, data in built.items():
            path = _resolve(root, relative, case)
            if not isinstance(data, bytes):
                raise TypeError(f"{case}.build()[{relative!r}] must be bytes, got "
                                f"{type(data).__name__}")
            if path in references:
                raise ValueError(f"{relative!r} is built by both {references[path].case} and "
                                 f"{case}")
            references[path] = Reference(path, data, case)
    return [references[path] for path in sorted(references)]


def stale_references(package: str = CASES_PACKAGE, root: Path = REPO_ROOT) -> list[Change]:
    """The references whose file is missing or differs from what ``build()`` gives."""
    stale = []
    for ref in build_references(package, root):
        if not ref.path.is_file():
            stale.append(Change(path=ref.path, status="created", case=ref.case))
        elif ref.path.read_bytes() != ref.data:
            stale.append(Change(path=ref.path, status="changed", case=ref.case,
                                detail=first_difference(ref.path.read_bytes(), ref.data)))
    return stale


def write_references(package: str = CASES_PACKAGE, root: Path = REPO_ROOT) -> list[Change]:
    """Write every reference; files whose bytes are already right are left untouched."""
    changes = []
    for ref in build_references(package, root):
        if ref.path.is_file() and ref.path.read_bytes() == ref.data:
            changes.append(Change(path=ref.path, status="unchanged", case=ref.case))
            continue
        status = "changed" if ref.path.exists() else "created"
        ref.path.parent.mkdir(parents=True, exist_ok=True)
        ref.path.write_bytes(ref.data)
        changes.append(Change(path=ref.path, status=status, case=ref.case))
    return changes
