"""XNOR + popcount GEMM: every backend against float64 matmul of the ±1 matrices."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from course.kernels import cpu_features
from course.kernels.binary import gemm as xg
from course.kernels.binary.bitpack import pack_sign_bits, pack_signs

SHAPES = [  # (M, N, K): edges of the 4 x 16 tile, K around word boundaries, M or N of 1
    (1, 1, 1), (1, 1, 64), (1, 37, 100), (29, 1, 100), (1, 16, 65), (4, 16, 64),
    (4, 16, 128), (5, 17, 63), (8, 32, 129), (13, 15, 200), (3, 40, 784), (33, 70, 1000),
    (64, 48, 4096),
]


NO_AVX2 = "no AVX2 on this CPU: the AVX2 tile is never compiled here"
RUNNABLE = [b for b in xg.BACKENDS if b != "tiled_avx2" or cpu_features.native_isa() != "generic"]
PARAMS = [pytest.param(b, marks=pytest.mark.skipif(b not in RUNNABLE, reason=NO_AVX2))
          for b in xg.BACKENDS]


def signs(shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.randn(shape, generator=gen) >= 0, 1.0, -1.0)


def expected_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() @ b.double().T).round().to(torch.int32)


@pytest.mark.parametrize("backend", PARAMS)
@pytest.mark.parametrize(("m", "n", "k"), SHAPES + [(7, 9, 64 * 62 + 1), (3, 8, 64 * 31)])
def test_equals_float64_matmul(backend, m, n, k):
    gen = torch.Generator().manual_seed(m * 1000 + n * 10 + k)
    a, b = signs((m, k), gen), signs((n, k), gen)
    out = xg.xnor_gemm(pack_signs(a), pack_signs(b), backend=backend)
    assert out.dtype == torch.int32 and out.shape == (m, n)
    assert torch.equal(out, expected_dots(a, b))


def test_random_shapes_tiled_against_reference():
    rng = np.random.default_rng(7)
    gen = torch.Generator().manual_seed(7)
    for _ in range(12):
        m, n, k = (int(v) for v in rng.integers(1, [70, 70, 600]))
        a, b = signs((m, k), gen), signs((n, k), gen)
        pa, pb = pack_signs(a), pack_signs(b)
        tiled = xg.xnor_gemm(pa, pb)
        assert torch.equal(tiled, xg.xnor_gemm_reference(pa, pb)), (m, n, k)
        assert torch.equal(tiled, expected_dots(a, b)), (m, n, k)


def test_extreme_values_all_agree_and_all_differ():
    k = 300
    ones = torch.ones(5, k)
    assert torch.equal(xg.xnor_gemm(pack_signs(ones), pack_signs(ones)),
                       torch.full((5, 5), k, dtype=torch.int32))
    assert torch.equal(xg.xnor_gemm(pack_signs(ones), pack_signs(-ones[:3])),
                       torch.full((5, 3), -k, dtype=torch.int32))


@pytest.mark.parametrize(("m", "n", "k"), [(1, 1, 10), (6, 19, 130), (8, 32, 64)])
def test_scaled_output_fuses_scales_and_bias(m, n, k):
    gen = torch.Generator().manual_seed(11)
    x, w = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)
    rows, cols = torch.rand(m, generator=gen) + 0.1, torch.rand(n, generator=gen) + 0.1
    bias = torch.randn(n, generator=gen)
    sx, sw = torch.where(x >= 0, 1.0, -1.0), torch.where(w >= 0, 1.0, -1.0)
    expected = (sx.double() @ sw.double().T) * rows.double()[:, None] * cols.double() + bias
    results = {backend: xg.xnor_gemm(pack_sign_bits(x), pack_sign_bits(w), row_scale=rows,
                                     col_scale=cols, bias=bias, backend=backend)
               for backend in RUNNABLE}
    for out in results.values():
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-5)
    # The vector epilogue does the scalar one's operations in the same order: same bits.
    assert torch.equal(results["tiled"], results["naive"])
    if "tiled_avx2" in results:
        assert torch.equal(results["tiled_avx2"], results["naive"])


def test_default_backend_follows_the_cpu(monkeypatch):
    monkeypatch.delenv(cpu_features.ISA_ENV, raising=False)
    native = cpu_features.native_isa()
    assert xg.default_backend() == ("tiled_avx2" if native == "avx2" else "tiled")
    if native == "avx512":  # AVX-512 keeps its tile; forced AVX2 takes the AVX2 one
        monkeypatch.setenv(cpu_features.ISA_ENV, "avx2")
        assert xg.default_backend() == "tiled_avx2"
        a, b = signs((10, 700), torch.Generator().manual_seed(1)), signs(
            (11, 700), torch.Generator().manual_seed(2))
        assert torch.equal(xg.xnor_gemm(pack_signs(a), pack_signs(b)), expected_dots(a, b))


def test_avx2_tile_is_refused_off_x86(monkeypatch):
    monkeypatch.setattr(cpu_features, "native_isa", lambda: "generic")
    a = pack_signs(torch.ones(2, 8))
    with pytest.raises(RuntimeError, match="x86-64"):
        xg.xnor_gemm(a, a, backend="tiled_avx2")


def test_mismatched_k_is_refused():
    a = pack_signs(torch.ones(2, 64))
    b = pack_signs(torch.ones(3, 65))
    with pytest.raises(ValueError, match="same K"):
        xg.xnor_gemm(a, b)
    c = pack_signs(torch.ones(3, 63))  # same number of words, different K
    with pytest.raises(ValueError, match="same K"):
        xg.xnor_gemm(a, c)


def test_bad_arguments():
    a = pack_signs(torch.ones(2, 8))
    with pytest.raises(TypeError, match="a must be a PackedBits"):
        xg.xnor_gemm(torch.ones(2, 8), a)
    with pytest.raises(ValueError, match="2-D"):
        xg.xnor_gemm(pack_signs(torch.ones(8)), a)
    with pytest.raises(ValueError, match="backend"):
        xg.xnor_gemm(a, a, backend="fast")
    with pytest.raises(ValueError, match="together"):
        xg.xnor_gemm(a, a, row_scale=torch.ones(2))
    with pytest.raises(ValueError, match="bias needs"):
        xg.xnor_gemm(a, a, bias=torch.ones(2))
    with pytest.raises(ValueError, match=r"col_scale must have shape \(2,\)"):
        xg.xnor_gemm(a, a, row_scale=torch.ones(2), col_scale=torch.ones(3))


def test_panel_layout():
    rng = np.random.default_rng(3)
    b = rng.integers(0, 2**63, (21, 5), dtype=np.uint64)
    panels = xg.panel_layout(b)
    assert panels.shape == (2, 5, xg.TILE_COLS)
    for j in range(21):
        p, c = divmod(j, xg.TILE_COLS)
        assert np.array_equal(panels[p, :, c], b[j])
    assert not panels[1, :, 21 - xg.TILE_COLS:].any()  # padding rows are zero
    narrow = xg.panel_layout(b, 8)
    assert narrow.shape == (3, 5, 8) and np.array_equal(narrow[2, :, 4], b[20])
    assert not narrow[2, :, 5:].any()


@numba.njit
def _popcounts(values):
    out = np.empty(values.shape[0], dtype=np.uint64)
    for i in range(values.shape[0]):
        out[i] = xg.popcount64(values[i])
    return out


def test_popcount_intrinsic_matches_python():
    rng = np.random.default_rng(5)
    values = np.concatenate([np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64),
                             rng.integers(0, 2**64 - 1, 200, dtype=np.uint64)])
    counts = _popcounts(values)
    assert [int(c) for c in counts] == [int(v).bit_count() for v in values]


def test_compile_report_and_kernel_info():
    report = xg.compile_kernels()
    assert report.seconds >= 0
    assert report.source in ("disk cache", "compiled")
    assert xg.compile_kernels() is report  # measured once per process
    info = xg.kernel_info()
    assert info["threads"] >= 1 and info["backend"] == xg.default_backend()
    if info["backend"] == "tiled_avx2":
        assert info["popcount"] == "vpshufb" and info["vector_bits"] == 256
    elif "avx512_vpopcntdq" in cpu_features.cpu_flags():
        assert info["popcount"] == "vpopcntq"
        assert info["vector_bits"] == 512
