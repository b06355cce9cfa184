"""Old import path of :mod:`autograder.pipeline.withheld`, kept for the tests outside
``tests/autograder/`` (``test_grading.py``, ``test_lab05_cases.py``) that still import it."""

from autograder.pipeline.withheld import build_grading_lib, write_redacted_references

__all__ = ["build_grading_lib", "write_redacted_references"]
