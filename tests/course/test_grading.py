"""course.grading: reference cases agree with the library, accept valid alternative answers,
and reject real bugs with messages that say what is wrong."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from autograder.cases import lab01_direct_quantization as lab01
from course import measure, quant
from course.grading import (
    Mismatch,
    check,
    dumps,
    fixtures,
    load_cases,
    loads,
    references_path,
)
from course.methods import direct

LAB = lab01.LAB
# the library's implementation of each lab01 exercise: course.quant's primitives, and these
MOVED_UP = {"direct_quantize": direct.direct_quantize, "sqnr_db": measure.sqnr_db}


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("name", sorted(lab01.EXERCISES))
def test_library_passes_its_own_references(name, hidden):
    library = MOVED_UP.get(name) or getattr(quant, name)
    assert check(LAB, name, library, hidden=hidden) is None  # None: not a score


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
    out = direct.direct_quantize(model, num_bits, per_channel)
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


# ------------------------------------ outcomes: captured as data, judged outside the kernel


def test_check_records_every_case_and_the_records_give_the_same_verdict(tmp_path, monkeypatch):
    from course.grading.outcome import judge
    from course.grading.record import RECORD_ENV, parse_records

    record = tmp_path / "records.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(record))
    with pytest.raises(Mismatch) as err:
        check(LAB, "quantize", quantize_round_half_up, hidden=True)
    cases = load_cases(LAB, hidden=True)["quantize"]
    records = parse_records(record.read_text())
    assert [(r.name, r.hidden, r.index) for r in records] == [
        ("quantize", True, i) for i in range(len(cases))]
    failures = []
    for r in records:
        try:
            judge(r.outcome, cases[r.index])
        except Mismatch as mismatch:
            failures.append(f"{cases[r.index]['call']} [{cases[r.index]['label']}]: {mismatch}")
    assert failures and failures[0] in str(err.value)
    assert str(err.value).startswith(f"quantize: {len(failures)} of {len(cases)} hidden")


def test_withheld_expected_values_mean_the_cases_run_but_are_not_judged(tmp_path, monkeypatch,
                                                                         capsys):
    from autograder.pipeline.withheld import write_redacted_references
    from course.grading.record import RECORD_ENV, parse_records

    write_redacted_references(references_path(LAB, hidden=True), LAB, tmp_path)
    monkeypatch.setenv("COURSE_REFERENCES_DIR", str(tmp_path))
    monkeypatch.setenv(RECORD_ENV, str(tmp_path / "records.jsonl"))
    assert check(LAB, "quantize", quantize_round_half_up, hidden=True) is None  # no verdict
    n = len(load_cases(LAB, hidden=True)["quantize"])
    assert f"quantize: {n} hidden cases ran; the grader judges their results" in \
        capsys.readouterr().out
    assert len(parse_records((tmp_path / "records.jsonl").read_text())) == n
    assert all("expected" not in c for c in load_cases(LAB, hidden=True)["quantize"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                   torch.int8, torch.uint8, torch.int16, torch.int32,
                                   torch.int64, torch.uint16, torch.bool])


def test_captured_tensors_keep_dtype_shape_and_exact_values(dtype):
    from course.grading.compare import ArrayData
    from course.grading.outcome import capture, dumps_outcome, loads_outcome

    values = torch.tensor([[-3.5, 0.0, 1.25], [2.0, 7.0, 1e-3]], dtype=torch.float64)
    if not dtype.is_floating_point:
        values = values.abs().round()
    x = values.to(dtype)
    got = loads_outcome(dumps_outcome(capture(lambda: x, {"args": [], "kwargs": {}})))
    data = got["returned"]
    assert isinstance(data, ArrayData) and data.dtype == str(dtype) and data.shape == (2, 3)
    reference = x.to(torch.float64).reshape(-1).tolist()
    assert data.values == ([bool(v) for v in reference] if dtype == torch.bool else reference)


def test_captured_python_and_numpy_values_round_trip():
    from course.grading.compare import ArrayData
    from course.grading.outcome import ObjectData, capture, dumps_outcome, loads_outcome

    class Liar:
        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

        def __repr__(self):
            return "8"

    value = (1, 2.5, float("nan"), True, None, [np.float32(0.5), np.arange(3)], Liar())
    got = loads_outcome(dumps_outcome(capture(lambda: value, {"args": [], "kwargs": {}})))
    back = got["returned"]
    assert back[:2] == (1, 2.5) and math.isnan(back[2]) and back[3] is True and back[4] is None
    assert isinstance(back[5][0], ArrayData) and back[5][0].values == [0.5]
    assert back[5][1].values == [0, 1, 2] and back[5][1].kind == "int"
    assert isinstance(back[6], ObjectData) and back[6].type_name == "Liar"
    raised = capture(lambda: 1 / 0, {"args": [], "kwargs": {}})["raised"]
    assert raised["type"] == "ZeroDivisionError" and "ArithmeticError" in raised["mro"]


def test_an_object_that_lies_about_equality_fails_every_kind():
    class Yes(float):
        def __eq__(self, other):
            return True

    def liar(*args, **kwargs):
        return Yes(0.0)

    for name in ("sqnr_db", "qrange", "quantize"):
        with pytest.raises(Mismatch):
            check(LAB, name, liar)


@pytest.mark.parametrize("bad", [
    "[]", '{"returned": {"__array__": {"dtype": "torch.int32", "kind": "int", "shape": [2], '
    '"data": "AAAAAAAAAAA="}}}', '{"returned": {"__array__": {"dtype": "x", "kind": "int", '
    '"shape": [1], "data": "!!"}}}', '{"returned": {"__weird__": 1}}', '{"raised": {"mro": 3}}',
    '{"neither": 1}', '{"returned": ' + "[" * 50 + "]" * 50 + "}",
])


def test_malformed_outcomes_are_rejected(bad):
    from course.grading.outcome import loads_outcome

    with pytest.raises(ValueError):
        loads_outcome(bad)


def test_record_lines_that_are_not_records_are_skipped():
    from course.grading.record import parse_records

    good = '{"lab": "l", "name": "f", "hidden": true, "index": 1, "outcome": {"returned": 2}}'
    text = "\n".join(["", "nonsense", "[1]", good.replace('"index": 1', '"index": -1'),
                      good.replace("true", '"yes"'), good.replace('{"returned": 2}', "{}"),
                      good])
    records = parse_records(text)
    assert [(r.lab, r.name, r.hidden, r.index, r.outcome) for r in records] == [
        ("l", "f", True, 1, {"returned": 2})]


# ------------------------------------------------------------- dict, list and input checks
def _verdict(fn, case):
    from course.grading.outcome import capture, dumps_outcome, judge, loads_outcome

    judge(loads_outcome(dumps_outcome(capture(fn, case))), case)


def test_tensor_dict_cases_name_the_key_that_differs():
    expected = {"a.weight": torch.tensor([[1.0, 2.0]]), "a.bias": torch.tensor([0.0])}
    case = {"kind": "tensor_dict", "args": [], "kwargs": {}, "expected": expected}
    _verdict(lambda: {k: v.clone() for k, v in expected.items()}, case)
    with pytest.raises(Mismatch, match=r"result\['a.weight'\]: element \[0, 1\]"):
        _verdict(lambda: {"a.weight": torch.tensor([[1.0, 2.5]]), "a.bias": torch.zeros(1)},
                 case)
    with pytest.raises(Mismatch, match="no entry 'a.bias'"):
        _verdict(lambda: {"a.weight": torch.ones(1, 2)}, case)
    with pytest.raises(Mismatch, match="unexpected entry 'x'"):
        _verdict(lambda: {**expected, "x": torch.zeros(1)}, case)
    with pytest.raises(Mismatch, match="dict of tensors"):
        _verdict(lambda: [torch.ones(1)], case)


def test_float_list_cases_name_the_item_and_accept_tolerance():
    case = {"kind": "float_list", "args": [], "kwargs": {}, "expected": [1.0, 2.0],
            "labels": ["alpha = 0", "alpha = 1"], "rtol": 1e-5}
    _verdict(lambda: [1.0, torch.tensor(2.000001)], case)
    with pytest.raises(Mismatch, match="alpha = 1: expected 2, got 2.1"):
        _verdict(lambda: (1.0, 2.1), case)
    with pytest.raises(Mismatch, match="2 floats, got 3 items"):
        _verdict(lambda: [1.0, 2.0, 3.0], case)


def test_raises_cases_can_require_the_message_to_name_something():
    case = {"kind": "raises", "args": [], "kwargs": {}, "expected": "KeyError",
            "message_names": ["4.bias"]}

    def names_it():
        raise KeyError("no direction for '4.bias'")

    def does_not():
        raise KeyError("missing")

    _verdict(names_it, case)
    with pytest.raises(Mismatch, match="must name '4.bias'"):
        _verdict(does_not, case)


def test_unchanged_cases_fail_when_the_input_model_is_modified():
    from course.grading.fixtures import build

    case = {"kind": "float", "args": [{"__model__": "linear", "seed": 0}], "kwargs": {},
            "expected": 1.0, "unchanged": True}

    def modifies(model):
        with torch.no_grad():
            model[0].bias.add_(1.0)
        return 1.0

    _verdict(lambda model: 1.0, case)
    with pytest.raises(Mismatch, match="input model was modified \\('0.bias'"):
        _verdict(modifies, case)
    assert build("linear_at_zero", 3)[0].weight.abs().sum() == 0
    assert build("conv_linear_dead_filter", 3)[0].weight[1].abs().sum() == 0


def test_untrusted_dict_outcomes_are_validated():
    from course.grading.outcome import loads_outcome

    assert loads_outcome('{"returned": {"__dict__": {"k": 1}}}')["returned"] == {"k": 1}
    with pytest.raises(ValueError):
        loads_outcome('{"returned": {"__dict__": {"k": {"__nope__": 1}}}}')


def test_bool_tensor_cases_want_a_bool_mask_with_equal_values():
    from course.grading.outcome import capture, dumps_outcome, judge, loads_outcome

    def outcome(fn, case):
        return loads_outcome(dumps_outcome(capture(fn, case)))

    expected = torch.tensor([True, False, True])
    case = {"kind": "bool_tensor", "args": [], "kwargs": {}, "expected": expected,
            "notes": {"1": "why element 1"}}
    assert judge(outcome(lambda: expected.clone(), case), case) is None
    with pytest.raises(Mismatch, match="must be a bool tensor"):
        judge(outcome(lambda: expected.to(torch.int64), case), case)
    with pytest.raises(Mismatch, match=r"element \[1\]: expected False, got True — why element 1"):
        judge(outcome(lambda: torch.tensor([True, True, True]), case), case)
# ------------------------------------------------ stderr of checked code never costs a point


def test_stderr_written_by_checked_code_is_captured_and_printed_to_stdout(capfd):
    import logging
    import os
    import sys

    from course.grading.quiet import HEADING

    configured = logging.getLogger("student.configured")
    handler = logging.StreamHandler(sys.stderr)   # bound to the stream when configured
    configured.addHandler(handler)
    configured.propagate = False

    def noisy(num_bits, signed):
        print("debug: python stream", file=sys.stderr)
        os.write(2, b"debug: file descriptor 2\n")
        logging.getLogger("student.plain").warning("debug: last-resort logging")
        configured.warning("debug: a configured handler")
        return quant.qrange(num_bits, signed)

    root = logging.getLogger()
    kept = root.handlers[:]
    root.handlers.clear()   # as in a notebook: logging.warning goes to logging.lastResort
    try:
        check(LAB, "qrange", noisy)
    finally:
        root.handlers[:] = kept
        configured.removeHandler(handler)
    out, err = capfd.readouterr()
    assert err == ""
    assert "qrange: all 3 visible checks passed" in out and HEADING in out
    for line in ("python stream", "file descriptor 2", "last-resort logging",
                 "a configured handler"):
        assert f"debug: {line}" in out, (line, out)
    print("after", file=sys.stderr)   # everything is put back after the check
    assert capfd.readouterr().err == "after\n"


def test_the_grader_moves_stderr_of_test_cells_to_stdout():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from autograder.judging.verdicts import References, plan_test_cell
    from autograder.preprocessors.judged import apply_verdicts
    from course.grading.quiet import HEADING

    cell = new_code_cell("assert True", metadata={"nbgrader": {
        "grade": True, "solution": False, "grade_id": "t", "points": 1, "locked": True}})
    cell.outputs = [new_output("stream", name="stdout", text="ok\n"),
                    new_output("stream", name="stderr", text="WARNING:root:late log\n"),
                    new_output("stream", name="stderr", text="more\n")]
    notebook = new_notebook(cells=[cell])
    apply_verdicts(notebook, {"t": plan_test_cell("t", "assert True", LAB)}, {},
                   References({}, {}))
    from nbgrader.utils import determine_grade

    assert determine_grade(notebook.cells[0]) == (1.0, 1.0)
    texts = [(o["name"], o["text"]) for o in notebook.cells[0].outputs]
    assert texts == [("stdout", "ok\n"), ("stdout", f"{HEADING}\nWARNING:root:late log\n"),
                     ("stdout", "more\n")]
