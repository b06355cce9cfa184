"""Intake's repairs as one list of nbgrader preprocessors
(``autograder.preprocessors.structure``); what each repairs is tested through
``restore_structure`` in ``tests/autograder/sandbox/test_sandbox.py``."""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_notebook

from autograder.pipeline.intake import restore_structure as intake_restore
from autograder.preprocessors.structure import (
    RESTORE,
    DeduplicateGradeIds,
    NoteEditedCells,
    RemoveStrayMetadata,
    RestoreDeletedCells,
    RestoreMetadata,
    grade_id,
    restore_structure,
)


def _locked(cell_id: str, source: str):
    meta = {"grade": True, "grade_id": cell_id, "locked": True, "points": 1,
            "schema_version": 3, "solution": False}
    return new_code_cell(source, metadata={"nbgrader": meta})


def test_intake_repairs_with_the_pipeline_in_order():
    assert RESTORE == (RemoveStrayMetadata, DeduplicateGradeIds, RestoreMetadata,
                       RestoreDeletedCells, NoteEditedCells)
    assert intake_restore is restore_structure


def test_each_step_is_a_preprocessor_of_its_own():
    release = new_notebook(cells=[_locked("t1", "assert True"), _locked("t2", "assert 1")])
    submitted = new_notebook(cells=[_locked("t1", "assert False"), _locked("zz", "x = 1")])
    notes = restore_structure(submitted, release, steps=(RemoveStrayMetadata,))
    assert notes == ["nbgrader metadata of 1 cell(s) not in the lab removed"]
    assert [grade_id(c) for c in submitted.cells] == ["t1", ""]
    notes = restore_structure(submitted, release, steps=(RestoreDeletedCells, NoteEditedCells))
    assert notes == ["deleted locked cell(s) put back: t2",
                     "locked cell(s) edited, graded as the lab has them: t1"]
    assert [grade_id(c) for c in submitted.cells] == ["t1", "t2", ""]


def test_grade_id_is_empty_without_nbgrader_metadata():
    assert grade_id(new_code_cell("x = 1")) == ""
    assert grade_id(_locked("t", "")) == "t"
