"""Bit packing along K: layout, round trips, padding and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course.kernels.binary.bitpack import (
    WORD_BITS,
    PackedBits,
    pack_sign_bits,
    pack_signs,
    unpack_signs,
    words_for,
)


def random_signs(shape: tuple[int, ...], seed: int, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(dtype)


def words_by_loop(row: list[int]) -> list[int]:
    """Plain Python packing of one ±1 row: element k -> word k // 64, bit k % 64."""
    words = [0] * words_for(len(row))
    for k, value in enumerate(row):
        if value == 1:
            words[k // WORD_BITS] |= 1 << (k % WORD_BITS)
    return words


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 127, 128, 200, 784])
def test_layout_matches_a_plain_loop(length):
    x = random_signs((3, length), seed=length)
    packed = pack_signs(x)
    assert packed.words.dtype == np.uint64
    assert packed.words.shape == (3, words_for(length))
    for i in range(3):
        expected = words_by_loop([int(v) for v in x[i]])
        assert [int(w) for w in packed.words[i]] == expected


@pytest.mark.parametrize("shape", [(1,), (5,), (64,), (2, 3, 65), (4, 1), (7, 130)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int8, torch.int64])
def test_round_trip(shape, dtype):
    x = random_signs(shape, seed=sum(shape), dtype=dtype)
    packed = pack_signs(x)
    assert packed.shape == shape
    back = unpack_signs(packed, dtype=dtype)
    assert back.dtype == dtype
    assert torch.equal(back, x)


def test_numpy_input_and_all_equal_rows():
    ones = np.ones((2, 70))
    packed = pack_signs(ones)
    assert int(packed.words[0, 0]) == 2**64 - 1
    assert int(packed.words[0, 1]) == 2**6 - 1  # 6 real bits in the second word, rest 0
    minus = pack_signs(-ones)
    assert not minus.words.any()


def test_padding_bits_are_zero_and_do_not_bias_the_dot_product():
    length = 100
    a, b = random_signs((1, length), seed=1), random_signs((1, length), seed=2)
    pa, pb = pack_signs(a), pack_signs(b)
    tail = length % WORD_BITS
    assert int(pa.words[0, -1]) >> tail == 0
    differing = sum(int(x ^ y).bit_count() for x, y in zip(pa.words[0], pb.words[0],
                                                            strict=True))
    assert length - 2 * differing == int((a.double() @ b.double().T).item())


def test_pack_sign_bits_uses_sign_zero_plus_one():
    x = torch.tensor([[-2.0, 0.0, -0.0, 1e-30, -1e-30, 3.0, float("inf"), float("-inf")]])
    expected = torch.tensor([[-1, 1, 1, 1, -1, 1, 1, -1]])
    assert np.array_equal(pack_sign_bits(x).words, pack_signs(expected).words)


def test_pack_sign_bits_matches_pack_signs_of_sign_on_random_data():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 333, generator=gen)
    x[x.abs() < 0.1] = 0.0
    signs = torch.where(x >= 0, 1.0, -1.0)
    assert np.array_equal(pack_sign_bits(x).words, pack_signs(signs).words)


def test_nbytes_is_one_bit_per_value_when_k_is_a_multiple_of_64():
    x = random_signs((512, 64 * 8), seed=4)
    packed = pack_signs(x)
    assert packed.nbytes * 32 == x.numel() * 4
    odd = pack_signs(random_signs((10, 784), seed=5))
    assert odd.nbytes == 10 * 13 * 8  # 784 bits need 13 words


def test_tensor_round_trip():
    packed = pack_signs(random_signs((4, 90), seed=6))
    stored = packed.to_tensor()
    assert stored.dtype == torch.int64
    again = PackedBits.from_tensor(stored, 90)
    assert again.length == 90
    assert np.array_equal(again.words, packed.words)


@pytest.mark.parametrize("bad", [0.0, 0.5, 2.0, float("nan"), -3.0])
def test_non_binary_values_are_refused(bad):
    x = torch.ones(2, 10)
    x[1, 7] = bad
    with pytest.raises(ValueError, match=r"only -1 and \+1.*\(1, 7\)"):
        pack_signs(x)


@pytest.mark.parametrize("call", [pack_signs, pack_sign_bits])
def test_bad_input_types_and_shapes(call):
    with pytest.raises(TypeError, match="x must be"):
        call([1, -1])
    with pytest.raises(ValueError, match="non-empty last axis"):
        call(torch.ones(3, 0))
    with pytest.raises(ValueError, match="non-empty last axis"):
        call(torch.tensor(1.0))
    with pytest.raises(TypeError, match="real"):
        call(torch.ones(2, dtype=torch.complex64))


def test_nan_has_no_sign():
    with pytest.raises(ValueError, match="NaN"):
        pack_sign_bits(torch.tensor([1.0, float("nan")]))


def test_packed_bits_checks_its_fields():
    words = np.zeros((2, 2), dtype=np.uint64)
    with pytest.raises(ValueError, match="needs 1 words"):
        PackedBits(words, 64)
    with pytest.raises(TypeError, match="uint64"):
        PackedBits(words.astype(np.int64), 100)
    words[0, 1] = np.uint64(1) << np.uint64(40)
    with pytest.raises(ValueError, match="padding bits"):
        PackedBits(words, 100)
    with pytest.raises(TypeError, match="PackedBits"):
        unpack_signs(words)
    with pytest.raises(ValueError, match="non-negative"):
        words_for(-1)
