"""Run inside the sandbox by the tests: does every withheld object of a lab refuse to run?

``python withheld_probe.py DECLARED_JSON`` with the grading copy of ``course`` first on
``PYTHONPATH``. ``DECLARED_JSON`` is a lab's ``WITHHELD`` (exercise -> ``"module:qualname"``).
The probe imports every module of ``course``; calls every declared function (a class: each
function defined in its body; a compiled numba function: its Python function) with ``None``
for each required argument; finds every *alias* — any attribute of any ``course`` module
that is one of those functions — and calls it the same way. It prints one JSON object:
``{"<what>": "ok" | "<what happened instead>"}``; "ok" means NotImplementedError saying
"withheld while grading". An import that fails is reported too (the lab's setup cells import
these modules while grading).
"""

import importlib
import inspect
import json
import pkgutil
import sys

MARK = "withheld while grading"


def _plain(value):
    """The Python function behind a staticmethod, classmethod, property or numba dispatcher."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    return getattr(value, "py_func", value)


def _targets(name):
    module, _, qualname = name.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part)
    if inspect.isclass(obj):
        return [(f"{name}.{key}", _plain(value)) for key, value in vars(obj).items()
                if inspect.isfunction(_plain(value))]
    return [(name, _plain(obj))]


def _call(fn):
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as error:
        return f"no signature: {error}"
    args, kwargs = [], {}
    for parameter in signature.parameters.values():
        if parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            args.append(None)
        elif parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = None
    try:
        fn(*args, **kwargs)
    except NotImplementedError as error:
        return "ok" if MARK in str(error) else f"NotImplementedError: {error}"
    except BaseException as error:  # noqa: BLE001 - anything else is the finding
        return f"ran: {type(error).__name__}: {error}"[:300]
    return "ran and returned"


def main(argv):
    declared = json.loads(argv[0])
    import course

    found = {}
    modules = [course]
    for info in pkgutil.walk_packages(course.__path__, "course."):
        try:
            modules.append(importlib.import_module(info.name))
        except BaseException as error:  # noqa: BLE001
            found[f"import {info.name}"] = f"{type(error).__name__}: {error}"
    functions = {}
    for names in declared.values():
        for name in names:
            try:
                targets = _targets(name)
            except BaseException as error:  # noqa: BLE001
                found[name] = f"not found: {type(error).__name__}: {error}"
                continue
            for label, fn in targets:
                functions[id(fn)] = label
                found[label] = _call(fn)
    for module in modules:
        for key, value in sorted(vars(module).items()):
            fn = _plain(value)
            label = functions.get(id(fn))
            if label is not None and f"{module.__name__}.{key}" != label.replace(":", "."):
                found[f"{module.__name__}.{key} (alias of {label})"] = _call(fn)
    print(json.dumps(found, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
