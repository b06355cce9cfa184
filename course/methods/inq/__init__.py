"""Incremental Network Quantization (Zhou et al., ICLR 2017): weights that are 0 or ±2^n.

* :mod:`course.methods.inq.levels` — the level set from ``max|W|`` and the bit width
  (``inq_exponents``), nearest-level rounding (``quantize_pow2``), checks;
* :mod:`course.methods.inq.partition` — the pruning-inspired partition (``inq_partition``) and the
  random baseline;
* :mod:`course.methods.inq.training` — the masked step that keeps frozen weights exactly
  (``inq_step``), the partition-quantize-retrain loop (``incremental_quantize``) and direct
  power-of-two rounding (``direct_pow2``);
* :mod:`course.methods.inq.storage` — the stored model: packed b-bit codes.

The codes and the shift-and-add product live with the other kernels, in
:mod:`course.kernels.pow2` (``encode_pow2``, ``decode_pow2``, ``pack_codes``,
``shift_matvec``).
"""

from course.methods.inq.levels import (
    bits_for,
    inq_exponents,
    is_pow2_or_zero,
    pow2_levels,
    quantize_pow2,
)
from course.methods.inq.partition import inq_partition, random_partition
from course.methods.inq.storage import pack_pow2_model, saved_file_bytes, unpack_pow2_model
from course.methods.inq.training import (
    InqParts,
    InqRecipe,
    InqResult,
    direct_pow2,
    incremental_quantize,
    inq_step,
    inq_weight_names,
)

__all__ = [
    "InqParts", "InqRecipe", "InqResult", "bits_for", "direct_pow2", "incremental_quantize",
    "inq_exponents", "inq_partition", "inq_step", "inq_weight_names", "is_pow2_or_zero",
    "pack_pow2_model", "pow2_levels", "quantize_pow2", "random_partition", "saved_file_bytes",
    "unpack_pow2_model",
]
