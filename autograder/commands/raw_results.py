"""``raw-results``: every lab's ``results*.json`` rows, as they are, in one Markdown table.

Not ``make results``: that is the lecture's claims beside what the labs measured
(``python -m course.claims``), which reads the same files through each claim's own reading.
This command shows the files' rows unread, for an instructor writing or checking a lab.

Each lab writes a small JSON file next to its notebook when a student runs it
(``labs/<lab>/results*.json``). A file holds either a list of rows or an object; an object's
``rows`` list gives its rows, otherwise each of its top-level keys is one row
(``{"metric": key, "value": value}``). A row is an object: a lecture claim beside what this
machine measured, e.g. ``{"claim": "int8 is 4x smaller", "source": "slide 12",
"measured": 3.98}``. Columns are ``lab``, ``file``, then every key in first-seen order.

>>> rows = collect_results(Path("labs"))         # doctest: +SKIP
>>> print(markdown_table(rows))                  # doctest: +SKIP
| lab | file | claim | source | measured |
|---|---|---|---|---|
| lab01_direct_quantization | results.json | ~6 dB per bit | slide 9 | 6.02 |
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS_GLOB = "results*.json"
FIXED_COLUMNS = ("lab", "file")


def _rows_of(data: object, source: Path) -> list[dict]:
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if isinstance(data, dict):
        return [{"metric": key, "value": value} for key, value in data.items()]
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return list(data)
    raise ValueError(f"{source}: expected a list of objects or an object, got "
                     f"{type(data).__name__}")


def collect_results(labs_dir: Path) -> list[dict]:
    """Rows of every ``<lab>/results*.json`` under ``labs_dir``, by lab then file name."""
    if not isinstance(labs_dir, (str, Path)):
        raise TypeError(f"labs_dir must be a path, got {type(labs_dir).__name__}")
    labs_dir = Path(labs_dir)
    if not labs_dir.is_dir():
        raise ValueError(f"labs_dir: no such folder {labs_dir}")
    rows = []
    for path in sorted(labs_dir.glob(f"*/{RESULTS_GLOB}")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not JSON ({error})") from error
        for row in _rows_of(data, path):
            rows.append({"lab": path.parent.name, "file": path.name, **row})
    return rows


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict]) -> str:
    """``rows`` as a Markdown table (columns: lab, file, then keys in first-seen order)."""
    columns = list(FIXED_COLUMNS)
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(column)) for column in columns) + " |")
    return "\n".join(lines)
