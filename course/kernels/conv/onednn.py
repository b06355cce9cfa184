"""Exact conv accumulators from oneDNN's int8 convolution, verified before use.

PyTorch's x86 quantized convolution (``torch.ops.onednn.qconv2d_pointwise``, the kernel
behind ``torch.ao``'s quantized ``Conv2d``) multiplies uint8 activations by int8 weights
with int32 accumulation (VNNI/AMX) and normally requantizes in float to 8 bits — not this
course's integer-only rule. Asked instead for a **float32 output with every scale 1.0 and
no bias**, it returns ``float32(acc)`` with

    acc[b, i, j, o] = sum over (di, dj, c) of (x_u8_pad - x_zp) * w[o, di, dj, c]

where the padding holds ``x_zp``. Feeding the int8 codes as ``x_u8 = x + 128`` with
``x_zp = pad_value + 128`` gives exactly

    acc = conv2d_int8(x, w, pad_value=pad_value) - pad_value * w[o].sum()

(:func:`onednn_accumulators_reference`). Each product is an integer of magnitude at most
``255 * 128 < 2**15``; with ``K = kh * kw * C_in <= ONEDNN_EXACT_K = 512`` every sum is an
integer of magnitude below ``2**24``, which float32 holds exactly. Whether the library
really computes that — the op is internal to PyTorch and its kernel depends on the CPU and
the shapes — is not assumed: :meth:`OneDnnConv.verify` compares it bit for bit with the
verified int8 GEMM path (:func:`course.kernels.conv.im2col.conv2d_int8`) on each new input
shape, extremes included, and callers fall back when it fails.

>>> w = torch.ones(1, 3, 3, 1, dtype=torch.int8)
>>> conv = OneDnnConv(w, padding=1, pad_value=-1) if onednn_available() else None
>>> x = torch.ones(1, 3, 3, 1, dtype=torch.int8)
>>> conv is None or conv(x)[0, :, :, 0].tolist() == [[8.0, 12.0, 8.0], [12.0, 18.0, 12.0],
...                                                   [8.0, 12.0, 8.0]]
True
"""

from __future__ import annotations

import functools

import torch

from course.kernels import cpu_features
from course.kernels.conv.im2col import (
    conv2d_int8,
    conv2d_int8_reference,
)
from course.quant.checks import check_int8, check_pad_value, pair

UINT8_OFFSET = 128
"""int8 code ``q`` is uint8 code ``q + 128`` (the sign bit flipped)."""

ONEDNN_EXACT_K = 512
"""Longest reduction whose float32 output is exact: ``512 * 255 * 128 < 2**24``."""

CHECK_IMAGES = 2
"""Images of the caller's batch included in the per-shape verification."""


def onednn_available() -> bool:
    """True if this PyTorch build has the oneDNN quantized convolution ops."""
    ops = getattr(torch.ops, "onednn", None)
    try:
        return ops is not None and hasattr(ops, "qconv2d_pointwise") \
            and hasattr(ops, "qconv_prepack")
    except RuntimeError:  # pragma: no cover - a build without the namespace
        return False


_CHECK_CHANNELS = 56
"""Input channels of the once-per-process check: ``K = 3 * 3 * 56 = 504``, near the limit."""


@functools.cache
def onednn_exact() -> bool:
    """Once per process: True if the ops exist, the CPU has int8 dot-product instructions
    (without them oneDNN sums pairs of products in saturating int16), and a conv whose
    products all sit at the extremes (``x - pad = -255`` or ``+255`` against weights of
    -128 and 127, 504 per sum) matches :func:`onednn_accumulators_reference` bit for bit.

    :class:`course.kernels.conv.fused.Conv2dRequantize` picks its ``"onednn"`` path only
    where this holds (and still verifies each layer on each new input shape).
    """
    if not onednn_available() or not cpu_features.int8_dot_instructions():
        return False
    x = torch.empty(2, 4, 5, _CHECK_CHANNELS, dtype=torch.int8)
    x[0], x[1] = -128, 127
    w = torch.empty(2, 3, 3, _CHECK_CHANNELS, dtype=torch.int8)
    w[0], w[1] = -128, 127
    w[1, :, :, ::3] = -128
    for pad_value in (127, -128):
        try:
            got = OneDnnConv(w, padding=1, pad_value=pad_value)(x)
        except RuntimeError:
            return False
        want = onednn_accumulators_reference(x, w, padding=1, pad_value=pad_value)
        if not torch.equal(got.to(torch.int64), want):
            return False
    return True


def to_uint8_codes(x: torch.Tensor) -> torch.Tensor:
    """int8 codes -> the same values plus 128 as uint8 (flip the sign bit), same layout.

    >>> to_uint8_codes(torch.tensor([-128, 0, 127], dtype=torch.int8)).tolist()
    [0, 128, 255]
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.int8:
        raise TypeError(f"x must be an int8 tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    return torch.bitwise_xor(x.view(torch.uint8), UINT8_OFFSET)


def onednn_accumulators_reference(x: torch.Tensor, weight: torch.Tensor, *,
                                  stride: int | tuple[int, int] = 1,
                                  padding: int | tuple[int, int] = 0,
                                  pad_value: int = 0) -> torch.Tensor:
    """What :class:`OneDnnConv` must return, as int64 ``[B, H', W', C_out]``:
    :func:`course.kernels.conv.im2col.conv2d_int8_reference` minus ``pad_value * w.sum()``."""
    acc = conv2d_int8_reference(x, weight, stride=stride, padding=padding, pad_value=pad_value)
    w_sum = weight.to(torch.int64).sum((1, 2, 3))
    return acc.to(torch.int64) - int(pad_value) * w_sum


class OneDnnConv:
    """oneDNN's int8 convolution returning exact accumulators (see the module doc).

    Args:
        weight: int8 ``[C_out, kh, kw, C_in]`` with ``kh * kw * C_in <= ONEDNN_EXACT_K``.
        stride, padding: ints or pairs; pad_value: the input zero point.

    Calling it on int8 ``x [B, H, W, C_in]`` returns float32 ``[B, H', W', C_out]``
    (contiguous, channels last) holding the integers of
    :func:`onednn_accumulators_reference` — once :meth:`verify` has passed for that input
    shape; check it before trusting a new shape.
    """

    def __init__(self, weight: torch.Tensor, *, stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] = 0, pad_value: int = 0) -> None:
        if not onednn_available():
            raise RuntimeError("this PyTorch build has no torch.ops.onednn.qconv2d_pointwise")
        weight = check_int8(weight, "weight", 4, "[C_out, kh, kw, C_in]")
        c_out, kh, kw, c_in = weight.shape
        if kh * kw * c_in > ONEDNN_EXACT_K:
            raise ValueError(f"kh * kw * C_in = {kh * kw * c_in} exceeds ONEDNN_EXACT_K = "
                             f"{ONEDNN_EXACT_K}: the float32 accumulators would not be exact")
        self.weight = weight.contiguous()
        self.stride = list(pair(stride, "stride", 1))
        self.padding = list(pair(padding, "padding", 0))
        self.pad_value = check_pad_value(pad_value)
        self._x_zp = self.pad_value + UINT8_OFFSET
        self._ones = torch.ones(c_out, dtype=torch.float32)
        self._zeros = torch.zeros(c_out, dtype=torch.int64)
        self._packed = torch.ops.onednn.qconv_prepack(
            self.weight.permute(0, 3, 1, 2).contiguous(), self._ones, 1.0, self._x_zp,
            self.stride, self.padding, [1, 1], 1, None)
        self.verified: dict[tuple[int, int], bool] = {}

    def __reduce__(self) -> tuple:
        """Copy and pickle by rebuilding: the packed weight is an opaque tensor."""
        return (OneDnnConv, (self.weight,), {"stride": tuple(self.stride),
                                             "padding": tuple(self.padding),
                                             "pad_value": self.pad_value})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = check_int8(x, "x", 4, "[B, H, W, C_in] (channels last)")
        if x.shape[3] != self.weight.shape[3]:
            raise ValueError(f"x has {x.shape[3]} channels (last axis) but weight expects "
                             f"{self.weight.shape[3]}")
        x_u8 = to_uint8_codes(x.contiguous()).permute(0, 3, 1, 2)  # NCHW, channels-last memory
        y = torch.ops.onednn.qconv2d_pointwise(
            x_u8, 1.0, self._x_zp, self._packed, self._ones, self._zeros, None, self.stride,
            self.padding, [1, 1], 1, 1.0, 0, torch.float32, "none", [], "")
        return y.permute(0, 2, 3, 1).contiguous()

    def verify(self, x: torch.Tensor) -> bool:
        """Bit-exact against the int8 GEMM path on the first images of ``x`` and on two
        images of extremes (all -128, all 127: with the padding's zero point, products up
        to ``255 * 128``); remembered per input shape ``(H, W)``."""
        key = (int(x.shape[1]), int(x.shape[2]))
        if key not in self.verified:
            extremes = torch.empty((2, *x.shape[1:]), dtype=torch.int8)
            extremes[0], extremes[1] = -128, 127
            check = torch.cat([x[:CHECK_IMAGES].contiguous(), extremes])
            weight = self.weight
            try:
                got = self(check)
            except RuntimeError:
                self.verified[key] = False
                return False
            want = conv2d_int8(check, weight, stride=tuple(self.stride),
                               padding=tuple(self.padding), pad_value=self.pad_value)
            want = want.to(torch.int64) - self.pad_value * weight.to(torch.int64).sum((1, 2, 3))
            self.verified[key] = bool(got.dtype == torch.float32 and got.shape == want.shape
                                      and torch.equal(got.to(torch.int64), want)
                                      and torch.equal(got, want.to(torch.float32)))
        return self.verified[key]
