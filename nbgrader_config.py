"""nbgrader configuration of the course.

Read by ``python -m autograder`` (every command: release, autograde, check) and by the
``nbgrader`` command line when it runs from the repository root. Paths are relative to the
repository root (the folder of this file):

- ``solutions/<lab>/``  source notebooks (solutions, visible and hidden tests)
- ``labs/<lab>/``       released student notebooks, generated, committed
- ``autograder/work/``  the grader's state, git-ignored: ``gradebook.db`` and nbgrader's
  ``submitted/``, ``autograded/``, ``feedback/`` folders; never the repo root, never labs/.

Run ``nbgrader`` by hand only with the virtual environment's ``bin`` first on PATH (it
creates the gradebook by calling ``alembic`` through PATH); ``python -m autograder`` does
this itself.
"""

import os
import sys

c = get_config()  # noqa: F821 -- injected by traitlets when it loads this file

ROOT = os.path.dirname(os.path.abspath(__file__))
WORK = "autograder/work"
COURSE_ID = "quantization-in-neural-networks"
# Time limits count CPU seconds of the student's processes, not wall-clock time, so that a
# busy grading machine costs no honest student a point (autograder/README.md, "Time limits").
CELL_CPU_S = 120  # per executed cell, while grading
NOTEBOOK_CPU_S = 600  # per graded notebook, all cells together
WALL_FACTOR = 4  # wall-clock backstop (for code that sleeps): this many times the CPU limit

# The feedback preprocessor below lives in this repository's `autograder` package.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import ClearHiddenTests, GetGrades  # noqa: E402
from traitlets import List  # noqa: E402

from autograder.preprocessors.hidden_tracebacks import ClearHiddenTestTracebacks  # noqa: E402


def _accepts_display_priority(preprocessor: type) -> type:
    """``preprocessor``, accepting the ``display_data_priority`` the feedback's exporter sets.

    nbconvert's HTMLExporter, which writes the feedback pages, configures
    ``NbConvertBase.display_data_priority`` for every preprocessor it runs; nbgrader's
    preprocessors redeclare that trait without ``config=True`` (none of them reads it), so
    traitlets logged "Config option `display_data_priority` not recognized" for each of them,
    for every student, into autograde.log. The subclass only declares the trait configurable:
    same name (so the same config section), same default, same behaviour; the exporter's own
    priority (which output of a cell the page shows) is untouched.
    """
    trait = preprocessor.class_traits()["display_data_priority"]
    if trait.metadata.get("config"):
        return preprocessor
    return type(preprocessor.__name__, (preprocessor,), {
        "__doc__": preprocessor.__doc__, "__module__": "nbgrader_config",
        "display_data_priority": List(trait.default()).tag(config=True)})


c.CourseDirectory.course_id = COURSE_ID
c.CourseDirectory.root = ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
c.CourseDirectory.submitted_directory = f"{WORK}/submitted"
c.CourseDirectory.autograded_directory = f"{WORK}/autograded"
c.CourseDirectory.feedback_directory = f"{WORK}/feedback"
c.CourseDirectory.solution_directory = f"{WORK}/solution"
c.CourseDirectory.source_with_tests_directory = f"{WORK}/source_with_tests"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, WORK, "gradebook.db")

# Files never copied from a submission next to the graded notebook: anything Python would
# import from the working directory (a student's `numpy.py` or `course/grading.py` would
# shadow the real module), plus nbgrader's defaults. Labs ship no Python files of their own.
# What a user leaves behind in a lab folder (JupyterLab's checkpoints, the results.json a
# lab writes, caches) is ignored too: it never reaches a release, and `make test` does not
# count it as a difference between labs/ and solutions/ (autograder.commands.release.ignored).
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "__pycache__",
    "feedback",
    "results.json",
    ".cache",
    ".DS_Store",
    ".~*",
    "*~",
    "*.py",
    "*.pyc",
    "*.pyd",
    "*.so",
    "*.pth",
]

# Grading: a deleted test cell is put back and run rather than silently scoring 0.
# (`python -m autograder` also restores deleted locked cells and the metadata of every graded
# cell before nbgrader sees a submission: autograder/pipeline/intake.py.) The per-cell time limit is
# Sandbox.cell_cpu_s below; the grader's executor ignores ExecutePreprocessor.timeout.
# The kernel's own start-up warnings (it prints them to the grader's terminal) are noise.
c.ExecutePreprocessor.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
c.OverwriteCells.add_missing_cells = True

# Feedback must not show hidden tests: neither their code (ClearHiddenTests) nor the code
# lines an error traceback quotes (ClearHiddenTestTracebacks, which must run first).
c.GenerateFeedback.preprocessors = [
    _accepts_display_priority(GetGrades),
    CSSHTMLHeaderPreprocessor,
    _accepts_display_priority(ClearHiddenTestTracebacks),
    _accepts_display_priority(ClearHiddenTests),
]
# Feedback pages show what a student's code displayed: no scripts from it.
c.HTMLExporter.sanitize_html = True

# The sandbox every graded notebook runs in, and its limits (autograder/sandbox/bwrap.py, read by
# `python -m autograder`; nbgrader itself ignores this section). mode: "auto" sandboxes with
# bubblewrap where the machine allows and warns loudly where it does not; "require" refuses to
# grade without it; "off" never sandboxes (and warns).
c.Sandbox.mode = "auto"
c.Sandbox.memory_mb = 8192  # address space of each process (torch's CUDA build reserves ~3.4 GB)
c.Sandbox.cpu_s = 900  # CPU seconds of each process
c.Sandbox.processes = 512  # processes and threads of one sandbox user
c.Sandbox.file_mb = 64  # largest file written
c.Sandbox.scratch_mb = 64  # the private working folder and home (tmpfs)
c.Sandbox.tmp_mb = 256  # /tmp (tmpfs)
c.Sandbox.cell_cpu_s = CELL_CPU_S
c.Sandbox.notebook_cpu_s = NOTEBOOK_CPU_S
c.Sandbox.wall_factor = WALL_FACTOR
c.Sandbox.wall_margin_s = 30  # added to every backstop: a kernel's start on a loaded machine
c.Sandbox.output_kb_per_cell = 256  # output kept per cell ...
c.Sandbox.output_kb_per_notebook = 2048  # ... and per notebook
c.Sandbox.message_mb = 32  # largest message accepted from a kernel
