"""nbgrader's ``OverwriteCells`` without its expected "checksum has changed" warnings.

When nbgrader grades a submission it puts the instructor's source back into every locked
cell and warns ``Attribute 'checksum' for cell test_x has changed!`` whenever the submitted
source differs — which is every unmodified test cell with hidden tests, since the released
copy has them removed (nbgrader issue 1961): hundreds of lines that read like tamper alarms
for a class of untouched notebooks. ``QuietOverwriteCells`` restores exactly as nbgrader
does and logs the checksum case at debug level only; real edits of locked cells are
reported once per student by ``autograder.pipeline.intake`` (a note: "locked cell(s) edited ...").
Other changes (cell type, points, locked flag) are still logged as warnings.
"""

from __future__ import annotations

from typing import Any

from nbgrader.converters import Autograde
from nbgrader.preprocessors import OverwriteCells
from traitlets.config import Config


class QuietOverwriteCells(OverwriteCells):
    """``OverwriteCells`` that does not warn about checksums (see the module docstring)."""

    def report_change(self, name: str, attr: str, old: Any, new: Any) -> None:
        if attr == "checksum":
            self.log.debug("cell %s: source restored from the lab's source", name)
            return
        super().report_change(name, attr, old, new)


def quiet_preprocessors(config: Config) -> list:
    """``Autograde.sanitize_preprocessors`` of ``config`` (nbgrader's default if unset), with
    ``OverwriteCells`` replaced by :class:`QuietOverwriteCells`."""
    steps = config.Autograde.get("sanitize_preprocessors",
                                 Autograde.class_traits()["sanitize_preprocessors"].default())
    return [QuietOverwriteCells if step is OverwriteCells else step for step in steps]


__all__ = ["QuietOverwriteCells", "quiet_preprocessors"]
