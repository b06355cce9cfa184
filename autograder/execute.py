"""nbgrader's ``Execute``, bounded: a notebook that hangs, floods or kills its kernel is
scored for what ran, with the reason, instead of failing the grader.

``BoundedExecute`` replaces ``Execute`` in ``Autograde.autograde_preprocessors`` (see
``autograder.worker``). On top of nbgrader's per-cell timeout (``ExecutePreprocessor.timeout``,
after which the kernel is interrupted) it adds:

- a time limit for the whole notebook (``Limits.notebook_timeout_s``): each cell's timeout is
  cut to the time left; once it is spent, the remaining cells are not run;
- a kernel that died (memory limit, ``os._exit``, a signal) or that did not stop when
  interrupted (a loop ignoring SIGINT) is killed; the cell that was running gets an error
  output saying why, and every later code cell an error output ``NotRun`` — they score 0, the
  cells before keep their scores;
- output caps (``Limits.output_kb_per_cell``, ``output_kb_per_notebook``): output beyond them
  is dropped as it arrives, and the cell says how much;
- the record file (``course.grading.record``) is emptied before each cell and read after it,
  so each graded test cell's recorded outcomes are known exactly; they are written, with the
  stop reason, to ``records_dir/<notebook>.json`` for the grader to judge.
"""

from __future__ import annotations

import json
import os
import stat
from time import monotonic

from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute
from traitlets import Unicode

from autograder.kernel import SandboxKernelManager
from autograder.sandbox import Limits

NOT_RUN = "NotRun"
KERNEL_STOPPED = "KernelStopped"
MAX_RECORD_BYTES = 4 * 1024 * 1024
"""Record bytes kept per test cell (lab01's largest cell records 10 KB); cases recorded
beyond this are missing, so their checks fail."""
_SIGNALS = {9: "SIGKILL", 24: "SIGXCPU", 25: "SIGXFSZ", 11: "SIGSEGV", 6: "SIGABRT", 15: "SIGTERM"}


def error_output(ename: str, evalue: str) -> NotebookNode:
    """An error output whose traceback is just ``ename: evalue``."""
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"{ename}: {evalue}"])


def death_reason(returncode: int | None) -> str:
    """Why a kernel process ended, from its exit status (bubblewrap reports 128 + signal)."""
    if returncode is None:
        return "the kernel stopped responding"
    signal = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if signal in (9, 24):
        return (f"the kernel was killed ({_SIGNALS[signal]}): it ran out of CPU time or "
                "memory, or was stopped")
    if signal:
        return f"the kernel died ({_SIGNALS.get(signal, f'signal {signal}')})"
    return f"the kernel exited (status {returncode})"


def _output_size(msg: dict) -> int:
    content = msg.get("content", {})
    size = len(content.get("text", "") or "")
    for value in (content.get("data") or {}).values():
        size += len(value) if isinstance(value, str) else len(json.dumps(value))
    size += sum(len(line) for line in content.get("traceback", []) or [])
    return size


class BoundedExecute(Execute):
    """``Execute`` with a notebook time limit, kernel-death handling, output caps and
    per-cell records (see the module docstring)."""

    record_file = Unicode("", help="the record file the kernel appends to").tag(config=True)
    records_dir = Unicode("", help="where the per-cell records are written, one JSON file "
                          "per notebook (<notebook>.json)").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb, resources=None, km=None):
        limits = Limits.from_config(self.config)
        self._limits = limits
        self._deadline = monotonic() + limits.notebook_timeout_s
        self._stopped = ""
        self._stopped_at: int | None = None
        self._total_output = 0
        self._cell_output: dict[int, int] = {}
        self._dropped: dict[int, int] = {}
        self._records: dict[str, dict] = {}
        name = ((resources or {}).get("nbgrader") or {}).get("notebook", "notebook")
        try:
            return super().preprocess(nb, resources, km)
        finally:
            self._write_records(name)

    # ------------------------------------------------------------------ time limits
    def _get_timeout(self, cell):
        timeout = super()._get_timeout(cell)
        left = max(1, int(self._deadline - monotonic()) + 1)
        return left if timeout is None else min(timeout, left)

    def _notebook_time_up(self) -> bool:
        return monotonic() >= self._deadline

    def _stop(self, reason: str, index: int) -> None:
        self._stopped, self._stopped_at = reason, index
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            process.kill()
        try:
            run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - the kernel is gone either way
            self.log.debug("kernel shutdown after stop failed", exc_info=True)

    def _returncode(self) -> int | None:
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is None:
            return None
        try:
            return process.wait(timeout=5)
        except Exception:  # noqa: BLE001
            return process.poll()

    # ------------------------------------------------------------------------ cells
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            return super().preprocess_cell(cell, resources, index)
        if not self._stopped and self._notebook_time_up():
            self._stop(f"the notebook's time limit ({self._limits.notebook_timeout_s} s) was "
                       "reached", index)
        if self._stopped:
            cell.outputs = [error_output(NOT_RUN, f"not run: {self._stopped}")]
            cell.execution_count = None
            return cell, resources
        self._reset_record()
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            reason = death_reason(self._returncode())
            self._stop(reason, index)
            cell.outputs.append(error_output(KERNEL_STOPPED, reason))
        except CellTimeoutError:
            limit = self._get_timeout(cell)
            reason = (f"a cell did not stop when interrupted after its time limit "
                      f"({limit} s); its kernel was stopped")
            self._stop(reason, index)
            cell.outputs.append(error_output(KERNEL_STOPPED, reason))
        else:
            if self._notebook_time_up():
                self._stop(f"the notebook's time limit ({self._limits.notebook_timeout_s} s) "
                           "was reached", index)
        finally:
            self._keep_record(cell, index)
        dropped = self._dropped.pop(index, 0)
        if dropped:
            cell.outputs.append(NotebookNode(
                output_type="stream", name="stdout",
                text=f"[{dropped} characters of output dropped by the grader: limits are "
                     f"{self._limits.output_kb_per_cell} KB per cell, "
                     f"{self._limits.output_kb_per_notebook} KB per notebook]\n"))
        return cell, resources

    def output(self, outs, msg, display_id, cell_index):
        size = _output_size(msg)
        used = self._cell_output.get(cell_index, 0)
        if (used + size > self._limits.output_kb_per_cell * 1024
                or self._total_output + size > self._limits.output_kb_per_notebook * 1024):
            self._dropped[cell_index] = self._dropped.get(cell_index, 0) + size
            return None
        self._cell_output[cell_index] = used + size
        self._total_output += size
        return super().output(outs, msg, display_id, cell_index)

    # ---------------------------------------------------------------------- records
    def _open_record(self, flags: int) -> int | None:
        if not self.record_file:
            return None
        try:
            fd = os.open(self.record_file, flags | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def _reset_record(self) -> None:
        fd = self._open_record(os.O_WRONLY)
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)

    def _keep_record(self, cell, index: int) -> None:
        if not utils.is_grade(cell):
            return
        fd = self._open_record(os.O_RDONLY)
        text = ""
        if fd is not None:
            try:
                text = os.read(fd, MAX_RECORD_BYTES).decode("utf-8", errors="replace")
            finally:
                os.close(fd)
        self._records[str(index)] = {"grade_id": cell.metadata["nbgrader"]["grade_id"],
                                     "records": text}

    def _write_records(self, notebook: str) -> None:
        if not self.records_dir:
            return
        data = {"cells": self._records, "stopped": self._stopped,
                "stopped_at": self._stopped_at}
        os.makedirs(self.records_dir, exist_ok=True)
        path = os.path.join(self.records_dir, f"{notebook}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle)


__all__ = ["BoundedExecute", "KERNEL_STOPPED", "NOT_RUN", "death_reason", "error_output"]
