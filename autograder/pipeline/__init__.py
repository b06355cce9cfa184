"""A class run, step by step: submissions taken in (``intake``), the run's materials prepared
once (``materials``; ``withheld`` builds the grading copy of ``course``, ``withheld_probe``
checks it inside the sandbox), submissions graded in worker processes (``pool`` keeps them,
``worker`` grades one submission) and the run remembered for resuming (``ledger``).
"""
