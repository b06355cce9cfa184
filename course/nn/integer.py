"""Integer-only layers: int8 activations (channels last), int8 weights, int32 bias.

Between :class:`QuantizeInput` and :class:`DequantizeOutput` nothing is float: each
:class:`IntLinear` / :class:`IntConv2d` multiplies int8 by int8 into int32, adds its int32
bias and requantizes to int8 with a per-channel fixed-point multiplier and shift
(:mod:`course.kernels.requantize`), a ReLU being the clamp at the output zero point and a
following max pool fused in. :class:`IntLinear` runs the int8 GEMM with its requantization
fused where the kernel allows (:func:`course.kernels.int8_linear.linear_requantize`);
:class:`IntConv2d` runs :class:`course.kernels.conv.fused.Conv2dRequantize` (conv,
bias, requantization, ReLU and pool in one pass over cache-sized chunks of images; the
exact accumulators come from a direct kernel, oneDNN's int8 conv or the int8 GEMM — see
``IntegerModel.kernels`` for which, per layer).

Conventions: activations are signed int8 with a per-tensor scale and zero point
(asymmetric: the unsigned 8-bit qparams of ``course.quant.affine_qparams`` moved by -128);
weights are int8, symmetric per output channel on ``[-127, 127]``; the bias is
``round(b / (s_x * s_w[n]))`` in int32; the input zero point is folded into the bias
(``- z_x * sum_k w_q[n, k]``); 4-D activations are ``[B, H, W, C]``.

Every layer also has ``fake_quant_forward(x)``: the same computation in float32 on
dequantized values, rounding half to even — the *fake-quant twin* that the integer model
must agree with.

The scales and zero points are buffers (they are part of what the model stores); layers
rebuild their prepared kernel arguments after ``load_state_dict``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from course.kernels import (
    backend_report,
    max_pool2d_int8,
    pack_int8,
    prepare_requantize,
    quantize_multiplier_per_channel,
    quantize_to_int8,
    relu_int8,
)
from course.kernels.conv.fused import FUSED_CONV_PATH, Conv2dRequantize
from course.kernels.int8_linear import linear_requantize
from course.quant import per_channel_scale, quantize

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_QMAX = 127
"""Weights use the restricted symmetric range [-127, 127] (zero point 0)."""

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

QParams = tuple[float, int]


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _check_codes(q: object, name: str, dims: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(q).__name__}")
    if q.dtype != torch.int8:
        raise TypeError(f"{name} must hold int8 codes, got {q.dtype}: quantize the input "
                        "first (QuantizeInput)")
    if q.dim() not in dims:
        raise ValueError(f"{name} must be {' or '.join(f'{d}-D' for d in dims)}, got shape "
                         f"{tuple(q.shape)}")
    return q


def fake_quantize_codes(y: torch.Tensor, scale: float, zero_point: int, qmin: int = INT8_MIN,
                        qmax: int = INT8_MAX) -> torch.Tensor:
    """Float ``(clamp(round(y / scale) + zero_point, qmin, qmax) - zero_point) * scale``."""
    q = torch.clamp(torch.round(y / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def _refresh_after_load(module: IntModule, _incompatible_keys: object) -> None:
    """Load-state-dict hook (a module-level function, so that models can be pickled)."""
    module.refresh()


class IntModule(nn.Module):
    """Base class: stores qparams as buffers, refreshes prepared arguments after loading."""

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def _scalar(self, name: str, value: float | int, dtype: torch.dtype) -> None:
        self.register_buffer(name, torch.tensor(value, dtype=dtype))

    def refresh(self) -> None:
        """Recompute what ``forward`` needs from the buffers (called after loading)."""

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class _ScalarQParams(IntModule):
    """An int module with one per-tensor scale and zero point (buffers kept in state dicts)."""

    def __init__(self, scale: float, zero_point: int) -> None:
        super().__init__()
        self._scalar("scale", scale, torch.float64)
        self._scalar("zero_point", zero_point, torch.int32)
        self.refresh()

    def refresh(self) -> None:
        self._s, self._z = float(self.scale), int(self.zero_point)

    def extra_repr(self) -> str:
        return f"scale={self._s:.6g}, zero_point={self._z}"


class QuantizeInput(_ScalarQParams):
    """Float input -> int8 codes: ``clamp(round(x / s) + z, -128, 127)``.

    ``[B, C, H, W]`` comes out channels-last ``[B, H, W, C]``; other shapes keep theirs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"the integer model takes a float input tensor, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() == 4:
            x = _to_nhwc(x)
        return quantize_to_int8(x, self._s, self._z)

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = _to_nhwc(x)
        q = quantize(x.float(), self._s, self._z, INT8_MIN, INT8_MAX, dtype=torch.int16)
        return (q.float() - self._z) * self._s


class DequantizeOutput(_ScalarQParams):
    """int8 codes -> float32 ``(q - z) * s``; ``[B, H, W, C]`` goes back to ``[B, C, H, W]``."""

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        q = _check_codes(q, "q", (2, 4))
        x = (q.to(torch.float32) - self._z) * self._s
        return _to_nchw(x) if x.dim() == 4 else x

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        return _to_nchw(x) if x.dim() == 4 else x


class _IntLayer(IntModule):
    """Shared by IntLinear and IntConv2d: weights, bias and requantization parameters."""

    weight: torch.Tensor

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                 bias_q: torch.Tensor, input_qparams: QParams, output_qparams: QParams,
                 relu: bool) -> None:
        super().__init__()
        out_channels = weight_q.shape[0]
        if weight_q.dtype != torch.int8:
            raise TypeError(f"weight_q must be int8, got {weight_q.dtype}")
        if weight_scale.shape != (out_channels,) or bias_q.shape != (out_channels,):
            raise ValueError(f"weight_scale and bias_q must have shape [{out_channels}]")
        s_in, z_in = input_qparams
        s_out, z_out = output_qparams
        self.register_buffer("weight", weight_q.contiguous())
        self.register_buffer("weight_scale", weight_scale.to(torch.float32))
        self.register_buffer("bias", bias_q.to(torch.int32))
        real = (s_in * weight_scale.to(torch.float64)) / s_out
        multiplier, shift = quantize_multiplier_per_channel(real)
        self.register_buffer("multiplier", multiplier)
        self.register_buffer("shift", shift.to(torch.int8))
        self._scalar("input_scale", s_in, torch.float64)
        self._scalar("input_zero_point", z_in, torch.int32)
        self._scalar("output_scale", s_out, torch.float64)
        self._scalar("output_zero_point", z_out, torch.int32)
        self.relu = bool(relu)

    def refresh(self) -> None:
        self._s_in, self._z_in = float(self.input_scale), int(self.input_zero_point)
        self._s_out, self._z_out = float(self.output_scale), int(self.output_zero_point)
        w_sum = self.weight.reshape(self.weight.shape[0], -1).to(torch.int64).sum(1)
        bias = self.bias.to(torch.int64) - self._z_in * w_sum
        if bias.numel() and (bias.min() < INT32_MIN or bias.max() > INT32_MAX):
            raise ValueError("bias with the input zero point folded in overflows int32")
        self._qmin = self._z_out if self.relu else INT8_MIN
        self._params = prepare_requantize(self.weight.shape[0], self.multiplier,
                                          self.shift.to(torch.int64), self._z_out, bias=bias,
                                          qmin=self._qmin, qmax=INT8_MAX)
        self._w_hat = self.weight.to(torch.float32) * self.weight_scale.view(
            (-1,) + (1,) * (self.weight.dim() - 1))
        self._b_hat = (self.bias.to(torch.float64) * self._s_in
                       * self.weight_scale.to(torch.float64)).to(torch.float32)

    def _fake_quant_output(self, y: torch.Tensor) -> torch.Tensor:
        return fake_quantize_codes(y, self._s_out, self._z_out, self._qmin, INT8_MAX)

    def extra_repr(self) -> str:
        return (f"weight={tuple(self.weight.shape)} int8, input=({self._s_in:.4g}, "
                f"{self._z_in}), output=({self._s_out:.4g}, {self._z_out}), relu={self.relu}")


def quantize_layer_weights(weight: torch.Tensor, bias: torch.Tensor | None,
                           input_scale: float) -> tuple[torch.Tensor, torch.Tensor,
                                                        torch.Tensor]:
    """Per-channel symmetric int8 weights and int32 bias for a float layer.

    Returns ``(weight_q int8 like weight, weight_scale float32 [N], bias_q int32 [N])``
    with ``bias_q = round(b / (input_scale * weight_scale))`` (float64, half to even),
    saturated to int32 with a warning where it does not fit.
    """
    w = weight.detach().to(torch.float32)
    scale = per_channel_scale(w, 8, axis=0)
    weight_q = quantize(w, scale, 0, -WEIGHT_QMAX, WEIGHT_QMAX, dtype=torch.int8)
    scale = scale.reshape(-1)
    if bias is None:
        return weight_q, scale, torch.zeros(w.shape[0], dtype=torch.int32)
    b = torch.round(bias.detach().to(torch.float64) / (input_scale * scale.to(torch.float64)))
    if b.min() < INT32_MIN or b.max() > INT32_MAX:
        warnings.warn("a quantized bias does not fit int32 and was saturated (a channel with "
                      "tiny weights and a large bias)", stacklevel=3)
    return weight_q, scale, torch.clamp(b, INT32_MIN, INT32_MAX).to(torch.int32)


class IntLinear(_IntLayer):
    """int8 ``[B, K]`` -> int8 ``[B, N]``: GEMM, int32 bias, requantize (ReLU fused)."""

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                 bias_q: torch.Tensor, input_qparams: QParams, output_qparams: QParams,
                 relu: bool = False) -> None:
        if weight_q.dim() != 2:
            raise ValueError(f"weight_q must be [N, K], got {tuple(weight_q.shape)}")
        super().__init__(weight_q, weight_scale, bias_q, input_qparams, output_qparams, relu)
        self.refresh()

    @classmethod
    def from_float(cls, layer: nn.Linear, input_qparams: QParams, output_qparams: QParams,
                   relu: bool = False, input_layout: tuple[int, int, int] | None = None
                   ) -> IntLinear:
        """Quantize ``layer``. ``input_layout = (C, H, W)`` when its input is a flattened
        ``[C, H, W]`` map: the weight's columns are reordered to the ``(H, W, C)`` order of
        a flattened channels-last map."""
        weight = layer.weight.detach()
        if input_layout is not None:
            c, h, w = input_layout
            weight = weight.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
        w_q, w_s, b_q = quantize_layer_weights(weight, layer.bias, input_qparams[0])
        return cls(w_q, w_s, b_q, input_qparams, output_qparams, relu)

    def refresh(self) -> None:
        super().refresh()
        self._w_packed = pack_int8(self.weight.t())  # the GEMM's weight, packed once

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        q = _check_codes(q, "q", (2,))
        if q.shape[1] != self.weight.shape[1]:
            raise ValueError(f"q has {q.shape[1]} features, the layer expects "
                             f"{self.weight.shape[1]}")
        return linear_requantize(q, self._w_packed, self._params)

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fake_quant_output(F.linear(x, self._w_hat, self._b_hat))


class IntConv2d(_IntLayer):
    """int8 ``[B, H, W, C_in]`` -> int8 ``[B, H', W', C_out]``: conv, bias, requantize,
    ReLU and an optional max pool, fused (:class:`Conv2dRequantize`, prepared in
    :meth:`refresh`)."""

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                 bias_q: torch.Tensor, input_qparams: QParams, output_qparams: QParams,
                 relu: bool = False, stride: tuple[int, int] = (1, 1),
                 padding: tuple[int, int] = (0, 0),
                 pool: tuple[tuple[int, int], tuple[int, int]] | None = None) -> None:
        if weight_q.dim() != 4:
            raise ValueError(f"weight_q must be [C_out, kh, kw, C_in], got "
                             f"{tuple(weight_q.shape)}")
        super().__init__(weight_q, weight_scale, bias_q, input_qparams, output_qparams, relu)
        self.stride, self.padding, self.pool = tuple(stride), tuple(padding), pool
        self.refresh()

    def refresh(self) -> None:
        super().refresh()
        self._conv = Conv2dRequantize(self.weight, self._params, stride=self.stride,
                                      padding=self.padding, pad_value=self._z_in,
                                      pool=self.pool)

    @classmethod
    def from_float(cls, layer: nn.Conv2d, input_qparams: QParams, output_qparams: QParams,
                   relu: bool = False, pool: nn.MaxPool2d | None = None) -> IntConv2d:
        """Quantize ``layer`` (weights reordered to ``[C_out, kh, kw, C_in]``)."""
        w_q, w_s, b_q = quantize_layer_weights(layer.weight, layer.bias, input_qparams[0])
        pool_args = None
        if pool is not None:
            k = nn.modules.utils._pair(pool.kernel_size)
            s = nn.modules.utils._pair(pool.stride if pool.stride is not None else k)
            pool_args = (tuple(k), tuple(s))
        return cls(w_q.permute(0, 2, 3, 1), w_s, b_q, input_qparams, output_qparams, relu,
                   tuple(layer.stride), tuple(layer.padding), pool_args)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self._conv(_check_codes(q, "q", (4,)))

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(_to_nchw(x), _to_nchw(self._w_hat), self._b_hat, self.stride,
                     self.padding)
        y = self._fake_quant_output(y)
        if self.pool is not None:
            y = F.max_pool2d(y, *self.pool)
        return _to_nhwc(y)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, stride={self.stride}, padding={self.padding}, "
                f"pool={self.pool}, path={self._conv.path!r}")


class IntReLU(IntModule):
    """ReLU on codes: ``max(q, zero_point)``."""

    def __init__(self, zero_point: int) -> None:
        super().__init__()
        self._scalar("zero_point", zero_point, torch.int32)
        self.refresh()

    def refresh(self) -> None:
        self._z = int(self.zero_point)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return relu_int8(_check_codes(q, "q", (2, 4)), self._z)

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(x, 0.0)


class IntMaxPool2d(IntModule):
    """Max pooling of channels-last codes."""

    def __init__(self, kernel_size: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)

    @classmethod
    def from_float(cls, pool: nn.MaxPool2d) -> IntMaxPool2d:
        k = nn.modules.utils._pair(pool.kernel_size)
        return cls(k, nn.modules.utils._pair(pool.stride if pool.stride is not None else k))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return max_pool2d_int8(_check_codes(q, "q", (4,)), self.kernel_size, self.stride)

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        return _to_nhwc(F.max_pool2d(_to_nchw(x), self.kernel_size, self.stride))


class IntFlatten(IntModule):
    """``[B, ...]`` -> ``[B, -1]`` (a channels-last map flattens in ``(H, W, C)`` order)."""

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q.reshape(q.shape[0], -1)

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class IntegerModel(nn.Sequential):
    """An integer-only network: ``QuantizeInput``, int8 layers, ``DequantizeOutput``.

    ``forward(x)`` takes the float model's input and returns float32 outputs; everything
    in between is int8/int32. ``kernels`` reports which kernel paths run (for the conv
    layers: each layer's path, and why it fell back if it did).
    """

    @property
    def kernels(self) -> dict[str, str]:
        report = backend_report()
        paths = ", ".join(
            f"{name}: {m._conv.path}" + (f" [{m._conv.fallback}]" if m._conv.fallback else "")
            for name, m in self.named_children() if isinstance(m, IntConv2d))
        report["int8_conv"] = FUSED_CONV_PATH + (f" ({paths})" if paths else "")
        return report

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().forward(x)

    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The float32 simulation with the same qparams (see :class:`FakeQuantTwin`)."""
        with torch.no_grad():
            for module in self:
                x = module.fake_quant_forward(x)
            return x


class FakeQuantTwin(nn.Module):
    """Float32 twin of an :class:`IntegerModel`: dequantized weights and bias, float
    conv/linear, activations fake-quantized (round half to even) to the same qparams."""

    def __init__(self, integer_model: IntegerModel) -> None:
        super().__init__()
        if not isinstance(integer_model, IntegerModel):
            raise TypeError(f"integer_model must be an IntegerModel, got "
                            f"{type(integer_model).__name__}")
        self.integer_model = integer_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.integer_model.fake_quant_forward(x)
