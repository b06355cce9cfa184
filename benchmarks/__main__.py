"""``python -m benchmarks [NAME ...]``: run the ``bench_*`` modules, merge and print results.

With names (``int8``, ``binary`` ...) only those modules run; their entries replace the old
ones in ``benchmarks/results.json`` and the others are kept, labelled with the run they
came from (the table shows only the modules of this run). ``--no-write`` prints only;
``--threads N`` sets PyTorch's and numba's threads alike (default: their own choice).

A module that fails, runs past ``--timeout`` seconds or is stopped (Ctrl-C) leaves its rows
empty, with the reason in its notes: never the figures of an earlier run.

Each module runs in its own Python process: one module's thread pools (numba's OpenMP
layer, say) cannot slow down another's PyTorch threads, and the numbers do not depend on
the order the modules run in. The machine's load average before and after each module is
recorded: on a shared machine, compare runs made at similar load.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import environment

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
PREFIX = "bench_"
RATIO_KEYS = ("speedups", "size_ratios")


def available() -> list[str]:
    """Names of the benchmark modules, without the ``bench_`` prefix, sorted."""
    return sorted(p.stem[len(PREFIX):] for p in HERE.glob(f"{PREFIX}*.py"))


def check_result(name: str, result: object) -> dict:
    """Validate one module's ``run()`` result against the contract (see the package doc)."""
    if not isinstance(result, dict):
        raise TypeError(f"{PREFIX}{name}.run() must return a dict, got {type(result).__name__}")
    missing = [k for k in (*RATIO_KEYS, "notes") if k not in result]
    if missing:
        raise ValueError(f"{PREFIX}{name}.run() result lacks {', '.join(missing)}")
    for key in (*RATIO_KEYS, "timings_ms"):
        for label, value in result.get(key, {}).items():
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{PREFIX}{name}: {key}[{label!r}] must be a positive number, "
                                 f"got {value!r}")
    if not isinstance(result["notes"], list):
        raise TypeError(f"{PREFIX}{name}.run() notes must be a list of strings")
    return result


def merge(old: dict, name: str, result: dict) -> dict:
    """``old`` results with module ``name``'s entries replaced by ``result``'s."""
    merged = {key: dict(old.get(key, {})) for key in (*RATIO_KEYS, "timings_ms", "notes")}
    owners = old.get("owners", {})
    for key in (*RATIO_KEYS, "timings_ms"):
        for label in [k for k, owner in owners.items() if owner == name and k in merged[key]]:
            del merged[key][label]
        merged[key].update({k: round(float(v), 4) for k, v in result.get(key, {}).items()})
    merged["notes"][name] = list(result["notes"])
    if "runs" in old:
        merged["runs"] = dict(old["runs"])
    merged["owners"] = {k: v for k, v in owners.items() if v != name}
    for key in (*RATIO_KEYS, "timings_ms"):
        merged["owners"].update({label: name for label in result.get(key, {})})
    return merged


def table(results: dict, only: list[str] | None = None) -> str:
    """The ratios as a fixed-width text table (of the modules ``only``, if given)."""
    rows = [("kind", "name", "value")]
    owners = results.get("owners", {})
    for key, unit in (("speedups", "x faster"), ("size_ratios", "of fp32 bytes")):
        for label, value in sorted(results.get(key, {}).items()):
            if only is None or owners.get(label) in only:
                rows.append((key, label, f"{value:.3g} {unit}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - platforms without getloadavg
        return "unknown"


def set_threads(threads: int) -> None:
    """``threads`` for PyTorch and numba both (numba's at most its pool size)."""
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def drop(old: dict, name: str, reason: str) -> dict:
    """``old`` without module ``name``'s figures, its notes replaced by ``reason``."""
    merged = merge(old, name, {key: {} for key in (*RATIO_KEYS, "timings_ms")} | {
        "notes": [f"NO FIGURES: {reason}"]})
    merged.setdefault("runs", {}).pop(name, None)
    return merged


def run_worker(name: str, threads: int | None, out: Path) -> None:
    """In the child process: run one module and write its checked result as JSON."""
    if threads is not None:
        set_threads(threads)
    module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
    out.write_text(json.dumps(check_result(name, module.run())))


def run_isolated(name: str, threads: int | None, timeout: float | None = None) -> dict:
    """Run one module in a fresh Python process and return its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks", "--worker", name, "--out", str(out)]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        subprocess.run(cmd, cwd=HERE.parent, check=True, timeout=timeout)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: "
                                                 f"{', '.join(available())})")
    parser.add_argument("--no-write", action="store_true", help="do not update results.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch's and numba's threads (default: their own choice)")
    parser.add_argument("--timeout", type=float, default=150,
                        help="seconds a module may run before it is stopped (default 150: "
                             "two modules fit in 5 minutes)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.worker:
        run_worker(args.worker, args.threads, args.out)
        return 0
    names = args.names or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; available: "
                     f"{', '.join(available())}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.threads is not None:
        set_threads(args.threads)
    env = environment()
    run_label = {"cpu_model": env["cpu_model"], "threads": env["threads"],
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                     timespec="seconds")}
    failed = []
    for name in names:
        start, load_before = time.perf_counter(), _load()
        print(f"running {PREFIX}{name} (load average {load_before}) ...", flush=True)
        try:
            result = run_isolated(name, args.threads, args.timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired,
                KeyboardInterrupt) as err:
            reason = ("stopped by the user" if isinstance(err, KeyboardInterrupt) else
                      f"stopped after {args.timeout:.0f} s" if isinstance(
                          err, subprocess.TimeoutExpired) else f"failed ({err})")
            print(f"  {reason}: its rows are left empty", flush=True)
            results = drop(results, name, f"{PREFIX}{name} {reason} on {run_label['date']}")
            failed.append(name)
            if isinstance(err, KeyboardInterrupt):
                break
            continue
        result["notes"].append(f"load average (1/5/15 min) before: {load_before}, after: "
                               f"{_load()}")
        results = merge(results, name, result)
        results.setdefault("runs", {})[name] = run_label
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
        for note in result["notes"]:
            print(f"  - {note}")
    results["environment"] = env
    results["date"] = run_label["date"]
    print(f"\n{env['cpu_model']}, {env['cpu_capability']}, threads (torch and numba): "
          f"{env['threads']}, torch {env['torch']}")
    print("kernel paths: " + "; ".join(f"{k}: {v}" for k, v in env["kernels"].items()
                                        if k not in ("int8_gemm_reason",)) + "\n")
    ran = [n for n in names if n not in failed]
    print(table(results, only=ran))
    older = {n: r for n, r in results.get("runs", {}).items() if n not in names}
    for other, label in sorted(older.items()):
        print(f"(not run now: {PREFIX}{other}, figures in results.json from {label['date']}, "
              f"{label['cpu_model']}, {label['threads']} threads)")
    if not args.no_write:
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"\nwritten {RESULTS.relative_to(HERE.parent)}")
    if failed:
        print(f"\nfailed: {', '.join(PREFIX + n for n in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
