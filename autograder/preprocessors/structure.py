"""A submitted notebook's nbgrader cells repaired against the released lab, before grading:
``RESTORE``, a list of nbgrader preprocessors run in order (``autograder.pipeline.intake``
runs them on every notebook it takes in).

1. :class:`RemoveStrayMetadata`: nbgrader metadata with an id the lab does not have goes
   (those cells run as plain cells);
2. :class:`DeduplicateGradeIds`: of cells sharing a grade_id, the last copy keeps the
   metadata (as nbgrader's ``DeduplicateIds``), the others run as plain cells;
3. :class:`RestoreMetadata`: the released metadata back on every lab cell (and the released
   cell, a solution's source kept, where a student changed a cell's type);
4. :class:`RestoreDeletedCells`: deleted locked cells (setup, tests) back where the release
   has them;
5. :class:`NoteEditedCells`: locked code cells a student edited are named (nbgrader grades
   them as the lab has them).

They read the released notebook from ``resources[RELEASE]`` and append what they repaired,
one note a step, to ``resources[NOTES]``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from autograder.preprocessors.regions import HIDDEN_TESTS, has_region, replace_regions

RELEASE = "autograder_release"
NOTES = "autograder_notes"


def grade_id(cell) -> str:
    """The cell's nbgrader ``grade_id`` ('' if it has none, or no nbgrader metadata)."""
    meta = cell.get("metadata", {}).get("nbgrader")
    if isinstance(meta, dict) and isinstance(meta.get("grade_id"), str):
        return meta["grade_id"]
    return ""


def _released(resources: dict) -> dict[str, NotebookNode]:
    return {grade_id(c): c for c in resources[RELEASE].cells if grade_id(c)}


class RemoveStrayMetadata(NbGraderPreprocessor):
    """nbgrader metadata whose grade_id the lab does not have removed."""

    def preprocess(self, nb: NotebookNode, resources: dict):
        released = _released(resources)
        stray = 0
        for cell in nb.cells:
            if "nbgrader" in cell.metadata and grade_id(cell) not in released:
                del cell.metadata["nbgrader"]
                stray += 1
        if stray:
            resources[NOTES].append(f"nbgrader metadata of {stray} cell(s) not in the lab "
                                    "removed")
        return nb, resources


class DeduplicateGradeIds(NbGraderPreprocessor):
    """Of cells sharing a grade_id, only the last keeps its nbgrader metadata."""

    def preprocess(self, nb: NotebookNode, resources: dict):
        seen: dict[str, int] = {}
        for index in range(len(nb.cells) - 1, -1, -1):
            cell_id = grade_id(nb.cells[index])
            if not cell_id:
                continue
            if cell_id in seen:
                del nb.cells[index].metadata["nbgrader"]
                seen[cell_id] += 1
            else:
                seen[cell_id] = 1
        for cell_id, count in seen.items():
            if count > 1:
                resources[NOTES].append(f"cell '{cell_id}' appears {count} times: the last copy "
                                        "is graded, the others run as ordinary cells")
        return nb, resources


class RestoreMetadata(NbGraderPreprocessor):
    """The released nbgrader metadata on every lab cell; a cell whose type a student changed
    becomes the released cell again (a solution keeps the student's source)."""

    def preprocess(self, nb: NotebookNode, resources: dict):
        released = _released(resources)
        for cell in nb.cells:
            cell_id = grade_id(cell)
            if not cell_id:
                continue
            original = released[cell_id]
            cell.metadata["nbgrader"] = copy.deepcopy(original.metadata["nbgrader"])
            if cell.cell_type != original.cell_type:
                source = cell.source
                cell.clear()
                cell.update(copy.deepcopy(original))
                if original.metadata["nbgrader"].get("solution"):
                    cell.source = source
        return nb, resources


class RestoreDeletedCells(NbGraderPreprocessor):
    """Deleted locked cells put back after the lab cell that precedes them in the release."""

    def preprocess(self, nb: NotebookNode, resources: dict):
        present = {grade_id(c) for c in nb.cells}
        order = [c for c in resources[RELEASE].cells if grade_id(c)]
        restored = []
        for position, cell in enumerate(order):
            cell_id = grade_id(cell)
            if cell_id in present or not cell.metadata["nbgrader"].get("locked"):
                continue
            previous = next((grade_id(c) for c in reversed(order[:position])
                             if grade_id(c) in present), None)
            at = 0 if previous is None else next(
                i for i, c in enumerate(nb.cells) if grade_id(c) == previous) + 1
            nb.cells.insert(at, copy.deepcopy(cell))
            present.add(cell_id)
            restored.append(cell_id)
        if restored:
            resources[NOTES].append(f"deleted locked cell(s) put back: {', '.join(restored)}")
        return nb, resources


def _code(source: str | list) -> list[str]:
    """The lines of a cell that matter for tampering: hidden-test regions removed (the
    instructor's copy has them, the release does not), blank lines and
    trailing spaces ignored. ``source`` may be a list of lines (nbformat's JSON form)."""
    if isinstance(source, list):
        source = "".join(str(line) for line in source)
    if has_region(source, HIDDEN_TESTS):
        try:
            source = replace_regions(source, HIDDEN_TESTS, "")
        except ValueError:
            pass
    return [line.rstrip() for line in source.splitlines() if line.strip()]


class NoteEditedCells(NbGraderPreprocessor):
    """Locked code cells whose code differs from the release named, in one note (nbgrader
    restores them; its own per-cell warnings are silenced, ``preprocessors.overwrite``)."""

    def preprocess(self, nb: NotebookNode, resources: dict):
        released = _released(resources)
        edited = [grade_id(c) for c in nb.cells
                  if grade_id(c) in released and c.cell_type == "code"
                  and released[grade_id(c)].metadata["nbgrader"].get("locked")
                  and _code(c.source) != _code(released[grade_id(c)].source)]
        if edited:
            resources[NOTES].append(f"locked cell(s) edited, graded as the lab has them: "
                                    f"{', '.join(edited)}")
        return nb, resources


RESTORE: tuple[type[NbGraderPreprocessor], ...] = (
    RemoveStrayMetadata, DeduplicateGradeIds, RestoreMetadata, RestoreDeletedCells,
    NoteEditedCells)
"""Intake's pipeline: every repair of a submitted notebook, in order."""


def restore_structure(notebook: NotebookNode, release: NotebookNode,
                      steps: Sequence[type[NbGraderPreprocessor]] = RESTORE) -> list[str]:
    """Repair ``notebook``'s nbgrader cells against ``release`` in place (``steps``, by default
    :data:`RESTORE`); return the notes."""
    resources = {RELEASE: release, NOTES: []}
    for step in steps:
        notebook, resources = step().preprocess(notebook, resources)
    return resources[NOTES]


__all__ = ["NOTES", "RELEASE", "RESTORE", "DeduplicateGradeIds", "NoteEditedCells",
           "RemoveStrayMetadata", "RestoreDeletedCells", "RestoreMetadata", "grade_id",
           "restore_structure"]
