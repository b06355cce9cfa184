"""The grader end to end: ``python -m autograder autograde`` and ``check`` with nbgrader.

A toy source assignment (``tests/autograder/toy_lab.py``) is released and submitted by a class whose
students cover the cases that matter: the solution, the untouched release, one wrong answer
(it passes the visible test, fails the hidden one), a file that is not JSON, a missing
notebook, a ``json.py`` that would shadow the real module, a deleted test cell. The same
round trip then runs on lab01 itself when it exists. Every score is checked against
nbgrader's own gradebook, and the feedback against the hidden test code. Attacks and faults
are in ``test_adversarial.py``; the sandbox and the grader's parts in ``test_sandbox.py``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from autograder.preprocessors.regions import HIDDEN_TESTS, region_lines
from autograder.session import REPO_ROOT, CourseLayout, load_config, open_gradebook
from tests.autograder.classroom import (
    BLANK,
    DELETED,
    GRADED,
    MISSING,
    NOT_GRADED,
    NOT_JSON,
    SHADOW,
    SOLVED,
    TOY_MAX,
    WRONG,
    ClassRun,
    break_function,
    gradebook_grades,
    gradebook_totals,
    page_text,
    read_csv,
    run_cli,
    submit,
)
from tests.autograder.toy_lab import (
    HIDDEN_MARKER,
    HIDDEN_MESSAGE,
    SQUARE_MESSAGE,
    TOY_AUTOGRADED,
    TOY_LAB,
    TOY_MANUAL,
    TOY_POINTS,
    write_toy_lab,
)

LAB01 = "lab01_direct_quantization"
LAB01_SOURCE = REPO_ROOT / "solutions" / LAB01 / f"{LAB01}.ipynb"
# The exercise lab01's tests break on purpose: a leaf (no other exercise calls it).
LAB01_BROKEN = "sqnr_db"



# ----------------------------------------------------------------------------- the toy class
@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> ClassRun:
    from autograder.commands.release import release

    root = tmp_path_factory.mktemp("toy_course")
    source = write_toy_lab(root)
    layout = CourseLayout.from_config(root=root)
    released = release([TOY_LAB], layout)[TOY_LAB]
    released_nb = next(p for p in released if p.suffix == ".ipynb")
    subs = root / "submissions"

    submit(subs, SOLVED, TOY_LAB, source)
    submit(subs, BLANK, TOY_LAB, released_nb)
    # passes the visible test cube(2) == 8, fails the hidden cube(-2) == -8
    break_function(source, "cube", "return abs(x) ** 3", subs / WRONG / TOY_LAB / source.name)
    submit(subs, NOT_JSON, TOY_LAB, source).write_text('{"cells": [')
    (subs / MISSING / TOY_LAB).mkdir(parents=True)
    (subs / MISSING / TOY_LAB / "notes.txt").write_text("forgot the notebook\n")
    submit(subs, SHADOW, TOY_LAB, source)
    (subs / SHADOW / TOY_LAB / "json.py").write_text("raise ImportError('shadowed json')\n")
    nb = nbformat.read(str(source), as_version=4)
    nb.cells = [c for c in nb.cells if c.get("id") != "test_square"]
    (subs / DELETED / TOY_LAB).mkdir(parents=True)
    nbformat.write(nb, str(subs / DELETED / TOY_LAB / source.name))

    out = root / "out"
    process = run_cli("autograde", "--lab", TOY_LAB, "--submissions", str(subs),
                      "--out", str(out), root=root)
    assert (out / "grades.csv").is_file(), process.stdout + process.stderr
    return ClassRun(layout, TOY_LAB, subs, out, process)


def test_config_keeps_grader_state_under_autograder_work():
    config = load_config()
    course = config.CourseDirectory
    root = Path(course.root)
    assert root == REPO_ROOT
    assert (course.source_directory, course.release_directory) == ("solutions", "labs")
    for step in ("submitted", "autograded", "feedback"):
        assert getattr(course, f"{step}_directory") == f"autograder/work/{step}"
    assert course.db_url == f"sqlite:///{REPO_ROOT / 'autograder' / 'work' / 'gradebook.db'}"
    assert 0 < config.Sandbox.cell_cpu_s <= 600 and config.Sandbox.wall_factor >= 2
    assert config.Sandbox.mode == "auto" and config.HTMLExporter.sanitize_html is True
    assert config.Sandbox.cell_cpu_s < config.Sandbox.notebook_cpu_s <= config.Sandbox.cpu_s
    assert "timeout" not in config.ExecutePreprocessor  # the executor uses the CPU limits
    assert "*.py" in course.ignore
    names = [cls.__name__ for cls in config.GenerateFeedback.preprocessors]
    assert names.index("ClearHiddenTestTracebacks") < names.index("ClearHiddenTests")
    # `autograder/work/` is git-ignored: nothing the grader writes can be committed by mistake
    assert "autograder/work/" in (REPO_ROOT / ".gitignore").read_text().split()


@pytest.mark.slow
def test_summary_lists_every_student_and_failures_do_not_stop_the_others(toy):
    out = toy.process.stdout
    assert toy.process.returncode == 1, out + toy.process.stderr  # done, some not graded
    assert f"{TOY_LAB}: graded {len(GRADED)} of {len(GRADED) + len(NOT_GRADED)} students" in out
    totals = gradebook_totals(toy.layout, TOY_LAB)
    mean = sum(totals[s] for s in GRADED) / len(GRADED)
    assert f"mean score {mean:.2f} / {TOY_MAX:.2f}" in out
    assert re.search(rf"{NOT_JSON}: NOT GRADED: {TOY_LAB}\.ipynb is not a notebook: invalid "
                     "JSON at line 1", out)
    assert re.search(rf"{MISSING}: NOT GRADED: no notebook in the submission", out)
    assert set(totals) == set(GRADED)
    assert re.search(r"executed 5 submission\(s\) in [\d.]+ s with JOBS=\d+, sandbox: ", out)


@pytest.mark.slow
def test_solution_earns_full_marks_on_every_autograded_cell(toy):
    grades = gradebook_grades(toy.layout, TOY_LAB)
    for grade_id in TOY_AUTOGRADED:
        score, max_score, auto, manual = grades[(SOLVED, grade_id)]
        assert score == max_score == TOY_POINTS[grade_id] and auto == max_score
    score, max_score, auto, manual = grades[(SOLVED, TOY_MANUAL[0])]
    assert (score, auto, manual) == (0.0, None, None)  # waits for a human


@pytest.mark.slow
def test_unanswered_release_scores_zero_without_crashing(toy):
    grades = gradebook_grades(toy.layout, TOY_LAB)
    assert {grades[(BLANK, g)][0] for g in TOY_POINTS} == {0.0}
    assert gradebook_totals(toy.layout, TOY_LAB)[BLANK] == 0.0


@pytest.mark.slow
def test_one_wrong_answer_loses_exactly_that_exercise(toy):
    grades = gradebook_grades(toy.layout, TOY_LAB)
    assert grades[(WRONG, "test_cube")][0] == 0.0
    assert grades[(WRONG, "test_square")][0] == TOY_POINTS["test_square"]
    assert gradebook_totals(toy.layout, TOY_LAB)[WRONG] == TOY_POINTS["test_square"]


@pytest.mark.slow
def test_submitted_python_files_cannot_shadow_modules(toy):
    grades = gradebook_grades(toy.layout, TOY_LAB)
    assert [grades[(SHADOW, g)][0] for g in TOY_AUTOGRADED] == [TOY_POINTS[g] for g in
                                                                 TOY_AUTOGRADED]
    assert not (toy.layout.step_dir("autograded") / SHADOW / TOY_LAB / "json.py").exists()
    assert re.search(rf"{SHADOW}: 5\.00 / 6\.00 .*1 other file\(s\) in the submission ignored",
                     toy.process.stdout)


@pytest.mark.slow
def test_a_deleted_test_cell_is_put_back_and_run(toy):
    grades = gradebook_grades(toy.layout, TOY_LAB)
    assert grades[(DELETED, "test_square")][0] == TOY_POINTS["test_square"]
    graded = toy.layout.step_dir("autograded") / DELETED / TOY_LAB / f"{TOY_LAB}.ipynb"
    ids = [c.metadata.get("nbgrader", {}).get("grade_id")
           for c in nbformat.read(str(graded), as_version=4).cells]
    assert "test_square" in ids


@pytest.mark.slow
def test_grades_csv_is_nbgrader_export_agreeing_with_the_gradebook(toy):
    from autograder.gradebook.export import GRADES_COLUMNS

    columns, rows = read_csv(toy.out / "grades.csv")
    assert tuple(columns) == GRADES_COLUMNS
    totals = gradebook_totals(toy.layout, TOY_LAB)
    by_student = {row["student_id"]: row for row in rows}
    assert set(by_student) == set(GRADED) | set(NOT_GRADED)  # every student is listed
    for student, row in by_student.items():
        assert row["assignment"] == TOY_LAB
        assert float(row["max_score"]) == TOY_MAX
        assert float(row["raw_score"]) == totals.get(student, 0.0)
        assert float(row["score"]) == float(row["raw_score"])  # no late penalty here


@pytest.mark.slow
def test_scores_csv_has_one_row_per_student_and_graded_cell(toy):
    from autograder.gradebook.export import SCORES_COLUMNS

    columns, rows = read_csv(toy.out / "scores.csv")
    assert tuple(columns) == SCORES_COLUMNS
    grades = gradebook_grades(toy.layout, TOY_LAB)
    table = {(r["student_id"], r["grade_id"]): (float(r["score"]), float(r["max_score"]))
             for r in rows}
    assert len(table) == len(rows) == len(GRADED) * len(TOY_POINTS)
    assert {r["lab"] for r in rows} == {TOY_LAB}
    assert table == {key: value[:2] for key, value in grades.items()}
    first = [r["grade_id"] for r in rows if r["student_id"] == SOLVED]
    assert first == ["test_square", "test_cube", "answer_why"]  # notebook order


@pytest.mark.slow
def test_feedback_shows_scores_but_no_hidden_test(toy):
    source = toy.layout.source_dir / TOY_LAB / f"{TOY_LAB}.ipynb"
    hidden = [line.strip() for cell in nbformat.read(str(source), as_version=4).cells
              for line in region_lines(cell.source, HIDDEN_TESTS) if line.strip()]
    assert hidden
    for student in GRADED:
        pages = sorted((toy.out / "feedback" / student / TOY_LAB).iterdir())
        assert [p.name for p in pages] == [f"{TOY_LAB}.html"]
        text = page_text(pages[0])
        assert 'check(LAB, "cube", cube)' in text  # the visible test is there
        assert 'assert square(3) == 9, "square(3) should be 9"' in text
        assert HIDDEN_MARKER not in text and SQUARE_MESSAGE not in text
        assert [line for line in hidden if line in text] == []
    wrong = page_text(toy.out / "feedback" / WRONG / TOY_LAB / f"{TOY_LAB}.html")
    # the grader's verdict on the hidden cases: the reason, not the code
    assert "Mismatch: cube: 1 of 3 hidden checks failed" in wrong and HIDDEN_MESSAGE in wrong
    solved = page_text(toy.out / "feedback" / SOLVED / TOY_LAB / f"{TOY_LAB}.html")
    assert "cube: all 3 hidden checks passed (judged by the grader)" in solved
    # ... while the autograded notebook the instructor sees keeps the hidden code:
    autograded = toy.layout.step_dir("autograded") / WRONG / TOY_LAB / f"{TOY_LAB}.ipynb"
    sources = "".join(c.source for c in nbformat.read(str(autograded), as_version=4).cells)
    assert HIDDEN_MARKER in sources


@pytest.mark.slow
def test_rerun_is_idempotent_and_keeps_manual_grades(toy, tmp_path):
    from autograder.commands.autograde import autograde

    root = tmp_path / "course"
    shutil.copytree(toy.layout.root, root, symlinks=True)
    layout = CourseLayout.from_config(root=root)
    with open_gradebook(layout) as gradebook:
        gradebook.find_grade("answer_why", TOY_LAB, TOY_LAB, SOLVED).manual_score = 1.0
        gradebook.find_grade("test_cube", TOY_LAB, TOY_LAB, WRONG).manual_score = 1.5
        gradebook.db.commit()
    before = read_csv(toy.out / "scores.csv")[1]

    out = tmp_path / "out"
    report = autograde(TOY_LAB, root / "submissions", out, layout)  # nothing changed: no run
    assert {s.student_id for s in report.graded} == set(GRADED)
    assert report.executed == () and read_csv(out / "scores.csv")[1] != before
    report = autograde(TOY_LAB, root / "submissions", out, layout, regrade=True)
    assert {s.student_id for s in report.executed} == set(GRADED), report.summary()

    grades = gradebook_grades(layout, TOY_LAB)
    assert grades[(SOLVED, "answer_why")][0] == 1.0
    assert grades[(WRONG, "test_cube")][:4] == (1.5, 3.0, 0.0, 1.5)  # autograder still 0
    after = read_csv(out / "scores.csv")[1]
    changed = {(r["student_id"], r["grade_id"]): r["score"] for r in after if r not in before}
    assert changed == {(SOLVED, "answer_why"): "1.0", (WRONG, "test_cube"): "1.5"}
    raw = {r["student_id"]: float(r["raw_score"]) for r in read_csv(out / "grades.csv")[1]}
    assert raw[SOLVED] == TOY_MAX and raw[WRONG] == TOY_POINTS["test_square"] + 1.5


@pytest.mark.slow
def test_check_names_the_failing_exercise_and_its_message(toy):
    wrong = toy.submissions / WRONG / TOY_LAB / f"{TOY_LAB}.ipynb"
    process = run_cli("check", str(wrong), root=toy.layout.root)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    failing = [line for line in lines if "test_cube" in line and "FAILED" in line]
    assert failing and "Mismatch: cube: 1 of 3 hidden checks failed" in failing[0]
    assert HIDDEN_MESSAGE in failing[0]
    assert any("test_square" in line and "passed" in line for line in lines)
    assert any("answer_why" in line and "graded by hand" in line for line in lines)
    assert HIDDEN_MARKER not in process.stdout


@pytest.mark.slow
def test_check_fails_only_when_grading_cannot_run(toy, tmp_path):
    broken = toy.submissions / NOT_JSON / TOY_LAB / f"{TOY_LAB}.ipynb"
    process = run_cli("check", str(broken), root=toy.layout.root)
    assert process.returncode == 2
    assert "is not a notebook: invalid JSON" in process.stderr
    stray = tmp_path / "elsewhere.ipynb"
    shutil.copyfile(toy.layout.source_dir / TOY_LAB / f"{TOY_LAB}.ipynb", stray)
    process = run_cli("check", str(stray), root=toy.layout.root)
    assert process.returncode == 2 and "which lab" in process.stderr


@pytest.mark.slow
def test_a_hanging_cell_is_stopped_by_the_cell_timeout(tmp_path):
    """The per-cell CPU limit (here 3 s instead of the course's 120 s) interrupts a solution
    that never returns: that test scores 0, the rest of the notebook is still graded."""
    from autograder.commands.autograde import autograde

    source = write_toy_lab(tmp_path)
    layout = CourseLayout.from_config(root=tmp_path)
    subs = tmp_path / "submissions"
    break_function(source, "square", "while True:\n    pass", subs / "henry" / TOY_LAB /
                   source.name)
    config = load_config()
    config.Sandbox.cell_cpu_s = 3
    report = autograde(TOY_LAB, subs, tmp_path / "out", layout, config, jobs=1)
    assert [s.student_id for s in report.graded] == ["henry"], report.summary()
    grades = gradebook_grades(layout, TOY_LAB)
    assert grades[("henry", "test_square")][0] == 0.0
    assert grades[("henry", "test_cube")][0] == TOY_POINTS["test_cube"]
    graded = layout.step_dir("autograded") / "henry" / TOY_LAB / f"{TOY_LAB}.ipynb"
    cells = {c.get("id"): c for c in nbformat.read(str(graded), as_version=4).cells}
    errors = [o["ename"] for o in cells["test_square"].outputs if o["output_type"] == "error"]
    assert "CellTimeoutError" in errors  # interrupted after 3 s; the kernel went on


def test_autograde_checks_its_arguments(tmp_path):
    from autograder.commands.autograde import autograde

    write_toy_lab(tmp_path)
    layout = CourseLayout.from_config(root=tmp_path)
    with pytest.raises(ValueError, match="lab"):
        autograde("no_such_lab", tmp_path, layout=layout)
    with pytest.raises(ValueError, match="submissions"):
        autograde(TOY_LAB, tmp_path / "absent", layout=layout)
    with pytest.raises(TypeError, match="submissions"):
        autograde(TOY_LAB, 42, layout=layout)
    with pytest.raises(ValueError, match="jobs"):
        autograde(TOY_LAB, tmp_path, layout=layout, jobs=0)


def test_a_failed_run_names_the_first_real_exception():
    from autograder.session import NbgraderRun

    log = ("[INFO] Sanitizing x.ipynb\n[ERROR] There was an error processing assignment\n"
           "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
           "nbformat.reader.NotJSONError: Notebook does not appear to be JSON\n")
    error = "Traceback ...\nnbgrader.converters.base.NbGraderException: Please see the log\n"
    run = NbgraderRun(success=False, log=log, error=error)
    assert run.reason() == "nbformat.reader.NotJSONError: Notebook does not appear to be JSON"
    assert NbgraderRun(success=False, log="[ERROR] disk full\n").reason() == "disk full"


# ----------------------------------------------------------------------------- lab01
needs_lab01 = pytest.mark.skipif(not LAB01_SOURCE.is_file(), reason=f"solutions/{LAB01} absent")


def lab01_test_cells() -> dict[str, str]:
    """grade_id -> source of lab01's autograded test cells."""
    notebook = nbformat.read(str(LAB01_SOURCE), as_version=4)
    cells = {}
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
            cells[meta["grade_id"]] = cell.source
    return cells


@pytest.fixture(scope="module")
def lab01(tmp_path_factory) -> ClassRun:
    from autograder.commands.autograde import autograde
    from autograder.commands.release import release

    root = tmp_path_factory.mktemp("lab01_course")
    shutil.copytree(LAB01_SOURCE.parent, root / "solutions" / LAB01)
    layout = CourseLayout.from_config(root=root)
    released = release([LAB01], layout)[LAB01]
    subs = root / "submissions"
    submit(subs, SOLVED, LAB01, LAB01_SOURCE)
    submit(subs, BLANK, LAB01, next(p for p in released if p.suffix == ".ipynb"))
    break_function(LAB01_SOURCE, LAB01_BROKEN, "return -1.0",
                   subs / WRONG / LAB01 / LAB01_SOURCE.name)
    out = root / "out"
    report = autograde(LAB01, subs, out, layout)
    assert not report.failed, report.summary()
    return ClassRun(layout, LAB01, subs, out)


@needs_lab01
@pytest.mark.slow
def test_lab01_solution_earns_full_marks(lab01):
    grades = gradebook_grades(lab01.layout, LAB01)
    tests = lab01_test_cells()
    assert tests
    scores = {g: grades[(SOLVED, g)][:2] for g in tests}
    assert {g: s for g, (s, m) in scores.items() if s != m} == {}


@needs_lab01
@pytest.mark.slow
def test_lab01_released_lab_scores_zero(lab01):
    grades = gradebook_grades(lab01.layout, LAB01)
    assert {score for (student, _), (score, *_rest) in grades.items() if student == BLANK} == {0.0}


@needs_lab01
@pytest.mark.slow
def test_lab01_one_broken_exercise_loses_exactly_its_points(lab01):
    grades = gradebook_grades(lab01.layout, LAB01)
    tests = lab01_test_cells()
    broken = {g for g, source in tests.items() if LAB01_BROKEN in source}
    assert broken, f"no test cell of lab01 checks {LAB01_BROKEN}"
    for grade_id in tests:
        score, max_score = grades[(WRONG, grade_id)][:2]
        expected = 0.0 if grade_id in broken else max_score
        assert score == expected, grade_id
    lost = sum(grades[(SOLVED, g)][0] - grades[(WRONG, g)][0] for g in tests)
    assert lost == sum(grades[(SOLVED, g)][1] for g in broken)


@needs_lab01
@pytest.mark.slow
def test_lab01_feedback_has_no_hidden_test_code(lab01):
    hidden = {line.strip() for source in lab01_test_cells().values()
              for line in region_lines(source, HIDDEN_TESTS) if line.strip()}
    for student in (SOLVED, BLANK, WRONG):
        text = page_text(lab01.out / "feedback" / student / LAB01 / f"{LAB01}.html")
        assert [line for line in hidden if line in text] == []


@needs_lab01
@pytest.mark.slow
def test_lab01_check_names_the_broken_exercise(lab01):
    broken = lab01.submissions / WRONG / LAB01 / LAB01_SOURCE.name
    process = run_cli("check", str(broken), root=lab01.layout.root)
    assert process.returncode == 0, process.stderr
    failing = [line for line in process.stdout.splitlines() if "FAILED" in line]
    assert failing and all(LAB01_BROKEN in line for line in failing), process.stdout
    # each failure carries the message the test raised: "Name: message" after FAILED
    assert all(re.search(r"FAILED  [\w.]+: \S", line) for line in failing), process.stdout
