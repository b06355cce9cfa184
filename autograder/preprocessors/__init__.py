"""Notebook rewrites as nbgrader preprocessors: locked cells restored without nbgrader's
expected checksum warnings (``overwrite``), the worker's executed notebook replayed into the
class gradebook (``replay``), hidden tests' tracebacks cleared from feedback
(``hidden_tracebacks``), and the solution / hidden-test regions of source cells they and
intake share (``regions``).
"""
