"""What a student's function did on one reference case, as plain data, and its verdict.

Grading is split in two halves so that the verdict never depends on the student's process:

- :func:`capture` calls the student's function on one case's inputs and turns what happened
  into an *outcome*: a JSON-safe dict of plain numbers, strings, lists and base64 array
  bytes. It runs wherever the student's code runs (their notebook, the grader's sandbox).
- :func:`judge` compares an outcome with the case's expected values and raises
  :class:`Mismatch` with a precise message. It only reads data, so it gives the same verdict
  in the student's kernel and in a grader process that never ran student code: a student
  cannot influence it except through the values their function returned.

Outcome forms (``dumps_outcome`` / ``loads_outcome`` give the wire form, one JSON object)::

    {"returned": <value>}                         the call returned
    {"raised": {"type": "ValueError", "mro": [...], "message": "..."}}
    model cases add "input_changed": "<state_dict key>" or null

Values: ``null``, ``true``/``false``, ints, finite floats, ``{"__float__": "nan"}``,
``{"__tuple__": [...]}``, lists, ``{"__dict__": {str: <value>}}`` (a dict with str keys),
``{"__array__": {dtype, kind, shape, data}}`` (a tensor or
numpy array; ``data`` is base64 of little-endian float64 / int64 / uint8 values),
``{"__module__": {"type", "is_input", "state": {key: array}, "geometry": {...}}}`` (the
geometry of a returned Conv2d: stride, padding, dilation, groups, which its state does not
show) and
``{"__object__": {"type", "repr"}}`` for anything else.

>>> case = {"kind": "float", "args": [2.0], "kwargs": {}, "expected": 4.0}
>>> outcome = capture(lambda x: x * x, case)
>>> outcome
{'returned': 4.0}
>>> judge(loads_outcome(dumps_outcome(outcome)), case)   # passes: returns None
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from course.grading import fixtures
from course.grading.compare import ArrayData, Mismatch, close, compare_tensor, to_int, to_real

# Bound before any student code runs, so that a rebinding in a notebook changes nothing here.
_Module, _Tensor, _ndarray, _generic = nn.Module, torch.Tensor, np.ndarray, np.generic
_isinstance, _type, _len, _repr, _str = isinstance, type, len, repr, str
_int, _float, _bool, _sorted, _dict, _list = int, float, bool, sorted, dict, list
_detach, _cpu, _reshape = torch.Tensor.detach, torch.Tensor.cpu, torch.Tensor.reshape
_to, _numpy, _equal = torch.Tensor.to, torch.Tensor.numpy, torch.equal
_state_dict = nn.Module.state_dict
_asarray, _ascontiguous = np.asarray, np.ascontiguousarray
_b64encode, _b64decode = base64.b64encode, base64.b64decode
_isfinite = math.isfinite

MAX_ELEMENTS = 1_000_000
"""Arrays larger than this are recorded by shape and dtype only (no reference is that big)."""
MAX_DEPTH = 6
"""Nesting depth of returned containers kept in an outcome."""
MAX_ITEMS = 10_000
"""Items of a returned list or tuple kept in an outcome."""
MAX_TEXT = 1_000
"""Characters kept of an exception message or of the repr of an unexpected object."""


@dataclass(frozen=True)
class ModuleData:
    """A recorded ``nn.Module``: its class name, whether it was the input model, its state."""

    type_name: str
    is_input: bool
    state: dict[str, ArrayData]
    geometry: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<{self.type_name} module>"


@dataclass(frozen=True)
class ObjectData:
    """Anything else a function returned: its type name and (truncated) repr."""

    type_name: str
    text: str

    def __repr__(self) -> str:
        return self.text


# --------------------------------------------------------------------------- capture
def _safe_text(value: Any) -> str:
    try:
        text = _str(value)
    except BaseException:  # noqa: BLE001 - a student's __str__ may do anything
        text = f"<{_type(value).__name__} whose str() failed>"
    return text[:MAX_TEXT]


def _kind_of(dtype_name: str) -> str:
    """'float', 'int', 'bool' or 'other' for a torch dtype name ('torch.float32' ...)."""
    if dtype_name.endswith("bool"):
        return "bool"
    if "complex" in dtype_name or "qint" in dtype_name or "quint" in dtype_name:
        return "other"
    if "float" in dtype_name:
        return "float"
    if "int" in dtype_name:
        return "int"
    return "other"


_WIRE = {"float": "<f8", "int": "<i8", "bool": "u1"}
_NUMPY_KINDS = {"f": "float", "i": "int", "u": "int", "b": "bool"}


def _array_record(dtype_name: str, kind: str, shape: tuple, flat: Any) -> dict:
    """The ``__array__`` form; ``flat`` is a numpy array of the values, or None."""
    record = {"dtype": dtype_name, "kind": kind, "shape": [_int(s) for s in shape], "data": None}
    if flat is not None and kind in _WIRE and flat.size <= MAX_ELEMENTS:
        wire = _ascontiguous(flat.reshape(-1)).astype(_WIRE[kind])
        record["data"] = _b64encode(wire.tobytes()).decode("ascii")
    return {"__array__": record}


def _encode_numpy(arr: np.ndarray) -> dict:
    kind = _NUMPY_KINDS.get(arr.dtype.kind, "other")
    flat = arr if kind != "other" and arr.size <= MAX_ELEMENTS else None
    return _array_record(_str(arr.dtype), kind, arr.shape, flat)


def _encode_tensor(t: torch.Tensor) -> dict:
    t = _cpu(_detach(t))
    dtype_name = _str(t.dtype)
    kind = _kind_of(dtype_name)
    shape = tuple(t.shape)
    if kind == "other" or t.numel() > MAX_ELEMENTS:
        return _array_record(dtype_name, kind, shape, None)
    wide = {"float": torch.float64, "int": torch.int64, "bool": torch.uint8}[kind]
    return _array_record(dtype_name, kind, shape, _numpy(_to(t, wide)))


def encode_value(value: Any, model: Any = None, depth: int = 0) -> Any:
    """The outcome form of a returned value (see the module docstring)."""
    if value is None or value is True or value is False:
        return value
    if _isinstance(value, _bool):  # a bool subclass
        return _bool(value)
    if _isinstance(value, _int) and _type(value) is _int:
        return value
    if _isinstance(value, _float) and _type(value) is _float:
        return value if _isfinite(value) else {"__float__": _repr(value)}
    if _isinstance(value, _Tensor):
        return _encode_tensor(value)
    if _isinstance(value, (_ndarray, _generic)):
        return _encode_numpy(_asarray(value))
    if _isinstance(value, _Module):
        state = {k: _encode_tensor(v)["__array__"] for k, v in _state_dict(value).items()}
        return {"__module__": {"type": _type(value).__name__, "is_input": value is model,
                               "geometry": geometry(value),
                               "state": state}}
    if _isinstance(value, (tuple, _list)) and depth < MAX_DEPTH:
        items = [encode_value(v, model, depth + 1) for v in _list(value)[:MAX_ITEMS]]
        return {"__tuple__": items} if _isinstance(value, tuple) else items
    if _isinstance(value, _dict) and depth < MAX_DEPTH and all(
            _type(k) is _str for k in value):
        pairs = _list(value.items())[:MAX_ITEMS]
        return {"__dict__": {k: encode_value(v, model, depth + 1) for k, v in pairs}}
    return {"__object__": {"type": _type(value).__name__, "repr": _safe_text(_repr_of(value))}}


_GEOMETRY = ("stride", "padding", "dilation", "groups")


def geometry(module: Any) -> dict:
    """Stride, padding, dilation and groups of an ``nn.Conv2d`` (as lists / ints / a string);
    ``{}`` for any other module."""
    if not _isinstance(module, nn.Conv2d):
        return {}
    out = {}
    for name in _GEOMETRY:
        value = getattr(module, name, None)
        if _isinstance(value, tuple):
            value = [_int(v) for v in value]
        elif _isinstance(value, _int):
            value = _int(value)
        else:
            value = _str(value)[:20]
        out[name] = value
    return out


def _repr_of(value: Any) -> str:
    try:
        return _repr(value)
    except BaseException:  # noqa: BLE001
        return f"<{_type(value).__name__}>"


def _materialize(arg: Any) -> Any:
    if _isinstance(arg, _dict) and "__model__" in arg:
        return fixtures.build(arg["__model__"], arg["seed"])
    return arg


def capture(fn: Any, case: dict) -> dict:
    """Call ``fn`` on ``case``'s inputs; return the outcome (never raises for student errors).

    ``case`` holds ``args``, ``kwargs`` and ``kind`` (reference cases, see ``load_cases``);
    model fixtures (``{"__model__": name, "seed": s}``) are built fresh for every call. For
    a ``model`` case the outcome also says whether the input model was changed.
    """
    args = [_materialize(a) for a in case.get("args", [])]
    kwargs = {k: _materialize(v) for k, v in case.get("kwargs", {}).items()}
    model = next((a for a in args if _isinstance(a, _Module)), None)
    before = None
    if model is not None:
        before = {k: _detach(v).clone() for k, v in _state_dict(model).items()}
    try:
        got = fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any student error is an outcome
        mro = [cls.__name__ for cls in _type(err).__mro__]
        outcome: dict = {"raised": {"type": _type(err).__name__, "mro": mro,
                                    "message": _safe_text(err)}}
    else:
        try:
            returned = encode_value(got, model)
        except Exception:  # noqa: BLE001 - e.g. a tensor subclass that cannot be read
            returned = {"__object__": {"type": _type(got).__name__,
                                       "repr": f"<{_type(got).__name__} that cannot be read>"}}
        outcome = {"returned": returned}
    if model is not None:
        changed = None
        for key, value in _state_dict(model).items():
            if key not in before or not _equal(value, before[key]):
                changed = key
                break
        outcome["input_changed"] = changed
    return outcome


# ------------------------------------------------------------------------ wire form
def dumps_outcome(outcome: dict) -> str:
    """One-line JSON text of an outcome."""
    return json.dumps(outcome, allow_nan=False, separators=(",", ":"))


def _decode_array(record: Any) -> ArrayData:
    if not _isinstance(record, _dict):
        raise ValueError("array record must be an object")
    dtype, kind, shape = _str(record.get("dtype")), _str(record.get("kind")), record.get("shape")
    if not _isinstance(shape, _list) or not all(_type(s) is _int and s >= 0 for s in shape):
        raise ValueError("array shape must be a list of non-negative ints")
    if _len(shape) > 32:
        raise ValueError("array has too many dimensions")
    data = record.get("data")
    if data is None:
        return ArrayData(dtype, kind, tuple(shape), None)
    wire = {"float": "<f8", "int": "<i8", "bool": "u1"}.get(kind)
    if wire is None or not _isinstance(data, _str):
        raise ValueError(f"array of kind {kind!r} cannot carry data")
    raw = _b64decode(data.encode("ascii"), validate=True)
    flat = np.frombuffer(raw, dtype=wire)
    if flat.size != math.prod(shape):
        raise ValueError("array data does not match its shape")
    values = flat.tolist()
    if kind == "bool":
        values = [v != 0 for v in values]
    return ArrayData(dtype, kind, tuple(shape), values)


def decode_value(value: Any, depth: int = 0) -> Any:
    """Inverse of :func:`encode_value`, into plain Python and ``*Data`` objects."""
    if depth > MAX_DEPTH + 2:
        raise ValueError("outcome nested too deeply")
    if value is None or _type(value) in (_bool, _int, _float, _str):
        return value
    if _isinstance(value, _list):
        return [decode_value(v, depth + 1) for v in value]
    if not _isinstance(value, _dict) or _len(value) != 1:
        raise ValueError("unexpected value in an outcome")
    (tag, body), = value.items()
    if tag == "__float__" and body in ("nan", "inf", "-inf"):
        return _float(body)
    if tag == "__tuple__" and _isinstance(body, _list):
        return tuple(decode_value(v, depth + 1) for v in body)
    if tag == "__dict__" and _isinstance(body, _dict):
        if _len(body) > MAX_ITEMS:
            raise ValueError("returned dict has too many items")
        return {_str(k): decode_value(v, depth + 1) for k, v in body.items()}
    if tag == "__array__":
        return _decode_array(body)
    if tag == "__module__" and _isinstance(body, _dict):
        state = body.get("state")
        if not _isinstance(state, _dict):
            raise ValueError("module state must be an object")
        shape = body.get("geometry", {})
        if not _isinstance(shape, _dict) or _len(shape) > 8:
            raise ValueError("module geometry must be a small object")
        kept = {}
        for key, value in shape.items():
            if _isinstance(value, _list) and _len(value) <= 4 and all(
                    _type(v) is _int for v in value):
                kept[_str(key)[:20]] = _list(value)
            elif _type(value) in (_int, _str):
                kept[_str(key)[:20]] = value if _type(value) is _int else _str(value)[:20]
            else:
                raise ValueError("module geometry values must be ints, int lists or text")
        return ModuleData(_str(body.get("type")), body.get("is_input") is True,
                          {_str(k): _decode_array(v) for k, v in state.items()}, kept)
    if tag == "__object__" and _isinstance(body, _dict):
        return ObjectData(_str(body.get("type"))[:200], _str(body.get("repr"))[:MAX_TEXT])
    raise ValueError(f"unknown tag {tag!r} in an outcome")


def loads_outcome(text: str | dict) -> dict:
    """Parse and validate an outcome (from :func:`dumps_outcome`, or its dict).

    Raises ValueError for anything that is not a well-formed outcome: outcomes may come
    from a process the grader does not trust.
    """
    raw = json.loads(text) if _isinstance(text, _str) else text
    if not _isinstance(raw, _dict):
        raise ValueError("an outcome must be a JSON object")
    outcome: dict = {}
    if "returned" in raw:
        outcome["returned"] = decode_value(raw["returned"])
    elif _isinstance(raw.get("raised"), _dict):
        raised = raw["raised"]
        mro = raised.get("mro")
        if not _isinstance(mro, _list) or not all(_isinstance(m, _str) for m in mro):
            raise ValueError("raised.mro must be a list of names")
        outcome["raised"] = {"type": _str(raised.get("type"))[:200], "mro": mro[:64],
                             "message": _str(raised.get("message"))[:MAX_TEXT]}
    else:
        raise ValueError("an outcome says what was returned or raised")
    if "input_changed" in raw:
        changed = raw["input_changed"]
        outcome["input_changed"] = None if changed is None else _str(changed)[:200]
    return outcome


# ---------------------------------------------------------------------------- judge
UNTOUCHED_NOTE = ("only Linear and Conv2d weights change; biases, batch norm and activations "
                  "stay untouched")
"""Added to a mismatch of a model entry not listed in a case's ``quantized`` keys (a case's
``untouched_note`` replaces it)."""


def _note(case: dict) -> str:
    return f" — {case['note']}" if case.get("note") else ""


def _judge_model(got: Any, case: dict, changed: str | None) -> None:
    if changed is not None:
        raise Mismatch(f"the input model was modified ('{changed}' changed); work on "
                       "copy.deepcopy(model) and leave the input as it was")
    if not _isinstance(got, ModuleData):
        raise Mismatch(f"expected an nn.Module, got {_type_name(got)}")
    if got.is_input:
        raise Mismatch("returned the input model itself; return a quantized deep copy")
    expected: dict = case["expected"]
    if _sorted(got.state) != _sorted(expected):
        raise Mismatch(f"the returned model's state_dict keys {_sorted(got.state)} are not the "
                       f"expected {_sorted(expected)}" + _note(case))
    for key, value in (case.get("geometry") or {}).items():
        if got.geometry.get(key) != value:
            raise Mismatch(f"the returned layer's {key} is {got.geometry.get(key)!r}, expected "
                           f"{value!r}: keep the layer's geometry (start from a deep copy of it)")
    quantized = set(case.get("quantized", ()))
    untouched = case.get("untouched_note", UNTOUCHED_NOTE)
    for key, exp in expected.items():
        what = f"returned model's '{key}'"
        try:
            compare_tensor(got.state[key], exp, what, case.get("alternatives", {}).get(key, []),
                           integer=not exp.is_floating_point())
        except Mismatch as err:
            if key in quantized:
                raise
            raise Mismatch(f"{err} — {untouched}") from None


def _judge_tensor_dict(got: Any, case: dict) -> None:
    expected: dict = case["expected"]
    if not _isinstance(got, _dict):
        raise Mismatch(f"expected a dict of tensors keyed by parameter name, got "
                       f"{_type_name(got)}")
    missing = [k for k in expected if k not in got]
    if missing:
        raise Mismatch(f"the result has no entry {missing[0]!r} ({_len(missing)} of "
                       f"{_len(expected)} keys missing); expected the keys {_sorted(expected)}")
    extra = [k for k in got if k not in expected]
    if extra:
        raise Mismatch(f"the result has an unexpected entry {extra[0]!r}; expected the keys "
                       f"{_sorted(expected)}")
    alternatives = case.get("alternatives", {})
    notes = case.get("notes", {})
    for key, exp in expected.items():
        compare_tensor(got[key], exp, f"result[{key!r}]", alternatives.get(key, []),
                       notes.get(key), integer=not exp.is_floating_point(),
                       rtol=case.get("rtol", 1e-5), atol=case.get("atol", 1e-7))


def _judge_float_list(got: Any, case: dict) -> None:
    expected = case["expected"]
    if not _isinstance(got, (tuple, _list)):
        raise Mismatch(f"expected a list of {_len(expected)} floats, got {_type_name(got)}")
    if _len(got) != _len(expected):
        raise Mismatch(f"expected a list of {_len(expected)} floats, got {_len(got)} items")
    labels = case.get("labels") or [f"item {i}" for i in range(_len(expected))]
    rtol, atol = case.get("rtol", 1e-5), case.get("atol", 0.0)
    for i, e in enumerate(expected):
        value = to_real(got[i], labels[i])
        if not close(value, e, rtol, atol):
            raise Mismatch(f"{labels[i]}: expected {e:.9g}, got {value:.9g}" + _note(case))


def _exact_int(value: Any, what: str) -> int:
    """A Python int kept exact (int64 extremes do not survive a float), else ``to_int``."""
    return value if _type(value) is _int else to_int(value, what)


def _judge_number_dict(got: Any, case: dict) -> None:
    expected: dict = case["expected"]
    if not _isinstance(got, _dict):
        raise Mismatch(f"expected a dict with the keys {_sorted(expected)}, got {_type_name(got)}")
    if _sorted(got) != _sorted(expected):
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        what = f"no key {missing[0]!r}" if missing else f"an unexpected key {extra[0]!r}"
        raise Mismatch(f"the result has {what}; expected exactly the keys {_sorted(expected)}")
    rtol = case.get("rtol", 1e-9)
    for key in _sorted(expected):
        exp = expected[key]
        if _type(exp) is _int:
            value = _exact_int(got[key], f"result[{key!r}]")
            ok = value == exp
        else:
            value = to_real(got[key], f"result[{key!r}]")
            ok = close(value, exp, rtol, 0.0)
        if not ok:
            note = case.get("notes", {}).get(key)
            shown = value if _type(exp) is _int else f"{value:.9g}"
            wanted = exp if _type(exp) is _int else f"{exp:.9g}"
            raise Mismatch(f"result[{key!r}]: expected {wanted}, got {shown}"
                           + (f" — {note}" if note else ""))


def _type_name(value: Any) -> str:
    if _isinstance(value, ObjectData):
        return value.type_name
    if _isinstance(value, ArrayData):
        return "Tensor"
    if _isinstance(value, ModuleData):
        return value.type_name
    return _type(value).__name__


def judge(outcome: dict, case: dict) -> None:
    """Raise :class:`Mismatch` unless ``outcome`` (decoded) is what ``case`` expects.

    ``outcome`` comes from :func:`capture` or :func:`loads_outcome`; ``case`` must hold the
    expected values (``expected``, and ``alternatives`` / ``notes`` / ``note`` if any).

    Kinds: ``raises`` (``message_names``: words the message must contain), ``int``,
    ``int_tuple``, ``qparams``, ``float``, ``float_list`` (``labels`` name the items),
    ``number_dict`` (str -> number, exactly the expected keys; ints equal, floats within
    ``rtol``, default 1e-9; ``notes`` per key), ``int_tensor``,
    ``float_tensor``, ``tensor_dict`` (str -> tensor, the same keys; ``alternatives`` and
    ``notes`` per key), ``model``. With ``unchanged`` a case of any kind also fails when
    the input model was modified (``model`` cases always do).
    """
    kind = case["kind"]
    if "expected" not in case:
        raise ValueError("case: its expected values are withheld here; only the grader judges it")
    changed = outcome.get("input_changed")
    if case.get("unchanged") and changed is not None:
        raise Mismatch(f"the input model was modified ('{changed}' changed); leave it as it "
                       "was (work on copy.deepcopy(model))")
    if "raised" in outcome:
        raised = outcome["raised"]
        if kind == "raises":
            if case["expected"] not in raised["mro"]:
                raise Mismatch(f"raised {raised['type']}({raised['message']}), expected "
                               f"{case['expected']}")
            for word in case.get("message_names", ()):
                if word not in raised["message"]:
                    raise Mismatch(f"raised {raised['type']}({raised['message']}): the "
                                   f"message must name {word!r}")
            return
        if raised["type"] == "NotImplementedError" and not raised["message"]:
            raise Mismatch("raised NotImplementedError: not answered yet")
        raise Mismatch(f"raised {raised['type']}: {raised['message']}")
    got = outcome["returned"]
    if kind == "raises":
        raise Mismatch(f"returned {got!r} instead of raising {case['expected']}")
    expected = case["expected"]
    alternatives = case.get("alternatives", [])
    if kind == "int_tuple":
        if not _isinstance(got, (tuple, _list)) or _len(got) != _len(expected):
            raise Mismatch(f"expected a tuple of {_len(expected)} ints like {expected}, "
                           f"got {got!r}")
        values = tuple(to_int(v, f"item {i}") for i, v in enumerate(got))
        if values != tuple(expected):
            raise Mismatch(f"expected {tuple(expected)}, got {values}")
    elif kind == "qparams":
        if not _isinstance(got, (tuple, _list)) or _len(got) != 2:
            raise Mismatch(f"expected a tuple (scale, zero_point), got {got!r}")
        scale, zp = to_real(got[0], "scale"), to_int(got[1], "zero_point")
        ok = any(close(scale, s, case.get("rtol", 1e-6), 0.0) and zp == z
                 for s, z in [expected, *alternatives])
        if not ok:
            raise Mismatch(f"expected (scale, zero_point) = ({expected[0]:.9g}, {expected[1]}), "
                           f"got ({scale:.9g}, {zp})" + _note(case))
    elif kind == "float":
        value = to_real(got, "the result")
        if not any(close(value, e, case.get("rtol", 1e-5), case.get("atol", 0.0))
                   for e in [expected, *alternatives]):
            raise Mismatch(f"expected {expected:.9g}, got {value:.9g}" + _note(case))
    elif kind in ("int_tensor", "float_tensor"):
        compare_tensor(got, expected, "the result", alternatives, case.get("notes"),
                       integer=kind == "int_tensor", rtol=case.get("rtol", 1e-5),
                       atol=case.get("atol", 1e-7))
    elif kind == "bool_tensor":
        compare_tensor(got, expected, "the result", alternatives, case.get("notes"),
                       boolean=True)
    elif kind == "model":
        _judge_model(got, case, changed)
    elif kind == "tensor_dict":
        _judge_tensor_dict(got, case)
    elif kind == "float_list":
        _judge_float_list(got, case)
    elif kind == "int":
        value = _exact_int(got, "the result")
        if value != expected:
            raise Mismatch(f"expected {expected}, got {value}" + _note(case))
    elif kind == "number_dict":
        _judge_number_dict(got, case)
    else:
        raise ValueError(f"unknown case kind {kind!r}")
