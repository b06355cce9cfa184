"""What the class runs of a lab already did: resume an interrupted run, skip what is done.

``<work>/ledger/<lab>.json`` maps each student to the key of the submission last recorded in
the gradebook (a hash of its normalized notebooks and the lab's ``Materials.fingerprint``)
and that run's result. It is rewritten atomically after every student, so a run stopped at
any point (Ctrl-C, a crash, a power cut) resumes where it stopped: a student whose key is
unchanged, and whose grade is in the gradebook, is not executed again.

>>> ledger = Ledger.load(Path("/tmp/course/autograder/work"), "toy_lab")   # doctest: +SKIP
>>> ledger.done("alice", key)                                            # doctest: +SKIP
False
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LEDGER_DIR = "ledger"


def submission_key(notebooks: Mapping[str, bytes], timestamp: str, fingerprint: str) -> str:
    """The key of a submission graded under ``fingerprint``."""
    sha = hashlib.sha256(fingerprint.encode())
    for name in sorted(notebooks):
        sha.update(name.encode() + b"\0" + notebooks[name] + b"\0")
    sha.update(timestamp.encode())
    return sha.hexdigest()


@dataclass
class Ledger:
    """The ledger of one lab (see the module docstring)."""

    path: Path
    entries: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, work_dir: Path, lab: str) -> Ledger:
        path = Path(work_dir) / LEDGER_DIR / f"{lab}.json"
        try:
            entries = json.loads(path.read_text())
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries)

    def done(self, student: str, key: str) -> dict | None:
        """The recorded result of ``student`` if it was graded with this ``key``."""
        entry = self.entries.get(student)
        if isinstance(entry, dict) and entry.get("key") == key:
            return entry.get("result")
        return None

    def record(self, student: str, key: str, result: dict) -> None:
        """Remember ``student``'s result and write the ledger (atomically)."""
        self.entries[student] = {"key": key, "result": result}
        self.save()

    def forget(self, student: str) -> None:
        if self.entries.pop(student, None) is not None:
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
        os.replace(temporary, self.path)


__all__ = ["LEDGER_DIR", "Ledger", "submission_key"]
