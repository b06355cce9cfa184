"""lab02 end to end: the solution notebook executes, and its measurements show what the lab
demonstrates (sizes really 1/4 and 1/2, full integer as accurate as float, calibration
sensitive to an outlier). Speed is measured by the notebook and benchmarks/, never asserted."""

from __future__ import annotations

import pytest
from conftest import notebook_errors

LAB = "lab02_post_training_quantization"


@pytest.fixture(scope="module")
def executed(execute_solution):
    return execute_solution(LAB)


@pytest.mark.slow
def test_solution_notebook_runs_without_errors(executed):
    nb, _, _ = executed
    errors = notebook_errors(nb)
    assert not errors, errors[0]


@pytest.mark.slow
def test_table_has_every_mode_with_real_sizes_and_float_accuracy(executed):
    _, results, _ = executed
    rows = {(r["model"], r["mode"]): r for r in results["ptq_table"]}
    assert len(rows) == 14
    for model in ("mlp", "cnn"):
        fp32 = rows[model, "fp32"]["accuracy"]
        folded = rows[model, "fp32, folded"]  # the same function, batch norm folded
        assert abs(folded["accuracy"] - fp32) <= 0.002 and folded["size vs fp32"] <= 1
        full = rows[model, "full integer int8"]
        assert 0.24 < full["size vs fp32"] < 0.27                    # 4x smaller + qparams
        assert 0.24 < rows[model, "dynamic range int8"]["size vs fp32"] < 0.27
        assert 0.49 < rows[model, "float16"]["size vs fp32"] < 0.51  # 2x smaller
        assert full["accuracy"] > fp32 - 0.01                          # within 1 point
        assert all(r["latency ms"] > 0 for r in results["ptq_table"])
    assert min(results["full_integer_agrees_with_fake_quant_twin"].values()) >= 0.99
    assert results["first_layer_error_steps"]["median"] < 1.0


@pytest.mark.slow
def test_one_corrupted_calibration_image_hurts_min_max_more_than_percentile(executed):
    _, results, _ = executed
    cal = results["calibration"]
    bad = "500 images, one corrupted"
    assert cal["minmax"][bad] < cal["minmax"]["500 images"] - 0.01
    assert cal["percentile"][bad] > cal["minmax"][bad]


@pytest.mark.slow
def test_the_students_own_functions_run_an_integer_only_mlp(executed):
    """The integer MLP built from the student's calibrate_ranges, quantize_multiplier and
    quantized_linear classifies like the float one (within a few points)."""
    _, results, _ = executed
    mine = results["your_integer_mlp"]
    assert mine["test_images"] == 1000
    assert mine["accuracy"] > mine["float"] - 0.03
    assert list(mine["ranges"]) == ["fc1", "fc2", "fc3"]
    assert all(lo < hi for lo, hi in mine["ranges"].values())
