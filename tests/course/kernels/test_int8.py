"""course.kernels int8 paths against independent references: the int64 loop references,
PyTorch's float64 matmul / conv2d / unfold / max_pool2d (exact on these integers), and
course.quant; bad input raises errors that name the argument."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from course import kernels
from course.kernels import cpu_features
from course.kernels.int8_gemm import FLOAT32_EXACT_BLOCK, MAX_K
from course.quant import affine_qparams, quantize

# The package exports the function int8_gemm under the module's name: fetch the module.
gemm_module = importlib.import_module("course.kernels.int8_gemm")

GEMM_BACKENDS = ["float32_blocked", None]
if kernels.gemm_backend().name == "int_mm":
    GEMM_BACKENDS.insert(0, "int_mm")
# The AVX2 kernel runs wherever the CPU has AVX2 (AVX-512 CPUs too): test it forced there;
# elsewhere (ARM) it is a skip with the reason, never compiled.
AVX2_OK = cpu_features.native_isa() in ("avx2", "avx512")
for _name in ("avx2_madd16", "avx2_maddubs"):
    GEMM_BACKENDS.insert(0, pytest.param(_name, marks=pytest.mark.skipif(
        not AVX2_OK, reason=f"no AVX2 on this CPU (kernel ISA {cpu_features.native_isa()})")))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _int8(shape, seed, low=-128, high=128) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=_gen(seed), dtype=torch.int8)


def _exact_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float64 matmul: exact while |sum| < 2**53 (always, for K <= MAX_K)."""
    return (a.double() @ b.double()).to(torch.int64)


# ------------------------------------------------------------------------------ GEMM


@pytest.mark.parametrize("backend", GEMM_BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 300, 1), (17, 3, 1), (5, 1, 9), (33, 70, 65),
                                   (64, 2 * FLOAT32_EXACT_BLOCK + 3, 8)])
def test_gemm_random_matches_reference(backend, shape):
    m, k, n = shape
    a, b = _int8((m, k), 1), _int8((k, n), 2)
    got = kernels.int8_gemm(a, b, backend=backend)
    assert got.dtype == torch.int32 and got.shape == (m, n)
    assert torch.equal(got, kernels.int8_gemm_reference(a, b))
    assert torch.equal(got.to(torch.int64), _exact_matmul(a, b))


@pytest.mark.parametrize("backend", GEMM_BACKENDS)
@pytest.mark.parametrize("k", [4096, MAX_K])
def test_gemm_extremes_stress_int32_accumulation(backend, k):
    """Rows/columns of -128 and 127: sums up to MAX_K * 2**14, just below 2**31."""
    a = torch.empty(3, k, dtype=torch.int8)
    a[0], a[1], a[2] = -128, 127, _int8((k,), 3)
    b = torch.empty(k, 3, dtype=torch.int8)
    b[:, 0], b[:, 1], b[:, 2] = -128, 127, _int8((k,), 4)
    got = kernels.int8_gemm(a, b, backend=backend)
    assert torch.equal(got.to(torch.int64), _exact_matmul(a, b))
    assert got[0, 0].item() == k * 16384  # 4096 * 2**14 = 2**26 is past float32's 2**24


@pytest.mark.parametrize("backend", GEMM_BACKENDS)
def test_gemm_accepts_strided_operands(backend):
    a = _int8((40, 64), 5)[::2, 1::2]  # [20, 32], not contiguous
    w = _int8((24, 32), 6)  # the weight layout: b = w.t()
    got = kernels.int8_gemm(a, w.t(), backend=backend)
    assert torch.equal(got.to(torch.int64), _exact_matmul(a, w.t()))


@pytest.mark.parametrize("backend", GEMM_BACKENDS)
def test_gemm_handles_degenerate_strides(backend):
    """A [1, K] row that is the transpose of a [K, 1] column has strides (1, 1)."""
    w = _int8((3, 9), 7)
    for a in (_int8((9, 1), 8).t(), _int8((9, 2), 9).t(), _int8((1, 9), 10)):
        for b in (w.t(), w.t().contiguous(), _int8((1, 9), 11).t()):
            got = kernels.int8_gemm(a, b, backend=backend)
            assert torch.equal(got.to(torch.int64), _exact_matmul(a, b)), (a.stride(),
                                                                            b.stride())


def test_gemm_default_path_is_reported_and_verified():
    info = kernels.gemm_backend()
    assert info.name in ("int_mm", "avx2_maddubs", "float32_blocked")
    assert kernels.backend() == info.name
    assert info.reason and info.cpu_capability
    assert kernels.verify_exact(info.name)
    report = kernels.backend_report()
    assert report["int8_gemm"] == info.name and report["int8_gemm_reason"] == info.reason
    if set(info.int8_instructions) & {"avx512_vnni", "amx_int8"}:
        assert info.name == "int_mm", info.reason
    elif cpu_features.kernel_isa() in ("avx2", "avx512"):
        assert info.name == "avx2_maddubs", info.reason
    else:
        assert info.name == "float32_blocked", info.reason
    assert report["kernel_isa"] == cpu_features.kernel_isa() == info.kernel_isa


def _fresh_backend(monkeypatch, isa: str | None):
    if isa is None:
        monkeypatch.delenv(cpu_features.ISA_ENV, raising=False)
    else:
        monkeypatch.setenv(cpu_features.ISA_ENV, isa)
    gemm_module.gemm_backend.cache_clear()
    return gemm_module.gemm_backend()


@pytest.mark.skipif(not AVX2_OK, reason="no AVX2 on this CPU: the AVX2 path cannot run here")
def test_gemm_forced_avx2_is_chosen_reported_and_exact(monkeypatch):
    try:
        info = _fresh_backend(monkeypatch, "avx2")
        assert info.name == "avx2_maddubs" and info.kernel_isa == "avx2"
        assert info.int8_instructions == ()
        if cpu_features.native_isa() != "avx2":   # lowered below this CPU's own: said so
            assert "COURSE_KERNEL_ISA=avx2" in info.reason
        a, b = _int8((37, 1000), 21), _int8((1000, 50), 22)
        a[0], b[:, 0] = -128, -128
        assert torch.equal(kernels.int8_gemm(a, b), kernels.int8_gemm_reference(a, b))
    finally:
        monkeypatch.delenv(cpu_features.ISA_ENV, raising=False)
        gemm_module.gemm_backend.cache_clear()


# ------------------------------------------------- the vpmaddubsw kernel (b in [-127, 127])

needs_avx2 = pytest.mark.skipif(not AVX2_OK, reason="no AVX2 on this CPU: the AVX2 kernels "
                                "are never compiled here")


@needs_avx2
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 31), (3, 4, 33), (65, 127, 97),
                                   (130, 1031, 70), (256, 1024, 256)])
def test_maddubs_kernel_extremes_and_random(shape):
    """a = -128 against b = +-127 (|a| = 128 as an unsigned byte, every int16 pair at its
    largest, 2 * 128 * 127), ragged M, K and N, random entries elsewhere."""
    from course.kernels import int8_gemm_maddubs as mb

    m, k, n = shape
    a, b = _int8((m, k), 31), _int8((k, n), 32, low=-127)
    a[0] = -128
    if m > 1:
        a[1] = 127
    b[:, 0] = 127
    if n > 1:
        b[:, 1] = -127
    packed = mb.pack_b(b)
    want = _exact_matmul(a, b)
    assert torch.equal(mb.gemm_maddubs(a, packed).to(torch.int64), want)
    assert torch.equal(mb.gemm_maddubs(a, packed, parallel=False).to(torch.int64), want)
    if m > 1 and n > 1:
        assert want[0, 0] == -128 * 127 * k and want[0, 1] == 128 * 127 * k


@needs_avx2
def test_maddubs_kernel_at_max_k():
    from course.kernels import int8_gemm_maddubs as mb

    a = torch.full((3, MAX_K), -128, dtype=torch.int8)
    a[2] = _int8((MAX_K,), 33)
    b = torch.full((MAX_K, 2), -127, dtype=torch.int8)
    b[:, 1] = _int8((MAX_K,), 34, low=-127)
    got = mb.gemm_maddubs(a, mb.pack_b(b))
    assert torch.equal(got.to(torch.int64), _exact_matmul(a, b))
    assert got[0, 0].item() == MAX_K * 128 * 127


@needs_avx2
def test_maddubs_kernel_refuses_minus_128_and_the_path_routes_it():
    """b = -128 would wrap in b * sign(a): pack_b refuses it, and the default AVX2 path sends
    such a b to the widened kernel (exact for every input)."""
    from course.kernels import int8_gemm_avx2
    from course.kernels import int8_gemm_maddubs as mb

    b = _int8((40, 5), 35)
    b[3, 2] = -128
    with pytest.raises(ValueError, match="-128"):
        mb.pack_b(b)
    assert isinstance(gemm_module._pack_avx2(b), int8_gemm_avx2.PackedB)
    assert isinstance(gemm_module._pack_avx2(b.clamp(min=-127)), mb.PackedB)
    a = torch.full((4, 40), -128, dtype=torch.int8)
    assert torch.equal(gemm_module.avx2_gemm(a, b), kernels.int8_gemm_reference(a, b))


@needs_avx2
def test_maddubs_fused_epilogues_match_the_separate_passes():
    """Requantization and dequantization applied per task block give the same bits as
    requantize_prepared and dequantize_accumulators on the int32 product."""
    from course.kernels import int8_gemm_maddubs as mb
    from course.kernels.requantize import prepare_requantize

    for m, k, n in [(1, 5, 3), (67, 300, 129), (256, 1024, 200)]:
        a, b = _int8((m, k), 36), _int8((k, n), 37, low=-127)
        a[0], b[:, 0] = -128, 127
        packed = mb.pack_b(b)
        acc = mb.gemm_maddubs(a, packed)
        gen = _gen(38)
        params = prepare_requantize(
            n, torch.randint(2**30, 2**31 - 1, (n,), generator=gen),
            torch.randint(15, 40, (n,), generator=gen), 5,
            bias=torch.randint(-5000, 5000, (n,), generator=gen), qmin=5)
        assert torch.equal(mb.gemm_maddubs_requantize(a, packed, params),
                           kernels.requantize_prepared(acc, params))
        w_scale, w_sum = torch.rand(n, generator=gen), torch.randint(-900, 900, (n,), generator=gen)
        bias = torch.randn(n, generator=gen)
        want = kernels.dequantize_accumulators(acc, 0.021, -7, w_scale, w_sum, bias)
        got = mb.gemm_maddubs_dequantize(
            a, packed, (w_sum.to(torch.int64) * -7).to(torch.float64).numpy(),
            (w_scale * torch.tensor(0.021, dtype=torch.float32)).numpy(), bias.numpy())
        assert torch.equal(got, want)


@needs_avx2
def test_maddubs_inner_loop_has_no_spills():
    """The register tile (8 accumulators, 4 b vectors, broadcast, |a|, product, ones) fits the
    16 ymm registers: no spill or reload in the serial kernel's assembly."""
    import numba

    from course.kernels import int8_gemm_maddubs as mb

    tile = mb._tile

    def probe(a, b, c):  # a fresh, uncached compilation of the tile (cached code has no asm)
        tile(a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], c.ctypes.data, c.shape[1], 0)

    compiled = numba.njit(probe)
    a, b = _int8((mb.MR, 8), 39), _int8((8, mb.NR), 40, low=-127)
    c = torch.empty(mb.MR, mb.NR, dtype=torch.int32)
    compiled(a.numpy(), mb.pack_b(b).data, c.numpy())
    assert torch.equal(c.to(torch.int64), _exact_matmul(a, b))
    asm = "\n".join(compiled.inspect_asm().values())
    assert "vpmaddubsw" in asm and "vpsignb" in asm
    assert "Spill" not in asm and "Reload" not in asm


def test_gemm_forced_generic_uses_the_portable_path(monkeypatch):
    try:
        info = _fresh_backend(monkeypatch, "generic")
        assert info.name == "float32_blocked" and info.kernel_isa == "generic"
    finally:
        monkeypatch.delenv(cpu_features.ISA_ENV, raising=False)
        gemm_module.gemm_backend.cache_clear()


def test_kernel_isa_override_can_only_lower(monkeypatch):
    native = cpu_features.native_isa()
    monkeypatch.setenv(cpu_features.ISA_ENV, "sse9")
    with pytest.raises(ValueError, match="COURSE_KERNEL_ISA must be one of"):
        cpu_features.kernel_isa()
    wider = cpu_features.KERNEL_ISAS[:cpu_features.KERNEL_ISAS.index(native)]
    for isa in wider:
        monkeypatch.setenv(cpu_features.ISA_ENV, isa)
        with pytest.raises(ValueError, match="asks for more than this CPU has"):
            cpu_features.kernel_isa()
    monkeypatch.setenv(cpu_features.ISA_ENV, native)
    assert cpu_features.kernel_isa() == native and not cpu_features.isa_forced()


def test_native_isa_is_generic_off_x86(monkeypatch):
    monkeypatch.setattr(cpu_features.platform, "machine", lambda: "arm64")
    cpu_features.native_isa.cache_clear()
    try:
        assert cpu_features.native_isa() == "generic"
        monkeypatch.delenv(cpu_features.ISA_ENV, raising=False)
        assert cpu_features.kernel_isa() == "generic"
        # the x86 kernel refuses to run (it is never compiled there)
        with pytest.raises(RuntimeError, match="x86-64"):
            gemm_module._IMPLEMENTATIONS["avx2_maddubs"](_int8((2, 2), 1), _int8((2, 2), 2))
    finally:
        cpu_features.native_isa.cache_clear()


@pytest.mark.parametrize("backend", GEMM_BACKENDS)
def test_gemm_with_a_packed_weight(backend):
    w = _int8((70, 300), 23)
    w[0] = -128
    packed = kernels.pack_int8(w.t())
    a = _int8((19, 300), 24)
    want = kernels.int8_gemm_reference(a, w.t())
    assert torch.equal(kernels.int8_gemm(a, packed, backend=backend), want)
    w[1] = 127  # modified in place: the stale panels must not be used
    assert torch.equal(kernels.int8_gemm(a, packed), kernels.int8_gemm_reference(a, w.t()))


def test_gemm_falls_back_loudly_when_the_fast_path_is_not_exact(monkeypatch):
    def off_by_one(a, b):
        return torch._int_mm(a, b) + 1 if hasattr(torch, "_int_mm") else None

    def wrong(a, b):
        return int8_reference_plus_one(a, b)

    monkeypatch.setitem(gemm_module._IMPLEMENTATIONS, "int_mm", off_by_one)
    monkeypatch.setitem(gemm_module._IMPLEMENTATIONS, "avx2_maddubs", wrong)
    monkeypatch.setattr(gemm_module.cpu_features, "int8_dot_instructions",
                        lambda: ("avx512_vnni",))
    gemm_module.gemm_backend.cache_clear()
    try:
        info = gemm_module.gemm_backend()
        assert info.name == "float32_blocked"
        assert "failed the exactness check" in info.reason
    finally:
        gemm_module.gemm_backend.cache_clear()


def int8_reference_plus_one(a, b):
    return kernels.int8_gemm_reference(a, b) + 1


def test_gemm_without_int8_instructions_uses_the_avx2_kernel_or_the_fallback(monkeypatch):
    monkeypatch.setattr(gemm_module.cpu_features, "int8_dot_instructions", lambda: ())
    gemm_module.gemm_backend.cache_clear()
    try:
        info = gemm_module.gemm_backend()
        want = "avx2_maddubs" if cpu_features.kernel_isa() != "generic" else "float32_blocked"
        assert info.name == want and "no int8 dot-product" in info.reason
    finally:
        gemm_module.gemm_backend.cache_clear()


def test_gemm_fallback_stays_exact_under_reduced_float32_precision():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        a = torch.full((2, 3000), -128, dtype=torch.int8)
        b = torch.full((3000, 2), -128, dtype=torch.int8)
        got = kernels.int8_gemm(a, b, backend="float32_blocked")
        assert torch.equal(got.to(torch.int64), _exact_matmul(a, b))
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("a, b, error, match", [
    (torch.ones(2, 3), torch.ones(3, 2, dtype=torch.int8), TypeError, "a must be an int8"),
    (torch.ones(2, 3, dtype=torch.int8), torch.ones(3, 2, dtype=torch.int16), TypeError,
     "b must be an int8"),
    (torch.ones(2, 3, 1, dtype=torch.int8), torch.ones(3, 2, dtype=torch.int8), ValueError,
     "a must be 2-D"),
    (torch.ones(2, 3, dtype=torch.int8), torch.ones(4, 2, dtype=torch.int8), ValueError,
     "inner dimensions"),
    (torch.ones(1, MAX_K + 1, dtype=torch.int8), torch.ones(MAX_K + 1, 1, dtype=torch.int8),
     ValueError, "MAX_K"),
    ([[1]], torch.ones(1, 1, dtype=torch.int8), TypeError, "a must be a torch.Tensor"),
])
def test_gemm_rejects_bad_operands(a, b, error, match):
    with pytest.raises(error, match=match):
        kernels.int8_gemm(a, b)
    with pytest.raises(error, match=match):
        kernels.int8_gemm_reference(a, b)


def test_gemm_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        kernels.int8_gemm(torch.ones(1, 1, dtype=torch.int8), torch.ones(1, 1, dtype=torch.int8),
                          backend="fast")


# ------------------------------------------------------------------------------ conv


def _float64_conv(x, w, stride, padding, pad_value):
    """PyTorch's conv2d in float64 (exact here) on NCHW, padding with the pad value."""
    ph, pw = padding
    xp = F.pad(x.double().permute(0, 3, 1, 2), (pw, pw, ph, ph), value=pad_value)
    out = F.conv2d(xp, w.double().permute(0, 3, 1, 2), stride=stride)
    return out.permute(0, 2, 3, 1).to(torch.int64)


CONV_CASES = [  # (B, H, W, C_in, C_out, (kh, kw), stride, padding, pad_value)
    (2, 7, 9, 3, 5, (3, 3), (1, 1), (1, 1), -3),
    (1, 28, 28, 1, 16, (3, 3), (1, 1), (1, 1), -128),
    (3, 6, 5, 4, 2, (2, 2), (2, 2), (0, 0), 0),
    (1, 5, 5, 2, 3, (3, 3), (2, 2), (1, 1), 127),
    (2, 4, 4, 3, 1, (1, 1), (1, 1), (0, 0), 0),
    (1, 6, 7, 2, 3, (2, 3), (2, 1), (1, 2), 5),
    (1, 3, 3, 1, 1, (3, 3), (1, 1), (0, 0), 0),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_reference_and_float64_conv(case):
    b, h, w, cin, cout, k, stride, padding, pad_value = case
    x, wt = _int8((b, h, w, cin), 7), _int8((cout, *k, cin), 8)
    got = kernels.conv2d_int8(x, wt, stride=stride, padding=padding, pad_value=pad_value)
    ref = kernels.conv2d_int8_reference(x, wt, stride=stride, padding=padding,
                                        pad_value=pad_value)
    assert got.dtype == torch.int32
    assert torch.equal(got, ref)
    assert torch.equal(ref.to(torch.int64), _float64_conv(x, wt, stride, padding, pad_value))


@pytest.mark.parametrize("backend", GEMM_BACKENDS)
def test_conv_extremes_with_long_reduction(backend):
    """C_in = 512, 3x3: K = 4608 products of (-128) * (-128) sum to 75,497,472 > 2**24."""
    x = torch.full((1, 4, 4, 512), -128, dtype=torch.int8)
    wt = torch.full((2, 3, 3, 512), -128, dtype=torch.int8)
    wt[1] = 127
    got = kernels.conv2d_int8(x, wt, padding=1, pad_value=-128, gemm_backend=backend)
    assert got[0, 1, 1, 0].item() == 4608 * 16384
    assert torch.equal(got.to(torch.int64), _float64_conv(x, wt, (1, 1), (1, 1), -128))


@pytest.mark.parametrize("channels, stride", [(3, (1, 2)), (1, (1, 1)), (1, (2, 1))])
def test_im2col_matches_unfold(channels, stride):
    """Both layouts: rows (several channels or strides) and transposed (one channel)."""
    x = _int8((2, 5, 6, channels), 9)
    got = kernels.im2col_int8(x, (2, 3), stride=stride, padding=1, pad_value=4)
    xp = F.pad(x.double().permute(0, 3, 1, 2), (1, 1, 1, 1), value=4)
    cols = F.unfold(xp, (2, 3), stride=stride)  # [B, C * kh * kw, L], columns (c, di, dj)
    b, _, length = cols.shape
    cols = cols.view(b, channels, 2, 3, length).permute(0, 4, 2, 3, 1).reshape(b * length, -1)
    assert torch.equal(got.to(torch.float64), cols)


@pytest.mark.parametrize("x, w, kwargs, error, match", [
    (torch.ones(1, 4, 4, 2), torch.ones(1, 3, 3, 2, dtype=torch.int8), {}, TypeError,
     "x must be an int8"),
    (torch.ones(1, 4, 4, 2, dtype=torch.int8), torch.ones(1, 3, 3, 2, dtype=torch.int32), {},
     TypeError, "weight must be an int8"),
    (torch.ones(4, 4, 2, dtype=torch.int8), torch.ones(1, 3, 3, 2, dtype=torch.int8), {},
     ValueError, "x must be 4-D"),
    (torch.ones(1, 4, 4, 2, dtype=torch.int8), torch.ones(1, 3, 3, 3, dtype=torch.int8), {},
     ValueError, "channels"),
    (torch.ones(1, 2, 2, 1, dtype=torch.int8), torch.ones(1, 3, 3, 1, dtype=torch.int8), {},
     ValueError, "does not fit"),
    (torch.ones(1, 4, 4, 1, dtype=torch.int8), torch.ones(1, 3, 3, 1, dtype=torch.int8),
     {"pad_value": 128}, ValueError, "pad_value"),
    (torch.ones(1, 4, 4, 1, dtype=torch.int8), torch.ones(1, 3, 3, 1, dtype=torch.int8),
     {"stride": 0}, ValueError, "stride"),
    (torch.ones(1, 4, 4, 1, dtype=torch.int8), torch.ones(1, 3, 3, 1, dtype=torch.int8),
     {"padding": 1.5}, TypeError, "padding"),
])
def test_conv_rejects_bad_input(x, w, kwargs, error, match):
    with pytest.raises(error, match=match):
        kernels.conv2d_int8(x, w, **kwargs)


# ------------------------------------------------------------------------------ ReLU, pool


def test_relu_int8_clamps_at_the_zero_point():
    q = _int8((1000,), 10)
    for zp in (-128, -5, 0, 127):
        assert torch.equal(kernels.relu_int8(q, zp), torch.maximum(q, torch.tensor(zp,
                                                                   dtype=torch.int8)))
    with pytest.raises(ValueError, match="zero_point"):
        kernels.relu_int8(q, 200)
    with pytest.raises(TypeError, match="q must be an int8"):
        kernels.relu_int8(q.float(), 0)


@pytest.mark.parametrize("kernel_size, stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (1, 1)])
def test_max_pool_matches_float64_max_pool(kernel_size, stride):
    x = _int8((3, 9, 8, 5), 11)
    x[0, :2, :2, 0] = -128
    got = kernels.max_pool2d_int8(x, kernel_size, stride)
    pooled = F.max_pool2d(x.double().permute(0, 3, 1, 2), kernel_size, stride)
    assert got.dtype == torch.int8
    assert torch.equal(got, pooled.permute(0, 2, 3, 1).to(torch.int8))
    assert torch.equal(got, kernels.max_pool2d_int8_reference(x, kernel_size, stride))


def test_max_pool_rejects_bad_input():
    with pytest.raises(TypeError, match="int8"):
        kernels.max_pool2d_int8(torch.zeros(1, 4, 4, 1), 2)
    with pytest.raises(ValueError, match="larger than the image"):
        kernels.max_pool2d_int8(torch.zeros(1, 1, 4, 1, dtype=torch.int8), 2)


# ------------------------------------------------------------------------------ dynamic


def test_quantize_to_int8_matches_course_quantize_including_ties():
    scale = 0.1
    ties = (torch.arange(-2000, 2000, dtype=torch.float32) + 0.5) * scale
    x = torch.cat([ties, torch.randn(5000, generator=_gen(13)) * 20])
    for zp in (-128, 3, 127):
        got = kernels.quantize_to_int8(x, scale, zp)
        assert torch.equal(got, quantize(x, scale, zp, -128, 127, dtype=torch.int8))


def test_quantize_activations_uses_affine_qparams_on_the_signed_range():
    x = torch.randn(64, 33, generator=_gen(14)) * 3 + 1
    q, scale, zp = kernels.quantize_activations_int8(x)
    ref_scale, ref_zp = affine_qparams(x.min().item(), x.max().item(), 8)
    assert (scale, zp) == (ref_scale, ref_zp - 128)
    assert torch.equal(q, quantize(x, scale, zp, -128, 127, dtype=torch.int8))
    assert q.min().item() == -128 and q.max().item() == 127
    with pytest.raises(ValueError, match="NaN"):
        kernels.quantize_activations_int8(torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="floating-point"):
        kernels.quantize_activations_int8(q)


def test_dequantize_accumulators_matches_float64_formula():
    acc = torch.randint(-(2**24), 2**24, (9, 7), generator=_gen(15), dtype=torch.int32)
    w_scale = torch.rand(7, generator=_gen(16)) * 0.01 + 1e-4
    w_sum = torch.randint(-5000, 5000, (7,), generator=_gen(17))
    bias = torch.randn(7, generator=_gen(18))
    got = kernels.dequantize_accumulators(acc, 0.02, -7, w_scale, w_sum, bias)
    ref = (acc.double() + 7 * w_sum.double()) * (0.02 * w_scale.double()) + bias.double()
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="w_scale must have shape"):
        kernels.dequantize_accumulators(acc, 0.02, 0, w_scale[:3], w_sum)
    with pytest.raises(TypeError, match="acc must be a 2-D int32"):
        kernels.dequantize_accumulators(acc.float(), 0.02, 0, w_scale, w_sum)
