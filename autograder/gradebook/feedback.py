"""A student's feedback: nbgrader's ``generate_feedback`` from the class gradebook (hidden
tests cleared by ``autograder.preprocessors.hidden_tracebacks`` and nbgrader's own
``ClearHiddenTests``, as ``nbgrader_config.py`` configures), its HTML pages copied to
``<out>/feedback/<student_id>/<lab>/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TextIO

from nbgrader.converters import GenerateFeedback
from traitlets.config import Config

from autograder.session import CourseLayout, run_converter


def copy_feedback(source: Path, target: Path) -> None:
    """Copy the HTML feedback files of one student (nothing else) to ``target``."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for page in sorted(source.glob("*.html")):
        shutil.copyfile(page, target / page.name)


def write_feedback(layout: CourseLayout, lab: str, student: str, *, out: Path,
                   config: Config, log: TextIO) -> str:
    """Generate ``student``'s feedback for ``lab`` into ``out``; '' or the reason it failed.
    nbgrader's log of the step is appended to ``log``."""
    run = run_converter(GenerateFeedback, layout, lab, student=student, config=config,
                        force=True)
    run.write_to(log, student, "feedback")
    if not run.success:
        return f"no feedback: {run.reason()}"
    copy_feedback(layout.step_dir("feedback") / student / lab, out / "feedback" / student / lab)
    return ""


__all__ = ["copy_feedback", "write_feedback"]
