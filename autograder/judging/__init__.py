"""The grader's judgement, outside student code: verdicts of ``check`` records against the
instructor's references (``verdicts``), and the fresh sandboxed re-run of plain tests and of
outcomes a record cannot prove (``rerun``, which starts ``rerun_harness`` as a script inside
the sandbox).
"""
