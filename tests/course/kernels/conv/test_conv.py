"""The fused int8 conv (conv + bias + requantization + ReLU + max pool) on every path against
the unfused integer reference (int64 conv loop, Python-integer requantization, float64 max
pool), bit for bit: random codes with -128/127 extremes, saturating biases and multipliers,
odd shapes, the longest exact reductions, split batches, oneDNN's accumulators against
their definition, the verified fallback, and bad input."""

from __future__ import annotations

import copy
import importlib
import pickle

import numpy as np
import pytest
import torch

from course.kernels import conv2d_int8, prepare_requantize, quantize_multiplier_per_channel
from course.kernels import cpu_features as fused_cpu
from course.kernels.conv import fused
from course.kernels.conv.direct import (
    FLOAT32_EXACT_K,
    TAPS_PER_PASS,
    direct_conv_requantize,
    direct_plan,
    direct_weights,
    run_direct_plan,
)
from course.kernels.conv.fused import (
    Conv2dRequantize,
    conv2d_requantize_int8,
    conv2d_requantize_int8_reference,
    run_chunks,
    split_batch,
)
from course.kernels.conv.onednn import (
    ONEDNN_EXACT_K,
    OneDnnConv,
    onednn_accumulators_reference,
    onednn_available,
    onednn_exact,
    to_uint8_codes,
)
from course.kernels.conv.paths import DIRECT_MAX_K, choose_path

PATHS = ["direct", "gemm"] + (["onednn"] if onednn_exact() else [])
"""oneDNN's path only where it is trusted here (int8 dot-product instructions, exact on the
once-per-process check): elsewhere it would (correctly) fall back to the GEMM."""
NO_ONEDNN = "oneDNN's int8 conv is not available or not exact on this machine"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _codes(shape, seed) -> torch.Tensor:
    """Random int8 codes with whole images / rows at the extremes -128 and 127."""
    x = torch.randint(-128, 128, shape, generator=_gen(seed), dtype=torch.int8)
    x[0, : max(1, shape[1] // 2)] = -128
    if shape[0] > 1:
        x[1, :, : max(1, shape[2] // 2)] = 127
    return x


def _weights(shape, seed) -> torch.Tensor:
    w = torch.randint(-128, 128, shape, generator=_gen(seed), dtype=torch.int8)
    w[0] = -128
    if shape[0] > 2:
        w[1] = 127
    return w


def _params(c_out: int, k: int, seed: int, zero_point: int = -5, relu: bool = True,
            saturating: bool = True):
    """Per-channel requantization: scales spread around 1 / (K * 2**7), so that outputs use
    the whole int8 range and clamp at both ends; with ``saturating``, biases at the int32
    limits (``acc + bias`` saturates)."""
    gen = _gen(seed)
    reals = (torch.rand(c_out, generator=gen, dtype=torch.float64) * 8 + 0.05) / (k * 128)
    m, s = quantize_multiplier_per_channel(reals)
    bias = torch.randint(-(2**20), 2**20, (c_out,), generator=gen)
    if saturating and c_out > 2:
        bias[1], bias[2] = 2**31 - 1, -(2**31)
    return prepare_requantize(c_out, m, s, zero_point, bias=bias,
                              qmin=zero_point if relu else -128, qmax=127)


CASES = [  # (B, H, W, C_in, C_out, (kh, kw), stride, padding, pad_value, pool, relu)
    (3, 28, 28, 1, 16, (3, 3), 1, 1, -128, 2, True),  # SmallCNN's conv1
    (2, 14, 14, 16, 32, (3, 3), 1, 1, 3, 2, True),  # SmallCNN's conv2 (8-byte words)
    (2, 9, 7, 3, 5, (3, 3), 1, (1, 2), 127, None, False),  # odd sizes, no pool
    (2, 11, 10, 2, 3, (2, 3), 1, 0, 0, (3, 2), True),  # overlapping pool windows
    (1, 8, 9, 1, 1, (5, 5), 1, 2, -7, ((2, 3), (1, 2)), False),  # one output channel
    (2, 6, 6, 8, 7, (1, 1), 1, 0, 5, 3, True),  # 1x1, pool 3
    (2, 10, 9, 4, 6, (3, 3), 2, 1, -1, 2, True),  # stride 2 (gemm / onednn only)
    (1, 7, 8, 16, 9, (3, 2), (2, 1), (1, 0), 11, None, True),  # words, uneven stride
]


def _case_ok(path: str, case) -> bool:
    _, _, _, c_in, _, (kh, kw), stride, *_ = case
    if path == "direct":
        return stride in (1, (1, 1))
    if path == "onednn":
        return kh * kw * c_in <= ONEDNN_EXACT_K
    return True


@pytest.mark.parametrize("path, case", [(p, c) for p in PATHS for c in CASES if _case_ok(p, c)])
def test_fused_conv_matches_the_unfused_reference(path, case):
    b, h, w, c_in, c_out, k, stride, padding, pad_value, pool, relu = case
    x, wt = _codes((b, h, w, c_in), 1), _weights((c_out, *k, c_in), 2)
    params = _params(c_out, k[0] * k[1] * c_in, 3, relu=relu)
    conv = Conv2dRequantize(wt, params, stride=stride, padding=padding, pad_value=pad_value,
                            pool=pool, path=path)
    got = conv(x)
    ref = conv2d_requantize_int8_reference(x, wt, params, stride=stride, padding=padding,
                                           pad_value=pad_value, pool=pool)
    assert got.dtype == torch.int8 and got.shape == ref.shape
    assert torch.equal(got, ref)
    assert conv.path == path and conv.fallback is None
    assert got.min().item() >= params.qmin
    assert torch.equal(conv(x), got)  # a second call (cached plan, reused buffers)


def test_references_agree_with_the_existing_kernels():
    """The reference is the composition of the unfused kernels (and saturates/clamps)."""
    from course.kernels import max_pool2d_int8, requantize_prepared

    x, wt = _codes((2, 9, 9, 3), 4), _weights((5, 3, 3, 3), 5)
    params = _params(5, 27, 6)
    acc = conv2d_int8(x, wt, padding=1, pad_value=-9)
    want = max_pool2d_int8(requantize_prepared(acc, params), 2)
    ref = conv2d_requantize_int8_reference(x, wt, params, padding=1, pad_value=-9, pool=2)
    assert torch.equal(ref, want)
    assert {-5, 127} <= set(ref.unique().tolist())  # clamps at the ReLU and at 127


@pytest.mark.parametrize("path", PATHS)
def test_longest_exact_reduction_with_extremes(path):
    """K at the path's exactness limit, every product at its largest magnitude."""
    k = {"direct": FLOAT32_EXACT_K, "onednn": ONEDNN_EXACT_K, "gemm": 4608}[path]
    c_in = k // 9 if path == "gemm" else k
    kernel = (3, 3) if path == "gemm" else (1, 1)
    pad_value = 127 if path == "onednn" else -128  # oneDNN's products are (x - pad) * w
    x = torch.full((2, 4, 4, c_in), -128, dtype=torch.int8)
    x[1] = 127
    wt = torch.full((3, *kernel, c_in), -128, dtype=torch.int8)
    wt[1], wt[2, ..., ::2] = 127, 127
    m, s = quantize_multiplier_per_channel(torch.full((3,), 2.0**-20, dtype=torch.float64))
    params = prepare_requantize(3, m, s, 0)
    conv = Conv2dRequantize(wt, params, padding=1 if path == "gemm" else 0,
                            pad_value=pad_value, path=path)
    ref = conv2d_requantize_int8_reference(x, wt, params, padding=conv.padding,
                                           pad_value=pad_value)
    assert torch.equal(conv(x), ref)
    acc = conv2d_int8(x, wt, padding=conv.padding, pad_value=pad_value)
    assert acc[0, 1, 1, 0].item() == c_in * kernel[0] * kernel[1] * 2**14


@pytest.mark.parametrize("path", PATHS)
def test_batches_split_over_threads_give_the_same_codes(path):
    x, wt = _codes((37, 28, 28, 1), 7), _weights((16, 3, 3, 1), 8)
    params = _params(16, 9, 9)
    conv = Conv2dRequantize(wt, params, padding=1, pad_value=-2, pool=2, path=path)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = conv(x)
        torch.set_num_threads(3)
        three = conv(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)
    assert torch.equal(one[:5], conv2d_requantize_int8_reference(
        x[:5], wt, params, padding=1, pad_value=-2, pool=2))


@pytest.mark.skipif(fused_cpu.native_isa() == "generic",
                    reason="no AVX2 on this CPU: the AVX2 int8 GEMM cannot run here")
def test_gemm_path_on_the_avx2_kernel_over_threads(monkeypatch):
    """The AVX2 GEMM forced (as on a CPU without VNNI), run from several Python threads at
    once (its serial form: numba's workqueue layer must not be entered concurrently)."""
    gemm = importlib.import_module("course.kernels.int8_gemm")
    monkeypatch.setenv(fused_cpu.ISA_ENV, "avx2")
    gemm.gemm_backend.cache_clear()
    threads = torch.get_num_threads()
    try:
        assert gemm.gemm_backend().name == "avx2_maddubs"
        x, wt = _codes((13, 9, 9, 24), 21), _weights((40, 3, 3, 24), 22)
        params = _params(40, 9 * 24, 23, relu=True)
        conv = Conv2dRequantize(wt, params, padding=1, pad_value=3, pool=2, path="gemm")
        torch.set_num_threads(1)
        one = conv(x)
        torch.set_num_threads(3)
        three = conv(x)
        assert torch.get_num_threads() == 3  # restored after the tasks ran single-threaded
    finally:
        torch.set_num_threads(threads)
        monkeypatch.delenv(fused_cpu.ISA_ENV)
        gemm.gemm_backend.cache_clear()
    assert torch.equal(one, three)
    assert torch.equal(one, conv2d_requantize_int8_reference(x, wt, params, padding=1,
                                                             pad_value=3, pool=2))


def test_chunks_cover_the_batch_once_on_any_number_of_threads():
    assert split_batch(10, 4) == [(0, 4), (4, 8), (8, 10)] and split_batch(0, 3) == []
    for threads in (1, 2, 5):
        seen: list[tuple[int, int]] = []
        run_chunks(lambda lo, hi, seen=seen: seen.append((lo, hi)), split_batch(23, 3),
                   threads)
        assert sorted(seen) == split_batch(23, 3)


def test_chunk_errors_are_raised_after_every_thread_stopped():
    done = []

    def run(lo, hi):
        if lo == 6:
            raise RuntimeError("chunk 6 failed")
        done.append(lo)

    with pytest.raises(RuntimeError, match="chunk 6"):
        run_chunks(run, split_batch(12, 2), 2)
    assert 6 not in done


def test_direct_kernel_alone_and_on_part_of_a_batch():
    x, wt = _codes((6, 12, 12, 1), 10), _weights((4, 3, 3, 1), 11)
    params = _params(4, 9, 12)
    ref = conv2d_requantize_int8_reference(x, wt, params, padding=1, pool=2)
    assert torch.equal(direct_conv_requantize(x, wt, params, padding=(1, 1),
                                              pool=(2, 2, 2, 2)), ref)
    out = torch.full((6, 6, 6, 4), 99, dtype=torch.int8)
    plan = direct_plan(wt, 12, 12, (1, 1), (2, 2, 2, 2))
    run_direct_plan(x.numpy(), out.numpy(), (2, 5), plan, params, (1, 1), 0, (2, 2, 2, 2))
    assert torch.equal(out[2:5], ref[2:5])
    assert (out[:2] == 99).all() and (out[5:] == 99).all()
    with pytest.raises(ValueError, match="FLOAT32_EXACT_K"):
        direct_plan(torch.zeros(1, 3, 3, 114, dtype=torch.int8), 4, 4, (1, 1))
    with pytest.raises(ValueError, match="do not fit"):
        direct_plan(wt, 2, 2, (0, 0))
    with pytest.raises(TypeError, match="x must be an int8"):
        direct_conv_requantize(x.float(), wt, params)


def test_direct_weights_are_zero_padded_taps_and_channel_pairs():
    wt = _weights((3, 2, 2, 3), 13)
    got = direct_weights(wt)
    assert got.shape == (4, TAPS_PER_PASS * 2) and got.dtype == np.float32
    assert np.array_equal(got[:3, :12], wt.permute(0, 3, 1, 2).reshape(3, 12).float().numpy())
    assert not got[3].any() and not got[:, 12:].any()


@pytest.mark.skipif(not onednn_exact(), reason=NO_ONEDNN)
def test_onednn_accumulators_are_exact_and_verified():
    x, wt = _codes((3, 9, 8, 6), 14), _weights((5, 3, 3, 6), 15)
    conv = OneDnnConv(wt, stride=(2, 1), padding=1, pad_value=-100)
    got = conv(x)
    want = onednn_accumulators_reference(x, wt, stride=(2, 1), padding=1, pad_value=-100)
    assert got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got.to(torch.int64), want) and torch.equal(got, want.float())
    assert conv.verify(x) and conv.verified == {(9, 8): True}
    assert torch.equal(to_uint8_codes(torch.tensor([-128, -1, 0, 127], dtype=torch.int8)),
                       torch.tensor([0, 127, 128, 255], dtype=torch.uint8))
    with pytest.raises(ValueError, match="ONEDNN_EXACT_K"):
        OneDnnConv(torch.zeros(1, 3, 3, 57, dtype=torch.int8))


@pytest.mark.skipif(not onednn_exact(), reason=NO_ONEDNN)
def test_onednn_path_falls_back_loudly_when_not_exact(monkeypatch):
    x, wt = _codes((2, 10, 10, 16), 16), _weights((8, 3, 3, 16), 17)
    params = _params(8, 144, 18)
    conv = Conv2dRequantize(wt, params, padding=1, pad_value=4, pool=2)
    assert conv.path == "onednn"
    real = OneDnnConv.__call__
    monkeypatch.setattr(OneDnnConv, "__call__", lambda self, q: real(self, q) + 1.0)
    with pytest.warns(RuntimeWarning, match="did not match"):
        got = conv(x)
    assert conv.path == "gemm" and "did not match" in conv.fallback
    assert torch.equal(got, conv2d_requantize_int8_reference(x, wt, params, padding=1,
                                                             pad_value=4, pool=2))


def test_default_paths(monkeypatch):
    params16, params8 = _params(16, 9, 19), _params(8, 144, 20)
    first = Conv2dRequantize(_weights((16, 3, 3, 1), 21), params16, padding=1)
    assert first.path == "direct" and 9 <= DIRECT_MAX_K
    wide = Conv2dRequantize(_weights((8, 3, 3, 16), 22), params8, padding=1)
    assert wide.path == ("onednn" if onednn_exact() else "gemm")
    strided = Conv2dRequantize(_weights((16, 3, 3, 1), 23), params16, stride=2)
    assert strided.path == ("onednn" if onednn_exact() else "gemm")
    if onednn_exact():  # trusted only with the ops and int8 dot-product instructions
        assert onednn_available() and fused_cpu.int8_dot_instructions()
    # Without int8 dot-product instructions oneDNN is not trusted: the GEMM path is chosen.
    monkeypatch.setattr(fused_cpu, "int8_dot_instructions", lambda: ())
    onednn_exact.cache_clear()
    try:
        assert not onednn_exact()
        assert Conv2dRequantize(_weights((8, 3, 3, 16), 22), params8).path == "gemm"
    finally:
        onednn_exact.cache_clear()


def test_copies_and_pickles_rebuild_the_layer():
    x, wt = _codes((2, 10, 10, 16), 24), _weights((8, 3, 3, 16), 25)
    conv = Conv2dRequantize(wt, _params(8, 144, 26), padding=1, pad_value=-3, pool=(2, 2))
    want = conv(x)
    for other in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
        assert other.path == conv.path and other.pool == conv.pool
        assert torch.equal(other(x), want)


def test_one_shot_function_and_empty_batch():
    x, wt = _codes((2, 6, 6, 2), 27), _weights((3, 3, 3, 2), 28)
    params = _params(3, 18, 29)
    got = conv2d_requantize_int8(x, wt, params, padding=1, pool=2)
    assert torch.equal(got, conv2d_requantize_int8_reference(x, wt, params, padding=1, pool=2))
    empty = Conv2dRequantize(wt, params, padding=1, pool=2)(x[:0])
    assert empty.shape == (0, 3, 3, 3) and empty.dtype == torch.int8


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.zeros(1, 4, 4, 1), "w", "p"), {}, TypeError, "x must be an int8"),
    (("x", torch.zeros(2, 3, 3, 3, dtype=torch.int8), "p"), {}, ValueError, "weight expects 3"),
    (("x", "w", None), {}, TypeError, "params must be RequantParams"),
    (("x", "w", "p"), {"path": "winograd"}, ValueError, "path must be"),
    (("x", "w", "p"), {"path": "direct", "stride": 2}, ValueError, "needs stride 1"),
    (("x", "w", "p"), {"pool": 5}, ValueError, "larger than the conv output"),
    (("x", "w", "p"), {"pool": (2, 2, 2)}, ValueError, "pool must be"),
    (("x", "w", "p"), {"pool": (0, 2)}, ValueError, "pool kernel size"),
    (("x", "w", "p"), {"pad_value": -129}, ValueError, "pad_value"),
    (("x", torch.zeros(4, 3, 3, 1), "p"), {}, TypeError, "weight must be an int8"),
])
def test_bad_input_is_refused_by_name(args, kwargs, error, match):
    x = torch.zeros(1, 4, 4, 1, dtype=torch.int8)
    w = torch.zeros(4, 3, 3, 1, dtype=torch.int8)
    p = prepare_requantize(4, 2**30, 31, 0)
    x, w, p = (x if args[0] == "x" else args[0], w if args[1] == "w" else args[1],
               p if args[2] == "p" else args[2])
    if isinstance(w, torch.Tensor) and w.shape[0] == 2:
        p = prepare_requantize(2, 2**30, 31, 0)
    with pytest.raises(error, match=match):
        conv2d_requantize_int8(x, w, p, **kwargs)


def test_params_must_match_the_output_channels():
    with pytest.raises(ValueError, match="params are for 3 channels"):
        Conv2dRequantize(torch.zeros(4, 3, 3, 1, dtype=torch.int8),
                         prepare_requantize(3, 2**30, 31, 0))
    if onednn_exact():
        with pytest.raises(ValueError, match="path 'onednn' needs"):
            Conv2dRequantize(torch.zeros(1, 3, 3, 64, dtype=torch.int8),
                             prepare_requantize(1, 2**30, 31, 0), path="onednn")
    assert "direct" in fused.FUSED_CONV_PATH and "onednn" in fused.FUSED_CONV_PATH


@pytest.mark.parametrize(("k", "stride", "path", "match"), [
    (9, (2, 2), "direct", "path 'direct' needs stride 1"),
    (2048, (1, 1), "direct", "got stride \\(1, 1\\) and K = 2048"),
    (1024, (1, 1), "onednn", "path 'onednn' needs torch.ops.onednn"),
    (9, (1, 1), "winograd", "path must be None or one of direct, onednn, gemm"),
])
def test_a_path_the_layer_cannot_take_says_what_it_needs(k, stride, path, match):
    with pytest.raises(ValueError, match=match):
        choose_path(k, stride, path)


def test_the_layer_takes_the_path_choose_path_gives():
    params16 = _params(16, 9, 19)
    for stride in ((1, 1), (2, 2)):
        layer = Conv2dRequantize(_weights((16, 3, 3, 1), 21), params16, stride=stride)
        assert layer.path == choose_path(9, stride) in PATHS + ["onednn"]
    assert choose_path(9, (1, 1), "gemm") == "gemm"  # always possible
