"""Old import path of :mod:`autograder.judging.verdicts` (and of ``apply_verdicts``, now in
:mod:`autograder.preprocessors.judged`), kept for ``tests/test_grading.py``, which still
imports them from here."""

from autograder.judging.verdicts import References, plan_test_cell
from autograder.preprocessors.judged import apply_verdicts

__all__ = ["References", "apply_verdicts", "plan_test_cell"]
