"""lab01 end to end: the solution notebook executes top to bottom (experiments included) and
its measured results show what the lab claims to demonstrate."""

from __future__ import annotations

import pytest
from conftest import notebook_errors

LAB = "lab01_direct_quantization"


@pytest.fixture(scope="module")
def executed(execute_solution):
    return execute_solution(LAB)


@pytest.mark.slow
def test_solution_notebook_runs_without_errors(executed):
    nb, _, _ = executed
    errors = notebook_errors(nb)
    assert not errors, errors[0]
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(shown) >= 4  # SQNR, per-channel SQNR, histogram, accuracy vs bits


@pytest.mark.slow
def test_results_show_the_six_db_rule_and_the_collapse(executed):
    _, results, _ = executed
    for label, slope in results["sqnr_db_per_bit"].items():
        assert 5.8 < slope < 6.6, (label, slope)
        assert 5.8 < results["sqnr_gain_per_bit"][label][-1] < 6.3  # 7 -> 8 bits: ~6.02 dB
    first = results["first_layer_sqnr_db"]
    assert all(c > t for c, t in zip(first["per_channel"], first["per_tensor"], strict=True))
    direct = results["direct_quantization"]
    assert direct["bits"] == ["8", "6", "4", "3", "2", "1"]
    assert direct["float"] > 0.9
    assert abs(direct["per tensor"][0] - direct["float"]) < 0.01        # 8 bits: no loss
    assert direct["per channel"][-2] < direct["float"] - 0.05           # 2 bits: clear loss
    assert min(direct["per tensor"][-2:]) < 0.8                          # the collapse
