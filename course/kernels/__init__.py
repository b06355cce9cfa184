"""The fast paths: exact integer kernels, each with a slow, obviously-correct reference.

int8 (this package's int8 modules, channels-last activations):

* :mod:`course.kernels.int8_gemm` — int8 x int8 -> int32 GEMM (``torch._int_mm`` on
  oneDNN's VNNI/AMX kernels where verified exact; on AVX2 without VNNI the course's
  ``vpmaddubsw`` kernel for weights in [-127, 127], :mod:`~course.kernels.int8_gemm_maddubs`,
  and the widened ``vpmaddwd`` one otherwise, :mod:`~course.kernels.int8_gemm_avx2`; else an
  exact float32 blocked matmul);
* :mod:`course.kernels.int8_linear` — an int8 Linear's GEMM with its requantization or
  dequantization fused in (per cache block, on the AVX2 kernel);
* :mod:`course.kernels.requantize` — fixed-point requantization int32 -> int8 (integer
  multiplier in [2**30, 2**31), rounding right shift, bias and zero points fused);
* :mod:`course.kernels.conv` — int8 Conv2d: by im2col + int8 GEMM (int32 out,
  :mod:`~course.kernels.conv.im2col`), and fused with requantization, ReLU and max pooling
  (int8 in, int8 out, :mod:`~course.kernels.conv.fused`) over three exact paths: a direct
  kernel for small K (:mod:`~course.kernels.conv.direct`), PyTorch's oneDNN int8
  convolution asked for its exact sums (:mod:`~course.kernels.conv.onednn`, verified per
  shape), or im2col + the int8 GEMM;
* :mod:`course.kernels.int8_activation` — integer ReLU and int8 max pooling;
* :mod:`course.kernels.int8_dynamic` — on-the-fly activation quantization and the float
  epilogue of dynamic-range int8 layers;
* :mod:`course.kernels.numba_types` — the numba types the kernels share (``U64``);
* :mod:`course.kernels.cpu_features` — what the CPU offers (SIMD level, int8 dot products,
  the course kernels' level ``kernel_isa()``, lowered by ``COURSE_KERNEL_ISA=avx2``).

binary (bits packed along K into 64-bit words, XNOR + popcount), the subpackage
:mod:`course.kernels.binary`:

* :mod:`course.kernels.binary.bitpack` — packing signs into uint64 words and back;
* :mod:`course.kernels.binary.gemm` — the numba XNOR + popcount GEMM (register tiles,
  compiled once and cached on disk), with a plain reference; its LLVM intrinsics (ctpop on
  words and vectors) in :mod:`course.kernels.binary.intrinsics`, its AVX2 tile in
  :mod:`course.kernels.binary.gemm_avx2`;
* :mod:`course.kernels.binary.conv` — binary Conv2d by packed im2col + the XNOR GEMM.

powers of two (INQ's weights, 0 or ±2^n):

* :mod:`course.kernels.pow2` — b-bit codes, their packing into bytes, and the product with
  integer inputs by shifts and adds (numba), beside the int64 matmul it must equal.

The functions ``int8_gemm`` and ``requantize`` are exported under their modules' names, so
``course.kernels.int8_gemm`` is the function; import a module's other names from the
module itself (``from course.kernels.requantize import MULTIPLIER_BITS``).

Which path runs is never silent: :func:`backend` names the int8 GEMM path and
:func:`backend_report` says why, with the CPU features seen.

>>> backend() in ("int_mm", "avx2_maddubs", "float32_blocked")
True
"""

from __future__ import annotations

import os

import numba

# numba's OpenMP threading layer, once a parallel kernel has run, slows PyTorch's own
# threaded ops in the same process (measured up to 9x on a 512x512 matmul); the workqueue
# layer does not, and runs the course's kernels as fast. A user's explicit choice wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from course.kernels.binary.bitpack import (  # noqa: E402
    PackedBits,
    pack_sign_bits,
    pack_signs,
    unpack_signs,
)
from course.kernels.binary.conv import binary_conv2d, pack_conv_weight  # noqa: E402
from course.kernels.conv.fused import (
    Conv2dRequantize,
    conv2d_requantize_int8,
    conv2d_requantize_int8_reference,
)
from course.kernels.conv.im2col import conv2d_int8, conv2d_int8_reference, im2col_int8
from course.kernels.int8_activation import (  # noqa: E402
    max_pool2d_int8,
    max_pool2d_int8_reference,
    relu_int8,
)
from course.kernels.int8_dynamic import (
    activation_qparams,
    dequantize_accumulators,
    quantize_activations_int8,
    quantize_to_int8,
)
from course.kernels.int8_gemm import (
    MAX_K,
    GemmBackend,
    PackedInt8,
    gemm_backend,
    int8_gemm,
    int8_gemm_reference,
    pack_int8,
    verify_exact,
)
from course.kernels.requantize import (
    RequantParams,
    prepare_requantize,
    quantize_multiplier,
    quantize_multiplier_per_channel,
    requantize,
    requantize_prepared,
    requantize_reference,
)

REQUANTIZE_PATH = "numba: one fused pass (bias, multiply, rounding shift, zero point, clamp)"
CONV_PATH = ("fused conv + requantization + max pooling, per layer: direct (small K), "
             "oneDNN exact sums (where verified) or im2col + int8_gemm; the chosen path of each "
             "layer is in IntegerModel.kernels")


def backend() -> str:
    """Name of the int8 GEMM path in use: ``"int_mm"``, ``"avx2_maddubs"`` or
    ``"float32_blocked"``."""
    return gemm_backend().name


def backend_report() -> dict[str, str]:
    """Every int8 kernel's path and why, as strings (for logs and benchmark results).

    >>> sorted(backend_report())
    ['cpu_capability', 'int8_conv', 'int8_gemm', 'int8_gemm_reason', 'int8_instructions', \
'kernel_isa', 'requantize', 'xnor_gemm']
    """
    from course.kernels.binary.gemm import default_backend

    info = gemm_backend()
    return {
        "int8_gemm": info.name,
        "int8_gemm_reason": info.reason,
        "cpu_capability": info.cpu_capability,
        "int8_instructions": ", ".join(info.int8_instructions) or "none",
        "kernel_isa": info.kernel_isa,
        "xnor_gemm": default_backend(),
        "requantize": REQUANTIZE_PATH,
        "int8_conv": CONV_PATH,
    }


__all__ = [
    "Conv2dRequantize",
    "conv2d_requantize_int8",
    "conv2d_requantize_int8_reference",
    "PackedBits",
    "binary_conv2d",
    "pack_conv_weight",
    "pack_sign_bits",
    "pack_signs",
    "unpack_signs",
    "MAX_K",
    "GemmBackend",
    "PackedInt8",
    "pack_int8",
    "RequantParams",
    "activation_qparams",
    "backend",
    "backend_report",
    "conv2d_int8",
    "conv2d_int8_reference",
    "dequantize_accumulators",
    "gemm_backend",
    "im2col_int8",
    "int8_gemm",
    "int8_gemm_reference",
    "max_pool2d_int8",
    "max_pool2d_int8_reference",
    "prepare_requantize",
    "quantize_activations_int8",
    "quantize_multiplier",
    "quantize_multiplier_per_channel",
    "quantize_to_int8",
    "relu_int8",
    "requantize",
    "requantize_prepared",
    "requantize_reference",
    "verify_exact",
]
