"""course.grading: reference cases agree with the library, accept valid alternative answers,
and reject real bugs with messages that say what is wrong."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from autograder.cases import lab01_direct_quantization as lab01
from course import quant
from course.grading import Mismatch, check, dumps, fixtures, load_cases, loads

LAB = lab01.LAB


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("name", sorted(lab01.EXERCISES))
def test_library_passes_its_own_references(name, hidden):
    assert check(LAB, name, getattr(quant, name), hidden=hidden) is None  # None: not a score


def test_hidden_cases_cover_the_edge_cases_the_lab_promises():
    hidden = load_cases(LAB, hidden=True)
    labels = {name: " ".join(c["label"] for c in cases) for name, cases in hidden.items()}
    assert "exact ties" in labels["quantize"] and "both ends" in labels["quantize"]
    assert "empty range" in labels["affine_qparams"]
    assert "fewer than 2 bits" in labels["symmetric_scale"]
    assert "axis 1" in labels["fake_quantize_per_channel"]
    assert "axis -1" in labels["fake_quantize_per_channel"]
    assert any(c["args"][0]["__model__"] == "conv_linear" for c in hidden["direct_quantize"])


# ----------------------------------------------------------------- valid alternatives pass
def quantize_numpy(x, scale, zero_point, qmin, qmax):
    """numpy inside, int64 out, multiply by the reciprocal."""
    v = np.rint(x.numpy() * (1.0 / scale)) + zero_point
    return torch.from_numpy(np.clip(v, qmin, qmax).astype(np.int64))


def quantize_int16(x, scale, zero_point, qmin, qmax):
    q = torch.round(x.double() / scale) + zero_point
    return q.clamp(qmin, qmax).to(torch.int16 if qmax < 2**15 else torch.int32)


def affine_qparams_torch(x_min, x_max, num_bits):
    qmin, qmax = 0, 2**num_bits - 1
    if x_min > x_max:
        raise ValueError("x_min > x_max")
    lo = torch.tensor(min(x_min, 0.0))
    hi = torch.tensor(max(x_max, 0.0))
    scale = torch.clamp((hi - lo) / (qmax - qmin), min=torch.finfo(torch.float32).eps)
    zp = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, zp.to(torch.int32)


def fake_quantize_float32_scale(x, num_bits, symmetric):
    if symmetric:
        if num_bits < 2:
            raise ValueError("bits")
        qmax = 2 ** (num_bits - 1) - 1
        scale = torch.clamp(x.abs().max() / qmax, min=torch.finfo(torch.float32).eps)
        return torch.clamp(torch.round(x * (1 / scale)), -qmax, qmax) * scale
    scale, zp = affine_qparams_torch(float(x.min()), float(x.max()), num_bits)
    q = torch.clamp(torch.round(x / scale) + zp, 0, 2**num_bits - 1)
    return (q - zp) * scale


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize(
    ("name", "fn"),
    [("quantize", quantize_numpy), ("quantize", quantize_int16),
     ("affine_qparams", affine_qparams_torch), ("fake_quantize", fake_quantize_float32_scale)],
    ids=["quantize-numpy", "quantize-int16", "qparams-float32", "fake-quantize-float32"],
)
def test_valid_alternative_implementations_pass(name, fn, hidden):
    check(LAB, name, fn, hidden=hidden)


# --------------------------------------------------------------- bugs fail, and say why
def quantize_round_half_up(x, scale, zero_point, qmin, qmax):
    return torch.clamp(torch.floor(x / scale + 0.5) + zero_point, qmin, qmax).to(torch.int32)


def quantize_no_clamp(x, scale, zero_point, qmin, qmax):
    return (torch.round(x / scale) + zero_point).to(torch.int32)


def quantize_float_out(x, scale, zero_point, qmin, qmax):
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize_in_code_dtype(q, scale, zero_point):
    return (q - zero_point).to(torch.float32) * scale


def direct_quantize_in_place(model, num_bits, per_channel=False):
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            m.weight.data = quant.fake_quantize(m.weight.data, num_bits, True)
    return model


def direct_quantize_touches_bias(model, num_bits, per_channel=False):
    out = quant.direct_quantize(model, num_bits, per_channel)
    for m in out.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            m.bias.data = quant.fake_quantize(m.bias.data, num_bits, True)
    return out


def sqnr_amplitude(x, x_hat):
    return 10 * math.log10(float(x.norm() / (x - x_hat).norm()))


@pytest.mark.parametrize(
    ("name", "fn", "hidden", "message"),
    [
        ("quantize", quantize_round_half_up, False, "exact tie"),
        ("quantize", quantize_round_half_up, True, "round half to even"),
        ("quantize", quantize_no_clamp, True, "clamp it to"),
        ("quantize", quantize_float_out, False, "integer dtype"),
        ("dequantize", dequantize_in_code_dtype, True, "element [0]: expected -25.5"),
        ("direct_quantize", direct_quantize_in_place, False, "input model"),
        ("direct_quantize", direct_quantize_touches_bias, False, "biases"),
        ("sqnr_db", sqnr_amplitude, False, "expected"),
        ("symmetric_scale", lambda a, b: max(a / (2 ** (b - 1) - 1), 2**-23), True,
         "expected ValueError"),
    ],
)
def test_bugs_fail_with_a_precise_message(name, fn, hidden, message):
    with pytest.raises(Mismatch) as err:
        check(LAB, name, fn, hidden=hidden)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{name}: ")


def test_a_student_who_rebinds_comparison_functions_still_fails(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(torch, "equal", lambda *a, **k: True)
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np, "array_equal", lambda *a, **k: True)
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: [0] * self.numel())
    with pytest.raises(Mismatch, match="exact tie"):
        check(LAB, "quantize", quantize_round_half_up)


def test_warnings_from_student_code_stay_out_of_stderr(capfd):
    def noisy(num_bits, signed):
        import warnings

        warnings.warn("deprecated", DeprecationWarning, stacklevel=1)
        warnings.warn("careful", UserWarning, stacklevel=1)
        return quant.qrange(num_bits, signed)

    check(LAB, "qrange", noisy)
    out, err = capfd.readouterr()
    assert "qrange: all 3 visible checks passed" in out and err == ""


def test_a_crashing_answer_is_a_failed_check_naming_the_error():
    def broken(*args):
        raise NotImplementedError("not yet")

    with pytest.raises(Mismatch, match="raised NotImplementedError: not yet"):
        check(LAB, "qrange", broken)


def test_inputs_are_fresh_for_every_call():
    def mutating(x, scale, zero_point, qmin, qmax):
        x.mul_(0)  # a student modifying their input must not corrupt the next check
        return quant.quantize(torch.zeros_like(x), scale, zero_point, qmin, qmax)

    with pytest.raises(Mismatch):
        check(LAB, "quantize", mutating)
    check(LAB, "quantize", quant.quantize)


def test_unknown_exercise_and_missing_references_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="no visible cases for 'nope'"):
        check(LAB, "nope", quant.qrange)
    monkeypatch.setenv("COURSE_REFERENCES_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make references"):
        check(LAB, "qrange", quant.qrange, hidden=True)


# ----------------------------------------------------------------------- encoding
def test_encoding_round_trips_tensors_tuples_and_non_finite_floats():
    obj = {"t": torch.tensor([[1.5, -0.0], [float("inf"), 3.0]]), "i": torch.arange(3,
           dtype=torch.uint8), "tup": (1, 2.5), "x": float("-inf"), "n": None}
    back = loads(dumps(obj))
    assert torch.equal(back["t"], obj["t"]) and back["t"].dtype == torch.float32
    assert back["i"].dtype == torch.uint8 and back["tup"] == (1, 2.5)
    assert back["x"] == float("-inf") and back["n"] is None
    assert dumps(obj) == dumps(copy.deepcopy(obj))


def test_fixture_models_are_deterministic_and_nontrivial():
    a, b = fixtures.build("conv_linear", 3), fixtures.build("conv_linear", 3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.state_dict()["1.running_var"], torch.ones(3))
    with pytest.raises(ValueError, match="unknown fixture model"):
        fixtures.build("nope", 0)
