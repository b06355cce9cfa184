"""A minimal nbgrader source assignment: the grading pipeline's smallest real input.

It has what every lab has, in a few lines: two solution cells, two autograded test cells
with visible and hidden tests (2 and 3 points), a manually graded written answer (1 point),
an experiment skipped under grading, and a ``references.json`` next to the notebook that
a visible test reads. The tests of ``autograder`` grade it end to end; an instructor can
read it as the smallest example of the source format.

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

TOY_LAB = "toy_lab"
# grade_id -> points
TOY_POINTS = {"test_square": 2.0, "test_cube": 3.0, "answer_why": 1.0}
TOY_AUTOGRADED = ("test_square", "test_cube")
TOY_MANUAL = ("answer_why",)
# A name that appears only in the code of the hidden tests: feedback must never show it.
HIDDEN_MARKER = "hidden_edge_case_negative"
# What the hidden test of `cube` says when it fails (feedback shows this message).
HIDDEN_MESSAGE = "the cube of a negative number is negative"
REFERENCES = {"square_of_3": 9, "cube_of_2": 8}

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
            "import json\nimport os\n\n"
            'REFS = json.load(open("references.json"))',
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
            'assert square(3) == REFS["square_of_3"], "square(3) should be 9"\n'
            "### BEGIN HIDDEN TESTS\n"
            "assert square(-4) == 16\n"
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
            'assert cube(2) == REFS["cube_of_2"], "cube(2) should be 8"\n'
            "### BEGIN HIDDEN TESTS\n"
            f"{HIDDEN_MARKER} = -2\n"
            f"assert cube({HIDDEN_MARKER}) == -8, {HIDDEN_MESSAGE!r}\n"
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
    """Write the toy source lab to ``root/source/lab/``; return the notebook's path."""
    if not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    check_lab_name(lab)
    folder = Path(root) / source / lab
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lab}.ipynb"
    nbformat.write(toy_notebook(), str(path))
    (folder / "references.json").write_text(json.dumps(REFERENCES, indent=1) + "\n")
    return path
