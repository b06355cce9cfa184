"""lab04 end to end: the solution notebook executes, and its measurements show what the lab
claims — packed binary weights really take 1 bit (plus scales, plus the padding of the last
word), BWN stays close to float after fine-tuning, XNOR recovers from its collapse but stays
below BWN, direct 1-bit DoReFa is far below QAT, every DoReFa configuration is there, and
the stochastic gradient quantizer averages out like an unbiased one. Speed is measured by
the notebook and benchmarks/, never asserted."""

from __future__ import annotations

import math

import pytest
from conftest import notebook_errors

from course.measure import model_size_bytes
from course.models import MLP

LAB = "lab04_binary_and_low_bit"
WORD_BYTES = 8
WORD_BITS = 64
FLOAT32_BYTES = 4
ISSUE_CONFIGS = [(32, 32, 32), (1, 32, 32), (1, 2, 32), (1, 2, 4), (1, 4, 32), (2, 2, 32),
                 (4, 4, 32), (8, 8, 8)]
BWN = "binary weights (BWN)"
XNOR = "binary weights and inputs (XNOR)"


@pytest.fixture(scope="module")
def executed(execute_solution):
    return execute_solution(LAB)


def _rows(results) -> dict:
    return {(r["model"], r["variant"]): r for r in results["xnor_table"]}


@pytest.mark.slow
def test_solution_notebook_runs_without_errors(executed):
    nb, results, seconds = executed
    errors = notebook_errors(nb)
    assert not errors, errors[0]
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(shown) >= 5  # histogram, your XNOR timing, kernel speedups, DoReFa, hands-on
    assert results["kernels"]["popcount"] in ("vpopcntq", "popcnt", "vpshufb", "other")
    assert results["your_xnor_matmul"]["exact"] is True
    assert results["your_ste_matches_library"] is True
    print(f"lab04 ran in {seconds:.0f} s; experiments {results['seconds']:.0f} s")


@pytest.mark.slow
def test_packed_binary_weights_take_one_bit_plus_scales_and_word_padding(executed):
    _, results, _ = executed
    layers = [r for r in results["xnor_packed_layers"] if r["model"] == "mlp"]
    assert [r["layer"] for r in layers] == ["fc1", "fc2", "fc3"]
    reference = MLP()
    for row in layers:
        weight = reference.get_submodule(row["layer"]).weight
        out, k = weight.shape
        assert row["fp32 weight bytes"] == weight.numel() * FLOAT32_BYTES
        words = math.ceil(k / WORD_BITS)
        assert row["packed weight bytes"] == out * words * WORD_BYTES
        # 1/32 of fp32, up to the padding of each row's last word (K = 784: 832 bits)
        assert row["packed weight bytes"] <= (row["fp32 weight bytes"] / 32
                                              * words * WORD_BITS / k)
        if k % WORD_BITS == 0:
            assert row["packed weight bytes"] * 32 == row["fp32 weight bytes"]
        assert row["alpha bytes"] == out * FLOAT32_BYTES
    # Nothing else hides in the packed MLP: packed bits, alphas, biases and batch norms.
    biases_and_norms = model_size_bytes(reference) - sum(
        reference.get_submodule(r["layer"]).weight.numel() * FLOAT32_BYTES for r in layers)
    alphas = sum(r["alpha bytes"] for r in layers)
    packed_bits = sum(r["packed weight bytes"] for r in layers)
    assert results["xnor_float_bytes_besides_packed_weights"]["mlp"] == biases_and_norms + alphas
    rows = _rows(results)
    for variant in (BWN, XNOR):
        assert rows["mlp", variant]["bytes"] == packed_bits + biases_and_norms + alphas
        assert rows["mlp", variant]["size vs fp32"] < 1 / 20
    assert rows["mlp", "float"]["bytes"] == model_size_bytes(reference)


@pytest.mark.slow
def test_xnor_table_bwn_close_to_float_xnor_recovers_but_stays_below(executed):
    _, results, _ = executed
    rows = _rows(results)
    for model in ("mlp", "cnn"):
        fp32 = rows[model, "float"]["accuracy fine-tuned"]
        bwn, xnor = rows[model, BWN], rows[model, XNOR]
        assert fp32 > 0.9
        assert bwn["accuracy fine-tuned"] >= fp32 - 0.03
        assert xnor["accuracy fine-tuned"] > 0.8
        assert xnor["accuracy fine-tuned"] > xnor["accuracy direct"] + 0.2  # from the collapse
        assert xnor["accuracy fine-tuned"] < bwn["accuracy fine-tuned"]
        for row in (bwn, xnor):  # the packed inference form computes the same network
            assert abs(row["accuracy packed"] - row["accuracy fine-tuned"]) <= 0.002
            assert row["latency ms (1000 digits)"] > 0
    for row in results["kernel_speed"]:
        assert row["fp32 ms"] > 0 and row["binary ms"] > 0


@pytest.mark.slow
def test_dorefa_table_has_every_configuration_and_the_hands_on_shows_the_gap(executed):
    _, results, _ = executed
    table = {(r["W"], r["A"], r["G"]): r for r in results["dorefa_table"]}
    assert set(ISSUE_CONFIGS) <= set(table)
    float_accuracy = results["hands_on"]["ours"]["float"]
    assert abs(table[32, 32, 32]["accuracy fine-tuned"] - float_accuracy) < 0.02
    assert all(r["accuracy fine-tuned"] > 0.85 for r in table.values())
    hands_on = results["hands_on"]
    assert hands_on["lecture"] == {"float": 0.9776, "direct": 0.5178, "QAT": 0.9522}
    ours = hands_on["ours"]
    assert ours["direct"] < ours["QAT"] - 0.05              # direct 1-bit far below QAT
    assert ours["QAT"] > ours["float"] - 0.03
    assert ours["direct"] == table[1, 32, 32]["accuracy direct"]
    # the hands-on's own configuration: unscaled +-1 weights and binarized inputs collapse
    # without training (the deck's 51.78 %), and training from scratch recovers most of it
    faithful = hands_on["faithful"]
    assert faithful["direct"] < 0.75 and faithful["direct"] < ours["direct"]
    assert faithful["QAT"] > faithful["direct"] + 0.15
    assert hands_on["faithful_epochs"] == 20 and hands_on["test_images"] == 1000


@pytest.mark.slow
def test_gradient_quantizer_averages_out_like_an_unbiased_one(executed):
    _, results, _ = executed
    rows = results["gradient_quantizer"]
    assert [r["bits"] for r in rows] == [2, 4, 8]
    errors = [r["relative error, one draw"] for r in rows]
    assert errors == sorted(errors, reverse=True)  # more bits, smaller error
    for row in rows:
        # independent errors average down as 1/sqrt(n); a bias would not
        assert row["relative error, mean of 200"] < 2 * row["one draw / sqrt(200)"]


@pytest.mark.slow
def test_alpha_equal_to_mean_abs_minimizes_the_binarization_error(executed):
    _, results, _ = executed
    bwn = results["bwn_first_layer"]
    scan = {float(k): v for k, v in bwn["alpha_factor_scan"].items()}
    assert min(scan, key=scan.get) == 1.0
    assert bwn["relative_error_per_channel"] <= bwn["relative_error_per_tensor"]
