"""An int8 Linear's product and epilogue in one call: ``q @ w.T`` then requantize or dequantize.

* :func:`linear_requantize` — int8 ``q [M, K]`` times a packed int8 weight, int32 sums,
  requantized to int8 ``[M, N]`` (:func:`course.kernels.requantize.requantize_prepared`'s
  rule, bias and ReLU clamp included): the full-integer Linear.
* :func:`linear_dequantize` — the same product rescaled to float32 ``[M, N]``
  (:func:`course.kernels.int8_dynamic.dequantize_accumulators`' arithmetic): the
  dynamic-range Linear.

On the ``"avx2_maddubs"`` path (with the weight's ``vpmaddubsw`` panels current) the epilogue
runs inside the GEMM, on each task's block of accumulators while it is in cache
(:mod:`course.kernels.int8_gemm_maddubs`): no second pass over an int32 matrix in memory.
Elsewhere it is :func:`course.kernels.int8_gemm` followed by the one-pass epilogue. Both give
the same bits.

>>> from course.kernels import pack_int8, prepare_requantize
>>> w = torch.tensor([[1, 2], [3, -4]], dtype=torch.int8)
>>> linear_requantize(torch.tensor([[5, 6]], dtype=torch.int8), pack_int8(w.t()),
...                   prepare_requantize(2, 2**30, 31, 0))
tensor([[ 9, -4]], dtype=torch.int8)
"""

from __future__ import annotations

import numpy as np
import torch

from course.kernels.int8_dynamic import dequantize_accumulators
from course.kernels.int8_gemm import PackedInt8, gemm_backend, int8_gemm
from course.kernels.requantize import RequantParams, requantize_prepared


def _fused_panels(q: torch.Tensor, packed: PackedInt8) -> object | None:
    """The weight's ``vpmaddubsw`` panels if the fused kernel can run this call, else None."""
    if (not isinstance(packed, PackedInt8) or packed.panels is None
            or packed.b._version != packed.version or gemm_backend().name != "avx2_maddubs"
            or q.shape[0] == 0 or q.shape[1] == 0 or packed.b.shape[1] == 0):
        return None
    if q.dtype != torch.int8 or q.dim() != 2 or q.shape[1] != packed.b.shape[0]:
        return None  # int8_gemm raises the error that names the argument
    from course.kernels.int8_gemm_maddubs import PackedB

    return packed.panels if isinstance(packed.panels, PackedB) else None


def linear_requantize(q: torch.Tensor, packed: PackedInt8, params: RequantParams
                      ) -> torch.Tensor:
    """int8 ``[M, N]`` = ``requantize_prepared(int8_gemm(q, packed), params)``.

    Args:
        q: int8 ``[M, K]`` codes; packed: :func:`course.kernels.pack_int8` of ``w.t()``
            (``[K, N]``); params: :func:`course.kernels.prepare_requantize` for ``N``.
    """
    panels = _fused_panels(q, packed)
    if panels is None or not isinstance(params, RequantParams) or params.channels != panels.n:
        return requantize_prepared(int8_gemm(q, packed), params)
    from course.kernels.int8_gemm_maddubs import gemm_maddubs_requantize

    return gemm_maddubs_requantize(q, panels, params)


def linear_dequantize(q: torch.Tensor, packed: PackedInt8, x_scale: float, x_zero_point: int,
                      w_scale: torch.Tensor, w_sum: torch.Tensor,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """float32 ``[M, N]`` = ``dequantize_accumulators(int8_gemm(q, packed), x_scale,
    x_zero_point, w_scale, w_sum, bias)`` (same arguments, same bits)."""
    panels = _fused_panels(q, packed)
    channels = None if panels is None else panels.n
    if (panels is None or not isinstance(w_scale, torch.Tensor) or w_scale.shape != (channels,)
            or not isinstance(w_sum, torch.Tensor) or w_sum.shape != (channels,)
            or w_sum.is_floating_point()
            or (bias is not None and (not isinstance(bias, torch.Tensor)
                                      or bias.shape != (channels,)))):
        acc = int8_gemm(q, packed)
        return dequantize_accumulators(acc, x_scale, x_zero_point, w_scale, w_sum, bias)
    from course.kernels.int8_gemm_maddubs import gemm_maddubs_dequantize

    scale = (w_scale.to(torch.float32) * np.float32(x_scale)).contiguous()
    correction = (w_sum.to(torch.int64) * int(x_zero_point)).to(torch.float64)  # exact
    b = (torch.zeros(channels) if bias is None else bias.detach().to(torch.float32)).contiguous()
    return gemm_maddubs_dequantize(q, panels, correction.numpy(), scale.numpy(), b.numpy())
