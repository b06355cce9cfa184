"""Post-training quantization: observers, calibration, and three conversions of a float model.

* :mod:`course.ptq.observers` — MinMax, MovingAverageMinMax, Percentile and MSE observers:
  ``update(x)`` per batch, then ``qparams(num_bits, symmetric)``.
* :mod:`course.ptq.calibration` — ``calibrate(model, loader, observer)`` with forward hooks.
* :mod:`course.ptq.folding` — batch-norm folding; :mod:`course.ptq.plan` — which float
  layers a conversion understands (an ``nn.Sequential`` of Linear, Conv2d, BatchNorm,
  ReLU, MaxPool2d, Flatten).
* :func:`to_dynamic_int8` — int8 weights, activations quantized per batch, float out.
* :func:`to_full_integer` — static activation qparams, integer-only from the input
  quantizer to the output dequantizer (:mod:`course.ptq.integer_layers`);
  :func:`fake_quant_twin` — its float32 simulation.
* :func:`to_float16` — weights stored in float16.

All of them run on the exact int8 kernels of :mod:`course.kernels` and store the bytes
they claim (``course.measure.model_size_bytes``).
"""

from course.ptq.calibration import Calibration, calibrate
from course.ptq.dynamic import DynamicInt8Conv2d, DynamicInt8Linear, to_dynamic_int8
from course.ptq.float16 import Float16Conv2d, Float16Linear, to_float16
from course.ptq.folding import fold_batch_norm
from course.ptq.full_integer import fake_quant_twin, to_full_integer
from course.ptq.integer_layers import (
    DequantizeOutput,
    FakeQuantTwin,
    IntConv2d,
    IntegerModel,
    IntFlatten,
    IntLinear,
    IntMaxPool2d,
    IntReLU,
    QuantizeInput,
)
from course.ptq.observers import (
    OBSERVERS,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)
from course.ptq.plan import plan_model, to_folded_fp32

__all__ = [
    "OBSERVERS",
    "Calibration",
    "DequantizeOutput",
    "DynamicInt8Conv2d",
    "DynamicInt8Linear",
    "FakeQuantTwin",
    "Float16Conv2d",
    "Float16Linear",
    "IntConv2d",
    "IntFlatten",
    "IntLinear",
    "IntMaxPool2d",
    "IntReLU",
    "IntegerModel",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "Observer",
    "PercentileObserver",
    "QuantizeInput",
    "calibrate",
    "fake_quant_twin",
    "fold_batch_norm",
    "plan_model",
    "to_folded_fp32",
    "to_dynamic_int8",
    "to_float16",
    "to_full_integer",
]
