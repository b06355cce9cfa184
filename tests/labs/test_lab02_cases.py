"""lab02's reference cases: the library passes them, and the visible ones already catch the
mistakes the exercises warn about (a student must not learn of them only from the grade)."""

from __future__ import annotations

import pytest
import torch

from autograder.cases import lab02_post_training_quantization as lab02
from course.grading import Mismatch, check
from course.kernels.requantize import requantize_reference

LAB = lab02.LAB


def requantize_half_away_from_zero(acc, multiplier, shift, zero_point):
    """A plausible mistake: ties rounded away from zero instead of up."""
    product = acc.to(torch.int64) * multiplier
    half = 1 << (shift - 1)
    magnitude = (product.abs() + half) >> shift
    out = torch.where(product < 0, -magnitude, magnitude) + zero_point
    return torch.clamp(out, -128, 127).to(torch.int8)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
def test_the_library_passes_its_own_requantize_cases(hidden):
    assert check(LAB, "requantize", requantize_reference, hidden=hidden) is None


def test_the_visible_cases_hold_real_ties_so_half_away_from_zero_fails_them():
    with pytest.raises(Mismatch, match="exact tie: this lab rounds ties up"):
        check(LAB, "requantize", requantize_half_away_from_zero)
