"""CPU seconds used by a process and every process it started: what time limits count.

Time limits on a shared, loaded machine must measure the student, not the machine: a cell
that computes for 2 s takes 2 s of CPU time whether the machine is idle or every core is
busy, while its wall-clock time can be ten times longer. ``TreeClock`` sums the user and
system time of a process and all its living descendants, plus the time of the descendants
they already waited for (``children_user``/``children_system``), through psutil (a
dependency of Jupyter's server already).

>>> import os
>>> clock = TreeClock(os.getpid())
>>> clock.seconds() >= 0.0
True
"""

from __future__ import annotations

import psutil


class TreeClock:
    """CPU seconds of the process ``pid`` and its descendants (0.0 once all are gone).

    ``seconds()`` never raises for processes that end while it reads them; a process whose
    times cannot be read (another user's, outside this process's permissions) counts 0.
    """

    def __init__(self, pid: int):
        if type(pid) is not int or pid <= 0:
            raise ValueError(f"pid must be a positive int, got {pid!r}")
        self.pid = pid
        self._last = 0.0

    def seconds(self) -> float:
        """CPU seconds so far; never less than a previous reading (a reaped child's time
        moves to its parent's ``children_*`` only when waited for)."""
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return self._last
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total += times.user + times.system + times.children_user + times.children_system
        self._last = max(self._last, total)
        return self._last


__all__ = ["TreeClock"]
