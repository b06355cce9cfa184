"""The Dask task's own rules (``autograder.pipeline.task``): a worker without the sandbox a
``require`` run asks for refuses the task, saying where and why, and grades nothing; a reply
lands in the coordinator's job folder as a local worker leaves it."""

from __future__ import annotations

import json

import pytest

from autograder.pipeline import task
from autograder.pipeline.worker import OUT, RESULT, Job
from autograder.sandbox import bwrap


@pytest.fixture
def no_sandbox(monkeypatch):
    monkeypatch.setattr(task, "_STATE", {})
    monkeypatch.setattr(bwrap, "probe_support", lambda mode="auto": bwrap.Support(
        kind="none", reason="bwrap: not installed", mode=mode))


def test_a_worker_without_the_sandbox_refuses_a_require_run(no_sandbox):
    reply = task.grade_submission({"lab": "toy_lab", "student": "alice"}, {"toy_lab": b"{}"},
                                  60.0, "require")
    result = reply["result"]
    assert result["graded"] is False and result["refused"] is True
    assert "has no sandbox" in result["problem"] and "bwrap: not installed" in result["problem"]
    assert "refused to grade unsandboxed" in result["problem"]
    assert "workers" not in task._STATE  # nothing was started to grade it


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_other_modes_are_not_refused(no_sandbox, mode):
    assert task._refusal(mode) == ""


def test_a_reply_is_written_where_the_gradebook_replays_it(tmp_path):
    job = Job(lab="toy_lab", student="alice", job_dir=str(tmp_path / "job"), notebooks={},
              source_lab="", template_db="", lib_dir="", refs_dir="", uid=0)
    (tmp_path / "job" / OUT).mkdir(parents=True)
    (tmp_path / "job" / OUT / "stale.ipynb").write_text("old")
    result = task.write_reply({"result": {"graded": True, "notebooks": ["toy_lab"]},
                               "outputs": {"toy_lab": b'{"cells": []}'}, "worker": "w"}, job)
    out = tmp_path / "job" / OUT
    assert result == {"graded": True, "notebooks": ["toy_lab"]}
    assert sorted(p.name for p in out.iterdir()) == [RESULT, "toy_lab.ipynb"]
    assert (out / "toy_lab.ipynb").read_bytes() == b'{"cells": []}'
    assert json.loads((out / RESULT).read_text()) == result
