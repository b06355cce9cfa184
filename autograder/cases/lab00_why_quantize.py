"""Reference cases of lab00 (why quantize), computed by the library.

Every expected value is exact and the same on every machine: formats are derived from bit
layouts (powers of two, Python floats), MACs and bytes are integers from shapes, and energies
are a few float64 products of literals. The fixture models are named, not stored
(``course.grading.fixtures``); their weights do not change any count.
"""

from __future__ import annotations

import torch

from autograder.cases._build import case, reference_files
from course import cost, formats
from course.grading.fixtures import build as build_fixture

LAB = "lab00_why_quantize"


def _model(name: str, seed: int) -> dict:
    return {"__model__": name, "seed": seed}


def _format_summary(hidden: bool) -> list[dict]:
    notes = {
        torch.float8_e4m3fn: {"max": "E4M3FN has no infinity: its top exponent holds numbers "
                                     "up to 1.75 x 2^8 = 448 (only mantissa 111 is NaN)"},
        torch.bfloat16: {"eps": "bfloat16 keeps 7 mantissa bits: eps = 2^-7"},
    }
    dtypes = ([torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.float64,
               torch.uint8, torch.int32, torch.int64] if hidden
              else [torch.float32, torch.float16, torch.int8])
    cases = [case("format_summary", str(d).removeprefix("torch."), "number_dict", [d],
                  formats.format_summary(d), notes=notes.get(d)) for d in dtypes]
    if hidden:
        cases.append(case("format_summary", "a dtype outside the table is an error", "raises",
                          [torch.complex64], "ValueError"))
    return cases


def _count_macs(hidden: bool) -> list[dict]:
    calls = [
        ("Linear on a 3-D input: every row of every sequence", "linear", 1, (2, 5, 4)),
        ("Conv2d 3x3 then Linear", "conv_linear", 2, (1, 2, 4, 4)),
    ]
    if hidden:
        calls = [
            ("stride, padding, dilation, groups, depthwise, a 1x3 kernel", "convs", 3,
             (2, 3, 9, 11)),
            ("the same layers on a 16x16 input", "convs", 4, (1, 3, 16, 16)),
            ("a Linear called twice counts twice", "tied_linear", 5, (3, 4)),
            ("Flatten, Linear, BatchNorm1d, Linear", "mlp", 6, (3, 2, 3)),
            ("a batch of 8", "conv_linear", 7, (8, 2, 4, 4)),
            ("dropout counts nothing", "dropout_linear", 8, (6, 4)),
        ]
    cases = [case("count_macs", label, "int", [_model(name, seed), shape],
                  cost.count_macs(build_fixture(name, seed), shape))
             for label, name, seed, shape in calls]
    if hidden:
        cases.append(case("count_macs", "a model in training mode: count on an eval copy, "
                          "leave its batch-norm statistics alone", "int",
                          [_model("conv_linear_train", 9), (4, 2, 4, 4)],
                          cost.count_macs(build_fixture("conv_linear_train", 9), (4, 2, 4, 4)),
                          unchanged=True))
    return cases


def _storage_bytes(hidden: bool) -> list[dict]:
    calls = [("fp32: parameters and buffers, num_batches_tracked included", "conv_linear", 1,
              32),
             ("int8 weights, the rest at its own dtype", "conv_linear", 2, 8)]
    if hidden:
        calls = [
            ("1-bit weights: each tensor rounded up to whole bytes", "mlp", 3, 1),
            ("4 bits: PReLU and batch-norm weights are not Linear/Conv2d weights", "convs", 4,
             4),
            ("3 bits: grouped and depthwise weights hold fewer elements", "convs", 5, 3),
            ("a weight shared by two Linear layers counts once", "tied_linear", 6, 8),
            ("a float16 model: biases and batch norm at 2 bytes", "mlp_half", 7, 8),
            ("16-bit weights of a single Linear", "linear", 8, 16),
        ]
    cases = [case("storage_bytes", label, "int", [_model(name, seed), bits],
                  cost.storage_bytes(build_fixture(name, seed), bits), unchanged=True)
             for label, name, seed, bits in calls]
    if hidden:
        cases.append(case("storage_bytes", "bits_per_weight defaults to 32", "int",
                          [_model("convs", 9)], cost.storage_bytes(build_fixture("convs", 9))))
        cases.append(case("storage_bytes", "0 bits per weight is an error", "raises",
                          [_model("linear", 10), 0], "ValueError"))
    return cases


def _energy_pj(hidden: bool) -> list[dict]:
    calls = [("fp32: 1,000 MACs and 4,000 bytes", 1000, 4000, "fp32"),
             ("int8: 10 MACs and 8 bytes", 10, 8, "int8")]
    if hidden:
        calls = [
            ("5 bytes are 2 DRAM words", 0, 5, "fp16"),
            ("one byte is a whole word", 0, 1, "fp32"),
            ("compute only, fp16", 7, 0, "fp16"),
            ("VGG-16 at batch 1, fp32", 15_470_264_320, 553_430_176, "fp32"),
            ("a billion int8 MACs", 10**9, 0, "int8"),
            ("nothing at all", 0, 0, "int8"),
        ]
    cases = [case("energy_pj", label, "float", [macs, nbytes, fmt],
                  cost.energy_pj(macs, nbytes, fmt), rtol=1e-9)
             for label, macs, nbytes, fmt in calls]
    if hidden:
        cases += [case("energy_pj", f"{fmt!r} is not in the table", "raises", [10, 10, fmt],
                       "ValueError") for fmt in ("bf16", "int4")]
    return cases


EXERCISES = {
    "format_summary": _format_summary,
    "count_macs": _count_macs,
    "storage_bytes": _storage_bytes,
    "energy_pj": _energy_pj,
}

WITHHELD = {
    "format_summary": ("course.formats:format_summary", "course.formats:_float_summary"),
    "count_macs": ("course.cost:count_macs", "course.cost:_layer_macs"),
    "storage_bytes": ("course.cost:storage_bytes",),
    "energy_pj": ("course.cost:energy_pj",),
}
"""The library objects that compute each exercise's answer, withheld while grading (the
energy table, ``OpEnergy``, stays readable: it is data the exercise is given)."""


def build() -> dict[str, bytes]:
    """Visible and hidden reference files of lab00, as ``{path from repo root: bytes}``."""
    return reference_files(LAB, EXERCISES)
