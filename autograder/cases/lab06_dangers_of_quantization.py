"""Reference cases of lab06 (the dangers of quantization): directions, losses, sharpness.

Every expected value is computed so that the file is the same on every CPU:

- ``filter_normalized_direction``: the Gaussian draws are replayed in float64 from the
  generator's exact uniform numbers (``_torch_randn``: ``torch.randn`` itself differs in the
  last bit between CPUs), the filter norms summed with ``math.fsum``, each value rounded
  once to float32; compared with a relative tolerance of 1e-5.
- ``quantization_direction``: float32 elementwise arithmetic (exact IEEE operations, the same
  everywhere), with the results of other valid roundings as alternatives.
- ``perturbed``: ``theta + alpha * d`` in float64, rounded once to float32.
- ``loss_curve``: the library's ``loss_curve`` on a float64 copy of the model and the data,
  rounded once to float32; compared with a tolerance.
- ``top_hessian_eigenvalue``: the closed form. For softmax regression ``z = W x + b`` the
  Hessian of the mean cross-entropy with respect to ``(W, b)`` is
  ``(1/N) sum_i (diag(p_i) - p_i p_i^T) kron [x_i; 1][x_i; 1]^T`` (it does not depend on the
  labels); its largest eigenvalue in float64, rounded once to float32. At ``W = 0`` without
  a bias, with inputs ``x_i = c_i e_i``, it is exactly ``max_i c_i^2 / (N C)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from autograder.cases._build import case, distinct, integers, reference_files, uniform
from autograder.cases._torch_randn import RandnReplay, f32
from autograder.cases.lab01_direct_quantization import _per_channel_variants
from course import landscape, quant
from course.grading.fixtures import build as build_fixture

LAB = "lab06_dangers_of_quantization"
DIRECTION_RTOL = 1e-5
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6
HESSIAN_RTOL = 1e-3
"""Power iteration in float32 after the case's ``iters`` steps: the library lands within a
tenth of this (``_hessian`` checks it while building)."""
INPUT_SHAPES = {"mlp": (6,), "mlp_dead_units": (6,), "conv_linear": (2, 4, 4),
                "conv_linear_dead_filter": (2, 4, 4)}
CLASSES = {"mlp": 3, "mlp_dead_units": 3, "conv_linear": 4, "conv_linear_dead_filter": 4}
BUFFER_NOTE = ("batch-norm running statistics are buffers, not parameters: only "
               "named_parameters() move")


def _fixture(name: str, seed: int) -> dict:
    return {"__model__": name, "seed": seed}


def _f32_tensor(values64: torch.Tensor) -> torch.Tensor:
    return values64.to(torch.float32)


# ------------------------------------------------------------------ filter_normalized_direction
def expected_direction(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The filter-normalized direction of ``model`` for ``Generator().manual_seed(seed)``,
    computed in float64 from the replayed draws (see the module doc)."""
    replay = RandnReplay(seed)
    out = {}
    for key, p in model.named_parameters():
        d = replay.randn(p.shape)
        if p.dim() <= 1:
            out[key] = torch.zeros(p.shape, dtype=torch.float32)
            continue
        theta = p.detach().to(torch.float64)
        rows = []
        for i in range(p.shape[0]):
            t_row, d_row = theta[i].reshape(-1).tolist(), d[i].reshape(-1).tolist()
            t_norm = math.sqrt(math.fsum(v * v for v in t_row))
            d_norm = math.sqrt(math.fsum(v * v for v in d_row))
            factor = t_norm / d_norm if t_norm > 0 else 0.0
            rows.append([f32(v * factor) for v in d_row])
        out[key] = torch.tensor(rows, dtype=torch.float32).reshape(p.shape)
    return out


def _direction(hidden: bool) -> list[dict]:
    calls = [("Linear + BatchNorm1d MLP", "mlp", 1, 0),
             ("Conv2d + BatchNorm2d + Linear", "conv_linear", 2, 1)]
    if hidden:
        calls = [
            ("MLP, another generator seed", "mlp", 3, 7),
            ("a conv filter of zeros gets zeros", "conv_linear_dead_filter", 4, 2),
            ("Linear rows of zeros get zeros", "mlp_dead_units", 5, 3),
            ("softmax regression: every draw under 16 values", "linear", 6, 4),
            ("conv network, another generator seed", "conv_linear", 7, 12345),
        ]
    cases = []
    for label, name, model_seed, gen_seed in calls:
        expected = expected_direction(build_fixture(name, model_seed), gen_seed)
        cases.append(case("filter_normalized_direction", label, "tensor_dict",
                          [_fixture(name, model_seed), gen_seed], expected,
                          rtol=DIRECTION_RTOL, unchanged=True))
    return cases


# ------------------------------------------------------------------ quantization_direction
def _quantization(hidden: bool) -> list[dict]:
    calls = [("MLP, 4 bits", "mlp", 11, 4), ("conv network, 8 bits", "conv_linear", 12, 8)]
    if hidden:
        calls = [("MLP, 2 bits: three levels", "mlp", 13, 2),
                 ("conv network, 3 bits", "conv_linear", 14, 3),
                 ("a channel of zeros stays at zero", "conv_linear_dead_filter", 15, 4),
                 ("no bias", "linear_no_bias", 16, 5)]
    cases = []
    for label, name, seed, bits in calls:
        model = build_fixture(name, seed)
        weights = {id(m.weight) for m in model.modules()
                   if isinstance(m, landscape.QUANTIZED_LAYERS)}
        expected, alternatives = {}, {}
        for key, p in model.named_parameters():
            w = p.detach()
            if id(p) not in weights:
                expected[key] = torch.zeros_like(w)
                continue
            expected[key] = quant.fake_quantize_per_channel(w, bits, axis=0) - w
            variants = [v - w for v in _per_channel_variants(w, bits, 0)]
            others = distinct(expected[key], variants)
            if others:
                alternatives[key] = others
        cases.append(case("quantization_direction", label, "tensor_dict",
                          [_fixture(name, seed), bits], expected, alternatives=alternatives,
                          unchanged=True))
    if hidden:
        cases.append(case("quantization_direction", "1 bit is an error", "raises",
                          [_fixture("mlp", 17), 1], "ValueError"))
    return cases


# ------------------------------------------------------------------ perturbed
def _random_direction(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    return {key: uniform(seed + i, tuple(p.shape))
            for i, (key, p) in enumerate(model.named_parameters())}


def _perturbed(hidden: bool) -> list[dict]:
    calls = [("MLP, alpha = 0.5", "mlp", 21, 0.5)]
    if hidden:
        calls = [("conv network, alpha = -1.25", "conv_linear", 22, -1.25),
                 ("alpha = 0: an equal copy", "mlp", 23, 0.0),
                 ("MLP, alpha = 2", "mlp", 24, 2.0)]
    cases = []
    for label, name, seed, alpha in calls:
        model = build_fixture(name, seed)
        direction = _random_direction(model, 100 + seed)
        params = dict(model.named_parameters())
        expected = {}
        for key, value in model.state_dict().items():
            if key in params:
                moved = value.double() + alpha * direction[key].double()
                expected[key] = _f32_tensor(moved)
            else:
                expected[key] = value.detach().clone()
        cases.append(case("perturbed", label, "model", [_fixture(name, seed), direction, alpha],
                          expected, quantized=sorted(params), untouched_note=BUFFER_NOTE))
    if hidden:
        model = build_fixture("mlp", 25)
        direction = _random_direction(model, 125)
        missing = {k: v for k, v in direction.items() if k != "4.bias"}
        cases.append(case("perturbed", "a missing direction: KeyError naming '4.bias'",
                          "raises", [_fixture("mlp", 25), missing, 1.0], "KeyError",
                          message_names=["4.bias"]))
        wrong = dict(direction)
        wrong["1.weight"] = uniform(126, (6, 5))
        cases.append(case("perturbed", "a direction of the wrong shape: ValueError naming "
                          "'1.weight'", "raises", [_fixture("mlp", 25), wrong, 1.0],
                          "ValueError", message_names=["1.weight"]))
    return cases


# ------------------------------------------------------------------ loss_curve
def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def expected_losses(name: str, seed: int, direction: dict, alphas: list[float],
                    x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[float]:
    """The library's loss curve in float64 (model, direction and data), each value rounded
    once to float32."""
    model = build_fixture(name, seed).double()
    direction64 = {k: v.double() for k, v in direction.items()}
    losses = landscape.loss_curve(model, direction64, alphas, _loader(x.double(), y, batch_size))
    return [f32(v) for v in losses]


def _batch_mean_of_means(name, seed, direction, alpha, x, y, batch_size) -> float:
    model = landscape.perturbed(build_fixture(name, seed).double(),
                                {k: v.double() for k, v in direction.items()}, alpha)
    with torch.no_grad():
        means = [torch.nn.functional.cross_entropy(model(xb.double()), yb).item()
                 for xb, yb in _loader(x, y, batch_size)]
    return sum(means) / len(means)


def _loss_curve(hidden: bool) -> list[dict]:
    calls = [("MLP, 10 samples in batches of 4", "mlp", 31, [0.0, 0.5, 1.0], 10, 4, False)]
    if hidden:
        calls = [
            ("conv network, 7 samples in batches of 3", "conv_linear", 32, [-1.0, 0.0, 0.25],
             7, 3, False),
            ("MLP, 33 samples in batches of 8: the mean over samples, not over batches",
             "mlp", 33, [0.0, 0.75, 1.5, -0.5], 33, 8, False),
            ("only biases and batch-norm parameters move", "mlp", 34, [1.0, -2.0], 12, 5,
             True),
            ("one alpha, one batch", "conv_linear", 35, [0.5], 5, 16, False),
        ]
    cases = []
    for label, name, seed, alphas, n, batch_size, only_1d in calls:
        model = build_fixture(name, seed)
        direction = _random_direction(model, 200 + seed)
        if only_1d:
            direction = {k: v if v.dim() <= 1 else torch.zeros_like(v)
                         for k, v in direction.items()}
        x = uniform(300 + seed, (n, *INPUT_SHAPES[name]), -2.0, 2.0)
        y = integers(400 + seed, (n,), 0, CLASSES[name] - 1, torch.int64)
        expected = expected_losses(name, seed, direction, alphas, x, y, batch_size)
        if n > batch_size and n % batch_size:  # uneven batches: a mean of means differs
            wrong = _batch_mean_of_means(name, seed, direction, alphas[-1], x, y, batch_size)
            assert abs(wrong - expected[-1]) > 100 * LOSS_RTOL * abs(expected[-1]), label
        cases.append(case("loss_curve", label, "float_list",
                          [_fixture(name, seed), direction, alphas, x, y, batch_size],
                          expected, labels=[f"alpha = {a:g}" for a in alphas],
                          rtol=LOSS_RTOL, atol=LOSS_ATOL, unchanged=True))
    return cases


# ------------------------------------------------------------------ top_hessian_eigenvalue
def closed_form_hessian(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """The Hessian of the mean cross-entropy of softmax regression (the model's one Linear
    layer) with respect to its weight and bias, in float64 (see the module doc)."""
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    w = linear.weight.detach().double().numpy()
    b = (linear.bias.detach().double().numpy() if linear.bias is not None
         else np.zeros(w.shape[0]))
    xs = x.double().numpy().reshape(x.shape[0], -1)
    size = w.size + (w.shape[0] if linear.bias is not None else 0)
    hessian = np.zeros((size, size))
    for xi in xs:
        z = w @ xi + b
        p = np.exp(z - z.max())
        p /= p.sum()
        s = np.diag(p) - np.outer(p, p)
        feats = np.append(xi, 1.0) if linear.bias is not None else xi
        block = np.kron(s, np.outer(feats, feats))   # (class, feature) order, weight + bias
        if linear.bias is None:
            hessian += block
            continue
        d, c = xi.size, w.shape[0]
        # reorder (class, [x; 1]) into [weight (class, x) ..., bias (class)]
        order = [k * (d + 1) + j for k in range(c) for j in range(d)] + \
                [k * (d + 1) + d for k in range(c)]
        hessian += block[np.ix_(order, order)]
    return hessian / xs.shape[0]


def top_eigenvalues(hessian: np.ndarray) -> tuple[float, float]:
    """The largest eigenvalue of a symmetric matrix and the next *different* one (float64):
    their ratio sets how fast power iteration converges."""
    values = np.linalg.eigvalsh(hessian)
    top = float(values[-1])
    others = [float(v) for v in values if v < top * (1 - 1e-9)]
    return top, max(others, key=abs)


def _hessian(hidden: bool) -> list[dict]:
    scaled = torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0]))
    calls = [("softmax regression at W = 0: max c_i^2 / (N C) = 1/3", "linear_at_zero", 41,
              scaled, 30, 0),
             ("softmax regression, weight and bias", "linear", 42, None, 60, 1)]
    if hidden:
        scaled3 = torch.diag(torch.tensor([1.0, 3.0, 1.0, 2.0]))
        calls = [
            ("given in train mode: a dropout layer must be off", "dropout_linear", 43, None,
             60, 2),
            ("softmax regression at W = 0, other scales: 9/12", "linear_at_zero", 44,
             scaled3, 30, 3),
            ("softmax regression, 16 samples", "linear", 45, None, 60, 4),
            ("softmax regression, large inputs", "linear", 46, "large", 60, 5),
        ]
    cases = []
    for label, name, seed, inputs, iters, gen_seed in calls:
        model = build_fixture(name, seed)
        if inputs is None:
            x = uniform(500 + seed, (16 if "16" in label else 8, 4), -1.0, 1.0)
        elif isinstance(inputs, str):
            x = uniform(500 + seed, (8, 4), -3.0, 3.0)
        else:
            x = inputs
        y = integers(600 + seed, (x.shape[0],), 0, 2, torch.int64)
        top, second = top_eigenvalues(closed_form_hessian(model, x))
        expected = f32(top)
        got = landscape.top_hessian_eigenvalue(model, (x, y), iters,
                                               torch.Generator().manual_seed(gen_seed))
        assert abs(got - expected) <= HESSIAN_RTOL / 10 * abs(expected), (label, got, expected)
        assert abs(second) < 0.8 * abs(top), label
        cases.append(case("top_hessian_eigenvalue", label, "float",
                          [_fixture(name, seed), x, y, iters, gen_seed], expected,
                          rtol=HESSIAN_RTOL, unchanged=True))
    return cases


EXERCISES = {
    "filter_normalized_direction": _direction,
    "quantization_direction": _quantization,
    "perturbed": _perturbed,
    "loss_curve": _loss_curve,
    "top_hessian_eigenvalue": _hessian,
}

WITHHELD = {
    "filter_normalized_direction": ("course.landscape:filter_normalized_direction",),
    "quantization_direction": ("course.landscape:quantization_direction",),
    "perturbed": ("course.landscape:perturbed", "course.landscape:_set_weights"),
    "loss_curve": ("course.landscape:loss_curve", "course.landscape:loss_surface"),
    "top_hessian_eigenvalue": ("course.landscape:top_hessian_eigenvalue",),
}
"""The library objects that compute each exercise's answer, withheld while grading
(``loss_and_accuracy`` stays usable: a ``loss_curve`` is more than one evaluation)."""


def build() -> dict[str, bytes]:
    """Visible and hidden reference files of lab06, as ``{path from repo root: bytes}``."""
    return reference_files(LAB, EXERCISES)
