"""nbgrader's ``Execute``, bounded: a notebook that hangs, floods or kills its kernel is
scored for what ran, with the reason, instead of failing the grader.

``BoundedExecute`` replaces ``Execute`` in ``Autograde.autograde_preprocessors`` (see
``autograder.pipeline.worker``). Its time limits count the **CPU time of the student's processes**
(``autograder.sandbox.cputime``), never the machine's load:

- each cell may use ``Limits.cell_cpu_s`` CPU seconds: a watcher polls the kernel's process
  tree while the cell runs; past the limit it interrupts the kernel (the cell gets a
  ``CellTimeoutError`` output and the notebook goes on), and a kernel that keeps computing
  after the interrupt (a loop ignoring SIGINT) is killed;
- the whole notebook may use ``Limits.notebook_cpu_s``: once spent, the kernel is stopped and
  the remaining cells are not run;
- wall-clock time is a backstop only (``Limits.cell_wall_s`` per cell, through nbclient's
  timeout, and ``Limits.notebook_wall_s``), for code that sleeps or blocks. When the backstop
  stops a cell or the notebook while it was under its CPU budget, the records say so
  (``backstop``), and the class run grades that submission again, alone;
- a kernel that died (memory limit, ``os._exit``, a signal) or that was killed is reported:
  the cell that was running gets an error output saying why, and every later code cell an
  error output ``NotRun`` — they score 0, the cells before keep their scores;
- output caps (``Limits.output_kb_per_cell``, ``output_kb_per_notebook``): output beyond them
  is dropped as it arrives, and the cell says how much;
- the record file (``course.grading.record``) is emptied before each cell and read after it,
  so each graded test cell's recorded outcomes are known exactly; they are written, with the
  stop reason, to ``records_dir/<notebook>.json`` for the grader to judge.

nbgrader's own ``ExecutePreprocessor.timeout`` is not used: the cell's wall-clock timeout is
always its backstop.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from time import monotonic

from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute
from traitlets import Integer, Unicode

from autograder.sandbox.bwrap import Limits
from autograder.sandbox.cputime import TreeClock
from autograder.sandbox.kernel import SandboxKernelManager

NOT_RUN = "NotRun"
KERNEL_STOPPED = "KernelStopped"
MAX_RECORD_BYTES = 4 * 1024 * 1024
"""Record bytes kept per test cell (lab01's largest cell records 10 KB); cases recorded
beyond this are missing, so their checks fail."""
POLL_S = 0.2
"""How often the watcher reads a running cell's CPU time (seconds)."""
INTERRUPT_GRACE_CPU_S = 3.0
"""CPU seconds a kernel may still use after being interrupted before it is killed."""
INTERRUPT_GRACE_WALL_S = 30.0
"""Wall-clock seconds an interrupted kernel gets to answer before it is killed."""
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
    """``Execute`` with CPU-time limits, wall-clock backstops, kernel-death handling, output
    caps and per-cell records (see the module docstring)."""

    record_file = Unicode("", help="the record file the kernel appends to").tag(config=True)
    records_dir = Unicode("", help="where the per-cell records are written, one JSON file "
                          "per notebook (<notebook>.json)").tag(config=True)
    iopub_timeout = Integer(30, help="wall-clock seconds to wait for a cell's last output "
                            "after its reply (nbclient's default, 4 s, is too short for a "
                            "loaded machine)").tag(config=True)
    startup_timeout = Integer(180, help="wall-clock seconds a sandboxed kernel may take to "
                              "start on a loaded machine").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb, resources=None, km=None):
        limits = Limits.from_config(self.config)
        self._limits = limits
        self._deadline = monotonic() + limits.notebook_wall_s
        self._clock: TreeClock | None = None
        self._stopped = ""
        self._stopped_at: int | None = None
        self._backstop = ""
        self._killed_because = ""
        self._interrupted_at: int | None = None
        self._wall_hit_at: int | None = None
        self._current_index = -1
        self._cell_start = 0.0
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
    def _process(self):
        return getattr(getattr(self.km, "provisioner", None), "process", None)

    def _cpu_seconds(self) -> float:
        """CPU seconds the kernel's processes used so far (0.0 before it started)."""
        if self._clock is None:
            process = self._process()
            if process is None:
                return 0.0
            self._clock = TreeClock(process.pid)
        return self._clock.seconds()

    def _get_timeout(self, cell):
        """nbclient's wall-clock timeout of a cell: its backstop, cut to the notebook's."""
        left = max(1, int(self._deadline - monotonic()) + 1)
        return min(self._limits.cell_wall_s, left)

    def _notebook_time_up(self) -> str:
        """Why the notebook must stop before its next cell ('' when it may go on)."""
        cpu = self._cpu_seconds()
        if cpu >= self._limits.notebook_cpu_s:
            return f"the notebook's CPU time limit ({self._limits.notebook_cpu_s} s) was reached"
        if monotonic() >= self._deadline:
            reason = (f"the notebook's wall-clock backstop ({self._limits.notebook_wall_s} s) "
                      f"was reached after {cpu:.1f} s of CPU time")
            self._backstop = self._backstop or reason
            return reason
        return ""

    def _kill(self) -> None:
        process = self._process()
        if process is not None and process.poll() is None:
            process.kill()

    def _stop(self, reason: str, index: int) -> None:
        self._stopped, self._stopped_at = reason, index
        self._kill()
        try:
            run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - the kernel is gone either way
            self.log.debug("kernel shutdown after stop failed", exc_info=True)

    def _returncode(self) -> int | None:
        process = self._process()
        if process is None:
            return None
        try:
            return process.wait(timeout=5)
        except Exception:  # noqa: BLE001
            return process.poll()

    async def _watch(self, index: int, start: float) -> None:
        """Interrupt the cell at ``index`` once it used its CPU budget; kill a kernel that
        keeps computing after the interrupt, or that spent the notebook's budget."""
        limits = self._limits
        while True:
            await asyncio.sleep(POLL_S)
            cpu = self._cpu_seconds()
            if cpu >= limits.notebook_cpu_s:
                self._killed_because = (f"the notebook's CPU time limit "
                                        f"({limits.notebook_cpu_s} s) was reached")
                self._kill()
                return
            if cpu - start >= limits.cell_cpu_s:
                break
        self._interrupted_at = index
        await ensure_async(self.km.interrupt_kernel())
        at_cpu, at_wall = self._cpu_seconds(), monotonic()
        while True:
            await asyncio.sleep(POLL_S)
            if (self._cpu_seconds() - at_cpu >= INTERRUPT_GRACE_CPU_S
                    or monotonic() - at_wall >= INTERRUPT_GRACE_WALL_S):
                self._killed_because = (f"a cell did not stop when interrupted after its CPU "
                                        f"time limit ({limits.cell_cpu_s} s); its kernel was "
                                        "stopped")
                self._kill()
                return

    async def async_execute_cell(self, cell, cell_index, execution_count=None,
                                 store_history=True):
        if cell.cell_type != "code" or not cell.source.strip():
            return await super().async_execute_cell(cell, cell_index, execution_count,
                                                    store_history)
        self._cell_start = self._cpu_seconds()
        watcher = asyncio.ensure_future(self._watch(cell_index, self._cell_start))
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count,
                                                    store_history)
        finally:
            watcher.cancel()

    def execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        # nbclient binds its own coroutine at class creation (``run_sync(async_execute_cell)``):
        # bind this class's, which watches the CPU time.
        return run_sync(self.async_execute_cell)(cell, cell_index, execution_count,
                                                 store_history)

    async def _async_handle_timeout(self, timeout, cell=None):
        self._wall_hit_at = self._current_index
        return await super()._async_handle_timeout(timeout, cell)

    def _wall_note(self, index: int) -> NotebookNode | None:
        """The error output of a cell the wall-clock backstop stopped; notes the backstop
        when the cell was under its CPU budget."""
        if self._wall_hit_at != index:
            return None
        used = self._cpu_seconds() - self._cell_start
        reason = (f"the cell ran past its wall-clock backstop ({self._limits.cell_wall_s} s) "
                  f"after only {used:.1f} s of CPU time (limit {self._limits.cell_cpu_s} s): "
                  "it slept, waited, or the machine was busy")
        if used < self._limits.cell_cpu_s:
            self._backstop = self._backstop or reason
        return error_output("CellTimeoutError", reason)

    # ------------------------------------------------------------------------ cells
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            return super().preprocess_cell(cell, resources, index)
        if not self._stopped:
            reason = self._notebook_time_up()
            if reason:
                self._stop(reason, index)
        if self._stopped:
            cell.outputs = [error_output(NOT_RUN, f"not run: {self._stopped}")]
            cell.execution_count = None
            return cell, resources
        self._reset_record()
        self._current_index = index
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            reason = self._killed_because or death_reason(self._returncode())
            self._stop(reason, index)
            cell.outputs.append(error_output(KERNEL_STOPPED, reason))
        except CellTimeoutError:
            note = self._wall_note(index)
            if note is not None:
                cell.outputs.append(note)
            if self._killed_because:  # the watcher stopped it while nbclient waited
                reason = self._killed_because
            elif note is not None:
                reason = ("a cell did not stop when interrupted after its wall-clock backstop "
                          f"({self._limits.cell_wall_s} s); its kernel was stopped")
            else:  # the reply came, its last output did not (nbclient's iopub timeout)
                reason = (f"the kernel did not deliver a cell's output within "
                          f"{self.iopub_timeout} s of its reply; its kernel was stopped")
                self._backstop = self._backstop or reason
            self._stop(reason, index)
            cell.outputs.append(error_output(KERNEL_STOPPED, reason))
        else:
            if self._interrupted_at == index:
                cell.outputs.append(error_output(
                    "CellTimeoutError", f"the cell used its CPU time limit "
                    f"({self._limits.cell_cpu_s} s) and was interrupted"))
            note = self._wall_note(index)
            if note is not None:
                cell.outputs.append(note)
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
                "stopped_at": self._stopped_at, "backstop": self._backstop}
        os.makedirs(self.records_dir, exist_ok=True)
        path = os.path.join(self.records_dir, f"{notebook}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle)


__all__ = ["BoundedExecute", "KERNEL_STOPPED", "NOT_RUN", "death_reason", "error_output"]
