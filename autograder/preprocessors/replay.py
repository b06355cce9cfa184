"""Recording a submission graded elsewhere in the gradebook, through nbgrader's own code.

Workers execute submissions in parallel, each in a scratch copy of the course
(``autograder.pipeline.worker``); the class gradebook is then written by one process only. There,
nbgrader's ``Autograde`` runs once more on the same submission with ``ReplayExecution`` in
place of ``Execute``: instead of starting a kernel it takes the outputs of the worker's
executed (and judged) notebook, after checking that both notebooks have the same cells.
Everything else — sanitizing, restoring test cells, saving grades while keeping manual
ones, late penalties — is nbgrader's, exactly as in a plain ``nbgrader autograde``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode


class ReplayMismatch(RuntimeError):
    """The executed notebook does not have the cells of the notebook being recorded."""


class ReplayExecution(NbGraderPreprocessor):
    """Copy outputs and execution counts from ``executed_dir/<notebook>.ipynb``."""

    executed_dir = Unicode("", help="folder of the executed notebooks").tag(config=True)

    def preprocess(self, nb, resources):
        name = resources["nbgrader"]["notebook"]
        path = Path(self.executed_dir) / f"{name}.ipynb"
        if not path.is_file():
            raise ReplayMismatch(f"no executed notebook {path}")
        executed = nbformat.read(str(path), as_version=4)
        if len(executed.cells) != len(nb.cells):
            raise ReplayMismatch(f"{name}: {len(executed.cells)} executed cells, "
                                 f"{len(nb.cells)} to record")
        for index, (cell, done) in enumerate(zip(nb.cells, executed.cells, strict=True)):
            if cell.cell_type != done.cell_type or cell.source != done.source:
                raise ReplayMismatch(f"{name}: cell {index} differs from the executed one")
            if cell.cell_type == "code":
                cell.outputs = done.get("outputs", [])
                cell.execution_count = done.get("execution_count")
        nb.metadata["language_info"] = executed.metadata.get("language_info", {})
        return nb, resources


__all__ = ["ReplayExecution", "ReplayMismatch"]
