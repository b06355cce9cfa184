"""lab04's reference cases: the library passes them, other valid implementations pass them
(numpy inside, float64, uint64 words, plain Python loops), and real bugs fail with a message
that says what is wrong. The checks are independent of the case module: bits are counted and
placed by plain Python, dot products by float64 matrix products."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autograder.cases import lab04_binary_and_low_bit as lab04
from course import quant
from course.grading import Mismatch, check, load_cases, loads
from course.kernels.binary.bitpack import PackedBits, pack_signs
from course.kernels.binary.gemm import xnor_gemm
from course.methods import dorefa, xnor

LAB = lab04.LAB
ROOT = Path(__file__).resolve().parents[2]
WORD = 64


# ---------------------------------------------------------------- the library's own answers
def _library_ste(x, grad_output):
    leaf = x.clone().requires_grad_(True)
    xnor.sign_ste(leaf).backward(grad_output)
    return leaf.grad


def _library_xnor(a_words, b_words, length):
    return xnor_gemm(PackedBits.from_tensor(a_words, length),
                     PackedBits.from_tensor(b_words, length))


LIBRARY = {
    "binarize": quant.binarize,
    "sign_ste_backward": _library_ste,
    "dorefa_weights": dorefa.quantize_weights,
    "dorefa_activations": dorefa.quantize_activations,
    "pack_signs": lambda x: pack_signs(x).to_tensor(),
    "xnor_matmul": _library_xnor,
}


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_passes_its_own_references(name, hidden):
    assert check(LAB, name, LIBRARY[name], hidden=hidden) is None


def test_every_exercise_has_visible_and_hidden_cases():
    for hidden in (False, True):
        cases = load_cases(LAB, hidden)
        assert sorted(cases) == sorted(lab04.EXERCISES)
        assert all(len(c) >= 2 for c in cases.values())


def test_reference_files_are_what_the_case_module_builds():
    for path, data in lab04.build().items():
        assert (ROOT / path).read_bytes() == data, f"{path} is stale: run make references"


def test_hidden_cases_cover_the_edge_cases_the_lab_promises():
    labels = {name: " ".join(c["label"] for c in cases)
              for name, cases in load_cases(LAB, hidden=True).items()}
    assert "sign(0) = +1" in labels["binarize"] and "alpha = 0" in labels["binarize"]
    assert "|x| = 1 passes" in labels["sign_ste_backward"]
    assert "whole tensor" in labels["dorefa_weights"] and "32 bits" in labels["dorefa_weights"]
    assert "tie" in labels["dorefa_activations"]
    assert "per sample" in labels["dorefa_gradient"] and "all zero" in labels["dorefa_gradient"]
    for k in ("K = 1", "K = 63", "K = 65", "bit 63", "ValueError"):
        assert k in labels["pack_signs"], k
    for k in ("K = 1", "K = 784", "one row by one row", "different numbers of words"):
        assert k in labels["xnor_matmul"], k


def test_the_gradient_cases_pass_the_noise_the_library_drew():
    """Recompute each expected gradient from its stored noise in float64 (independently)."""
    for hidden in (False, True):
        for c in load_cases(LAB, hidden)["dorefa_gradient"]:
            got = gradient_float64(*c["args"]).float()
            accepted = torch.stack([torch.isclose(got, v, rtol=1e-5, atol=1e-9)
                                    for v in (c["expected"], *c.get("alternatives", []))])
            assert accepted.any(dim=0).all(), c["label"]
            assert torch.isclose(got, c["expected"], rtol=1e-5).float().mean() > 0.95


# ----------------------------------------------------------------- valid alternatives pass
def binarize_numpy(w):
    a = w.numpy().astype(np.float64)
    alpha = np.abs(a).reshape(a.shape[0], -1).mean(axis=1)
    signs = np.where(a >= 0, 1.0, -1.0)
    return torch.from_numpy(signs * alpha.reshape((-1,) + (1,) * (a.ndim - 1)))


def ste_where(x, grad_output):
    return torch.where((x >= -1) & (x <= 1), grad_output, torch.zeros_like(grad_output))


def weights_float64(w, bits):
    if bits == 32:
        return w
    if bits not in range(1, 17):
        raise ValueError("bits")
    a = w.double()
    if bits == 1:
        return torch.where(a >= 0, 1.0, -1.0) * a.abs().mean()
    n = 2**bits - 1
    t = torch.tanh(a)
    return 2 * torch.round((t / (2 * t.abs().max()) + 0.5) * n) / n - 1


def activations_numpy(x, bits):
    if bits != 32 and bits not in range(1, 17):
        raise ValueError("bits")
    c = np.clip(x.numpy(), 0.0, 1.0)
    if bits == 32:
        return torch.from_numpy(c)
    n = 2**bits - 1
    return torch.from_numpy(np.rint(c * n) / n)  # np.rint rounds half to even


def gradient_float64(grad, bits, noise):
    if bits == 32:
        return grad
    n = 2**bits - 1
    g, sigma = grad.double(), noise.double()
    out = torch.zeros_like(g)
    for i in range(g.shape[0]):  # one sample at a time
        m = g[i].abs().max()
        if m > 0:
            level = torch.clamp(torch.round((g[i] / (2 * m) + 0.5 + sigma[i] / n) * n), 0, n)
            out[i] = 2 * m * (level / n - 0.5)
    return out


def pack_python(x):
    """Plain Python: each word an int built bit by bit, then read as a signed 64-bit value."""
    values = x.tolist()
    if any(v not in (-1, 1) for row in values for v in row):
        raise ValueError("x must hold only -1 and +1")
    words = []
    for row in values:
        row_words = []
        for start in range(0, len(row), WORD):
            word = sum(1 << bit for bit, v in enumerate(row[start:start + WORD]) if v == 1)
            row_words.append(word - (1 << WORD) if word >= 1 << (WORD - 1) else word)
        words.append(row_words)
    return torch.tensor(words, dtype=torch.int64)


def pack_numpy_uint64(x):
    """numpy, uint64 words out (the same bits; the checker reads them as such)."""
    a = x.numpy()
    if not np.isin(a, (-1, 1)).all():
        raise ValueError("x must hold only -1 and +1")
    m, k = a.shape
    n_words = -(-k // WORD)
    out = np.zeros((m, n_words), dtype=np.uint64)
    for k_index in range(k):
        bit = (a[:, k_index] == 1).astype(np.uint64) << np.uint64(k_index % WORD)
        out[:, k_index // WORD] |= bit
    return out


def _unpack(words, length):
    bits = (words.unsqueeze(-1) >> torch.arange(WORD)) & 1  # [rows, W, 64], arithmetic shift
    return (bits.reshape(words.shape[0], -1)[:, :length] * 2 - 1).double()


def xnor_by_unpacking(a_words, b_words, length):
    """Unpack to +-1 and multiply in float64: obviously right, not what the lab asks for."""
    if a_words.shape[1] != b_words.shape[1] or -(-length // WORD) != a_words.shape[1]:
        raise ValueError("the words do not hold length bits")
    return (_unpack(a_words, length) @ _unpack(b_words, length).T).round().to(torch.int32)


def xnor_popcount_python(a_words, b_words, length):
    if a_words.shape[1] != b_words.shape[1] or -(-length // WORD) != a_words.shape[1]:
        raise ValueError("the words do not hold length bits")
    mask = (1 << WORD) - 1
    out = [[length - 2 * sum(bin((x ^ y) & mask).count("1") for x, y in zip(ra, rb, strict=True))
            for rb in b_words.tolist()] for ra in a_words.tolist()]
    return np.array(out, dtype=np.int64)


VALID = [
    ("binarize", binarize_numpy),
    ("sign_ste_backward", ste_where),
    ("dorefa_weights", weights_float64),
    ("dorefa_activations", activations_numpy),
    ("dorefa_gradient", gradient_float64),
    ("pack_signs", pack_python),
    ("pack_signs", pack_numpy_uint64),
    ("xnor_matmul", xnor_by_unpacking),
    ("xnor_matmul", xnor_popcount_python),
]


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize(("name", "fn"), VALID, ids=[fn.__name__ for _, fn in VALID])
def test_valid_alternative_implementations_pass(name, fn, hidden):
    check(LAB, name, fn, hidden=hidden)


# --------------------------------------------------------------------- real bugs fail
def binarize_torch_sign(w):
    return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True) * torch.sign(w)


def binarize_per_tensor(w):
    return w.abs().mean() * torch.where(w >= 0, 1.0, -1.0)


def ste_strict(x, grad_output):
    return grad_output * (x.abs() < 1)


def weights_one_bit_per_channel(w, bits):
    if bits == 1:
        return quant.binarize(w)
    return dorefa.quantize_weights(w, bits)


def activations_round_half_up(x, bits):
    n = 2**bits - 1
    return torch.floor(torch.clamp(x, 0, 1) * n + 0.5) / n


def gradient_without_noise(grad, bits, noise):
    return gradient_float64(grad, bits, torch.zeros_like(noise)).float()


def gradient_global_max(grad, bits, noise):
    n = 2**bits - 1
    m = grad.abs().max()
    level = torch.clamp(torch.round((grad / (2 * m) + 0.5 + noise / n) * n), 0, n)
    return 2 * m * (level / n - 0.5)


def gradient_noise_not_scaled(grad, bits, noise):
    return gradient_float64(grad, bits, noise * (2**bits - 1)).float()


def pack_msb_first(x):
    flipped = torch.zeros(x.shape[0], -(-x.shape[1] // WORD) * WORD)
    flipped[:, : x.shape[1]] = x
    rows = flipped.reshape(x.shape[0], -1, WORD).flip(-1).reshape(x.shape[0], -1)
    return pack_python(torch.where(rows == 1, 1.0, -1.0))


def pack_without_check(x):
    return pack_python(torch.where(x > 0, 1.0, -1.0))


def xnor_full_words(a_words, b_words, length):
    """K = 64 x words instead of the true length: wrong by the padding."""
    return xnor_by_unpacking(a_words, b_words, WORD * a_words.shape[1])


BUGS = [
    ("binarize", binarize_torch_sign, False, "sign(0) = +1"),
    ("binarize", binarize_per_tensor, False, "expected"),
    ("sign_ste_backward", ste_strict, False, "the edge included"),
    ("dorefa_weights", weights_one_bit_per_channel, True, "whole tensor"),
    ("dorefa_activations", activations_round_half_up, False, "rounds half to even"),
    ("dorefa_gradient", gradient_without_noise, False, "element"),
    ("dorefa_gradient", gradient_global_max, True, "m is per sample"),
    ("dorefa_gradient", gradient_noise_not_scaled, False, "element"),
    ("pack_signs", pack_msb_first, False, "by hand"),
    ("pack_signs", pack_without_check, True, "instead of raising ValueError"),
    ("xnor_matmul", xnor_full_words, False, "use dot = K - 2 * popcount"),
]


@pytest.mark.parametrize(("name", "fn", "hidden", "message"), BUGS,
                         ids=[fn.__name__ for _, fn, _, _ in BUGS])
def test_real_bugs_fail_with_a_message_that_says_why(name, fn, hidden, message):
    with pytest.raises(Mismatch) as info:
        check(LAB, name, fn, hidden=hidden)
    assert message in str(info.value), str(info.value)


def test_unanswered_exercise_fails_with_not_answered():
    def stub(*args):
        raise NotImplementedError

    with pytest.raises(Mismatch, match="not answered yet"):
        check(LAB, "xnor_matmul", stub)


# ------------------------------------------------ the notebook's statistical unbiasedness check
def _unbiasedness_check() -> str:
    """The seeded statistical part of the notebook's dorefa_gradient test cell."""
    nb = json.loads((ROOT / "solutions" / LAB / f"{LAB}.ipynb").read_text())
    cell = next(c for c in nb["cells"]
                if c["metadata"].get("nbgrader", {}).get("grade_id") == "test_dorefa_gradient")
    visible = "".join(cell["source"]).split("### BEGIN HIDDEN TESTS")[0]
    return visible[visible.index("# Unbiased"):]


def test_statistical_check_accepts_an_unbiased_quantizer():
    exec(_unbiasedness_check(), {"torch": torch, "dorefa_gradient": gradient_float64})


@pytest.mark.parametrize("biased", [gradient_without_noise, gradient_noise_not_scaled])
def test_statistical_check_rejects_a_biased_quantizer(biased):
    with pytest.raises(AssertionError, match="unbiased"):
        exec(_unbiasedness_check(), {"torch": torch, "dorefa_gradient": biased})


def test_references_decode_to_what_the_call_shows():
    data = loads((ROOT / "autograder" / "references" / f"{LAB}.json").read_bytes())
    case = next(c for c in data["cases"]["xnor_matmul"] if "K = 784" in c["label"])
    a, b, length = case["args"]
    assert (a.dtype, tuple(a.shape), length) == (torch.int64, (3, 13), 784)
    assert torch.equal(case["expected"], xnor_by_unpacking(a, b, length).to(torch.int64))
