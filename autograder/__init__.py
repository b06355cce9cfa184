"""The course's grading tools, around nbgrader.

Commands (``python -m autograder <command>``; the Makefile's targets call them):

- ``release [LAB ...]``  regenerate ``labs/`` from ``solutions/`` (make release)
- ``references [--check]``  rewrite reference outputs from ``autograder/cases/`` (make references)
- ``autograde --lab L --submissions DIR [--out OUT]``  grade a class (make autograde)
- ``check NB``  grade one notebook exactly as the grader would (make check)
- ``results``  collect every lab's measured results into one table (make results)

Modules: ``session`` (layout, configuration, running nbgrader), ``release``, ``references``,
``grade`` (class autograding), ``export`` (CSV files), ``feedback`` (feedback without hidden
tests), ``check`` (a student's self-check), ``results``, ``regions`` (solution and hidden-test
regions of source cells), ``toy_lab`` (a minimal source assignment). See ``README.md``.
Importing this package is cheap; each module imports nbgrader only when it is used.
"""
