"""int8 Conv2d fused with requantization, ReLU and max pooling: int8 in, int8 out, exact.

:class:`Conv2dRequantize` computes, bit for bit, the unfused definition
(:func:`conv2d_requantize_int8_reference`)

    max_pool2d_int8(requantize(conv2d_int8(x, weight, ...), params), *pool)

(:mod:`course.kernels.conv.im2col`, :mod:`course.kernels.requantize`,
:mod:`course.kernels.int8_activation`) without writing the int32 accumulators of the whole
batch to memory and reading them back: pooling is applied to the accumulators *before*
requantization (requantization is non-decreasing in the accumulator, so
``pool(requantize(acc)) == requantize(pool(acc))``), a quarter of them are requantized
(2x2 pooling), and the codes are written once. Layouts are channels last: ``x`` int8
``[B, H, W, C_in]``, ``weight`` int8 ``[C_out, kh, kw, C_in]``, output int8
``[B, H', W', C_out]``; padding uses ``pad_value`` (the input zero point) and ``params``
(:func:`course.kernels.requantize.prepare_requantize`) carries the int32 bias with the
input zero point folded in, the per-channel multipliers and shifts, the output zero point
and the clamp (``qmin = zero_point`` fuses a ReLU).

Three paths compute the accumulators; all give the same bits:

* ``"direct"`` — stride 1, ``K = kh * kw * C_in <= DIRECT_MAX_K``: a direct convolution in
  exact float32 arithmetic over chunks of images held in the L2 cache
  (:mod:`course.kernels.conv.direct`). For a first layer (``K = 9``) where an int8
  GEMM would waste most of its work on padding ``K``.
* ``"onednn"`` — ``K <= ONEDNN_EXACT_K``: PyTorch's oneDNN int8 convolution (VNNI/AMX)
  asked for its exact accumulators as float32
  (:mod:`course.kernels.conv.onednn`), verified bit for bit against the int8 GEMM on
  each new input shape — the layer falls back to ``"gemm"`` with a warning otherwise —
  then pooled and requantized here, a few images per thread.
* ``"gemm"`` — anything else: per chunk of images sized for the L2 cache, im2col rows
  (8-byte words when ``C_in`` is a multiple of 8, padding written on the fly) into a reused
  buffer, the verified int8 GEMM (:func:`course.kernels.int8_gemm.gemm_backend`) into a
  reused int32 buffer, then pooling and requantization of that chunk.

A layer's plan is prepared once (weights in each path's form, requantization parameters
tiled along an output row). Batches are split over ``torch.get_num_threads()`` Python
threads — the numba kernels release the GIL — so no numba threading layer is involved and
PyTorch's own thread pool is left alone.

>>> from course.kernels.requantize import prepare_requantize
>>> x = torch.ones(1, 4, 4, 1, dtype=torch.int8)
>>> w = torch.ones(2, 3, 3, 1, dtype=torch.int8)
>>> conv = Conv2dRequantize(w, prepare_requantize(2, 2**30, 31, 0), padding=1, pool=2)
>>> conv.path, conv(x)[0, :, :, 0]  # max of 9 (interior sums) * 2**30 / 2**31, rounded up
('direct', tensor([[5, 5],
        [5, 5]], dtype=torch.int8))
>>> torch.equal(conv(x), conv2d_requantize_int8_reference(x, w, conv.params, padding=1, pool=2))
True
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from course.kernels.conv.direct import (
    NO_POOL,
    direct_plan,
    run_direct_plan,
)
from course.kernels.conv.gemm import im2col_chunk
from course.kernels.conv.im2col import (
    conv2d_int8_reference,
    output_size,
)
from course.kernels.conv.onednn import (
    OneDnnConv,
)
from course.kernels.conv.paths import DIRECT_MAX_K, choose_path
from course.kernels.conv.pool import pool_requantize
from course.kernels.int8_activation import max_pool2d_int8_reference
from course.kernels.int8_gemm import MAX_K, avx2_gemm, gemm_backend, int8_gemm, pack_int8
from course.kernels.requantize import (
    RequantParams,
    requantize_reference,
)
from course.quant.checks import check_int8, check_pad_value, pair

GEMM_CHUNK_BYTES = 2**20
"""GEMM path: a chunk's im2col rows plus int32 accumulators fill about this many bytes,
well inside a core's L2 cache."""

TASKS_PER_THREAD = 4
"""With several threads, a batch is cut into this many tasks per thread, handed out one at a
time: a thread slowed down by other work on the machine leaves its share to the others, and
the last task bounds the wait."""

FUSED_CONV_PATH = ("fused conv + bias + requantization + ReLU + max pool (numba, pooled "
                   "before requantizing): 'direct' (exact float32 direct conv over L2-sized "
                   f"chunks, stride 1, K <= {DIRECT_MAX_K}), 'onednn' (oneDNN int8 conv "
                   "returning exact accumulators, verified per input shape against the int8 "
                   "GEMM) or 'gemm' (im2col + int8_gemm over L2-sized chunks)")
"""How :class:`Conv2dRequantize` runs, for reports (see ``IntegerModel.kernels``)."""


# ------------------------------------------------------------------------------- the plan


def _check_pool(pool: object) -> tuple[int, int, int, int] | None:
    """``None``; an int ``k`` (``k x k`` window, stride ``k``); or ``(kernel_size, stride)``
    with each an int or an ``(h, w)`` pair -> ``(kh, kw, stride_h, stride_w)``."""
    if pool is None:
        return None
    if isinstance(pool, tuple | list):
        if len(pool) != 2:
            raise ValueError(f"pool must be None, an int or (kernel_size, stride), got {pool!r}")
        kernel, stride = pool
    else:
        kernel, stride = pool, pool
    kh, kw = pair(kernel, "pool kernel size", 1)
    sh, sw = pair(stride, "pool stride", 1)
    return kh, kw, sh, sw


_EXECUTOR_LOCK = threading.Lock()
_EXECUTORS: dict[int, ThreadPoolExecutor] = {}


def _executor(workers: int) -> ThreadPoolExecutor:
    with _EXECUTOR_LOCK:
        if workers not in _EXECUTORS:
            _EXECUTORS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="int8_conv")
        return _EXECUTORS[workers]


def split_batch(total: int, unit: int) -> list[tuple[int, int]]:
    """Ranges ``(lo, hi)`` of ``unit`` images (the last one shorter) covering ``total``.

    >>> split_batch(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    return [(lo, min(lo + unit, total)) for lo in range(0, total, unit)]


def run_chunks(run, chunks: list[tuple[int, int]], threads: int) -> None:
    """Call ``run(lo, hi)`` for every chunk, on ``threads`` threads (this one included).

    Chunks are handed out one at a time, so that a thread slowed down by other work on the
    machine takes fewer of them; the numba kernels release the GIL. Waits for every chunk
    and re-raises the first error.
    """
    if threads <= 1 or len(chunks) <= 1:
        for lo, hi in chunks:
            run(lo, hi)
        return
    pending = iter(chunks)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                chunk = next(pending, None)
            if chunk is None:
                return
            run(*chunk)

    helpers = min(threads, len(chunks)) - 1
    futures = [_executor(helpers).submit(worker) for _ in range(helpers)]
    try:
        worker()
    finally:
        for future in futures:
            future.result()


class Conv2dRequantize:
    """A prepared int8 conv layer: conv, bias, requantization (ReLU), optional max pool.

    Args:
        weight: int8 ``[C_out, kh, kw, C_in]``; ``kh * kw * C_in <= MAX_K``.
        params: :class:`course.kernels.requantize.RequantParams` for ``C_out`` channels
            (bias with the input zero point folded in, multipliers, shifts, output zero
            point, clamp).
        stride, padding: ints or ``(h, w)`` pairs (no dilation, no groups).
        pad_value: the input zero point, written where the window leaves the image.
        pool: max pooling after the ReLU: ``None``; an int ``k`` (``k x k`` window, stride
            ``k``); or ``(kernel_size, stride)``, each an int or an ``(h, w)`` pair. No
            padding, floor mode (``nn.MaxPool2d(kernel_size, stride)``).
        path: one of ``"direct"``, ``"onednn"``, ``"gemm"``, or ``None`` for the default;
            :func:`course.kernels.conv.paths.choose_path` decides and says what a path
            needs when the layer cannot take it.

    Calling it on int8 ``x [B, H, W, C_in]`` returns int8 ``[B, H', W', C_out]``, equal to
    :func:`conv2d_requantize_int8_reference`. The ``"onednn"`` path is verified on each new
    input shape (:meth:`course.kernels.conv.onednn.OneDnnConv.verify`); if the check
    fails the layer switches to ``"gemm"`` for good, with a warning, and says why in
    :attr:`fallback`.
    """

    def __init__(self, weight: torch.Tensor, params: RequantParams, *,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 pad_value: int = 0, pool: object = None, path: str | None = None) -> None:
        weight = check_int8(weight, "weight", 4, "[C_out, kh, kw, C_in]")
        if not isinstance(params, RequantParams):
            raise TypeError(f"params must be RequantParams (from prepare_requantize), got "
                            f"{type(params).__name__}")
        c_out, kh, kw, c_in = weight.shape
        if params.channels != c_out:
            raise ValueError(f"params are for {params.channels} channels, the weight has "
                             f"C_out = {c_out}")
        k = kh * kw * c_in
        if k > MAX_K:
            raise ValueError(f"kh * kw * C_in = {k} exceeds MAX_K = {MAX_K}: the int32 sum "
                             "could overflow")
        self.weight = weight.contiguous()
        self.params = params
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.pad_value = check_pad_value(pad_value)
        self.pool = _check_pool(pool)
        self.fallback: str | None = None
        self._requested_path = path
        path = choose_path(k, self.stride, path)
        self.path = path
        self._lo = np.int64(params.qmin - params.zero_point)
        self._hi = np.int64(params.qmax - params.zero_point)
        self._w_gemm = self.weight.reshape(c_out, k).t()  # [K, C_out], column major
        self._w_packed = pack_int8(self._w_gemm) if path == "gemm" else None
        if path == "onednn":
            self._onednn = OneDnnConv(self.weight, stride=self.stride, padding=self.padding,
                                      pad_value=self.pad_value)
            # oneDNN's sums omit pad_value * w.sum(), which params.bias subtracts: add it back.
            w_sum = self.weight.to(torch.int64).sum((1, 2, 3))
            self._onednn_bias = params.bias + self.pad_value * w_sum
        self._shapes: dict[tuple[str, int, int], tuple] = {}

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def output_shape(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(conv_h, conv_w, out_h, out_w)``: the conv's and the (pooled) output's size."""
        _, kh, kw, _ = self.weight.shape
        conv_h = output_size(height, kh, self.stride[0], self.padding[0])
        conv_w = output_size(width, kw, self.stride[1], self.padding[1])
        if self.pool is None:
            return conv_h, conv_w, conv_h, conv_w
        pkh, pkw, psh, psw = self.pool
        if conv_h < pkh or conv_w < pkw:
            raise ValueError(f"pooling window {(pkh, pkw)} is larger than the conv output "
                             f"{(conv_h, conv_w)}")
        return conv_h, conv_w, (conv_h - pkh) // psh + 1, (conv_w - pkw) // psw + 1

    def _tiled(self, out_w: int, bias: torch.Tensor) -> tuple[np.ndarray, ...]:
        """Multipliers, shifts and ``bias`` (int64) tiled along an output row."""
        index = torch.arange(out_w * self.out_channels) % self.out_channels
        return tuple(t.to(torch.int64)[index].contiguous().numpy()
                     for t in (self.params.multiplier, self.params.shift, bias))

    # -- direct path -----------------------------------------------------------------------

    def _direct_geometry(self, height: int, width: int) -> tuple:
        plan = direct_plan(self.weight, height, width, self.padding, self.pool or NO_POOL)
        return plan.chunk, plan

    def _run_direct(self, x: np.ndarray, out: np.ndarray, lo: int, hi: int, geometry) -> None:
        run_direct_plan(x, out, (lo, hi), geometry[1], self.params, self.padding,
                        self.pad_value, self.pool or NO_POOL)

    # -- GEMM path -------------------------------------------------------------------------

    def _gemm_geometry(self, height: int, width: int) -> tuple:
        c_out, kh, kw, c_in = self.weight.shape
        conv_h, conv_w, _, out_w = self.output_shape(height, width)
        per_image = conv_h * conv_w * (kh * kw * c_in + 4 * c_out)
        chunk = max(1, GEMM_CHUNK_BYTES // per_image)
        return chunk, conv_h, conv_w, self._tiled(out_w, self.params.bias)

    def _run_gemm(self, x: np.ndarray, out: np.ndarray, lo: int, hi: int, geometry) -> None:
        c_out, kh, kw, c_in = self.weight.shape
        chunk, conv_h, conv_w, (m_row, s_row, b_row) = geometry
        pkh, pkw, psh, psw = self.pool or (1, 1, 1, 1)
        chunk = min(chunk, hi - lo)
        cols = torch.empty(chunk * conv_h * conv_w, kh * kw * c_in, dtype=torch.int8)
        acc = torch.empty(chunk * conv_h * conv_w, c_out, dtype=torch.int32)
        cols_np, acc_np = cols.numpy(), acc.numpy().reshape(-1)
        gemm = gemm_backend().name
        for b0 in range(lo, hi, chunk):
            g = min(chunk, hi - b0)
            rows = g * conv_h * conv_w
            im2col_chunk(x, b0, g, (kh, kw), self.stride, self.padding, self.pad_value,
                         (conv_h, conv_w), cols_np)
            if gemm == "int_mm":
                torch._int_mm(cols[:rows], self._w_gemm, out=acc[:rows])
            elif gemm == "avx2_maddubs":
                # serial: this thread is already one of run_chunks' per-core workers
                acc[:rows] = avx2_gemm(cols[:rows], self._w_packed, parallel=False)
            else:
                acc[:rows] = int8_gemm(cols[:rows], self._w_packed)
            pool_requantize(acc_np, 0, b0, g, conv_h, conv_w, pkh, pkw, psh, psw, m_row, s_row,
                            b_row, self.params.zero_point, self._lo, self._hi, out)

    # -- oneDNN path -----------------------------------------------------------------------

    def _onednn_geometry(self, height: int, width: int) -> tuple:
        conv_h, conv_w, _, out_w = self.output_shape(height, width)
        chunk = max(1, GEMM_CHUNK_BYTES // (4 * conv_h * conv_w * self.out_channels))
        return chunk, conv_h, conv_w, self._tiled(out_w, self._onednn_bias)

    def _pool_requantize_onednn(self, acc: np.ndarray, out: np.ndarray, lo: int, hi: int,
                                geometry) -> None:
        _, conv_h, conv_w, (m_row, s_row, b_row) = geometry
        pkh, pkw, psh, psw = self.pool or (1, 1, 1, 1)
        pool_requantize(acc, lo, lo, hi - lo, conv_h, conv_w, pkh, pkw, psh, psw, m_row, s_row,
                        b_row, self.params.zero_point, self._lo, self._hi, out)

    def _use_onednn(self, x: torch.Tensor) -> bool:
        if self.path != "onednn":
            return False
        if self._onednn.verify(x):
            return True
        self.path = "gemm"
        self.fallback = (f"oneDNN's int8 conv did not match the int8 GEMM bit for bit on input "
                         f"shape {tuple(x.shape[1:])}: this layer runs on 'gemm' from now on")
        warnings.warn(self.fallback, RuntimeWarning, stacklevel=3)
        return False

    # -- call ------------------------------------------------------------------------------

    def _geometry(self, height: int, width: int) -> tuple:
        key = (self.path, height, width)
        if key not in self._shapes:
            build = {"direct": self._direct_geometry, "gemm": self._gemm_geometry,
                     "onednn": self._onednn_geometry}[self.path]
            self._shapes[key] = build(height, width)
        return self._shapes[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = check_int8(x, "x", 4, "[B, H, W, C_in] (channels last)")
        if x.shape[3] != self.weight.shape[3]:
            raise ValueError(f"x has {x.shape[3]} channels (last axis) but weight expects "
                             f"{self.weight.shape[3]} (weight is [C_out, kh, kw, C_in] = "
                             f"{tuple(self.weight.shape)})")
        batch, height, width, _ = x.shape
        _, _, out_h, out_w = self.output_shape(height, width)
        out = torch.empty(batch, out_h, out_w, self.out_channels, dtype=torch.int8)
        if batch == 0:
            return out
        x = x.contiguous()
        if self._use_onednn(x):
            source = self._onednn(x).numpy().reshape(-1)
            run = self._pool_requantize_onednn
        else:
            source = x.numpy()
            run = self._run_direct if self.path == "direct" else self._run_gemm
        geometry = self._geometry(height, width)
        out_np = out.numpy()
        threads = torch.get_num_threads()
        unit = batch if threads <= 1 else -(-batch // (threads * TASKS_PER_THREAD))
        chunks = split_batch(batch, unit)
        if threads > 1 and len(chunks) > 1:
            # One task per core already: PyTorch's own ops inside the tasks (torch._int_mm)
            # run single-threaded meanwhile, or the cores are oversubscribed.
            torch.set_num_threads(1)
            try:
                run_chunks(lambda lo, hi: run(source, out_np, lo, hi, geometry), chunks,
                           threads)
            finally:
                torch.set_num_threads(threads)
        else:
            run_chunks(lambda lo, hi: run(source, out_np, lo, hi, geometry), chunks, threads)
        return out

    def __reduce__(self) -> tuple:
        """Copy and pickle by rebuilding (oneDNN's packed weight cannot be copied)."""
        return (_rebuild, (self.weight, self.params, self.stride, self.padding, self.pad_value,
                           self.pool, self._requested_path))

    def __repr__(self) -> str:
        return (f"Conv2dRequantize(weight={tuple(self.weight.shape)}, stride={self.stride}, "
                f"padding={self.padding}, pad_value={self.pad_value}, pool={self.pool}, "
                f"path={self.path!r})")


def _rebuild(weight, params, stride, padding, pad_value, pool, path) -> Conv2dRequantize:
    if pool is not None:
        pool = ((pool[0], pool[1]), (pool[2], pool[3]))
    return Conv2dRequantize(weight, params, stride=stride, padding=padding,
                            pad_value=pad_value, pool=pool, path=path)


def conv2d_requantize_int8(x: torch.Tensor, weight: torch.Tensor, params: RequantParams, *,
                           stride: int | tuple[int, int] = 1,
                           padding: int | tuple[int, int] = 0, pad_value: int = 0,
                           pool: object = None, path: str | None = None) -> torch.Tensor:
    """One call of :class:`Conv2dRequantize` (prepare it once to run a layer repeatedly)."""
    return Conv2dRequantize(weight, params, stride=stride, padding=padding,
                            pad_value=pad_value, pool=pool, path=path)(x)


def conv2d_requantize_int8_reference(x: torch.Tensor, weight: torch.Tensor,
                                     params: RequantParams, *,
                                     stride: int | tuple[int, int] = 1,
                                     padding: int | tuple[int, int] = 0, pad_value: int = 0,
                                     pool: object = None) -> torch.Tensor:
    """The unfused definition: :func:`course.kernels.conv.im2col.conv2d_int8_reference`, then
    :func:`course.kernels.requantize.requantize_reference` on every accumulator, then
    :func:`course.kernels.int8_activation.max_pool2d_int8_reference` (slow, exact)."""
    if not isinstance(params, RequantParams):
        raise TypeError(f"params must be RequantParams (from prepare_requantize), got "
                        f"{type(params).__name__}")
    pool_args = _check_pool(pool)
    acc = conv2d_int8_reference(x, weight, stride=stride, padding=padding, pad_value=pad_value)
    codes = requantize_reference(acc, params.multiplier, params.shift, params.zero_point,
                                 bias=params.bias, qmin=params.qmin, qmax=params.qmax)
    if pool_args is None:
        return codes
    pkh, pkw, psh, psw = pool_args
    return max_pool2d_int8_reference(codes, (pkh, pkw), (psh, psw))
