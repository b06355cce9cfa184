"""Feedback that does not reveal hidden tests.

nbgrader's ``ClearHiddenTests`` removes hidden test code from the feedback's cell sources,
but a failing hidden test still shows its own code: IPython's traceback quotes the lines
around the failing one. ``ClearHiddenTestTracebacks`` cuts each error of a grade cell that
holds hidden tests down to its last line, ``ename: evalue`` (where ``course.grading`` puts
its message). It runs in ``GenerateFeedback.preprocessors`` before ``ClearHiddenTests``
(see ``nbgrader_config.py``); the autograded notebooks the instructor sees keep the full
tracebacks.

Example of an error output it rewrites::

    traceback: ["AssertionError  Traceback ...", "----> 4 assert f(2) == 5", ...]
    becomes:   ["AssertionError: f(2) should be 5"]
"""

from __future__ import annotations

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor

from autograder.preprocessors.regions import HIDDEN_TESTS, has_region


class ClearHiddenTestTracebacks(NbGraderPreprocessor):
    """Reduce the tracebacks of grade cells with hidden tests to ``ename: evalue``."""

    def preprocess_cell(
        self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
    ) -> tuple[NotebookNode, ResourcesDict]:
        if (
            cell.cell_type == "code"
            and utils.is_grade(cell)
            and has_region(cell.source, HIDDEN_TESTS)
        ):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', '')}: {output.get('evalue', '')}"]
        return cell, resources
