"""The course's grading tools, around nbgrader: ``python -m autograder <command>``
(``release``, ``references``, ``autograde``, ``check``, ``raw-results``; the Makefile's
targets call them). See ``README.md`` here for the instructor's workflow.

Folders, each importing only those before it:

- ``session``: course layout, nbgrader configuration, running nbgrader;
- ``sandbox/``: bubblewrap, resource limits, the sandboxed kernel, bounded execution;
- ``judging/``: the grader's verdicts and the fresh re-run of tests;
- ``preprocessors/``: every notebook rewrite, as lists of nbgrader preprocessors;
- ``pipeline/``: intake, per-run materials, the worker pool, one submission, the ledger;
- ``gradebook/``: grades recorded and read back, feedback, CSV export;
- ``commands/`` and ``cli``: one module per command, and their arguments;
- ``cases/`` and ``references/``: the labs' reference cases and hidden references.

Importing this package is cheap; each module imports nbgrader only when it is used.
"""
