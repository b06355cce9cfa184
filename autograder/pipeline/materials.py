"""What a class run prepares once, before any submission is graded.

In ``<work>/grading/<lab>/``:

- ``lib/course``   the grading copy of the library, the lab's exercises and every library
  object its case module declares (``WITHHELD``) withheld (``autograder.pipeline.withheld``): the
  sandbox's ``course``;
- ``refs/<lab>.json``  the hidden references with inputs only: the sandbox's hidden cases;
- ``template.db``  a copy of the class gradebook with the lab recorded (each worker grades
  in a copy of it, so workers never write the class gradebook).

``Materials`` also carries the released lab (for ``autograder.pipeline.intake``), where the
instructor's references are (for ``autograder.judging.verdicts``) and a ``fingerprint`` of
everything that decides a grade (lab source, references, grader and library code, limits,
sandbox): a submission graded under the same fingerprint need not be graded again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from traitlets.config import Config

from autograder.pipeline.intake import ReleasedLab, graded_ids
from autograder.pipeline.withheld import (
    build_grading_lib,
    declared_withheld,
    write_redacted_references,
)
from autograder.sandbox.bwrap import Limits, Support
from autograder.session import (
    GRADER_RELEASE,
    REPO_ROOT,
    CourseLayout,
    GradingError,
)
from course.grading import REFERENCES_FILE
from course.grading.encode import loads

GRADING_DIR = "grading"
GRADER_VERSION = 2
"""Bumped when grading semantics change in a way code hashes would not show."""


@dataclass(frozen=True, kw_only=True)
class Materials:
    """The prepared materials of one lab for one class run (see the module docstring)."""

    lab: str
    folder: Path
    lib_dir: Path
    refs_dir: Path
    template_db: Path
    released: ReleasedLab
    visible_refs: Path | None
    hidden_refs: Path | None
    fingerprint: str
    exercises: tuple[str, ...]


def hidden_references_path(layout: CourseLayout, lab: str) -> Path:
    """The instructor's hidden references of ``lab``: ``autograder/references/<lab>.json``
    under the course root, else this checkout's (as ``course.grading`` finds them)."""
    own = layout.root / "autograder" / "references" / f"{lab}.json"
    checkout = REPO_ROOT / "autograder" / "references" / f"{lab}.json"
    return own if own.is_file() or not checkout.is_file() else checkout


def _exercises(*paths: Path | None) -> tuple[str, ...]:
    names: set[str] = set()
    for path in paths:
        if path is not None and path.is_file():
            names |= set(loads(path.read_bytes()).get("cases", {}))
    return tuple(sorted(names))


def _digest(paths: list[Path], extra: dict) -> str:
    sha = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for path in paths:
        if path.is_file():
            sha.update(str(path.name).encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


def _grader_sources() -> list[Path]:
    """The grader's own code (every module of ``autograder``; not the cases, which count per
    lab, nor the work folder) and ``course.grading``: a change grades every submission again."""
    package = REPO_ROOT / "autograder"
    grader = (p for p in package.rglob("*.py")
              if p.relative_to(package).parts[0] not in ("cases", "work"))
    return sorted([*grader, *(REPO_ROOT / "course" / "grading").glob("*.py")])


def _other_labs(layout: CourseLayout, lab: str) -> dict[str, frozenset[str]]:
    import nbformat

    out = {}
    for other in layout.labs():
        if other == lab:
            continue
        ids: set[str] = set()
        for path in layout.lab_notebooks(other):
            ids |= graded_ids(nbformat.read(str(path), as_version=4))
        out[other] = frozenset(ids)
    return out


def prepare(layout: CourseLayout, lab: str, config: Config, limits: Limits,
            support: Support, gradebook_file: Path | None = None) -> Materials:
    """Build the materials of ``lab`` under ``layout``'s work folder (replacing old ones).

    Expects the lab recorded in the class gradebook already
    (``autograder.gradebook.grades.record_lab``: its released copy is read from
    ``<work>/release/<lab>/``); GradingError if it is not. The template gradebook is a copy
    of ``gradebook_file``, a SQLite gradebook with the lab recorded (default: the class
    gradebook, ``<work>/gradebook.db``; one made for the purpose when the class gradebook is
    a database server's).
    """
    folder = layout.work_dir / GRADING_DIR / lab
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    source_lab = layout.source_dir / lab
    visible = source_lab / REFERENCES_FILE
    visible_refs = visible if visible.is_file() else None
    hidden = hidden_references_path(layout, lab)
    hidden_refs = hidden if hidden.is_file() else None
    exercises = _exercises(visible_refs, hidden_refs)

    lib_dir = folder / "lib"
    build_grading_lib(exercises, lib_dir, declared=declared_withheld(lab))
    refs_dir = folder / "refs"
    refs_dir.mkdir()
    if hidden_refs is not None:
        write_redacted_references(hidden_refs, lab, refs_dir)
    for path in (lib_dir, refs_dir, *lib_dir.rglob("*"), *refs_dir.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)

    template_db = folder / "template.db"
    shutil.copyfile(layout.work_dir / "gradebook.db" if gradebook_file is None
                    else gradebook_file, template_db)
    released_dir = layout.work_dir / GRADER_RELEASE / lab
    notebooks = {p.stem: p for p in sorted(released_dir.glob("*.ipynb"))}
    if not notebooks:
        raise GradingError(f"{lab} is not recorded: no released copy in {released_dir}")
    released = ReleasedLab.from_files(lab, notebooks, _other_labs(layout, lab))

    lab_files = sorted(p for p in source_lab.rglob("*") if p.is_file())
    lab_files.append(REPO_ROOT / "autograder" / "cases" / f"{lab}.py")  # its WITHHELD
    extra = {"version": GRADER_VERSION, "limits": limits.__dict__, "sandbox": support.kind,
             "lab": lab}
    fingerprint = _digest(lab_files + [hidden] + _grader_sources(), extra)
    return Materials(lab=lab, folder=folder, lib_dir=lib_dir, refs_dir=refs_dir,
                     template_db=template_db, released=released, visible_refs=visible_refs,
                     hidden_refs=hidden_refs, fingerprint=fingerprint, exercises=exercises)


__all__ = ["GRADING_DIR", "Materials", "hidden_references_path", "prepare"]
