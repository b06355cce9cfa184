"""The int8 and fp32 a user could run instead of the course's kernels: the peers of the
benchmarks.

* PyTorch's quantized engines (``torch.backends.quantized.supported_engines``: x86, fbgemm,
  onednn): a static quantized Linear (u8 activations x s8 weights, the GEMM peer), dynamic
  quantized Linear, and static eager-mode quantized CNNs.
* ONNX Runtime, when it is installed (an optional peer, never a course dependency:
  ``pip install onnxruntime onnx``): fp32 sessions of the same model, ``MatMulInteger``
  (u8 x s8), dynamic and static (QOperator) int8 models.

Every builder returns a callable that runs one batch, or raises :class:`PeerUnavailable`
with the reason, which the benchmark writes into its notes instead of a figure.

What cannot be restricted: ``COURSE_KERNEL_ISA``, ``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``, ``FBGEMM_ENABLE_INSTRUCTIONS`` and ``MKL_ENABLE_INSTRUCTIONS`` lower
the instruction sets of the course, PyTorch, oneDNN, fbgemm and MKL (:func:`emulated_isa`
says so); ONNX Runtime's MLAS reads the CPU's features itself and has no such switch, so
its figures would come from a wider instruction set than the emulated one: under emulation
its rows are left out with that reason.
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course.kernels import cpu_features


class PeerUnavailable(RuntimeError):
    """A peer that cannot run here; the message says why."""


EMULATION_ENV = ("COURSE_KERNEL_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                 "FBGEMM_ENABLE_INSTRUCTIONS", "MKL_ENABLE_INSTRUCTIONS", "NUMBA_CPU_NAME",
                 "NUMBA_CPU_FEATURES")


def emulated_isa() -> str | None:
    """A description of the lowered instruction sets, or None when nothing is lowered."""
    if not cpu_features.isa_forced():
        return None
    settings = ", ".join(f"{k}={os.environ[k]!r}" for k in EMULATION_ENV if k in os.environ)
    return (f"emulated {cpu_features.kernel_isa()} on a {cpu_features.native_isa()} CPU "
            f"({settings})")


def quantized_engines() -> list[str]:
    """PyTorch's quantized engines usable here, in a fixed order."""
    supported = set(torch.backends.quantized.supported_engines)
    return [e for e in ("x86", "fbgemm", "onednn") if e in supported]


# ----------------------------------------------------------------------------- PyTorch


def torch_static_linear(engine: str, weight: torch.Tensor, x: torch.Tensor
                        ) -> Callable[[], torch.Tensor]:
    """``torch.ao.nn.quantized.Linear`` on ``engine``: u8 ``x`` (quantized beforehand) times
    s8 per-tensor ``weight [N, K]``, u8 out: the static int8 GEMM of that engine."""
    import torch.ao.nn.quantized as nnq

    torch.backends.quantized.engine = engine
    w_scale = float(weight.abs().max()) / 127
    qw = torch.quantize_per_tensor(weight, w_scale, 0, torch.qint8)
    x_scale = float(x.max() - x.min()) / 255
    qx = torch.quantize_per_tensor(x, x_scale, int(round(-float(x.min()) / x_scale)),
                                   torch.quint8)
    layer = nnq.Linear(weight.shape[1], weight.shape[0], bias_=False)
    layer.set_weight_bias(qw, None)
    layer.scale, layer.zero_point = x_scale * w_scale * weight.shape[1] ** 0.5, 128

    def run() -> torch.Tensor:
        torch.backends.quantized.engine = engine
        return layer(qx)

    run()
    return run


def torch_dynamic_linear(engine: str, linear: nn.Linear) -> Callable[[torch.Tensor], object]:
    """``torch.ao.quantization.quantize_dynamic`` of ``linear`` on ``engine``."""
    import torch.ao.quantization as tq

    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tq.quantize_dynamic(nn.Sequential(copy.deepcopy(linear)), {nn.Linear},
                                    dtype=torch.qint8)

    def run(x: torch.Tensor) -> torch.Tensor:
        torch.backends.quantized.engine = engine
        return model(x)

    return run


def torch_static_cnn(engine: str, model: nn.Module, calibration: list[torch.Tensor]
                     ) -> Callable[[torch.Tensor], object]:
    """torch.ao eager-mode static quantization of SmallCNN on ``engine``: fuse conv-bn-relu,
    prepare, calibrate, convert; float in, float out."""
    import torch.ao.quantization as tq

    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = nn.Sequential(tq.QuantStub(), copy.deepcopy(model), tq.DeQuantStub()).eval()
        wrapped.qconfig = tq.get_default_qconfig(engine)
        tq.fuse_modules(wrapped[1], [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"]],
                        inplace=True)
        tq.prepare(wrapped, inplace=True)
        with torch.no_grad():
            for x in calibration:
                wrapped(x)
        tq.convert(wrapped, inplace=True)

    def run(x: torch.Tensor) -> torch.Tensor:
        torch.backends.quantized.engine = engine
        return wrapped(x)

    return run


def fp32_folded_channels_last(model: nn.Module) -> tuple[nn.Module, bool]:
    """``course.methods.ptq.to_folded_fp32(model)`` and whether it is channels-last."""
    from course.methods.ptq import to_folded_fp32

    folded = to_folded_fp32(model)
    return folded, any(isinstance(m, nn.Conv2d) for m in folded.modules())


# ----------------------------------------------------------------------------- ONNX Runtime


def onnxruntime():
    """The ``onnxruntime`` module, or :class:`PeerUnavailable` (absent, or under emulation)."""
    emulated = emulated_isa()  # first: under emulation it is left out, installed or not
    if emulated:
        raise PeerUnavailable(f"ONNX Runtime left out: {emulated}, and its MLAS kernels "
                              "cannot be restricted to that instruction set")
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise PeerUnavailable("ONNX Runtime is not installed (optional peer: "
                              "pip install onnxruntime onnx)") from err
    return ort


def _session(ort, model_bytes: bytes, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _export(model: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return buffer.getvalue()


def ort_fp32(model: nn.Module, example: torch.Tensor, threads: int
             ) -> Callable[[np.ndarray], object]:
    """An ONNX Runtime fp32 session of ``model`` (all graph optimizations on)."""
    ort = onnxruntime()
    session = _session(ort, _export(model, example), threads)
    return lambda x: session.run(None, {"x": x})


def _quantized(build, model: nn.Module, example: torch.Tensor) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(_export(model, example))
        build(str(src), str(dst))
        return dst.read_bytes()


def ort_dynamic_int8(model: nn.Module, example: torch.Tensor, threads: int
                     ) -> Callable[[np.ndarray], object]:
    """ONNX Runtime's dynamic int8 quantization of ``model`` (s8 weights)."""
    ort = onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    data = _quantized(lambda s, d: quantize_dynamic(s, d, weight_type=QuantType.QInt8),
                      model, example)
    session = _session(ort, data, threads)
    return lambda x: session.run(None, {"x": x})


def ort_static_int8(model: nn.Module, example: torch.Tensor, calibration: list[torch.Tensor],
                    threads: int) -> Callable[[np.ndarray], object]:
    """ONNX Runtime's static int8 quantization (QOperator, u8 activations, s8 weights)."""
    ort = onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": x.numpy()} for x in calibration])

        def get_next(self):
            return next(self.batches, None)

    def build(src: str, dst: str) -> None:
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    session = _session(ort, _quantized(build, model, example), threads)
    return lambda x: session.run(None, {"x": x})


def ort_matmul_integer(a_u8: np.ndarray, b_s8: np.ndarray, threads: int
                       ) -> Callable[[], object]:
    """ONNX Runtime ``MatMulInteger`` of u8 ``a`` (input) by s8 ``b`` (initializer)."""
    ort = onnxruntime()
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as err:
        raise PeerUnavailable("the onnx package is not installed (needed to build the "
                              "MatMulInteger graph)") from err
    m, k = a_u8.shape
    n = b_s8.shape[1]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [m, n])],
        [numpy_helper.from_array(b_s8, "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    session = _session(ort, proto.SerializeToString(), threads)
    return lambda: session.run(None, {"a": a_u8})
