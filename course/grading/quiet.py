"""Keep what a student's code writes to stderr out of a test cell's stderr, and show it.

nbgrader scores a test cell 0 when the cell wrote anything to stderr, even if every check
passed. A correct solution may well log (``logging.warning``) or print a debug line to
``sys.stderr`` — or call C code that writes to file descriptor 2. While
:func:`course.grading.check` runs the student's function, :class:`StderrCapture` redirects
all three into a buffer: the ``sys.stderr`` object, file descriptor 2 (to a temporary file),
and every ``logging`` handler that writes to the process's stderr stream (including
``logging.lastResort``). ``check`` then prints what was captured to stdout, under a heading,
so the feedback shows it and the score does not change.

>>> import sys
>>> with StderrCapture() as captured:
...     print("debug line", file=sys.stderr)
>>> captured.text()
'debug line\\n'
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile

MAX_CAPTURED = 20_000
"""Characters of captured stderr kept per check (the rest is cut, with a note)."""
HEADING = "[written to stderr by the code being checked; it does not change the score]"

_dup, _dup2, _close, _lseek, _read = os.dup, os.dup2, os.close, os.lseek, os.read
_TemporaryFile = tempfile.TemporaryFile
_StreamHandler = logging.StreamHandler


class StderrCapture:
    """Context manager: ``sys.stderr``, fd 2 and stderr logging handlers into one buffer."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._fd_text = ""

    def __enter__(self) -> StderrCapture:
        self._old_stderr = sys.stderr
        self._handlers = []
        streams = {id(s) for s in (sys.stderr, sys.__stderr__) if s is not None}
        for handler in _stderr_handlers():
            if id(getattr(handler, "stream", None)) in streams:
                self._handlers.append((handler, handler.stream))
                handler.stream = self._buffer
        self._saved_fd = self._file = None
        try:
            flush(self._old_stderr)
            self._file = _TemporaryFile(mode="w+b")
            self._saved_fd = _dup(2)
            _dup2(self._file.fileno(), 2)
        except (OSError, ValueError):  # no fd 2 (some embedded interpreters): streams only
            self._restore_fd()
        sys.stderr = self._buffer
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr = self._old_stderr
        for handler, stream in self._handlers:
            handler.stream = stream
        self._restore_fd()
        return None

    def _restore_fd(self) -> None:
        if self._saved_fd is not None:
            try:
                _dup2(self._saved_fd, 2)
            finally:
                _close(self._saved_fd)
                self._saved_fd = None
        if self._file is not None:
            try:
                self._file.flush()
                fd = self._file.fileno()
                _lseek(fd, 0, 0)
                self._fd_text = _read(fd, 4 * MAX_CAPTURED).decode("utf-8", errors="replace")
            except (OSError, ValueError):
                self._fd_text = ""
            finally:
                self._file.close()
                self._file = None

    def text(self) -> str:
        """Everything captured (Python streams first, then fd 2), cut to MAX_CAPTURED."""
        text = self._buffer.getvalue() + self._fd_text
        if len(text) > MAX_CAPTURED:
            text = text[:MAX_CAPTURED] + f"\n[... {len(text) - MAX_CAPTURED} more characters]\n"
        return text


def flush(stream) -> None:
    """Flush ``stream`` if it can be flushed (a student may have replaced it)."""
    try:
        stream.flush()
    except Exception:  # noqa: BLE001 - any object may sit in sys.stderr
        pass


def _stderr_handlers() -> list:
    """Every StreamHandler of every logger. (``logging.lastResort`` writes to whatever
    ``sys.stderr`` is at the time, so redirecting ``sys.stderr`` covers it.)"""
    loggers = [logging.getLogger()]
    loggers += [lg for lg in list(logging.Logger.manager.loggerDict.values())
                if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in list(lg.handlers) if isinstance(h, _StreamHandler)]


__all__ = ["HEADING", "MAX_CAPTURED", "StderrCapture", "flush"]
