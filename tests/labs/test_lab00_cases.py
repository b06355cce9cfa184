"""lab00's reference cases: the library passes them, other valid implementations pass them,
the mistakes the lab warns about fail with a message that says so, and the files are what the
case module builds."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from autograder.cases import lab00_why_quantize as lab00
from course import cost, formats
from course.grading import Mismatch, check, dumps, load_cases, loads

LAB = lab00.LAB
ROOT = Path(__file__).resolve().parents[2]
LIBRARY = {"format_summary": formats.format_summary, "count_macs": cost.count_macs,
           "storage_bytes": cost.storage_bytes, "energy_pj": cost.energy_pj}


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_passes_its_own_references(name, hidden):
    assert check(LAB, name, LIBRARY[name], hidden=hidden) is None


def test_every_exercise_has_visible_and_hidden_cases():
    for hidden in (False, True):
        cases = load_cases(LAB, hidden)
        assert sorted(cases) == sorted(lab00.EXERCISES)
        assert all(len(v) >= 2 for v in cases.values())


def test_reference_files_are_what_the_case_module_builds():
    for path, data in lab00.build().items():
        assert (ROOT / path).read_bytes() == data, f"{path} is stale: run make references"


def test_dtypes_survive_the_reference_files():
    assert loads(dumps([torch.float8_e4m3fn, {"d": torch.int8}])) == [torch.float8_e4m3fn,
                                                                      {"d": torch.int8}]
    with pytest.raises(ValueError, match="dtype"):
        loads(b'{"__dtype__": "Tensor"}')


# ---------------------------------------------------------------- valid alternatives pass
def summary_from_finfo(dtype):
    if dtype.is_floating_point:
        info = torch.finfo(dtype)
        return {"bits": info.bits, "max": info.max, "smallest_normal": info.tiny,
                "eps": info.eps}
    if dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
        info = torch.iinfo(dtype)
        return {"bits": info.bits, "min": info.min, "max": info.max}
    raise ValueError("dtype")


def macs_by_module_type(model, input_shape):
    """MACs from each layer's input instead of its output, float input by default."""
    model = copy.deepcopy(model).eval()
    total = [0]

    def hook(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            total[0] += math.prod(output.shape) * layer.weight[0].numel()
        else:
            total[0] += inputs[0].numel() // layer.in_features * layer.weight.numel()

    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.ones(input_shape))
    return total[0]


def storage_from_state_dict(model, bits_per_weight=32):
    if bits_per_weight < 1:
        raise ValueError("bits_per_weight")
    weights = {m.weight.data_ptr() for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))}
    total, seen = 0, set()
    for t in model.state_dict().values():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += (t.numel() * bits_per_weight + 7) // 8 if t.data_ptr() in weights \
            else t.numel() * t.element_size()
    return total


def energy_summed_separately(macs, bytes_moved, fmt):
    table = {"fp32": (3.7, 0.9), "fp16": (1.1, 0.4), "int8": (0.2, 0.03)}
    if fmt not in table:
        raise ValueError(f"unknown fmt {fmt!r}")
    mult, add = table[fmt]
    return macs * mult + macs * add + math.ceil(bytes_moved / 4) * 640


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
def test_other_valid_implementations_pass(hidden):
    check(LAB, "format_summary", summary_from_finfo, hidden=hidden)
    check(LAB, "count_macs", macs_by_module_type, hidden=hidden)
    check(LAB, "storage_bytes", storage_from_state_dict, hidden=hidden)
    check(LAB, "energy_pj", energy_summed_separately, hidden=hidden)


# ---------------------------------------------------------------- mistakes fail, and say why
def summary_ieee_max_for_e4m3(dtype):
    out = formats.format_summary(dtype)
    if dtype == torch.float8_e4m3fn:
        out["max"] = 240.0               # as if the top exponent were reserved for infinity
    return out


def macs_ignoring_groups(model, input_shape):
    model = copy.deepcopy(model).eval()
    total = [0]

    def hook(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            total[0] += output.numel() * layer.in_channels * kh * kw
        else:
            total[0] += output.numel() * layer.in_features

    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(input_shape))
    return total[0]


def macs_counting_bias(model, input_shape):
    """One more 'operation' per output element of a layer with a bias: bias adds counted."""
    extra = [0]
    probe = copy.deepcopy(model).eval()
    for m in probe.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
            m.register_forward_hook(lambda layer, i, out: extra.__setitem__(0, extra[0]
                                                                           + out.numel()))
    with torch.no_grad():
        probe(torch.zeros(input_shape))
    return cost.count_macs(model, input_shape) + extra[0]


def macs_in_training_mode(model, input_shape):
    with torch.no_grad():
        model(torch.randn(input_shape))      # updates batch-norm statistics of the input
    return cost.count_macs(model, input_shape)


def storage_every_weight_packed(model, bits_per_weight=32):
    total, seen = 0, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += math.ceil(t.numel() * bits_per_weight / 8) if name.endswith("weight") \
            else t.numel() * t.element_size()
    return total


def storage_counting_ties_twice(model, bits_per_weight=32):
    return sum(math.ceil(t.numel() * bits_per_weight / 8) if name.endswith("weight")
               and isinstance(model.get_submodule(name.rsplit(".", 1)[0]), (nn.Linear, nn.Conv2d))
               else t.numel() * t.element_size() for name, t in model.state_dict().items())


def storage_all_float32(model, bits_per_weight=32):
    return cost.storage_bytes(model.float(), bits_per_weight)


def energy_bytes_not_words(macs, bytes_moved, fmt):
    return cost.energy_pj(macs, 0, fmt) + bytes_moved * 640 / 4


@pytest.mark.parametrize("name, fn, message", [
    ("format_summary", summary_ieee_max_for_e4m3, "no infinity"),
    ("count_macs", macs_ignoring_groups, "stride, padding, dilation, groups"),
    ("count_macs", macs_counting_bias, "expected"),
    ("count_macs", macs_in_training_mode, "input model was modified"),
    ("storage_bytes", storage_every_weight_packed, "expected 126, got 107"),  # BN packed
    ("storage_bytes", storage_counting_ties_twice, "shared by two Linear layers counts once"),
    ("storage_bytes", storage_all_float32, "float16"),
    ("energy_pj", energy_bytes_not_words, "DRAM words"),
])
def test_mistakes_fail_with_a_reason(name, fn, message):
    with pytest.raises(Mismatch, match=message):
        check(LAB, name, fn, hidden=True)


# ---------------------------------------------------------------- the int and number_dict kinds
def test_number_dict_wants_exactly_the_keys_and_exact_ints():
    def with_bytes(dtype):
        return {**formats.format_summary(dtype), "bytes": 1}

    def int64_max_as_float(dtype):
        out = formats.format_summary(dtype)
        return {k: float(v) for k, v in out.items()} if dtype == torch.int64 else out

    with pytest.raises(Mismatch, match="unexpected key 'bytes'"):
        check(LAB, "format_summary", with_bytes)
    with pytest.raises(Mismatch, match=r"int64.*result\['max'\]: expected 9223372036854775807"):
        check(LAB, "format_summary", int64_max_as_float, hidden=True)


def test_int_kind_accepts_integer_valued_numbers_only():
    check(LAB, "count_macs", lambda m, s: torch.tensor(cost.count_macs(m, s)))
    with pytest.raises(Mismatch, match="must be an integer"):
        check(LAB, "count_macs", lambda m, s: cost.count_macs(m, s) + 0.5)
