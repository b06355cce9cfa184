"""Direct int8 convolution in exact float32 arithmetic, fused with max pooling and
requantization: for stride 1 and short reductions (a network's first layer).

An int8 GEMM needs the reduction ``K = kh * kw * C_in`` padded to its block size: for a
3x3 kernel on one input channel (``K = 9``) most of its work, and the im2col copy and the
int32 output traffic around it, is wasted. :func:`direct_conv_requantize` instead

1. splits the padded images of a chunk (tens of images, sized to stay in the L2 cache) into
   the pooling window's *phases* — rows ``r % pool_stride_h``, columns
   ``s % pool_stride_w`` — as float32 planes, so that for every element of the pooling
   window each output channel is a sum of ``K`` contiguous, shifted runs of a plane times
   one weight each: long loops that LLVM turns into SIMD fused multiply-adds, nine taps and
   two output channels per pass;
2. keeps the maximum over the pooling window's elements (requantization is non-decreasing,
   so pooling the accumulators first gives the same codes), requantizes it with the
   integer rule of :mod:`course.kernels.requantize` and writes the codes channels last.

**Exact**: every product of two int8 values is an integer of magnitude at most ``2**14``;
with ``K <= FLOAT32_EXACT_K = 1024`` every partial sum — in any order, with or without
fused multiply-add — is an integer of magnitude at most ``2**24``, which float32 holds
exactly, so the float accumulators *are* the int32 accumulators.

>>> from course.kernels.requantize import prepare_requantize
>>> w = torch.ones(2, 3, 3, 1, dtype=torch.int8)
>>> p = prepare_requantize(2, 2**30, 31, 0)
>>> out = direct_conv_requantize(torch.ones(1, 4, 4, 1, dtype=torch.int8), w, p,
...                              padding=(1, 1), pool=(2, 2, 2, 2))
>>> out[0, :, :, 0]
tensor([[5, 5],
        [5, 5]], dtype=torch.int8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np
import torch

from course.kernels.numba_types import U64 as _U
from course.kernels.requantize import RequantParams, requantize_step, rounding_term

FLOAT32_EXACT_K = 2**24 // 2**14
"""Longest reduction (1024) whose float32 partial sums of int8 products are all exact."""

TAPS_PER_PASS = 9
"""Taps summed per pass over the accumulators, two output channels at a time (the taps are
padded with zero weights to a multiple of this: a 3x3 kernel on one channel is one pass)."""

CHUNK_BYTES = 2**18
"""A chunk of images is sized so that its float32 planes and the accumulators of one pair
of output channels take about this many bytes: long passes (their fixed cost amortized),
still inside a core's L2 cache. (Measured on SmallCNN's first layer: 32 KiB, L1-sized,
was 30% slower.)"""

WORD = 8
"""Channels packed per uint64 word when the codes are stored channels last."""

NO_POOL = (1, 1, 1, 1)



# How a pass over the accumulators combines the sum ``s`` of its taps (for one output
# channel pair): the first pass of a pooling phase starts the sum in ``tmp``, later ones add
# to it, and the last one folds the phase into ``best`` (the maximum over the pooling window).
_INIT, _ACC, _ACC_STORE, _ACC_MAX, _STORE, _MAX = range(6)


@numba.njit(cache=True, nogil=True, inline="always")
def _sums(xs, k, w):  # pragma: no cover - compiled
    """Two output channels' sums over the ``TAPS_PER_PASS`` taps at position ``k``."""
    v0, v1, v2, v3, v4, v5, v6, v7, v8 = (xs[0][k], xs[1][k], xs[2][k], xs[3][k], xs[4][k],
                                          xs[5][k], xs[6][k], xs[7][k], xs[8][k])
    sa = (w[0] * v0 + w[1] * v1 + w[2] * v2 + w[3] * v3 + w[4] * v4 + w[5] * v5 + w[6] * v6
          + w[7] * v7 + w[8] * v8)
    sb = (w[9] * v0 + w[10] * v1 + w[11] * v2 + w[12] * v3 + w[13] * v4 + w[14] * v5
          + w[15] * v6 + w[16] * v7 + w[17] * v8)
    return sa, sb


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _taps_pass(planes, offs, wa, wb, t, n, mode, ta, tb, ba, bb):  # pragma: no cover
    """One pass over ``n`` positions: taps ``t .. t+8`` (read at ``offs[t:t+9]`` in the
    flat phase planes) for two output channels (weight rows ``wa``, ``wb``), combined
    into ``ta``/``tb`` (running sums) or ``ba``/``bb`` (maximum over the pool window)."""
    xs = (planes[offs[t]:], planes[offs[t + 1]:], planes[offs[t + 2]:], planes[offs[t + 3]:],
          planes[offs[t + 4]:], planes[offs[t + 5]:], planes[offs[t + 6]:],
          planes[offs[t + 7]:], planes[offs[t + 8]:])
    w = (wa[t], wa[t + 1], wa[t + 2], wa[t + 3], wa[t + 4], wa[t + 5], wa[t + 6], wa[t + 7],
         wa[t + 8], wb[t], wb[t + 1], wb[t + 2], wb[t + 3], wb[t + 4], wb[t + 5], wb[t + 6],
         wb[t + 7], wb[t + 8])
    if mode == _INIT:
        for k in range(_U(n)):
            ta[k], tb[k] = _sums(xs, k, w)
    elif mode == _ACC:
        for k in range(_U(n)):
            sa, sb = _sums(xs, k, w)
            ta[k] += sa
            tb[k] += sb
    elif mode == _ACC_STORE:
        for k in range(_U(n)):
            sa, sb = _sums(xs, k, w)
            ba[k] = ta[k] + sa
            bb[k] = tb[k] + sb
    elif mode == _ACC_MAX:
        for k in range(_U(n)):
            sa, sb = _sums(xs, k, w)
            sa += ta[k]
            sb += tb[k]
            pa, pb = ba[k], bb[k]
            ba[k] = sa if sa > pa else pa
            bb[k] = sb if sb > pb else pb
    elif mode == _STORE:
        for k in range(_U(n)):
            ba[k], bb[k] = _sums(xs, k, w)
    else:
        for k in range(_U(n)):
            sa, sb = _sums(xs, k, w)
            pa, pb = ba[k], bb[k]
            ba[k] = sa if sa > pa else pa
            bb[k] = sb if sb > pb else pb


@numba.njit(cache=True, nogil=True)
def _fill_planes(x, b0, g, ph, pw, pad, psh, psw, hq, wq, length, planes):  # pragma: no cover
    """Padded images ``b0 .. b0+g-1`` as float32 phase planes.

    Plane ``(c, r % psh, s % psw)`` holds, at ``gi * hq * wq + (r // psh) * wq + s // psw``,
    the padded image ``gi``'s pixel ``(r, s)`` of channel ``c``; each plane is ``length``
    floats long (the tail and unused images hold the pad value).
    """
    _, height, width, channels = x.shape
    planes[:] = np.float32(pad)
    plane = hq * wq
    for c in range(channels):
        for pr in range(psh):
            for pc in range(psw):
                base = (c * psh * psw + pr * psw + pc) * length
                # padded column ss * psw + pc is image column j = ss * psw + pc - pw
                ss_lo = (pw - pc + psw - 1) // psw if pw > pc else 0
                ss_hi = (width + pw - pc + psw - 1) // psw
                for gi in range(g):
                    for rr in range(hq):
                        i = rr * psh + pr - ph
                        if i < 0 or i >= height:
                            continue
                        dst = base + gi * plane + rr * wq
                        src = x[b0 + gi, i]
                        for ss in range(ss_lo, ss_hi):
                            planes[dst + ss] = np.float32(src[ss * psw + pc - pw, c])


@numba.njit(cache=True, nogil=True)
def _requantize_run(acc, n, m, s, bias, zp, lo, hi, q):  # pragma: no cover - compiled
    """``q[k] = requantize(acc[k])`` for one output channel (float32 holding exact ints)."""
    rounding = rounding_term(s)
    for k in range(_U(n)):
        q[k] = requantize_step(acc[k], bias, m, rounding, s, lo, hi, zp)


@numba.njit(cache=True, nogil=True)
def _store_channels_last(q, b0, g, hq, wq, out):  # pragma: no cover - compiled
    """Channel-major codes ``q[C_pad, chunk * hq * wq]`` -> ``out[b0:b0+g]`` channels last."""
    _, out_h, out_w, channels = out.shape
    plane = hq * wq
    if channels % WORD == 0:
        words = channels // WORD
        qu = q.view(np.uint8)
        out64 = out.reshape(-1).view(np.uint64)
        for w in range(words):
            r0, r1, r2, r3 = qu[WORD * w], qu[WORD * w + 1], qu[WORD * w + 2], qu[WORD * w + 3]
            r4, r5, r6, r7 = qu[WORD * w + 4], qu[WORD * w + 5], qu[WORD * w + 6], \
                qu[WORD * w + 7]
            for gi in range(g):
                for i in range(out_h):
                    src = _U(gi * plane + i * wq)
                    dst = _U(((b0 + gi) * out_h + i) * out_w * words + w)
                    for j in range(_U(out_w)):
                        k = src + j
                        out64[dst + j * _U(words)] = (
                            _U(r0[k]) | (_U(r1[k]) << _U(8)) | (_U(r2[k]) << _U(16))
                            | (_U(r3[k]) << _U(24)) | (_U(r4[k]) << _U(32))
                            | (_U(r5[k]) << _U(40)) | (_U(r6[k]) << _U(48))
                            | (_U(r7[k]) << _U(56)))
    else:
        for gi in range(g):
            for i in range(out_h):
                for j in range(out_w):
                    k = gi * plane + i * wq + j
                    for c in range(channels):
                        out[b0 + gi, i, j, c] = q[c, k]


class _Geometry(NamedTuple):
    """The integers :func:`_direct_conv` needs: images per chunk, conv padding and its code,
    pooling strides (the phase planes), the plan's ``hq x wq`` grid and plane tail."""

    chunk: int
    ph: int
    pw: int
    pad: int
    psh: int
    psw: int
    hq: int
    wq: int
    tail: int


class _Requant(NamedTuple):
    """Requantization of :func:`_direct_conv`: ``m``, ``s``, ``bias`` int64 per channel, the
    zero point ``zp``, and the clamp minus the zero point ``lo``, ``hi`` (int64)."""

    m: np.ndarray
    s: np.ndarray
    bias: np.ndarray
    zp: int
    lo: np.int64
    hi: np.int64


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _direct_conv(x, b_lo, b_hi, geometry, offs, wt, requant, out):  # pragma: no cover
    """Images ``b_lo .. b_hi-1``: direct conv (stride 1), pool, requantize, channels last.

    ``geometry``: a :class:`_Geometry`; ``offs[e, t]``: where tap ``t`` of pooling-window
    element ``e`` reads in the flat phase planes (relative to the output position); ``wt``
    float32 ``[C_pad, taps]`` with ``C_pad`` even and ``taps`` a multiple of
    ``TAPS_PER_PASS`` (padding rows and columns are zero); ``requant``: a :class:`_Requant`.
    """
    chunk, ph, pw, pad, psh, psw, hq, wq, tail = geometry
    m, s, bias, zp, lo, hi = requant
    channels_in = x.shape[3]
    channels = out.shape[3]
    windows, taps = offs.shape
    c_pad = wt.shape[0]
    size = chunk * hq * wq
    length = size + tail
    planes = np.empty(channels_in * psh * psw * length, np.float32)
    tmp = np.empty((2, size), np.float32)
    best = np.empty((2, size), np.float32)
    q = np.empty((c_pad, size), np.int8)
    for b0 in range(b_lo, b_hi, chunk):
        g = min(chunk, b_hi - b0)
        n = g * hq * wq  # a last, partial chunk: only its own positions
        _fill_planes(x, b0, g, ph, pw, pad, psh, psw, hq, wq, length, planes)
        for c in range(0, c_pad, 2):
            wa, wb = wt[c], wt[c + 1]
            for e in range(windows):
                for t in range(0, taps, TAPS_PER_PASS):
                    first, last = t == 0, t + TAPS_PER_PASS >= taps
                    if first and last:
                        mode = _STORE if e == 0 else _MAX
                    elif first:
                        mode = _INIT
                    elif last:
                        mode = _ACC_STORE if e == 0 else _ACC_MAX
                    else:
                        mode = _ACC
                    _taps_pass(planes, offs[e], wa, wb, t, n, mode, tmp[0], tmp[1], best[0],
                               best[1])
            for h in range(2):
                if c + h < channels:
                    _requantize_run(best[h], n, m[c + h], s[c + h], bias[c + h], zp, lo, hi,
                                    q[c + h])
        _store_channels_last(q, b0, g, hq, wq, out)


@dataclass(frozen=True, eq=False)
class DirectPlan:
    """What :func:`direct_conv_requantize` precomputes for one layer and input size.

    ``weights`` float32 ``[C_pad, taps]`` (rows ``(c, di, dj)``, zero-padded); ``chunk``
    images per pass; phase planes of ``hq x wq`` positions per image plus ``tail``;
    ``offs`` int64 ``[pool_h * pool_w, taps]``: where each tap of each pooling-window
    element reads in the flat planes.
    """

    weights: np.ndarray
    chunk: int
    hq: int
    wq: int
    tail: int
    offs: np.ndarray


def _check_weight(weight: object) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or weight.dtype != torch.int8 or weight.dim() != 4:
        raise TypeError(f"weight must be an int8 tensor [C_out, kh, kw, C_in], got "
                        f"{getattr(weight, 'dtype', type(weight).__name__)} "
                        f"{tuple(getattr(weight, 'shape', ()))}")
    k = weight.shape[1] * weight.shape[2] * weight.shape[3]
    if k > FLOAT32_EXACT_K:
        raise ValueError(f"kh * kw * C_in = {k} exceeds FLOAT32_EXACT_K = {FLOAT32_EXACT_K}: "
                         "float32 sums would not be exact")
    return weight


def direct_weights(weight: torch.Tensor) -> np.ndarray:
    """int8 ``[C_out, kh, kw, C_in]`` -> float32 ``[C_out rounded up to even, taps]`` with
    columns ordered ``(c, di, dj)`` and zero columns up to a multiple of ``TAPS_PER_PASS``.

    >>> direct_weights(torch.ones(1, 1, 2, 1, dtype=torch.int8)).shape
    (2, 9)
    """
    c_out, kh, kw, c_in = _check_weight(weight).shape
    k = kh * kw * c_in
    taps = math.ceil(k / TAPS_PER_PASS) * TAPS_PER_PASS
    wt = torch.zeros(c_out + c_out % 2, taps, dtype=torch.float32)
    wt[:c_out, :k] = weight.permute(0, 3, 1, 2).reshape(c_out, k).float()
    return wt.numpy()


def direct_plan(weight: torch.Tensor, height: int, width: int, padding: tuple[int, int],
                pool: tuple[int, int, int, int] = NO_POOL) -> DirectPlan:
    """The plan for ``weight`` (int8 ``[C_out, kh, kw, C_in]``) on images of
    ``height x width``, stride 1, ``padding = (ph, pw)``, ``pool = (kh, kw, sh, sw)``.

    >>> direct_plan(torch.ones(4, 3, 3, 1, dtype=torch.int8), 28, 28, (1, 1), (2, 2, 2, 2)).hq
    15
    """
    _, kh, kw, c_in = _check_weight(weight).shape
    ph, pw = padding
    pkh, pkw, psh, psw = pool
    if min(height, width, kh, kw, pkh, pkw, psh, psw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"need positive sizes and non-negative padding, got image "
                         f"{(height, width)}, padding {padding}, pool {pool}")
    if height + 2 * ph - kh + 1 < pkh or width + 2 * pw - kw + 1 < pkw:
        raise ValueError(f"kernel {(kh, kw)} and pool {(pkh, pkw)} do not fit an image of "
                         f"{(height, width)} with padding {padding}")
    hq = math.ceil((height + 2 * ph) / psh)
    wq = math.ceil((width + 2 * pw) / psw)
    per_image = 4 * hq * wq * (c_in * psh * psw + 4)  # planes + tmp and best of a pair
    chunk = max(1, CHUNK_BYTES // per_image)
    tail = ((pkh - 1 + kh - 1) // psh) * wq + (pkw - 1 + kw - 1) // psw
    length = chunk * hq * wq + tail
    weights = direct_weights(weight)
    offs = np.zeros((pkh * pkw, weights.shape[1]), np.int64)
    for a in range(pkh):
        for e in range(pkw):
            t = 0
            for c in range(c_in):
                for di in range(kh):
                    for dj in range(kw):
                        plane = (c * psh + (a + di) % psh) * psw + (e + dj) % psw
                        offs[a * pkw + e, t] = (plane * length + ((a + di) // psh) * wq
                                                + (e + dj) // psw)
                        t += 1
    return DirectPlan(weights, chunk, hq, wq, tail, offs)


def run_direct_plan(x: np.ndarray, out: np.ndarray, images: tuple[int, int], plan: DirectPlan,
                    params: RequantParams, padding: tuple[int, int], pad_value: int,
                    pool: tuple[int, int, int, int]) -> None:
    """The kernel on images ``images[0] .. images[1]-1`` of the contiguous numpy arrays
    ``x`` (int8 ``[B, H, W, C_in]``) and ``out`` (int8 ``[B, H', W', C_out]``), written in
    place. Unchecked, for callers that checked everything once
    (:class:`course.kernels.conv.fused.Conv2dRequantize`,
    :func:`direct_conv_requantize`)."""
    geometry = _Geometry(plan.chunk, padding[0], padding[1], pad_value, pool[2], pool[3],
                         plan.hq, plan.wq, plan.tail)
    requant = _Requant(params.multiplier.numpy(), params.shift.numpy(), params.bias.numpy(),
                       params.zero_point, np.int64(params.qmin - params.zero_point),
                       np.int64(params.qmax - params.zero_point))
    _direct_conv(x, images[0], images[1], geometry, plan.offs, plan.weights, requant, out)


def direct_conv_requantize(x: torch.Tensor, weight: torch.Tensor, params: RequantParams, *,
                           padding: tuple[int, int] = (0, 0), pad_value: int = 0,
                           pool: tuple[int, int, int, int] = NO_POOL) -> torch.Tensor:
    """Stride-1 conv, bias, requantization and max pooling of int8 images, one thread.

    Args:
        x: int8 ``[B, H, W, C_in]``; weight: int8 ``[C_out, kh, kw, C_in]`` with
            ``kh * kw * C_in <= FLOAT32_EXACT_K``.
        params: :class:`course.kernels.requantize.RequantParams` for ``C_out`` channels
            (bias with the input zero point folded in).
        padding, pad_value: conv padding ``(ph, pw)`` and its code (the input zero point).
        pool: ``(kh, kw, stride_h, stride_w)`` of the max pooling (``NO_POOL``: none).

    Returns:
        int8 ``[B, H', W', C_out]``, equal to
        :func:`course.kernels.conv.fused.conv2d_requantize_int8_reference`.
    """
    weight = _check_weight(weight)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.int8 or x.dim() != 4:
        raise TypeError(f"x must be an int8 tensor [B, H, W, C_in], got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.shape[3] != weight.shape[3]:
        raise ValueError(f"x has {x.shape[3]} channels, weight expects {weight.shape[3]}")
    if not isinstance(params, RequantParams) or params.channels != weight.shape[0]:
        raise TypeError(f"params must be RequantParams for {weight.shape[0]} channels")
    if not -128 <= pad_value <= 127:
        raise ValueError(f"pad_value must lie in [-128, 127], got {pad_value}")
    plan = direct_plan(weight, x.shape[1], x.shape[2], padding, pool)
    _, kh, kw, _ = weight.shape
    conv_h, conv_w = x.shape[1] + 2 * padding[0] - kh + 1, x.shape[2] + 2 * padding[1] - kw + 1
    out = torch.empty(x.shape[0], (conv_h - pool[0]) // pool[2] + 1,
                      (conv_w - pool[1]) // pool[3] + 1, weight.shape[0], dtype=torch.int8)
    run_direct_plan(x.contiguous().numpy(), out.numpy(), (0, x.shape[0]), plan, params,
                    padding, pad_value, pool)
    return out
