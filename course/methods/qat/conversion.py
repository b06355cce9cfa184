"""From a trained :class:`course.methods.qat.QATModel` to the integer-only model of
``course.methods.ptq``.

:func:`convert` builds the :class:`course.nn.IntegerModel` of lab02 with exactly the
qparams the QAT model used: int8 x int8 -> int32 kernels throughout, the same integer
weight codes (of the folded weights), the int32 bias ``round(b_fold / (s_in * s_w))``.

**Bit widths below 8.** The integer model stores int8 codes throughout; for ``bits < 8``
they are restricted to the b-bit range: weights in ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` (the
weight quantizer's range), activations in ``[-128, -128 + 2**b - 1]`` (the unsigned b-bit
codes moved by -128), enforced by an :class:`IntClamp` after each layer.

>>> clamp = IntClamp(-128, -125, scale=0.5, zero_point=-128)  # 2-bit codes
>>> clamp(torch.tensor([-128, -126, 5], dtype=torch.int8))
tensor([-128, -126, -125], dtype=torch.int8)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from course.methods.ptq.full_integer import UNSIGNED_TO_SIGNED
from course.methods.qat.layers import QATConv2d, QATLinear, bias_codes
from course.methods.qat.model import QATModel, check_qat_model
from course.nn.fake_quant import FakeQuantize
from course.nn.integer import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    DequantizeOutput,
    IntConv2d,
    IntegerModel,
    IntFlatten,
    IntLinear,
    IntMaxPool2d,
    IntModule,
    IntReLU,
    QuantizeInput,
)


class IntClamp(IntModule):
    """Clamp int8 codes to ``[qmin, qmax]``: restricts a layer's output to b-bit codes.

    ``scale`` / ``zero_point`` are the codes' qparams (for the float twin, which clamps
    the dequantized values to ``[(qmin - z) s, (qmax - z) s]``).
    """

    def __init__(self, qmin: int, qmax: int, scale: float, zero_point: int) -> None:
        super().__init__()
        if not INT8_MIN <= qmin < qmax <= INT8_MAX:
            raise ValueError(f"need -128 <= qmin < qmax <= 127, got [{qmin}, {qmax}]")
        self._scalar("qmin", qmin, torch.int32)
        self._scalar("qmax", qmax, torch.int32)
        self._scalar("scale", scale, torch.float64)
        self._scalar("zero_point", zero_point, torch.int32)
        self.refresh()

    def refresh(self) -> None:
        self._qmin, self._qmax = int(self.qmin), int(self.qmax)
        s, z = float(self.scale), int(self.zero_point)
        self._lo, self._hi = (self._qmin - z) * s, (self._qmax - z) * s

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if not isinstance(q, torch.Tensor) or q.dtype != torch.int8:
            raise TypeError(f"q must be an int8 tensor, got {getattr(q, 'dtype', type(q))}")
        return torch.clamp(q, self._qmin, self._qmax)

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self._lo, self._hi)

    def extra_repr(self) -> str:
        return f"qmin={self._qmin}, qmax={self._qmax}"


def _int8_qparams(fq: FakeQuantize, what: str) -> tuple[float, int]:
    if not fq.observed:
        raise ValueError(f"{what} was never observed: train or calibrate the QAT model first")
    scale, zero_point = fq.qparams()
    return scale, zero_point - UNSIGNED_TO_SIGNED


def _clamp_for(fq: FakeQuantize, qparams: tuple[float, int]) -> IntClamp | None:
    """An IntClamp to the b-bit codes of ``fq``, or None when they fill int8."""
    lo, hi = fq.qmin - UNSIGNED_TO_SIGNED, fq.qmax - UNSIGNED_TO_SIGNED
    if (lo, hi) == (INT8_MIN, INT8_MAX):
        return None
    return IntClamp(lo, hi, *qparams)


def _flatten_input_shapes(model: QATModel) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every Flatten, traced with one zero batch in eval mode."""
    if model.input_shape is None:
        raise ValueError("the QAT model has never run: train or calibrate it first")
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_children():
        if isinstance(module, nn.Flatten):
            def hook(_m: nn.Module, args: Any, name: str = name) -> None:
                shapes[name] = tuple(args[0].shape[1:])
            handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *model.input_shape)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


def _int_layer(layer: QATLinear | QATConv2d, in_qparams: tuple[float, int],
               out_qparams: tuple[float, int], layout: tuple[int, ...] | None,
               pool: nn.MaxPool2d | None) -> IntLinear | IntConv2d:
    with torch.no_grad():
        w, b = layer.folded_parameters()
        fq = layer.weight_fake_quant
        scale = fq.scale.view((-1,) + (1,) * (w.dim() - 1))
        codes = torch.clamp(torch.round(w / scale), fq.qmin, fq.qmax).to(torch.int8)
        s_w = fq.scale.to(torch.float32)
        bias_q = (torch.zeros(w.shape[0]) if b is None
                  else bias_codes(b, torch.tensor(in_qparams[0], dtype=torch.float32) * s_w))
    if bias_q.abs().max() > INT32_MAX:
        raise ValueError("a quantized bias does not fit int32 (tiny weights, large bias)")
    bias_q = bias_q.to(torch.int32)
    if isinstance(layer, QATLinear):
        if layout is not None and len(layout) == 3:
            c, h, wd = layout
            codes = codes.reshape(-1, c, h, wd).permute(0, 2, 3, 1).reshape(codes.shape[0], -1)
        return IntLinear(codes, s_w, bias_q, in_qparams, out_qparams, layer.relu)
    pool_args = None
    if pool is not None:
        k = nn.modules.utils._pair(pool.kernel_size)
        pool_args = (tuple(k), tuple(nn.modules.utils._pair(pool.stride or k)))
    return IntConv2d(codes.permute(0, 2, 3, 1), s_w, bias_q, in_qparams, out_qparams,
                     layer.relu, tuple(layer.stride), tuple(layer.padding), pool_args)


def convert(model: QATModel) -> IntegerModel:
    """The integer-only model (``course.nn.IntegerModel``) computing what ``model`` does
    in eval mode: the same qparams, the same integer weight codes (folded weights), an
    int32 bias ``round(b_fold / (s_in * s_w))``, int8 activations restricted to the b-bit
    codes. ``model`` must have been trained or calibrated; it is not modified.
    """
    model = check_qat_model(model)
    flatten_shapes = _flatten_input_shapes(model)
    children = list(model.named_children())
    name, first = children[0]
    qparams = _int8_qparams(first, "the model input")
    modules: OrderedDict[str, nn.Module] = OrderedDict(quantize=QuantizeInput(*qparams))
    clamp = _clamp_for(first, qparams)
    if clamp is not None:
        modules["quantize_clamp"] = clamp
    layout: tuple[int, ...] | None = None
    i = 1
    while i < len(children):
        name, module = children[i]
        if isinstance(module, QATLinear | QATConv2d):
            if module.output_fake_quant is None:
                raise ValueError(f"layer {name!r} has no output quantizer")
            out_qparams = _int8_qparams(module.output_fake_quant, f"layer {name!r}")
            pool = None
            if (isinstance(module, QATConv2d) and i + 1 < len(children)
                    and type(children[i + 1][1]) is nn.MaxPool2d):
                pool = children[i + 1][1]
                i += 1
            modules[name] = _int_layer(module, qparams, out_qparams, layout, pool)
            clamp = _clamp_for(module.output_fake_quant, out_qparams)
            if clamp is not None:
                modules[f"{name}_clamp"] = clamp
            qparams, layout = out_qparams, None
        elif type(module) is nn.MaxPool2d:
            modules[name] = IntMaxPool2d.from_float(module)
        elif type(module) is nn.Flatten:
            layout = flatten_shapes.get(name)
            modules[name] = IntFlatten()
        elif type(module) is nn.ReLU:
            modules[name] = IntReLU(qparams[1])
        else:
            raise ValueError(f"cannot convert module {name!r} ({type(module).__name__})")
        i += 1
    modules["dequantize"] = DequantizeOutput(*qparams)
    return IntegerModel(modules).eval()
