"""The lecture's methods as model -> model transforms, one module or package each:

* :mod:`course.methods.direct` — direct quantization of a trained model's weights
  (``direct_quantize``, ``map_weights``);
* :mod:`course.methods.ptq` — post-training quantization: dynamic int8, full integer
  (calibrated), float16, and PyTorch's own as a reference;
* :mod:`course.methods.qat` — quantization-aware training and its integer conversion;
* :mod:`course.methods.xnor` — XNOR-Net / BWN (``binarize_model``, ``pack_model``);
* :mod:`course.methods.dorefa` — DoReFa-Net (``dorefa_model``, ``hands_on_binary_model``);
* :mod:`course.methods.inq` — incremental network quantization (powers of two).

Each builds on :mod:`course.nn`, :mod:`course.kernels`, :mod:`course.observe` and
:mod:`course.quant`; this package's ``__init__`` imports nothing.
"""
