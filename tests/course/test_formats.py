"""course.formats against independent references: torch.finfo / torch.iinfo, and the bit
patterns themselves (the largest finite value, the smallest normal, 1 + eps, read back by
reinterpreting integers as floats)."""

from __future__ import annotations

import pytest
import torch

from course.formats import FLOAT_LAYOUTS, INT_DTYPES, format_summary

FLOATS = list(FLOAT_LAYOUTS)
INTS = list(INT_DTYPES)
# (dtype, integer view, bits of the largest finite value, smallest normal, 1 + eps)
PATTERNS = [
    (torch.float32, torch.int32, 0x7F7FFFFF, 0x00800000, 0x3F800001),
    (torch.float16, torch.int16, 0x7BFF, 0x0400, 0x3C01),
    (torch.bfloat16, torch.int16, 0x7F7F, 0x0080, 0x3F81),
    (torch.float8_e5m2, torch.uint8, 0x7B, 0x04, 0x3D),
    (torch.float8_e4m3fn, torch.uint8, 0x7E, 0x08, 0x39),
]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_floats_match_torch_finfo(dtype):
    info = torch.finfo(dtype)
    assert format_summary(dtype) == {"bits": info.bits, "max": info.max,
                                     "smallest_normal": info.smallest_normal, "eps": info.eps}


@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_integers_match_torch_iinfo(dtype):
    info = torch.iinfo(dtype)
    summary = format_summary(dtype)
    assert summary == {"bits": info.bits, "min": info.min, "max": info.max}
    assert all(type(v) is int for v in summary.values())


@pytest.mark.parametrize("dtype, view, largest, normal, one_plus_eps", PATTERNS, ids=str)
def test_figures_are_the_bit_patterns(dtype, view, largest, normal, one_plus_eps):
    summary = format_summary(dtype)

    def value(bits: int) -> float:
        return torch.tensor(bits, dtype=torch.int64).to(view).view(dtype).item()

    assert value(largest) == summary["max"]
    assert value(normal) == summary["smallest_normal"]
    assert value(one_plus_eps) - 1.0 == summary["eps"]
    # the next pattern above the largest finite value is infinity or NaN
    beyond = torch.tensor(largest + 1, dtype=torch.int64).to(view).view(dtype).float()
    assert not torch.isfinite(beyond)


def test_the_float8_facts():
    e4m3, e5m2 = format_summary(torch.float8_e4m3fn), format_summary(torch.float8_e5m2)
    assert e4m3["max"] == 448.0 and e5m2["max"] == 57344.0
    # E4M3FN has no infinity: a cast of 500 saturates to 448; E5M2 rounds 60000 to 57344
    assert torch.tensor(500.0).to(torch.float8_e4m3fn).float().item() == 448.0
    assert torch.tensor(60000.0).to(torch.float8_e5m2).float().item() == 57344.0
    assert torch.tensor(1e6).to(torch.float8_e5m2).float().item() == float("inf")


def test_bfloat16_has_float32_range_and_fewer_bits():
    bf16, fp32 = format_summary(torch.bfloat16), format_summary(torch.float32)
    assert bf16["smallest_normal"] == fp32["smallest_normal"]
    assert bf16["eps"] == 2.0**-7 and fp32["eps"] == 2.0**-23
    assert bf16["max"] < fp32["max"] < 1.01 * bf16["max"]


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="dtype"):
        format_summary("float16")
    with pytest.raises(ValueError, match="dtype"):
        format_summary(torch.complex64)
    with pytest.raises(ValueError, match="dtype"):
        format_summary(torch.bool)
