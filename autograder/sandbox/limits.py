"""Set resource limits, then run a command: the first link of every sandboxed process.

Run as a plain script (``python -I -S limits.py LIMITS -- COMMAND ...``), importing nothing
from this repository, so that it starts in a few milliseconds. ``LIMITS`` is a JSON object
of ``setrlimit`` resources to values, e.g. ``{"RLIMIT_AS": 4294967296, "RLIMIT_CPU": 600}``;
each becomes both the soft and the hard limit, except ``RLIMIT_CPU`` whose hard limit is a few
seconds later (the soft one sends SIGXCPU first). The limits hold for the command and every
process it starts; they can be lowered there, never raised.

>>> import subprocess, sys
>>> subprocess.run([sys.executable, "-I", "-S", __file__, '{"RLIMIT_NOFILE": 64}', "--",
...                 "sh", "-c", "ulimit -n"], capture_output=True, text=True).stdout
'64\\n'
"""

import json
import os
import resource
import sys

CPU_GRACE_S = 5
"""Seconds between the soft CPU limit (SIGXCPU) and the hard one (SIGKILL)."""


def apply_limits(limits: dict) -> None:
    """``setrlimit`` every resource named in ``limits`` (names of the ``resource`` module)."""
    for name, value in limits.items():
        if not name.startswith("RLIMIT_") or not hasattr(resource, name):
            raise ValueError(f"limits: unknown resource {name!r}")
        if type(value) is not int or value < 0:
            raise ValueError(f"limits: {name} must be a non-negative int, got {value!r}")
        hard = value + CPU_GRACE_S if name == "RLIMIT_CPU" else value
        resource.setrlimit(getattr(resource, name), (value, hard))


def main(argv: list) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: limits.py LIMITS_JSON -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    apply_limits(json.loads(argv[0]))
    os.execvp(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
