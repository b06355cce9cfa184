"""``course-check``: ``make check`` for the notebook of the folder you are in, from anywhere.

JupyterLab's terminal opens in ``labs/`` (``make lab`` serves that folder), where the
checkout's Makefile is not found. ``course-check`` (installed into ``.venv/bin`` by
``make setup``, which ``make lab`` puts first on the terminal's PATH) works from any folder
of the checkout::

    course-check                             # in labs/<lab>/ (or solutions/<lab>/): its notebook
    course-check lab01_direct_quantization   # a lab's released notebook, from any folder
    course-check path/to/notebook.ipynb      # relative to this folder or to the checkout

It finds the checkout (the nearest folder at or above the current one that holds
``nbgrader_config.py`` and a ``Makefile``; else the checkout this library is installed from)
and runs ``make check NB=<notebook>`` there: the same grading, output and exit status.
Exit status 2 when the checkout or the notebook cannot be found (the message says why).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

RELEASE_DIR = "labs"
"""The released labs' folder in the checkout (``nbgrader_config.py``, ``make lab``)."""
MARKERS = ("nbgrader_config.py", "Makefile")
"""Files that mark a folder as the course's checkout."""
EXIT_USAGE = 2


class NotFound(ValueError):
    """The checkout or the notebook to check cannot be found; the message says why."""


def is_checkout(folder: Path) -> bool:
    """Whether ``folder`` is the course's checkout (it holds every file of ``MARKERS``)."""
    return all((folder / name).is_file() for name in MARKERS)


def find_root(start: Path) -> Path:
    """The checkout that holds ``start`` (resolved), else the one this module lives in."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if is_checkout(folder):
            return folder
    home = Path(__file__).resolve().parents[2]
    if is_checkout(home):
        return home
    raise NotFound(f"{start} is not inside the course's checkout (no folder above it holds "
                   f"{' and '.join(MARKERS)}); run course-check inside it")


def _notebooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.ipynb") if p.is_file())


def _labs(root: Path) -> list[str]:
    labs = root / RELEASE_DIR
    return sorted(p.name for p in labs.iterdir() if p.is_dir() and _notebooks(p)) if (
        labs.is_dir()) else []


def _folder_notebook(folder: Path) -> Path | None:
    """The notebook of a lab folder: the one named after the folder, else the only one."""
    notebooks = _notebooks(folder)
    named = folder / f"{folder.name}.ipynb"
    if named in notebooks:
        return named
    if len(notebooks) == 1:
        return notebooks[0]
    if notebooks:
        raise NotFound(f"{folder} holds several notebooks ({', '.join(p.name for p in notebooks)}):"
                       " name the one to check, e.g. course-check " + notebooks[0].name)
    return None


def find_notebook(root: Path, cwd: Path, target: str | None = None) -> Path:
    """The notebook to check, as an absolute path.

    ``target``: a notebook path (relative to ``cwd``, else to ``root``), or a lab's name (its
    notebook in ``labs/``); None: the notebook of the lab folder ``cwd`` is in (``cwd`` or
    the nearest folder above it, below ``root``, that holds notebooks).
    """
    root, cwd = Path(root).resolve(), Path(cwd).resolve()
    labs = ", ".join(_labs(root)) or "none"
    if target is not None:
        if target.endswith(".ipynb") or os.sep in target or "/" in target:
            for base in (cwd, root):
                path = (base / target).resolve()
                if path.is_file():
                    return path
            raise NotFound(f"no notebook {target} in {cwd} or in {root}")
        folder = root / RELEASE_DIR / target
        notebook = _folder_notebook(folder) if folder.is_dir() else None
        if notebook is None:
            raise NotFound(f"no lab {target!r} in {root / RELEASE_DIR} (labs: {labs})")
        return notebook
    if cwd == root or root in cwd.parents:
        for folder in (cwd, *cwd.parents):
            if folder == root:
                break
            if folder.name.startswith("."):  # .ipynb_checkpoints/ holds copies, not the lab
                continue
            notebook = _folder_notebook(folder)
            if notebook is not None:
                return notebook
    raise NotFound(f"which notebook? {cwd} is in no lab folder: run course-check in "
                   f"{RELEASE_DIR}/<lab>/, or name a lab (labs: {labs}) or a notebook")


def command(root: Path, notebook: Path) -> list[str]:
    """The ``make check`` command line that grades ``notebook`` in ``root``."""
    return ["make", "--no-print-directory", "-C", str(root), "check", f"NB={notebook}"]


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``course-check``."""
    parse = argparse.ArgumentParser(
        prog="course-check",
        description="Grade a lab notebook as the grader would (make check), from any folder "
                    "of the course's checkout.")
    parse.add_argument("target", nargs="?", default=None,
                       help="a lab's name or a notebook's path (default: the notebook of the "
                            "lab folder you are in)")
    parse.add_argument("--print", dest="dry_run", action="store_true",
                       help="print the make command instead of running it")
    return parse


def main(argv: list[str] | None = None) -> int:
    """Run ``make check`` on the chosen notebook; return its exit status."""
    args = parser().parse_args(argv)
    cwd = Path.cwd()
    try:
        root = find_root(cwd)
        notebook = find_notebook(root, cwd, args.target)
    except NotFound as error:
        print(f"course-check: {error}", file=sys.stderr)
        return EXIT_USAGE
    line = command(root, notebook)
    if args.dry_run:
        print(" ".join(line))
        return 0
    if shutil.which(line[0]) is None:
        print("course-check: `make` is not installed (make setup needs it too)", file=sys.stderr)
        return EXIT_USAGE
    return subprocess.run(line, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
