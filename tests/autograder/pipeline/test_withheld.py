"""Every library object a lab declares as implementing one of its exercises (``WITHHELD`` in
``autograder/cases/<lab>.py``) refuses to run in the grading copy of ``course``, inside the
sandbox — and so does every alias of it; outside grading the library is untouched.

The cases are generated from the declarations: a new lab's case module must declare, for
each of its exercises, the library objects that compute its answer.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys

import pytest

import autograder.cases
from autograder.pipeline.withheld import build_grading_lib, declared_withheld, split_declared
from autograder.sandbox.bwrap import (
    LIB,
    UID_BASE,
    Limits,
    Mount,
    SandboxSpec,
    host_environment,
    probe_support,
    sandbox_command,
)

PROBE = "/grader/withheld_probe.py"
LABS = sorted(m.name for m in pkgutil.iter_modules(autograder.cases.__path__)
              if not m.name.startswith("_"))


def _cases(lab: str):
    return importlib.import_module(f"autograder.cases.{lab}")


@pytest.mark.parametrize("lab", LABS)
def test_every_exercise_declares_what_implements_it(lab):
    declared = declared_withheld(lab)
    assert set(declared) == set(_cases(lab).EXERCISES), "WITHHELD names every exercise"
    for exercise, names in declared.items():
        assert names, f"{lab}: {exercise} declares no library object"
    split_declared(declared)  # well-formed names


@pytest.mark.parametrize("lab", LABS)
def test_each_declared_object_and_alias_is_withheld_inside_the_sandbox(lab, tmp_path):
    import autograder.pipeline.withheld_probe as probe

    declared = declared_withheld(lab)
    build_grading_lib(_cases(lab).EXERCISES, tmp_path / "lib", declared=declared)
    support = probe_support()
    inside = support.available
    spec = SandboxSpec(uid=UID_BASE + 9, mounts=(Mount(tmp_path / "lib", LIB),
                                                  Mount(inspect.getsourcefile(probe), PROBE)),
                       pythonpath=(LIB if inside else str(tmp_path / "lib"),),
                       host_workdir=tmp_path, host_home=tmp_path)
    script = PROBE if inside else inspect.getsourcefile(probe)
    done = subprocess.run(sandbox_command([sys.executable, script, json.dumps(declared)], spec,
                                          Limits(), support),
                          capture_output=True, text=True, timeout=600,
                          env=None if inside else host_environment(spec), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    failing = {k: v for k, v in found.items() if v != "ok"}
    assert not failing, failing
    names = [n for names in declared.values() for n in names]
    assert all(any(k == n or k.startswith(f"{n}.") for k in found) for n in names)
    aliases = _aliases(declared)
    assert aliases <= {k.split(" (alias of ")[0] for k in found if "alias of" in k}, \
        "every re-export of a declared object is checked too"


def _aliases(declared: dict) -> set[str]:
    """``module.name`` of every re-export, in the real ``course``, of a declared function (a
    class is withheld through its methods, whatever name it is reached by)."""
    import course

    modules = [course] + [importlib.import_module(i.name) for i in
                          pkgutil.walk_packages(course.__path__, "course.")]
    homes = {}
    for names in declared.values():
        for name in names:
            module, _, qualname = name.partition(":")
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            if inspect.isfunction(inspect.unwrap(obj)):
                homes[id(inspect.unwrap(obj))] = f"{module}.{qualname}"
    out = set()
    for module in modules:
        for key, value in vars(module).items():
            home = homes.get(id(inspect.unwrap(value))) if callable(value) else None
            if home is not None and f"{module.__name__}.{key}" != home:
                out.add(f"{module.__name__}.{key}")
    return out


@pytest.mark.parametrize("lab", LABS)
def test_outside_grading_the_declared_objects_are_the_librarys_own(lab):
    for module, objects in split_declared(declared_withheld(lab)).items():
        source = inspect.getsource(importlib.import_module(module))
        assert "withheld while grading" not in source, module
        for qualname in objects:
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = inspect.getattr_static(obj, part)
            assert obj is not None
