"""The course's grading tools, around nbgrader.

Commands (``python -m autograder <command>``; the Makefile's targets call them):

- ``release [LAB ...]``  regenerate ``labs/`` from ``solutions/`` (make release)
- ``references [--check]``  rewrite reference outputs from ``autograder/cases/`` (make references)
- ``autograde --lab L --submissions DIR [--out OUT] [--jobs N] [--regrade]``  grade a class,
  sandboxed, N submissions at a time (make autograde)
- ``check NB``  grade one notebook exactly as the grader would (make check)
- ``results``  collect every lab's measured results into one table (make results)

``python -m autograder.throughput [N] [--jobs J]`` measures submissions graded per minute.

Modules: ``session`` (layout, configuration, running nbgrader), ``release``, ``references``,
``grade`` (a class run), ``intake`` (submissions in), ``materials`` (per-run preparation),
``withheld`` (the grading copy of ``course``, redacted references; ``withheld_probe`` checks
it in the sandbox), ``worker`` (one submission), ``overwrite`` (cells restored without
nbgrader's expected checksum warnings), ``sandbox`` and ``limits`` (bubblewrap, resource
limits), ``kernel`` (the sandboxed kernel), ``execute`` (bounded execution), ``verdicts``
(the grader's judgement of recorded outcomes), ``rerun`` and ``rerun_harness`` (plain tests
and outcomes a record cannot prove, re-run fresh), ``replay`` (results into the gradebook),
``ledger`` (resume), ``export`` (CSV files), ``feedback`` (feedback without hidden tests),
``check`` (a student's self-check), ``results``, ``regions`` (solution and hidden-test
regions of source cells), ``toy_lab`` (a minimal source assignment), ``throughput``. See
``README.md``. Importing this package is cheap; each module imports nbgrader only when it is
used.
"""
