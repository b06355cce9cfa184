"""course.claims: every claim reads its lab's results; missing or old results say so."""

import json

import pytest

from course.claims import CLAIMS, NOT_MEASURED, claim_rows, load_results

RESULTS = {
    "lab01_direct_quantization": {
        "sqnr_db_per_bit": {"Gaussian": 6.28},
        "direct_quantization": {"bits": ["8", "1"], "float": 0.954,
                                "per channel": [0.954, 0.784], "per tensor": [0.954, 0.78],
                                "test_images": 1000, "hands_on_1bit": {
                                    "deck's network, the hands-on's W1/A1 (unscaled +-1, "
                                    "binarized inputs)": 0.566,
                                    "course MLP, per-channel alpha * sign(w) weights": 0.843}}},
    "lab02_post_training_quantization": {"ptq_table": [
        {"model": "mlp", "mode": m, "size vs fp32": s, "speedup vs fp32": 2.0, "accuracy": 0.95}
        for m, s in (("dynamic range int8", 0.25), ("full integer int8", 0.25),
                     ("float16", 0.5))]},
    "lab03_quantization_aware_training": {"ptq_vs_qat": [
        {"model": "cnn", "bits": 2, "PTQ": 0.2, "QAT": 0.85, "float": 0.97}]},
}


def test_every_claim_reads_its_measurement():
    rows = claim_rows(RESULTS)
    assert len(rows) == len(CLAIMS)
    measured = [r["measured here"] for r in rows]
    assert "6.28 dB per bit" in measured[0]
    assert measured[2].startswith("56.60 % in the hands-on's configuration (the deck's "
                                  "network, W1/A1")
    assert "per-channel alpha * sign(w), gives 84.30 %" in measured[2]
    assert rows[2]["agrees"] == "yes" and rows[0]["agrees"] == ""
    assert "mlp: 4.00x smaller, 2.00x speed" in measured[3]
    assert "mlp: 2.00x smaller" in measured[5]
    assert measured[6] == "cnn 2 bits: PTQ 20.00 %, QAT 85.00 % (float 97.00 %)"


def test_missing_and_outdated_results_are_said_so(tmp_path):
    rows = claim_rows({"lab01_direct_quantization": {"other": 1}})
    assert rows[0]["measured here"].startswith("not in this results.json")
    assert rows[3]["measured here"] == NOT_MEASURED
    (tmp_path / "lab01_direct_quantization").mkdir()
    (tmp_path / "lab01_direct_quantization" / "results.json").write_text(json.dumps({"a": 1}))
    assert load_results(tmp_path) == {"lab01_direct_quantization": {"a": 1}}
    (tmp_path / "lab01_direct_quantization" / "results.json").write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        load_results(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        load_results(tmp_path / "missing")


def test_main_prints_the_table(tmp_path, capsys):
    from course.claims import main

    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| lab | claim | source | measured here | agrees |")
    assert out.count(NOT_MEASURED) == len(CLAIMS)


def test_lab06_claims_read_the_landscape_results():
    alphas = [0.0, 0.2, 1.0]
    results = {"lab06_dangers_of_quantization": {
        "curves": {"alphas": alphas, "mlp": {"random 1": [0.15, 0.2, 0.9]},
                   "cnn": {"random 1": [0.07, 0.5, 8.7]}},
        "quantization_steps": [
            {"model": m, "bits": b, "loss at 0 (float)": 0.1, "loss at 1 (quantized)": 0.1 * b}
            for m in ("mlp", "cnn") for b in (8, 2)],
        "sharp_vs_flat": [{"batch size": 16, "lambda_max": 6.8, "3-bit accuracy drop": 0.007,
                           "3-bit loss increase": 0.011}],
        "sharper_loses_more_at_3_bits": False}}
    rows = [r for r in claim_rows(results) if r["lab"] == "lab06_dangers_of_quantization"]
    assert len(rows) == 3
    assert rows[0]["measured here"].startswith("mlp: loss 0.15 at the minimum, 0.2 at alpha = "
                                               "0.2, 0.9 at alpha = 1 (random")
    assert "cnn: float 0.1, 8 bits 0.8, 2 bits 0.2" in rows[1]["measured here"]
    assert rows[2]["measured here"] == ("batch 16: lambda_max 6.8, 3 bits +0.70 points lost, "
                                        "loss +0.011; sharper lost more at 3 bits: no")


def test_lab03_and_lab04_claims_read_their_tables():
    variants = ("float", "binary weights (BWN)", "binary weights and inputs (XNOR)")
    xnor_table = [{"model": m, "variant": v, "accuracy fine-tuned": acc, "size vs fp32": size,
                   "speedup vs fp32": speed}
                  for m in ("mlp", "cnn")
                  for v, acc, size, speed in zip(variants, (0.96, 0.955, 0.91), (1, 0.04, 0.04),
                                                 (1.0, 0.5, 1.4), strict=True)]
    results = {
        "lab03_quantization_aware_training": {"ptq_vs_qat": [
            {"model": "mlp", "bits": 8, "PTQ": 0.95, "QAT": 0.96, "float": 0.956}]},
        "lab04_binary_and_low_bit": {
            "xnor_table": xnor_table,
            "xnor_packed_layers": [{"fp32 weight bytes": 3200, "packed weight bytes": 96,
                                    "alpha bytes": 4}],
            "kernel_speed": [{"operation": "matmul 2048^3", "speedup": 12.5}],
            "dorefa_table": [{"W": 1, "A": 2, "G": 32, "accuracy fine-tuned": 0.945}],
            "hands_on": {"faithful": {"direct": 0.6, "QAT": 0.888}, "faithful_epochs": 20,
                         "ours": {"QAT": 0.951}}}}
    rows = {r["claim"]: r for r in claim_rows(results)}
    qat8 = rows["8-bit QAT vs PTQ: a small relative change (the deck's PTQ-vs-QAT table)"]
    assert "mlp: PTQ 95.00 %, QAT 96.00 % (+1.05 % relative)" in qat8["measured here"]
    memory = rows["XNOR-Net: ~32x less memory, ~58x faster convolutions"]["measured here"]
    assert memory.startswith("binary layers 32.0x smaller") and "12.5x fp32" in memory
    accuracy = rows["XNOR-Net accuracy: float 56.7 %, BWN 56.8 %, XNOR 44.2 %"]
    assert "mlp: float 96.00 %, BWN 95.50 %, XNOR 91.00 %" in accuracy["measured here"]
    assert accuracy["agrees"] == "yes"
    assert "W1/A2/G32: 94.50 %" in rows["DoReFa-Net: low-bit weights and activations train to "
                                         "near float"]["measured here"]
    assert rows["the hands-on's 1-bit MLP after QAT: 95.22 %"]["measured here"].startswith(
        "88.80 % trained from scratch for 20 epochs")


def test_lab00_claims_read_the_size_energy_and_latency_results():
    table = [{"model": m, "MiB fp32": f, "MiB int8": i, "GMACs": g} for m, f, i, g in (
        ("alexnet", 233.08, 58.3, 0.71), ("vgg16", 527.8, 132.0, 15.47),
        ("mobilenet_v2", 13.5, 3.57, 0.3), ("squeezenet1_0", 4.76, 1.2, 0.82),
        ("inception_v3", 91.05, 22.96, 5.71))]
    energy = [{"model": m, "format": "fp32", "memory share": s}
              for m, s in (("alexnet", 0.92), ("resnet50", 0.47), ("squeezenet1_0", 0.18))]
    latency = {"rows": [{"batch": 1, "format": f, "speedup vs fp32": x}
                        for f, x in (("fp32", 1.0), ("int8", 4.0), ("binary", 7.8))]}
    rows = [r for r in claim_rows({"lab00_why_quantize": {
        "size_table": table, "energy": energy, "latency": latency}})
        if r["lab"] == "lab00_why_quantize"]
    measured = [r["measured here"] for r in rows]
    assert measured[0].startswith("alexnet: 233.1 MiB of fp32 parameters, 0.71 GMACs")
    assert "squeezenet1_0: 4.8 MiB" in measured[1]
    assert measured[2].startswith("3.78x to 4.00x smaller")
    assert "alexnet 92.00 %" in measured[3]
    assert measured[4] == "batch 1 int8 4.00x; batch 1 binary 7.80x"
