"""Binary kernels (XNOR + popcount on packed bits) vs fp32 and int8, and packed sizes.

Speedups (baseline median / ours, interleaved in one run with ``benchmarks.compare``, all
threads):

* ``binary_gemm_4096_vs_fp32`` — ``course.kernels.binary.gemm.xnor_gemm`` on operands packed
  beforehand (4096 x 4096 by 4096 x 4096, K = 4096) vs ``torch.matmul`` float32;
* ``binary_gemm_4096_vs_int8`` — the same vs the course's int8 GEMM
  (``course.kernels.int8_gemm``, the path this CPU takes, weight packed once) int8 x int8
  -> int32; never ``torch._int_mm`` itself, a reference loop on CPUs without VNNI;
* ``binary_conv_vs_fp32`` — the packed XNOR conv layer (``PackedXNORConv2d``: sign and
  pack the input, K map, im2col on bits, GEMM with alpha, K and bias fused) vs ``nn.Conv2d``
  float32 with bias: 3 x 3, 256 -> 256 channels, 16 x 16 pixels, padding 1, batch 64.

Size ratio ``binary_mlp``: bytes stored (``course.measure.model_size_bytes``) by the
lecture's MLP with every Linear binarized and packed (first layer binary weights only, the
others XNOR) vs the fp32 MLP; batch norms and biases stay float32 in both.

The notes add: JIT compile time (apart from the speed figures), what LLVM emitted, the
naive kernel, per-core ratios from single-thread CPU time (less sensitive to other
processes on a shared machine than wall-clock time), the load average, and the targets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numba
import torch

from benchmarks import compare
from course import kernels
from course.kernels import cpu_features
from course.kernels.binary.bitpack import pack_sign_bits
from course.kernels.binary.conv import binary_conv2d
from course.kernels.binary.gemm import compile_kernels, kernel_info, xnor_gemm
from course.measure import model_size_bytes
from course.methods.xnor import XNORConv2d, binarize_model, pack_model
from course.models import MLP

SEED = 0
GEMM_SIZE = 4096


@dataclass(frozen=True)
class ConvShape:
    batch: int = 64
    channels: int = 256
    size: int = 16
    kernel: int = 3
    padding: int = 1


CONV = ConvShape()
REPEATS = {"gemm": 5, "conv": 15, "cpu_time": 3}
TARGETS_AVX512 = {  # issue 5's targets on a CPU with AVX-512 VPOPCNTDQ
    "binary_gemm_4096_vs_fp32": 15.0,
    "binary_gemm_4096_vs_int8": 3.0,
    "binary_conv_vs_fp32": 5.0,
}
TARGETS_AVX2 = {  # issue 17's bars on AVX2 without AVX-512 (per core, 1 thread)
    "binary_gemm_4096_vs_fp32": 8.0,
    "binary_gemm_4096_vs_int8": 3.5,
}


def _cpu_time_ratio(baseline: Callable[[], object], candidate: Callable[[], object],
                    repeats: int) -> float:
    """Median CPU-time ratio, one thread in torch and numba, interleaved."""
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        baseline()
        candidate()
        samples = {"baseline": [], "candidate": []}
        for _ in range(repeats):
            for name, fn in (("baseline", baseline), ("candidate", candidate)):
                start = time.process_time()
                fn()
                samples[name].append(time.process_time() - start)
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)
    median = {name: sorted(v)[len(v) // 2] for name, v in samples.items()}
    return median["baseline"] / median["candidate"]


def bench_gemm() -> tuple[dict, dict, list[str]]:
    gen = torch.Generator().manual_seed(SEED)
    n = GEMM_SIZE
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a8 = torch.randint(-128, 128, (n, n), generator=gen, dtype=torch.int8)
    b8 = kernels.pack_int8(torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8))
    pa, pb = pack_sign_bits(a), pack_sign_bits(b)

    def int8() -> torch.Tensor:
        return kernels.int8_gemm(a8, b8)

    t = compare({"fp32": lambda: torch.matmul(a, b),
                 "int8": int8,
                 "binary": lambda: xnor_gemm(pa, pb),
                 "binary_naive": lambda: xnor_gemm(pa, pb, backend="naive")},
                warmup=1, repeats=REPEATS["gemm"])
    speedups = {"binary_gemm_4096_vs_fp32": t["fp32"].median_s / t["binary"].median_s,
                "binary_gemm_4096_vs_int8": t["int8"].median_s / t["binary"].median_s}
    binary_s = t["binary"].median_s
    notes = [
        f"GEMM {n}^3 medians: fp32 {t['fp32'].median_s * 1e3:.0f} ms "
        f"({2 * n**3 / t['fp32'].median_s / 1e9:.0f} GFLOP/s), int8 {kernels.backend()} "
        f"{t['int8'].median_s * 1e3:.0f} ms, binary tiled {binary_s * 1e3:.1f} ms "
        f"({n * n * n / 64 / binary_s / 1e9:.1f} G word XOR+popcount+add/s), binary naive "
        f"{t['binary_naive'].median_s * 1e3:.0f} ms "
        f"(tiled {t['binary_naive'].median_s / binary_s:.1f}x faster than naive)",
        f"GEMM {n}^3 per core (single-thread CPU time): binary "
        f"{_cpu_time_ratio(lambda: torch.matmul(a, b), lambda: xnor_gemm(pa, pb), 3):.1f}x "
        f"fp32, "
        f"{_cpu_time_ratio(int8, lambda: xnor_gemm(pa, pb), 3):.1f}x int8 (numba and torch "
        "on 1 thread each)",
    ]
    timings = {f"gemm_{n}_{name}": timing.median_s * 1e3 for name, timing in t.items()}
    return speedups, timings, notes


def bench_conv() -> tuple[dict, dict, list[str]]:
    torch.manual_seed(SEED)
    c = CONV
    float_conv = torch.nn.Conv2d(c.channels, c.channels, c.kernel, padding=c.padding).eval()
    xnor = XNORConv2d(c.channels, c.channels, c.kernel, padding=c.padding)
    xnor.load_state_dict(float_conv.state_dict())
    packed = xnor.to_packed()
    weight = packed.packed_weight()
    x = torch.randn(c.batch, c.channels, c.size, c.size,
                    generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        t = compare({"fp32": lambda: float_conv(x),
                     "binary_layer": lambda: packed(x),
                     "binary_conv_only": lambda: binary_conv2d(x, weight, 1, c.padding)},
                    warmup=2, repeats=REPEATS["conv"])
        per_core = _cpu_time_ratio(lambda: float_conv(x), lambda: packed(x),
                                   REPEATS["cpu_time"] + 2)
    speedups = {"binary_conv_vs_fp32": t["fp32"].median_s / t["binary_layer"].median_s}
    notes = [
        f"conv {c.kernel}x{c.kernel}, {c.channels}->{c.channels} ch, {c.size}x{c.size}, "
        f"batch {c.batch}, padding {c.padding}: fp32 {t['fp32'].median_s * 1e3:.1f} ms, "
        f"packed XNOR layer {t['binary_layer'].median_s * 1e3:.1f} ms (float in, float out), "
        f"integer sign conv alone {t['binary_conv_only'].median_s * 1e3:.1f} ms; per core "
        f"(single-thread CPU time) the layer is {per_core:.1f}x fp32",
    ]
    timings = {f"conv_{name}": timing.median_s * 1e3 for name, timing in t.items()}
    return speedups, timings, notes


def size_ratios() -> tuple[dict, list[str]]:
    torch.manual_seed(SEED)
    model = MLP().eval()
    binary = binarize_model(model, binary_inputs=True, float_inputs=("fc1",))
    packed = pack_model(binary)
    fp32_bytes, packed_bytes = model_size_bytes(model), model_size_bytes(packed)
    fp32_weights = sum(layer.weight.numel() * 4 for layer in (model.fc1, model.fc2, model.fc3))
    bits = sum(packed.get_submodule(name).weight_bits.numel() * 8
               for name in ("fc1", "fc2", "fc3"))
    notes = [
        f"MLP bytes: fp32 {fp32_bytes}, packed binary {packed_bytes} "
        f"(1/{fp32_bytes / packed_bytes:.1f}); Linear weights alone: {fp32_weights} -> "
        f"{bits} bytes of bits (1/{fp32_weights / bits:.1f}: 784 inputs take 13 words = 832 "
        "bits per row), plus alpha, biases and batch norms in float32",
    ]
    return {"binary_mlp": packed_bytes / fp32_bytes}, notes


def run() -> dict:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    report = compile_kernels()
    info = kernel_info()
    notes = [
        f"kernels ready in {report.seconds:.1f} s ({report.source}: {report.cache_hits} "
        f"loaded, {report.cache_misses} compiled), measured apart from the speeds",
        f"binary GEMM path: {info['backend']} ({info['popcount']} on "
        f"{info['vector_bits']}-bit vectors), "
        f"{info['threads']} numba threads, {torch.get_num_threads()} torch threads; CPU "
        f"avx512_vpopcntdq: {'avx512_vpopcntdq' in cpu_features.cpu_flags()}, int8 dot "
        f"products: {', '.join(cpu_features.int8_dot_instructions()) or 'none'}",
    ]
    speedups, timings = {}, {}
    for bench in (bench_gemm, bench_conv):
        s, t, n = bench()
        speedups.update(s)
        timings.update(t)
        notes.extend(n)
    sizes, size_notes = size_ratios()
    notes.extend(size_notes)
    targets = TARGETS_AVX2 if info["backend"] == "tiled_avx2" else TARGETS_AVX512
    misses = [f"{name} {speedups[name]:.2f} < target {target}"
              for name, target in targets.items() if speedups[name] < target]
    notes.append("targets met" if not misses else "below target: " + "; ".join(misses))
    notes.append(f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
                 f"on {os.cpu_count()} CPUs; {time.perf_counter() - start:.0f} s in all")
    return {"speedups": speedups, "size_ratios": sizes, "timings_ms": timings, "notes": notes}
