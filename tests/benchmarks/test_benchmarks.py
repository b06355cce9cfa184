"""The benchmark runner's bookkeeping (no speed is measured here): a failed or stopped module
leaves its rows empty with the reason, a partial run's table shows only its own modules,
``--threads`` sets PyTorch and numba alike, and peers that cannot run say why."""

from __future__ import annotations

import numba
import pytest
import torch

from benchmarks import __main__ as runner
from benchmarks import peers
from course.kernels import cpu_features


def _result(value: float, note: str) -> dict:
    return {"speedups": {"x_vs_fp32": value}, "size_ratios": {}, "timings_ms": {"x": 1.0},
            "notes": [note]}


def test_a_failed_module_leaves_its_rows_empty_with_the_reason():
    old = runner.merge({}, "int8", _result(2.0, "measured elsewhere"))
    old = runner.merge(old, "binary", {"speedups": {"b_vs_fp32": 8.0}, "size_ratios": {},
                                       "notes": ["binary ran"]})
    old["runs"] = {"int8": {"date": "then"}, "binary": {"date": "then"}}
    dropped = runner.drop(old, "int8", "bench_int8 stopped after 240 s")
    assert "x_vs_fp32" not in dropped["speedups"] and "x" not in dropped["timings_ms"]
    assert dropped["notes"]["int8"] == ["NO FIGURES: bench_int8 stopped after 240 s"]
    assert dropped["speedups"]["b_vs_fp32"] == 8.0  # the other module is kept ...
    assert "int8" not in dropped["runs"] and "binary" in dropped["runs"]  # ... and labelled


def test_the_table_of_a_partial_run_shows_only_its_modules():
    results = runner.merge({}, "int8", _result(2.0, "a"))
    results = runner.merge(results, "binary", {"speedups": {"b_vs_fp32": 8.0},
                                               "size_ratios": {}, "notes": []})
    text = runner.table(results, only=["int8"])
    assert "x_vs_fp32" in text and "b_vs_fp32" not in text
    assert "b_vs_fp32" in runner.table(results)


def test_threads_are_set_for_torch_and_numba_alike():
    before = torch.get_num_threads(), numba.get_num_threads()
    try:
        runner.set_threads(1)
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def test_bad_results_are_refused():
    with pytest.raises(ValueError, match="positive"):
        runner.check_result("int8", _result(0.0, "zero"))
    with pytest.raises(ValueError, match="lacks"):
        runner.check_result("int8", {"speedups": {}})


def test_onnxruntime_is_left_out_under_emulation_with_the_reason(monkeypatch):
    if cpu_features.native_isa() != "avx512":
        pytest.skip("only a CPU above AVX2 can emulate one")
    monkeypatch.setenv(cpu_features.ISA_ENV, "avx2")
    assert "emulated avx2 on a avx512 CPU" in peers.emulated_isa()
    with pytest.raises(peers.PeerUnavailable, match="cannot be restricted"):
        peers.onnxruntime()
    monkeypatch.delenv(cpu_features.ISA_ENV)
    assert peers.emulated_isa() is None


def test_the_fair_fp32_model_folds_batch_norm():
    from course.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN().eval()
    for bn in (model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    folded, channels_last = peers.fp32_folded_channels_last(model)
    assert channels_last
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(folded(x.contiguous(memory_format=torch.channels_last)),
                                   model(x), rtol=1e-4, atol=1e-4)
