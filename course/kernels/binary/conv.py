"""Binary 2-D convolution: sign(input) convolved with sign(weight) by im2col on packed bits
and the XNOR + popcount GEMM of :mod:`course.kernels.binary.gemm`.

Layout. The input ``(N, C, H, W)`` is binarized and packed along channels at every pixel:
words ``(N, H + 2p, W + 2p, ceil(C/64))`` (channels-last, zero padding bits after the last
channel). A weight ``(O, C, kh, kw)`` is packed the same way per tap: ``(O, kh*kw*ceil(C/64))``
words. im2col then copies, for every output pixel, its ``kh x kw`` window of words into one
row: ``(N*Ho*Wo, kh*kw*ceil(C/64))`` — 1 bit per value, so im2col moves 1/32 of the bytes
of a float32 im2col. The GEMM of those rows with the weight rows, with ``K = C*kh*kw``
(padding bits are 0 on both sides), is the convolution.

Spatial padding follows the library's ``sign(0) = +1``: the input is zero-padded first and
then binarized, so padded pixels count as +1 — exactly ``conv2d(sign(pad(x)), sign(w))``,
which is what :func:`binary_conv2d_reference` computes with PyTorch's float64 convolution.

XNOR-Net scaling: ``out_scale`` ``(O,)`` (alpha per output channel) and ``position_scale``
``(N, Ho, Wo)`` (the K map, beta per output pixel) multiply the integer result inside the
GEMM, and ``bias`` ``(O,)`` is added there too.

Supported: stride and zero padding (ints or pairs); no dilation or groups.

>>> import torch
>>> x = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])          # (1, 1, 2, 2)
>>> w = pack_conv_weight(torch.tensor([[[[1.0, -1.0]]]]))     # (1, 1, 1, 2)
>>> binary_conv2d(x, w)                                        # [1*1 + -1*-1], [1*1 + 1*-1]
tensor([[[[2],
          [0]]]], dtype=torch.int32)
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F
from numba import prange

from course.kernels.binary.bitpack import WORD_BITS, WORD_DTYPE, words_for
from course.kernels.binary.gemm import xnor_gemm_words
from course.quant.checks import pair

_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class PackedConvWeight:
    """The signs of a conv weight ``(O, C, kh, kw)``, packed for :func:`binary_conv2d`.

    ``words``: uint64 ``(O, kh * kw * ceil(C/64))``, tap by tap (row-major over ``kh, kw``),
    channels packed inside each tap with zero padding bits. ``nbytes`` is what it stores.
    """

    words: np.ndarray
    in_channels: int
    kernel_size: tuple[int, int]

    def __post_init__(self) -> None:
        if not isinstance(self.words, np.ndarray) or self.words.dtype != WORD_DTYPE:
            raise TypeError("words must be a uint64 numpy.ndarray")
        kh, kw = self.kernel_size
        expected = kh * kw * words_for(self.in_channels)
        if self.words.ndim != 2 or self.words.shape[1] != expected:
            raise ValueError(f"words must have shape (out_channels, {expected}) for "
                             f"{self.in_channels} channels and kernel {self.kernel_size}, "
                             f"got {self.words.shape}")

    @property
    def out_channels(self) -> int:
        return int(self.words.shape[0])

    @property
    def length(self) -> int:
        """K of the GEMM: ``C * kh * kw`` binary products per output value."""
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    @property
    def nbytes(self) -> int:
        return int(self.words.nbytes)

    def to_tensor(self) -> torch.Tensor:
        """The words as an int64 tensor (same bits), to store as a module buffer."""
        return torch.from_numpy(np.ascontiguousarray(self.words).view(np.int64))

    @classmethod
    def from_tensor(cls, words: torch.Tensor, in_channels: int,
                    kernel_size: tuple[int, int]) -> PackedConvWeight:
        """Inverse of :meth:`to_tensor`."""
        if not isinstance(words, torch.Tensor) or words.dtype not in (torch.int64,
                                                                      torch.uint64):
            raise TypeError("words must be an int64 or uint64 torch.Tensor")
        array = words.detach().cpu().contiguous().numpy().view(WORD_DTYPE)
        return cls(array, int(in_channels), (int(kernel_size[0]), int(kernel_size[1])))


def _check_float_tensor(x: object, name: str, dim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")
    return x


# ----------------------------------------------------------------------------- numba kernels


@numba.njit(cache=True, parallel=True)
def _pack_channels(x, padding_h, padding_w, out, mean_abs):
    """x float32 (N, C, H, W) -> the inside pixels of out uint64 (N, H+2ph, W+2pw, Wc), and
    mean_abs float32 (N, H, W) = mean over channels of |x|; returns the number of NaNs
    seen (they have no sign).

    One image per task: the channel planes are read one after the other, contiguously, and
    OR-ed bit by bit into one word per pixel (a loop LLVM vectorizes over pixels); each
    group of 64 channels' words is then written to its channels-last place.
    """
    n, c, h, w = x.shape
    n_words = out.shape[3]
    nans = 0
    for image in prange(n):
        sums = np.zeros(h * w, dtype=np.float32)
        for word in range(n_words):
            first = word * WORD_BITS
            words = np.zeros(h * w, dtype=np.uint64)
            for bit in range(min(WORD_BITS, c - first)):
                plane = x[image, first + bit].ravel()
                shift = np.uint64(bit)
                for pixel in range(h * w):
                    value = plane[pixel]
                    words[pixel] |= np.uint64(value >= 0) << shift
                    sums[pixel] += abs(value)
                    nans += value != value
            for y in range(h):
                for xx in range(w):
                    out[image, y + padding_h, xx + padding_w, word] = words[y * w + xx]
        for y in range(h):
            for xx in range(w):
                mean_abs[image, y, xx] = sums[y * w + xx] / c
    return nans


@numba.njit(cache=True, parallel=True)
def _im2col(words, kh, kw, stride_h, stride_w, out_h, out_w, cols):
    """words (N, Hp, Wp, Wc) -> cols (N*Ho*Wo, kh*kw*Wc): one window of words per row."""
    n_words = words.shape[3]
    for t in prange(words.shape[0] * out_h):
        b = t // out_h
        oy = t % out_h
        for ox in range(out_w):
            row = t * out_w + ox
            col = 0
            for ky in range(kh):
                for kx in range(kw):
                    for word in range(n_words):
                        cols[row, col] = words[b, oy * stride_h + ky, ox * stride_w + kx,
                                               word]
                        col += 1


# ----------------------------------------------------------------------------- public API


def pack_conv_weight(weight: torch.Tensor) -> PackedConvWeight:
    """Pack ``sign(weight)`` (sign(0) = +1) of a float ``(O, C, kh, kw)`` conv weight.

    >>> pack_conv_weight(torch.ones(8, 3, 3, 3)).words.shape      # 9 taps x 1 word
    (8, 9)
    """
    weight = _check_float_tensor(weight, "weight", 4)
    if weight.numel() == 0:
        raise ValueError(f"weight must not be empty, got shape {tuple(weight.shape)}")
    if torch.isnan(weight).any():
        raise ValueError("weight contains NaN, which has no sign")
    o, c, kh, kw = weight.shape
    taps = weight.detach().cpu().to(torch.float32).permute(0, 2, 3, 1).contiguous()
    packed = pack_conv_input(taps.reshape(o * kh * kw, 1, 1, c).permute(0, 3, 1, 2), 0)
    return PackedConvWeight(packed.reshape(o, kh * kw * words_for(c)), c, (kh, kw))


def pack_conv_input(x: torch.Tensor, padding: int | tuple[int, int] = 0) -> np.ndarray:
    """Zero-pad ``x`` ``(N, C, H, W)``, binarize (bit 1 where ``>= 0``) and pack along C.

    Returns uint64 ``(N, H + 2*ph, W + 2*pw, ceil(C/64))``; padded pixels are all +1
    (sign(0) = +1), padding bits past channel C are 0.

    >>> pack_conv_input(torch.tensor([[[[-1.0]], [[2.0]]]]), padding=1)[0, :, :, 0]
    array([[3, 3, 3],
           [3, 2, 3],
           [3, 3, 3]], dtype=uint64)
    """
    return pack_conv_input_and_mean_abs(x, padding)[0]


def pack_conv_input_and_mean_abs(x: torch.Tensor, padding: int | tuple[int, int] = 0
                                 ) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`pack_conv_input`, plus ``mean_c |x|`` as float32 ``(N, H, W)`` computed in the
    same pass over ``x`` (XNOR-Net's ``A``, from which its K map is filtered)."""
    x = _check_float_tensor(x, "x", 4)
    ph, pw = pair(padding, "padding", 0)
    n, c, h, w = x.shape
    if c == 0:
        raise ValueError("x must have at least one channel")
    nchw = x.detach().cpu().to(torch.float32).contiguous().numpy()
    n_words = words_for(c)
    out = np.empty((n, h + 2 * ph, w + 2 * pw, n_words), dtype=WORD_DTYPE)
    mean_abs = np.zeros((n, h, w), dtype=np.float32)
    if out.size == 0:
        return out, torch.from_numpy(mean_abs)
    # Padded pixels are sign(0) = +1 on every real channel; bits past channel C stay 0.
    out[..., :] = _ALL_ONES
    out[..., -1] = _ALL_ONES >> np.uint64(n_words * WORD_BITS - c)
    if h and w and _pack_channels(nchw, ph, pw, out, mean_abs):
        raise ValueError("x contains NaN, which has no sign")
    return out, torch.from_numpy(mean_abs)


def k_map_from_mean_abs(mean_abs: torch.Tensor, kernel_size: tuple[int, int],
                        stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """XNOR-Net's K: ``mean_abs`` ``(N, H, W)`` zero-padded and averaged over each
    ``kh x kw`` window at the convolution's stride: ``(N, Ho, Wo)``."""
    ph, pw = padding
    padded = F.pad(mean_abs[:, None], (pw, pw, ph, ph))
    return F.avg_pool2d(padded, kernel_size, stride)[:, 0]


def im2col_packed(words: np.ndarray, kernel_size: int | tuple[int, int],
                  stride: int | tuple[int, int] = 1) -> np.ndarray:
    """Rows of packed windows: ``(N, Hp, Wp, Wc)`` words -> ``(N*Ho*Wo, kh*kw*Wc)``.

    ``Ho = (Hp - kh) // stride_h + 1`` (padding is already in ``words``). Row
    ``(n*Ho + oy)*Wo + ox`` holds the taps ``(ky, kx)`` in row-major order, each tap's
    ``Wc`` words together, the same order as :class:`PackedConvWeight`.
    """
    if not isinstance(words, np.ndarray) or words.dtype != WORD_DTYPE or words.ndim != 4:
        raise TypeError("words must be a uint64 numpy.ndarray of shape (N, Hp, Wp, Wc)")
    kh, kw = pair(kernel_size, "kernel_size", 1)
    sh, sw = pair(stride, "stride", 1)
    n, hp, wp, n_words = words.shape
    if hp < kh or wp < kw:
        raise ValueError(f"the padded input ({hp} x {wp}) is smaller than the kernel "
                         f"({kh} x {kw})")
    out_h = (hp - kh) // sh + 1
    out_w = (wp - kw) // sw + 1
    cols = np.empty((n * out_h * out_w, kh * kw * n_words), dtype=WORD_DTYPE)
    if cols.size:
        _im2col(np.ascontiguousarray(words), kh, kw, sh, sw, out_h, out_w, cols)
    return cols


def output_size(size: tuple[int, int], kernel_size: tuple[int, int],
                stride: tuple[int, int], padding: tuple[int, int]) -> tuple[int, int]:
    """``(Ho, Wo)`` of a convolution without dilation."""
    return tuple((s + 2 * p - k) // st + 1 for s, k, st, p in
                 zip(size, kernel_size, stride, padding, strict=True))


def binary_conv2d(x: torch.Tensor, weight: PackedConvWeight,
                  stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, *,
                  out_scale: torch.Tensor | None = None,
                  position_scale: torch.Tensor | None = None, k_map: bool = False,
                  bias: torch.Tensor | None = None, backend: str | None = None
                  ) -> torch.Tensor:
    """Convolution of ``sign(x)`` (x float ``(N, C, H, W)``) with a packed binary weight.

    Without scales: exact int32 ``(N, O, Ho, Wo)``. With ``out_scale`` ``(O,)`` (and
    optionally ``position_scale`` ``(N, Ho, Wo)``, ``bias`` ``(O,)``): float32
    ``conv * out_scale[o] * position_scale[n, y, x] + bias[o]``. ``k_map=True`` (instead of
    ``position_scale``) uses XNOR-Net's K map of ``x`` (``mean_c |x|`` box-filtered, see
    :func:`k_map_from_mean_abs`), computed while ``x`` is packed. The result is a
    channels-last tensor (an ``(N, Ho, Wo, O)`` buffer seen as ``(N, O, Ho, Wo)``).
    ``backend``: ``None`` (the CPU's default), ``"tiled"``, ``"tiled_avx2"`` or ``"naive"``
    (see :func:`~course.kernels.binary.gemm.xnor_gemm`).
    """
    x = _check_float_tensor(x, "x", 4)
    if not isinstance(weight, PackedConvWeight):
        raise TypeError("weight must be a PackedConvWeight (from pack_conv_weight), got "
                        f"{type(weight).__name__}")
    if x.shape[1] != weight.in_channels:
        raise ValueError(f"x has {x.shape[1]} channels but the weight expects "
                         f"{weight.in_channels}")
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    n = x.shape[0]
    out_h, out_w = output_size(tuple(x.shape[2:]), weight.kernel_size, (sh, sw), (ph, pw))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"input {tuple(x.shape[2:])} with padding {(ph, pw)} is smaller "
                         f"than the kernel {weight.kernel_size}")
    o = weight.out_channels
    if out_scale is None and (position_scale is not None or bias is not None or k_map):
        raise ValueError("position_scale, k_map and bias need out_scale (the output is then "
                         "float)")
    if k_map and position_scale is not None:
        raise ValueError("give position_scale or k_map=True, not both")
    words, mean_abs = pack_conv_input_and_mean_abs(x, (ph, pw))
    scales = (None, None, None)
    if out_scale is not None:
        if k_map:
            rows = k_map_from_mean_abs(mean_abs, weight.kernel_size, (sh, sw), (ph, pw))
        elif position_scale is not None:
            rows = _checked_vector(position_scale, "position_scale", (n, out_h, out_w))
        else:
            rows = torch.ones(n * out_h * out_w)
        cols = _checked_vector(out_scale, "out_scale", (o,))
        offsets = torch.zeros(o) if bias is None else _checked_vector(bias, "bias", (o,))
        scales = tuple(np.ascontiguousarray(v.reshape(-1).numpy(), dtype=np.float32)
                       for v in (rows, cols, offsets))
    cols_words = im2col_packed(words, weight.kernel_size, (sh, sw))
    out = xnor_gemm_words(cols_words, weight.words, weight.length, *scales, backend=backend)
    return torch.from_numpy(out).reshape(n, out_h, out_w, o).permute(0, 3, 1, 2)


def _checked_vector(value: object, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    return value.detach().cpu().to(torch.float32)


def binary_conv2d_reference(x: torch.Tensor, weight: torch.Tensor,
                            stride: int | tuple[int, int] = 1,
                            padding: int | tuple[int, int] = 0) -> torch.Tensor:
    """``conv2d(sign(pad(x)), sign(weight))`` with PyTorch's float64 convolution, as int32.

    ``x`` float ``(N, C, H, W)``, ``weight`` float ``(O, C, kh, kw)``; sign(0) = +1.
    """
    x = _check_float_tensor(x, "x", 4)
    weight = _check_float_tensor(weight, "weight", 4)
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    padded = F.pad(x.detach().to(torch.float64), (pw, pw, ph, ph))
    signs_x = torch.where(padded >= 0, 1.0, -1.0).to(torch.float64)
    signs_w = torch.where(weight.detach() >= 0, 1.0, -1.0).to(torch.float64)
    return F.conv2d(signs_x, signs_w, stride=(sh, sw)).round().to(torch.int32)
