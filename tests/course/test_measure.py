"""course.measure against independent references: hand-counted bytes, float64 numpy for the
error metrics, a call counter and sleeps for latency (ordering only, never time bounds)."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from course import measure
from course.measure import Timing

# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(("dtype", "per_element"), [
    (torch.float32, 4), (torch.float16, 2), (torch.bfloat16, 2), (torch.int8, 1),
    (torch.uint8, 1), (torch.int32, 4), (torch.int64, 8), (torch.bool, 1), (torch.float64, 8),
])
def test_tensor_bytes_counts_what_the_dtype_stores(dtype, per_element):
    assert measure.tensor_bytes(torch.zeros(3, 5, dtype=dtype)) == 15 * per_element


def test_tensor_bytes_of_packed_bits_is_their_words():
    # 128 x 256 binary weights packed 64 to a uint64 word: 128 * 4 words * 8 bytes.
    packed = torch.zeros(128, 256 // 64, dtype=torch.uint64)
    assert measure.tensor_bytes(packed) == 128 * 256 // 8


def test_tensor_bytes_rejects_non_tensors():
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        measure.tensor_bytes(np.zeros(3))


class _Mixed(nn.Module):
    """A float32 Linear, an int8 buffer, a float16 buffer, and a tied (shared) parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 4)                      # (40 + 4) * 4 = 176 bytes
        self.register_buffer("codes", torch.zeros(6, 8, dtype=torch.int8))   # 48 bytes
        self.register_buffer("fp16", torch.zeros(5, dtype=torch.float16))    # 10 bytes
        self.other = nn.Linear(10, 4, bias=False)
        self.other.weight = self.fc.weight               # tied: already counted


def test_model_size_counts_each_storage_once_by_hand():
    model = _Mixed()
    assert len(model.state_dict()) == 5  # fc.weight, fc.bias, codes, fp16, other.weight
    expected = (10 * 4 + 4) * 4 + 6 * 8 * 1 + 5 * 2
    assert measure.model_size_bytes(model) == expected == 234
    assert measure.model_size_bytes(model.state_dict()) == expected


def test_model_size_of_views_counts_the_bytes_they_cover():
    base = torch.zeros(16)
    assert measure.model_size_bytes({"a": base, "b": base[:8]}) == 64
    # Two overlapping views of elements 2..9 and 6..13 cover 12 distinct floats.
    assert measure.model_size_bytes({"a": base[2:10], "b": base[6:14]}) == 48
    # A view alone counts only its own elements, not its parent's storage.
    assert measure.model_size_bytes({"row": torch.zeros(4, 4)[1]}) == 16
    # Equal values in different storages are two tensors.
    assert measure.model_size_bytes({"a": torch.zeros(4), "b": torch.zeros(4)}) == 32


def test_model_size_of_the_lecture_mlp_includes_buffers():
    from course.models import MLP

    params = 436_554
    bn_stats = 2 * (512 + 64)        # running mean and variance, float32
    counters = 2                     # num_batches_tracked, int64
    assert measure.model_size_bytes(MLP()) == 4 * params + 4 * bn_stats + 8 * counters


def test_model_size_shrinks_with_the_dtype_actually_stored():
    model = nn.Linear(256, 128)
    fp32 = measure.model_size_bytes(model)
    assert fp32 == (256 * 128 + 128) * 4
    assert measure.model_size_bytes(model.half()) == fp32 // 2
    int8_state = {"weight": torch.zeros(128, 256, dtype=torch.int8),
                  "scale": torch.ones(128), "bias": torch.zeros(128)}
    assert measure.model_size_bytes(int8_state) == 128 * 256 + 4 * 128 + 4 * 128


def test_model_size_opens_pytorch_quantized_packed_params():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            qmodel = torch.ao.quantization.quantize_dynamic(
                nn.Sequential(nn.Linear(64, 32)), {nn.Linear}, dtype=torch.qint8)
        except (AttributeError, RuntimeError) as err:  # tooling removed from a future torch
            pytest.skip(f"torch.ao dynamic quantization unavailable: {err}")
        state = qmodel.state_dict()
    # int8 weight 64*32 + float32 bias 32*4 + a float32 scale + an int64 zero point
    # (the packed-params dtype entry is not a tensor and counts nothing).
    assert measure.model_size_bytes(state) == 64 * 32 + 32 * 4 + 4 + 8


def test_model_size_counts_per_channel_scales_of_quantized_tensors():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(torch.randn(3, 4), torch.rand(3) + 0.1,
                                       torch.zeros(3, dtype=torch.long), 0, torch.qint8)
    # 12 int8 codes + 3 float64 scales + 3 int64 zero points, as PyTorch stores them
    assert measure.model_size_bytes({"w": q}) == 12 + 3 * 8 + 3 * 8


def test_model_size_rejects_other_types():
    with pytest.raises(TypeError, match="model_or_state_dict"):
        measure.model_size_bytes([torch.zeros(3)])


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (1536, "1.50 KiB"),
    (5 * 1024**2 + 1024**2 // 4, "5.25 MiB"), (3 * 1024**3, "3.00 GiB"),
    (2 * 1024**5, "2048.00 TiB"),
])
def test_format_bytes(n, text):
    assert measure.format_bytes(n) == text


def test_format_bytes_rejects_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        measure.format_bytes(-1)
    with pytest.raises(TypeError, match="n must be an int"):
        measure.format_bytes(1.5)


# ----------------------------------------------------------------------------- errors


def _pair(seed: int, n: int = 1000):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    return x, x + 0.01 * torch.randn(n, generator=g)


def test_mse_and_sqnr_match_float64_numpy():
    x, x_hat = _pair(0)
    a, b = x.numpy().astype(np.float64), x_hat.numpy().astype(np.float64)
    assert measure.mse(x, x_hat) == pytest.approx(np.mean((a - b) ** 2), rel=1e-12)
    expected = 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2))
    assert measure.sqnr_db(x, x_hat) == pytest.approx(expected, rel=1e-12)
    # numpy arrays and mixed inputs give the same numbers
    assert measure.sqnr_db(a, b) == pytest.approx(expected, rel=1e-12)
    assert measure.sqnr_db(x, b) == pytest.approx(expected, rel=1e-12)
    assert measure.mse(a.reshape(10, 100), b.reshape(10, 100)) == measure.mse(a, b)


def test_sqnr_by_hand():
    # signal 3^2 + 4^2 = 25, noise 1^2 = 1 -> 10 log10(25)
    assert measure.sqnr_db(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0])) == \
        pytest.approx(10 * math.log10(25))
    assert measure.mse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])) == 2.0


def test_sqnr_is_computed_in_float64():
    # sum(x^2) = 10 * 1e40 overflows float32 (max ~3.4e38); float64 holds it.
    x = torch.full((10,), 1e20)
    x_hat = x * (1 + 2.0**-20)
    a, b = x.double().numpy(), x_hat.double().numpy()
    expected = 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2))
    assert math.isfinite(expected)
    assert measure.sqnr_db(x, x_hat) == pytest.approx(expected, rel=1e-12)
    # half-precision inputs are widened, not summed in half
    h = torch.linspace(-60000, 60000, 101).half()
    assert measure.mse(h, torch.zeros_like(h)) == pytest.approx(
        np.mean(h.double().numpy() ** 2), rel=1e-12)


def test_sqnr_edge_cases():
    x = torch.randn(50)
    assert measure.sqnr_db(x, x.clone()) == math.inf
    assert measure.sqnr_db(torch.zeros(4), torch.ones(4)) == -math.inf
    assert measure.sqnr_db(torch.zeros(4), torch.zeros(4)) == math.inf


def test_sqnr_gains_about_six_db_per_bit_for_a_uniform_signal():
    # A uniform signal quantized with b bits over its full range: SQNR ~ 6.02 b dB.
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = 2 * x - 1
    measured = {}
    for bits in (4, 8):
        step = 2.0 / 2**bits
        x_hat = (torch.floor(x / step) + 0.5) * step  # midrise quantizer over [-1, 1)
        measured[bits] = measure.sqnr_db(x, x_hat)
        assert measured[bits] == pytest.approx(6.02 * bits, abs=0.1)
    assert measured[8] - measured[4] == pytest.approx(4 * 20 * math.log10(2), abs=0.1)


def test_sqnr_accepts_pytorch_quantized_tensors():
    x = torch.linspace(-1, 1, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(x, 0.01, 0, torch.qint8)
    assert measure.sqnr_db(x, q) == pytest.approx(measure.sqnr_db(x, q.dequantize()))


def test_error_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="x and x_hat must have the same shape"):
        measure.sqnr_db(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="x and y must have the same shape"):
        measure.mse(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor or numpy.ndarray"):
        measure.sqnr_db([1.0, 2.0], torch.zeros(2))
    with pytest.raises(TypeError, match="x_hat"):
        measure.sqnr_db(torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="x_hat contains NaN"):
        measure.sqnr_db(torch.zeros(2), torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="empty"):
        measure.mse(torch.zeros(0), torch.zeros(0))
    with pytest.raises(TypeError, match="real"):
        measure.mse(torch.zeros(2, dtype=torch.complex64), torch.zeros(2))


# ----------------------------------------------------------------------------- latency


def test_latency_calls_warmup_plus_repeats_times_with_the_arguments():
    calls = []

    def fn(a, b=0):
        calls.append((a, b))

    timing = measure.latency(fn, 1, b=2, warmup=2, repeats=7)
    assert calls == [(1, 2)] * 9
    assert (timing.repeats, timing.warmup) == (7, 2)
    assert 0 < timing.p25_s <= timing.median_s <= timing.p75_s


def test_latency_orders_a_long_sleep_after_a_short_one():
    short = measure.latency(time.sleep, 0.0005, warmup=1, repeats=5)
    long = measure.latency(time.sleep, 0.02, warmup=1, repeats=5)
    assert short.median_s > 0
    assert long.median_s > short.median_s
    assert measure.speedup(long, short) > 1.0
    assert measure.speedup(long, short) == long.median_s / short.median_s
    assert "median" in str(long) and "5 runs" in str(long)


def test_latency_with_a_single_repeat():
    timing = measure.latency(lambda: None, warmup=0, repeats=1)
    assert timing.p25_s == timing.median_s == timing.p75_s


def test_speedup_by_hand_and_timing_is_frozen():
    base, fast = Timing(2.0, 1.9, 2.1, 5, 1), Timing(0.5, 0.4, 0.6, 5, 1)
    assert measure.speedup(base, fast) == 4.0
    assert measure.speedup(fast, base) == 0.25
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.median_s = 1.0


def test_latency_and_speedup_reject_bad_input():
    with pytest.raises(TypeError, match="fn must be callable"):
        measure.latency(42)
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        measure.latency(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup must be at least 0"):
        measure.latency(lambda: None, warmup=-1)
    with pytest.raises(TypeError, match="warmup must be an int"):
        measure.latency(lambda: None, warmup=True)
    with pytest.raises(TypeError, match="candidate must be a Timing"):
        measure.speedup(Timing(1.0, 1.0, 1.0, 1, 0), 0.5)
    with pytest.raises(ValueError, match="candidate.median_s must be positive"):
        measure.speedup(Timing(1.0, 1.0, 1.0, 1, 0), Timing(0.0, 0.0, 0.0, 1, 0))


def test_compare_interleaves_calls_and_summarizes_medians():
    calls = []
    samples = measure.compare_samples({"a": lambda: calls.append("a"),
                                       "b": lambda: calls.append("b")}, warmup=1, repeats=3)
    assert calls == ["a", "b"] * 4            # one warm-up round, then three timed rounds
    assert [len(v) for v in samples.values()] == [3, 3]
    t = measure.timing([3.0, 1.0, 2.0, 10.0])
    assert t.median_s == 2.5 and t.p25_s <= t.median_s <= t.p75_s and t.repeats == 4
    timings = measure.compare({"x": lambda: None}, repeats=2)
    assert timings["x"].repeats == 2 and timings["x"].median_s >= 0


@pytest.mark.parametrize(("fns", "kwargs", "error"), [
    ({}, {}, ValueError), ({"a": 1}, {}, TypeError), ({"a": print}, {"repeats": 0}, ValueError)])
def test_compare_rejects_bad_input(fns, kwargs, error):
    with pytest.raises(error):
        measure.compare_samples(fns, **kwargs)


# ------------------------------------------------------------------------------ accuracy
@pytest.mark.parametrize(("k", "n"), [(960, 1000), (0, 10), (10, 10), (1, 3), (517, 1000)])
def test_accuracy_interval_is_scipys_wilson_interval(k, n):
    from scipy.stats import binomtest

    from course.measure import accuracy_interval

    want = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = accuracy_interval(k / n, n)
    assert lo == pytest.approx(want.low, abs=1e-9) and hi == pytest.approx(want.high, abs=1e-9)


def test_accuracy_interval_refuses_bad_input_naming_it():
    from course.measure import accuracy_interval, format_accuracy

    with pytest.raises(ValueError, match="accuracy"):
        accuracy_interval(96.0, 1000)  # a percentage, not a fraction
    with pytest.raises(TypeError, match="n must be an int"):
        accuracy_interval(0.5, 10.0)
    with pytest.raises(ValueError, match="n must be at least 1"):
        accuracy_interval(0.5, 0)
    assert format_accuracy(0.96, 1000) == "96.00 % [94.60, 97.05]"
