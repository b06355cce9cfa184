"""Where student code runs: bubblewrap (``bwrap``), resource limits applied before ``exec``
(``limits``, a script), the sandboxed ipykernel (``kernel``), bounded execution of a notebook
(``execute``) and the CPU time of a process tree (``cputime``).

Imports nothing else of ``autograder`` except ``autograder.session``.
"""
