"""Edited locked cells are reported once per student; untouched ones raise no alarm (issue 11):
``autograder.pipeline.intake`` notes real edits, ``autograder.preprocessors.overwrite``
silences nbgrader's expected "checksum has changed" warnings. A class run checks both in
``test_adversarial.py``."""

from __future__ import annotations

import logging

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from autograder.pipeline.intake import restore_structure
from autograder.preprocessors.overwrite import QuietOverwriteCells


def _cell(grade_id, source, **meta):
    nbgrader = {"grade_id": grade_id, "grade": False, "solution": False, "locked": True,
                "schema_version": 3, **meta}
    return new_code_cell(source, metadata={"nbgrader": nbgrader})


def _release():
    return new_notebook(cells=[
        _cell("setup", "import os"),
        _cell("f", "def f(x):\n    raise NotImplementedError()", solution=True, locked=False),
        _cell("test_f", "assert f(1) == 2", grade=True, points=1),
    ])


def test_an_untouched_copy_and_the_instructors_own_copy_raise_no_note():
    release = _release()
    instructor = _release()
    instructor.cells[2].source = ("assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(3) == 6\n"
                                  "### END HIDDEN TESTS")
    for notebook in (_release(), instructor):
        assert not [n for n in restore_structure(notebook, release) if "edited" in n]


def test_edited_locked_cells_are_named_in_one_note():
    submitted = nbformat.from_dict(nbformat.reads(nbformat.writes(_release()), as_version=4))
    submitted.cells[0].source = "import os\nprint('mine')"
    submitted.cells[2].source = "pass"
    submitted.cells[1].source = "def f(x):\n    return 2 * x"   # a solution: free to edit
    notes = restore_structure(submitted, _release())
    assert [n for n in notes if "edited" in n] == [
        "locked cell(s) edited, graded as the lab has them: setup, test_f"]


def test_checksum_changes_are_not_warnings_but_other_changes_are(caplog):
    quiet = QuietOverwriteCells()
    quiet.log = logging.getLogger("test-overwrite")
    with caplog.at_level(logging.DEBUG, logger="test-overwrite"):
        quiet.report_change("test_f", "checksum", "a", "b")
        quiet.report_change("test_f", "points", 1.0, 100.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["Attribute 'points' for cell test_f has changed! (should be: 1.0, "
                        "got: 100.0)"]
