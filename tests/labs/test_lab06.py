"""lab06 end to end: the solution notebook executes and shows what the lab claims (the
quantized point at alpha = 1 of its step, steps that grow as bits shrink, the loss rising
with them, a contour, a sharpness table, the explorer); graded with the real grader, the
solution earns full marks, the released lab scores zero without crashing, one wrong answer
loses exactly its exercise's points, and an answer calling the library's own implementation
is refused."""

from __future__ import annotations

import pytest
from conftest import notebook_errors

from autograder.session import REPO_ROOT
from tests.autograder.classroom import (
    autograded_test_cells,
    grade_lab_class,
    gradebook_grades,
)

LAB = "lab06_dangers_of_quantization"
SOURCE = REPO_ROOT / "solutions" / LAB / f"{LAB}.ipynb"
BROKEN = "perturbed"          # loss_curve's solution calls it: it must fail too
BROKEN_LEAF = "top_hessian_eigenvalue"
SOLVED, BLANK, WRONG, LEAF, LIBCALL = "alice", "bob", "carol", "dave", "erin"
BITS = [8, 4, 3, 2]


@pytest.fixture(scope="module")
def executed(execute_solution):
    return execute_solution(LAB)


@pytest.mark.slow
def test_solution_notebook_runs_and_shows_the_landscape(executed):
    nb, results, seconds = executed
    errors = notebook_errors(nb)
    assert not errors, errors[0]
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 5      # two curve plots, two contours, the explorer
    print(f"{LAB} ran in {seconds:.0f} s; experiments {results['seconds']:.0f} s")


@pytest.mark.slow
def test_quantization_steps_grow_as_bits_shrink_and_the_loss_follows(executed):
    _, results, _ = executed
    for model in ("mlp", "cnn"):
        rows = [r for r in results["quantization_steps"] if r["model"] == model]
        assert [r["bits"] for r in rows] == BITS
        sizes = [r["|step| / |theta|"] for r in rows]
        assert sizes == sorted(sizes) and sizes[0] < 0.01 < sizes[-1]
        assert rows[0]["loss at 1 (quantized)"] == pytest.approx(rows[0]["loss at 0 (float)"],
                                                                 rel=0.02)   # 8 bits: safe
        assert rows[-1]["loss at 1 (quantized)"] > 2 * rows[-1]["loss at 0 (float)"]
        curve = results["curves"][model]["random 1"]
        alphas = results["curves"]["alphas"]
        assert min(curve) == pytest.approx(curve[alphas.index(0.0)], rel=0.1)


@pytest.mark.slow
def test_random_planes_barely_see_the_quantization_step(executed):
    _, results, _ = executed
    rows = results["plane"]["projections"]
    random_plane = [r for r in rows if r["plane"] == "random plane"]
    assert all(r["fraction of the step outside the plane"] > 0.99 for r in random_plane)
    own = [r for r in rows if r["plane"] != "random plane" and r["bits"] == 2][0]
    assert own["a"] == pytest.approx(1.0, abs=1e-6)
    assert own["fraction of the step outside the plane"] < 1e-6


@pytest.mark.slow
def test_sharpness_table_is_complete(executed):
    _, results, _ = executed
    rows = results["sharp_vs_flat"]
    assert [r["batch size"] for r in rows] == [32, 128, 1024]
    for r in rows:
        assert r["lambda_max"] > 0 and r["float accuracy"] > 0.85
        assert r["2-bit bound 0.5 lambda |step|^2"] > r["4-bit bound 0.5 lambda |step|^2"]
    assert isinstance(results["sharper_loses_more_at_3_bits"], bool)


# ----------------------------------------------------------------------------- grading
@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_lab_class(tmp_path_factory.mktemp("lab06_course"), LAB, SOURCE, {
        LEAF: (BROKEN_LEAF, "return 1.0"),
        WRONG: (BROKEN, "return copy.deepcopy(model)"),
        LIBCALL: ("quantization_direction",
                  "return landscape.quantization_direction(model, num_bits)"),
    })


def _test_cells() -> dict[str, str]:
    return autograded_test_cells(SOURCE)


def _lost(grades, student) -> set[str]:
    return {g for g in _test_cells() if grades[(student, g)][0] != grades[(SOLVED, g)][0]}


@pytest.mark.slow
def test_solution_full_marks_release_zero(graded):
    grades = gradebook_grades(graded, LAB)
    tests = _test_cells()
    assert sorted(tests) == sorted(f"test_{n}" for n in (
        "filter_normalized_direction", "quantization_direction", "perturbed", "loss_curve",
        "top_hessian_eigenvalue"))
    assert {g: grades[(SOLVED, g)][:2] for g in tests if grades[(SOLVED, g)][0]
            != grades[(SOLVED, g)][1]} == {}
    assert sum(grades[(SOLVED, g)][1] for g in tests) == 12
    assert {grades[(BLANK, g)][0] for g in tests} == {0.0}
    assert grades[(SOLVED, "answer_dangers")][1] == 4          # graded by hand


@pytest.mark.slow
def test_one_wrong_answer_loses_only_its_points(graded):
    grades = gradebook_grades(graded, LAB)
    assert _lost(grades, LEAF) == {f"test_{BROKEN_LEAF}"}
    # the solution's loss_curve calls perturbed: both lose their points, nothing else
    assert _lost(grades, WRONG) == {f"test_{BROKEN}", "test_loss_curve"}
    assert _lost(grades, LIBCALL) == {"test_quantization_direction"}   # withheld
