"""How fast a class grades:
``python -m benchmarks.throughput [N] [--jobs J] [--lab LAB] [--scheduler tcp://HOST:PORT |
--loopback W]``.

Builds a throw-away course in a temporary folder with ``N`` copies of the lab's solution
notebook as submissions (default: 30 copies of lab01), grades them with ``autograde`` —
sandboxed where the machine allows, exactly as ``make autograde`` — and prints the summary's
last lines: submissions executed, seconds, ``JOBS``, the sandbox, submissions per minute,
and the load average before and after (other work on the machine slows it down). A
benchmark, not a test: nothing is asserted.

>>> main(["4", "--jobs", "2"])                                   # doctest: +SKIP
executed 4 submission(s) in 31.2 s with JOBS=2, sandbox: bubblewrap (root): 7.7 ...
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from autograder.commands.autograde import autograde
from autograder.pipeline.materials import hidden_references_path
from autograder.pipeline.pool import default_jobs
from autograder.session import CourseLayout

DEFAULT_LAB = "lab01_direct_quantization"
DEFAULT_COPIES = 30


def class_course(root: Path, copies: int, lab: str = DEFAULT_LAB) -> CourseLayout:
    """A throw-away course in ``root``: ``lab``'s source and hidden references, and
    ``root/submissions`` holding ``copies`` students (``student0000`` ...) who each
    submitted the lab's solution notebooks. Its layout."""
    if type(copies) is not int or copies < 1:
        raise ValueError(f"copies must be a positive int, got {copies!r}")
    source = CourseLayout.from_config()
    notebooks = source.lab_notebooks(lab)
    root = Path(root)
    shutil.copytree(source.source_dir / lab, root / source.source / lab)
    hidden = hidden_references_path(source, lab)
    if hidden.is_file():
        target = root / "autograder" / "references" / f"{lab}.json"
        target.parent.mkdir(parents=True)
        shutil.copyfile(hidden, target)
    for index in range(copies):
        folder = root / "submissions" / f"student{index:04d}" / lab
        folder.mkdir(parents=True)
        for notebook in notebooks:
            shutil.copyfile(notebook, folder / notebook.name)
    return CourseLayout(root=root, source=source.source, release=source.release,
                        work=source.work)


def measure(copies: int, jobs: int, lab: str = DEFAULT_LAB,
            scheduler: str | None = None) -> str:
    """Grade ``copies`` copies of ``lab``'s solution with ``jobs`` at a time (or on the Dask
    cluster of ``scheduler``); the report."""
    with tempfile.TemporaryDirectory(prefix="course-throughput-") as tmp:
        root = Path(tmp)
        layout = class_course(root, copies, lab)
        before = os.getloadavg()
        report = autograde(lab, root / "submissions", root / "out", layout, jobs=jobs,
                           scheduler=scheduler)
        after = os.getloadavg()
    lines = report.summary().splitlines()
    head = [line for line in lines if line.startswith(("WARNING", f"{lab}:", "executed"))]
    return "\n".join(head + [
        f"load average before {before[0]:.2f}, after {after[0]:.2f} on {os.cpu_count()} cores "
        "(above JOBS: other work shared the machine)"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("copies", nargs="?", type=int, default=DEFAULT_COPIES)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--lab", default=DEFAULT_LAB)
    parser.add_argument("--scheduler", default=None,
                        help="grade on this existing Dask cluster (tcp://host:port)")
    parser.add_argument("--loopback", type=int, default=0, metavar="W",
                        help="start a dask scheduler and W dask workers on loopback and "
                             "grade there (what other machines would run)")
    args = parser.parse_args(argv)
    if args.loopback:
        from benchmarks.loopback import LoopbackCluster

        with tempfile.TemporaryDirectory(prefix="course-cluster-") as folder, \
                LoopbackCluster(Path(folder), workers=args.loopback) as cluster:
            print(f"on a loopback cluster of {args.loopback} dask worker(s), one thread each")
            print(measure(args.copies, args.jobs, args.lab, cluster.address))
        return 0
    print(measure(args.copies, args.jobs, args.lab, args.scheduler))
    return 0


if __name__ == "__main__":
    sys.exit(main())
