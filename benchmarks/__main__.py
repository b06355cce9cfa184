"""``python -m benchmarks [NAME ...]``: run the ``bench_*`` modules, merge and print results.

With names (``int8``, ``binary`` ...) only those modules run; their entries replace the old
ones in ``benchmarks/results.json`` and the others are kept. ``--no-write`` prints only;
``--threads N`` sets ``torch.set_num_threads(N)`` first (default: torch's own choice).

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
    merged["owners"] = {k: v for k, v in owners.items() if v != name}
    for key in (*RATIO_KEYS, "timings_ms"):
        merged["owners"].update({label: name for label in result.get(key, {})})
    return merged


def table(results: dict) -> str:
    """The ratios as a fixed-width text table."""
    rows = [("kind", "name", "value")]
    for key, unit in (("speedups", "x faster"), ("size_ratios", "of fp32 bytes")):
        for label, value in sorted(results.get(key, {}).items()):
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


def run_worker(name: str, threads: int | None, out: Path) -> None:
    """In the child process: run one module and write its checked result as JSON."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
    out.write_text(json.dumps(check_result(name, module.run())))


def run_isolated(name: str, threads: int | None) -> dict:
    """Run one module in a fresh Python process and return its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks", "--worker", name, "--out", str(out)]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        subprocess.run(cmd, cwd=HERE.parent, check=True)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: "
                                                 f"{', '.join(available())})")
    parser.add_argument("--no-write", action="store_true", help="do not update results.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N) before running")
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
    failed = []
    for name in names:
        start, load_before = time.perf_counter(), _load()
        print(f"running {PREFIX}{name} (load average {load_before}) ...", flush=True)
        try:
            result = run_isolated(name, args.threads)
        except subprocess.CalledProcessError as err:
            print(f"  FAILED ({err}); its previous results are kept", flush=True)
            failed.append(name)
            continue
        result["notes"].append(f"load average (1/5/15 min) before: {load_before}, after: "
                               f"{_load()}")
        results = merge(results, name, result)
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
        for note in result["notes"]:
            print(f"  - {note}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    results["environment"] = environment()
    results["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    env = results["environment"]
    print(f"\n{env['cpu_model']}, {env['cpu_capability']}, torch threads: {env['threads']}, "
          f"torch {env['torch']}, int8 GEMM: {env['kernels']['int8_gemm']}\n")
    print(table(results))
    if not args.no_write:
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"\nwritten {RESULTS.relative_to(HERE.parent)}")
    if failed:
        print(f"\nfailed: {', '.join(PREFIX + n for n in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
