"""Taking in one student's submission: find the notebook, read it, and make it gradeable.

``take_in`` looks in ``<student>/<lab>/`` for each of the lab's notebooks and returns their
bytes, normalized, or the reason it cannot (``Intake.problem``); what it had to repair is in
``Intake.notes``. Only notebooks are taken: every other file of the submission is ignored
(counted in a note), so nothing a student adds can shadow a module or replace a reference.

Handled, each with a note (graded) or a problem (not graded):

- a missing notebook (problem); a renamed one: the single other notebook whose graded cells
  match is graded under the right name (note); another lab's notebook, or one without any
  of the lab's graded cells (problem); an empty or unreadable folder (problem);
- bytes that are not UTF-8: UTF-16 with a byte-order mark is decoded, anything else is
  decoded with U+FFFD replacements (note); invalid JSON or an invalid notebook (problem);
- nbgrader metadata a student changed or corrupted: every cell that carries one of the lab's
  ``grade_id`` gets the released metadata back (a test cell cannot be turned into a plain
  cell, nor its points changed); metadata with unknown ids is removed; a duplicated cell (a
  copy-paste) keeps its metadata on the last copy only, as nbgrader would, and the others
  become ordinary cells instead of aborting the grader;
- deleted locked cells (the setup cell, a test cell) are put back where the release has them;
- locked cells whose code a student edited are named in one note (nbgrader grades them as
  the lab has them; its own per-cell "checksum has changed" warnings are silenced by
  ``autograder.preprocessors.overwrite``, since every untouched test cell with hidden tests
  raises one).

The repairs of the last three points are nbgrader preprocessors, run in order
(``autograder.preprocessors.structure.RESTORE``).

>>> lab = ReleasedLab.from_files("toy_lab", {"toy_lab": Path("labs/toy_lab/toy_lab.ipynb")})
>>> take_in(Path("submissions/alice"), "toy_lab", lab).notes     # doctest: +SKIP
()
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.utils import parse_utc

from autograder.preprocessors.structure import grade_id, restore_structure

MAX_NOTEBOOK_BYTES = 32 * 1024 * 1024
"""A submitted notebook larger than this is refused (outputs are cleared before grading)."""
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
_SEARCH_DEPTH = 3


@dataclass(frozen=True)
class ReleasedLab:
    """What intake needs from the released lab: each notebook's cells (in order) and the
    graded ids of every lab, to recognise another lab's notebook."""

    lab: str
    notebooks: Mapping[str, nbformat.NotebookNode]
    other_labs: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_files(cls, lab: str, released: Mapping[str, Path],
                   other_labs: Mapping[str, frozenset[str]] | None = None) -> ReleasedLab:
        notebooks = {name: nbformat.read(str(path), as_version=4)
                     for name, path in released.items()}
        return cls(lab, notebooks, dict(other_labs or {}))

    def ids(self, name: str) -> set[str]:
        """grade_ids of the graded and answer cells of notebook ``name``."""
        return graded_ids(self.notebooks[name])


@dataclass(frozen=True, kw_only=True)
class Intake:
    """One student's notebooks ready for grading (``notebooks``: name -> bytes), what was
    repaired or ignored (``notes``), or why nothing can be graded (``problem``)."""

    student_id: str
    notebooks: Mapping[str, bytes] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    problem: str = ""
    timestamp: str = ""


def graded_ids(notebook) -> set[str]:
    """The grade_ids of a notebook's graded and answer cells (not of locked-only cells such
    as a setup cell, which many labs share by name)."""
    ids = set()
    for cell in notebook.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader")
        if grade_id(cell) and (meta.get("grade") or meta.get("solution") or meta.get("task")):
            ids.add(meta["grade_id"])
    return ids


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, note) of notebook bytes: UTF-8 (BOM allowed), UTF-16 with a BOM, else UTF-8
    with replacement characters, and a note saying so."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16"), "the notebook was UTF-16 text: decoded"
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError as error:
        text = data.decode("utf-8", errors="replace")
        return text, (f"the notebook is not valid UTF-8 (byte 0x{data[error.start]:02x} at "
                      f"offset {error.start}): undecodable bytes were replaced by U+FFFD")


def read_notebook(path: Path) -> tuple[nbformat.NotebookNode | None, str, str]:
    """(notebook, note, problem) of a submitted file; problem is '' when it could be read."""
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            return None, "", (f"{path.name} is {size // (1024 * 1024)} MB: larger than "
                              f"{MAX_NOTEBOOK_BYTES // (1024 * 1024)} MB")
        data = path.read_bytes()
    except OSError as error:
        return None, "", f"{path.name} cannot be read: {error.strerror or error}"
    text, note = decode_text(data)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        return None, note, (f"{path.name} is not a notebook: invalid JSON at line "
                            f"{error.lineno} column {error.colno} ({error.msg})")
    except RecursionError:
        return None, note, f"{path.name} is not a notebook: JSON nested too deeply"
    if not isinstance(raw, dict) or not isinstance(raw.get("cells", []), list) \
            or "nbformat" not in raw:
        return None, note, f"{path.name} is not a notebook: no nbformat/cells structure"
    try:
        notebook = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validator.normalize(notebook)
        for cell in notebook.cells:
            cell.setdefault("metadata", {})
            if cell.get("cell_type") == "code":
                cell.setdefault("outputs", [])
                cell.setdefault("execution_count", None)
        nbformat.validate(notebook)
    except Exception as error:  # nbformat raises schema, version and conversion errors
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return None, note, f"{path.name} is not a valid notebook: {first[:300]}"
    return notebook, note, ""


def _candidates(student_dir: Path, lab: str) -> list[Path]:
    """Notebook files of a submission: in ``<lab>/`` first, then anywhere up to 3 levels."""
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            if entry.is_file() and entry.suffix == ".ipynb":
                found.append(entry)
            elif entry.is_dir() and depth < _SEARCH_DEPTH:
                walk(entry, depth + 1)

    if (student_dir / lab).is_dir():
        walk(student_dir / lab, 1)
    walk(student_dir, 1)
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _extra_files(student_dir: Path, used: set[Path]) -> int:
    count = 0
    for path in student_dir.rglob("*"):
        if path.is_file() and path not in used and path.name != "timestamp.txt" \
                and ".ipynb_checkpoints" not in path.parts:
            count += 1
    return count


def _other_lab(ids: set[str], released: ReleasedLab) -> str:
    best = max(released.other_labs.items(), key=lambda item: len(item[1] & ids), default=None)
    if best and best[1] & ids:
        return f" (it looks like {best[0]})"
    return ""


def take_in(student_dir: Path, lab: str, released: ReleasedLab) -> Intake:
    """Find, read and repair ``student_dir``'s notebooks of ``lab`` (see the module doc)."""
    if not isinstance(student_dir, (str, Path)):
        raise TypeError(f"student_dir must be a path, got {type(student_dir).__name__}")
    if not isinstance(released, ReleasedLab):
        raise TypeError(f"released must be a ReleasedLab, got {type(released).__name__}")
    student_dir = Path(student_dir)
    student = student_dir.name
    if not STUDENT_ID.match(student):
        return Intake(student_id=student, problem=f"folder name {student!r} cannot be a "
                      "student id (letters, digits, '_', '.', '@', '-')")
    if not student_dir.is_dir():
        return Intake(student_id=student, problem=f"{student_dir} is not a folder")
    candidates = _candidates(student_dir, lab)
    if not candidates:
        return Intake(student_id=student, problem="no notebook in the submission (empty folder?)")
    notes: list[str] = []
    result: dict[str, bytes] = {}
    used: set[Path] = set()
    problems: list[str] = []
    for name in released.notebooks:
        expected = released.ids(name)
        exact = [p for p in candidates if p.name == f"{name}.ipynb" and p.parent.name == lab]
        exact = exact or [p for p in candidates if p.name == f"{name}.ipynb"]
        if exact:
            path = exact[0]
            notebook, note, problem = read_notebook(path)
        else:
            scored = []
            for path in candidates:
                if path in used:
                    continue
                notebook, note, problem = read_notebook(path)
                if notebook is not None:
                    scored.append((len(graded_ids(notebook) & set(expected)), path))
            scored = sorted((s for s in scored if s[0]), reverse=True)
            if not scored:
                names = ", ".join(p.name for p in candidates[:5])
                problems.append(f"missing notebook {name}.ipynb (found: {names})")
                continue
            if len(scored) > 1 and scored[0][0] == scored[1][0]:
                problems.append(f"missing notebook {name}.ipynb; {scored[0][1].name} and "
                                f"{scored[1][1].name} both could be it")
                continue
            path = scored[0][1]
            notebook, note, problem = read_notebook(path)
            notes.append(f"renamed notebook {path.relative_to(student_dir)} graded as "
                         f"{name}.ipynb")
        used.add(path)
        if problem:
            problems.append(problem)
            continue
        if note:
            notes.append(note)
        ids = graded_ids(notebook)
        if not ids & set(expected):
            problems.append(f"{path.name} is not a notebook of {lab}: none of its graded cells "
                            f"is there{_other_lab(ids, released)}")
            continue
        notes.extend(restore_structure(notebook, released.notebooks[name]))
        result[name] = nbformat.writes(notebook).encode("utf-8")
    if problems and not result:
        return Intake(student_id=student, problem="; ".join(problems))
    extra = _extra_files(student_dir, used)
    if extra:
        notes.append(f"{extra} other file(s) in the submission ignored")
    stamp = student_dir / lab / "timestamp.txt"
    timestamp = ""
    if stamp.is_file() and stamp.stat().st_size < 200:
        timestamp = stamp.read_text(encoding="utf-8", errors="replace").strip()
        try:
            parse_utc(timestamp)
        except Exception:  # noqa: BLE001 - dateutil raises several kinds
            notes.append(f"timestamp.txt ({timestamp[:40]!r}) is not a time: ignored")
            timestamp = ""
    return Intake(student_id=student, notebooks=result, notes=tuple(notes + problems),
                  timestamp=timestamp)


__all__ = ["Intake", "MAX_NOTEBOOK_BYTES", "ReleasedLab", "decode_text", "graded_ids",
           "read_notebook", "restore_structure", "take_in"]
