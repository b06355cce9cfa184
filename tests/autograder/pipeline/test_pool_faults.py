"""The Dask pool's fault accounting on a real local cluster (``autograder.pipeline.pool``):
a task whose worker dies is run again elsewhere and the death is counted (the student's
note); one that kills every worker it runs on ends after ``ALLOWED_FAILURES + 1`` tries and
is reported as crashing its worker, not retried forever."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autograder.pipeline.pool import ALLOWED_FAILURES, Pool, _reply, retried_note
from autograder.pipeline.worker import Job

pytestmark = pytest.mark.slow


def die_once(marker: str) -> dict:
    """Kill this worker the first time (``marker`` not there yet); then a graded result."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died\n")
        os._exit(1)
    return {"result": {"graded": True, "problem": "", "cells": []}, "outputs": {"nb": b"{}"},
            "worker": "test"}


def always_die() -> dict:
    os._exit(1)


def job(tmp_path: Path) -> Job:
    return Job(lab="toy_lab", student="alice", job_dir=str(tmp_path / "job"), notebooks={},
               source_lab="", template_db="", lib_dir="", refs_dir="", uid=0)


def test_a_dead_worker_is_counted_and_a_killer_task_is_given_up(tmp_path):
    with Pool(1) as pool:
        client = pool.client()
        once = client.submit(die_once, str(tmp_path / "marker"), pure=False)
        result = _reply(pool, once, job(tmp_path))
        assert result["graded"] is True
        assert (tmp_path / "job" / "out" / "nb.ipynb").read_bytes() == b"{}"
        assert pool.deaths(once.key) == 1
        assert retried_note(1) == ("graded again on another worker: the worker grading it "
                                   "died (1 time)")

        killer = client.submit(always_die, pure=False)
        result = _reply(pool, killer, job(tmp_path))
        assert result["graded"] is False and result["crashed"] is True
        assert f"crashed the grader's worker {ALLOWED_FAILURES + 1} times" in result["problem"]
        # the cluster still grades after it
        again = client.submit(die_once, str(tmp_path / "marker"), pure=False)
        assert _reply(pool, again, job(tmp_path))["graded"] is True

