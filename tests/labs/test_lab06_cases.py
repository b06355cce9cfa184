"""lab06's reference cases: the library passes them, other valid implementations pass them,
the mistakes the lab warns about fail with a message that says so; the float64 replay of
torch.randn agrees with torch.randn; the files are what the case module builds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from autograder.cases import lab06_dangers_of_quantization as lab06
from autograder.cases._torch_randn import RandnReplay
from course import landscape, quant
from course.grading import Mismatch, check, load_cases

LAB = lab06.LAB
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- wrappers, as the test cells
def _direction(fn):
    return lambda model, seed: fn(model, torch.Generator().manual_seed(seed))


def _loss_curve(fn):
    def run(model, direction, alphas, x, y, batch_size):
        model.train()
        return fn(model, direction, alphas, DataLoader(TensorDataset(x, y), batch_size))
    return run


def _hessian(fn):
    def run(model, x, y, iters, seed):
        model.train()
        return fn(model, (x, y), iters, torch.Generator().manual_seed(seed))
    return run


LIBRARY = {
    "filter_normalized_direction": _direction(landscape.filter_normalized_direction),
    "quantization_direction": landscape.quantization_direction,
    "perturbed": landscape.perturbed,
    "loss_curve": _loss_curve(landscape.loss_curve),
    "top_hessian_eigenvalue": _hessian(landscape.top_hessian_eigenvalue),
}


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_passes_its_own_references(name, hidden):
    assert check(LAB, name, LIBRARY[name], hidden=hidden) is None


def test_every_exercise_has_visible_and_hidden_cases():
    for hidden in (False, True):
        assert sorted(load_cases(LAB, hidden)) == sorted(lab06.EXERCISES)


def test_reference_files_are_what_the_case_module_builds():
    for path, data in lab06.build().items():
        assert (ROOT / path).read_bytes() == data, f"{path} is stale: run make references"


# ---------------------------------------------------------------- torch.randn, replayed
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_the_float64_replay_is_torch_randn_to_a_few_units_in_the_last_place(seed):
    generator, replay = torch.Generator().manual_seed(seed), RandnReplay(seed)
    for shape in [(5,), (3,), (6, 5), (16,), (17,), (1,), (4, 3, 3, 2), (7,), (33,), (12,),
                  (250,), (2,)]:
        got = torch.randn(shape, generator=generator).double()
        expected = replay.randn(shape)
        assert got.shape == expected.shape
        ulp = torch.finfo(torch.float32).eps * expected.abs().clamp(min=2**-10)
        assert ((got - expected).abs() <= 4 * ulp).all(), shape


# ---------------------------------------------------------------- valid alternatives pass
def direction_flat_norms(model, generator):
    """Norms by torch.linalg.vector_norm over each filter, the draws made in float64 math."""
    out = {}
    for name, p in model.named_parameters():
        d = torch.randn(p.shape, generator=generator)
        if p.dim() <= 1:
            out[name] = torch.zeros_like(p)
            continue
        rows = []
        for i in range(p.shape[0]):
            t = torch.linalg.vector_norm(p[i].detach().double())
            n = torch.linalg.vector_norm(d[i].double())
            rows.append((d[i].double() * (t / n if t > 0 else 0.0)).float())
        out[name] = torch.stack(rows)
    return out


def loss_curve_functional(model, direction, alphas, loader):
    from torch.func import functional_call

    model = copy.deepcopy(model).eval()
    out = []
    with torch.no_grad():
        for a in alphas:
            params = {k: p + a * direction[k] for k, p in model.named_parameters()}
            total = count = 0
            for x, y in loader:
                logits = functional_call(model, {**params, **dict(model.named_buffers())}, (x,))
                total += F.cross_entropy(logits, y, reduction="none").sum().item()
                count += len(y)
            out.append(total / count)
    return out


def hessian_flat_start(model, batch, iters, generator):
    """Another valid power iteration: one flat start vector, 2 x the iterations."""
    net = copy.deepcopy(model).eval()
    params = list(net.parameters())
    grads = torch.autograd.grad(F.cross_entropy(net(batch[0]), batch[1]), params,
                                create_graph=True)
    flat = torch.randn(sum(p.numel() for p in params), generator=generator)
    v = list(torch.split(flat / flat.norm(), [p.numel() for p in params]))
    v = [t.reshape(p.shape) for t, p in zip(v, params, strict=True)]
    lam = 0.0
    for _ in range(2 * iters):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        lam = sum((a * b).sum() for a, b in zip(v, hv, strict=True)).item()
        norm = torch.sqrt(sum((h * h).sum() for h in hv))
        v = [h / norm for h in hv]
    return lam


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
def test_other_valid_implementations_pass(hidden):
    check(LAB, "filter_normalized_direction", _direction(direction_flat_norms), hidden=hidden)
    check(LAB, "loss_curve", _loss_curve(loss_curve_functional), hidden=hidden)
    check(LAB, "top_hessian_eigenvalue", _hessian(hessian_flat_start), hidden=hidden)


# ---------------------------------------------------------------- mistakes fail, and say why
def direction_skipping_1d_draws(model, generator):
    out = {}
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            out[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator)
        out[name] = d * (p.detach().flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)).reshape(
            (-1,) + (1,) * (p.dim() - 1))
    return out


def direction_whole_tensor_norm(model, generator):
    out = {}
    for name, p in model.named_parameters():
        d = torch.randn(p.shape, generator=generator)
        out[name] = torch.zeros_like(p) if p.dim() <= 1 else d * p.detach().norm() / d.norm()
    return out


def quantization_per_tensor(model, num_bits):
    return {name: (quant.fake_quantize(p.detach(), num_bits, symmetric=True) - p.detach())
            if p.dim() > 1 else torch.zeros_like(p) for name, p in model.named_parameters()}


def perturbed_in_place(model, direction, alpha):
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(alpha * direction[name])
    return model


def perturbed_running_stats_too(model, direction, alpha):
    out = landscape.perturbed(model, direction, alpha)
    for m in out.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.add_(alpha)
    return out


def perturbed_without_checks(model, direction, alpha):
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name in direction and direction[name].shape == p.shape:
                p.add_(alpha * direction[name])
    return out


def loss_mean_of_batch_means(model, direction, alphas, loader):
    out = []
    for a in alphas:
        moved = landscape.perturbed(model, direction, a).eval()
        with torch.no_grad():
            means = [F.cross_entropy(moved(x), y).item() for x, y in loader]
        out.append(sum(means) / len(means))
    return out


def loss_in_train_mode(model, direction, alphas, loader):
    out = []
    for a in alphas:
        moved = landscape.perturbed(model, direction, a)
        with torch.no_grad():
            total = sum(F.cross_entropy(moved(x), y, reduction="sum").item() for x, y in loader)
        out.append(total / sum(len(y) for _, y in loader))
    return out


def _train_mode_hessian(model, batch, iters, generator):
    params = list(model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(batch[0]), batch[1]), params,
                                create_graph=True)
    v = [torch.randn(p.shape, generator=generator) for p in params]
    lam = 0.0
    for _ in range(iters):
        norm = torch.sqrt(sum((t * t).sum() for t in v))
        v = [t / norm for t in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        lam = sum((a * b).sum() for a, b in zip(v, hv, strict=True)).item()
        v = list(hv)
    return lam


def hessian_weights_only(model, batch, iters, generator):
    net = copy.deepcopy(model).eval()
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    frozen = copy.deepcopy(net)
    for p in frozen.parameters():
        p.requires_grad_(False)
    grads = torch.autograd.grad(F.cross_entropy(net(batch[0]), batch[1]), weights,
                                create_graph=True)
    v = [torch.randn(w.shape, generator=generator) for w in weights]
    lam = 0.0
    for _ in range(iters):
        norm = torch.sqrt(sum((t * t).sum() for t in v))
        v = [t / norm for t in v]
        hv = torch.autograd.grad(grads, weights, grad_outputs=v, retain_graph=True)
        lam = sum((a * b).sum() for a, b in zip(v, hv, strict=True)).item()
        v = [h.detach() for h in hv]
    return lam


BUGS = [
    ("filter_normalized_direction", _direction(direction_skipping_1d_draws), "result["),
    ("filter_normalized_direction", _direction(direction_whole_tensor_norm), "result["),
    ("quantization_direction", quantization_per_tensor, "result["),
    ("perturbed", perturbed_in_place, "input model was modified"),
    ("perturbed", perturbed_running_stats_too, "running statistics are buffers"),
    ("perturbed", perturbed_without_checks, "instead of raising"),
    ("loss_curve", _loss_curve(loss_mean_of_batch_means), "alpha = "),
    ("loss_curve", _loss_curve(loss_in_train_mode), "alpha = "),
    ("top_hessian_eigenvalue", _hessian(_train_mode_hessian), "expected"),
    ("top_hessian_eigenvalue", _hessian(hessian_weights_only), "expected"),
]


@pytest.mark.parametrize("name,fn,message", BUGS, ids=[f"{n}-{i}" for i, (n, _, _) in
                                                     enumerate(BUGS)])
def test_mistakes_fail_the_hidden_cases_with_a_precise_message(name, fn, message):
    with pytest.raises(Mismatch) as info:
        check(LAB, name, fn, hidden=True)
    assert message in str(info.value), str(info.value)
