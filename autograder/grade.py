"""Old import path of :func:`autograder.commands.autograde.autograde`, kept for the lab tests
(``tests/test_labNN.py``) that still import it from here."""

from autograder.commands.autograde import autograde

__all__ = ["autograde"]
