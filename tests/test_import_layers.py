"""The import-layer contract of the library, read from the source (no module is imported).

Layers, each importing only itself and the layers before it:

    course.quant  <-  course.observe  <-  course.kernels  <-  course.nn  <-  course.methods

(the labs and the other rooms of ``course`` sit on top). The top-level rooms (``data``,
``models``, ``train``, ``measure``, ``plots``, ...) may not be imported by quant, observe or
kernels. No two rooms of ``course`` import each other, directly or round a cycle (run-time
and ``TYPE_CHECKING`` imports alike). The autograder reaches the library only through
``course.grading`` — except its reference builders (``autograder/cases``), which compute the
expected answers with the library, and the withheld probe, which walks the whole package
to check that every withheld object raises. ``make lint`` runs this file.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COURSE = REPO / "course"
LAYERS = ("quant", "observe", "kernels", "nn", "methods")
"""The layered rooms, lowest first."""
PRIMITIVE = LAYERS[:3]
"""Rooms that may import no top-level room of the course."""


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; ``from a import b`` gives ``a`` and
    ``a.b``, so that ``from course import data`` names ``course.data``)."""
    module = module_name(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "course" and len(parts) > 1 else None


def course_edges() -> dict[str, dict[str, set[str]]]:
    """room -> imported room -> the importing files (relative paths)."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(COURSE.rglob("*.py")):
        source = room(module_name(path)) or "__init__"
        for name in imported(path):
            target = room(name)
            if target and target != source:
                edges[source][target].add(path.relative_to(REPO).as_posix())
    return edges


def test_each_layer_imports_only_the_layers_below_it():
    edges = course_edges()
    wrong = []
    for level, layer in enumerate(LAYERS):
        for target, files in edges.get(layer, {}).items():
            if target in LAYERS and LAYERS.index(target) > level:
                wrong.append(f"{layer} -> {target} ({', '.join(sorted(files))})")
    assert not wrong, "a layer imports one above it:\n" + "\n".join(wrong)


def test_primitives_import_no_top_level_room():
    edges = course_edges()
    wrong = [f"{layer} -> {target} ({', '.join(sorted(files))})"
             for layer in PRIMITIVE for target, files in edges.get(layer, {}).items()
             if target not in LAYERS]
    assert not wrong, "quant / observe / kernels import a top-level room:\n" + "\n".join(wrong)


def test_quant_imports_nothing_else_of_the_course():
    assert set(course_edges().get("quant", {})) == set()


def test_no_import_cycle_between_rooms():
    edges = {source: set(targets) for source, targets in course_edges().items()}

    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == goal:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = set()
    for source, targets in edges.items():
        for target in targets:
            back = reaches(target, source)
            if back is not None:
                cycles.add(" -> ".join([source] + back))
    assert not cycles, "import cycles between rooms:\n" + "\n".join(sorted(cycles))


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_exists(layer):
    assert (COURSE / layer / "__init__.py").is_file()


def test_the_autograder_reaches_the_library_through_course_grading_only():
    wrong = []
    for path in sorted((REPO / "autograder").rglob("*.py")):
        relative = path.relative_to(REPO)
        if "cases" in relative.parts or path.stem == "withheld_probe" or "work" in relative.parts:
            continue
        for name in imported(path):
            if name.split(".")[0] != "course":
                continue
            if name == "course" or name == "course.grading" or name.startswith("course.grading."):
                continue
            wrong.append(f"{relative.as_posix()}: {name}")
    assert not wrong, "the autograder imports the library beside course.grading:\n" + \
        "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walker itself: a relative and an absolute import are both resolved."""
    package = tmp_path / "course" / "quant"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    probe = package / "probe.py"
    probe.write_text("from ..nn import swap\nimport course.methods.direct\n")
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        names = imported(probe)
    finally:
        REPO = saved
    assert {"course.nn", "course.nn.swap", "course.methods.direct"} <= names
