"""Reference cases of lab04 (binary and low-bit networks: XNOR-Net and DoReFa-Net).

Every expected value is computed by the library: ``course.quant.binarize`` (BWN),
``course.quant.ste.sign_ste`` (its gradient, by autograd), ``course.quant.dorefa``'s three
quantizers, ``course.kernels.binary.bitpack.pack_signs`` and
``course.kernels.binary.gemm.xnor_gemm``.

The gradient quantizer is stochastic; the exercise takes its noise as an argument. A case
passes ``noise = torch.rand(shape, generator=g) - 1/2`` with ``g`` seeded, and computes the
expected value with the library's ``stochastic_quantize_gradient`` fed a generator seeded the
same way, so that both draw the very same numbers. Where another valid order of float
operations can round a near-tie the other way, its result is stored as an accepted
alternative. Packed words are int64 tensors holding the bits of the library's uint64 words.
"""

from __future__ import annotations

import torch

from autograder.cases._build import case, distinct, reference_files, uniform
from course import quant
from course.kernels.binary.bitpack import WORD_BITS, PackedBits, pack_signs, words_for
from course.kernels.binary.gemm import xnor_gemm
from course.methods import dorefa, xnor

LAB = "lab04_binary_and_low_bit"

SIGN_ZERO_NOTE = "w is 0 here: sign(0) = +1 in this course (torch.sign(0) gives 0)"
STE_EDGE_NOTE = "|x| = {v:g}: the gradient passes where |x| <= 1 (the edge included)"
TIE_NOTE = ("x * (2^k - 1) = {v:g} is an exact tie: torch.round rounds half to even, "
            "giving {q:g}")
BIT63_NOTE = ("bit 63 of this word is set, so as an int64 it is negative ({v}); shifting 1 "
              "left by 63 in int64 gives -2**63, which is exactly that bit")
PADDING_NOTE = ("K = length = {k}, but {w} word(s) hold {bits} bits: the padding bits are 0 "
                "in both operands, so use dot = K - 2 * popcount(a XOR b) with the true K")


def _signs(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of -1 and +1 from ``seed``."""
    return torch.where(uniform(seed, shape) >= 0, 1.0, -1.0)


# ----------------------------------------------------------------------------- BWN
def _binarize_variants(w: torch.Tensor) -> list[torch.Tensor]:
    dims = tuple(range(1, w.dim()))
    alpha = w.double().abs().mean(dim=dims, keepdim=True)
    signs = torch.where(w >= 0, 1.0, -1.0).double()
    return [(alpha * signs).to(torch.float32)]


def _binarize(hidden: bool) -> list[dict]:
    if hidden:
        with_zero_channel = uniform(103, (3, 5))
        with_zero_channel[1] = 0.0
        zeros_inside = uniform(104, (4, 3, 2, 2))
        zeros_inside[0, 0, 0, 0] = 0.0
        zeros_inside[2, 1, 1, 0] = 0.0
        zeros_inside[3, 2] = 0.0
        calls = [
            ("zeros inside a conv weight: sign(0) = +1", zeros_inside),
            ("a channel of zeros: alpha = 0", with_zero_channel),
            ("channels of very different scales: one alpha per output channel",
             uniform(105, (3, 8)) * torch.tensor([[100.0], [1.0], [0.01]])),
            ("one output channel", uniform(106, (1, 7))),
            ("3-D weight", uniform(107, (2, 3, 4), -2.0, 1.0)),
            ("1x1 conv weight", uniform(108, (5, 4, 1, 1))),
            ("all negative", uniform(109, (2, 6), -3.0, -0.5)),
        ]
    else:
        conv = uniform(102, (3, 2, 3, 3))
        conv[1, 0, 1, 1] = 0.0
        calls = [("Linear weight [4, 6]", uniform(101, (4, 6))),
                 ("Conv2d weight [3, 2, 3, 3] with one zero", conv)]
    cases = []
    for label, w in calls:
        expected = quant.binarize(w)
        flat_w, flat_e = w.reshape(-1), expected.reshape(-1)
        notes = {str(i): SIGN_ZERO_NOTE for i in range(w.numel())
                 if flat_w[i] == 0 and flat_e[i] != 0}
        cases.append(case("binarize", label, "float_tensor", [w], expected,
                          alternatives=distinct(expected, _binarize_variants(w)), notes=notes))
    return cases


# ----------------------------------------------------------------------------- sign STE
def _ste_gradient(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    leaf = x.clone().requires_grad_(True)
    xnor.sign_ste(leaf).backward(grad_output)
    return leaf.grad.detach().clone()


def _sign_ste_backward(hidden: bool) -> list[dict]:
    if hidden:
        edges = torch.tensor([1.0, -1.0, 1.0000001, -1.0000001, 0.9999999, 0.0, 5.0, -1e-8])
        calls = [
            ("the edges: |x| = 1 passes, just above 1 does not", edges, uniform(113, (8,))),
            ("2-D pre-activations", uniform(114, (4, 5), -3.0, 3.0), uniform(115, (4, 5))),
            ("4-D, large values: everything cancelled", uniform(116, (2, 2, 2, 2), 2.0, 9.0),
             uniform(117, (2, 2, 2, 2))),
            ("small values: everything passes", uniform(118, (6, 3), -0.9, 0.9),
             uniform(119, (6, 3), -5.0, 5.0)),
        ]
    else:
        x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5, 3.0])
        calls = [("by hand, the edges included", x, torch.arange(1.0, 9.0)),
                 ("2-D", uniform(111, (3, 4), -2.0, 2.0), uniform(112, (3, 4)))]
    cases = []
    for label, x, g in calls:
        expected = _ste_gradient(x, g)
        flat = x.reshape(-1)
        notes = {str(i): STE_EDGE_NOTE.format(v=float(flat[i].abs())) for i in range(x.numel())
                 if flat[i].abs() == 1}
        cases.append(case("sign_ste_backward", label, "float_tensor", [x, g], expected,
                          notes=notes))
    return cases


# ----------------------------------------------------------------------------- DoReFa
def _weight_variants(w: torch.Tensor, bits: int) -> list[torch.Tensor]:
    if bits == dorefa.FLOAT_BITS:
        return []
    if bits == 1:
        signs = torch.where(w >= 0, 1.0, -1.0).double()
        return [(signs * w.double().abs().mean()).to(torch.float32)]
    n = 2**bits - 1
    t = torch.tanh(w.double())
    return [(2 * torch.round((t / (2 * t.abs().max()) + 0.5) * n) / n - 1).to(torch.float32)]


def _dorefa_weights(hidden: bool) -> list[dict]:
    if hidden:
        zeros = uniform(124, (3, 4))
        zeros[0, 1] = 0.0
        zeros[2, 3] = 0.0
        calls = [
            ("1 bit, channels of different scales: one E|w| for the whole tensor",
             uniform(125, (3, 6)) * torch.tensor([[10.0], [1.0], [0.1]]), 1),
            ("1 bit with zeros: sign(0) = +1", zeros, 1),
            ("3 bits, conv weight", uniform(126, (2, 3, 3, 3), -2.0, 2.0), 3),
            ("4 bits, large weights (tanh saturates)", uniform(127, (5, 5), -6.0, 6.0), 4),
            ("8 bits", uniform(128, (4, 7), -0.1, 0.1), 8),
            ("32 bits: unchanged", uniform(129, (3, 3)), 32),
        ]
    else:
        calls = [("2 bits, Linear weight [4, 5]", uniform(121, (4, 5)), 2),
                 ("1 bit, Linear weight [3, 4]", uniform(122, (3, 4), -0.5, 0.5), 1)]
    cases = []
    for label, w, bits in calls:
        expected = dorefa.quantize_weights(w, bits).detach()
        notes = {}
        if bits == 1:
            notes = {str(i): SIGN_ZERO_NOTE for i, v in enumerate(w.reshape(-1).tolist())
                     if v == 0}
        cases.append(case("dorefa_weights", label, "float_tensor", [w, bits], expected,
                          alternatives=distinct(expected, _weight_variants(w, bits)),
                          notes=notes))
    if hidden:
        for bits in (0, 17):
            _expect_library_error(dorefa.quantize_weights, (uniform(130, (2, 2)), bits))
            cases.append(case("dorefa_weights", f"{bits} bits is an error", "raises",
                              [uniform(130, (2, 2)), bits], "ValueError"))
    return cases


def _activation_notes(x: torch.Tensor, bits: int, expected: torch.Tensor) -> dict[str, str]:
    if bits == dorefa.FLOAT_BITS:
        return {}
    n = 2**bits - 1
    notes = {}
    for i, (v, q) in enumerate(zip(x.reshape(-1).tolist(), expected.reshape(-1).tolist(),
                                   strict=True)):
        scaled = min(max(v, 0.0), 1.0) * n
        if scaled - int(scaled) == 0.5:
            notes[str(i)] = TIE_NOTE.format(v=scaled, q=q)
    return notes


def _activation_variants(x: torch.Tensor, bits: int) -> list[torch.Tensor]:
    clipped = x.double().clamp(0.0, 1.0)
    if bits == dorefa.FLOAT_BITS:
        return [clipped.to(torch.float32)]
    n = 2**bits - 1
    return [(torch.round(clipped * n) / n).to(torch.float32)]


def _dorefa_activations(hidden: bool) -> list[dict]:
    if hidden:
        ties = torch.tensor([0.5, 0.25, 0.0, 1.0, -0.0, 1.5, -2.0, 0.75])
        calls = [
            ("x = 0.5 is a tie at every bit width: 1 bit", ties, 1),
            ("x = 0.5 is a tie at every bit width: 3 bits", ties, 3),
            ("4 bits, 3-D", uniform(133, (2, 3, 4), -1.0, 2.0), 4),
            ("8 bits", uniform(134, (10,), -0.2, 1.2), 8),
            ("32 bits: the clip only", uniform(135, (3, 5), -1.0, 2.0), 32),
        ]
    else:
        calls = [("1 bit, with the tie x = 0.5", torch.tensor([-0.3, 0.1, 0.2, 0.5, 0.9, 1.7]),
                  1),
                 ("2 bits, 2-D", uniform(131, (3, 4), -0.5, 1.5), 2)]
    cases = []
    for label, x, bits in calls:
        expected = dorefa.quantize_activations(x, bits)
        cases.append(case("dorefa_activations", label, "float_tensor", [x, bits], expected,
                          alternatives=distinct(expected, _activation_variants(x, bits)),
                          notes=_activation_notes(x, bits, expected)))
    if hidden:
        _expect_library_error(dorefa.quantize_activations, (uniform(136, (4,)), 0))
        cases.append(case("dorefa_activations", "0 bits is an error", "raises",
                          [uniform(136, (4,)), 0], "ValueError"))
        for bits, why in ((17, "17 bits is an error: 1 to 16, or 32"),
                          (33, "33 bits is an error: 1 to 16, or 32")):
            _expect_library_error(dorefa.quantize_activations, (uniform(137, (4,)), bits))
            cases.append(case("dorefa_activations", why, "raises", [uniform(137, (4,)), bits],
                              "ValueError"))
    return cases


def _noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``Uniform(-1/2, 1/2)`` draws, exactly those the library draws from ``seed``."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) - 0.5


def _gradient_variants(grad: torch.Tensor, bits: int, noise: torch.Tensor) -> list[torch.Tensor]:
    """The formula as written, in float32 and in float64 (other rounding near ties)."""
    if bits == dorefa.FLOAT_BITS:
        return []
    n = 2**bits - 1
    dims = tuple(range(1, grad.dim()))
    out = []
    for dtype in (torch.float32, torch.float64):
        g, sigma = grad.to(dtype), noise.to(dtype)
        m = g.abs().amax(dim=dims, keepdim=True)
        safe = torch.where(m > 0, m, torch.ones_like(m))
        q = torch.clamp(torch.round((g / (2 * safe) + 0.5 + sigma / n) * n), 0, n) / n
        out.append(torch.where(m > 0, 2 * safe * (q - 0.5), torch.zeros_like(g))
                   .to(torch.float32))
    return out


def _dorefa_gradient(hidden: bool) -> list[dict]:
    if hidden:
        zero_row = uniform(145, (3, 6), -1e-2, 1e-2)
        zero_row[1] = 0.0
        calls = [
            ("samples of very different scales: m is per sample",
             146, uniform(146, (3, 8)) * torch.tensor([[1e-1], [1e-3], [1e-5]]), 4),
            ("1 bit: every value becomes +m or -m", 144, uniform(144, (4, 5), -1e-3, 1e-3), 1),
            ("a sample whose gradient is all zero stays zero", 145, zero_row, 2),
            ("3-D gradient (batch, tokens, features)", 147,
             uniform(147, (2, 3, 5), -0.5, 0.5), 3),
            ("4-D gradient of a conv output", 148, uniform(148, (2, 2, 3, 3), -2.0, 2.0), 8),
            ("32 bits: unchanged", 149, uniform(149, (2, 4)), 32),
        ]
    else:
        calls = [("2 bits, batch of 4", 141, uniform(141, (4, 6), -1e-3, 1e-3), 2),
                 ("4 bits, batch of 3", 142, uniform(142, (3, 8), -0.1, 0.1), 4)]
    cases = []
    for label, seed, grad, bits in calls:
        noise = _noise(seed, tuple(grad.shape))
        generator = torch.Generator().manual_seed(seed)
        expected = dorefa.stochastic_quantize_gradient(grad, bits, generator)
        variants = _gradient_variants(grad, bits, noise)
        if variants:  # the library drew the same noise: it agrees with the formula
            agree = torch.isclose(expected, variants[1], rtol=1e-5, atol=1e-12)
            if agree.float().mean() < 0.95:
                raise AssertionError(f"{label}: the library's noise is not the noise passed")
        cases.append(case("dorefa_gradient", label, "float_tensor", [grad, bits, noise],
                          expected, alternatives=distinct(expected, variants)))
    return cases


# ----------------------------------------------------------------------------- packing
def _pack_notes(words: torch.Tensor) -> dict[str, str]:
    return {str(i): BIT63_NOTE.format(v=v) for i, v in enumerate(words.reshape(-1).tolist())
            if v < 0}


def _pack_signs(hidden: bool) -> list[dict]:
    if hidden:
        top = _signs(155, (2, 64))
        top[:, 63] = 1.0
        calls = [
            ("K = 1", torch.tensor([[1.0], [-1.0]])),
            ("K = 64, all +1: every bit set", torch.ones(1, 64)),
            ("K = 64, all -1: no bit set", -torch.ones(1, 64)),
            ("K = 63: one padding bit", _signs(153, (3, 63))),
            ("K = 65: a second word with one bit", _signs(154, (2, 65))),
            ("bit 63 set: a negative int64 word", top),
            ("K = 200, 5 rows", _signs(156, (5, 200))),
            ("int8 input", _signs(157, (2, 70)).to(torch.int8)),
            ("K = 784 (an MNIST image)", _signs(158, (1, 784))),
            ("float64 input: any real dtype", _signs(159, (2, 10)).to(torch.float64)),
        ]
    else:
        calls = [("by hand: bits 0 and 3 set = 9", torch.tensor([[1.0, -1.0, -1.0, 1.0]])),
                 ("K = 70: two words, 58 padding bits", _signs(151, (3, 70)))]
    cases = []
    for label, x in calls:
        expected = pack_signs(x).to_tensor()
        cases.append(case("pack_signs", label, "int_tensor", [x], expected,
                          notes=_pack_notes(expected)))
    if hidden:
        for label, bad in (("a 0 is not a sign: ValueError", torch.tensor([[1.0, 0.0, -1.0]])),
                           ("0.5 is not a sign: ValueError", torch.tensor([[0.5, 1.0]]))):
            _expect_library_error(pack_signs, (bad,))
            cases.append(case("pack_signs", label, "raises", [bad], "ValueError"))
    return cases


def _packed(seed: int, rows: int, length: int, fill: float | None = None) -> torch.Tensor:
    signs = _signs(seed, (rows, length)) if fill is None else torch.full((rows, length), fill)
    return pack_signs(signs).to_tensor()


def _xnor_matmul(hidden: bool) -> list[dict]:
    if hidden:
        same = _packed(167, 3, 130)
        calls = [
            ("K = 1", _packed(161, 2, 1), _packed(162, 3, 1), 1),
            ("one row by one row", _packed(163, 1, 50), _packed(164, 1, 50), 50),
            ("K = 784: 13 words, 48 padding bits", _packed(165, 3, 784),
             _packed(166, 4, 784), 784),
            ("identical rows: dot = K", same, same.clone(), 130),
            ("all +1 against all -1: dot = -K", _packed(0, 2, 100, 1.0),
             _packed(0, 3, 100, -1.0), 100),
            ("K = 63", _packed(168, 4, 63), _packed(169, 2, 63), 63),
            ("K = 65", _packed(170, 2, 65), _packed(171, 5, 65), 65),
            ("K = 128, one output column", _packed(172, 6, 128), _packed(173, 1, 128), 128),
        ]
    else:
        calls = [("K = 64: one word", _packed(159, 2, 64), _packed(160, 3, 64), 64),
                 ("K = 100: two words, 28 padding bits", _packed(174, 4, 100),
                  _packed(175, 5, 100), 100)]
    cases = []
    for label, a, b, length in calls:
        expected = xnor_gemm(PackedBits.from_tensor(a, length),
                             PackedBits.from_tensor(b, length)).to(torch.int64)
        words = a.shape[1]
        notes = {}
        if length % WORD_BITS:
            notes["0"] = PADDING_NOTE.format(k=length, w=words, bits=words * WORD_BITS)
        cases.append(case("xnor_matmul", label, "int_tensor", [a, b, length], expected,
                          notes=notes))
    if hidden:
        a, b = _packed(176, 2, 64), _packed(177, 2, 128)
        _expect_library_error(lambda: xnor_gemm(PackedBits.from_tensor(a, 64),
                                                PackedBits.from_tensor(b, 128)), ())
        cases.append(case("xnor_matmul", "a and b with different numbers of words: ValueError",
                          "raises", [a, b, 64], "ValueError"))
        a = _packed(178, 2, 64)
        _expect_library_error(lambda: PackedBits.from_tensor(a, 65), ())
        cases.append(case("xnor_matmul",
                          f"length 65 needs {words_for(65)} words, not 1: ValueError",
                          "raises", [a, a.clone(), 65], "ValueError"))
    return cases


def _expect_library_error(fn, args: tuple) -> None:
    """A raises case states what the library does: check that it does raise ValueError."""
    try:
        fn(*args)
    except ValueError:
        return
    raise AssertionError(f"the library did not raise ValueError for {args!r}")


EXERCISES = {
    "binarize": _binarize,
    "sign_ste_backward": _sign_ste_backward,
    "dorefa_weights": _dorefa_weights,
    "dorefa_activations": _dorefa_activations,
    "dorefa_gradient": _dorefa_gradient,
    "pack_signs": _pack_signs,
    "xnor_matmul": _xnor_matmul,
}


# The library's objects that compute each exercise's answer (functions, classes — every
# function in their body —, methods, and the helpers they call to do it): withheld in the
# grading copy of `course` (autograder/pipeline/withheld.py);
# tests/autograder/pipeline/test_withheld.py checks that each one, and every alias of it,
# raises "withheld while grading" in the sandbox.
WITHHELD = {
    "binarize": ("course.quant.binary:binarize", "course.quant.binary:binary_scale",
                 "course.quant.xnor:binary_weight"),
    "sign_ste_backward": ("course.quant.ste:SignSTE", "course.quant.ste:sign_ste"),
    "dorefa_weights": ("course.quant.dorefa:quantize_weights", "course.quant.dorefa:quantize_k",
                       "course.quant.ste:QuantizeKSTE", "course.quant.ste:SignTimesMeanAbsSTE"),
    "dorefa_activations": ("course.quant.dorefa:quantize_activations",
                           "course.quant.dorefa:quantize_k", "course.quant.ste:QuantizeKSTE",
                           "course.nn.dorefa:DoReFaActivation.forward"),
    "dorefa_gradient": ("course.quant.dorefa:stochastic_quantize_gradient",
                        "course.quant.dorefa:quantize_gradients",
                        "course.quant.dorefa:_GradientQuantize"),
    "pack_signs": ("course.kernels.binary.bitpack:pack_signs",
                   "course.kernels.binary.bitpack:pack_sign_bits",
                   "course.kernels.binary.bitpack:_pack_bool",
                   "course.kernels.binary.conv:pack_conv_weight",
                   "course.kernels.binary.conv:pack_conv_input",
                   "course.kernels.binary.conv:pack_conv_input_and_mean_abs",
                   "course.kernels.binary.conv:_pack_channels"),
    "xnor_matmul": ("course.kernels.binary.gemm:xnor_gemm",
                    "course.kernels.binary.gemm:xnor_gemm_words",
                    "course.kernels.binary.gemm:xnor_gemm_reference",
                    "course.kernels.binary.gemm:_xnor_gemm_tiled",
                    "course.kernels.binary.gemm:_xnor_gemm_naive",
                    "course.kernels.binary.gemm:_dot",
                    "course.kernels.binary.conv:binary_conv2d",
                    "course.kernels.binary.conv:binary_conv2d_reference"),
}

def build() -> dict[str, bytes]:
    """Visible and hidden reference files of lab04, as ``{path from repo root: bytes}``."""
    return reference_files(LAB, EXERCISES)
