"""This CPU's arithmetic ceilings per core, and how close the kernels come to them.

``benchmarks/ceilings.c`` holds tight register-resident loops of one instruction mix each
(see its header): fp32 fused multiply-adds, the exact int8 scheme of the AVX2 GEMM
(``vpmaddubsw`` + ``vpmaddwd``), AVX-512 VNNI's ``vpdpbusd``, and three binary
XOR + popcount mixes (``vpshufb`` nibble table, scalar ``popcnt``, AVX-512 ``vpopcntq``).
It is compiled here with the machine's C compiler (``cc``, ``-O2 -march=native``) into a
cache folder and called through ctypes; a machine without a compiler gets no ceilings, and
the notes say so. Each loop runs for at least :data:`MIN_SECONDS` per call, all loops
interleaved for :data:`ROUNDS` rounds, and the best rate of each is its ceiling (the rate
the core reaches when nothing else runs on it: the best, not the median, is the ceiling).

Speedups (ratios of ceilings, or ceiling over achieved; one thread):

* ``ceiling_int8_vs_fp32_peak`` — the best int8 mix's multiply-accumulates per second over
  the fp32 FMA peak: what int8 arithmetic can gain over fp32 on this core at most;
* ``ceiling_binary_vs_fp32_peak`` — the same for the best binary mix (one binary
  multiply-accumulate = one bit of XOR + popcount);
* ``fp32_peak_vs_torch_matmul`` — the fp32 peak over what ``torch.matmul`` reaches at
  1024 x 1024 x 1024 on one thread (how far the best fp32 a user runs is from the peak).

The notes give every rate in GMAC/s per core and the share of its ceiling that the course's
int8 GEMM (1024^3) and XNOR GEMM (1024 x 1024, K = 4096 bits) reach on this CPU (fastest
calls on both sides). On a loaded machine every figure drops; the ratios less so.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import compare_samples
from course import kernels
from course.kernels.binary.gemm import xnor_gemm
from course.latency import pinned_threads

SOURCE = Path(__file__).with_name("ceilings.c")
MIN_SECONDS = 0.02
"""Each timed call of a loop lasts at least this long (the iteration count doubles until so)."""
ROUNDS = 9
"""Interleaved rounds over all loops; the best rate of each counts."""

LOOPS = {  # loop -> (its "has" function, or None when the loop is portable C)
    "fp32_fma": None,
    "int8_maddubs": "has_int8_maddubs",
    "int8_vnni": "has_int8_vnni",
    "binary_shuffle": "has_binary_shuffle",
    "binary_mixed": "has_binary_mixed",
    "binary_popcnt": None,
    "binary_vpopcnt": "has_binary_vpopcnt",
}
INT8_LOOPS = ("int8_maddubs", "int8_vnni")
BINARY_LOOPS = ("binary_shuffle", "binary_mixed", "binary_popcnt", "binary_vpopcnt")


def cache_folder() -> Path:
    """Where the compiled library is kept: ``$XDG_CACHE_HOME/course`` (``~/.cache/course``),
    else a temporary folder."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(base) / "course"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:
        return Path(tempfile.gettempdir())


def compile_library() -> tuple[ctypes.CDLL | None, str]:
    """``(library, how)``: the compiled ceilings loops, or ``(None, why not)``.

    The library's name holds a hash of the source and the compiler, so an edited source or
    another compiler builds anew; ``-march=native`` targets this CPU's instructions.
    """
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") \
        or shutil.which("clang")
    if cc is None:
        return None, "no C compiler (cc, gcc or clang) on PATH: ceilings not measured"
    flags = ["-O2", "-march=native", "-shared", "-fPIC"]
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join([cc, *flags]).encode()).hexdigest()
    target = cache_folder() / f"ceilings-{digest[:16]}.so"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.part")
        try:
            done = subprocess.run([cc, *flags, "-o", str(partial), str(SOURCE)],
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as err:
            return None, f"{cc} could not be run ({err}): ceilings not measured"
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            return None, (f"{cc} could not compile {SOURCE.name} "
                          f"({done.stderr.strip().splitlines()[-1:] or ['no message']}): "
                          "ceilings not measured")
        partial.replace(target)
    lib = ctypes.CDLL(str(target))
    for name in LOOPS:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_long]
    return lib, f"compiled with {cc} {' '.join(flags)}"


def available_loops(lib: ctypes.CDLL) -> list[str]:
    """The loops whose instructions this build (this CPU, via ``-march=native``) has."""
    return [name for name, has in LOOPS.items() if has is None or getattr(lib, has)()]


def _macs_per_iter(lib: ctypes.CDLL, name: str) -> int:
    return getattr(lib, f"{name}_macs_per_iter")()


def measure_ceilings(lib: ctypes.CDLL, loops: list[str], rounds: int = ROUNDS,
                     min_seconds: float = MIN_SECONDS) -> dict[str, float]:
    """Best multiply-accumulates per second of each loop over interleaved rounds."""
    iters = {name: 1 << 12 for name in loops}
    best = dict.fromkeys(loops, 0.0)
    for name in loops:  # find iteration counts that last min_seconds
        fn = getattr(lib, name)
        while True:
            start = time.perf_counter()
            fn(iters[name])
            if time.perf_counter() - start >= min_seconds:
                break
            iters[name] *= 2
    for _ in range(rounds):
        for name in loops:
            fn = getattr(lib, name)
            start = time.perf_counter()
            fn(iters[name])
            seconds = time.perf_counter() - start
            best[name] = max(best[name], iters[name] * _macs_per_iter(lib, name) / seconds)
    return best


def achieved() -> dict[str, float]:
    """Multiply-accumulates per second (the fastest of :data:`ROUNDS` interleaved calls, as
    the ceilings are, one thread) of torch's fp32 matmul and the
    course's int8 GEMM at 1024^3, and the course's XNOR GEMM at 1024 x 1024 x 4096 bits."""
    gen = torch.Generator().manual_seed(0)
    n, k_bits = 1024, 4096
    af, bf = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a8 = torch.randint(-128, 128, (n, n), generator=gen, dtype=torch.int8)
    b8 = kernels.pack_int8(torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8))
    pa = kernels.pack_sign_bits(torch.randn(n, k_bits, generator=gen))
    pb = kernels.pack_sign_bits(torch.randn(n, k_bits, generator=gen))
    with pinned_threads(1), torch.no_grad():
        t = compare_samples({"fp32": lambda: torch.matmul(af, bf),
                             "int8": lambda: kernels.int8_gemm(a8, b8),
                             "binary": lambda: xnor_gemm(pa, pb)}, warmup=2, repeats=ROUNDS)
    return {"fp32": n**3 / min(t["fp32"]), "int8": n**3 / min(t["int8"]),
            "binary": n * n * k_bits / min(t["binary"])}


def beyond(kind: str) -> str:
    """Why a course GEMM of ``kind`` may outrun every ceiling loop: the instructions it
    reaches that no loop of ``ceilings.c`` measures (AMX tiles, through oneDNN)."""
    instructions = str(kernels.backend_report().get("int8_instructions", ""))
    if kind == "int8" and "amx_int8" in instructions:
        return "the path reaches AMX tiles (through oneDNN), which no loop here measures"
    return "the loops here do not cover every instruction the path uses"


def run() -> dict:
    lib, how = compile_library()
    notes = [f"ceilings: {how}; one thread; best of {ROUNDS} interleaved rounds, "
             f"each call at least {MIN_SECONDS * 1e3:.0f} ms"]
    speedups: dict[str, float] = {}
    if lib is None:
        return {"speedups": speedups, "size_ratios": {}, "notes": notes}
    loops = available_loops(lib)
    absent = [name for name in LOOPS if name not in loops]
    with pinned_threads(1):
        peak = measure_ceilings(lib, loops)
    got = achieved()
    for name in loops:
        notes.append(f"ceiling {name}: {peak[name] / 1e9:.1f} GMAC/s per core "
                     f"({peak[name] / peak['fp32_fma']:.2f}x the fp32 FMA peak)")
    if absent:
        notes.append(f"not on this CPU (or not in this compiler): {', '.join(absent)}")
    fp32 = peak["fp32_fma"]
    speedups["fp32_peak_vs_torch_matmul"] = fp32 / got["fp32"]
    notes.append(f"torch.matmul fp32 1024^3: {got['fp32'] / 1e9:.1f} GMAC/s, "
                 f"{100 * got['fp32'] / fp32:.0f} % of the fp32 peak")
    for kind, names in (("int8", INT8_LOOPS), ("binary", BINARY_LOOPS)):
        present = [name for name in names if name in loops]
        if not present:
            notes.append(f"no {kind} ceiling: none of {', '.join(names)} runs here")
            continue
        best = max(present, key=peak.__getitem__)
        speedups[f"ceiling_{kind}_vs_fp32_peak"] = peak[best] / fp32
        path = kernels.backend_report().get(f"{'int8' if kind == 'int8' else 'xnor'}_gemm")
        what = "int8 GEMM 1024^3" if kind == "int8" else "XNOR GEMM 1024 x 1024, K = 4096 bits"
        note = (f"course {what} ({path}): {got[kind] / 1e9:.1f} GMAC/s, "
                f"{100 * got[kind] / peak[best]:.0f} % of the {best} ceiling, "
                f"{got[kind] / got['fp32']:.2f}x torch's fp32")
        if got[kind] > peak[best]:
            note += f"; above every {kind} loop measured here: {beyond(kind)}"
        notes.append(note)
    return {"speedups": speedups, "size_ratios": {}, "notes": notes}
