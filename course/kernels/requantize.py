"""Fixed-point requantization: int32 accumulators -> int8 codes with integer arithmetic only.

An int8 layer ``y = x @ w.T + bias`` with input scale ``s_x``, weight scale ``s_w[n]`` and
output qparams ``(s_y, z_y)`` produces int32 accumulators ``acc``. Its int8 output is
``clamp(round((acc + bias_q) * M[n]) + z_y, qmin, qmax)`` with the real multiplier
``M[n] = s_x * s_w[n] / s_y``. Integer-only inference writes ``M = m * 2**-shift`` with an
integer ``m`` in ``[2**30, 2**31)`` (:func:`quantize_multiplier`) and computes

    v   = saturate_int32(acc + bias_q)
    out = clamp(((v * m + 2**(shift - 1)) >> shift) + zero_point, qmin, qmax)

in 64-bit integers (``>>`` is an arithmetic, flooring shift). Rounding rule: round to
nearest, **ties toward +infinity** (one rounding step, not gemmlowp's two). A ReLU is the
clamp with ``qmin = zero_point``.

Each output channel ``n`` (the *last* axis: channels-last) may have its own ``m``, ``shift``
and ``bias_q``. Two paths compute the same bits: ``"numba"`` (one fused, parallel pass over
the int32 input; the default) and ``"torch"`` (separate int64 tensor ops, as PyTorch alone
allows). :func:`requantize_reference` is the obvious Python-integer loop.

>>> m, shift = quantize_multiplier(0.25)
>>> m, shift
(1073741824, 32)
>>> requantize(torch.tensor([[-6, -5, 5, 6, 1000]], dtype=torch.int32), m, shift, 3)
tensor([[  2,   2,   4,   5, 127]], dtype=torch.int8)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numba
import numpy as np
import torch

from course.kernels.numba_types import U64 as _U
from course.quant.checks import check_int

MULTIPLIER_BITS = 31
"""A fixed-point multiplier is an integer in [2**30, 2**31): 31 significant bits."""

MULTIPLIER_MIN, MULTIPLIER_MAX = 2 ** (MULTIPLIER_BITS - 1), 2**MULTIPLIER_BITS - 1

SHIFT_MIN, SHIFT_MAX = 1, 62
"""Right shifts allowed: at least 1 (the rounding term is 2**(shift-1)), at most 62 (the
int64 product of an int32 and a 31-bit multiplier stays below 2**62)."""

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT8_MIN, INT8_MAX = -128, 127

BACKENDS = ("numba", "torch", "reference")


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Integer ``m`` in ``[2**30, 2**31)`` and ``shift`` with ``m * 2**-shift ~ real_multiplier``.

    ``real_multiplier = f * 2**e`` with ``f`` in ``[0.5, 1)`` (``math.frexp``);
    ``m = round(f * 2**31)`` (half to even; ``2**31`` becomes ``2**30`` with ``e + 1``) and
    ``shift = 31 - e``. The relative error is at most ``2**-31``.

    Raises ``ValueError`` unless ``2**-32 <= real_multiplier < 2**30`` after rounding to 31
    significant bits (shift in [1, 62]).

    >>> quantize_multiplier(0.1)
    (1717986918, 34)
    >>> 1717986918 * 2.0**-34
    0.09999999997671694
    """
    if isinstance(real_multiplier, bool) or not isinstance(real_multiplier, numbers.Real):
        raise TypeError(f"real_multiplier must be a real number, got "
                        f"{type(real_multiplier).__name__}")
    real = float(real_multiplier)
    if not math.isfinite(real) or real <= 0:
        raise ValueError(f"real_multiplier must be finite and > 0, got {real}")
    fraction, exponent = math.frexp(real)
    m = round(fraction * 2**MULTIPLIER_BITS)
    if m == 2**MULTIPLIER_BITS:
        m, exponent = m // 2, exponent + 1
    shift = MULTIPLIER_BITS - exponent
    if not SHIFT_MIN <= shift <= SHIFT_MAX:
        raise ValueError(f"real_multiplier {real} is outside [2**-32, 2**30): its shift "
                         f"{shift} is not in [{SHIFT_MIN}, {SHIFT_MAX}]")
    return int(m), int(shift)


def quantize_multiplier_per_channel(real_multipliers: torch.Tensor) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
    """:func:`quantize_multiplier` for each entry of a 1-D float tensor.

    Returns ``(m, shift)``: int32 tensors of the input's length.

    >>> quantize_multiplier_per_channel(torch.tensor([0.25, 0.1], dtype=torch.float64))
    (tensor([1073741824, 1717986918], dtype=torch.int32), tensor([32, 34], dtype=torch.int32))
    """
    if not isinstance(real_multipliers, torch.Tensor):
        raise TypeError(f"real_multipliers must be a torch.Tensor, got "
                        f"{type(real_multipliers).__name__}")
    if not real_multipliers.is_floating_point() or real_multipliers.dim() != 1:
        raise ValueError(f"real_multipliers must be a 1-D float tensor, got "
                         f"{real_multipliers.dtype} of shape {tuple(real_multipliers.shape)}")
    pairs = [quantize_multiplier(v) for v in real_multipliers.tolist()]
    m = torch.tensor([p[0] for p in pairs], dtype=torch.int32)
    shift = torch.tensor([p[1] for p in pairs], dtype=torch.int32)
    return m, shift


def _channel_param(value: object, name: str, channels: int, lo: int, hi: int) -> torch.Tensor:
    """An int or an integer tensor of shape [] / [channels] -> int64 tensor [channels]."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got bool")
    if isinstance(value, numbers.Integral):
        t = torch.full((channels,), int(value), dtype=torch.int64)
    elif isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must have an integer dtype, got {value.dtype}")
        if value.dim() > 1 or value.numel() not in (1, channels):
            raise ValueError(f"{name} must be a number or have shape [{channels}] (one per "
                             f"output channel, the last axis), got {tuple(value.shape)}")
        t = value.reshape(-1).to(torch.int64).expand(channels).contiguous()
    else:
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(value).__name__}")
    if t.numel() and (t.min().item() < lo or t.max().item() > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got values in "
                         f"[{t.min().item()}, {t.max().item()}]")
    return t


@dataclass(frozen=True, eq=False)
class RequantParams:
    """Checked requantization parameters for ``channels`` output channels, ready for reuse.

    ``multiplier``, ``shift`` and ``bias`` are int64 ``[channels]`` (contiguous);
    ``zero_point``, ``qmin`` and ``qmax`` are ints. Build with :func:`prepare_requantize`.
    """

    multiplier: torch.Tensor
    shift: torch.Tensor
    bias: torch.Tensor
    zero_point: int
    qmin: int
    qmax: int

    @property
    def channels(self) -> int:
        return int(self.multiplier.shape[0])


def prepare_requantize(channels: int, multiplier: int | torch.Tensor, shift: int | torch.Tensor,
                       zero_point: int, *, bias: torch.Tensor | None = None,
                       qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> RequantParams:
    """Check the arguments of :func:`requantize` once, for repeated use by a layer.

    >>> p = prepare_requantize(2, 2**30, 31, 0, qmin=0)
    >>> p.multiplier.tolist(), p.shift.tolist(), p.qmin
    ([1073741824, 1073741824], [31, 31], 0)
    """
    channels = check_int(channels, "channels")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    qmin, qmax = check_int(qmin, "qmin"), check_int(qmax, "qmax")
    if not INT8_MIN <= qmin < qmax <= INT8_MAX:
        raise ValueError(f"need -128 <= qmin < qmax <= 127, got qmin={qmin}, qmax={qmax}")
    zp = check_int(zero_point, "zero_point")
    if not qmin <= zp <= qmax:
        raise ValueError(f"zero_point must lie in [qmin, qmax] = [{qmin}, {qmax}], got {zp}")
    m = _channel_param(multiplier, "multiplier", channels, MULTIPLIER_MIN, MULTIPLIER_MAX)
    s = _channel_param(shift, "shift", channels, SHIFT_MIN, SHIFT_MAX)
    b = (torch.zeros(channels, dtype=torch.int64) if bias is None
         else _channel_param(bias, "bias", channels, INT32_MIN, INT32_MAX))
    return RequantParams(m, s, b, zp, qmin, qmax)


def check_accumulators(acc: object, channels: int) -> torch.Tensor:
    """Check that ``acc`` is an int32 tensor whose last axis has ``channels`` entries."""
    if not isinstance(acc, torch.Tensor):
        raise TypeError(f"acc must be a torch.Tensor, got {type(acc).__name__}")
    if acc.dtype != torch.int32:
        raise TypeError(f"acc must be an int32 tensor (the accumulators), got {acc.dtype}")
    if acc.dim() == 0 or acc.shape[-1] != channels:
        raise ValueError(f"acc must have {channels} channels on its last axis, got shape "
                         f"{tuple(acc.shape)}")
    return acc


def _prepare_for(acc, multiplier, shift, zero_point, bias, qmin, qmax) -> RequantParams:
    if not isinstance(acc, torch.Tensor):
        raise TypeError(f"acc must be a torch.Tensor, got {type(acc).__name__}")
    if acc.dim() == 0:
        raise ValueError("acc must have at least one dimension (channels last)")
    params = prepare_requantize(acc.shape[-1], multiplier, shift, zero_point, bias=bias,
                                qmin=qmin, qmax=qmax)
    check_accumulators(acc, params.channels)
    return params


def requantize_reference(acc, multiplier, shift, zero_point, *, bias=None, qmin=INT8_MIN,
                         qmax=INT8_MAX) -> torch.Tensor:
    """The rule of this module, element by element with Python integers (slow, exact).

    Same arguments and result as :func:`requantize`.

    >>> requantize_reference(torch.tensor([6], dtype=torch.int32), 2**30, 32, 0)
    tensor([2], dtype=torch.int8)
    """
    p = _prepare_for(acc, multiplier, shift, zero_point, bias, qmin, qmax)
    m, s, b, zp, qmin, qmax = p.multiplier.tolist(), p.shift.tolist(), p.bias.tolist(), \
        p.zero_point, p.qmin, p.qmax
    values = acc.reshape(-1, p.channels).tolist()
    out = []
    for row in values:
        for n, a in enumerate(row):
            v = min(max(a + b[n], INT32_MIN), INT32_MAX)
            q = ((v * m[n] + (1 << (s[n] - 1))) >> s[n]) + zp
            out.append(min(max(q, qmin), qmax))
    return torch.tensor(out, dtype=torch.int8).reshape(acc.shape)


def _requantize_torch(acc: torch.Tensor, p: RequantParams) -> torch.Tensor:
    v = torch.clamp(acc.to(torch.int64) + p.bias, INT32_MIN, INT32_MAX)
    q = torch.bitwise_right_shift(v * p.multiplier + (1 << (p.shift - 1)), p.shift)
    return torch.clamp(q + p.zero_point, p.qmin, p.qmax).to(torch.int8)




@numba.njit(cache=True, nogil=True, inline="always")
def rounding_term(s):  # pragma: no cover - compiled
    """``2**(s - 1)`` as int64: added before the right shift ``s``, it rounds half up."""
    return np.int64(1) << (s - 1)


@numba.njit(cache=True, nogil=True, inline="always")
def requantize_step(acc, bias, m, rounding, s, lo, hi, zp):  # pragma: no cover - compiled
    """One accumulator -> its int8 code by this module's rule, for the numba kernels (every
    kernel that requantizes calls this, inlined).

    ``acc``: an int32 (or a float32 holding an exact integer); ``bias``, ``m``, ``s`` the
    channel's int64 parameters; ``rounding = rounding_term(s)``, computed once by the caller;
    ``lo = qmin - zp`` and ``hi = qmax - zp`` (int64). ``m < 2**31`` and the biased value is
    clamped to int32, so the product is a 32 x 32 -> 64-bit multiply (``vpmuldq``).
    """
    v = min(max(np.int64(np.int32(acc)) + bias, INT32_MIN), INT32_MAX)
    r = (np.int64(np.int32(v)) * np.int64(np.int32(m)) + rounding) >> s
    return np.int8(min(max(r, lo), hi) + zp)


@numba.njit(cache=True, nogil=True)
def _requantize_rows(acc, m, s, b, zp, qmin, qmax, out):  # pragma: no cover - compiled
    rows, channels = acc.shape
    c = _U(channels)
    rounding = np.empty(channels, np.int64)
    for n in range(channels):
        rounding[n] = rounding_term(s[n])
    lo, hi = np.int64(qmin - zp), np.int64(qmax - zp)
    flat_acc, flat_out = acc.reshape(-1), out.reshape(-1)
    for r in range(_U(rows)):
        base = r * c
        for n in range(c):
            flat_out[base + n] = requantize_step(flat_acc[base + n], b[n], m[n], rounding[n],
                                                 s[n], lo, hi, zp)


@numba.njit(cache=True, nogil=True)
def requantize_block(acc, r0, r1, c0, c1, m, s, b, zp, qmin, qmax,
                     out):  # pragma: no cover - compiled
    """``out[r, n]`` for ``r0 <= r < r1``, ``c0 <= n < c1``: the rule of this module on the
    int32 ``acc[r, n]`` (2-D arrays, any row strides; per-channel ``m``, ``s``, ``b`` int64).
    For kernels that requantize a block of their own accumulators while it is in cache."""
    lo, hi = np.int64(qmin - zp), np.int64(qmax - zp)
    for r in range(_U(r0), _U(r1)):
        for n in range(_U(c0), _U(c1)):  # unsigned: no wraparound checks
            out[r, n] = requantize_step(acc[r, n], b[n], m[n], rounding_term(s[n]), s[n], lo,
                                        hi, zp)


def _requantize_numba(acc: torch.Tensor, p: RequantParams) -> torch.Tensor:
    flat = acc.reshape(-1, p.channels).contiguous()
    out = torch.empty(flat.shape, dtype=torch.int8)
    _requantize_rows(flat.numpy(), p.multiplier.numpy(), p.shift.numpy(), p.bias.numpy(),
                     p.zero_point, p.qmin, p.qmax, out.numpy())
    return out.reshape(acc.shape)


def requantize_prepared(acc: torch.Tensor, params: RequantParams,
                        backend: str = "numba") -> torch.Tensor:
    """:func:`requantize` with parameters checked once by :func:`prepare_requantize`.

    >>> p = prepare_requantize(1, 2**30, 32, 0)
    >>> requantize_prepared(torch.tensor([[6]], dtype=torch.int32), p)
    tensor([[2]], dtype=torch.int8)
    """
    if not isinstance(params, RequantParams):
        raise TypeError(f"params must be RequantParams (from prepare_requantize), got "
                        f"{type(params).__name__}")
    acc = check_accumulators(acc, params.channels)
    if backend == "numba":
        return _requantize_numba(acc, params)
    if backend == "torch":
        return _requantize_torch(acc, params)
    if backend == "reference":
        return requantize_reference(acc, params.multiplier, params.shift, params.zero_point,
                                    bias=params.bias, qmin=params.qmin, qmax=params.qmax)
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def requantize(acc: torch.Tensor, multiplier: int | torch.Tensor, shift: int | torch.Tensor,
               zero_point: int, *, bias: torch.Tensor | None = None, qmin: int = INT8_MIN,
               qmax: int = INT8_MAX, backend: str = "numba") -> torch.Tensor:
    """int32 accumulators -> int8 codes by fixed-point multiply, rounding shift and clamp.

    Args:
        acc: int32 ``[..., N]``, channels last (e.g. ``int8_gemm`` output ``[M, N]`` or a
            conv's ``[B, H, W, N]``).
        multiplier: int in ``[2**30, 2**31)``, or an integer tensor ``[N]`` (per channel).
        shift: right shift in ``[1, 62]``, int or integer tensor ``[N]``.
        zero_point: output zero point, an int in ``[qmin, qmax]``.
        bias: optional integer tensor ``[N]`` in int32 range, added (saturating) before
            scaling. Fold the input zero point in here: ``bias - z_x * w.sum(1)``.
        qmin, qmax: output clamp, ``-128 <= qmin < qmax <= 127``; ``qmin = zero_point``
            is a fused ReLU.
        backend: ``"numba"`` (fused single pass), ``"torch"`` (separate int64 ops) or
            ``"reference"`` (:func:`requantize_reference`); all give the same bits.

    Returns:
        int8 tensor of ``acc``'s shape.

    >>> requantize(torch.tensor([[100, -100]], dtype=torch.int32),
    ...            torch.tensor([2**30, 2**30]), torch.tensor([31, 32]), 0,
    ...            bias=torch.tensor([1, 0]), qmin=0)
    tensor([[51,  0]], dtype=torch.int8)
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    params = _prepare_for(acc, multiplier, shift, zero_point, bias, qmin, qmax)
    return requantize_prepared(acc, params, backend)
