"""Command line: ``python -m autograder <command>`` (the Makefile's targets call it).

    release [LAB ...]                                  make release
    references [--check]                               make references
    autograde --lab L --submissions DIR [--out OUT] [--jobs N] [--regrade]
              [--scheduler tcp://HOST:PORT] [--db-url URL]
                                                       make autograde
    check NB [--lab L]                                 make check
    raw-results [--labs DIR] [--out FILE]              the labs' results*.json as one table

``--root DIR`` (every command) runs on a course folder other than this repository, with the
same configuration. Exit status: 0 done; 1 done but something needs attention (a student
not graded, references out of date); 2 could not run (bad arguments, nbgrader failed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_ERROR = 2


def _layout(args: argparse.Namespace):
    from autograder.session import CourseLayout

    return CourseLayout.from_config(root=args.root)


def _release(args: argparse.Namespace) -> int:
    from autograder.commands.release import release

    layout = _layout(args)
    released = release(args.labs or None, layout)
    if not released:
        print(f"no lab in {layout.source_dir}: nothing to release")
    for lab, files in released.items():
        names = ", ".join(str(path.relative_to(layout.release_dir / lab)) for path in files)
        print(f"released {lab} -> {layout.release_dir / lab}: {names}")
    return EXIT_OK


def _references(args: argparse.Namespace) -> int:
    from autograder.commands.references import stale_references, write_references

    root = _layout(args).root
    if args.check:
        stale = stale_references(root=root)
        for change in stale:
            print(f"out of date ({change.status}): {change.path.relative_to(root)} [{change.case}]")
            if change.detail:
                print(f"    first difference: {change.detail}")
        print(f"{len(stale)} reference file(s) out of date" if stale else "references up to date")
        return EXIT_ATTENTION if stale else EXIT_OK
    changes = write_references(root=root)
    if not changes:
        print("no reference cases in autograder/cases/")
    for change in changes:
        print(f"{change.status:9s} {change.path.relative_to(root)} [{change.case}]")
    return EXIT_OK


def _autograde(args: argparse.Namespace) -> int:
    from autograder.commands.autograde import autograde

    report = autograde(args.lab, args.submissions, args.out, _layout(args), jobs=args.jobs,
                       regrade=args.regrade, scheduler=args.scheduler,
                       db_url=args.db_url)
    print(report.summary())
    return EXIT_ATTENTION if report.failed else EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from autograder.commands.check import check_notebook

    report = check_notebook(args.notebook, args.lab, _layout(args))
    print(report.format())
    return EXIT_OK


def _raw_results(args: argparse.Namespace) -> int:
    from autograder.commands.raw_results import collect_results, markdown_table

    labs_dir = args.labs if args.labs is not None else _layout(args).release_dir
    rows = collect_results(labs_dir)
    if not rows:
        print(f"no results yet: run the labs (they write {labs_dir}/<lab>/results*.json)")
        return EXIT_OK
    table = markdown_table(rows)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        print(f"written to {args.out}")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m autograder``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root", type=Path, default=None,
        help="course folder (default: this repository, from nbgrader_config.py)",
    )
    main = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.split("\n")[0])
    commands = main.add_subparsers(dest="command", required=True)

    release = commands.add_parser("release", parents=[common], help="regenerate labs/")
    release.add_argument("labs", nargs="*", help="labs to release (default: all)")
    release.set_defaults(run=_release)

    references = commands.add_parser("references", parents=[common],
                                     help="regenerate reference outputs")
    references.add_argument("--check", action="store_true",
                            help="only report out-of-date files (exit 1 if any)")
    references.set_defaults(run=_references)

    grade = commands.add_parser("autograde", parents=[common], help="grade a class")
    grade.add_argument("--lab", required=True)
    grade.add_argument("--submissions", required=True, type=Path,
                       help="folder of <student_id>/<lab>/<notebook>.ipynb")
    grade.add_argument("--out", type=Path, default=None,
                       help="output folder (default: autograder/work/out)")
    grade.add_argument("--jobs", type=int, default=None,
                       help="submissions graded at a time (default: the number of cores)")
    grade.add_argument("--regrade", action="store_true",
                       help="run unchanged submissions again (default: reuse their grades)")
    grade.add_argument("--scheduler", default=None,
                       help="grade on the existing Dask cluster of this scheduler "
                            "(tcp://host:port; default: a local cluster of --jobs workers)")
    grade.add_argument("--db-url", default=None,
                       help="the class gradebook's URL, nbgrader's db_url (e.g. "
                            "postgresql://user@host/db; default: SQLite in the work folder)")
    grade.set_defaults(run=_autograde)

    check = commands.add_parser("check", parents=[common], help="grade one notebook")
    check.add_argument("notebook", type=Path)
    check.add_argument("--lab", default=None, help="lab it belongs to (default: guessed)")
    check.set_defaults(run=_check)

    raw = commands.add_parser("raw-results", parents=[common],
                              help="every lab's results*.json rows in one table")
    raw.add_argument("--labs", type=Path, default=None, help="default: the release folder")
    raw.add_argument("--out", type=Path, default=None, help="also write the table here")
    raw.set_defaults(run=_raw_results)
    return main


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the exit status."""
    from autograder.session import GradingError

    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (GradingError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR

