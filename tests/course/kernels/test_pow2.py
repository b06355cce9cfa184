"""course.kernels.pow2 against plain Python: codes from the layout written out by hand, bits
packed one by one, and the shift-and-add product against Python's unbounded integers."""

from __future__ import annotations

import math

import pytest
import torch

from course.kernels import pow2


def code_by_hand(v: float, n1: int, n2: int, bits: int) -> int:
    if v == 0:
        return 0
    n = round(math.log2(abs(v)))
    assert 2.0**n == abs(v) and n2 <= n <= n1
    return 1 + (n1 - n) + (2 ** (bits - 2) if v < 0 else 0)


def all_levels(n1: int, n2: int) -> torch.Tensor:
    return torch.tensor([0.0] + [s * 2.0**n for s in (1, -1) for n in range(n2, n1 + 1)])


@pytest.mark.parametrize(("n1", "n2", "bits"), [(0, -7, 5), (-3, -3, 2), (2, -1, 4),
                                                 (5, -58, 8), (0, -1, 5)])
def test_codes_follow_the_layout_and_decode_exactly(n1, n2, bits):
    w = all_levels(n1, n2)
    g = torch.Generator().manual_seed(bits)
    w = w[torch.randint(0, w.numel(), (5, 9), generator=g)]
    codes = pow2.encode_pow2(w, n1, n2, bits)
    assert codes.dtype == torch.uint8 and codes.shape == w.shape
    assert codes.reshape(-1).tolist() == [code_by_hand(v, n1, n2, bits)
                                          for v in w.reshape(-1).tolist()]
    assert int(codes.max()) < 2**bits
    assert torch.equal(pow2.decode_pow2(codes, n1, n2, bits), w)
    assert pow2.decode_pow2(codes, n1, n2, bits).dtype == torch.float32


def test_negative_zero_is_code_zero():
    assert pow2.encode_pow2(torch.tensor([-0.0, 0.0]), 0, -1, 3).tolist() == [0, 0]


@pytest.mark.parametrize(("w", "n1", "n2", "bits", "error", "name"), [
    (torch.tensor([0.3]), 0, -3, 4, ValueError, "w_q"),
    (torch.tensor([2.0]), 0, -3, 4, ValueError, "w_q"),
    (torch.tensor([2.0**-4]), 0, -3, 4, ValueError, "w_q"),
    (torch.tensor([math.inf]), 0, -3, 4, ValueError, "w_q"),
    (torch.tensor([0.5]), 0, -8, 4, ValueError, "n2"),
    (torch.tensor([0.5]), 0, -3, 9, ValueError, "num_bits"),
    (torch.tensor([0.5]), 0, -3, 1, ValueError, "num_bits"),
    (torch.tensor([1]), 0, -3, 4, TypeError, "w_q"),
    ([0.5], 0, -3, 4, TypeError, "w_q"),
    (torch.tensor([0.5]), -4, -3, 4, ValueError, "n2"),
    (torch.tensor([0.5]), 0.0, -3, 4, TypeError, "n1")])
def test_encode_rejects_bad_inputs_naming_them(w, n1, n2, bits, error, name):
    with pytest.raises(error, match=name):
        pow2.encode_pow2(w, n1, n2, bits)


def test_decode_rejects_codes_outside_the_layout():
    with pytest.raises(ValueError, match="codes"):
        pow2.decode_pow2(torch.tensor([9], dtype=torch.uint8), 0, -3, 4)
    with pytest.raises(ValueError, match="codes"):      # exponent below n2 (unused code)
        pow2.decode_pow2(torch.tensor([4], dtype=torch.uint8), 0, -2, 4)
    with pytest.raises(TypeError, match="codes"):
        pow2.decode_pow2(torch.tensor([1.0]), 0, -2, 4)


def pack_by_hand(values: list[int], bits: int) -> list[int]:
    stream = [(v >> b) & 1 for v in values for b in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return [sum(bit << i for i, bit in enumerate(stream[j:j + 8]))
            for j in range(0, len(stream), 8)]


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8])
@pytest.mark.parametrize("count", [1, 7, 8, 13, 64])
def test_packing_matches_a_bit_by_bit_stream_and_round_trips(bits, count):
    g = torch.Generator().manual_seed(bits * 100 + count)
    codes = torch.randint(0, 2**bits, (count,), generator=g).to(torch.uint8)
    packed = pow2.pack_codes(codes, bits)
    assert packed.data.dtype == torch.uint8
    assert packed.nbytes == math.ceil(count * bits / 8)
    assert packed.data.tolist() == pack_by_hand(codes.tolist(), bits)
    assert torch.equal(pow2.unpack_codes(packed), codes)
    matrix = codes.repeat(3).reshape(3, count)
    assert torch.equal(pow2.unpack_codes(pow2.pack_codes(matrix, bits)), matrix)


def test_packing_rejects_bad_inputs():
    with pytest.raises(ValueError, match="codes"):
        pow2.pack_codes(torch.tensor([4], dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="num_bits"):
        pow2.pack_codes(torch.tensor([1], dtype=torch.uint8), 9)
    with pytest.raises(TypeError, match="codes"):
        pow2.pack_codes(torch.tensor([1.0]), 2)
    with pytest.raises(TypeError, match="packed"):
        pow2.unpack_codes(torch.tensor([1], dtype=torch.uint8))


def matvec_by_python(x: torch.Tensor, codes: torch.Tensor, n1: int, n2: int,
                     bits: int) -> list[list[int]]:
    """Python ints (unbounded): each weight an integer 2^(n - n2) with its sign."""
    half = 2 ** (bits - 2)
    weights = []
    for row in codes.tolist():
        ints = []
        for c in row:
            if c == 0:
                ints.append(0)
            else:
                negative = c > half
                n = n1 - (c - 1 - (half if negative else 0))
                ints.append(-(2 ** (n - n2)) if negative else 2 ** (n - n2))
        weights.append(ints)
    return [[sum(a * b for a, b in zip(xr, wr, strict=True)) for wr in weights]
            for xr in x.tolist()]


def random_codes(seed: int, shape: tuple[int, int], n1: int, n2: int, bits: int) -> torch.Tensor:
    levels = all_levels(n1, n2)
    g = torch.Generator().manual_seed(seed)
    return pow2.encode_pow2(levels[torch.randint(0, levels.numel(), shape, generator=g)],
                            n1, n2, bits)


@pytest.mark.parametrize(("dtype", "low", "high"), [(torch.int8, -128, 128),
                                                    (torch.int32, -(2**24), 2**24),
                                                    (torch.int16, -(2**15), 2**15)])
@pytest.mark.parametrize(("n1", "n2", "bits"), [(0, -7, 5), (-2, -2, 2), (3, 0, 4),
                                                 (4, -11, 6)])
def test_shift_matvec_equals_the_exact_integer_product(dtype, low, high, n1, n2, bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.randint(low, high, (5, 37), generator=g).to(dtype)
    codes = random_codes(bits, (6, 37), n1, n2, bits)
    exact = matvec_by_python(x, codes, n1, n2, bits)
    got = pow2.shift_matvec(x, codes, n1, n2, bits)
    assert got.dtype == torch.int64 and got.tolist() == exact
    assert pow2.shift_matvec_reference(x, codes, n1, n2, bits).tolist() == exact


def test_shift_matvec_on_a_layer_sized_product_and_empty_shapes():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (64, 784), generator=g).to(torch.int8)
    codes = random_codes(1, (128, 784), -2, -9, 5)
    assert torch.equal(pow2.shift_matvec(x, codes, -2, -9, 5),
                       pow2.shift_matvec_reference(x, codes, -2, -9, 5))
    empty = pow2.shift_matvec(x[:0], codes, -2, -9, 5)
    assert empty.shape == (0, 128) and empty.dtype == torch.int64


@pytest.mark.parametrize(("x", "codes", "error", "name"), [
    (torch.ones(2, 3), torch.ones(4, 3, dtype=torch.uint8), TypeError, "x"),
    (torch.ones(2, 3, dtype=torch.int8), torch.ones(4, 5, dtype=torch.uint8), ValueError,
     "codes"),
    (torch.ones(3, dtype=torch.int8), torch.ones(4, 3, dtype=torch.uint8), ValueError, "x"),
    (torch.ones(2, 3, dtype=torch.int8), torch.full((4, 3), 99, dtype=torch.uint8), ValueError,
     "codes"),
    (torch.full((2, 3), 2**62, dtype=torch.int64), torch.ones(4, 3, dtype=torch.uint8),
     ValueError, "x")])
def test_shift_matvec_rejects_bad_inputs_naming_them(x, codes, error, name):
    with pytest.raises(error, match=name):
        pow2.shift_matvec(x, codes, 0, -7, 5)


def test_the_kernel_compiles_and_reports_its_time():
    report = pow2.compile_kernels()
    assert report.seconds >= 0


def test_shift_matvec_rejects_a_code_of_an_unused_exponent():
    x = torch.ones(1, 2, dtype=torch.int8)
    codes = torch.tensor([[1, 5]], dtype=torch.uint8)   # exponent 0 - 4 < n2 = -2
    with pytest.raises(ValueError, match="codes"):
        pow2.shift_matvec(x, codes, 0, -2, 5)
    assert pow2.shift_matvec(x, torch.tensor([[1, 3]], dtype=torch.uint8), 0, -2, 5).tolist() \
        == [[5]]
