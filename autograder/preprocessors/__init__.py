"""Every rewrite of a notebook, as nbgrader preprocessors; each pipeline is a list of them.

- ``structure``: ``RESTORE``, intake's repairs of a submitted notebook against the release
  (stray and duplicated metadata, released metadata, deleted and edited locked cells);
- ``judged``: ``JUDGED``, the worker's rewrites of an executed notebook before nbgrader
  scores it (displayed values dropped, stderr as stdout, the grader's verdicts, the fresh
  re-run's errors);
- ``overwrite``: nbgrader's ``OverwriteCells`` without its expected checksum warnings
  (``quiet_preprocessors``: ``Autograde.sanitize_preprocessors`` with it);
- ``replay``: ``ReplayExecution``, the worker's executed notebook in place of ``Execute``
  when a result is recorded in the class gradebook;
- ``hidden_tracebacks``: ``ClearHiddenTestTracebacks``, feedback without hidden tests' code
  (``GenerateFeedback.preprocessors`` in ``nbgrader_config.py``);
- ``regions``: the solution and hidden-test regions of source cells they share.
"""
