"""The latency of one layer's matrix product in each number format, on this machine.

``y = x @ W.T`` for a weight ``W`` of ``out_features x in_features`` and a batch ``x`` of
``batch x in_features``, with the operands prepared in each format beforehand (weights
converted, quantized or packed once; activations given in the same format — quantizing
them is not timed):

* ``fp32`` — ``torch.matmul`` in float32;
* ``fp16`` — ``torch.matmul`` in float16 (CPUs without native fp16 arithmetic are slow here:
  the format halves the bytes, not necessarily the time);
* ``int8`` — the course's int8 GEMM (int32 accumulation, :mod:`course.kernels.int8_gemm`);
* ``binary`` — the course's XNOR + popcount GEMM on bits packed 64 to a word
  (:mod:`course.kernels.binary.gemm`), the weight rows as the kernel's first operand.

At batch 1 the product reads every weight once and does one multiply-add with it: memory
bound, so fewer bytes per weight should mean less time. At batch 256 every weight is used
256 times: compute bound, so the speed of the arithmetic decides.

>>> sorted(weight_bytes(64, 128).items())
[('binary', 1024), ('fp16', 16384), ('fp32', 32768), ('int8', 8192)]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numba
import torch

from course.kernels.binary.bitpack import pack_sign_bits
from course.kernels.binary.gemm import xnor_gemm
from course.kernels.int8_gemm import int8_gemm
from course.measure import Timing, compare

FORMATS = ("fp32", "fp16", "int8", "binary")
"""The formats timed, in this order."""


def _check_size(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def weight_bytes(in_features: int, out_features: int) -> dict[str, int]:
    """Bytes the weight takes in each format (binary: 64-bit words of packed bits per row)."""
    k = _check_size(in_features, "in_features")
    n = _check_size(out_features, "out_features")
    words = -(-k // 64)
    return {"fp32": 4 * n * k, "fp16": 2 * n * k, "int8": n * k, "binary": 8 * n * words}


def matmul_products(batch: int, in_features: int, out_features: int,
                    seed: int = 0) -> dict[str, Callable[[], object]]:
    """Zero-argument functions computing the product in each of :data:`FORMATS` on prepared
    random operands (drawn from ``seed``)."""
    m = _check_size(batch, "batch")
    k = _check_size(in_features, "in_features")
    n = _check_size(out_features, "out_features")
    gen = torch.Generator().manual_seed(seed)
    w, x = torch.randn(n, k, generator=gen), torch.randn(m, k, generator=gen)
    w16, x16 = w.half(), x.half()
    w8 = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    x8 = torch.randint(-127, 128, (m, k), generator=gen, dtype=torch.int8)
    w8_t = w8.t()
    wb, xb = pack_sign_bits(w), pack_sign_bits(x)
    return {
        "fp32": lambda: torch.matmul(x, w.t()),
        "fp16": lambda: torch.matmul(x16, w16.t()),
        "int8": lambda: int8_gemm(x8, w8_t),
        "binary": lambda: xnor_gemm(wb, xb),      # (out_features, batch): y.T, a free view
    }


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Within the block, torch and numba use ``threads`` threads (numba: at most its pool's
    size); both are restored after. ``None`` changes nothing."""
    if threads is None:
        yield
        return
    _check_size(threads, "threads")
    saved = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        numba.set_num_threads(saved[1])


def matmul_latency(batch: int, in_features: int = 4096, out_features: int = 4096, *,
                   threads: int | None = 1, repeats: int = 7, warmup: int = 2,
                   seed: int = 0) -> dict[str, Timing]:
    """Median latency of the product in each format, timed round-robin (interleaved, so that
    a change of the machine's load hits every format alike), after ``warmup`` rounds.

    ``threads``: the threads torch and numba may use while timing (1 by default: the speed
    of the kernels on one core, steady on a shared machine); ``None`` leaves them as set.
    """
    products = matmul_products(batch, in_features, out_features, seed)
    with pinned_threads(threads), torch.no_grad():
        return compare(products, warmup=warmup, repeats=repeats)


__all__ = ["FORMATS", "matmul_latency", "matmul_products", "pinned_threads", "weight_bytes"]
