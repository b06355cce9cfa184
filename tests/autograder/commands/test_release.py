"""Release and references: labs/ is generated from solutions/, bytes for bytes.

- the source-region helpers against hand-written cells;
- ``release`` on a toy source assignment: deterministic bytes, outputs and execution counts
  stripped, no solution code and no hidden tests left, the lab's other files copied, the
  gradebook untouched;
- the repository: labs/ in sync with solutions/, committed notebooks without outputs,
  released labs without solutions or hidden tests, references equal to what ``build()`` gives.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import nbformat
import pytest

from autograder.preprocessors.regions import (
    HIDDEN_TESTS,
    MARK_SCHEME,
    SOLUTION,
    has_region,
    region_lines,
    replace_regions,
)
from autograder.session import REPO_ROOT, CourseLayout, load_config
from tests.autograder.toy_lab import HIDDEN_MARKER, REFERENCES, TOY_LAB, write_toy_lab

REPO_LAYOUT = CourseLayout.from_config()
REPO_LABS = REPO_LAYOUT.labs()


# ----------------------------------------------------------------------------- regions
CELL = textwrap.dedent(
    """\
    def f(x):
        y = 1
        ### BEGIN SOLUTION
        y = 2 * x
        return y
        ### END SOLUTION
    # after"""
)


def test_region_lines_are_the_lines_strictly_inside():
    assert region_lines(CELL, SOLUTION) == ["    y = 2 * x", "    return y"]
    assert region_lines(CELL, HIDDEN_TESTS) == []
    assert has_region(CELL, SOLUTION) and not has_region(CELL, HIDDEN_TESTS)


def test_replace_regions_indents_like_the_begin_line_and_keeps_the_rest():
    replaced = replace_regions(CELL, SOLUTION, "a = 0\nreturn a")
    assert replaced == "def f(x):\n    y = 1\n    a = 0\n    return a\n# after"
    two = "### BEGIN HIDDEN TESTS\nx\n### END HIDDEN TESTS\nkeep\n### BEGIN HIDDEN TESTS\ny\n" \
          "### END HIDDEN TESTS"
    assert replace_regions(two, HIDDEN_TESTS, "") == "\nkeep\n"
    assert region_lines(two, HIDDEN_TESTS) == ["x", "y"]


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx", "never closed"),
        ("x\n### END SOLUTION", "without a begin"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "nested"),
    ],
)
def test_malformed_regions_raise_naming_the_problem(source, message):
    with pytest.raises(ValueError, match=message):
        region_lines(source, SOLUTION)


def test_region_helpers_check_their_arguments():
    with pytest.raises(TypeError, match="source"):
        has_region(b"### BEGIN SOLUTION", SOLUTION)
    with pytest.raises(TypeError, match="delimiters"):
        region_lines("x", ("BEGIN", "END"))
    with pytest.raises(TypeError, match="replacement"):
        replace_regions("x", SOLUTION, None)


# ----------------------------------------------------------------------------- layout
def test_layout_rejects_paths_that_leave_the_root(tmp_path):
    with pytest.raises(ValueError, match="release"):
        CourseLayout(root=tmp_path, release="../elsewhere")
    with pytest.raises(ValueError, match="work"):
        CourseLayout(root=tmp_path, work="/abs/work")
    with pytest.raises(TypeError, match="root"):
        CourseLayout(root=3)
    with pytest.raises(ValueError, match="lab"):
        CourseLayout(root=tmp_path).lab_notebooks("lab+1")
    with pytest.raises(ValueError, match="no notebook"):
        CourseLayout(root=tmp_path).lab_notebooks("missing_lab")


# ----------------------------------------------------------------------------- helpers
def notebook_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.ipynb")) if folder.is_dir() else []


def outputs_and_counts(path: Path) -> list[str]:
    """Cells of ``path`` (raw JSON, as committed) that carry outputs or execution counts."""
    notebook = json.loads(path.read_text())
    dirty = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            dirty.append(cell.get("id", "?"))
    return dirty


def _text(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


# nbgrader's stubs (ClearSolutions.code_stub["python"], .text_stub): released on purpose.
STUB_LINES = {"# YOUR CODE HERE", "raise NotImplementedError()", "YOUR ANSWER HERE"}


def leaked_lines(source_nb: Path, released_nb: Path) -> list[str]:
    """Lines of solutions, hidden tests or mark schemes of ``source_nb`` that appear in the
    same cell of ``released_nb`` (cells matched by id) -- except nbgrader's stubs and lines
    that the source cell also has outside those regions."""
    released = {c["id"]: _text(c["source"]) for c in json.loads(released_nb.read_text())["cells"]}
    leaks = []
    for cell in json.loads(source_nb.read_text())["cells"]:
        source = _text(cell["source"])
        meta = cell.get("metadata", {}).get("nbgrader", {})
        secret = []
        for delimiters in (SOLUTION, HIDDEN_TESTS, MARK_SCHEME):
            secret += region_lines(source, delimiters)
        public = source
        for delimiters in (SOLUTION, HIDDEN_TESTS, MARK_SCHEME):
            public = replace_regions(public, delimiters, "")
        if meta.get("solution") and not has_region(source, SOLUTION):
            secret, public = source.split("\n"), ""  # the whole cell is the answer
        public_lines = {line.strip() for line in public.split("\n")} | STUB_LINES
        out = {line.strip() for line in released.get(cell["id"], "").split("\n")}
        leaks += [
            line for line in secret
            if line.strip() and line.strip() not in public_lines and line.strip() in out
        ]
    return leaks


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


IGNORE = tuple(load_config().CourseDirectory.ignore)


def lab_bytes(folder: Path) -> dict[str, bytes]:
    """A lab folder's own files (a user's leftovers skipped), by relative path."""
    from autograder.commands.release import lab_files

    return {str(p.relative_to(folder)): p.read_bytes() for p in lab_files(folder, IGNORE)}


def first_notebook_difference(committed: bytes, built: bytes) -> str:
    """The first cell (by id) whose source differs, else 'metadata or outputs'."""
    from autograder.commands.references import first_difference

    try:
        old, new = json.loads(committed), json.loads(built)
    except ValueError:
        return "not JSON: the bytes differ"
    if "cells" not in new:
        return first_difference(committed, built)
    for a, b in zip(old.get("cells", []), new.get("cells", []), strict=False):
        if a.get("source") != b.get("source"):
            return f"cell {b.get('id') or a.get('id')!r} has other source"
    if len(old.get("cells", [])) != len(new.get("cells", [])):
        return f"{len(old.get('cells', []))} cells committed, {len(new.get('cells', []))} built"
    return "metadata or outputs differ"


def test_a_users_leftovers_are_not_part_of_a_lab(tmp_path):
    from autograder.commands.release import ignored, lab_files

    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "lab-checkpoint.ipynb").write_text("{}")
    for name in ("lab.ipynb", "references.json", "results.json"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in lab_files(tmp_path, IGNORE)] == ["lab.ipynb", "references.json"]
    assert ignored(Path(".cache/numba/x.nbi"), IGNORE)
    assert not ignored(Path("references.json"), IGNORE)


# ----------------------------------------------------------------------------- toy release
@pytest.fixture()
def toy_course(tmp_path):
    notebook = write_toy_lab(tmp_path)
    # A source notebook saved after running: outputs and counts must not reach the release.
    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = 7
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    nbformat.write(nb, str(notebook))
    return CourseLayout.from_config(root=tmp_path)


@pytest.mark.slow
def test_release_is_deterministic_stripped_and_without_solutions(toy_course):
    from autograder.commands.release import release

    layout = toy_course
    released = release([TOY_LAB], layout)
    folder = layout.release_dir / TOY_LAB
    assert [p.name for p in released[TOY_LAB]] == ["references.json", f"{TOY_LAB}.ipynb"]
    first = tree_bytes(folder)

    release(None, layout)  # all labs, again
    assert tree_bytes(folder) == first, "releasing twice must give identical bytes"

    notebook = folder / f"{TOY_LAB}.ipynb"
    assert outputs_and_counts(notebook) == []
    text = notebook.read_text()
    for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", HIDDEN_MARKER, "return x * x"):
        assert marker not in text
    assert "raise NotImplementedError()" in text
    assert leaked_lines(layout.source_dir / TOY_LAB / f"{TOY_LAB}.ipynb", notebook) == []
    # visible tests stay, locked
    cells = {c.id: c for c in nbformat.read(str(notebook), as_version=4).cells}
    assert 'check(LAB, "cube", cube)' in cells["test_cube"].source
    assert cells["test_cube"].metadata["editable"] is False
    assert json.loads((folder / "references.json").read_text()) == REFERENCES
    # the release records nothing: no gradebook, no work folder
    assert not layout.work_dir.exists()


@pytest.mark.slow
def test_release_reports_unknown_labs_and_broken_sources(toy_course):
    from autograder.commands.release import release
    from autograder.session import GradingError

    with pytest.raises(ValueError, match="no_such_lab"):
        release(["no_such_lab"], toy_course)
    with pytest.raises(TypeError, match="labs"):
        release(TOY_LAB, toy_course)
    notebook = toy_course.source_dir / TOY_LAB / f"{TOY_LAB}.ipynb"
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace("### END SOLUTION", "")  # unclosed region
    nbformat.write(nb, str(notebook))
    with pytest.raises(GradingError, match=TOY_LAB):
        release([TOY_LAB], toy_course)


def test_leak_detector_finds_a_solution_left_in_a_release(tmp_path):
    """The check used on the real labs must see a solution that survived."""
    source = write_toy_lab(tmp_path)
    assert leaked_lines(source, source) != []


# ----------------------------------------------------------------------------- the repository
def test_committed_notebooks_have_no_outputs_or_execution_counts():
    notebooks = notebook_files(REPO_ROOT / "solutions") + notebook_files(REPO_ROOT / "labs")
    if not notebooks:
        pytest.skip("no notebook in solutions/ or labs/ yet")
    dirty = {str(p.relative_to(REPO_ROOT)): c for p in notebooks if (c := outputs_and_counts(p))}
    assert dirty == {}, f"strip them (make strip): {dirty}"


@pytest.mark.slow
def test_labs_are_in_sync_with_solutions(tmp_path):
    if not REPO_LABS:
        pytest.skip("solutions/ has no lab yet")
    from autograder.commands.release import release

    shutil.copytree(REPO_LAYOUT.source_dir, tmp_path / REPO_LAYOUT.source,
                    ignore=shutil.ignore_patterns(*IGNORE))
    scratch = CourseLayout.from_config(root=tmp_path)
    release(None, scratch)
    expected = {lab: lab_bytes(scratch.release_dir / lab) for lab in REPO_LABS}
    committed = {lab: lab_bytes(REPO_LAYOUT.release_dir / lab) for lab in REPO_LABS}
    for lab in REPO_LABS:
        missing = sorted(set(expected[lab]) - set(committed[lab]))
        extra = sorted(set(committed[lab]) - set(expected[lab]))
        assert not missing, f"labs/{lab} lacks {missing}: run `make release`"
        assert not extra, (f"labs/{lab} holds {extra}, which solutions/{lab} does not "
                           "release: delete them from labs/ (or `make release`)")
        stale = [name for name in expected[lab] if committed[lab][name] != expected[lab][name]]
        details = [f"{name}: {first_notebook_difference(committed[lab][name], expected[lab][name])}"
                   for name in stale]
        assert stale == [], (f"labs/{lab} differs from what solutions/{lab} releases (edit "
                             "solutions/, never labs/, then `make release`): " + "; ".join(details))
    orphans = sorted(
        p.name for p in REPO_LAYOUT.release_dir.iterdir() if p.is_dir() and p.name not in REPO_LABS
    ) if REPO_LAYOUT.release_dir.is_dir() else []
    assert orphans == [], f"labs/ folders without a source in solutions/: {orphans}"


@pytest.mark.parametrize("lab", REPO_LABS or [pytest.param(None, marks=pytest.mark.skip(
    reason="solutions/ has no lab yet"))])
def test_released_labs_hold_no_solution_and_no_hidden_test(lab):
    released = REPO_LAYOUT.release_dir / lab
    if not released.is_dir():
        pytest.fail(f"labs/{lab} is missing: run `make release`")
    for source in REPO_LAYOUT.lab_notebooks(lab):
        notebook = released / source.name
        assert notebook.is_file(), f"labs/{lab}/{source.name} is missing: run `make release`"
        text = notebook.read_text()
        for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "BEGIN MARK SCHEME"):
            assert marker not in text, f"{notebook.name} still holds {marker!r}"
        assert leaked_lines(source, notebook) == []


# ----------------------------------------------------------------------------- references
def _write_case_package(root: Path, name: str, cases: dict[str, str]) -> str:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, body in cases.items():
        (package / f"{module}.py").write_text(textwrap.dedent(body))
    return name


GOOD_CASE = """\
    LAB = "toy_lab"

    def build():
        return {"solutions/toy_lab/references.json": b'{"a": 1}\\n',
                "autograder/references/toy_lab.json": b'{"hidden": 2}\\n'}
    """


def test_references_are_written_then_left_untouched(tmp_path, monkeypatch):
    from autograder.commands.references import stale_references, write_references

    monkeypatch.syspath_prepend(str(tmp_path))
    package = _write_case_package(tmp_path, "toycases_ok", {
        "toy": GOOD_CASE,
        "_helpers": "raise RuntimeError('helpers are not cases')\n",
    })
    root = tmp_path / "course"
    assert {c.status for c in stale_references(package, root)} == {"created"}
    changes = write_references(package, root)
    assert [(c.path.relative_to(root).as_posix(), c.status) for c in changes] == [
        ("autograder/references/toy_lab.json", "created"),
        ("solutions/toy_lab/references.json", "created"),
    ]
    assert (root / "solutions/toy_lab/references.json").read_bytes() == b'{"a": 1}\n'
    assert stale_references(package, root) == []
    assert {c.status for c in write_references(package, root)} == {"unchanged"}
    (root / "solutions/toy_lab/references.json").write_bytes(b"edited by hand\n")
    assert [c.status for c in stale_references(package, root)] == ["changed"]
    assert "changed" in {c.status for c in write_references(package, root)}
    assert (root / "solutions/toy_lab/references.json").read_bytes() == b'{"a": 1}\n'


@pytest.mark.parametrize(
    "body, error, message",
    [
        ("def build():\n    return {}\n", TypeError, "LAB"),
        ("LAB = 'x'\n", TypeError, "build"),
        ("LAB = 'x'\ndef build():\n    return {'a.json': 'text'}\n", TypeError, "bytes"),
        ("LAB = 'x'\ndef build():\n    return {'../a.json': b''}\n", ValueError, "relative"),
        ("LAB = 'x'\ndef build():\n    return [b'']\n", TypeError, "dict"),
    ],
)
def test_malformed_cases_are_refused_naming_the_case(tmp_path, monkeypatch, body, error, message):
    from autograder.commands.references import build_references

    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"toycases_{tmp_path.name}"
    package = _write_case_package(tmp_path, name, {"broken": body})
    with pytest.raises(error, match=message) as info:
        build_references(package, tmp_path)
    assert "broken" in str(info.value)


def test_two_cases_claiming_one_file_are_refused(tmp_path, monkeypatch):
    from autograder.commands.references import build_references

    monkeypatch.syspath_prepend(str(tmp_path))
    package = _write_case_package(tmp_path, "toycases_dup", {"one": GOOD_CASE, "two": GOOD_CASE})
    with pytest.raises(ValueError, match="both"):
        build_references(package, tmp_path)


def test_committed_references_equal_what_the_cases_build():
    from autograder.commands.references import case_modules, stale_references

    if not case_modules():
        pytest.skip("no reference case in autograder/cases/ yet")
    stale = [f"{c.path.relative_to(REPO_ROOT)} ({c.status}): {c.detail}"
             for c in stale_references()]
    assert stale == [], "the committed references differ from what the cases build:\n" + \
        "\n".join(stale)


def _capabilities() -> list[str]:
    """ATen's plain path and this CPU's best one (``ATEN_CPU_CAPABILITY`` values)."""
    import torch

    best = torch.backends.cpu.get_cpu_capability().lower()
    return ["default"] + ([best] if best != "default" else [])


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("capability", _capabilities())
def test_references_are_the_same_bytes_on_every_cpu_path_and_thread_count(capability,
                                                                           threads):
    """``references --check`` passes whatever vector path, BLAS kernel and thread count the
    machine uses: the values must not be a property of the CPU that built them. Also with
    MKL and oneDNN held to AVX2 where the capability is the best one (an AVX2 machine's
    kernels, emulated on a bigger CPU)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO_ROOT))
    if capability != "default":
        env.update(MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2")
    process = subprocess.run([sys.executable, "-m", "autograder", "references", "--check"],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             timeout=1800)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "references up to date" in process.stdout


def test_a_changed_reference_says_where_it_differs():
    from autograder.commands.references import first_difference

    old = b'{"cases": {"f": [{"expected": [1.0, 3.3822131156921387]}]}}'
    new = b'{"cases": {"f": [{"expected": [1.0, 3.3822128772735596]}]}}'
    detail = first_difference(old, new)
    assert detail.startswith("$.cases.f[0].expected[1]: committed 3.3822131156921387, built "
                             "3.3822128772735596 (a last-bit float difference")
    assert first_difference(b'{"a": [1, 2]}', b'{"a": [1, 2, 3]}') == \
        "$.a: 2 items committed, 3 built"
    assert first_difference(b'{"a": 1}', b'{"b": 1}') == "$.a: only in the committed file"
    assert first_difference(b"not json", b"{}") == "the committed file is not valid JSON"
