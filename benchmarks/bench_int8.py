"""int8 kernels and post-training quantization vs fp32 and PyTorch's own int8 (torch.ao).

Speedups (baseline median / ours, interleaved in one run, see ``benchmarks.compare``); every
ratio names its two sides, and every peer that cannot run here leaves its row out with the
reason in the notes (:mod:`benchmarks.peers`):

* ``int8_gemm_1024_vs_fp32`` — ``course.kernels.int8_gemm`` (the path this CPU takes) vs
  ``torch.matmul`` float32, 1024 x 1024 x 1024; ``int8_gemm_1024_fallback_vs_fp32`` — the
  portable exact fallback; ``int8_gemm_1024_vs_torch_ao_static_<engine>`` — vs PyTorch's
  static quantized Linear (u8 x s8, per engine); ``int8_gemm_1024_vs_onnxruntime`` — vs ONNX
  Runtime's ``MatMulInteger`` (u8 x s8); ``int8_gemm_1024_vs_best_int8_peer`` — vs the
  fastest of those;
* ``requantize_fused_vs_torch_ops`` — fused requantization vs separate torch int64 ops
  (256 x 1024 accumulators, per-channel);
* ``int8_linear_b256_vs_fp32`` / ``_vs_torch_ao`` — the course's dynamic-range int8 Linear
  1024 -> 1024 at batch 256 vs ``nn.Linear`` and vs ``quantize_dynamic`` on the default
  engine; ``_vs_torch_ao_<engine>``, ``_vs_onnxruntime_dynamic``, ``_vs_best_int8_peer``;
* ``int8_cnn_b256_vs_fp32`` — the full-integer SmallCNN, end to end (float in, float out) at
  batch 256 vs the float model as trained (eval mode, batch norm unfused);
  ``_vs_fp32_folded`` — vs the best plain-PyTorch fp32 (batch norm folded, channels-last);
  ``_vs_onnxruntime_fp32``; ``_vs_best_fp32``; ``_vs_torch_ao`` (x86 engine) and
  ``_vs_torch_ao_<engine>`` (static eager-mode, conv-bn-relu fused);
  ``_vs_onnxruntime_int8`` (static QOperator); ``_vs_best_int8_peer``.

``torch._int_mm`` is never a baseline: on a CPU without VNNI it is a reference loop (50x
slower than fp32), and where it is fast it is the course's own ``int_mm`` path.

Size ratios (bytes stored, ``course.measure.model_size_bytes``, vs the fp32 model):
``int8_mlp`` (full integer), ``int8_dynamic_mlp``, ``fp16_mlp``, ``int8_cnn``, ``fp16_cnn``.
Models are freshly initialised (speed and size do not depend on training), calibrated on
random images in [0, 1].
"""

from __future__ import annotations

import warnings

import numba
import torch
from torch import nn

from benchmarks import compare_samples, peers, timing
from course import kernels
from course.kernels.requantize import prepare_requantize, requantize_prepared
from course.measure import model_size_bytes
from course.methods.ptq import DynamicInt8Linear, to_dynamic_int8, to_float16, to_full_integer
from course.models import MLP, SmallCNN

GEMM_SIZE = 1024
BATCH = 256
FEATURES = 1024
CALIBRATION_BATCHES = 4
SEED = 0
REPEATS = {"gemm": 15, "requantize": 40, "linear": 30, "cnn": 20}

TARGETS_VNNI = {  # issue 3's targets on a CPU with AVX512-VNNI
    "int8_gemm_1024_vs_fp32": 4.0,
    "int8_linear_b256_vs_fp32": 3.5,
    "int8_linear_b256_vs_torch_ao": 1.0,
    "int8_cnn_b256_vs_fp32": 3.0,
    "int8_cnn_b256_vs_torch_ao": 1.0,
}
TARGETS_NO_VNNI = {  # issue 17's bars on AVX2 without VNNI
    "int8_gemm_1024_vs_fp32": 2.0,
    "int8_gemm_1024_vs_best_int8_peer": 1.0,
    "int8_linear_b256_vs_torch_ao": 1.0,
    "int8_linear_b256_vs_onnxruntime_dynamic": 1.0,
    "int8_cnn_b256_vs_best_fp32": 1.0,
    "int8_cnn_b256_vs_best_int8_peer": 1.2,
}


Samples = dict[str, list[float]]


class Ratios:
    """Speedups of one run: ratios of medians, and of the fastest samples ("best")."""

    def __init__(self) -> None:
        self.median: dict[str, float] = {}
        self.best: dict[str, float] = {}
        self.timings_ms: dict[str, float] = {}
        self.notes: list[str] = []

    def add(self, key: str, t: Samples, baseline: str, candidate: str) -> None:
        self.median[key] = timing(t[baseline]).median_s / timing(t[candidate]).median_s
        self.best[key] = min(t[baseline]) / min(t[candidate])

    def record(self, prefix: str, t: Samples) -> None:
        self.timings_ms.update({f"{prefix}_{name}": timing(values).median_s * 1e3
                                for name, values in t.items()})


def _peer(r: Ratios, label: str, build):
    """``build()``, or None with the reason in the notes."""
    try:
        return build()
    except peers.PeerUnavailable as err:
        r.notes.append(f"{label}: no figure ({err})")
    except Exception as err:  # a peer that fails here must not stop the benchmark
        r.notes.append(f"{label}: no figure ({type(err).__name__}: {err})")
    return None


def _add_best(r: Ratios, key: str, t: Samples, candidate: str, sides: list[str],
              what: str) -> None:
    present = [side for side in sides if side in t]
    if not present:
        r.notes.append(f"{key}: no {what} ran here")
        return
    best = min(present, key=lambda side: timing(t[side]).median_s)
    r.add(key, t, best, candidate)
    r.notes.append(f"{key}: the fastest {what} is {best}")


def bench_gemm(r: Ratios) -> None:
    gen = torch.Generator().manual_seed(SEED)
    n = GEMM_SIZE
    a = torch.randint(-128, 128, (n, n), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8)
    af, bf = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    packed = kernels.pack_int8(b)  # a weight: packed once, as the layers do
    fns = {
        "fp32": lambda: torch.matmul(af, bf),
        "int8": lambda: kernels.int8_gemm(a, packed),
        "int8_fallback": lambda: kernels.int8_gemm(a, b, backend="float32_blocked"),
    }
    int8_peers = []
    for engine in peers.quantized_engines():
        run = _peer(r, f"torch.ao static Linear ({engine})",
                    lambda engine=engine: peers.torch_static_linear(engine, bf.t(), af.abs()))
        if run is not None:
            fns[f"torch_ao_static_{engine}"] = run
            int8_peers.append(f"torch_ao_static_{engine}")
    a_u8 = (a.to(torch.int16) + 128).to(torch.uint8).numpy()
    run = _peer(r, "ONNX Runtime MatMulInteger", lambda: peers.ort_matmul_integer(
        a_u8, b.numpy(), torch.get_num_threads()))
    if run is not None:
        fns["onnxruntime"] = run
        int8_peers.append("onnxruntime")
    t = compare_samples(fns, repeats=REPEATS["gemm"])
    r.add("int8_gemm_1024_vs_fp32", t, "fp32", "int8")
    r.add("int8_gemm_1024_fallback_vs_fp32", t, "fp32", "int8_fallback")
    for side in int8_peers:
        r.add(f"int8_gemm_1024_vs_{side}", t, side, "int8")
    _add_best(r, "int8_gemm_1024_vs_best_int8_peer", t, "int8", int8_peers, "int8 peer")
    r.record("gemm_1024", t)


def bench_requantize(r: Ratios) -> None:
    gen = torch.Generator().manual_seed(SEED)
    acc = torch.randint(-(2**24), 2**24, (BATCH, FEATURES), generator=gen, dtype=torch.int32)
    reals = torch.rand(FEATURES, generator=gen, dtype=torch.float64) * 1e-4 + 1e-5
    m, s = kernels.quantize_multiplier_per_channel(reals)
    bias = torch.randint(-(2**16), 2**16, (FEATURES,), generator=gen)
    params = prepare_requantize(FEATURES, m, s, -128, bias=bias, qmin=-128)
    t = compare_samples({"torch_ops": lambda: requantize_prepared(acc, params, "torch"),
                         "fused": lambda: requantize_prepared(acc, params, "numba")},
                        repeats=REPEATS["requantize"])
    r.add("requantize_fused_vs_torch_ops", t, "torch_ops", "fused")
    r.record("requantize_256x1024", t)


def bench_linear(r: Ratios) -> None:
    torch.manual_seed(SEED)
    linear = nn.Linear(FEATURES, FEATURES).eval()
    x = torch.randn(BATCH, FEATURES)
    x_np = x.numpy()
    ours = DynamicInt8Linear.from_float(linear)
    default = torch.backends.quantized.engine
    fns = {"fp32": lambda: linear(x), "ours": lambda: ours(x)}
    int8_peers = []
    for engine in peers.quantized_engines():
        run = _peer(r, f"torch.ao dynamic Linear ({engine})",
                    lambda engine=engine: peers.torch_dynamic_linear(engine, linear))
        if run is not None:
            fns[f"torch_ao_{engine}"] = lambda run=run: run(x)
            int8_peers.append(f"torch_ao_{engine}")
    torch.backends.quantized.engine = default
    run = _peer(r, "ONNX Runtime dynamic int8 Linear", lambda: peers.ort_dynamic_int8(
        linear, x[:2], torch.get_num_threads()))
    if run is not None:
        fns["onnxruntime_dynamic"] = lambda: run(x_np)
        int8_peers.append("onnxruntime_dynamic")
    with torch.no_grad():
        t = compare_samples(fns, repeats=REPEATS["linear"])
    r.add("int8_linear_b256_vs_fp32", t, "fp32", "ours")
    default_side = f"torch_ao_{default}"
    if default_side in t:
        r.add("int8_linear_b256_vs_torch_ao", t, default_side, "ours")
    for side in int8_peers:
        r.add(f"int8_linear_b256_vs_{side}", t, side, "ours")
    _add_best(r, "int8_linear_b256_vs_best_int8_peer", t, "ours", int8_peers, "int8 peer")
    r.record("linear_b256", t)


def bench_cnn(r: Ratios) -> None:
    torch.manual_seed(SEED)
    model = SmallCNN().eval()
    gen = torch.Generator().manual_seed(SEED)
    calibration = [torch.rand(64, 1, 28, 28, generator=gen) for _ in range(CALIBRATION_BATCHES)]
    x = torch.rand(BATCH, 1, 28, 28, generator=gen)
    x_np = x.numpy()
    ours = to_full_integer(model, calibration)
    folded, channels_last = peers.fp32_folded_channels_last(model)
    x_folded = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    fns = {"fp32": lambda: model(x), "fp32_folded": lambda: folded(x_folded),
           "ours": lambda: ours(x)}
    fp32_sides, int8_peers = ["fp32", "fp32_folded"], []
    threads = torch.get_num_threads()
    run = _peer(r, "ONNX Runtime fp32 SmallCNN", lambda: peers.ort_fp32(model, x[:2], threads))
    if run is not None:
        fns["onnxruntime_fp32"] = lambda: run(x_np)
        fp32_sides.append("onnxruntime_fp32")
    default = torch.backends.quantized.engine
    for engine in peers.quantized_engines():
        built = _peer(r, f"torch.ao static SmallCNN ({engine})",
                      lambda engine=engine: peers.torch_static_cnn(engine, model, calibration))
        if built is not None:
            fns[f"torch_ao_{engine}"] = lambda built=built: built(x)
            int8_peers.append(f"torch_ao_{engine}")
    torch.backends.quantized.engine = default
    run8 = _peer(r, "ONNX Runtime static int8 SmallCNN",
                 lambda: peers.ort_static_int8(model, x[:2], calibration, threads))
    if run8 is not None:
        fns["onnxruntime_int8"] = lambda: run8(x_np)
        int8_peers.append("onnxruntime_int8")
    with torch.no_grad():
        t = compare_samples(fns, repeats=REPEATS["cnn"])
    r.notes.append(f"full-integer CNN conv layers: {ours.kernels['int8_conv']}")
    r.notes.append(f"fp32_folded: batch norm folded{', channels-last' if channels_last else ''}"
                   ", eval mode, no_grad")
    r.add("int8_cnn_b256_vs_fp32", t, "fp32", "ours")
    r.add("int8_cnn_b256_vs_fp32_folded", t, "fp32_folded", "ours")
    if "onnxruntime_fp32" in t:
        r.add("int8_cnn_b256_vs_onnxruntime_fp32", t, "onnxruntime_fp32", "ours")
    _add_best(r, "int8_cnn_b256_vs_best_fp32", t, "ours", fp32_sides, "fp32")
    if "torch_ao_x86" in t:
        r.add("int8_cnn_b256_vs_torch_ao", t, "torch_ao_x86", "ours")
    for side in int8_peers:
        r.add(f"int8_cnn_b256_vs_{side}", t, side, "ours")
    _add_best(r, "int8_cnn_b256_vs_best_int8_peer", t, "ours", int8_peers, "int8 peer")
    r.record("cnn_b256", t)


def bench_sizes() -> dict[str, float]:
    gen = torch.Generator().manual_seed(SEED)
    calibration = [torch.rand(64, 1, 28, 28, generator=gen)]
    ratios = {}
    for name, build in (("mlp", MLP), ("cnn", SmallCNN)):
        torch.manual_seed(SEED)
        model = build().eval()
        fp32 = model_size_bytes(model)
        ratios[f"int8_{name}"] = model_size_bytes(to_full_integer(model, calibration)) / fp32
        ratios[f"fp16_{name}"] = model_size_bytes(to_float16(model)) / fp32
        if name == "mlp":
            ratios["int8_dynamic_mlp"] = model_size_bytes(to_dynamic_int8(model)) / fp32
    return ratios


def run() -> dict:
    """All int8 benchmarks; see the module doc for the keys."""
    r = Ratios()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        for bench in (bench_gemm, bench_requantize, bench_linear, bench_cnn):
            bench(r)
        sizes = bench_sizes()
    report = kernels.backend_report()
    targets = TARGETS_VNNI if report["int8_gemm"] == "int_mm" else TARGETS_NO_VNNI
    notes = [
        f"torch threads: {torch.get_num_threads()}, numba threads: {numba.get_num_threads()}; "
        f"int8 GEMM path: {report['int8_gemm']} ({report['int8_gemm_reason']})",
        f"requantization: {report['requantize']}",
        f"instruction sets: {peers.emulated_isa() or 'native'}; torch CPU capability "
        f"{report['cpu_capability']}, quantized engines {', '.join(peers.quantized_engines())}",
        *r.notes,
        "fp32 baselines: torch.matmul, nn.Linear, SmallCNN as trained (batch norm unfused) and "
        "folded + channels-last, all under torch.no_grad",
    ]
    notes.append(f"speedups are ratios of medians of interleaved runs (repeats {REPEATS}); "
                 "'best' is the ratio of the fastest runs, less sensitive to other load")
    which = "VNNI (issue 3)" if targets is TARGETS_VNNI else "no VNNI (issue 17)"
    for key, value in r.median.items():
        target = targets.get(key)
        verdict = "" if target is None else (
            f"; {which} target >= {target}x: {'met' if value >= target else 'MISSED'}")
        notes.append(f"{key}: {value:.2f}x (best {r.best[key]:.2f}x{verdict})")
    return {"speedups": r.median, "size_ratios": sizes, "notes": notes,
            "timings_ms": r.timings_ms}
