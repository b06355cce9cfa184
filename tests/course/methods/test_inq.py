"""course.methods.inq against independent references: exponents by exhaustive search over exact
rationals, levels by a plain loop over candidate levels with exact distances, partitions by
Python's sorted, the masked step against a plain optimizer step, and INQ end to end on a
small model; bad inputs raise naming the argument."""

from __future__ import annotations

import copy
import doctest
import math
from fractions import Fraction

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course.kernels import pow2
from course.measure import model_size_bytes
from course.methods import inq
from course.methods.inq import levels, partition, storage, training


@pytest.mark.parametrize("module", [levels, partition, training, storage, pow2])
def test_docstring_examples(module):
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0


# ----------------------------------------------------------------------------- exponents
def exponents_by_search(s: float, bits: int) -> tuple[int, int]:
    bound = Fraction(s) * 4 / 3
    n1 = max(n for n in range(-160, 160) if Fraction(2) ** n <= bound)
    return n1, n1 + 1 - 2 ** (bits - 2)


def float32_values(seed: int, count: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(count, generator=g) * 10.0 ** torch.randint(-6, 4, (count,),
                                                                    generator=g)).tolist()


def test_exponents_match_an_exhaustive_search_including_boundaries():
    values = float32_values(0, 200)
    for k in range(-10, 10):
        edge = 0.75 * 2.0**k                       # 4s/3 is exactly 2^k
        below = float(torch.nextafter(torch.tensor(edge), torch.tensor(0.0)))
        values += [edge, below]
    for s in values:
        for bits in (2, 3, 5, 8):
            assert inq.inq_exponents(s, bits) == exponents_by_search(s, bits), (s, bits)


def test_exponents_of_the_paper_five_bits_span_eight():
    n1, n2 = inq.inq_exponents(0.3, 5)
    assert n1 - n2 == 7 and 2.0**n1 <= 0.4 < 2.0 ** (n1 + 1)


@pytest.mark.parametrize(("args", "error", "name"), [
    ((1.0, 1), ValueError, "num_bits"), ((0.0, 4), ValueError, "w_absmax"),
    ((-1.0, 4), ValueError, "w_absmax"), ((math.nan, 4), ValueError, "w_absmax"),
    ((1.0, 4.0), TypeError, "num_bits"), (("1", 4), TypeError, "w_absmax"),
    ((1.0, True), TypeError, "num_bits")])
def test_exponents_reject_bad_inputs_naming_them(args, error, name):
    with pytest.raises(error, match=name):
        inq.inq_exponents(*args)


# ----------------------------------------------------------------------------- levels
def quantize_by_loop(w: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """Nearest level among 0 and 2^n2 ... 2^n1 by exact distance, ties to the larger."""
    candidates = [Fraction(0)] + [Fraction(2) ** n for n in range(n2, n1 + 1)]
    out = []
    for v in w.reshape(-1).tolist():
        m = Fraction(abs(v))
        best = min(candidates, key=lambda c: (abs(m - c), -c))
        out.append(math.copysign(float(best), v) if best else 0.0)
    return torch.tensor(out, dtype=torch.float32).reshape(w.shape)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_quantize_is_the_nearest_level_with_ties_up(bits):
    g = torch.Generator().manual_seed(bits)
    w = (torch.rand(300, generator=g) * 2 - 1) * 0.4
    n1, n2 = inq.inq_exponents(w.abs().max().item(), bits)
    ties = [0.75 * 2.0**n for n in range(n2 + 1, n1 + 1)] + [2.0 ** (n2 - 1)]
    w = torch.cat([w, torch.tensor(ties), -torch.tensor(ties)])
    got = inq.quantize_pow2(w, n1, n2)
    assert got.dtype == torch.float32 and got.shape == w.shape
    assert torch.equal(got, quantize_by_loop(w, n1, n2))
    assert inq.is_pow2_or_zero(got, n1, n2)
    assert torch.equal(got[-len(ties):], -got[-2 * len(ties):-len(ties)])  # sign kept


def test_quantize_clamps_large_values_and_keeps_shape_and_dtype():
    w = torch.tensor([[5.0, -9.0], [0.9, 0.0]], dtype=torch.float64)
    got = inq.quantize_pow2(w, 0, -2)
    assert got.dtype == torch.float64
    assert got.tolist() == [[1.0, -1.0], [1.0, 0.0]]


@pytest.mark.parametrize(("args", "error", "name"), [
    ((torch.zeros(3), -1, 0), ValueError, "n2"), ((torch.zeros(3, dtype=torch.int32), 0, -1),
                                                   TypeError, "w"),
    (([0.5], 0, -1), TypeError, "w"), ((torch.zeros(3), 0.0, -1), TypeError, "n1"),
    ((torch.tensor([math.nan]), 0, -1), ValueError, "w"),
    ((torch.zeros(3), 200, 0), ValueError, "n1"), ((torch.zeros(3), 0, -200), ValueError, "n2")])
def test_quantize_rejects_bad_inputs_naming_them(args, error, name):
    with pytest.raises(error, match=name):
        inq.quantize_pow2(*args)


def test_levels_and_checks():
    assert inq.pow2_levels(1, -1).tolist() == [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    assert inq.is_pow2_or_zero(torch.tensor([0.25, -2.0, 0.0]), 1, -2)
    assert not inq.is_pow2_or_zero(torch.tensor([0.25, 4.0]), 1, -2)
    assert not inq.is_pow2_or_zero(torch.tensor([0.125]), 1, -2)
    assert not inq.is_pow2_or_zero(torch.tensor([0.3]), 1, -2)
    assert [inq.bits_for(0, -n) for n in (0, 1, 3, 7, 8)] == [2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------- partition
def partition_by_sorted(w: torch.Tensor, frozen: torch.Tensor, portion: float) -> torch.Tensor:
    flat_w, flat_f = w.reshape(-1).tolist(), frozen.reshape(-1).tolist()
    target = math.ceil(portion * len(flat_w))
    free = sorted((i for i, f in enumerate(flat_f) if not f), key=lambda i: (-abs(flat_w[i]), i))
    out = list(flat_f)
    for i in free[:target - sum(flat_f)]:
        out[i] = True
    return torch.tensor(out).reshape(w.shape)


def test_partition_matches_sorted_with_ties_in_index_order():
    g = torch.Generator().manual_seed(3)
    w = torch.randint(-4, 5, (6, 7), generator=g).float() / 4     # many equal |w|
    frozen = torch.zeros_like(w, dtype=torch.bool)
    for portion in (0.5, 0.75, 0.875, 1.0):
        w_before, frozen_before = w.clone(), frozen.clone()
        new = inq.inq_partition(w, frozen, portion)
        assert torch.equal(w, w_before) and torch.equal(frozen, frozen_before)
        assert new.dtype == torch.bool and new is not frozen
        assert torch.equal(new, partition_by_sorted(w, frozen, portion))
        assert int(new.sum()) == math.ceil(portion * w.numel())
        assert bool(new[frozen].all())
        frozen = new


def test_partition_keeps_a_scattered_frozen_set_and_adds_only_free_weights():
    w = torch.arange(10, dtype=torch.float32)
    frozen = torch.zeros(10, dtype=torch.bool)
    frozen[[0, 1]] = True
    new = inq.inq_partition(w, frozen, 0.5)
    assert new.nonzero().reshape(-1).tolist() == [0, 1, 7, 8, 9]


@pytest.mark.parametrize(("portion", "frozen_count", "error", "name"), [
    (0.0, 0, ValueError, "portion"), (1.5, 0, ValueError, "portion"),
    (math.nan, 0, ValueError, "portion"), (True, 0, TypeError, "portion"),
    (0.25, 4, ValueError, "frozen")])
def test_partition_rejects_bad_inputs_naming_them(portion, frozen_count, error, name):
    frozen = torch.zeros(8, dtype=torch.bool)
    frozen[:frozen_count] = True
    with pytest.raises(error, match=name):
        inq.inq_partition(torch.ones(8), frozen, portion)


def test_partition_rejects_bad_masks():
    with pytest.raises(TypeError, match="frozen"):
        inq.inq_partition(torch.ones(4), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match="frozen"):
        inq.inq_partition(torch.ones(4), torch.zeros(5, dtype=torch.bool), 0.5)
    with pytest.raises(ValueError, match="w"):
        inq.inq_partition(torch.tensor([math.nan, 1.0]), torch.zeros(2, dtype=torch.bool), 0.5)


def test_random_partition_counts_and_keeps_frozen():
    g = torch.Generator().manual_seed(0)
    frozen = torch.zeros(40, dtype=torch.bool)
    frozen[:5] = True
    new = inq.random_partition(frozen, 0.5, g)
    assert int(new.sum()) == 20 and bool(new[:5].all())
    other = inq.random_partition(frozen, 0.5, torch.Generator().manual_seed(1))
    assert not torch.equal(new, other)
    with pytest.raises(TypeError, match="generator"):
        inq.random_partition(frozen, 0.5, 0)


# ----------------------------------------------------------------------------- inq_step
def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def half_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: inq.inq_partition(params[n].detach(), torch.zeros_like(params[n], dtype=torch.bool),
                                 0.5) for n in ("0.weight", "3.weight")}


OPTIMIZERS = {
    "sgd momentum + weight decay": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9,
                                                             weight_decay=1e-2),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                          weight_decay=1e-3),
    "adam + weight decay": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5, weight_decay=1e-3),
}


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_step_keeps_frozen_weights_exactly_and_trains_the_rest(make, mode):
    model = small_model()
    model.train(mode == "train")
    masks = half_masks(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make(model.parameters())
    x, y = batch()
    for _ in range(5):
        loss = inq.inq_step(model, masks, optimizer, (x, y))
        assert isinstance(loss, float) and math.isfinite(loss)
    assert model.training == (mode == "train")
    for name, p in model.named_parameters():
        if name in masks:
            assert torch.equal(p.detach()[masks[name]], before[name][masks[name]]), name
            assert bool((p.detach()[~masks[name]] != before[name][~masks[name]]).all()), name
        else:
            assert not torch.equal(p.detach(), before[name]), name


def test_gradient_masking_alone_would_move_frozen_weights():
    """The reason for inq_step: with momentum and weight decay a zero gradient still moves."""
    model = small_model()
    masks = half_masks(model)
    w = model[0].weight
    frozen_before = w.detach()[masks["0.weight"]].clone()
    optimizer = OPTIMIZERS["sgd momentum + weight decay"](model.parameters())
    x, y = batch()
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        w.grad[masks["0.weight"]] = 0
        optimizer.step()
    assert not torch.equal(w.detach()[masks["0.weight"]], frozen_before)


def test_step_without_masks_is_a_plain_step_and_returns_the_loss_before_it():
    model, plain = small_model(), small_model()
    x, y = batch()
    opt_a = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        expected = nn.functional.cross_entropy(copy.deepcopy(plain)(x), y).item()
        loss = inq.inq_step(model, {}, opt_a, (x, y))
        opt_b.zero_grad()
        nn.functional.cross_entropy(plain(x), y).backward()
        opt_b.step()
        assert loss == pytest.approx(expected, rel=1e-6)
    for a, b in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


def test_step_free_weights_move_as_in_a_plain_masked_gradient_step():
    """Plain SGD: the free elements follow their own gradient, as without any freezing."""
    model, plain = small_model(), small_model()
    masks = half_masks(model)
    x, y = batch()
    inq.inq_step(model, masks, torch.optim.SGD(model.parameters(), lr=0.1), (x, y))
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    nn.functional.cross_entropy(plain(x), y).backward()
    opt.step()
    for (name, a), b in zip(model.named_parameters(), plain.parameters(), strict=True):
        free = ~masks[name] if name in masks else torch.ones_like(a, dtype=torch.bool)
        assert torch.equal(a.detach()[free], b.detach()[free]), name


def test_step_rejects_bad_inputs_naming_them():
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    good = half_masks(model)
    xy = batch()
    cases = [((None, good, opt, xy), TypeError, "model"),
             ((model, good, None, xy), TypeError, "optimizer"),
             ((model, [good], opt, xy), TypeError, "masks"),
             ((model, {"nope": good["0.weight"]}, opt, xy), ValueError, "masks"),
             ((model, {"0.weight": good["0.weight"].float()}, opt, xy), TypeError, "masks"),
             ((model, {"0.weight": good["3.weight"]}, opt, xy), ValueError, "masks"),
             ((model, good, opt, xy[0]), TypeError, "batch")]
    for args, error, name in cases:
        with pytest.raises(error, match=name):
            inq.inq_step(*args)


# ----------------------------------------------------------------------------- the loop
def tiny_loader(seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("partition_kind", ["pruning", "random"])
def test_incremental_quantize_ends_with_every_weight_on_its_levels(partition_kind):
    model = small_model()
    original = copy.deepcopy(model.state_dict())
    recipe = inq.InqRecipe(epochs=1, lr=1e-2, optimizer="sgd", weight_decay=1e-3,
                           partition=partition_kind)
    seen = []
    result = inq.incremental_quantize(model, 4, tiny_loader(), recipe, seed=0,
                                      evaluate=lambda m: seen.append(m.training) or 0.5)
    assert all(torch.equal(a, b) for a, b in
               zip(model.state_dict().values(), original.values(), strict=True))
    assert [h["portion"] for h in result.history] == [0.5, 0.75, 0.875, 1.0]
    assert [h["accuracy"] for h in result.history] == [0.5] * 4 and seen == [False] * 4
    frozen = [h["frozen"] for h in result.history]
    assert frozen == sorted(frozen) and frozen[-1] == 1.0
    params = dict(result.model.named_parameters())
    assert sorted(result.exponents) == ["0.weight", "3.weight"]
    for name, (n1, n2) in result.exponents.items():
        assert (n1, n2) == inq.inq_exponents(original[name].abs().max().item(), 4)
        assert inq.is_pow2_or_zero(params[name].detach(), n1, n2), name
        assert bool(result.masks[name].all())
    assert not inq.is_pow2_or_zero(params["0.bias"].detach(), 0, -60)  # biases stay float


def test_frozen_groups_never_move_between_portions():
    model = small_model()
    snapshots = []

    def record(m):
        snapshots.append(copy.deepcopy(dict(m.named_parameters())["0.weight"].detach()))
        return 0.0

    result = inq.incremental_quantize(
        model, 5, tiny_loader(), inq.InqRecipe(epochs=2, lr=1e-2, optimizer="sgd",
                                               weight_decay=1e-2), evaluate=record)
    first_half = inq.inq_partition(model[0].weight.detach(),
                                   torch.zeros(8, 6, dtype=torch.bool), 0.5)
    for later in snapshots[1:]:
        assert torch.equal(later[first_half], snapshots[0][first_half])
    assert torch.equal(snapshots[-1], result.model[0].weight.detach())


def test_student_parts_are_the_ones_called():
    calls = []

    def counting_step(*args):
        calls.append(1)
        return inq.inq_step(*args)

    inq.incremental_quantize(small_model(), 3, tiny_loader(), inq.InqRecipe(epochs=1),
                             parts=inq.InqParts(step=counting_step))
    assert len(calls) == 4 * 4  # 4 portions x 4 batches


def test_recipe_is_checked():
    for kwargs in ({"portions": (0.5, 0.9)}, {"portions": (0.75, 0.5, 1.0)},
                   {"portions": ()}, {"epochs": -1}, {"optimizer": "lbfgs"},
                   {"partition": "smallest"}, {"lr": -1.0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            inq.InqRecipe(**kwargs)
    with pytest.raises(TypeError, match="recipe"):
        inq.incremental_quantize(small_model(), 4, tiny_loader(), recipe={})


def test_direct_pow2_rounds_only_linear_and_conv_weights():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    direct = inq.direct_pow2(model, 4)
    assert inq.inq_weight_names(model) == ["0.weight", "3.weight"]
    for name, value in direct.state_dict().items():
        if name in ("0.weight", "3.weight"):
            n1, n2 = inq.inq_exponents(model.state_dict()[name].abs().max().item(), 4)
            assert torch.equal(value, inq.quantize_pow2(model.state_dict()[name], n1, n2))
        else:
            assert torch.equal(value, model.state_dict()[name]), name
    with pytest.raises(TypeError, match="model"):
        inq.inq_weight_names("mlp")


# ----------------------------------------------------------------------------- storage
def test_stored_model_is_packed_codes_and_loads_back_exactly():
    model = small_model()
    result = inq.incremental_quantize(model, 5, tiny_loader(), inq.InqRecipe(epochs=0))
    stored = inq.pack_pow2_model(result.model, result.exponents, 5)
    assert stored["0.weight.codes"].dtype == torch.uint8
    assert stored["0.weight.codes"].numel() == math.ceil(48 * 5 / 8)
    assert stored["3.weight.codes"].numel() == math.ceil(24 * 5 / 8)
    assert "0.weight" not in stored and stored["0.bias"].dtype == torch.float32
    loaded = inq.unpack_pow2_model(stored, model, 5)
    for a, b in zip(loaded.state_dict().values(), result.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    float_weights = (48 + 24) * 4
    assert model_size_bytes(result.model) - model_size_bytes(stored) == \
        float_weights - math.ceil(48 * 5 / 8) - math.ceil(24 * 5 / 8) - 2 * 2 * 2
    with pytest.raises(ValueError, match="w_q"):
        inq.pack_pow2_model(model, result.exponents, 5)   # float weights are not levels
    with pytest.raises(ValueError, match="exponents"):
        inq.pack_pow2_model(model, {"missing": (0, -7)}, 5)


def test_the_saved_file_of_a_real_layer_shrinks_with_the_bits():
    torch.manual_seed(0)
    layer = nn.Linear(256, 128)
    float_file = inq.saved_file_bytes(layer.state_dict())
    for bits in (3, 5):
        quantized = inq.direct_pow2(layer, bits)
        exponents = {"weight": inq.inq_exponents(layer.weight.abs().max().item(), bits)}
        stored = inq.pack_pow2_model(quantized, exponents, bits)
        codes = stored["weight.codes"].numel()
        assert codes == 256 * 128 * bits // 8
        assert inq.saved_file_bytes(stored) < float_file * bits / 32 + 4096


def test_the_loop_and_storage_reject_bad_inputs_naming_them():
    model = small_model()
    cases = [(lambda: inq.incremental_quantize(model, 4, torch.ones(3)), TypeError, "loader"),
             (lambda: inq.incremental_quantize(model, 4, tiny_loader(), evaluate=1), TypeError,
              "evaluate"),
             (lambda: inq.incremental_quantize(model, 4, tiny_loader(), parts=inq.inq_step),
              TypeError, "parts"),
             (lambda: inq.incremental_quantize(model, 1, tiny_loader()), ValueError, "num_bits"),
             (lambda: inq.pack_pow2_model(model, [("0.weight", (0, -7))], 5), TypeError,
              "exponents"),
             (lambda: inq.unpack_pow2_model([], model, 5), TypeError, "stored"),
             (lambda: inq.unpack_pow2_model({}, "model", 5), TypeError, "template"),
             (lambda: inq.unpack_pow2_model({}, model, 5), ValueError, "stored"),
             (lambda: inq.saved_file_bytes([1]), TypeError, "state"),
             (lambda: inq.random_partition([True], 0.5, torch.Generator()), TypeError, "frozen"),
             (lambda: inq.pow2_levels(-1, 0), ValueError, "n2"),
             (lambda: inq.bits_for(0, 1), ValueError, "n2")]
    for call, error, name in cases:
        with pytest.raises(error, match=name):
            call()
