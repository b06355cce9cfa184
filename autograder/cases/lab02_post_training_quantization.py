"""Reference cases of lab02 (post-training quantization), computed by the library.

The integer exercises have one right answer (the rules are exact), so no alternatives
are stored; the calibration exercise compares float ranges with a tolerance.
"""

from __future__ import annotations

import torch

from autograder.cases._build import case, integers, reference_files, uniform
from course.grading.fixtures import build as build_fixture
from course.kernels.requantize import quantize_multiplier, requantize_reference

LAB = "lab02_post_training_quantization"

TIE_NOTE = ("acc * multiplier / 2**shift = {v} is an exact tie: this lab rounds ties up "
            "(add 2**(shift-1) before the arithmetic right shift)")


def _quantize_multiplier(hidden: bool) -> list[dict]:
    values = [0.1, 0.75, 3e-4] if not hidden else [
        0.5, 1.0, 1.5, 0.9999999999, 2.0**-20, 7.3, 123.456, 1e-9, 0.3333333333333333]
    cases = [case("quantize_multiplier", f"real multiplier {v!r}", "int_tuple", [v],
                  quantize_multiplier(v)) for v in values]
    if hidden:
        cases += [case("quantize_multiplier", "0 is an error", "raises", [0.0], "ValueError"),
                  case("quantize_multiplier", "negative is an error", "raises", [-0.25],
                       "ValueError")]
    return cases


def _requantize_case(label: str, acc: torch.Tensor, m: int, shift: int, zp: int) -> dict:
    expected = requantize_reference(acc, m, shift, zp).to(torch.int64)
    notes = {}
    for i, a in enumerate(acc.reshape(-1).tolist()):
        product = a * m
        if product % (1 << shift) == 1 << (shift - 1):
            notes[str(i)] = TIE_NOTE.format(v=product / 2**shift)
        raw = ((product + (1 << (shift - 1))) >> shift) + zp
        if not -128 <= raw <= 127:
            notes[str(i)] = f"{raw} lies outside the int8 range: clamp it to [-128, 127]"
    return case("requantize", label, "int_tensor", [acc, m, shift, zp], expected, notes=notes)


def _requantize(hidden: bool) -> list[dict]:
    if not hidden:
        m, s = quantize_multiplier(0.01)
        return [
            _requantize_case("a typical layer", integers(61, (4, 5), -20000, 20000, torch.int32),
                             m, s, 3),
            # M = 2**30 / 2**31 = 1/2: every odd accumulator lands exactly on a half
            _requantize_case("halves round up (M = 1/2: exact ties, negative ones too)",
                             torch.tensor([1, 3, 5, -1, -3, -5], dtype=torch.int32),
                             2**30, 31, 0),
        ]
    m, s = quantize_multiplier(0.0037)
    big = torch.tensor([2**31 - 1, -(2**31), 123456789, -987654321], dtype=torch.int32)
    return [
        _requantize_case("ties in both directions", torch.arange(-9, 10, dtype=torch.int32),
                         2**30, 32, -5),
        _requantize_case("saturation at both ends", integers(62, (3, 7), -10**6, 10**6,
                         torch.int32), *quantize_multiplier(0.5), 10),
        _requantize_case("int32 extremes: the product needs 64 bits", big, m, s, 0),
        _requantize_case("large shift", integers(63, (8,), -2**30, 2**30, torch.int32),
                         *quantize_multiplier(3e-9), -128),
        _requantize_case("multiplier above one", integers(64, (2, 3), -50, 50, torch.int32),
                         *quantize_multiplier(2.5), 0),
    ]


def _linear_expected(x_q, x_zp, w_q, bias_q, m, shift, out_zp) -> torch.Tensor:
    acc = (x_q.to(torch.int64) - x_zp) @ w_q.to(torch.int64).T + bias_q.to(torch.int64)
    return requantize_reference(acc.to(torch.int32), m, shift, out_zp).to(torch.int64)


def _quantized_linear(hidden: bool) -> list[dict]:
    calls = [("batch 3, 8 -> 4", 71, 3, 8, 4, -128, 0.004, 5),
             ("batch 1, 16 -> 2", 72, 1, 16, 2, 0, 0.02, -3)]
    if hidden:
        calls = [("int8 extremes, zero point -128, K = 784", 73, 2, 784, 3, -128, 0.0001, 0),
                 ("zero point 127", 74, 4, 10, 5, 127, 0.003, -20),
                 ("one output", 75, 5, 7, 1, 3, 0.05, 100),
                 ("wide layer", 76, 2, 100, 40, -7, 0.0008, 0)]
    cases = []
    for label, seed, batch, k, n, x_zp, real, out_zp in calls:
        x_q = integers(seed, (batch, k), -128, 127, torch.int8)
        w_q = integers(seed + 100, (n, k), -127, 127, torch.int8)
        if "extremes" in label:
            x_q[0] = 127
            w_q[0] = 127
            w_q[1] = -127
        bias = integers(seed + 200, (n,), -5000, 5000, torch.int32)
        m, s = quantize_multiplier(real)
        args = [x_q, x_zp, w_q, bias, m, s, out_zp]
        cases.append(case("quantized_linear", label, "int_tensor", args,
                          _linear_expected(*args)))
    if hidden:
        cases.append(_exact_accumulation_case())
    return cases


FLOAT32_EXACT = 2**24
"""Integers above this are not all representable in float32 (odd ones never are)."""


def _exact_accumulation_case() -> dict:
    """A layer whose accumulators are odd and above 2**24 (x - zp = 255, w = 127 with an odd
    number of 126s), the bias bringing output 0's back near 0, and the real multiplier 1
    (every unit of the accumulator shows in the output): float32 accumulation, in any order
    on any machine, cannot hold them, so it cannot give row 0's outputs."""
    k, n, x_zero_point = 784, 4, -128
    x_q = torch.full((2, k), 127, dtype=torch.int8)
    x_q[1, :100] = x_zero_point            # row 1: x - zp = 0 on the first 100 inputs
    w_q = torch.full((n, k), 127, dtype=torch.int8)
    for column in range(n):
        w_q[column, k - (2 * column + 1):] = 126
    dots = (x_q.to(torch.int64) - x_zero_point) @ w_q.to(torch.int64).T   # [2, n]
    assert bool((dots % 2 == 1).all()) and int(dots.min()) > FLOAT32_EXACT
    bias = (-dots[0] + torch.tensor([-37, -3, 5, 41])).to(torch.int32)
    m, shift = quantize_multiplier(1.0)
    args = [x_q, x_zero_point, w_q, bias, m, shift, 0]
    return case("quantized_linear", "K = 784 at the int8 extremes, multiplier 1: every "
                "accumulator is odd and above 2**24, which float32 cannot hold (accumulate in "
                "int32 or int64)", "int_tensor", args, _linear_expected(*args))


def _calibrate(hidden: bool) -> list[dict]:
    calls = [("MLP fixture, two layers", "mlp", 1, ["1", "3"], [(4, 6), (4, 6)])]
    if hidden:
        calls = [("every layer, three batches", "mlp", 2, ["1", "2", "3", "4"],
                  [(5, 6), (3, 6), (7, 6)]),
                 ("conv model, one batch", "conv_linear", 3, ["0", "2", "4"], [(2, 2, 4, 4)]),
                 ("a name listed once, batches of one", "mlp", 4, ["4"], [(1, 6)] * 4)]
    cases = []
    for label, name, seed, layers, shapes in calls:
        batches = [uniform(seed * 10 + i, shape, -2.0, 2.0) for i, shape in enumerate(shapes)]
        # float64, rounded once at the end: a float32 forward pass (BLAS, conv) differs in
        # its last bits from CPU to CPU, and the references must not.
        model = build_fixture(name, seed).double()
        modules = dict(model.named_modules())
        lo = {n: float("inf") for n in layers}
        hi = {n: float("-inf") for n in layers}
        acts = {}
        handles = [modules[n].register_forward_hook(
            lambda mod, inp, out, n=n, acts=acts: acts.__setitem__(n, out)) for n in layers]
        with torch.no_grad():
            for x in batches:
                model(x.double())
                for n in layers:
                    lo[n] = min(lo[n], float(acts[n].min()))
                    hi[n] = max(hi[n], float(acts[n].max()))
        for h in handles:
            h.remove()
        expected = torch.tensor([[lo[n], hi[n]] for n in layers], dtype=torch.float32)
        cases.append(case("calibrate_ranges", label, "float_tensor",
                          [{"__model__": name, "seed": seed}, batches, layers], expected,
                          rtol=1e-5, atol=1e-6))
    return cases


EXERCISES = {
    "quantize_multiplier": _quantize_multiplier,
    "requantize": _requantize,
    "quantized_linear": _quantized_linear,
    "calibrate_ranges": _calibrate,
}


# The library's objects that compute each exercise's answer (functions, classes — every
# function in their body —, methods, and the helpers they call to do it): withheld in the
# grading copy of `course` (autograder/pipeline/withheld.py);
# tests/autograder/pipeline/test_withheld.py checks that each one, and every alias of it,
# raises "withheld while grading" in the sandbox.
WITHHELD = {
    "quantize_multiplier": ("course.kernels.requantize:quantize_multiplier",
                            "course.kernels.requantize:quantize_multiplier_per_channel"),
    "requantize": ("course.kernels.requantize:requantize",
                   "course.kernels.requantize:requantize_reference",
                   "course.kernels.requantize:requantize_prepared",
                   "course.kernels.requantize:_requantize_torch",
                   "course.kernels.requantize:_requantize_numba",
                   "course.kernels.requantize:_requantize_rows",
                   "course.kernels.conv.pool:pool_requantize"),
    "quantized_linear": ("course.nn.integer:IntLinear.forward",
                         "course.nn.integer:IntLinear.fake_quant_forward",
                         "course.nn.integer:IntLinear.from_float",
                         "course.nn.integer:IntegerModel.forward"),
    "calibrate_ranges": ("course.observe.calibration:calibrate",
                         "course.observe.observers:MinMaxObserver.update",
                         "course.observe.observers:MinMaxObserver.range"),
}

def build() -> dict[str, bytes]:
    """Visible and hidden reference files of lab02, as ``{path from repo root: bytes}``."""
    return reference_files(LAB, EXERCISES)
