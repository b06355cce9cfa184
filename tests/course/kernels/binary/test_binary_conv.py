"""Binary convolution by im2col on packed bits, against PyTorch's float64 conv2d."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course.kernels import cpu_features
from course.kernels.binary.bitpack import words_for
from course.kernels.binary.conv import (
    PackedConvWeight,
    binary_conv2d,
    binary_conv2d_reference,
    im2col_packed,
    k_map_from_mean_abs,
    pack_conv_input,
    pack_conv_input_and_mean_abs,
    pack_conv_weight,
)

CASES = [  # (N, C, H, W, O, kernel, stride, padding)
    (1, 1, 1, 1, 1, 1, 1, 0),
    (2, 3, 5, 6, 4, 3, 1, 1),
    (1, 64, 4, 4, 1, 3, 2, 1),
    (2, 65, 6, 5, 17, 3, 1, 0),
    (3, 130, 7, 5, 5, (3, 2), (2, 1), (1, 0)),
    (2, 70, 9, 9, 9, 5, 3, 2),
    (1, 16, 8, 8, 20, 1, 2, 0),
]


def make(case, seed):
    n, c, h, w, o, kernel, _, _ = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen)
    x[x.abs() < 0.2] = 0.0  # exact zeros: sign(0) = +1
    weight = torch.randn(o, c, kh, kw, generator=gen)
    return x, weight


def sign(t):
    return torch.where(t >= 0, 1.0, -1.0).double()


@pytest.mark.parametrize("backend", ["tiled", "naive", None, pytest.param(
    "tiled_avx2", marks=pytest.mark.skipif(cpu_features.native_isa() == "generic",
                                           reason="no AVX2 on this CPU"))])
@pytest.mark.parametrize("case", CASES)
def test_equals_float64_conv_of_signs(case, backend):
    x, weight = make(case, seed=len(str(case)))
    stride, padding = case[6], case[7]
    out = binary_conv2d(x, pack_conv_weight(weight), stride, padding, backend=backend)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    expected = F.conv2d(sign(F.pad(x, (pw, pw, ph, ph))), sign(weight), stride=stride)
    assert out.dtype == torch.int32
    assert torch.equal(out, expected.round().to(torch.int32))
    assert torch.equal(out, binary_conv2d_reference(x, weight, stride, padding))


def test_scaled_output():
    case = (2, 70, 6, 7, 9, 3, 1, 1)
    x, weight = make(case, seed=1)
    gen = torch.Generator().manual_seed(2)
    alpha = torch.rand(9, generator=gen) + 0.1
    k_map = torch.rand(2, 6, 7, generator=gen) + 0.1
    bias = torch.randn(9, generator=gen)
    out = binary_conv2d(x, pack_conv_weight(weight), 1, 1, out_scale=alpha,
                        position_scale=k_map, bias=bias)
    conv = binary_conv2d_reference(x, weight, 1, 1).double()
    expected = conv * alpha.double().view(1, -1, 1, 1) * k_map.double()[:, None] \
        + bias.double().view(1, -1, 1, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-5)
    only_alpha = binary_conv2d(x, pack_conv_weight(weight), 1, 1, out_scale=alpha)
    torch.testing.assert_close(only_alpha.double(), conv * alpha.double().view(1, -1, 1, 1),
                               rtol=1e-6, atol=1e-5)


def test_k_map_computed_while_packing():
    case = (3, 70, 7, 6, 5, (3, 2), (2, 1), (1, 2))
    x, weight = make(case, seed=3)
    words, mean_abs = pack_conv_input_and_mean_abs(x, (1, 2))
    assert np.array_equal(words, pack_conv_input(x, (1, 2)))
    torch.testing.assert_close(mean_abs, x.abs().mean(dim=1))
    k_map = k_map_from_mean_abs(mean_abs, (3, 2), (2, 1), (1, 2))
    padded = F.pad(x.double().abs().mean(dim=1), (2, 2, 1, 1))
    expected = torch.stack([torch.stack([torch.stack(
        [padded[n, 2 * oy:2 * oy + 3, ox:ox + 2].mean() for ox in range(k_map.shape[2])])
        for oy in range(k_map.shape[1])]) for n in range(3)])
    torch.testing.assert_close(k_map.double(), expected)
    alpha = torch.rand(5) + 0.5
    packed = pack_conv_weight(weight)
    with_k = binary_conv2d(x, packed, (2, 1), (1, 2), out_scale=alpha, k_map=True)
    explicit = binary_conv2d(x, packed, (2, 1), (1, 2), out_scale=alpha, position_scale=k_map)
    assert torch.equal(with_k, explicit)


def test_pack_conv_input_layout_and_padding():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 70, 3, 4, generator=gen)
    words = pack_conv_input(x, (1, 2))
    assert words.shape == (2, 5, 8, words_for(70))
    for n in range(2):
        for y in range(5):
            for xx in range(8):
                inside = 1 <= y < 4 and 2 <= xx < 6
                bits = [int(x[n, c, y - 1, xx - 2] >= 0) if inside else 1 for c in range(70)]
                expected = [sum(b << i for i, b in enumerate(bits[:64])),
                            sum(b << i for i, b in enumerate(bits[64:]))]
                assert [int(v) for v in words[n, y, xx]] == expected


def test_im2col_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**63, (2, 6, 5, 3), dtype=np.uint64)
    cols = im2col_packed(words, (3, 2), (2, 1))
    out_h, out_w = (6 - 3) // 2 + 1, (5 - 2) // 1 + 1
    assert cols.shape == (2 * out_h * out_w, 3 * 2 * 3)
    row = 0
    for n in range(2):
        for oy in range(out_h):
            for ox in range(out_w):
                window = words[n, 2 * oy:2 * oy + 3, ox:ox + 2, :]
                assert np.array_equal(cols[row], window.reshape(-1))
                row += 1


def test_packed_weight_storage():
    weight = torch.randn(12, 70, 3, 3)
    packed = pack_conv_weight(weight)
    assert packed.words.shape == (12, 9 * 2)
    assert packed.nbytes == 12 * 9 * 2 * 8
    assert packed.length == 70 * 9
    again = PackedConvWeight.from_tensor(packed.to_tensor(), 70, (3, 3))
    assert np.array_equal(again.words, packed.words)
    exact = pack_conv_weight(torch.randn(8, 64, 3, 3))
    assert exact.nbytes * 32 == 8 * 64 * 9 * 4  # 1 bit per weight when C % 64 == 0


def test_bad_input():
    weight = pack_conv_weight(torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="5 channels but the weight expects 3"):
        binary_conv2d(torch.randn(1, 5, 8, 8), weight)
    with pytest.raises(ValueError, match="NaN"):
        binary_conv2d(torch.full((1, 3, 4, 4), float("nan")), weight)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        binary_conv2d(torch.randn(1, 3, 2, 2), weight)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        binary_conv2d(torch.randn(1, 3, 8, 8), weight, stride=0)
    with pytest.raises(TypeError, match="PackedConvWeight"):
        binary_conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="need out_scale"):
        binary_conv2d(torch.randn(1, 3, 8, 8), weight, bias=torch.zeros(4))
    with pytest.raises(ValueError, match="need out_scale"):
        binary_conv2d(torch.randn(1, 3, 8, 8), weight, k_map=True)
    with pytest.raises(ValueError, match="not both"):
        binary_conv2d(torch.randn(1, 3, 8, 8), weight, out_scale=torch.ones(4), k_map=True,
                      position_scale=torch.ones(1, 6, 6))
    with pytest.raises(ValueError, match=r"out_scale must have shape \(4,\)"):
        binary_conv2d(torch.randn(1, 3, 8, 8), weight, out_scale=torch.ones(3))
    with pytest.raises(ValueError, match="4 dimensions"):
        pack_conv_weight(torch.randn(4, 3, 3))
    with pytest.raises(TypeError, match="floating-point"):
        pack_conv_input(torch.ones(1, 1, 2, 2, dtype=torch.int32))
