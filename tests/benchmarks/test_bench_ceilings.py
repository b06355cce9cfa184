"""The ceilings loops of benchmarks/ceilings.c compute what they say they compute (so that
the compiler cannot have dropped their work): each one's result for a few iterations equals
the same sums done here in Python. No speed is asserted."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_ceilings

M64 = (1 << 64) - 1


@pytest.fixture(scope="module")
def lib():
    library, how = bench_ceilings.compile_library()
    if library is None:
        pytest.skip(how)
    return library


def _present(lib, name: str) -> None:
    if name not in bench_ceilings.available_loops(lib):
        pytest.skip(f"{name}: this CPU (or compiler) lacks its instructions")


def _pc(x: int) -> int:
    return bin(x & M64).count("1")


def test_popcnt_loop_sums_the_popcounts_it_claims(lib):
    iters = 37
    w = [(0x9E3779B97F4A7C15 * (k + 1)) & M64 for k in range(16)]
    b0, b1 = 0x123456789ABCDEF0, 0x0BADF00DDEADBEEF
    total = 0
    for i in range(iters):
        x, y = w[i & 15], w[(i + 5) & 15]
        total += sum(_pc(v) for v in (x ^ b0, x ^ b1, y ^ b0, y ^ b1, x ^ y, ~x ^ b0,
                                      ~y ^ b1, x ^ ~y))
    assert lib.binary_popcnt(iters) == total


def _pc32_set1(m: int) -> int:
    """Bits set in a 256-bit vector of eight copies of word m of the loops' buffer, XOR b."""
    return 8 * bin(((0x9E3779B9 * (m + 1)) & 0xFFFFFFFF) ^ 0x12345678).count("1")


def test_shuffle_loop_counts_every_bit(lib):
    _present(lib, "binary_shuffle")
    iters = 5
    expected = sum(_pc32_set1(((i & 1) << 5) + m) for i in range(iters) for m in range(32))
    assert lib.binary_shuffle(iters) == expected


def test_mixed_loop_counts_both_halves(lib):
    _present(lib, "binary_mixed")
    iters = 6
    vector = sum(_pc32_set1(((i & 3) << 4) + m) for i in range(iters) for m in range(16))
    q = [(0x9E3779B97F4A7C15 * (m + 3)) & M64 for m in range(64)]
    scalar = sum(_pc(q[((i & 1) << 5) + m] ^ 0x123456789ABCDEF0)
                 for i in range(iters) for m in range(32))
    assert lib.binary_mixed(iters) == vector + scalar


def test_maddubs_loop_multiplies_unsigned_by_signed_bytes(lib):
    _present(lib, "int8_maddubs")
    iters = 19
    # a[m] holds byte (7m + 1) mod 256, read unsigned; b = 3. Per step and int32 lane: four
    # products; eight lanes.
    expected = sum(8 * 4 * 3 * (((8 * (i & 7) + j) * 7 + 1) & 255)
                   for i in range(iters) for j in range(8))
    assert lib.int8_maddubs(iters) == expected


def test_fma_loop_iterates_its_chains(lib):
    iters = 200
    lanes = bench_ceilings._macs_per_iter(lib, "fp32_fma") // 10
    c = np.float32(0.001) * np.arange(1, lanes + 1, dtype=np.float32)
    chains = [c * np.float32(k) for k in range(1, 11)]
    for _ in range(iters):
        chains = [a * np.float32(0.999) + c for a in chains]
    assert lib.fp32_fma(iters) == pytest.approx(float(np.sum(chains, dtype=np.float64)),
                                                rel=1e-5)


def test_every_loop_counts_its_work(lib):
    loops = bench_ceilings.available_loops(lib)
    assert "fp32_fma" in loops and "binary_popcnt" in loops   # portable C: always there
    rates = bench_ceilings.measure_ceilings(lib, loops, rounds=1, min_seconds=0.001)
    assert set(rates) == set(loops) and all(r > 0 for r in rates.values())


def test_no_compiler_is_a_reason_not_an_error(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(bench_ceilings, "cache_folder", lambda: __import__("pathlib").Path(
        __import__("tempfile").mkdtemp()))
    lib, how = bench_ceilings.compile_library()
    assert lib is None and "ceilings not measured" in how


@pytest.mark.parametrize(("instructions", "amx"), [("avx512_vnni, avx_vnni, amx_int8", True),
                                                   ("avx512_vnni", False), ("", False)])
def test_a_gemm_above_its_ceiling_names_the_instructions_no_loop_measures(
        monkeypatch, instructions, amx):
    monkeypatch.setattr(bench_ceilings.kernels, "backend_report",
                        lambda: {"int8_instructions": instructions})
    reason = bench_ceilings.beyond("int8")
    assert ("AMX" in reason) is amx
    assert "AMX" not in bench_ceilings.beyond("binary")
