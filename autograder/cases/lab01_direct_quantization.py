"""Reference cases of lab01 (direct quantization), computed by the library.

``build()`` returns the bytes of the visible cases (released with the lab) and of the hidden
cases (kept in ``autograder/references/``). Where another valid implementation can round a
near-tie the other way (float32 vs float64 arithmetic, multiplying by 1/scale), its result is
stored as an accepted alternative; exact ties have none: they must round half to even.
"""

from __future__ import annotations

import math

import torch

from autograder.cases._build import (
    case,
    distinct,
    integers,
    quantize_variants,
    reference_files,
    uniform,
)
from course import quant
from course.grading.fixtures import build as build_fixture
from course.methods import direct

LAB = "lab01_direct_quantization"

TIE_NOTE = ("x / scale = {v:g} is an exact tie: round half to even gives {q} "
            "(torch.round and Python's round do this; floor(v + 0.5) does not)")
CLAMP_NOTE = "round(x / scale) + zero_point = {v:g} lies outside [qmin, qmax]: clamp it to {q}"


# ---------------------------------------------------------------- other valid implementations
def _affine_qparams_f32(x_min: float, x_max: float, bits: int) -> tuple[float, int]:
    qmin, qmax = quant.qrange(bits, signed=False)
    lo = torch.tensor(min(x_min, 0.0), dtype=torch.float32)
    hi = torch.tensor(max(x_max, 0.0), dtype=torch.float32)
    scale = torch.clamp((hi - lo) / (qmax - qmin), min=quant.EPS)
    zp = int(torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).item())
    return float(scale.item()), zp


def _fakequantize_variants(x: torch.Tensor, bits: int, symmetric: bool) -> list[torch.Tensor]:
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        s32 = torch.clamp(x.abs().max() / qmax, min=quant.EPS)
        s64 = max(float(x.abs().max()) / qmax, quant.EPS)
        params = [(s32, 0, -qmax, qmax), (s64, 0, -qmax, qmax)]
    else:
        qmin, qmax = quant.qrange(bits, signed=False)
        s32, z32 = _affine_qparams_f32(float(x.min()), float(x.max()), bits)
        s64, z64 = quant.affine_qparams(float(x.min()), float(x.max()), bits)
        params = [(s32, z32, qmin, qmax), (s64, z64, qmin, qmax)]
    outs = []
    for s, z, lo, hi in params:
        for q in quantize_variants(x, s, z, lo, hi):
            outs.append(((q - z).double() * float(s)).to(torch.float32))
    return outs


def _per_channel_variants(w: torch.Tensor, bits: int, axis: int) -> list[torch.Tensor]:
    qmax = 2 ** (bits - 1) - 1
    dims = [d for d in range(w.dim()) if d != axis % w.dim()]
    absmax = w.double().abs().amax(dim=dims, keepdim=True) if dims else w.double().abs()
    s64 = torch.clamp(absmax / qmax, min=quant.EPS)
    return [((q.double()) * s64).to(torch.float32)
            for q in quantize_variants(w, s64, 0, -qmax, qmax)]


# ---------------------------------------------------------------------------- exercise cases
def _qrange(hidden: bool) -> list[dict]:
    calls = [(1, False), (1, True), (2, True), (3, True), (16, False), (16, True), (5, False)] \
        if hidden else [(8, True), (8, False), (4, True)]
    cases = [case("qrange", f"{b} bits, {'signed' if s else 'unsigned'}", "int_tuple", [b, s],
                  quant.qrange(b, s)) for b, s in calls]
    return cases


def _affine_qparams(hidden: bool) -> list[dict]:
    if hidden:
        calls = [
            ((0.5, 2.0, 8), "range widened down to 0"),
            ((-3.0, -1.0, 4), "all negative: widened up to 0"),
            ((0.0, 0.0, 8), "empty range: scale never below float32 eps"),
            ((-2.5, 0.5, 2), "x_min / scale = -2.5 is an exact tie: zero point 2, not 3"),
            ((-1.0, 1.0, 1), "1 bit"),
            ((-5.0, 1e-9, 8), "zero point at the top of the range"),
            ((-1e-9, 1e3, 8), "zero point at the bottom of the range"),
            ((-0.3, 0.7, 16), "16 bits"),
        ]
    else:
        calls = [
            ((-1.0, 3.0, 8), "typical range"),
            ((0.0, 1.0, 8), "x_min = 0: zero point 0"),
            ((-0.5, 2.5, 2), "x_min / scale = -0.5 is an exact tie: half to even gives 0"),
        ]
    cases = []
    for (lo, hi, bits), label in calls:
        expected = quant.affine_qparams(lo, hi, bits)
        alt = _affine_qparams_f32(lo, hi, bits)
        alts = [alt] if alt[1] != expected[1] else []
        cases.append(case("affine_qparams", label, "qparams", [lo, hi, bits], expected,
                          alternatives=alts, note=label if "tie" in label else None))
    if hidden:
        cases.append(case("affine_qparams", "x_min > x_max is an error", "raises",
                          [1.0, -1.0, 8], "ValueError"))
    return cases


def _symmetric_scale(hidden: bool) -> list[dict]:
    calls = [(1.0, 2), (3.0, 16), (0.0, 2), (1e-9, 8), (2.5, 3)] if hidden \
        else [(1.27, 8), (1.0, 4), (0.0, 8)]
    cases = [case("symmetric_scale", f"{b} bits", "float", [a, b], quant.symmetric_scale(a, b),
                  note="never below float32 eps" if a < 1e-6 else None) for a, b in calls]
    if hidden:
        cases += [case("symmetric_scale", "fewer than 2 bits is an error", "raises", [1.0, 1],
                       "ValueError"),
                  case("symmetric_scale", "0 bits is an error", "raises", [1.0, 0], "ValueError")]
    return cases


def _quantize_case(label: str, x: torch.Tensor, scale, zp: int, qmin: int, qmax: int) -> dict:
    expected = quant.quantize(x, scale, zp, qmin, qmax).to(torch.int64)
    notes = {}
    v = (x.double() / scale).reshape(-1)
    for i, vi in enumerate(v.tolist()):
        q = expected.reshape(-1)[i].item()
        if vi - math.floor(vi) == 0.5:
            notes[str(i)] = TIE_NOTE.format(v=vi, q=q - zp)
        raw = round(vi) + zp
        if raw < qmin or raw > qmax:
            notes[str(i)] = CLAMP_NOTE.format(v=raw, q=q)
    return case("quantize", label, "int_tensor", [x, scale, zp, qmin, qmax], expected,
                alternatives=distinct(expected, quantize_variants(x, scale, zp, qmin, qmax)),
                notes=notes)


def _quantize(hidden: bool) -> list[dict]:
    if not hidden:
        return [
            _quantize_case("ties and clamping", torch.tensor([-1.0, 0.25, 0.5, 9.0]),
                           0.5, 0, -4, 3),
            _quantize_case("8-bit unsigned with a zero point", uniform(11, (3, 4)), 0.01, 100,
                           0, 255),
        ]
    ties = torch.tensor([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5]) * 0.25
    return [
        _quantize_case("exact ties round half to even", ties, 0.25, 0, -8, 7),
        _quantize_case("ties with a zero point", ties, 0.25, 3, 0, 15),
        _quantize_case("clamping at both ends", torch.tensor([-100.0, -4.6, 4.6, 100.0, 0.0]),
                       0.5, 0, -8, 7),
        _quantize_case("clamping with a zero point", uniform(12, (2, 3, 4), -3.0, 3.0), 0.02,
                       128, 0, 255),
        _quantize_case("4-bit signed, 2-D", uniform(13, (5, 6)), 1.0 / 7, 0, -8, 7),
        _quantize_case("one element", torch.tensor([0.3]), 0.1, 0, -128, 127),
        _quantize_case("empty tensor", torch.zeros(0), 0.1, 0, -128, 127),
    ]


def _dequantize(hidden: bool) -> list[dict]:
    calls = [
        ("uint8 codes with a zero point", torch.tensor([0, 64, 255], dtype=torch.uint8), 0.5, 64),
        ("int8 codes", integers(21, (3, 4), -128, 127, torch.int8), 0.05, 0),
    ]
    if hidden:
        calls = [
            ("int8 extremes: subtract in a wider type",
             torch.tensor([-128, 127, 0], dtype=torch.int8), 0.1, 127),
            ("uint8 below the zero point: no wrap-around",
             torch.tensor([0, 5, 255], dtype=torch.uint8), 0.25, 10),
            ("int32 codes, 3-D", integers(22, (2, 2, 3), -1000, 1000, torch.int32), 0.001, -7),
            ("int64 codes", integers(23, (6,), 0, 15, torch.int64), 1.0 / 15, 3),
        ]
    return [case("dequantize", label, "float_tensor", [q, s, z],
                 ((q.to(torch.int64) - z).double() * s).to(torch.float32))
            for label, q, s, z in calls]


def _fake_quantize(hidden: bool) -> list[dict]:
    calls = [("symmetric, 4 bits", uniform(31, (16,)), 4, True),
             ("asymmetric, 8 bits", uniform(32, (4, 5), -0.5, 2.0), 8, False)]
    if hidden:
        calls = [
            ("constant tensor: range widened to 0", torch.full((3, 3), 3.0), 8, False),
            ("all zeros, symmetric", torch.zeros(7), 4, True),
            ("2 bits symmetric: three levels", uniform(33, (20,)), 2, True),
            ("1 bit asymmetric", uniform(34, (10,), 0.0, 1.0), 1, False),
            ("3-D, asymmetric 3 bits", uniform(35, (2, 3, 4), -2.0, 1.0), 3, False),
            ("all negative, asymmetric", uniform(36, (9,), -4.0, -1.0), 5, False),
        ]
    cases = []
    for label, x, bits, sym in calls:
        expected = quant.fake_quantize(x, bits, sym)
        cases.append(case("fake_quantize", label, "float_tensor", [x, bits, sym], expected,
                          alternatives=distinct(expected, _fakequantize_variants(x, bits, sym))))
    if hidden:
        cases.append(case("fake_quantize", "symmetric 1 bit is an error", "raises",
                          [uniform(37, (4,)), 1, True], "ValueError"))
    return cases


def _per_channel(hidden: bool) -> list[dict]:
    calls = [("Linear weight [4, 3], axis 0", uniform(41, (4, 3)), 4, 0),
             ("Conv2d weight [2, 3, 3, 3], axis 0", uniform(42, (2, 3, 3, 3)), 8, 0)]
    if hidden:
        zero_row = uniform(43, (3, 4))
        zero_row[1] = 0.0
        calls = [
            ("axis 1 of a [3, 5] tensor", uniform(44, (3, 5), -2.0, 2.0), 4, 1),
            ("axis -1 of a [2, 3, 4] tensor", uniform(45, (2, 3, 4)), 3, -1),
            ("axis 2 of a 4-D tensor", uniform(46, (2, 2, 3, 2)), 5, 2),
            ("a channel of zeros", zero_row, 4, 0),
            ("2 bits", uniform(47, (6, 4)), 2, 0),
            ("channels of very different ranges",
             uniform(48, (3, 8)) * torch.tensor([[100.0], [1.0], [0.01]]), 4, 0),
        ]
    cases = []
    for label, w, bits, axis in calls:
        expected = quant.fake_quantize_per_channel(w, bits, axis)
        cases.append(case("fake_quantize_per_channel", label, "float_tensor", [w, bits],
                          expected, kwargs={"axis": axis},
                          alternatives=distinct(expected, _per_channel_variants(w, bits, axis))))
    if hidden:
        cases.append(case("fake_quantize_per_channel", "1 bit is an error", "raises",
                          [uniform(49, (2, 2)), 1], "ValueError", kwargs={"axis": 0}))
    return cases


def _scaled_pair(seed: int, magnitude: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, x_hat) float32 of size ``magnitude`` with about 1 % noise: the SQNR is an ordinary
    number, but ``x ** 2`` is 0 or inf in float32."""
    base = uniform(seed, (6,), 1.0, 2.0).double()
    noise = uniform(seed + 100, (6,), -0.01, 0.01).double()
    return (base * magnitude).float(), (base * (1 + noise) * magnitude).float()


def _sqnr(hidden: bool) -> list[dict]:
    x = uniform(51, (100,))
    calls = [("small noise", x, x + 0.01 * uniform(52, (100,))),
             ("no noise: infinite SQNR", x, x.clone())]
    if hidden:
        calls = [
            ("x_hat = 0: 0 dB", torch.ones(8), torch.zeros(8)),
            ("by hand: 10 log10(25 / 1)", torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0])),
            ("2-D", uniform(53, (5, 7)), quant.fake_quantize(uniform(53, (5, 7)), 4, True)),
            ("noise larger than signal", torch.full((4,), 0.1), torch.full((4,), 1.0)),
            ("no noise at all: inf", uniform(54, (3, 3)), uniform(54, (3, 3))),
            ("values near 1e-25: their squares underflow float32 (compute in float64)",
             *_scaled_pair(55, 1e-25)),
            ("values near 1e25: their squares overflow float32 (compute in float64)",
             *_scaled_pair(56, 1e25)),
        ]
    return [case("sqnr_db", label, "float", [a, b], float(f"{_sqnr_fsum(a, b):.12g}"),
                 rtol=1e-4) for label, a, b in calls]


def _sqnr_fsum(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """SQNR in dB with exact, order-free sums (``math.fsum``): the same on every CPU."""
    a, b = x.double().reshape(-1).tolist(), x_hat.double().reshape(-1).tolist()
    signal = math.fsum(v * v for v in a)
    noise = math.fsum((u - v) ** 2 for u, v in zip(a, b, strict=True))
    if noise == 0.0:
        return math.inf
    return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)


def _direct(hidden: bool) -> list[dict]:
    calls = [("MLP, 8 bits per tensor", "mlp", 1, 8, False),
             ("Conv2d + Linear, 4 bits per channel", "conv_linear", 2, 4, True)]
    if hidden:
        calls = [("Conv2d + Linear, 2 bits per tensor", "conv_linear", 3, 2, False),
                 ("MLP, 3 bits per channel", "mlp", 4, 3, True),
                 ("Conv2d + Linear, 8 bits per tensor", "conv_linear", 5, 8, False),
                 ("Linear layers inside sub-modules: every one is quantized", "nested", 6, 4,
                  False),
                 ("nested, 3 bits per channel", "nested", 7, 3, True)]
    cases = []
    for label, name, seed, bits, per_channel in calls:
        model = build_fixture(name, seed)
        out = direct.direct_quantize(model, bits, per_channel)
        expected = {k: v.clone() for k, v in out.state_dict().items()}
        weights = [f"{n}.weight" for n, m in model.named_modules()
                   if isinstance(m, direct.QUANTIZED_LAYERS)]
        alternatives = {}
        for key in weights:
            w = model.state_dict()[key]
            variants = (_per_channel_variants(w, bits, 0) if per_channel
                        else _fakequantize_variants(w, bits, True))
            alts = distinct(expected[key], variants)
            if alts:
                alternatives[key] = alts
        cases.append(case("direct_quantize", label, "model",
                          [{"__model__": name, "seed": seed}, bits], expected,
                          kwargs={"per_channel": per_channel}, quantized=weights,
                          alternatives=alternatives))
    return cases


EXERCISES = {
    "qrange": _qrange,
    "affine_qparams": _affine_qparams,
    "symmetric_scale": _symmetric_scale,
    "quantize": _quantize,
    "dequantize": _dequantize,
    "fake_quantize": _fake_quantize,
    "fake_quantize_per_channel": _per_channel,
    "sqnr_db": _sqnr,
    "direct_quantize": _direct,
}


# The library's objects that compute each exercise's answer (functions, classes — every
# function in their body —, methods, and the helpers they call to do it): withheld in the
# grading copy of `course` (autograder/pipeline/withheld.py);
# tests/autograder/pipeline/test_withheld.py checks that each one, and every alias of it,
# raises "withheld while grading" in the sandbox.
WITHHELD = {
    "qrange": ("course.quant.affine:qrange",),
    "affine_qparams": ("course.quant.affine:affine_qparams",
                       "course.kernels.int8_dynamic:activation_qparams"),
    "symmetric_scale": ("course.quant.affine:symmetric_scale",
                        "course.quant.affine:per_channel_scale"),
    "quantize": ("course.quant.affine:quantize", "course.kernels.int8_dynamic:quantize_to_int8",
                 "course.kernels.int8_dynamic:_quantize",
                 "course.kernels.int8_dynamic:quantize_activations_int8"),
    "dequantize": ("course.quant.affine:dequantize",
                   "course.kernels.int8_dynamic:dequantize_accumulators",
                   "course.kernels.int8_dynamic:_dequantize"),
    "fake_quantize": ("course.quant.affine:fake_quantize", "course.quant.ste:fake_quantize_ste",
                      "course.quant.ste:FakeQuantizeSTE",
                      "course.nn.integer:fake_quantize_codes",
                      "course.nn.fake_quant:FakeQuantize"),
    "fake_quantize_per_channel": ("course.quant.affine:fake_quantize_per_channel",),
    "sqnr_db": ("course.measure:sqnr_db",),
    "direct_quantize": ("course.methods.direct:direct_quantize",
                        "course.methods.direct:map_weights"),
}

def build() -> dict[str, bytes]:
    """Visible and hidden reference files of lab01, as ``{path from repo root: bytes}``."""
    return reference_files(LAB, EXERCISES)
