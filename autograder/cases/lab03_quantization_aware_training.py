"""Reference cases of lab03 (quantization-aware training), computed by the library.

The exercises are an autograd Function (checked through its forward values and its input
gradient), an activation fake quantizer module (checked through the outputs of a sequence
of training- and eval-mode calls) and batch-norm folding (checked as a model: the folded
layer's weight and bias).
"""

from __future__ import annotations

import torch

from autograder.cases._build import case, distinct, quantize_variants, reference_files, uniform
from course import quant
from course.grading.fixtures import build as build_fixture
from course.grading.outcome import geometry
from course.nn.fake_quant import FakeQuantize
from course.nn.folding import fold_batch_norm
from course.quant.ste import clipping_range, fake_quantize_ste

LAB = "lab03_quantization_aware_training"
AVERAGING = 0.01
"""Moving-average constant of the activation quantizer (the library's default)."""

BIAS_NOTE = ("the layer has no bias, the folded one must have one: b' = (0 - mean) * "
             "gamma / sqrt(var + eps) + beta")
EDGE_NOTE = "x lies on the edge of the clipping range [{lo:g}, {hi:g}]: the edges are inside"


def _ste_inputs(hidden: bool) -> list[tuple]:
    if not hidden:
        return [("4-bit unsigned, zero point 3", uniform(81, (10,), -1.0, 3.0), 0.2, 3, 0, 15),
                ("8-bit signed", uniform(82, (3, 4), -2.0, 2.0), 0.01, 0, -128, 127),
                ("the clipping edges themselves pass the gradient (edges included)",
                 torch.tensor([-2.0, -2.5, 1.75, 2.0]), 0.25, 0, -8, 7)]
    edges = torch.tensor([-4.0, -4.25, 3.5, 3.75, 0.0, -3.999, 3.501])
    return [
        ("exactly on the clipping edges", edges, 0.5, 0, -8, 7),
        ("everything clipped", uniform(83, (6,), 5.0, 9.0), 0.1, 0, -8, 7),
        ("2 bits with a zero point", uniform(84, (4, 5), -1.0, 1.0), 0.25, 2, 0, 3),
        ("per-channel scales", uniform(85, (3, 6), -1.0, 1.0),
         torch.tensor([[0.05], [0.2], [0.01]]), 0, -7, 7),
        ("exact ties inside the range: round half to even",
         torch.tensor([0.25, 0.75, -0.25, -0.75, 1.25, -1.25, 2.25, 0.0]), 0.5, 0, -8, 7),
    ]


def _forward(hidden: bool) -> list[dict]:
    cases = []
    for label, x, s, z, qmin, qmax in _ste_inputs(hidden):
        expected = fake_quantize_ste(x, s, z, qmin, qmax)
        scale = torch.as_tensor(s, dtype=torch.float64)
        variants = [((q - z).double() * scale).to(torch.float32)
                    for q in quantize_variants(x, s, z, qmin, qmax)]
        cases.append(case("ste_forward", label, "float_tensor", [x, s, z, qmin, qmax],
                          expected, alternatives=distinct(expected, variants)))
    return cases


def _backward(hidden: bool) -> list[dict]:
    cases = []
    for i, (label, x, s, z, qmin, qmax) in enumerate(_ste_inputs(hidden)):
        grad = uniform(90 + i + 10 * hidden, tuple(x.shape), -1.0, 1.0)
        leaf = x.clone().requires_grad_(True)
        fake_quantize_ste(leaf, s, z, qmin, qmax).backward(grad)
        lo, hi = clipping_range(s, z, qmin, qmax)
        notes = {}
        if isinstance(s, float):
            for j, v in enumerate(x.reshape(-1).tolist()):
                if v in (lo, hi):
                    notes[str(j)] = EDGE_NOTE.format(lo=lo, hi=hi)
        cases.append(case("ste_backward", label, "float_tensor", [x, s, z, qmin, qmax, grad],
                          leaf.grad.clone(), notes=notes))
    return cases


def run_activation_quantizer(module: torch.nn.Module, batches: list[torch.Tensor],
                             training: list[bool]) -> torch.Tensor:
    """Feed ``batches`` to ``module`` in training / eval mode as listed; the outputs,
    flattened and concatenated (what the lab's test cell does with the student's module)."""
    outs = []
    for x, flag in zip(batches, training, strict=True):
        module.train(flag)
        outs.append(module(x).detach().reshape(-1))
    return torch.cat(outs)


def _moving_average_f32(batches, training, bits) -> torch.Tensor:
    """Another valid implementation: running min/max kept as float32 tensors."""
    lo = hi = None
    outs = []
    for x, flag in zip(batches, training, strict=True):
        if flag:
            bmin, bmax = x.min(), x.max()
            if lo is None:
                lo, hi = bmin, bmax
            else:
                lo, hi = lo + AVERAGING * (bmin - lo), hi + AVERAGING * (bmax - hi)
        scale, zp = quant.affine_qparams(float(lo), float(hi), bits)
        q = torch.clamp(torch.round(x / scale) + zp, 0, 2**bits - 1)
        outs.append(((q - zp) * scale).reshape(-1))
    return torch.cat(outs)


def _activation(hidden: bool) -> list[dict]:
    calls = [("train, train, eval", 4, [(8,), (8,), (8,)], [True, True, False], 1.0)]
    if hidden:
        calls = [
            ("eval calls do not move the range", 3, [(6,), (6,), (6,), (6,)],
             [True, False, True, False], 2.0),
            ("a shifted batch moves the range by 1% only", 8, [(5, 4), (5, 4)],
             [True, True], 10.0),
            ("2 bits", 2, [(10,), (10,)], [True, False], 1.0),
            ("all-positive activations (after ReLU)", 5, [(12,), (12,), (12,)],
             [True, True, False], -1.0),
        ]
    cases = []
    for i, (label, bits, shapes, training, shift) in enumerate(calls):
        seed = 100 + 10 * i + 50 * hidden
        batches = [uniform(seed + j, shape, -1.0, 1.0) for j, shape in enumerate(shapes)]
        if shift > 0:
            batches[-1] = batches[-1] * shift
        else:
            batches = [b.abs() for b in batches]
        module = FakeQuantize.for_activations(bits, observer="moving_average")
        expected = run_activation_quantizer(module, batches, training)
        alternatives = distinct(expected, [_moving_average_f32(batches, training, bits)])
        cases.append(case("activation_fake_quant", label, "float_tensor",
                          [batches, training, bits], expected, alternatives=alternatives))
    return cases


def run_activation_gradient(module: torch.nn.Module, batches: list[torch.Tensor],
                            training: list[bool]) -> torch.Tensor:
    """The gradient of ``module(x).sum()`` with respect to each batch ``x``, fed in training /
    eval mode as listed, flattened and concatenated (what the lab's test cell does)."""
    grads = []
    for x, flag in zip(batches, training, strict=True):
        module.train(flag)
        leaf = x.clone().requires_grad_(True)
        module(leaf).sum().backward()
        grads.append(leaf.grad.reshape(-1))
    return torch.cat(grads)


def _activation_gradient(hidden: bool) -> list[dict]:
    """Inputs whose qparams are exact in float32 and float64 (scale 1 or 0.25), so that which
    values lie inside the clipping range — the edges included — has one answer."""
    t = torch.tensor
    calls = [("the STE passes the gradient inside the range (edges included), 0 outside", 2,
              [t([-1.5, -0.5, 0.25, 1.0, 1.5, -1.0]), t([-3.0, -2.0, 0.9, 1.0, 1.2, 5.0])],
              [True, False])]
    if hidden:
        calls = [
            ("2 bits: range [-2, 1] after the first batch, then moved by a training batch", 2,
             [t([-1.5, -0.5, 0.25, 1.0, 1.5, -1.0]), t([-3.0, -2.0, 0.9, 1.0, 1.2, 5.0]),
              t([-4.0, 0.0, 0.5, 3.0]), t([-2.5, -1.9, 0.0, 0.95, 1.1])],
             [True, False, True, False]),
            ("4 bits: both ends of the first batch lie on the edges of its range", 4,
             [t([-0.75, 3.0, 1.1, 0.0, 2.0]), t([-0.75, -0.8, 3.0, 3.01, 2.0, -2.0, 3.5])],
             [True, False]),
        ]
    cases = []
    for label, bits, batches, training in calls:
        module = FakeQuantize.for_activations(bits, observer="moving_average")
        expected = run_activation_gradient(module, batches, training)
        cases.append(case("activation_fake_quant_grad", label, "float_tensor",
                          [batches, training, bits], expected))
    return cases


def _fold(hidden: bool) -> list[dict]:
    calls = [("Conv2d + BatchNorm2d", "conv_linear", 1, 0),
             ("Linear + BatchNorm1d", "mlp", 2, 1)]
    if hidden:
        calls = [("Conv2d + BatchNorm2d, other statistics", "conv_linear", 3, 0),
                 ("Linear + BatchNorm1d, other statistics", "mlp", 4, 1),
                 ("Conv2d + BatchNorm2d, a third model", "conv_linear", 5, 0),
                 ("a Conv2d without bias: the folded layer has one", "conv_nobias", 6, 0),
                 ("a Linear without bias: the folded layer has one", "mlp_nobias", 7, 1),
                 ("a Conv2d with stride 2 and padding 1: the same geometry", "conv_strided", 8,
                  0)]
    cases = []
    for label, name, seed, index in calls:
        model = build_fixture(name, seed)
        folded = fold_batch_norm(model[index], model[index + 1])
        expected = {k: v.detach().clone() for k, v in folded.state_dict().items()}
        note = BIAS_NOTE if model[index].bias is None else None
        cases.append(case("fold_batch_norm", label, "model",
                          [{"__model__": name, "seed": seed}, index], expected,
                          quantized=sorted(expected), rtol=1e-5, note=note,
                          geometry=geometry(folded) if hidden else None))
    return cases


EXERCISES = {
    "ste_forward": _forward,
    "ste_backward": _backward,
    "activation_fake_quant": _activation,
    "activation_fake_quant_grad": _activation_gradient,
    "fold_batch_norm": _fold,
}


# The library's objects that compute each exercise's answer (functions, classes — every
# function in their body —, methods, and the helpers they call to do it): withheld in the
# grading copy of `course` (autograder/pipeline/withheld.py);
# tests/autograder/pipeline/test_withheld.py checks that each one, and every alias of it,
# raises "withheld while grading" in the sandbox.
WITHHELD = {
    "ste_forward": ("course.quant.ste:FakeQuantizeSTE", "course.quant.ste:fake_quantize_ste",
                    "course.nn.integer:fake_quantize_codes"),
    "ste_backward": ("course.quant.ste:FakeQuantizeSTE", "course.quant.ste:fake_quantize_ste"),
    "activation_fake_quant": ("course.nn.fake_quant:FakeQuantize",
                              "course.observe.observers:MovingAverageMinMaxObserver.update",
                              "course.observe.observers:MovingAverageMinMaxObserver.range"),
    "activation_fake_quant_grad": ("course.nn.fake_quant:FakeQuantize",
                                   "course.quant.ste:FakeQuantizeSTE"),
    "fold_batch_norm": ("course.nn.folding:fold_batch_norm", "course.methods.qat.layers:fold_scale",
                        "course.methods.qat.layers:folded_parameters",
                        "course.methods.qat.layers:_QATLayer.folded_parameters"),
}

def build() -> dict[str, bytes]:
    """Visible and hidden reference files of lab03, as ``{path from repo root: bytes}``."""
    return reference_files(LAB, EXERCISES)
