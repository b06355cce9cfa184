"""Observers and calibration: the float ranges that quantization parameters come from.

* :mod:`course.observe.observers` — MinMax, MovingAverageMinMax, Percentile and MSE
  observers: ``update(x)`` per batch, then ``qparams(num_bits, symmetric)``;
  :data:`OBSERVERS` names them.
* :mod:`course.observe.calibration` — ``calibrate(model, loader, observer)`` with forward
  hooks: one observer per watched module, the model's inputs batch by batch.

Built on :mod:`course.quant` only.
"""

from course.observe.calibration import Calibration, ObserverFactory, batch_inputs, calibrate
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
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "Observer",
    "ObserverFactory",
    "PercentileObserver",
    "batch_inputs",
    "calibrate",
]
