"""Reference cases of lab05 (Incremental Network Quantization), computed by the library.

Every expected value is machine-independent: exponents from rational arithmetic, levels and
codes that are exact powers of two or small integers, masks, integer products (int64), and
one loss computed in float64 by plain Python in a fixed order, rounded once to float32.

``inq_step`` is checked through two wrappers of the lab's test cell: ``inq_step`` itself
returns which parameter elements moved over a few steps (the frozen ones must not, every
other one must: weight decay moves them all), ``inq_step_loss`` the loss the first step
returns.
"""

from __future__ import annotations

import math

import torch

from autograder.cases._build import case, describe, integers, reference_files, uniform
from course.grading.fixtures import build as build_fixture
from course.kernels.pow2 import encode_pow2, shift_matvec_reference
from course.methods.inq.levels import inq_exponents, quantize_pow2
from course.methods.inq.partition import inq_partition
from course.methods.inq.training import inq_step

LAB = "lab05_incremental_network_quantization"

TIE_NOTE = ("|w| = {m:g} lies exactly halfway between the levels {a:g} and {b:g}: ties go to "
            "the larger magnitude")
ZERO_EDGE_NOTE = ("|w| = {m:g} = 2^(n2-1), halfway between 0 and the smallest level {b:g}: "
                  "it goes to {b:g}")
TOP_NOTE = "|w| = {m:g} is above every level: it goes to the top level 2^n1 = {b:g}"
TIE_ORDER_NOTE = "equal |w| are taken in increasing flat index"

STEP_OPTIMIZERS = ("sgd", "sgd_momentum", "adam", "adamw")
"""Optimizers the inq_step wrapper builds by name (see :func:`make_optimizer`)."""


def make_optimizer(name: str, params) -> torch.optim.Optimizer:
    """The optimizer of an ``inq_step`` case; the lab's test cell builds the same."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.1, weight_decay=0.01)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    if name == "adam":
        return torch.optim.Adam(params, lr=0.01, weight_decay=0.01)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)
    raise ValueError(f"unknown optimizer {name!r}")


def f32(value: float) -> float:
    """``value`` rounded to the nearest float32, as a Python float."""
    return float(torch.tensor(value, dtype=torch.float64).to(torch.float32))


def _below(value: float) -> float:
    """The float32 just below ``value`` (> 0)."""
    return float(torch.nextafter(torch.tensor(value, dtype=torch.float32),
                                 torch.tensor(0.0, dtype=torch.float32)))


# ----------------------------------------------------------------------------- inq_exponents
def _exponents(hidden: bool) -> list[dict]:
    calls = [("max 1, 5 bits: n1 - 7 ... n1", 1.0, 5),
             ("a trained layer's max, 4 bits", f32(0.2008), 4),
             ("4/3 of the max is exactly 1 (0.75, 3 bits)", 0.75, 3)]
    if hidden:
        calls = [("4/3 of the max is exactly 2^-4 (0.09375)", 0.09375, 5),
                 ("the float32 just below 0.75: n1 = -1, not 0", _below(0.75), 5),
                 ("a max that is a power of two (2.0)", 2.0, 4),
                 ("2 bits: a single exponent, n2 = n1", 3.0, 2),
                 ("8 bits: 64 exponents", f32(0.37), 8),
                 ("a large max (100)", 100.0, 3),
                 ("a tiny max (1e-6)", f32(1e-6), 5),
                 ("4/3 of the max just below 2^-2", _below(0.1875), 4)]
    cases = [case("inq_exponents", label, "int_tuple", [s, bits], inq_exponents(s, bits))
             for label, s, bits in calls]
    if hidden:
        cases += [case("inq_exponents", "1 bit: ValueError", "raises", [1.0, 1], "ValueError"),
                  case("inq_exponents", "w_absmax = 0: ValueError", "raises", [0.0, 5],
                       "ValueError"),
                  case("inq_exponents", "w_absmax < 0: ValueError", "raises", [-0.5, 4],
                       "ValueError")]
    return cases


# ----------------------------------------------------------------------------- quantize_pow2
def _pow2_notes(w: torch.Tensor, n1: int, n2: int) -> dict[str, str]:
    """Explanations for the elements on a tie, on the zero edge, or above the top level."""
    notes = {}
    for i, v in enumerate(w.reshape(-1).tolist()):
        m = abs(v)
        if m == math.ldexp(1.0, n2 - 1):
            notes[str(i)] = ZERO_EDGE_NOTE.format(m=m, b=math.ldexp(1.0, n2))
        elif m > 1.5 * math.ldexp(1.0, n1):
            notes[str(i)] = TOP_NOTE.format(m=m, b=math.ldexp(1.0, n1))
        else:
            for n in range(n2 + 1, n1 + 1):
                if m == 3 * math.ldexp(1.0, n - 2):
                    notes[str(i)] = TIE_NOTE.format(m=m, a=math.ldexp(1.0, n - 1),
                                                    b=math.ldexp(1.0, n))
    return notes


def _ties(n1: int, n2: int) -> torch.Tensor:
    """Every tie of the levels n2 ... n1, both signs, and the zero edge."""
    values = [math.ldexp(1.0, n2 - 1), _below(math.ldexp(1.0, n2 - 1))]
    values += [3 * math.ldexp(1.0, n - 2) for n in range(n2 + 1, n1 + 1)]
    return torch.tensor(values + [-v for v in values], dtype=torch.float32)


def _quantize(hidden: bool) -> list[dict]:
    def from_max(w: torch.Tensor, bits: int) -> tuple[int, int]:
        return inq_exponents(w.abs().max().item(), bits)

    w5 = uniform(501, (4, 6), -0.3, 0.3)
    w3 = uniform(502, (10,), -1.0, 1.0)
    calls = [("5 bits, exponents from the weights' max", w5, *from_max(w5, 5)),
             ("3 bits: two exponents and zero", w3, *from_max(w3, 3))]
    if hidden:
        conv = uniform(503, (3, 2, 3, 3), -0.5, 0.5)
        big = uniform(504, (12,), -4.0, 4.0)
        signed_zero = torch.tensor([0.0, -0.0, 1e-9, -1e-9, 0.5, -0.5])
        calls = [("every tie and the zero edge, both signs (4 bits)", _ties(0, -3), 0, -3),
                 ("every tie, 5 bits", _ties(-1, -8), -1, -8),
                 ("a Conv2d weight [3, 2, 3, 3], 4 bits", conv, *from_max(conv, 4)),
                 ("values above the top level go to 2^n1", big, 0, -2),
                 ("2 bits: n1 = n2, levels 0 and ±2^n1", w3, 0, 0),
                 ("zero, -0.0 and tiny values", signed_zero, -1, -4)]
    cases = []
    for label, w, n1, n2 in calls:
        cases.append(case("quantize_pow2", label, "float_tensor", [w, n1, n2],
                          quantize_pow2(w, n1, n2), notes=_pow2_notes(w, n1, n2),
                          rtol=1e-6, atol=0.0))
    if hidden:
        cases.append(case("quantize_pow2", "n2 > n1: ValueError", "raises", [w3, -3, -2],
                          "ValueError"))
    return cases


# ----------------------------------------------------------------------------- inq_partition
def _mask(seed: int, shape: tuple[int, ...], count: int) -> torch.Tensor:
    """A bool mask with ``count`` True elements at positions drawn from ``seed``."""
    import random

    rng = random.Random(seed)
    flat = [False] * math.prod(shape)
    for i in rng.sample(range(len(flat)), count):
        flat[i] = True
    return torch.tensor(flat).reshape(shape)


def _partition(hidden: bool) -> list[dict]:
    none = torch.zeros(4, 6, dtype=torch.bool)
    w = uniform(511, (4, 6), -1.0, 1.0)
    half = inq_partition(w, none, 0.5)
    calls = [("nothing frozen yet, 50 %", w, none, 0.5),
             ("50 % frozen, now 75 %", w, half, 0.75)]
    if hidden:
        ties = torch.tensor([0.5, -0.5, 0.25, 0.5, -0.25, 0.125, -0.5, 0.25])
        seven = uniform(512, (7,), -1.0, 1.0)
        conv = uniform(513, (2, 3, 2, 2), -1.0, 1.0)
        scattered = _mask(514, (2, 3, 2, 2), 5)
        ten = uniform(515, (10,), -1.0, 1.0)
        calls = [("equal |w|, both signs: increasing flat index", ties,
                  torch.zeros(8, dtype=torch.bool), 0.5),
                 ("equal |w| with one already frozen", ties,
                  torch.tensor([False, True, False, False, False, False, False, False]), 0.375),
                 ("7 weights, 50 %: ceil(3.5) = 4", seven, torch.zeros(7, dtype=torch.bool),
                  0.5),
                 ("10 weights, 87.5 %: ceil(8.75) = 9", ten, inq_partition(
                     ten, torch.zeros(10, dtype=torch.bool), 0.75), 0.875),
                 ("a Conv2d weight with small weights frozen: only free ones are added", conv,
                  scattered, 0.75),
                 ("already exactly enough frozen: nothing added", conv, scattered, 5 / 24),
                 ("100 %: everything", conv, scattered, 1.0)]
    cases = []
    for label, weights, frozen, portion in calls:
        expected = inq_partition(weights, frozen, portion)
        notes = {str(i): TIE_ORDER_NOTE for i in range(weights.numel())} \
            if "equal |w|" in label else {}
        cases.append(case("inq_partition", label, "bool_tensor", [weights, frozen, portion],
                          expected, notes=notes))
    if hidden:
        for label, portion, frozen in [("portion 0: ValueError", 0.0, none),
                                       ("portion 1.5: ValueError", 1.5, none),
                                       ("portion NaN: ValueError", math.nan, none),
                                       ("more frozen than the portion: ValueError", 0.25, half)]:
            cases.append(case("inq_partition", label, "raises", [w, frozen, portion],
                              "ValueError"))
    return cases


# ----------------------------------------------------------------------------- inq_step
def _fixture_batch(name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "mlp":
        return uniform(seed, (8, 6), -1.0, 1.0), integers(seed + 1, (8,), 0, 2, torch.int64)
    return uniform(seed, (6, 2, 4, 4), -1.0, 1.0), integers(seed + 1, (6,), 0, 3, torch.int64)


def _fixture_masks(name: str, seed: int, portions: tuple[float, float]) -> dict:
    model = build_fixture(name, seed)
    params = dict(model.named_parameters())
    weights = [n for n in params if n.endswith("weight") and params[n].dim() >= 2]
    masks = {}
    for n, portion in zip(weights, portions, strict=True):
        masks[n] = inq_partition(params[n].detach(), torch.zeros_like(params[n], dtype=torch.bool),
                                 portion) if portion < 1.0 else torch.ones_like(params[n],
                                                                               dtype=torch.bool)
    return masks


def run_steps(model: torch.nn.Module, masks: dict, optimizer: str, steps: int,
              training: bool, x: torch.Tensor, y: torch.Tensor, step=inq_step) -> torch.Tensor:
    """What the lab's ``inq_step`` test wrapper returns: which elements of the parameters
    (in ``named_parameters`` order, flattened and concatenated) moved over ``steps`` steps."""
    model.train(training)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = make_optimizer(optimizer, model.parameters())
    for _ in range(steps):
        step(model, masks, opt, (x, y))
    if model.training != training:
        raise AssertionError("the model's train/eval mode changed")
    return torch.cat([(p.detach() != before[n]).reshape(-1) for n, p in params.items()])


def expected_moved(model: torch.nn.Module, masks: dict) -> torch.Tensor:
    """Frozen elements stay, every other one moves (weight decay moves even a zero-gradient
    element): the mask the cases expect, built from the masks alone."""
    return torch.cat([(~masks[n] if n in masks else torch.ones_like(p, dtype=torch.bool))
                      .reshape(-1) for n, p in model.named_parameters()])


def _short_call(record: dict) -> dict:
    """The case with its masks shown by shape and count, not printed in full."""
    shown = []
    for value in record["args"]:
        if isinstance(value, dict) and "__model__" not in value:
            value = "{" + ", ".join(f"{k!r}: <{int(m.sum())} of {m.numel()} frozen>"
                                    for k, m in value.items()) + "}"
            shown.append(value)
        else:
            shown.append(describe(value))
    record["call"] = f"{record['call'].split('(')[0]}({', '.join(shown)})"
    return record


def _step(hidden: bool) -> list[dict]:
    calls = [("MLP, SGD with momentum and weight decay, train mode", "mlp", 521, "sgd_momentum",
              (0.5, 0.75), 3, True),
             ("MLP, Adam with weight decay, train mode", "mlp", 522, "adam", (0.5, 0.5), 3, True)]
    if hidden:
        calls = [("Conv2d + Linear, SGD with momentum, train mode", "conv_linear", 523,
                  "sgd_momentum", (0.5, 0.875), 4, True),
                 ("Conv2d + Linear, Adam, eval mode", "conv_linear", 524, "adam",
                  (0.75, 0.5), 3, False),
                 ("MLP, AdamW (decoupled weight decay)", "mlp", 525, "adamw", (0.875, 0.5), 3,
                  True),
                 ("MLP, plain SGD with weight decay, one layer fully frozen", "mlp", 526, "sgd",
                  (1.0, 0.5), 2, True),
                 ("MLP, SGD with momentum, eval mode, many steps", "mlp", 527, "sgd_momentum",
                  (0.5, 0.5), 6, False)]
    cases = []
    for label, name, seed, optimizer, portions, steps, training in calls:
        masks = _fixture_masks(name, seed, portions)
        x, y = _fixture_batch(name, seed + 100)
        expected = expected_moved(build_fixture(name, seed), masks)
        got = run_steps(build_fixture(name, seed), masks, optimizer, steps, training, x, y)
        if not torch.equal(got, expected):
            raise AssertionError(f"inq_step case {label!r}: the library's run does not move "
                                 "exactly the free elements")
        cases.append(_short_call(case(
            "inq_step", label, "bool_tensor",
            [{"__model__": name, "seed": seed}, masks, optimizer, steps, training, x, y],
            expected)))
    return cases


def mlp_loss_float64(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                     training: bool) -> float:
    """Cross-entropy of the ``mlp`` fixture on ``(x, y)`` in float64, plain Python, fixed
    order (batch statistics in train mode, running statistics in eval mode), rounded once
    to float32."""
    s = {k: v.double().tolist() for k, v in model.state_dict().items()}
    w1, b1, w2, b2 = s["1.weight"], s["1.bias"], s["4.weight"], s["4.bias"]
    eps = model[2].eps
    rows = x.double().reshape(x.shape[0], -1).tolist()
    hidden = [[sum(w1[j][k] * r[k] for k in range(len(r))) + b1[j] for j in range(len(w1))]
              for r in rows]
    width, batch = len(w1), len(rows)
    if training:
        mean = [sum(h[j] for h in hidden) / batch for j in range(width)]
        var = [sum((h[j] - mean[j]) ** 2 for h in hidden) / batch for j in range(width)]
    else:
        mean, var = s["2.running_mean"], s["2.running_var"]
    total = 0.0
    for h, label in zip(hidden, y.tolist(), strict=True):
        a = [max(0.0, (h[j] - mean[j]) / math.sqrt(var[j] + eps) * s["2.weight"][j]
                 + s["2.bias"][j]) for j in range(width)]
        logits = [sum(w2[c][j] * a[j] for j in range(width)) + b2[c] for c in range(len(w2))]
        top = max(logits)
        total += top + math.log(sum(math.exp(v - top) for v in logits)) - logits[label]
    return f32(total / batch)


def _step_loss(hidden: bool) -> list[dict]:
    calls = [("the loss before the step, train mode", 531, "sgd_momentum", True)]
    if hidden:
        calls = [("the loss before the step, eval mode (running statistics)", 532, "adam",
                  False),
                 ("the loss before the step, train mode, Adam", 533, "adam", True)]
    cases = []
    for label, seed, optimizer, training in calls:
        masks = _fixture_masks("mlp", seed, (0.5, 0.5))
        x, y = _fixture_batch("mlp", seed + 100)
        model = build_fixture("mlp", seed)
        expected = mlp_loss_float64(model, x, y, training)
        model.train(training)
        library = inq_step(model, masks, make_optimizer(optimizer, model.parameters()), (x, y))
        if not math.isclose(library, expected, rel_tol=1e-5):
            raise AssertionError(f"inq_step loss case {label!r}: {library} vs {expected}")
        cases.append(_short_call(case(
            "inq_step_loss", label, "float",
            [{"__model__": "mlp", "seed": seed}, masks, optimizer, training, x, y],
            expected, rtol=1e-4)))
    return cases


# ----------------------------------------------------------------------------- encode_pow2
def _all_levels(n1: int, n2: int) -> torch.Tensor:
    values = [0.0] + [s * math.ldexp(1.0, n) for s in (1.0, -1.0) for n in range(n2, n1 + 1)]
    return torch.tensor(values, dtype=torch.float32)


def _encode(hidden: bool) -> list[dict]:
    w = uniform(541, (4, 5), -0.6, 0.6)
    n1, n2 = inq_exponents(w.abs().max().item(), 5)
    w3 = uniform(542, (8,), -1.0, 1.0)
    m1, m2 = inq_exponents(w3.abs().max().item(), 3)
    calls = [("a 5-bit quantized weight", quantize_pow2(w, n1, n2), n1, n2, 5),
             ("3 bits", quantize_pow2(w3, m1, m2), m1, m2, 3)]
    if hidden:
        conv = uniform(543, (2, 3, 3, 3), -1.0, 1.0)
        c1, c2 = inq_exponents(conv.abs().max().item(), 4)
        calls = [("every level once, 4 bits", _all_levels(1, -2), 1, -2, 4),
                 ("every level once, 2 bits", _all_levels(-3, -3), -3, -3, 2),
                 ("8 bits: 64 exponents, codes up to 128", _all_levels(3, -60), 3, -60, 8),
                 ("fewer exponents than the bits allow (n1 - n2 + 1 < 2^(b-2))",
                  _all_levels(0, -2), 0, -2, 5),
                 ("-0.0 is zero: code 0", torch.tensor([-0.0, 0.0, -1.0]), 0, -1, 3),
                 ("a Conv2d weight [2, 3, 3, 3]", quantize_pow2(conv, c1, c2), c1, c2, 4)]
    cases = [case("encode_pow2", label, "int_tensor", [wq, a, b, bits],
                  encode_pow2(wq, a, b, bits)) for label, wq, a, b, bits in calls]
    if hidden:
        cases += [case("encode_pow2", "0.3 is not a level: ValueError", "raises",
                       [torch.tensor([0.5, 0.3]), 0, -3, 4], "ValueError"),
                  case("encode_pow2", "2^(n1+1) is not a level: ValueError", "raises",
                       [torch.tensor([0.25, 2.0]), 0, -3, 4], "ValueError"),
                  case("encode_pow2", "2^(n2-1) is not a level: ValueError", "raises",
                       [torch.tensor([0.25, -0.0625]), 0, -3, 4], "ValueError")]
    return cases


# ----------------------------------------------------------------------------- shift_matvec
def _codes(seed: int, shape: tuple[int, int], n1: int, n2: int, bits: int) -> torch.Tensor:
    """Codes of random levels n2 ... n1 (zero included), drawn from ``seed``."""
    levels = _all_levels(n1, n2)
    index = integers(seed, shape, 0, levels.numel() - 1, torch.int64)
    return encode_pow2(levels[index], n1, n2, bits)


def _shift(hidden: bool) -> list[dict]:
    calls = [("int8 x [3, 8], 5-bit codes [4, 8]", integers(551, (3, 8), -128, 127, torch.int8),
              _codes(552, (4, 8), -1, -8, 5), -1, -8, 5)]
    if hidden:
        calls = [("a single row (matrix-vector), 4 bits",
                  integers(553, (1, 16), -128, 127, torch.int8), _codes(554, (5, 16), 0, -3, 4),
                  0, -3, 4),
                 ("int32 x with large values, 6 bits",
                  integers(555, (4, 10), -(2**20), 2**20, torch.int32),
                  _codes(556, (3, 10), 2, -13, 6), 2, -13, 6),
                 ("K = 1", integers(557, (3, 1), -128, 127, torch.int8),
                  _codes(558, (2, 1), -2, -5, 4), -2, -5, 4),
                 ("all-zero codes", integers(559, (2, 6), -128, 127, torch.int8),
                  torch.zeros(3, 6, dtype=torch.uint8), 0, -7, 5),
                 ("2 bits: n1 = n2, every weight 0 or ±2^n2",
                  integers(560, (3, 7), -128, 127, torch.int8), _codes(561, (4, 7), -4, -4, 2),
                  -4, -4, 2),
                 ("positive exponents (n2 > 0)", integers(562, (2, 9), -128, 127, torch.int8),
                  _codes(563, (3, 9), 4, 1, 4), 4, 1, 4)]
    return [case("shift_matvec", label, "int_tensor", [x, codes, n1, n2, bits],
                 shift_matvec_reference(x, codes, n1, n2, bits))
            for label, x, codes, n1, n2, bits in calls]


EXERCISES = {
    "inq_exponents": _exponents,
    "quantize_pow2": _quantize,
    "inq_partition": _partition,
    "inq_step": _step,
    "inq_step_loss": _step_loss,
    "encode_pow2": _encode,
    "shift_matvec": _shift,
}

WITHHELD = {
    "inq_exponents": ("course.methods.inq.levels:inq_exponents",),
    "quantize_pow2": ("course.methods.inq.levels:quantize_pow2",),
    "inq_partition": ("course.methods.inq.partition:inq_partition",),
    "inq_step": ("course.methods.inq.training:inq_step",),
    "inq_step_loss": ("course.methods.inq.training:inq_step",),
    "encode_pow2": ("course.kernels.pow2:encode_pow2",),
    "shift_matvec": ("course.kernels.pow2:shift_matvec",
                     "course.kernels.pow2:shift_matvec_reference"),
}
"""The library objects that compute each exercise's answer, withheld while grading
(``decode_pow2``, the inverse the issue provides, stays usable)."""


def build() -> dict[str, bytes]:
    """Visible and hidden reference files of lab05, as ``{path from repo root: bytes}``."""
    return reference_files(LAB, EXERCISES)
