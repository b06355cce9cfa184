"""Grade one submission in a scratch copy of the course:
``python -m autograder.pipeline.worker JOB``.

The class run (``autograder.commands.autograde``) keeps ``JOBS`` worker processes
(``--serve``: job files arrive one path a line on stdin, each answered by a ``done`` line),
replacing one that hangs or dies. A worker never runs student code itself: it runs nbgrader's
``Autograde`` with the notebook's kernel in the sandbox (``BoundedExecute`` +
``SandboxKernelManager``), judges the recorded outcomes of every ``check`` against the
instructor's references (``autograder.judging.verdicts``), and leaves in ``JOB_DIR/out/``:

- ``<notebook>.ipynb``  the executed notebook with the grader's verdicts in its test cells;
- ``result.json``       ``{"graded", "problem", "stopped", "backstop", "cells": [...],
  "seconds"}``; ``backstop`` says why, when a wall-clock backstop stopped something that
  was under its CPU budget (the class run then grades the submission again, alone).

Its scratch course (``JOB_DIR/course``, removed when done) holds a copy of the lab's template
gradebook, so workers never write the class gradebook: the class run records each result
there itself, one at a time (``autograder.preprocessors.replay``).

>>> job = Job(lab="toy_lab", student="alice", job_dir="/tmp/j", ...)  # doctest: +SKIP
>>> run_job(job)["graded"]                                           # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import nbformat
from nbgrader.converters import Autograde
from nbgrader.preprocessors import Execute
from traitlets.config import Config

from autograder.judging.rerun import rerun_notebook
from autograder.judging.verdicts import References, plan_test_cell, to_confirm
from autograder.preprocessors.judged import JUDGED, Judging, judge_executed
from autograder.preprocessors.overwrite import quiet_preprocessors
from autograder.sandbox.bwrap import Limits, probe_support, sandbox_mode
from autograder.sandbox.execute import BoundedExecute
from autograder.sandbox.kernel import job_paths
from autograder.session import CONFIG_FILE, CourseLayout, load_config, run_converter

RESULT = "result.json"
OUT = "out"


@dataclass(frozen=True)
class Job:
    """Everything one worker needs, as plain values (it travels as JSON).

    ``notebooks``: notebook name -> path of the normalized submitted notebook;
    ``source_lab``: the instructor's source folder of the lab; ``template_db``: a gradebook
    with the lab recorded and no students; ``lib_dir`` / ``refs_dir``: the grading copy of
    ``course`` and the redacted hidden references (what the sandbox sees); ``visible_refs`` /
    ``hidden_refs``: the instructor's reference files (what the grader judges with);
    ``overrides``: JSON-safe config entries added to ``config_file``'s.
    """

    lab: str
    student: str
    job_dir: str
    notebooks: dict[str, str]
    source_lab: str
    template_db: str
    lib_dir: str
    refs_dir: str
    uid: int
    visible_refs: str = ""
    hidden_refs: str = ""
    timestamp: str = ""
    config_file: str = str(CONFIG_FILE)
    overrides: dict = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> Job:
        return cls(**json.loads(text))


def portable_overrides(config: Config) -> dict:
    """The JSON-safe entries of ``config`` (timeouts, sandbox limits ...), by section."""
    out: dict = {}
    for section, values in config.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            out.setdefault(section, {})[key] = value
    return out


def job_config(job: Job) -> Config:
    """The course config plus the job's overrides, with the sandboxed, bounded executor."""
    config = load_config(Path(job.config_file))
    config.merge(Config(job.overrides))
    autograde = list(config.Autograde.get("autograde_preprocessors",
                                          Autograde.class_traits()["autograde_preprocessors"].default()))
    config.Autograde.autograde_preprocessors = [
        BoundedExecute if p is Execute else p for p in autograde]
    config.Autograde.sanitize_preprocessors = quiet_preprocessors(config)
    kernel_dir = Path(job.job_dir) / "kernel"
    record = job_paths(kernel_dir)
    config.SandboxKernelManager.job_dir = str(kernel_dir)
    config.SandboxKernelManager.lib_dir = job.lib_dir
    config.SandboxKernelManager.refs_dir = job.refs_dir
    config.SandboxKernelManager.uid = job.uid
    config.BoundedExecute.record_file = str(record)
    config.BoundedExecute.records_dir = str(Path(job.job_dir) / "records")
    return config


def _scratch_course(job: Job) -> CourseLayout:
    root = Path(job.job_dir) / "course"
    if root.exists():
        shutil.rmtree(root)
    layout = CourseLayout(root=root)
    (layout.source_dir).mkdir(parents=True)
    (layout.source_dir / job.lab).symlink_to(Path(job.source_lab).resolve(),
                                             target_is_directory=True)
    layout.work_dir.mkdir(parents=True)
    shutil.copyfile(job.template_db, layout.work_dir / "gradebook.db")
    submitted = layout.step_dir("submitted") / job.student / job.lab
    submitted.mkdir(parents=True)
    for name, path in job.notebooks.items():
        shutil.copyfile(path, submitted / f"{name}.ipynb")
    if job.timestamp:
        (submitted / "timestamp.txt").write_text(job.timestamp + "\n")
    return layout


def _plans(source_lab: Path, name: str, lab: str) -> dict:
    notebook = nbformat.read(str(source_lab / f"{name}.ipynb"), as_version=4)
    plans = {}
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            plans[meta["grade_id"]] = plan_test_cell(meta["grade_id"], cell.source, lab)
    return plans


def run_job(job: Job) -> dict:
    """Grade ``job``'s submission; write and return its result (see the module docstring)."""
    started = time.monotonic()
    job_dir = Path(job.job_dir)
    out = job_dir / OUT
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    layout = _scratch_course(job)
    config = job_config(job)
    run = run_converter(Autograde, layout, job.lab, student=job.student, config=config,
                        force=True, create_student=True)
    (job_dir / "nbgrader.log").write_text(run.log + run.error)
    result: dict = {"graded": run.success, "problem": "" if run.success else run.reason(),
                    "stopped": "", "backstop": "", "cells": [], "notebooks": []}
    if run.success:
        references = References.from_files(
            job.lab, Path(job.visible_refs) if job.visible_refs else None,
            Path(job.hidden_refs) if job.hidden_refs else None)
        autograded = layout.step_dir("autograded") / job.student / job.lab
        lab_files = sorted(p for p in autograded.iterdir()
                           if p.suffix != ".ipynb" and not p.name.startswith("."))
        for name in sorted(job.notebooks):
            path = autograded / f"{name}.ipynb"
            if not path.is_file():
                continue
            notebook = nbformat.read(str(path), as_version=4)
            sidecar_path = job_dir / "records" / f"{name}.json"
            sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
            plans = _plans(Path(job.source_lab), name, job.lab)
            cells = sidecar.get("cells", {})
            # Outcomes that need no secret to claim (raised ValueError, input unchanged) are
            # taken from the grader's fresh re-run only, never from the kernel's records.
            confirm = to_confirm(notebook, plans, cells, references)
            reruns, confirmed = rerun_notebook(
                notebook, plans, work=job_dir / "rerun" / name, lab_files=lab_files,
                lib_dir=Path(job.lib_dir), refs_dir=Path(job.refs_dir) if job.refs_dir else None,
                uid=job.uid, limits=Limits.from_config(config),
                support=probe_support(sandbox_mode(config)), confirm=confirm)
            reports = judge_executed(notebook, Judging(
                plans=plans, cell_records=cells, references=references, confirmed=confirmed,
                reruns=reruns), JUDGED)
            nbformat.write(notebook, str(out / f"{name}.ipynb"))
            result["notebooks"].append(name)
            if sidecar.get("stopped"):
                result["stopped"] = sidecar["stopped"]
            backstops = [sidecar.get("backstop") or ""] + [
                f"the fresh re-run of {v.grade_id}: {v.error}" for v in reruns.values()
                if v.backstop]
            if any(backstops) and not result["backstop"]:
                result["backstop"] = next(b for b in backstops if b)
            for report in reports:
                verdict = report.verdict
                rerun = reruns.get(report.grade_id)
                result["cells"].append({
                    "notebook": name, "grade_id": report.grade_id,
                    "kernel_error": report.kernel_error, "plain": report.plain,
                    "verdict": None if verdict is None else verdict.passed,
                    "message": "" if verdict is None else verdict.message,
                    "rerun": None if rerun is None else rerun.passed,
                    "rerun_error": "" if rerun is None else rerun.error,
                })
    shutil.rmtree(layout.root, ignore_errors=True)  # the scratch course: out/ has the result
    result["seconds"] = round(time.monotonic() - started, 3)
    (out / RESULT).write_text(json.dumps(result, indent=1))
    return result


def run_job_file(path: Path) -> dict:
    """Run the job described by the JSON file ``path``; never raises for a job's failure."""
    try:
        job = Job.loads(Path(path).read_text())
    except (OSError, ValueError, TypeError) as error:
        return {"graded": False, "problem": f"unreadable job {path}: {error}"}
    try:
        return run_job(job)
    except Exception as error:  # noqa: BLE001 - reported for this student, the next goes on
        traceback.print_exc()
        result = {"graded": False, "problem": f"the grader failed: {type(error).__name__}: "
                                              f"{error}"}
        out = Path(job.job_dir) / OUT
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULT).write_text(json.dumps(result))
        return result


def serve(requests: TextIO, replies: TextIO) -> None:
    """Run the jobs whose files arrive on ``requests`` (one path a line); after each, write
    ``done`` and its path on ``replies``. Ends at end of input."""
    for line in requests:
        path = line.strip()
        if path:
            run_job_file(Path(path))
            replies.write(f"done {path}\n")
            replies.flush()


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        # Replies go to the original stdout; anything else printed goes to stderr (the log).
        replies = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        serve(sys.stdin, replies)
        return 0
    if len(argv) != 1:
        print("usage: python -m autograder.pipeline.worker (JOB_JSON_FILE | --serve)",
              file=sys.stderr)
        return 2
    result = run_job_file(Path(argv[0]))
    return 0 if result["graded"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["Job", "RESULT", "job_config", "main", "portable_overrides", "run_job",
           "run_job_file", "serve"]
