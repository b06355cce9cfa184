"""A class graded on a real Dask cluster on loopback: a ``dask scheduler`` and two
``dask worker`` processes started here (one thread each, separate local folders), as a
department would start them on other machines (``autograder/README.md``).

The grades must equal a local run's byte for byte in ``grades.csv``, also when one worker
is killed (SIGKILL) while it grades: its submissions are graded by the other, each student
exactly once. Every process started here is stopped, bounded in time.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import nbformat
import pytest

from autograder.preprocessors.regions import SOLUTION, replace_regions
from autograder.session import REPO_ROOT
from benchmarks.loopback import DASK, LoopbackCluster

LAB01 = "lab01_direct_quantization"
STUDENTS = 8
BROKEN = "sqnr_db"  # a leaf exercise: breaking it costs exactly its points

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REPO_ROOT / "solutions" / LAB01).is_dir(), reason="no lab01"),
    pytest.mark.skipif(not DASK.is_file(), reason=f"no dask command at {DASK}"),
]


def make_class(root: Path):
    """``STUDENTS`` lab01 submissions in ``root``; every third student broke ``sqnr_db``."""
    from benchmarks.throughput import class_course

    layout = class_course(root, STUDENTS, LAB01)
    for index in range(0, STUDENTS, 3):
        path = root / "submissions" / f"student{index:04d}" / LAB01 / f"{LAB01}.ipynb"
        notebook = nbformat.read(str(path), as_version=4)
        cell = next(c for c in notebook.cells if f"def {BROKEN}(" in c.source
                    and c.metadata.get("nbgrader", {}).get("solution"))
        cell.source = replace_regions(cell.source, SOLUTION, "return 42.0")
        nbformat.write(notebook, str(path))
    return layout


def grade(root: Path, **kwargs):
    from autograder.commands.autograde import autograde

    layout = make_class(root)
    return autograde(LAB01, root / "submissions", root / "out", layout, **kwargs)


@pytest.fixture(scope="module")
def local_grades(tmp_path_factory) -> bytes:
    root = tmp_path_factory.mktemp("local")
    report = grade(root, jobs=2)
    assert len(report.graded) == STUDENTS, report.summary()
    return (root / "out" / "grades.csv").read_bytes()


@pytest.fixture
def cluster(tmp_path):
    folder = tmp_path / "cluster"
    folder.mkdir()
    started = LoopbackCluster(folder)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_loopback_cluster_grades_the_class_as_a_local_run_does(local_grades, cluster,
                                                                  tmp_path):
    report = grade(tmp_path / "course", scheduler=cluster.address)
    assert len(report.graded) == STUDENTS, report.summary()
    assert (tmp_path / "course" / "out" / "grades.csv").read_bytes() == local_grades
    # The workers grade in their own folders (Dask's, inside --local-directory) and leave
    # nothing there.
    for local in cluster.worker_dirs:
        assert list(local.glob(f"**/autograder-jobs/{LAB01}")), local
        assert not list(local.glob(f"**/autograder-jobs/{LAB01}/student*")), local


def test_a_worker_killed_while_grading_loses_no_student(local_grades, cluster, tmp_path):
    root = tmp_path / "course"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = grade(root, scheduler=cluster.address)
        except BaseException as error:  # noqa: BLE001 - reported by the assertions below
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    victim = cluster.worker_dirs[0]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and thread.is_alive():
        if any(victim.glob(f"**/autograder-jobs/{LAB01}/student*/job.json")):
            break
        time.sleep(0.1)
    assert thread.is_alive(), "the class was graded before a worker could be killed"
    cluster.kill_worker(0)
    thread.join(timeout=900)
    assert not thread.is_alive() and "error" not in outcome, outcome
    report = outcome["report"]
    students = [s.student_id for s in report.students]
    assert len(students) == len(set(students)) == STUDENTS
    assert len(report.graded) == STUDENTS, report.summary()
    retried = [s for s in report.students
               if any("graded again on another worker" in n for n in s.notes)]
    assert retried, report.summary()
    assert "graded again on another worker" in report.summary()
    assert (root / "out" / "grades.csv").read_bytes() == local_grades
