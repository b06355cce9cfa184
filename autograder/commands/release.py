"""``release``: regenerate ``labs/<lab>/`` from ``solutions/<lab>/``.

nbgrader's ``generate_assignment --force`` does the work: solutions replaced by stubs,
hidden tests and mark schemes removed, outputs and execution counts cleared, test cells
locked and checksummed, the lab's other files (``references.json`` ...) copied. The release
does not touch the gradebook (``--no-db``): ``autograde`` records the source itself. The
result is deterministic: releasing twice gives identical bytes.

>>> released = release(["lab01_direct_quantization"])   # doctest: +SKIP
>>> [p.name for p in released["lab01_direct_quantization"]]            # doctest: +SKIP
['lab01_direct_quantization.ipynb', 'references.json']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

from nbgrader.converters import GenerateAssignment
from traitlets.config import Config

from autograder.session import (
    CourseLayout,
    GradingError,
    check_lab_name,
    load_config,
    run_converter,
)


def _no_database(config: Config) -> Config:
    """``config`` plus nbgrader's ``--no-db`` flag."""
    merged = Config()
    merged.merge(config)
    merged.GenerateAssignment.no_database = True
    merged.SaveCells.enabled = False
    return merged


def ignored(path: Path, patterns: Sequence[str]) -> bool:
    """Whether any part of the relative ``path`` matches one of nbgrader's
    ``CourseDirectory.ignore`` ``patterns`` (a user's leftovers: checkpoints, results.json,
    caches), which neither reach a release nor count as a difference."""
    return any(fnmatch.fnmatch(part, pattern) for part in path.parts for pattern in patterns)


def lab_files(folder: Path, patterns: Sequence[str] | None = None) -> list[Path]:
    """The files of a lab folder that belong to it, sorted: every file but those matching the
    course's ignore ``patterns`` (default: ``nbgrader_config.py``'s)."""
    if not folder.is_dir():
        return []
    if patterns is None:
        patterns = list(load_config().CourseDirectory.get("ignore", []))
    return sorted(path for path in folder.rglob("*")
                  if path.is_file() and not ignored(path.relative_to(folder), patterns))


def released_files(layout: CourseLayout, lab: str) -> list[Path]:
    """Every file of the released ``lab``, sorted (empty if it was never released); a user's
    leftovers (``ignored``) are not part of it."""
    return lab_files(layout.release_dir / check_lab_name(lab))


def release(
    labs: Sequence[str] | None = None, layout: CourseLayout | None = None
) -> dict[str, list[Path]]:
    """Regenerate the released copy of each lab in ``labs`` (default: every source lab).

    Returns ``{lab: [released file, ...]}``. Raises ValueError for an unknown lab and
    GradingError (with nbgrader's reason and log) when nbgrader fails on a lab.
    """
    layout = CourseLayout.from_config() if layout is None else layout
    if labs is None:
        labs = layout.labs()
    elif isinstance(labs, str) or not isinstance(labs, Sequence):
        raise TypeError(f"labs must be a sequence of lab names, got {type(labs).__name__}")
    for lab in labs:
        layout.lab_notebooks(lab)  # ValueError naming the lab if it has no source
    config = _no_database(load_config())
    released: dict[str, list[Path]] = {}
    for lab in labs:
        run = run_converter(GenerateAssignment, layout, lab, config=config, force=True)
        if not run.success:
            raise GradingError(f"release of {lab} failed: {run.reason()}\n{run.log}{run.error}")
        released[lab] = released_files(layout, lab)
    return released
