"""Old import path of :func:`autograder.commands.release.release`, kept for the lab tests
(``tests/test_labNN.py``, ``tests/test_jupyterlab.py``) that still import it from here."""

from autograder.commands.release import release

__all__ = ["release"]
