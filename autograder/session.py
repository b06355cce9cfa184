"""Running nbgrader with the course's configuration, on the repository or on a copy of it.

``CourseLayout`` says where the course lives: a root folder and, relative to it, the source
folder (``solutions``), the release folder (``labs``) and the grader's work folder
(``autograder/work``: gradebook, submitted, autograded, feedback). The default layout is
read from ``nbgrader_config.py``; tests and ``check`` use the same configuration on another
root. ``run_converter`` runs one nbgrader converter (GenerateAssignment, Autograde,
GenerateFeedback) for one lab and optionally one student, in this process, and returns
nbgrader's log instead of printing it.

>>> layout = CourseLayout.from_config()            # the repository itself
>>> layout.source_dir.name, layout.release_dir.name
('solutions', 'labs')
>>> CourseLayout.from_config(root="/tmp/course").work_dir   # same config, other root
PosixPath('/tmp/course/autograder/work')
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import nbformat
from nbformat.warnings import MissingIDFieldWarning
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from sqlalchemy.exc import SAWarning
from traitlets.config import Config, PyFileConfigLoader

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = REPO_ROOT / "nbgrader_config.py"
NOTEBOOK_SUFFIX = ".ipynb"
# Step folders nbgrader keeps inside the work folder.
WORK_STEPS = ("submitted", "autograded", "feedback", "solution", "source_with_tests")
# Where `autograde` and `check` let nbgrader write its copy of the released lab, so that
# recording a lab in the gradebook never touches labs/.
GRADER_RELEASE = "release"
LOGGER_NAME = "autograder.nbgrader"
# "ValueError: ...", "nbformat.reader.NotJSONError: ..." -- a traceback's last line.
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::.*)?$")


class GradingError(RuntimeError):
    """nbgrader could not run at all (as opposed to a submission that fails its tests)."""


def load_config(config_file: Path = CONFIG_FILE) -> Config:
    """The traitlets ``Config`` defined by ``config_file`` (the course's nbgrader config)."""
    config_file = Path(config_file)
    if not config_file.is_file():
        raise ValueError(f"config_file: no such file {config_file}")
    loader = PyFileConfigLoader(config_file.name, path=str(config_file.parent))
    return loader.load_config()


@dataclass(frozen=True)
class CourseLayout:
    """Where the course's folders are.

    ``root`` is an absolute folder; ``source``, ``release`` and ``work`` are paths relative
    to it (nbgrader's step folders must be). ``work`` holds ``gradebook.db`` and nbgrader's
    ``submitted/``, ``autograded/`` and ``feedback/`` folders. ``database``: the gradebook's
    SQLAlchemy URL when it is not that SQLite file (nbgrader's ``db_url``, e.g.
    ``postgresql://grader@dbhost/course``).
    """

    root: Path
    source: str = "solutions"
    release: str = "labs"
    work: str = "autograder/work"
    database: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.root, (str, Path)):
            raise TypeError(f"root must be a path, got {type(self.root).__name__}")
        object.__setattr__(self, "root", Path(self.root).resolve())
        for name in ("source", "release", "work"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise TypeError(f"{name} must be a non-empty str, got {value!r}")
            if Path(value).is_absolute() or ".." in Path(value).parts:
                raise ValueError(f"{name} must be relative to root and stay inside it: {value!r}")
        if not isinstance(self.database, str) or (
                self.database and not re.match(r"^[a-z][a-z0-9+]*://", self.database)):
            raise ValueError("database must be a SQLAlchemy URL such as "
                             f"postgresql://user@host/db, got {self.database!r}")

    @classmethod
    def from_config(cls, config: Config | None = None, root: Path | str | None = None):
        """The layout ``nbgrader_config.py`` describes, optionally moved to another ``root``."""
        config = load_config() if config is None else config
        course = config.CourseDirectory
        submitted = Path(course.submitted_directory)
        layout = cls(
            root=Path(course.root) if root is None else Path(root),
            source=course.source_directory,
            release=course.release_directory,
            work=submitted.parent.as_posix(),
        )
        return layout

    @property
    def source_dir(self) -> Path:
        return self.root / self.source

    @property
    def release_dir(self) -> Path:
        return self.root / self.release

    @property
    def work_dir(self) -> Path:
        return self.root / self.work

    @property
    def db_url(self) -> str:
        """The gradebook's URL: ``database``, else ``sqlite:///<work>/gradebook.db``."""
        return self.database or f"sqlite:///{self.work_dir / 'gradebook.db'}"

    def step_dir(self, step: str) -> Path:
        """One of nbgrader's folders in the work folder (``submitted``, ``autograded`` ...)."""
        if step not in WORK_STEPS:
            raise ValueError(f"step must be one of {WORK_STEPS}, got {step!r}")
        return self.work_dir / step

    def labs(self) -> list[str]:
        """Names of the labs in the source folder (folders holding a notebook), sorted."""
        if not self.source_dir.is_dir():
            return []
        return sorted(
            path.name
            for path in self.source_dir.iterdir()
            if path.is_dir() and not path.name.startswith(".") and any(path.glob("*.ipynb"))
        )

    def lab_notebooks(self, lab: str) -> list[Path]:
        """The source notebooks of ``lab``, sorted; ValueError if there is no such lab."""
        check_lab_name(lab)
        notebooks = sorted((self.source_dir / lab).glob("*" + NOTEBOOK_SUFFIX))
        if not notebooks:
            known = ", ".join(self.labs()) or "none"
            raise ValueError(f"lab: no notebook in {self.source_dir / lab} (labs: {known})")
        return notebooks

    def configure(self, config: Config) -> Config:
        """A copy of ``config`` whose course folders and gradebook are this layout's."""
        merged = Config()
        merged.merge(config)
        course = merged.CourseDirectory
        course.root = str(self.root)
        course.source_directory = self.source
        course.release_directory = self.release
        for step in WORK_STEPS:
            setattr(course, f"{step}_directory", f"{self.work}/{step}")
        course.db_url = self.db_url
        return merged


def check_lab_name(lab: object) -> str:
    """``lab`` if it is a plain folder name nbgrader accepts; TypeError/ValueError if not."""
    if not isinstance(lab, str):
        raise TypeError(f"lab must be a str, got {type(lab).__name__}")
    if not lab or lab != lab.strip() or "/" in lab or "\\" in lab or lab.startswith("."):
        raise ValueError(f"lab must be a folder name such as 'lab01_direct_quantization': {lab!r}")
    if "+" in lab or "*" in lab or "?" in lab:
        raise ValueError(f"lab must not contain '+', '*' or '?': {lab!r}")
    return lab


def course_id(config: Config | None = None) -> str:
    """The course id of ``config`` (default: ``nbgrader_config.py``'s)."""
    config = load_config() if config is None else config
    return config.CourseDirectory.course_id


def open_gradebook(layout: CourseLayout, config: Config | None = None) -> Gradebook:
    """nbgrader's ``Gradebook`` of ``layout`` (use it in a ``with`` block)."""
    with nbgrader_environment():
        return Gradebook(layout.db_url, course_id(config))


@contextlib.contextmanager
def nbgrader_environment() -> Iterator[None]:
    """Environment nbgrader needs while it runs; restored afterwards.

    - this interpreter's ``bin`` first on PATH: nbgrader runs ``alembic`` through PATH to
      stamp a new gradebook, and kernels start from this environment;
    - the repository first on PYTHONPATH: graded notebooks ``import course`` from this
      checkout even where the package is not installed.
    """
    saved = {name: os.environ.get(name) for name in ("PATH", "PYTHONPATH")}
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bin_dir, saved["PATH"] or os.defpath])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else [])
    )
    try:
        if shutil.which("alembic") is None:
            raise GradingError(
                f"`alembic` is not on PATH (looked first in {bin_dir}); nbgrader needs it to "
                "create the gradebook: install the course environment (`make setup`)"
            )
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True, kw_only=True)
class NbgraderRun:
    """What one nbgrader converter run did: success, its log, the traceback if it failed."""

    success: bool
    log: str
    error: str = ""

    def write_to(self, log: TextIO, student: str, step: str) -> None:
        """Append this run's log to ``log`` under a ``===== student: step (ok) =====`` line."""
        log.write(f"===== {student}: {step} ({'ok' if self.success else 'FAILED'}) =====\n")
        log.write(self.log)
        if self.error:
            log.write(self.error)
        log.flush()

    def reason(self) -> str:
        """A one-line cause of a failure: the first exception line nbgrader logged."""
        for text in (self.log, self.error):
            for line in text.splitlines():
                match = _EXCEPTION_LINE.match(line.strip())
                if match and not match.group(1).endswith("NbGraderException"):
                    return line.strip()
        for line in self.log.splitlines():
            if line.startswith("[ERROR] "):
                return line[len("[ERROR] ") :]
        return "nbgrader failed (see the log)"


def _logger() -> logging.Logger:
    log = logging.getLogger(LOGGER_NAME)
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def run_converter(
    converter_class: type,
    layout: CourseLayout,
    lab: str,
    student: str | None = None,
    config: Config | None = None,
    **traits: object,
) -> NbgraderRun:
    """Run ``converter_class`` (an nbgrader converter) on ``lab`` in ``layout``.

    ``student`` restricts it to one student (Autograde, GenerateFeedback); ``traits`` are set
    on the converter (e.g. ``force=True``). ``config`` defaults to ``nbgrader_config.py``.
    Returns an ``NbgraderRun``; raises ``GradingError`` only when nbgrader cannot start.
    """
    check_lab_name(lab)
    if student is not None and (not isinstance(student, str) or not student.strip()):
        raise ValueError(f"student must be a non-empty str, got {student!r}")
    config = layout.configure(load_config() if config is None else config)
    log = _logger()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    log.addHandler(handler)
    try:
        with nbgrader_environment(), warnings.catch_warnings():
            # Harmless noise of nbgrader's own code: SQLAlchemy autoflush warnings from the
            # gradebook, and cells without an id that OverwriteCells puts back.
            warnings.simplefilter("ignore", SAWarning)
            warnings.simplefilter("ignore", MissingIDFieldWarning)
            coursedir = CourseDirectory(config=config, log=log)
            coursedir.assignment_id = lab
            if student is not None:
                coursedir.student_id = student
            converter = converter_class(coursedir=coursedir, config=config, log=log)
            for name, value in traits.items():
                setattr(converter, name, value)
            try:
                converter.start()
            except Exception:  # nbgrader reports failures as exceptions of many kinds
                return NbgraderRun(success=False, log=buffer.getvalue(),
                                   error=traceback.format_exc())
            return NbgraderRun(success=True, log=buffer.getvalue())
    finally:
        log.removeHandler(handler)


def notebook_problem(path: Path) -> str:
    """Why ``path`` is not a notebook nbgrader can read ('' if it is one)."""
    try:
        notebook = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
    except FileNotFoundError:
        return f"missing notebook {path.name}"
    except Exception as error:  # nbformat raises JSON, schema and version errors
        message = str(error).strip().splitlines()
        return f"unreadable notebook {path.name}: {message[0] if message else type(error).__name__}"
    if notebook.get("nbformat") != 4:
        return f"unreadable notebook {path.name}: nbformat {notebook.get('nbformat')} is not 4"
    try:
        nbformat.validate(nbformat.convert(notebook, 4))
    except Exception as error:
        first = str(error).strip().splitlines()
        return f"invalid notebook {path.name}: {first[0] if first else type(error).__name__}"
    return ""


__all__ = [
    "CONFIG_FILE",
    "CourseLayout",
    "GradingError",
    "NbgraderRun",
    "REPO_ROOT",
    "check_lab_name",
    "course_id",
    "load_config",
    "nbgrader_environment",
    "notebook_problem",
    "open_gradebook",
    "run_converter",
]
