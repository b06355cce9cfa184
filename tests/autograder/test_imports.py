"""The autograder's import structure (issue 10): every module imports; the grader reaches the
course library only through ``course.grading``; its subpackages import one another one way.

Read from the source with ``ast`` (every ``import`` statement, also those inside functions),
so that a lazy import inside a function counts like one at the top of a module.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from autograder.session import REPO_ROOT

PACKAGE = REPO_ROOT / "autograder"
COURSE_ALLOWED = "course.grading"
NOT_THE_GRADER = {
    "cases": "lab case modules build the references from the library itself",
    "pipeline/withheld_probe.py": "runs inside the sandbox, on the grading copy of course",
}
"""Paths (relative to ``autograder/``) exempt from the ``course.grading`` rule, and why."""
NOT_IMPORTED = {"__main__.py": "runs the command line when imported"}


def _modules() -> list[Path]:
    skip = ("work", "references")
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.relative_to(PACKAGE).parts[0] not in skip)


def _name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = _name(path) if path.name == "__init__.py" else _name(path).rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module)
    return names


def _exempt(path: Path) -> bool:
    relative = path.relative_to(PACKAGE).as_posix()
    return any(relative == key or relative.startswith(key + "/") for key in NOT_THE_GRADER)


def _unit(module: str) -> str:
    """The part of ``autograder`` a module belongs to: its subpackage, or itself if it is a
    top-level module (``autograder.cli``, ``autograder.session`` ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("path", [p for p in _modules() if p.name not in NOT_IMPORTED],
                         ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_every_module_imports(path):
    importlib.import_module(_name(path))


def test_the_grader_imports_the_course_only_through_course_grading():
    wrong = [f"{path.relative_to(REPO_ROOT)} imports {name}"
             for path in _modules() if not _exempt(path)
             for name in _imports(path)
             if (name == "course" or name.startswith("course."))
             and not (name == COURSE_ALLOWED or name.startswith(COURSE_ALLOWED + "."))]
    assert wrong == []


def _unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _modules():
        unit = _unit(_name(path))
        graph.setdefault(unit, set())
        for name in _imports(path):
            if name.startswith("autograder.") and _unit(name) != unit:
                graph[unit].add(_unit(name))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a list of nodes (first == last), or [] if it has none."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_subpackages_import_one_another_without_a_cycle():
    graph = _unit_graph()
    assert {"sandbox", "pipeline", "judging", "preprocessors", "gradebook", "commands"} \
        <= set(graph)
    assert _cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


LAYERS = ("session", "sandbox", "judging", "preprocessors", "pipeline", "gradebook",
          "commands", "cli")
"""The grader's parts, each importing only parts before it (``autograder/README.md``)."""


def test_each_part_imports_only_the_parts_below_it():
    graph = _unit_graph()
    wrong = {unit: sorted(graph[unit] - set(LAYERS[:index]))
             for index, unit in enumerate(LAYERS) if graph[unit] - set(LAYERS[:index])}
    assert wrong == {}
