"""The class gradebook on a PostgreSQL server (``DB_URL``, nbgrader's ``db_url``).

A throwaway PostgreSQL cluster is started here in a temporary folder (``initdb``,
``pg_ctl``), on a loopback port, as an unprivileged user (the server refuses to run as
root); skipped, saying why, where the server's programs are not installed. A toy class
graded into it gives the same ``grades.csv`` as the SQLite gradebook, and manual grades
entered before a regrade are kept.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from autograder.session import CourseLayout, open_gradebook
from tests.autograder.toy_lab import TOY_LAB, TOY_POINTS, write_toy_lab

BIN_DIRS = ("/usr/local/bin", *sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")))
STUDENTS = ("alice", "bob", "carol")


def _program(name: str) -> str | None:
    for folder in BIN_DIRS:
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A running PostgreSQL server; its URL. Its folder is directly in /tmp: the server's
    user must reach it (pytest's own temporary folders are root's alone)."""
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (.ci/run installs them)")
    folder = Path(tempfile.mkdtemp(prefix="course-postgres-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses root: run it as the postgres user, or nobody
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            entry = pwd.getpwnam("nobody")
        for path in (folder, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        user = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                "--clear-groups", "--"]
    port = _free_port()
    subprocess.run([*user, initdb, "-D", str(data), "-U", "grader", "--auth=trust", "-E",
                    "UTF8"], check=True, capture_output=True, timeout=120, cwd=folder)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    subprocess.run([*user, pg_ctl, "-D", str(data), "-o", options, "-l",
                    str(folder / "server.log"), "-w", "-t", "60", "start"], check=True,
                   capture_output=True, timeout=120, cwd=folder)
    try:
        yield f"postgresql://grader@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(Exception):
            subprocess.run([*user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "60",
                            "stop"], capture_output=True, timeout=90, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


def toy_class(root: Path) -> CourseLayout:
    from autograder.commands.release import release
    from tests.autograder.classroom import break_function, submit

    source = write_toy_lab(root)
    layout = CourseLayout.from_config(root=root)
    release([TOY_LAB], layout)
    subs = root / "submissions"
    submit(subs, "alice", TOY_LAB, source)
    submit(subs, "bob", TOY_LAB, source)
    break_function(source, "cube", "return abs(x) ** 3", subs / "carol" / TOY_LAB / source.name)
    return layout


@pytest.mark.slow
def test_a_postgresql_gradebook_grades_as_sqlite_and_keeps_manual_grades(postgres, tmp_path):
    from autograder.commands.autograde import autograde

    sqlite_root, pg_root = tmp_path / "sqlite", tmp_path / "pg"
    sqlite = autograde(TOY_LAB, sqlite_root / "submissions", sqlite_root / "out",
                       toy_class(sqlite_root), jobs=2)
    layout = toy_class(pg_root)
    report = autograde(TOY_LAB, pg_root / "submissions", pg_root / "out", layout, jobs=2,
                       db_url=postgres)
    assert len(sqlite.graded) == len(report.graded) == len(STUDENTS), report.summary()
    assert not (layout.work_dir / "gradebook.db").exists()  # the server's, not a file
    assert (pg_root / "out" / "grades.csv").read_bytes() == \
        (sqlite_root / "out" / "grades.csv").read_bytes()

    server = CourseLayout(root=layout.root, source=layout.source, release=layout.release,
                          work=layout.work, database=postgres)
    with open_gradebook(server) as gradebook:
        gradebook.find_grade("answer_why", TOY_LAB, TOY_LAB, "alice").manual_score = 1.0
        gradebook.find_grade("test_cube", TOY_LAB, TOY_LAB, "carol").manual_score = 1.5
        gradebook.db.commit()
    report = autograde(TOY_LAB, pg_root / "submissions", pg_root / "out", layout, jobs=2,
                       db_url=postgres, regrade=True)
    assert {s.student_id for s in report.executed} == set(STUDENTS), report.summary()
    scores = {s.student_id: s.score for s in report.graded}
    full = TOY_POINTS["test_square"] + TOY_POINTS["test_cube"]
    assert scores == {"alice": full + 1.0, "bob": full,
                      "carol": TOY_POINTS["test_square"] + 1.5}, report.summary()


def test_a_database_url_is_checked():
    with pytest.raises(ValueError, match="SQLAlchemy URL"):
        CourseLayout(root=Path("/tmp"), database="not a url")
