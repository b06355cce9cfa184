"""Binary kernels: ±1 values as bits, products as XNOR + popcount.

* :mod:`~course.kernels.binary.bitpack` — signs packed into uint64 words along K and back
  (:class:`PackedBits`);
* :mod:`~course.kernels.binary.gemm` — the XNOR + popcount GEMM's API, its CPU choice of
  kernel (``tiled`` on AVX-512 and non-x86 CPUs, ``tiled_avx2`` on AVX2) and the plain
  numpy reference;
* :mod:`~course.kernels.binary.intrinsics` — the LLVM intrinsics of the AVX-512 tile
  (``llvm.ctpop`` on words and vectors), apart from the kernels that call them;
* :mod:`~course.kernels.binary.gemm_avx2` — the AVX2 tile (``vpshufb`` popcount, byte sums);
* :mod:`~course.kernels.binary.conv` — binary Conv2d by packed im2col + the XNOR GEMM.
"""

from course.kernels.binary.bitpack import PackedBits, pack_sign_bits, pack_signs, unpack_signs
from course.kernels.binary.conv import binary_conv2d, pack_conv_weight
from course.kernels.binary.gemm import compile_kernels, kernel_info, xnor_gemm, xnor_gemm_reference

__all__ = ["PackedBits", "binary_conv2d", "compile_kernels", "kernel_info", "pack_conv_weight",
           "pack_sign_bits", "pack_signs", "unpack_signs", "xnor_gemm", "xnor_gemm_reference"]
