"""JSON form of reference cases: tensors, dtypes, tuples and non-finite floats, in stable bytes.

``dumps(obj)`` gives the same bytes for the same object on every machine (sorted keys,
``repr`` floats that round-trip exactly), so committed reference files can be checked by
regenerating them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def _encode_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {"__float__": repr(value)}  # 'inf', '-inf', 'nan'


def _decode_dtype(name: Any) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r} in a reference file")
    return dtype


def encode(obj: Any) -> Any:
    """Turn tensors, dtypes, tuples and non-finite floats into JSON-safe tagged dicts."""
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dtype not in _NAMES:
            raise TypeError(f"cannot encode a tensor of dtype {t.dtype}")
        data = t.reshape(-1).tolist()
        if t.is_floating_point():
            data = [_encode_float(v) for v in data]
        return {"__tensor__": _NAMES[t.dtype], "shape": list(t.shape), "data": data}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return _encode_float(obj)
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v) for v in obj]}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("only dicts with str keys can be encoded")
        return {k: encode(v) for k, v in obj.items()}
    raise TypeError(f"cannot encode {type(obj).__name__}")


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`: fresh tensors every call, so callers may modify them."""
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            dtype = _DTYPES[obj["__tensor__"]]
            data = [decode(v) for v in obj["data"]]
            return torch.tensor(data, dtype=dtype).reshape(obj["shape"])
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__dtype__" in obj:
            return _decode_dtype(obj["__dtype__"])
        if "__tuple__" in obj:
            return tuple(decode(v) for v in obj["__tuple__"])
        return {k: decode(v) for k, v in obj.items()}
    return obj


def dumps(obj: Any) -> bytes:
    """Stable UTF-8 JSON bytes of ``encode(obj)``, one trailing newline."""
    text = json.dumps(encode(obj), sort_keys=True, indent=1, allow_nan=False)
    return (text + "\n").encode("utf-8")


def loads(data: bytes | str) -> Any:
    """Decode bytes written by :func:`dumps`."""
    return decode(json.loads(data))
