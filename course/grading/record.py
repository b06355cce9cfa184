"""The record of outcomes a graded notebook leaves for the grader to judge.

While the autograder runs a notebook, ``COURSE_GRADING_RECORD`` names a file; every case that
:func:`course.grading.check` runs appends one line to it::

    {"lab": "lab01_direct_quantization", "name": "quantize", "hidden": true, "index": 3,
     "outcome": {"returned": {"__array__": {...}}}}

The grader reads the lines a test cell appended (:func:`parse_records`) and judges them in its
own process against expected values the notebook never had. Nothing here trusts the file:
a line that is not a well-formed record is skipped, and a case without a record fails.

>>> lines = '{"lab": "l", "name": "f", "hidden": false, "index": 0, "outcome": {"returned": 4}}'
>>> [(r.name, r.index, r.outcome) for r in parse_records(lines)]
[('f', 0, {'returned': 4})]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from course.grading.outcome import dumps_outcome, loads_outcome

RECORD_ENV = "COURSE_GRADING_RECORD"
"""Environment variable naming the record file (set only by the autograder)."""
MAX_RECORDS = 100_000
"""Records read from one test cell at most."""

_environ_get, _open = os.environ.get, open


@dataclass(frozen=True)
class Record:
    """One case's outcome as the notebook recorded it (``outcome`` is decoded and validated)."""

    lab: str
    name: str
    hidden: bool
    index: int
    outcome: dict


def record_path() -> str | None:
    """The record file of this run, or None outside the autograder."""
    return _environ_get(RECORD_ENV) or None


def append_record(lab: str, name: str, hidden: bool, index: int, outcome: dict) -> None:
    """Append one record line to the record file, if the autograder set one."""
    path = record_path()
    if path is None:
        return
    line = ('{"lab":' + json.dumps(lab) + ',"name":' + json.dumps(name)
            + ',"hidden":' + ("true" if hidden else "false") + ',"index":' + str(int(index))
            + ',"outcome":' + dumps_outcome(outcome) + "}\n")
    with _open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def parse_records(text: str) -> list[Record]:
    """Every well-formed record in ``text`` (one JSON object per line), in order."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    records = []
    for line in text.splitlines():
        if len(records) >= MAX_RECORDS:
            break
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                continue
            lab, name, hidden, index = raw["lab"], raw["name"], raw["hidden"], raw["index"]
            if not (isinstance(lab, str) and isinstance(name, str) and isinstance(hidden, bool)
                    and type(index) is int and index >= 0):
                continue
            records.append(Record(lab, name, hidden, index, loads_outcome(raw["outcome"])))
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
    return records
