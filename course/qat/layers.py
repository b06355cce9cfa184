"""Old path of :mod:`course.methods.qat.layers` (see :mod:`course.qat`)."""

from course.methods.qat.layers import fold_scale, folded_parameters

__all__ = ["fold_scale", "folded_parameters"]
