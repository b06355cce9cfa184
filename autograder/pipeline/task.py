"""The Dask task of a class run: grade one submission on whichever worker Dask chose.

:func:`grade_submission` runs in a Dask worker process (one thread). It gets the job
(``autograder.pipeline.worker.Job`` as a dict, its paths those of the coordinator) and the
submission's notebooks as bytes, grades them in this worker's own job folder, through this
worker's ``--serve`` process (:class:`autograder.pipeline.pool.Workers`, one slot, so one
sandbox user per worker on a machine), and returns a :data:`Reply` — plain, picklable data:

``{"result": <the worker's result.json>, "outputs": {notebook name: executed notebook
bytes}, "worker": "<host> pid <pid>"}``

The coordinator writes the outputs into its own job folder and records them; nothing here
writes the class gradebook, the ledger or the output folder. What the worker reads from
the job besides the submission: the run's materials (``Materials``: the grading copy of
``course``, the lab's source folder, the template gradebook, the instructor's visible and
hidden references) at the coordinator's paths, so the folder the coordinator prepares them
in (``autograder/work/grading/<lab>``) and the lab's source must be readable at the same
path on every worker machine (the same machine, or a shared folder).

A worker without the sandbox a ``Sandbox.mode = 'require'`` run asks for refuses the task
(``refused`` in the result) instead of grading unsandboxed.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from autograder.pipeline.worker import OUT, RESULT, Job

SLOTS_DIR = "autograder-slots"
MAX_SLOTS = 256
_STATE: dict = {}
"""This process's slot lock and ``Workers`` (one per Dask worker process)."""

Reply = dict
"""``{"result": dict, "outputs": {name: bytes}, "worker": str}`` (see the module docstring)."""


def _base() -> Path:
    """This worker's folder: Dask's local directory for it, else a temporary one."""
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory)
    except (ImportError, ValueError):
        return Path(tempfile.gettempdir())


def _claim_slot() -> int:
    """A slot no other grading process on this machine holds (a lock file kept open for
    this process's life): slot ``n`` sandboxes as user ``UID_BASE + 1 + n``."""
    folder = Path(tempfile.gettempdir()) / SLOTS_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    for slot in range(MAX_SLOTS):
        handle = (folder / f"slot-{slot}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _STATE["slot_lock"] = handle
        return slot
    raise RuntimeError(f"more than {MAX_SLOTS} grading processes on {socket.gethostname()}")


def _workers():
    """This process's ``Workers`` (started on first use, stopped when the process ends)."""
    from autograder.pipeline.pool import Workers

    if "workers" not in _STATE:
        slot = _claim_slot()
        workers = Workers(1, _base() / "autograder-jobs", slots=[slot])
        _STATE["workers"] = workers
        atexit.register(workers.stop)
    return _STATE["workers"]


def _refusal(mode: str) -> str:
    """Why this worker cannot grade a run of sandbox ``mode`` ('' if it can)."""
    if mode != "require":
        return ""
    from autograder.sandbox.bwrap import probe_support

    if "support" not in _STATE:
        _STATE["support"] = probe_support("require")
    support = _STATE["support"]
    if support.available:
        return ""
    return (f"the grading worker on {socket.gethostname()} has no sandbox "
            f"(Sandbox.mode is 'require': {support.reason}); it refused to grade unsandboxed")


def grade_submission(job: dict, notebooks: dict[str, bytes], timeout: float,
                     sandbox_mode: str) -> Reply:
    """Grade one submission here (see the module docstring). ``job``: a ``Job`` as a dict;
    ``notebooks``: name -> the normalized submitted notebook; ``timeout``: seconds the
    worker may take; ``sandbox_mode``: the run's ``Sandbox.mode``."""
    where = f"{socket.gethostname()} pid {os.getpid()}"
    refusal = _refusal(sandbox_mode)
    if refusal:
        return {"result": {"graded": False, "problem": refusal, "refused": True},
                "outputs": {}, "worker": where}
    workers = _workers()
    job_dir = workers.log_dir / job["lab"] / job["student"]
    if job_dir.exists():
        shutil.rmtree(job_dir)
    (job_dir / "submitted").mkdir(parents=True)
    paths = {}
    for name, data in notebooks.items():
        path = job_dir / "submitted" / f"{name}.ipynb"
        path.write_bytes(data)
        paths[name] = str(path)
    local = Job(**{**job, "job_dir": str(job_dir), "notebooks": paths})
    try:
        result = workers.run(local, timeout)
        outputs = {}
        for name in result.get("notebooks", ()):
            path = job_dir / OUT / f"{name}.ipynb"
            if path.is_file():
                outputs[name] = path.read_bytes()
        return {"result": result, "outputs": outputs, "worker": where}
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def write_reply(reply: Reply, job: Job) -> dict:
    """Write ``reply``'s outputs into the coordinator's ``job`` folder (``out/``, as a local
    worker leaves them, for ``autograder.preprocessors.replay``); its result."""
    out = Path(job.job_dir) / OUT
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, data in reply.get("outputs", {}).items():
        (out / f"{name}.ipynb").write_bytes(data)
    result = dict(reply["result"])
    with contextlib.suppress(OSError):
        (out / RESULT).write_text(json.dumps(result, indent=1))
    return result


__all__ = ["Reply", "grade_submission", "write_reply"]
