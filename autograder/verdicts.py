"""Old import path of :mod:`autograder.judging.verdicts`, kept for ``tests/test_grading.py``,
which still imports it from here."""

from autograder.judging.verdicts import References, apply_verdicts, plan_test_cell

__all__ = ["References", "apply_verdicts", "plan_test_cell"]
