"""Post-training quantization: three conversions of a float model, and PyTorch's own.

The pieces come from the layers below and are re-exported here for the lab: observers and
calibration (:mod:`course.observe`), batch-norm folding (:mod:`course.nn.folding`), the
integer layers (:mod:`course.nn.integer`).

* :mod:`course.methods.ptq.plan` — which float layers a conversion understands (an
  ``nn.Sequential`` of Linear, Conv2d, BatchNorm, ReLU, MaxPool2d, Flatten).
* :func:`to_dynamic_int8` — int8 weights, activations quantized per batch, float out.
* :func:`to_full_integer` — static activation qparams, integer-only from the input
  quantizer to the output dequantizer (:mod:`course.nn.integer`);
  :func:`fake_quant_twin` — its float32 simulation.
* :func:`to_float16` — weights stored in float16.
* :mod:`course.methods.ptq.pytorch_reference` — PyTorch's own dynamic and static int8
  (``torch.ao.quantization``), the reference the course's conversions are compared with.

All of them run on the exact int8 kernels of :mod:`course.kernels` and store the bytes
they claim (``course.measure.model_size_bytes``).
"""

from course.methods.ptq.dynamic import DynamicInt8Conv2d, DynamicInt8Linear, to_dynamic_int8
from course.methods.ptq.float16 import Float16Conv2d, Float16Linear, to_float16
from course.methods.ptq.full_integer import fake_quant_twin, to_full_integer
from course.methods.ptq.plan import plan_model, to_folded_fp32
from course.methods.ptq.pytorch_reference import quantized_engine
from course.nn.folding import fold_batch_norm
from course.nn.integer import (
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
from course.observe.calibration import Calibration, calibrate
from course.observe.observers import (
    OBSERVERS,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)

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
    "quantized_engine",
    "plan_model",
    "to_folded_fp32",
    "to_dynamic_int8",
    "to_float16",
    "to_full_integer",
]
