"""``autograder.sandbox.cputime``: the CPU seconds of a process tree, whatever the machine's
load."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from autograder.sandbox.cputime import TreeClock

SPIN = ("import time, sys\nt = time.process_time()\n"
        "while time.process_time() - t < float(sys.argv[1]):\n    pass\n")


def test_the_clock_counts_a_childs_cpu_time_and_not_its_sleep():
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               f"subprocess.run([sys.executable, '-c', {SPIN!r}, '0.6'])\n"
                               "time.sleep(30)\n"])
    try:
        clock = TreeClock(parent.pid)
        deadline = time.monotonic() + 120
        while clock.seconds() < 0.6 and time.monotonic() < deadline:
            time.sleep(0.05)
        first = clock.seconds()
        assert first >= 0.6  # the waited-for child's time moved into its parent's
        time.sleep(1.0)
        assert clock.seconds() - first < 0.3  # sleeping costs (almost) no CPU
    finally:
        parent.kill()
        parent.wait()


def test_the_clock_never_goes_back_once_the_process_is_gone():
    child = subprocess.Popen([sys.executable, "-c", SPIN, "0.3"])
    clock = TreeClock(child.pid)
    seen = 0.0
    while child.poll() is None:
        seen = clock.seconds()
        time.sleep(0.02)
    child.wait()
    assert clock.seconds() == max(seen, clock.seconds()) >= seen


def test_a_busy_machine_does_not_inflate_the_cpu_time(cpu_burner):
    child = subprocess.Popen([sys.executable, "-c", SPIN, "0.5"])
    clock = TreeClock(child.pid)
    last = 0.0
    while child.poll() is None:
        last = clock.seconds()
        time.sleep(0.02)
    assert last < 0.5 + 0.3  # however long the spin waited for a core


@pytest.mark.parametrize("pid", [0, -1, 1.5, "1"])
def test_bad_pids_are_refused(pid):
    with pytest.raises(ValueError, match="pid"):
        TreeClock(pid)


def test_this_process_reads_its_own_time():
    assert TreeClock(os.getpid()).seconds() > 0.0
