"""course.landscape against independent references: filter norms and draw order by hand,
the quantized model from course.quant, losses from torch.func.functional_call over the whole
data at once, Hessians from torch.autograd.functional.hessian in float64 and from the closed
form of softmax regression."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from course import landscape
from course.grading.fixtures import build as fixture
from course.methods import direct


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _data(n, shape, classes, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g)


# ------------------------------------------------------------------ filter normalization
@pytest.mark.parametrize("name", ["mlp", "conv_linear", "conv_linear_dead_filter"])
def test_filters_have_the_norms_of_the_weights_and_1d_parameters_are_zero(name):
    model = fixture(name, 3)
    before = _state(model)
    d = landscape.filter_normalized_direction(model, torch.Generator().manual_seed(0))
    assert list(d) == [k for k, _ in model.named_parameters()]
    for key, p in model.named_parameters():
        assert d[key].shape == p.shape and d[key].dtype == p.dtype
        if p.dim() <= 1:
            assert torch.count_nonzero(d[key]) == 0
            continue
        for i in range(p.shape[0]):
            expected = float(np.linalg.norm(p[i].detach().double().numpy()))
            assert float(d[key][i].double().norm()) == pytest.approx(expected, rel=1e-5, abs=0)
    assert _same_state(before, _state(model))


def test_a_zero_filter_gets_zeros_and_the_others_keep_their_draws():
    model = fixture("conv_linear_dead_filter", 1)
    assert torch.count_nonzero(model[0].weight[1]) == 0
    d = landscape.filter_normalized_direction(model, torch.Generator().manual_seed(5))
    assert torch.count_nonzero(d["0.weight"][1]) == 0
    assert torch.count_nonzero(d["0.weight"][0]) == d["0.weight"][0].numel()


def test_one_draw_per_parameter_in_order_including_the_1d_ones():
    model = fixture("conv_linear", 2)
    g = torch.Generator().manual_seed(9)
    draws = {k: torch.randn(p.shape, generator=g) for k, p in model.named_parameters()}
    d = landscape.filter_normalized_direction(model, torch.Generator().manual_seed(9))
    for key, p in model.named_parameters():
        if p.dim() > 1:  # a positive rescaling of the same draw, filter by filter
            for i in range(p.shape[0]):
                a, b = d[key][i].reshape(-1), draws[key][i].reshape(-1)
                assert torch.allclose(a / a.norm(), b / b.norm(), atol=1e-6)


def test_direction_arguments_are_checked_by_name():
    with pytest.raises(TypeError, match="generator"):
        landscape.filter_normalized_direction(fixture("mlp", 1), 0)
    with pytest.raises(TypeError, match="model"):
        landscape.filter_normalized_direction("mlp", torch.Generator())
    with pytest.raises(ValueError, match="num_bits"):
        landscape.quantization_direction(fixture("mlp", 1), 1)


# ------------------------------------------------------------------ quantization step
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_one_quantization_step_is_the_directly_quantized_model(bits):
    model = fixture("conv_linear", 4)
    before = _state(model)
    step = landscape.quantization_direction(model, bits)
    assert _same_state(before, _state(model))
    moved = landscape.perturbed(model, step, 1.0).state_dict()
    quantized = direct.direct_quantize(model, bits, per_channel=True).state_dict()
    for key in quantized:
        assert torch.allclose(moved[key], quantized[key], rtol=0, atol=1e-6), key
    for key, p in model.named_parameters():
        if p.dim() <= 1:
            assert torch.count_nonzero(step[key]) == 0, key


# ------------------------------------------------------------------ perturbed
def test_perturbed_moves_parameters_only_and_leaves_the_input_alone():
    model = fixture("mlp", 6)
    before = _state(model)
    g = torch.Generator().manual_seed(0)
    d = {k: torch.randn(p.shape, generator=g) for k, p in model.named_parameters()}
    out = landscape.perturbed(model, d, -0.75)
    assert out is not model and _same_state(before, _state(model))
    params = dict(model.named_parameters())
    for key, value in out.state_dict().items():
        if key in params:
            expected = params[key].detach().double() - 0.75 * d[key].double()
            assert torch.allclose(value.double(), expected, atol=1e-6), key
        else:
            assert torch.equal(value, before[key]), key   # running statistics


def test_perturbed_names_a_missing_or_misshapen_direction():
    model = fixture("mlp", 7)
    d = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    with pytest.raises(KeyError, match=r"4\.bias"):
        landscape.perturbed(model, {k: v for k, v in d.items() if k != "4.bias"}, 1.0)
    with pytest.raises(ValueError, match=r"1\.weight"):
        landscape.perturbed(model, {**d, "1.weight": torch.zeros(2, 2)}, 1.0)
    with pytest.raises(ValueError, match="not a parameter"):
        landscape.perturbed(model, {**d, "extra": torch.zeros(1)}, 1.0)
    with pytest.raises(TypeError, match="alpha"):
        landscape.perturbed(model, d, "1")


# ------------------------------------------------------------------ losses
def _reference_losses(model, direction, alphas, x, y):
    """Per-sample mean over all the data at once, the parameters passed functionally."""
    model = copy.deepcopy(model).eval()
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = {k: b for k, b in model.named_buffers()}
    out = []
    with torch.no_grad():
        for a in alphas:
            moved = {k: v + a * direction[k] for k, v in params.items()}
            logits = functional_call(model, {**moved, **buffers}, (x,))
            out.append(float(F.cross_entropy(logits.double(), y)))
    return out


@pytest.mark.parametrize("name,shape,classes", [("mlp", (6,), 3), ("conv_linear", (2, 4, 4), 4)])
def test_loss_curve_is_the_mean_over_samples_in_eval_mode(name, shape, classes):
    model = fixture(name, 8).train()
    before = _state(model)
    x, y = _data(23, shape, classes, 1)
    g = torch.Generator().manual_seed(2)
    d = {k: 0.3 * torch.randn(p.shape, generator=g) for k, p in model.named_parameters()}
    alphas = [-1.0, 0.0, 0.5, 2.0]
    got = landscape.loss_curve(model, d, alphas, DataLoader(TensorDataset(x, y), batch_size=5))
    assert got == pytest.approx(_reference_losses(model, d, alphas, x, y), rel=1e-5)
    assert all(isinstance(v, float) for v in got)
    assert model.training and _same_state(before, _state(model))


def test_loss_surface_rows_are_betas_and_columns_alphas():
    model = fixture("mlp", 9)
    x, y = _data(12, (6,), 3, 3)
    g = torch.Generator().manual_seed(4)
    d1 = {k: torch.randn(p.shape, generator=g) for k, p in model.named_parameters()}
    d2 = {k: torch.randn(p.shape, generator=g) for k, p in model.named_parameters()}
    alphas, betas = [-0.5, 0.0, 0.5], [0.0, 1.0]
    surface = landscape.loss_surface(model, (d1, d2), alphas, betas, [(x, y)])
    assert surface.shape == (2, 3)
    for j, b in enumerate(betas):
        for i, a in enumerate(alphas):
            combined = landscape.combine([d1, d2], [a, b])
            expected = _reference_losses(model, combined, [1.0], x, y)[0]
            assert surface[j, i] == pytest.approx(expected, rel=1e-5)


def test_loss_and_accuracy_counts_every_sample():
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    loss, accuracy = landscape.loss_and_accuracy(model, DataLoader(TensorDataset(x, y), 2))
    assert accuracy == pytest.approx(2 / 3)
    with torch.no_grad():
        assert loss == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)
    with pytest.raises(ValueError, match="no samples"):
        landscape.loss_and_accuracy(model, [])


# ------------------------------------------------------------------ geometry
def test_plane_coordinates_recover_a_point_of_the_plane_and_measure_what_is_outside():
    g = torch.Generator().manual_seed(0)
    e1 = {"w": torch.randn(5, 4, generator=g)}
    e2 = {"w": torch.randn(5, 4, generator=g)}
    inside = {"w": 0.25 * e1["w"] - 1.5 * e2["w"]}
    a, b, outside = landscape.plane_coordinates(inside, (e1, e2))
    assert (a, b) == pytest.approx((0.25, -1.5), abs=1e-6) and outside < 1e-6
    flat = torch.stack([e1["w"].reshape(-1), e2["w"].reshape(-1)]).double()
    q, _ = torch.linalg.qr(flat.T)
    normal = torch.randn(20, generator=g, dtype=torch.float64)
    normal -= q @ (q.T @ normal)
    a, b, outside = landscape.plane_coordinates({"w": normal.reshape(5, 4)}, (e1, e2))
    assert outside == pytest.approx(1.0, abs=1e-6) and abs(a) < 1e-6 and abs(b) < 1e-6


# ------------------------------------------------------------------ Hessian
def _autograd_top_eigenvalue(model, x, y) -> float:
    """The exact Hessian of the mean cross-entropy in float64 (torch.autograd.functional)."""
    model = copy.deepcopy(model).double().eval()
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(vector):
        parts = dict(zip(names, (t.reshape(s) for t, s in
                                 zip(torch.split(vector, sizes), shapes, strict=True)),
                         strict=True))
        return F.cross_entropy(functional_call(model, parts, (x.double(),)), y)

    hessian = torch.autograd.functional.hessian(loss, flat)
    values = torch.linalg.eigvalsh(hessian)
    return float(values[torch.argmax(values.abs())])


@pytest.mark.parametrize("name,seed", [("linear", 1), ("linear", 2), ("dropout_linear", 3),
                                       ("linear_no_bias", 4)])
def test_power_iteration_finds_the_top_eigenvalue_of_softmax_regression(name, seed):
    from autograder.cases.lab06_dangers_of_quantization import (
        closed_form_hessian,
        top_eigenvalues,
    )

    model = fixture(name, seed).train()      # dropout must be switched off: eval mode
    x, y = _data(10, (4,), 3, seed)
    exact = _autograd_top_eigenvalue(model, x, y)
    assert top_eigenvalues(closed_form_hessian(model, x))[0] == pytest.approx(exact, rel=1e-9)
    before = _state(model)
    got = landscape.top_hessian_eigenvalue(model, (x, y), 100, torch.Generator().manual_seed(0))
    assert got == pytest.approx(exact, rel=1e-4)
    assert model.training and _same_state(before, _state(model))


def test_hessian_at_zero_weights_is_exact():
    model = fixture("linear_at_zero", 0)
    x = torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0]))
    y = torch.tensor([0, 1, 2, 0])
    got = landscape.top_hessian_eigenvalue(model, (x, y), 30, torch.Generator().manual_seed(1))
    assert got == pytest.approx(4 / (4 * 3), rel=1e-5)


def test_hessian_of_a_two_layer_network_matches_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = _data(16, (3,), 3, 5)
    exact = _autograd_top_eigenvalue(model, x, y)
    got = landscape.top_hessian_eigenvalue(model, (x, y), 300, torch.Generator().manual_seed(2))
    assert got == pytest.approx(exact, rel=1e-3)


def test_hessian_arguments_are_checked_by_name():
    model = fixture("linear", 0)
    x, y = _data(4, (4,), 3, 0)
    with pytest.raises(ValueError, match="iters"):
        landscape.top_hessian_eigenvalue(model, (x, y), 0, torch.Generator())
    with pytest.raises(TypeError, match="batch"):
        landscape.top_hessian_eigenvalue(model, x, 3, torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        landscape.top_hessian_eigenvalue(model, (x, y), 3, None)
