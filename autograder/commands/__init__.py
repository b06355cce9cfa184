"""One module per command of ``python -m autograder`` (``autograder.cli`` parses the
arguments): ``release``, ``references``, ``autograde``, ``check``, ``raw_results``.
"""
