"""lab03 end to end: the solution notebook executes, and its measurements show the lecture's
claim: QAT close to float at 8 and 4 bits, clearly ahead of PTQ where PTQ falls off, and the
converted integer model giving the QAT model's predictions on the int8 kernels."""

from __future__ import annotations

import pytest
from conftest import notebook_errors

LAB = "lab03_quantization_aware_training"


@pytest.fixture(scope="module")
def executed(execute_solution):
    return execute_solution(LAB)


@pytest.mark.slow
def test_solution_notebook_runs_without_errors(executed):
    nb, results, _ = executed
    errors = notebook_errors(nb)
    assert not errors, errors[0]
    assert results["fold_max_abs_difference"] < 1e-4


@pytest.mark.slow
def test_qat_close_to_float_and_ahead_of_ptq_at_low_bits(executed):
    _, results, _ = executed
    rows = {(r["model"], r["bits"]): r for r in results["ptq_vs_qat"]}
    assert sorted(rows) == sorted((m, b) for m in ("mlp", "cnn") for b in (8, 4, 3, 2))
    for model in ("mlp", "cnn"):
        for bits in (8, 4):
            assert rows[model, bits]["QAT"] >= rows[model, bits]["float"] - 0.01
        assert rows[model, 2]["QAT"] > rows[model, 2]["PTQ"] + 0.05
    assert rows["cnn", 3]["QAT"] > rows["cnn", 3]["PTQ"] + 0.01
    for row in rows.values():
        assert row["integer = QAT predictions"] >= 0.99
        assert row["integer (int8 kernels)"] == pytest.approx(row["QAT"], abs=0.01)


@pytest.mark.slow
def test_qat_with_the_students_own_pieces_recovers_what_calibration_lost(executed):
    """The MLP built from the student's fold_batch_norm, FakeQuantSTE and ActivationFakeQuant:
    at 2 bits calibration alone collapses and QAT through their STE brings most of it back."""
    _, results, _ = executed
    rows = {row["bits"]: row for row in results["your_qat_mlp"]}
    assert set(rows) == {4, 2}
    assert rows[4]["fine_tuned"] > 0.9
    assert rows[2]["fine_tuned"] > rows[2]["calibrated"] + 0.15
