"""Batch-norm folding: merge an eval-mode BatchNorm into the Linear or Conv2d before it.

In eval mode ``bn(y) = gamma * (y - mean) / sqrt(var + eps) + beta`` is an affine map per
output channel, so ``bn(layer(x))`` is one layer with weight ``w * k`` (row ``n`` scaled by
``k[n] = gamma[n] / sqrt(var[n] + eps)``) and bias ``(b - mean) * k + beta``. Folding comes
before weight quantization: the integer model then quantizes the weights it really uses.

>>> layer, bn = torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2).eval()
>>> x = torch.randn(4, 3)
>>> torch.allclose(fold_batch_norm(layer, bn)(x), bn(layer(x)), atol=1e-6)
True
"""

from __future__ import annotations

import copy

import torch
from torch import nn

FOLDABLE = {nn.Linear: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}
"""Which batch norm may follow which layer."""


def fold_batch_norm(layer: nn.Linear | nn.Conv2d,
                    bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.Linear | nn.Conv2d:
    """A new layer equal to ``bn(layer(x))`` with ``bn`` in eval mode (running statistics).

    Arithmetic in float64, result float32; ``layer`` and ``bn`` are not modified. A layer
    without bias gets one. Raises ``TypeError`` for other module types and ``ValueError``
    when ``bn`` has no running statistics or a channel count other than the layer's outputs.
    """
    if type(layer) not in FOLDABLE:
        raise TypeError(f"layer must be nn.Linear or nn.Conv2d, got {type(layer).__name__}")
    expected = FOLDABLE[type(layer)]
    if type(bn) is not expected:
        raise TypeError(f"a {type(layer).__name__} folds an {expected.__name__}, got "
                        f"{type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn has no running statistics (track_running_stats=False): "
                         "nothing to fold")
    out_features = layer.weight.shape[0]
    if bn.num_features != out_features:
        raise ValueError(f"bn has {bn.num_features} channels but the layer has {out_features} "
                         "outputs")
    with torch.no_grad():
        w = layer.weight.to(torch.float64)
        b = (layer.bias.to(torch.float64) if layer.bias is not None
             else torch.zeros(out_features, dtype=torch.float64))
        gamma = (bn.weight.to(torch.float64) if bn.weight is not None
                 else torch.ones(out_features, dtype=torch.float64))
        beta = (bn.bias.to(torch.float64) if bn.bias is not None
                else torch.zeros(out_features, dtype=torch.float64))
        k = gamma / torch.sqrt(bn.running_var.to(torch.float64) + bn.eps)
        folded = copy.deepcopy(layer)
        if folded.bias is None:
            folded.bias = nn.Parameter(torch.zeros(out_features))
        shape = (-1,) + (1,) * (w.dim() - 1)
        folded.weight.copy_((w * k.view(shape)).to(torch.float32))
        folded.bias.copy_(((b - bn.running_mean.to(torch.float64)) * k + beta)
                          .to(torch.float32))
    return folded.float().eval()
