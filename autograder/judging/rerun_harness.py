"""Re-run a graded notebook's code in a fresh process and judge its *plain* test cells.

Started by ``autograder.judging.rerun`` inside the sandbox, as a script:
``python rerun_harness.py PLAN_JSON VERDICTS_JSON``. ``PLAN_JSON`` lists the notebook's code
cells in order (``{"source", "test", "grade_id"}``) and the modules the instructor's cells
import (``preimport``). Before any student code runs, the harness imports those modules and
takes a snapshot of them (module attributes, class attributes of their classes, builtins,
``sys.modules`` entries). Ordinary cells run in a plain IPython shell (magics work; no kernel,
so nothing can intercept messages). Before each plain test cell the snapshot is restored and
trace/profile hooks are removed; the cell's *source as the instructor wrote it* is compiled
by a transformer created before student code ran (input transformers a notebook registered
do not apply) and executed in the notebook's namespace. Its verdict is appended to
``VERDICTS_JSON`` at once: ``{"verdicts": {"<grade_id>": {"passed": bool, "error": "Name:
message"}}, "confirmed": {...}}``.

A cell may also list cases to *confirm* (``"confirm": [{"fn": "<expression>", "cases":
[{"key", "kind", "args", "kwargs"}]}]``, inputs in ``course.grading.encode`` form): after the
snapshot is restored and the cell's source (for a ``check``-only cell, its definitions) has
run, the harness evaluates each ``fn`` in the notebook's namespace and calls it on each case
with ``course.grading.outcome.capture`` as imported here before any student code ran; the
outcomes go to ``"confirmed": {"<grade_id>": {"<key>": "<outcome JSON>"}}``. The grader
judges "raised ValueError" and "left the input unchanged" from these alone.

Each cell may use ``cell_cpu_s`` CPU seconds of this process (``ITIMER_PROF``: all its threads,
whatever the machine's load); ``cell_wall_s`` wall-clock seconds are a backstop for a cell that
sleeps or blocks (``ITIMER_REAL``). A test stopped by the backstop says so
(``"backstop": true``), and so does the key ``"__backstop__"`` when any cell was.

This defeats what state can do to a test — patched comparison functions or builtins,
replaced modules or grading functions, input transformers, kernel hooks — but student
functions still run in this process when the test calls them, so a determined attacker can
subvert it; tests written with ``course.grading.check`` are judged outside student processes.
"""

import builtins
import importlib
import json
import os
import signal
import sys
import threading


def _class_dicts(modules):
    out = {}
    for module in modules:
        name = getattr(module, "__name__", None)
        for value in list(vars(module).values()):
            if isinstance(value, type) and getattr(value, "__module__", None) == name:
                try:
                    out[value] = dict(vars(value))
                except TypeError:
                    continue
    return out


class Snapshot:
    """Module, class and builtin attributes as they were before student code ran."""

    def __init__(self):
        self.modules = {name: (module, dict(vars(module)))
                        for name, module in list(sys.modules.items()) if module is not None}
        self.builtins = dict(vars(builtins))
        self.classes = _class_dicts(m for m, _ in self.modules.values())

    def restore(self):
        sys.settrace(None)
        sys.setprofile(None)
        threading.settrace(None)
        threading.setprofile(None)
        for name, (module, attributes) in self.modules.items():
            if sys.modules.get(name) is not module:
                sys.modules[name] = module
            current = vars(module)
            for key, value in attributes.items():
                if current.get(key, self) is not value:
                    current[key] = value
        current = vars(builtins)
        for key, value in self.builtins.items():
            if current.get(key, self) is not value:
                current[key] = value
        for cls, attributes in self.classes.items():
            for key in [k for k in vars(cls) if k not in attributes]:
                try:
                    delattr(cls, key)
                except (AttributeError, TypeError):
                    pass
            for key, value in attributes.items():
                if vars(cls).get(key, self) is not value:
                    try:
                        setattr(cls, key, value)
                    except (AttributeError, TypeError):
                        pass


class _Timeout(BaseException):
    """Raised by the CPU-time limit (``wall`` False) or the wall-clock backstop."""

    def __init__(self, wall):
        super().__init__()
        self.wall = wall


_FIRED = []
"""Which limits fired (True: the wall-clock backstop), also when IPython caught the raise."""


def _cpu_limit(signum, frame):
    _FIRED.append(False)
    raise _Timeout(False)


def _wall_limit(signum, frame):
    _FIRED.append(True)
    raise _Timeout(True)


def _arm(cpu_s, wall_s):
    signal.signal(signal.SIGPROF, _cpu_limit)
    signal.signal(signal.SIGALRM, _wall_limit)
    signal.setitimer(signal.ITIMER_PROF, cpu_s)
    signal.setitimer(signal.ITIMER_REAL, wall_s)


def _disarm():
    signal.setitimer(signal.ITIMER_PROF, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)


def _timeout_message(timeout, cpu_s, wall_s):
    if timeout.wall:
        return (f"CellTimeout: no result after the wall-clock backstop ({wall_s} s): it "
                "slept, waited, or the machine was busy")
    return f"CellTimeout: no result after its CPU time limit ({cpu_s} s of CPU time)"


def _write(fd, text):
    data = text.encode("utf-8")
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)


def _confirm(cell, confirm, namespace, capture, dumps_outcome, decode, confirmed):
    """Call each checked function on its cases to confirm; keep the outcomes' JSON."""
    kept = confirmed.setdefault(cell["grade_id"], {})
    for entry in confirm:
        try:
            fn = eval(entry["fn"], namespace)  # noqa: S307 - the instructor's expression
        except _Timeout:
            raise
        except BaseException:  # noqa: BLE001 - nothing to call: nothing confirmed
            continue
        for case in entry["cases"]:
            inputs = {"kind": case["kind"], "args": decode(case["args"]),
                      "kwargs": decode(case["kwargs"])}
            try:
                kept[case["key"]] = dumps_outcome(capture(fn, inputs))
            except _Timeout:
                raise
            except BaseException:  # noqa: BLE001 - e.g. SystemExit: not confirmed
                continue


def main(argv):
    plan_path, verdicts_path = argv
    with open(plan_path, encoding="utf-8") as handle:
        plan = json.load(handle)
    verdict_fd = os.open(verdicts_path, os.O_WRONLY | os.O_TRUNC)
    for name in plan.get("preimport", []):
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - a module the lab imports may be absent
            pass
    capture = dumps_outcome = decode = None
    if any(cell.get("confirm") for cell in plan["cells"]):
        from course.grading.encode import decode
        from course.grading.outcome import capture, dumps_outcome
    from IPython.core.inputtransformer2 import TransformerManager
    from IPython.core.interactiveshell import InteractiveShell

    transform = TransformerManager().transform_cell
    shell = InteractiveShell.instance()
    snapshot = Snapshot()
    cpu_s = float(plan.get("cell_cpu_s", 120))
    wall_s = float(plan.get("cell_wall_s", 4 * cpu_s))
    verdicts, confirmed = {}, {}
    dumps = json.dumps

    def write():
        _write(verdict_fd, dumps({"verdicts": verdicts, "confirmed": confirmed}))

    for cell in plan["cells"]:
        _FIRED.clear()
        _arm(cpu_s, wall_s)
        try:
            confirm = cell.get("confirm") or []
            if not cell["test"] and confirm:
                snapshot.restore()
                try:
                    code = compile(transform(cell["source"]), f"<setup {cell['grade_id']}>",
                                   "exec")
                    exec(code, shell.user_ns)  # noqa: S102 - the instructor's definitions
                except BaseException:  # noqa: BLE001 - then nothing is confirmed
                    continue
                _confirm(cell, confirm, shell.user_ns, capture, dumps_outcome, decode,
                         confirmed)
                write()
                continue
            if not cell["test"]:
                shell.run_cell(cell["source"], store_history=False)
                continue
            snapshot.restore()
            try:
                code = compile(transform(cell["source"]), f"<test {cell['grade_id']}>", "exec")
                exec(code, shell.user_ns)  # noqa: S102 - the instructor's test code
                verdicts[cell["grade_id"]] = {"passed": True, "error": ""}
            except _Timeout as timeout:
                verdicts[cell["grade_id"]] = {
                    "passed": False, "error": _timeout_message(timeout, cpu_s, wall_s),
                    "backstop": timeout.wall}
            except BaseException as error:  # noqa: BLE001 - the test failed
                try:
                    text = str(error)
                except BaseException:  # noqa: BLE001
                    text = ""
                verdicts[cell["grade_id"]] = {"passed": False,
                                              "error": f"{type(error).__name__}: {text}"[:2000]}
            if confirm and verdicts[cell["grade_id"]]["passed"]:
                _confirm(cell, confirm, shell.user_ns, capture, dumps_outcome, decode,
                         confirmed)
            write()
        except _Timeout:
            pass
        finally:
            _disarm()
            if True in _FIRED and "__backstop__" not in verdicts:
                verdicts["__backstop__"] = _timeout_message(_Timeout(True), cpu_s, wall_s)
                write()
    os.close(verdict_fd)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
