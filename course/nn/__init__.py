"""Modules built on the layers below (:mod:`course.quant`, :mod:`course.observe`,
:mod:`course.kernels`): what a quantized model is made of. One module each, imported by
name (this package's ``__init__`` imports nothing, so ``course.nn.swap`` does not load the
kernels):

* :mod:`course.nn.fake_quant` — ``FakeQuantize`` (observer-driven qparams, STE) and the
  switches ``freeze_observers`` / ``enable_fake_quant``;
* :mod:`course.nn.folding` — batch-norm folding (``fold_batch_norm``, ``FOLDABLE``);
* :mod:`course.nn.swap` — swapping Linear / Conv2d layers for quantized versions of the
  same geometry (``like``, ``replace_module``, ``check_layer_names``);
* :mod:`course.nn.integer` — the integer-only layers (``QuantizeInput``, ``IntLinear``,
  ``IntConv2d``, ``IntReLU``, ``IntMaxPool2d``, ``IntFlatten``, ``DequantizeOutput``,
  ``IntegerModel``) and their float twin, which PTQ and QAT both convert to;
* :mod:`course.nn.binary` — BWN / XNOR-Net training layers; :mod:`course.nn.packed` — their
  packed 1-bit inference forms;
* :mod:`course.nn.dorefa` — DoReFa-Net layers and activation.

Model -> model transforms that use them are in :mod:`course.methods`.
"""
