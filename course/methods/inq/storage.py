"""An INQ model as it is stored: packed b-bit codes, not float32 weights that happen to be
powers of two.

:func:`pack_pow2_model` turns a quantized model's state dict into the stored form: every
quantized weight ``<name>`` becomes ``<name>.codes`` (uint8, ``num_bits`` bits per weight,
:func:`course.kernels.pow2.pack_codes`) and ``<name>.exponents`` (int16 ``[n1, n2]``);
biases and batch norm stay as they are. :func:`unpack_pow2_model` gives the exact weights
back. Sizes are the bytes of those tensors (:func:`course.measure.model_size_bytes`), and
:func:`saved_file_bytes` the size of the file ``torch.save`` writes.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping

import torch
from torch import nn

from course.kernels.pow2 import (
    PackedCodes,
    decode_pow2,
    encode_pow2,
    pack_codes,
    unpack_codes,
)

CODES_SUFFIX = ".codes"
EXPONENTS_SUFFIX = ".exponents"


def pack_pow2_model(model: nn.Module, exponents: Mapping[str, tuple[int, int]],
                    num_bits: int) -> dict[str, torch.Tensor]:
    """The stored state of ``model``: each weight named in ``exponents`` (every element 0 or
    ±2^n, n2 <= n <= n1) as packed codes and its ``[n1, n2]``; everything else unchanged.
    ValueError (from ``encode_pow2``) if a weight is not on its levels."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(exponents, Mapping):
        raise TypeError(f"exponents must be a dict of weight name -> (n1, n2), got "
                        f"{type(exponents).__name__}")
    state = model.state_dict()
    missing = [n for n in exponents if n not in state]
    if missing:
        raise ValueError(f"exponents: {missing} are not entries of the model's state_dict")
    out = {}
    for key, value in state.items():
        if key in exponents:
            n1, n2 = exponents[key]
            packed = pack_codes(encode_pow2(value.detach(), n1, n2, num_bits), num_bits)
            out[key + CODES_SUFFIX] = packed.data
            out[key + EXPONENTS_SUFFIX] = torch.tensor([n1, n2], dtype=torch.int16)
        else:
            out[key] = value.detach().clone()
    return out


def unpack_pow2_model(stored: Mapping[str, torch.Tensor], template: nn.Module,
                      num_bits: int) -> nn.Module:
    """A deep copy of ``template`` loaded from ``stored`` (the output of
    :func:`pack_pow2_model`), the weights decoded exactly."""
    if not isinstance(stored, Mapping):
        raise TypeError(f"stored must be a dict of tensors, got {type(stored).__name__}")
    if not isinstance(template, nn.Module):
        raise TypeError(f"template must be a torch.nn.Module, got {type(template).__name__}")
    model = copy.deepcopy(template)
    state = {}
    for key, value in model.state_dict().items():
        if key + CODES_SUFFIX in stored:
            n1, n2 = (int(v) for v in stored[key + EXPONENTS_SUFFIX])
            packed = PackedCodes(stored[key + CODES_SUFFIX], num_bits, tuple(value.shape))
            state[key] = decode_pow2(unpack_codes(packed), n1, n2, num_bits)
        else:
            if key not in stored:
                raise ValueError(f"stored: {key!r} of the template is missing")
            state[key] = stored[key]
    model.load_state_dict(state)
    return model


def saved_file_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the file ``torch.save(state)`` writes (tensors plus the file's own
    overhead: names, pickled structure, alignment)."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict of tensors, got {type(state).__name__}")
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getbuffer().nbytes


__all__ = ["pack_pow2_model", "saved_file_bytes", "unpack_pow2_model"]
