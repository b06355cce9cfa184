"""Delimited regions of nbgrader source cells: solutions, hidden tests, mark schemes.

A region starts at a line containing its ``begin`` text and ends at the next line containing
its ``end`` text, both delimiter lines included, exactly as nbgrader's ``ClearSolutions``,
``ClearHiddenTests`` and ``ClearMarkScheme`` find them (nbgrader's default delimiters).

>>> src = "def f(x):\\n    ### BEGIN SOLUTION\\n    return 2 * x\\n    ### END SOLUTION"
>>> region_lines(src, SOLUTION)
['    return 2 * x']
>>> print(replace_regions(src, SOLUTION, "return 0"))
def f(x):
    return 0
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delimiters:
    """The texts that open and close one kind of region (matched anywhere in a line)."""

    begin: str
    end: str


SOLUTION = Delimiters("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_TESTS = Delimiters("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
MARK_SCHEME = Delimiters("BEGIN MARK SCHEME", "END MARK SCHEME")


def _check(source: object, delimiters: object) -> None:
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    if not isinstance(delimiters, Delimiters):
        raise TypeError(f"delimiters must be a Delimiters, got {type(delimiters).__name__}")


def _regions(lines: list[str], delimiters: Delimiters) -> list[tuple[int, int]]:
    """(first, last) line indices of each region, delimiter lines included."""
    spans = []
    start = None
    for index, line in enumerate(lines):
        if delimiters.begin in line:
            if start is not None:
                raise ValueError(f"source: nested {delimiters.begin!r} at line {index + 1}")
            start = index
        elif delimiters.end in line:
            if start is None:
                raise ValueError(f"source: {delimiters.end!r} without a begin, line {index + 1}")
            spans.append((start, index))
            start = None
    if start is not None:
        raise ValueError(f"source: {delimiters.begin!r} at line {start + 1} is never closed")
    return spans


def has_region(source: str, delimiters: Delimiters) -> bool:
    """Whether ``source`` holds at least one region delimited by ``delimiters``."""
    _check(source, delimiters)
    return bool(_regions(source.split("\n"), delimiters))


def region_lines(source: str, delimiters: Delimiters) -> list[str]:
    """The lines strictly inside every region of ``source``, in order."""
    _check(source, delimiters)
    lines = source.split("\n")
    inside: list[str] = []
    for first, last in _regions(lines, delimiters):
        inside.extend(lines[first + 1 : last])
    return inside


def replace_regions(source: str, delimiters: Delimiters, replacement: str) -> str:
    """``source`` with each region (delimiters included) replaced by ``replacement``.

    Each line of ``replacement`` is indented like the region's begin line, so a function
    body stays a valid function body.
    """
    _check(source, delimiters)
    if not isinstance(replacement, str):
        raise TypeError(f"replacement must be a str, got {type(replacement).__name__}")
    lines = source.split("\n")
    out: list[str] = []
    position = 0
    for first, last in _regions(lines, delimiters):
        out.extend(lines[position:first])
        begin = lines[first]
        indent = begin[: len(begin) - len(begin.lstrip())]
        out.extend(indent + line for line in replacement.split("\n"))
        position = last + 1
    out.extend(lines[position:])
    return "\n".join(out)
