"""lab05 end to end: the solution notebook executes and its measurements show what the lab
claims — frozen weights stay put only with the masked step, INQ keeps the float accuracy at
5 and 4 bits and beats direct power-of-two rounding, every final weight is 0 or ±2^n, the
stored bytes are the packed codes, the shift-and-add product is exact. Then the grader:
the solution earns full marks, the released lab 0 without crashing, and one wrong answer
loses exactly its exercise's points. Speed is measured by the notebook, never asserted."""

from __future__ import annotations

import math

import pytest
from conftest import notebook_errors

from autograder.session import REPO_ROOT
from course.claims import claim_rows
from course.measure import model_size_bytes
from course.models import build_model
from tests.autograder.classroom import (
    BLANK,
    SOLVED,
    WRONG,
    autograded_test_cells,
    grade_lab_class,
    gradebook_grades,
)

LAB = "lab05_incremental_network_quantization"
SOURCE = REPO_ROOT / "solutions" / LAB / f"{LAB}.ipynb"
BITS = (5, 4, 3)
PORTIONS = ("50 %", "75 %", "87.5 %", "100 %")
# The exercise broken on purpose: a leaf, no other exercise's test calls it.
BROKEN = "shift_matvec"


@pytest.fixture(scope="module")
def executed(execute_solution):
    return execute_solution(LAB)


@pytest.mark.slow
def test_solution_notebook_runs_without_errors(executed):
    nb, results, seconds = executed
    errors = notebook_errors(nb)
    assert not errors, errors[0]
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(shown) >= 3  # the levels histogram and one accuracy-per-step plot per model
    print(f"lab05 ran in {seconds:.0f} s; experiments {results['seconds']:.0f} s")


@pytest.mark.slow
def test_only_the_masked_step_keeps_frozen_weights(executed):
    _, results, _ = executed
    drift = results["frozen_weights_after_20_steps"]
    assert drift["your inq_step"]["moved"] == 0 and drift["your inq_step"]["still powers of two"]
    assert drift["gradient masked only"]["moved"] > 0.9 * drift["gradient masked only"]["frozen"]


@pytest.mark.slow
def test_inq_keeps_float_accuracy_at_5_and_4_bits_and_beats_direct_rounding(executed):
    _, results, _ = executed
    rows = {(r["model"], r["bits"]): r for r in results["inq_table"]}
    assert sorted(rows) == sorted((m, b) for m in ("mlp", "cnn") for b in BITS)
    for (model, bits), row in rows.items():
        assert all(0 <= row[f"INQ {p}"] <= 1 for p in PORTIONS)
        assert row["direct power of two"] == results["direct_pow2"][model][str(bits)]
        if bits >= 4:
            assert row["INQ 100 %"] >= row["float"] - 0.01, (model, bits)
        assert row["INQ 100 %"] >= row["direct power of two"] - 0.005, (model, bits)
    assert rows["cnn", 3]["INQ 100 %"] > rows["cnn", 3]["direct power of two"] + 0.05
    partition = results["partition"]
    assert (partition["model"], partition["bits"]) == ("mlp", 3)
    assert partition["pruning"] == rows["mlp", 3]["INQ 100 %"]


@pytest.mark.slow
def test_every_weight_is_a_level_and_the_stored_bytes_are_the_packed_codes(executed):
    _, results, _ = executed
    for row in results["storage"]:
        assert row["every weight 0 or ±2^n"] and row["loaded back exactly"]
        model = build_model(row["model"])
        layers = [m for m in model.modules() if type(m).__name__ in ("Linear", "Conv2d")]
        weights = sum(m.weight.numel() for m in layers)
        assert row["weights"] == weights
        packed = sum(math.ceil(m.weight.numel() * row["bits"] / 8) for m in layers)
        assert row["packed code bytes"] == packed
        float_rest = model_size_bytes(model) - 4 * weights
        exponent_bytes = 2 * 2 * len(layers)           # int16 [n1, n2] per layer
        assert row["stored bytes"] == packed + float_rest + exponent_bytes
        assert row["fp32 bytes"] == model_size_bytes(model)
        assert row["stored file bytes"] < row["fp32 file bytes"] * (row["bits"] + 1) / 32 + 8192
        inq_row = next(r for r in results["inq_table"]
                       if (r["model"], r["bits"]) == (row["model"], row["bits"]))
        assert row["accuracy loaded"] == inq_row["INQ 100 %"]


@pytest.mark.slow
def test_shift_and_add_is_exact_and_timed(executed):
    _, results, _ = executed
    shift = results["shift_matvec"]
    assert shift["exact"] is True and shift["shape"] == [512, 784]
    assert set(shift["median_ms"]) == {"fp32 matmul", "int64 integer product",
                                       "library shift-and-add kernel",
                                       "your shift_matvec (plain torch)"}
    assert all(v > 0 for v in shift["median_ms"].values())


@pytest.mark.slow
def test_paper_table_and_claims_read_the_results(executed):
    _, results, _ = executed
    assert results["paper_5bit"]["paper"]["ResNet-18"] == [31.73, 31.02]
    rows = [r for r in claim_rows({LAB: results}) if r["lab"] == LAB]
    assert len(rows) == 3
    assert all(r["measured here"][0].isalpha() and "not" not in r["measured here"][:4]
               for r in rows), rows


def test_claims_of_lab05_read_a_results_file():
    results = {"paper_5bit": {"ours": [{"network": "mlp", "float top-1 error %": 4.4,
                                        "INQ 5-bit top-1 error %": 4.2}]},
               "partition": {"model": "mlp", "bits": 3, "pruning": 0.95, "random": 0.94},
               "storage": [{"model": "mlp", "bits": 5, "size vs fp32": 0.16,
                            "stored bytes": 16, "fp32 bytes": 100}]}
    measured = [r["measured here"] for r in claim_rows({LAB: results}) if r["lab"] == LAB]
    assert measured == ["mlp: float 4.40 % error, INQ 5-bit 4.20 %",
                        "mlp at 3 bits: largest first 95.00 %, random 94.00 % (+1.00 points)",
                        "mlp 5 bits: 6.2x smaller (16 of 100 bytes)"]


# ----------------------------------------------------------------------------- the grader
def test_cells() -> dict[str, str]:
    """grade_id -> source of the lab's autograded test cells."""
    return autograded_test_cells(SOURCE)


test_cells.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    layout = grade_lab_class(tmp_path_factory.mktemp("lab05_course"), LAB, SOURCE, {
        WRONG: (BROKEN, "return torch.zeros(x.shape[0], codes.shape[0], dtype=torch.int64)"),
    })
    return gradebook_grades(layout, LAB)


@pytest.mark.slow
def test_solution_earns_full_marks(graded):
    tests = test_cells()
    assert len(tests) == 6
    assert {g: graded[(SOLVED, g)][:2] for g in tests if graded[(SOLVED, g)][0]
            != graded[(SOLVED, g)][1]} == {}


@pytest.mark.slow
def test_released_lab_scores_zero_without_crashing(graded):
    scores = {g: s for (student, g), (s, *_rest) in graded.items() if student == BLANK}
    assert set(test_cells()) <= set(scores)
    assert set(scores.values()) == {0.0}


@pytest.mark.slow
def test_one_wrong_answer_loses_exactly_its_points(graded):
    tests = test_cells()
    broken = {g for g, source in tests.items() if f'"{BROKEN}"' in source}
    assert broken == {"test_shift_matvec"}
    for grade_id in tests:
        score, max_score = graded[(WRONG, grade_id)][:2]
        assert score == (0.0 if grade_id in broken else max_score), grade_id
