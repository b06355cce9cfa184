"""lab05's reference cases: the library passes them, other valid implementations pass them
(float64 logarithms, frexp, numpy, Python loops, a float64 matrix product), and real bugs
fail with a message that says what is wrong. ``inq_step`` and ``inq_partition`` are checked
through the very wrappers of the lab's test cells. The grading copy of the library withholds
every exercise's implementation."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from torch import nn

from autograder.cases import lab05_incremental_network_quantization as lab05
from autograder.pipeline.withheld import build_grading_lib
from course.grading import Mismatch, check, load_cases
from course.kernels import pow2
from course.methods import inq

LAB = lab05.LAB
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "solutions" / LAB / f"{LAB}.ipynb"


def test_cell_namespace(step=inq.inq_step, partition=inq.inq_partition) -> dict:
    """The lab's test cells for inq_partition and inq_step, executed with the given
    functions: their wrappers (``partition_leaving_inputs``, ``elements_moved``,
    ``first_loss``) without the check calls."""
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    namespace = {"torch": torch, "nn": nn, "inq_step": step, "inq_partition": partition}
    for grade_id in ("test_inq_partition", "test_inq_step"):
        cell = next(c for c in nb.cells if c.get("id") == grade_id)
        code = "\n".join(line for line in cell.source.splitlines()
                         if not line.startswith("check(") and "HIDDEN TESTS" not in line)
        exec(compile(code, grade_id, "exec"), namespace)
    return namespace


test_cell_namespace.__test__ = False  # a helper, not a test


def wrappers(step=inq.inq_step, partition=inq.inq_partition) -> dict:
    ns = test_cell_namespace(step, partition)
    return {"inq_partition": ns["partition_leaving_inputs"], "inq_step": ns["elements_moved"],
            "inq_step_loss": ns["first_loss"]}


LIBRARY = {"inq_exponents": inq.inq_exponents, "quantize_pow2": inq.quantize_pow2,
           "encode_pow2": pow2.encode_pow2, "shift_matvec": pow2.shift_matvec}


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("name", sorted(lab05.EXERCISES))
def test_library_passes_its_own_references(name, hidden):
    fn = LIBRARY.get(name) or wrappers()[name]
    assert check(LAB, name, fn, hidden=hidden) is None


def test_every_exercise_has_visible_and_hidden_cases():
    for hidden in (False, True):
        cases = load_cases(LAB, hidden)
        assert sorted(cases) == sorted(lab05.EXERCISES)
        assert all(len(c) >= 1 for c in cases.values())
        assert sum(len(c) for c in cases.values()) >= (10 if not hidden else 40)


def test_reference_files_are_what_the_case_module_builds():
    for path, data in lab05.build().items():
        assert (ROOT / path).read_bytes() == data, f"{path} is stale: run make references"


def test_expected_values_are_exact_numbers():
    """Machine independence: levels are powers of two, codes and products integers, masks
    bools; the one float loss comes from the float64 reference (checked here again)."""
    for hidden in (False, True):
        cases = load_cases(LAB, hidden)
        for c in cases["quantize_pow2"]:
            if c["kind"] == "float_tensor":
                values = c["expected"].reshape(-1).tolist()
                assert all(v == 0 or 2.0 ** round(math.log2(abs(v))) == abs(v) for v in values)
        for name in ("encode_pow2", "shift_matvec"):
            assert all(c["expected"].dtype in (torch.uint8, torch.int64)
                       for c in cases[name] if c["kind"] == "int_tensor")
        for c in cases["inq_step_loss"]:
            model, masks, _opt, training, x, y = c["args"]
            built = lab05.build_fixture(model["__model__"], model["seed"]).train(training)
            loss = nn.functional.cross_entropy(built(x), y).item()
            assert loss == pytest.approx(c["expected"], rel=1e-5)


def test_hidden_cases_cover_the_edge_cases_the_lab_promises():
    labels = {name: " ".join(c["label"] for c in cases)
              for name, cases in load_cases(LAB, hidden=True).items()}
    assert "0.75" in labels["inq_exponents"] and "ValueError" in labels["inq_exponents"]
    assert "tie" in labels["quantize_pow2"] and "above the top" in labels["quantize_pow2"]
    assert "increasing flat index" in labels["inq_partition"]
    assert "ceil" in labels["inq_partition"] and "NaN" in labels["inq_partition"]
    for k in ("momentum", "Adam", "AdamW", "eval mode", "weight decay"):
        assert k in labels["inq_step"], k
    assert "-0.0" in labels["encode_pow2"] and "ValueError" in labels["encode_pow2"]
    assert "int32" in labels["shift_matvec"] and "K = 1" in labels["shift_matvec"]


# ----------------------------------------------------------------- valid alternatives pass
def exponents_float64(w_absmax, num_bits):
    if num_bits < 2 or not w_absmax > 0:
        raise ValueError("bad input")
    n1 = math.floor(math.log2(4 * w_absmax / 3))
    return n1, n1 + 1 - 2 ** (num_bits - 2)


def exponents_float32(w_absmax, num_bits):
    """A float32 logarithm: wrong where 4s/3 lies just below a power of two."""
    if num_bits < 2 or w_absmax <= 0:
        raise ValueError("bad input")
    n1 = int(torch.floor(torch.log2(torch.tensor(4 * w_absmax / 3, dtype=torch.float32))))
    return n1, n1 + 1 - 2 ** (num_bits - 2)


def quantize_frexp(w, n1, n2):
    if n2 > n1:
        raise ValueError("n2 > n1")
    mantissa, exponent = torch.frexp(w.abs())
    n = torch.where(mantissa >= 0.75, exponent, exponent - 1).clamp(max=n1)
    n = torch.where(n < n2, n2, n)
    level = torch.ldexp(torch.ones_like(w), n)
    return torch.where(w.abs() < 2.0 ** (n2 - 1), torch.zeros_like(w), torch.sign(w) * level)


def quantize_loop(w, n1, n2):
    if n2 > n1:
        raise ValueError("n2 > n1")
    out = []
    for v in w.reshape(-1).tolist():
        m, q = abs(v), 0.0
        if m >= 2.0 ** (n2 - 1):
            q = 2.0**n2
            for n in range(n2 + 1, n1 + 1):
                if m >= 0.75 * 2.0**n:
                    q = 2.0**n
        out.append(math.copysign(q, v) if q else 0.0)
    return torch.tensor(out, dtype=w.dtype).reshape(w.shape)


def partition_numpy(w, frozen, portion):
    if not 0 < portion <= 1:
        raise ValueError("portion")
    target = math.ceil(portion * w.numel())
    f = frozen.numpy().reshape(-1).copy()
    if f.sum() > target:
        raise ValueError("frozen")
    free = np.flatnonzero(~f)
    order = np.argsort(-np.abs(w.numpy().reshape(-1)[free]), kind="stable")
    f[free[order[:target - f.sum()]]] = True
    return torch.from_numpy(f.reshape(tuple(w.shape)))


def step_restore_only(model, masks, optimizer, batch):
    """Valid: no gradient masking at all, the frozen values put back after the step."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in masks}
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for n, m in masks.items():
            params[n].data = torch.where(m, saved[n], params[n].data)
    return loss


def encode_loop(w_q, n1, n2, num_bits):
    out = []
    for v in w_q.reshape(-1).tolist():
        if v == 0:
            out.append(0)
            continue
        n = math.frexp(abs(v))[1] - 1
        if abs(v) != 2.0**n or not n2 <= n <= n1:
            raise ValueError(f"{v} is not a level")
        out.append(1 + (n1 - n) + (2 ** (num_bits - 2) if v < 0 else 0))
    return torch.tensor(out, dtype=torch.int64).reshape(w_q.shape)


def shift_by_float64(x, codes, n1, n2, num_bits):
    """Exact for these sizes (below 2^53): decode, scale by 2^-n2, float64 product."""
    w = pow2.decode_pow2(codes, n1, n2, num_bits).double() * 2.0**-n2
    return (x.double() @ w.T).round().to(torch.int64)


def shift_by_codes(x, codes, n1, n2, num_bits):
    half = 2 ** (num_bits - 2)
    out = torch.zeros(x.shape[0], codes.shape[0], dtype=torch.int64)
    for c in range(1, 2 * half + 1):
        sel = codes.to(torch.int64) == c
        n = n1 - (c - 1 - (half if c > half else 0))
        if n < n2:
            continue
        shifted = x.to(torch.int64) << (n - n2)
        term = torch.stack([(shifted * s).sum(dim=1) for s in sel], dim=1)
        out += -term if c > half else term
    return out


VALID = [
    ("inq_exponents", exponents_float64),
    ("quantize_pow2", quantize_frexp), ("quantize_pow2", quantize_loop),
    ("inq_partition", partition_numpy), ("inq_step", step_restore_only),
    ("inq_step_loss", step_restore_only),
    ("encode_pow2", encode_loop), ("shift_matvec", shift_by_float64),
    ("shift_matvec", shift_by_codes),
]


def as_checked(name, fn):
    if name == "inq_partition":
        return wrappers(partition=fn)[name]
    if name.startswith("inq_step"):
        return wrappers(step=fn)[name]
    return fn


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize(("name", "fn"), VALID, ids=[f"{n}-{fn.__name__}" for n, fn in VALID])
def test_valid_alternative_implementations_pass(name, fn, hidden):
    check(LAB, name, as_checked(name, fn), hidden=hidden)


# --------------------------------------------------------------------- real bugs fail
def exponents_rounded(w_absmax, num_bits):
    n1 = round(math.log2(4 * w_absmax / 3))
    return n1, n1 + 1 - 2 ** (num_bits - 2)


def exponents_off_by_one(w_absmax, num_bits):
    n1, n2 = inq.inq_exponents(w_absmax, num_bits)
    return n1, n2 - 1


def exponents_no_checks(w_absmax, num_bits):
    if w_absmax <= 0 or num_bits < 2:
        return 0, 0
    return inq.inq_exponents(w_absmax, num_bits)


def quantize_ties_down(w, n1, n2):
    return -quantize_loop(-w.abs() * (1 - 2**-24), n1, n2) * torch.sign(w)


def quantize_no_clamp(w, n1, n2):
    out = quantize_loop(w, n1, n2)
    big = w.abs() >= 1.5 * 2.0**n1
    return torch.where(big, torch.sign(w) * 2.0 ** (n1 + 1), out)


def quantize_zero_below_smallest_level(w, n1, n2):
    out = quantize_loop(w, n1, n2)
    return torch.where(w.abs() < 2.0**n2, torch.zeros_like(w), out)


def partition_smallest_first(w, frozen, portion):
    return inq.inq_partition(-1 / (w.abs() + 1e-6), frozen, portion)


def partition_ties_reversed(w, frozen, portion):
    flipped = inq.inq_partition(w.flip(-1) if w.dim() == 1 else w, frozen.flip(-1)
                                if w.dim() == 1 else frozen, portion)
    return flipped.flip(-1) if w.dim() == 1 else flipped


def partition_in_place(w, frozen, portion):
    frozen |= inq.inq_partition(w, frozen, portion)
    return frozen


def partition_int_mask(w, frozen, portion):
    return inq.inq_partition(w, frozen, portion).to(torch.int64)


def partition_floor(w, frozen, portion):
    target = math.floor(portion * w.numel())
    return inq.inq_partition(w, frozen, target / w.numel()) if target else frozen.clone()


def step_gradient_mask_only(model, masks, optimizer, batch):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
    loss.backward()
    for n, p in model.named_parameters():
        if n in masks:
            p.grad[masks[n]] = 0
    optimizer.step()
    return loss.item()


def step_sets_train_mode(model, masks, optimizer, batch):
    model.train()
    return inq.inq_step(model, masks, optimizer, batch)


def encode_wrong_negative_offset(w_q, n1, n2, num_bits):
    codes = pow2.encode_pow2(w_q, n1, n2, num_bits).to(torch.int64)
    return torch.where(w_q < 0, codes + 2 ** (num_bits - 2), codes)


def encode_no_check(w_q, n1, n2, num_bits):
    try:
        return pow2.encode_pow2(w_q, n1, n2, num_bits)
    except ValueError:
        return torch.zeros(w_q.shape, dtype=torch.uint8)


def shift_int32(x, codes, n1, n2, num_bits):
    return shift_by_codes(x.to(torch.int32), codes, n1, n2, num_bits).to(torch.int32)


def shift_unsigned(x, codes, n1, n2, num_bits):
    return shift_by_float64(x, codes, n1, n2, num_bits).abs()


BUGS = [
    ("inq_exponents", exponents_rounded, True, "expected"),
    ("inq_exponents", exponents_float32, True, "just below"),
    ("inq_exponents", exponents_off_by_one, False, "expected"),
    ("inq_exponents", exponents_no_checks, True, "instead of raising ValueError"),
    ("quantize_pow2", quantize_ties_down, True, "halfway between"),
    ("quantize_pow2", quantize_no_clamp, True, "above every level"),
    ("quantize_pow2", quantize_zero_below_smallest_level, True, "2^(n2-1)"),
    ("inq_partition", partition_smallest_first, False, "expected"),
    ("inq_partition", partition_ties_reversed, True, "increasing flat index"),
    ("inq_partition", partition_in_place, False, "modified its inputs"),
    ("inq_partition", partition_int_mask, False, "must be a bool tensor"),
    ("inq_partition", partition_floor, True, "expected"),
    ("inq_step", step_gradient_mask_only, False, "expected False, got True"),
    ("inq_step", step_sets_train_mode, True, "train/eval mode"),
    ("encode_pow2", encode_wrong_negative_offset, False, "expected"),
    ("encode_pow2", encode_no_check, True, "instead of raising ValueError"),
    ("shift_matvec", shift_int32, True, "expected"),
    ("shift_matvec", shift_unsigned, False, "expected"),
]


@pytest.mark.parametrize(("name", "fn", "hidden", "message"), BUGS,
                         ids=[fn.__name__ for _, fn, _, _ in BUGS])
def test_real_bugs_fail_with_a_message_that_says_why(name, fn, hidden, message):
    with pytest.raises(Mismatch) as info:
        check(LAB, name, as_checked(name, fn), hidden=hidden)
    assert message in str(info.value), str(info.value)


def test_unanswered_exercise_fails_with_not_answered():
    def stub(*args):
        raise NotImplementedError

    for name in ("quantize_pow2", "inq_step"):
        with pytest.raises(Mismatch, match="not answered yet"):
            check(LAB, name, as_checked(name, stub))


# --------------------------------------------------------------------- withheld while grading
WITHHELD_PROBE = r"""
import torch
from course.methods import inq
from course.kernels import pow2
w = torch.tensor([0.3, -0.1])
assert inq.is_pow2_or_zero(torch.tensor([0.25]), 0, -3) and inq.pow2_levels(0, -1).numel() == 5
assert pow2.decode_pow2(torch.tensor([1], dtype=torch.uint8), 0, -3, 4).item() == 1.0
for call in (lambda: inq.inq_exponents(1.0, 5), lambda: inq.quantize_pow2(w, 0, -3),
             lambda: inq.inq_partition(w, torch.zeros(2, dtype=torch.bool), 0.5),
             lambda: inq.inq_step(None, {}, None, None),
             lambda: pow2.encode_pow2(w, 0, -3, 4),
             lambda: pow2.shift_matvec(torch.ones(1, 1, dtype=torch.int8),
                                       torch.ones(1, 1, dtype=torch.uint8), 0, 0, 2)):
    try:
        call()
    except NotImplementedError as err:
        assert "withheld while grading" in str(err), err
    else:
        raise SystemExit("an exercise's implementation was not withheld")
print("withheld")
"""


def test_the_grading_copy_withholds_every_exercise(tmp_path):
    exercises = sorted(load_cases(LAB, hidden=True))
    changed = build_grading_lib(exercises, tmp_path)
    assert sorted(changed) == ["course/kernels/pow2.py", "course/methods/inq/levels.py",
                               "course/methods/inq/partition.py", "course/methods/inq/training.py"]
    run = subprocess.run([sys.executable, "-c", WITHHELD_PROBE], cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin",
                              "NUMBA_CACHE_DIR": str(tmp_path / "numba")},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "withheld"
