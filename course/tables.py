"""Result tables as Markdown: what the labs display and ``make results`` collects.

>>> print(markdown_table([{"model": "mlp", "bytes": 1750840, "accuracy": 0.9561}]))
| model | bytes | accuracy |
|---|---|---|
| mlp | 1750840 | 0.9561 |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

FLOAT_DIGITS = 4
"""Significant digits shown for floats."""


def format_cell(value: Any) -> str:
    """Text of one cell: floats with :data:`FLOAT_DIGITS` significant digits, None empty,
    ``|`` escaped so that a value cannot break the table."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.{FLOAT_DIGITS}g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``rows`` as a Markdown table; columns in the given order, else in first-seen order."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise TypeError(f"rows must be a sequence of dicts, got {type(rows).__name__}")
    if not all(isinstance(row, Mapping) for row in rows):
        raise TypeError("every row must be a dict")
    if columns is None:
        columns = []
        for row in rows:
            columns += [key for key in row if key not in columns]
    if not columns:
        raise ValueError("a table needs at least one column")
    lines = ["| " + " | ".join(format_cell(c) for c in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
