"""A minimal nbgrader source assignment: the grading pipeline's smallest real input.

It has what every lab has, in a few lines: two solution cells; two autograded test cells with
visible and hidden tests (2 and 3 points) — ``test_square`` with plain ``assert`` statements,
``test_cube`` with ``course.grading.check`` calls judged by the grader from recorded
outcomes; a manually graded written answer (1 point); an experiment skipped under grading;
and reference cases: ``references.json`` (visible, released with the lab) and
``autograder/references/toy_lab.json`` (hidden, the instructor's). The tests of
``autograder`` grade it end to end; an instructor can read it as the smallest example of the
source format.

>>> notebook = write_toy_lab(Path("/tmp/course"))       # /tmp/course/solutions/toy_lab/
>>> notebook.name
'toy_lab.ipynb'
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.session import check_lab_name
from course.grading import dumps

TOY_LAB = "toy_lab"
# grade_id -> points
TOY_POINTS = {"test_square": 2.0, "test_cube": 3.0, "answer_why": 1.0}
TOY_AUTOGRADED = ("test_square", "test_cube")
TOY_MANUAL = ("answer_why",)
# Text that appears only in the hidden tests' code: feedback must never show it.
HIDDEN_MARKER = "hidden_edge_case_negative"
# What a failing hidden case of `cube` says (feedback shows this message).
HIDDEN_MESSAGE = "the cube of a negative number is negative"
# What the hidden assert of `square` says when it fails.
SQUARE_MESSAGE = "the square of a negative number is positive"


def _case(x: float, label: str, note: str = "") -> dict:
    case = {"call": f"cube({x!r})", "label": label, "kind": "float", "args": [x],
            "kwargs": {}, "expected": float(x) ** 3}
    if note:
        case["note"] = note
    return case


VISIBLE_CASES = {"cube": [_case(2, "a positive int")]}
HIDDEN_CASES = {"cube": [_case(-2, "a negative int", HIDDEN_MESSAGE),
                         _case(1.5, "a float"), _case(0, "zero")]}
# What the released `references.json` holds, as plain JSON.
REFERENCES = json.loads(dumps({"lab": TOY_LAB, "cases": VISIBLE_CASES}))

_KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _nbgrader(grade_id: str, *, grade: bool, solution: bool, locked: bool, points=None):
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
    }
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def toy_notebook() -> nbformat.NotebookNode:
    """The toy source notebook (cell ids fixed, so its bytes are reproducible)."""
    cells = [
        new_markdown_cell("# Toy lab\nWrite `square` and `cube`.", id="intro"),
        new_code_cell(
            "import json\nimport os\n\nfrom course.grading import check\n\n"
            'LAB = "toy_lab"',
            id="setup",
            metadata=_nbgrader("setup", grade=False, solution=False, locked=True),
        ),
        new_code_cell(
            "def square(x):\n"
            '    """x squared."""\n'
            "    ### BEGIN SOLUTION\n"
            "    return x * x\n"
            "    ### END SOLUTION",
            id="square",
            metadata=_nbgrader("square", grade=False, solution=True, locked=False),
        ),
        new_code_cell(
            'assert square(3) == 9, "square(3) should be 9"\n'
            "### BEGIN HIDDEN TESTS\n"
            f"assert square(-4) == 16, {SQUARE_MESSAGE!r}\n"
            "### END HIDDEN TESTS",
            id="test_square",
            metadata=_nbgrader("test_square", grade=True, solution=False, locked=True,
                               points=TOY_POINTS["test_square"]),
        ),
        new_code_cell(
            "def cube(x):\n"
            '    """x cubed."""\n'
            "    ### BEGIN SOLUTION\n"
            "    return x * x * x\n"
            "    ### END SOLUTION",
            id="cube",
            metadata=_nbgrader("cube", grade=False, solution=True, locked=False),
        ),
        new_code_cell(
            "check(LAB, \"cube\", cube)\n"
            "### BEGIN HIDDEN TESTS\n"
            f"# {HIDDEN_MARKER}: cube(-2), cube(1.5), cube(0)\n"
            "check(LAB, \"cube\", cube, hidden=True)\n"
            "### END HIDDEN TESTS",
            id="test_cube",
            metadata=_nbgrader("test_cube", grade=True, solution=False, locked=True,
                               points=TOY_POINTS["test_cube"]),
        ),
        new_code_cell(
            "# The experiment: skipped while nbgrader grades.\n"
            'if not os.environ.get("NBGRADER_EXECUTION"):\n'
            "    print([cube(k) for k in range(5)])",
            id="experiment",
        ),
        new_markdown_cell(
            "Why is `cube(-x) == -cube(x)`?\n\n### BEGIN SOLUTION\nOdd power.\n### END SOLUTION",
            id="answer_why",
            metadata=_nbgrader("answer_why", grade=True, solution=True, locked=False,
                               points=TOY_POINTS["answer_why"]),
        ),
    ]
    notebook = new_notebook(cells=cells, metadata={"kernelspec": _KERNELSPEC})
    notebook.nbformat_minor = 5
    return notebook


def write_toy_lab(root: Path, source: str = "solutions", lab: str = TOY_LAB) -> Path:
    """Write the toy source lab to ``root/source/lab/`` with its visible references, and its
    hidden references to ``root/autograder/references/<lab>.json``; return the notebook."""
    if not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    check_lab_name(lab)
    folder = Path(root) / source / lab
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lab}.ipynb"
    nbformat.write(toy_notebook(), str(path))
    (folder / "references.json").write_bytes(dumps({"lab": lab, "cases": VISIBLE_CASES}))
    hidden = Path(root) / "autograder" / "references"
    hidden.mkdir(parents=True, exist_ok=True)
    (hidden / f"{lab}.json").write_bytes(dumps({"lab": lab, "cases": HIDDEN_CASES}))
    return path
