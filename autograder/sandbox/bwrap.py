"""The sandbox a student's code runs in while it is graded: what it sees, what it may use.

A sandboxed process (the notebook's kernel, a fresh re-run of its test cells) starts as::

    python -I -S autograder/sandbox/limits.py RLIMITS -- bwrap ... -- setpriv --reuid UID ...
        -- python ...

- **limits** (``Limits``): address space, CPU seconds, processes, file size, the sizes of its
  writable folders, and the notebook's CPU-time, wall-clock backstop and output budgets (the
  latter enforced by ``autograder.sandbox.execute``);
- **bubblewrap** (``bwrap``): new mount, PID, IPC, UTS and network namespaces (no network at
  all); a read-only view of the system (``/usr``), of the Python environment and of the
  grading copy of the ``course`` library; the working folder ``/grader/work`` and the home
  ``/grader/home`` are small private tmpfs, holding only the lab's released files. Not
  visible: ``solutions/``, ``autograder/``, the gradebook, other students, ``/root``, ``/home``;
- **setpriv**: an unprivileged user (``UID_BASE + slot``: one per concurrent job, so that one
  student's fork bomb cannot use up another's process limit), no capabilities, no new
  privileges.

``probe_support`` says whether this machine can do that (bubblewrap installed and usable as
root, or through unprivileged user namespaces); where it cannot, processes run with the
limits only and ``Support.warning`` says so loudly (the report repeats it).

>>> spec = SandboxSpec(uid=61000, files=(Mount(Path("refs.json"), "references.json"),))
>>> cmd = sandbox_command(["python", "-c", "pass"], spec, Limits(), probe_support())
>>> cmd[:3] == [sys.executable, "-I", "-S"]
True
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

LIMITS_SCRIPT = Path(__file__).with_name("limits.py")
UID_BASE = 61000
"""Sandboxed processes run as ``UID_BASE + slot`` (no such users exist on the machine)."""
WORKDIR = "/grader/work"
HOME = "/grader/home"
LIB = "/grader/lib"
MODES = ("auto", "require", "off")
"""``auto``: sandbox where possible, else warn; ``require``: refuse to grade without it;
``off``: never (warns)."""
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
              "/etc/alternatives", "/etc/fonts", "/etc/mime.types")
_PROBE_TIMEOUT_S = 60
_MB = 1024 * 1024
_RENAMED = {"notebook_timeout_s": "notebook_cpu_s"}


@dataclass(frozen=True)
class Limits:
    """What one graded notebook may use. Set in ``nbgrader_config.py`` as ``c.Sandbox.<name>``.

    ``memory_mb`` is the address space of each process (RLIMIT_AS), ``cpu_s`` its CPU time
    (RLIMIT_CPU), ``processes`` the processes and threads of the sandbox user (RLIMIT_NPROC),
    ``file_mb`` the largest file it may write (RLIMIT_FSIZE); ``scratch_mb`` / ``tmp_mb`` size
    the writable tmpfs (working folder and home; /tmp).

    Time is counted in **CPU seconds of the student's processes** (the kernel and everything
    it starts), so that a busy machine does not cost an honest student points:
    ``cell_cpu_s`` per cell, ``notebook_cpu_s`` for the whole notebook. Wall-clock time is
    only a backstop for code that sleeps or blocks: ``wall_factor`` times the CPU limit plus
    ``wall_margin_s`` (``cell_wall_s``, ``notebook_wall_s``). A notebook stopped by the
    backstop while under its CPU budget is graded again once, alone
    (``autograder.commands.autograde``).

    ``output_kb_per_cell`` and ``output_kb_per_notebook`` cap the output kept, ``message_mb``
    the largest message the grader accepts from a kernel.
    """

    memory_mb: int = 8192
    cpu_s: int = 900
    processes: int = 512
    file_mb: int = 64
    scratch_mb: int = 64
    tmp_mb: int = 256
    cell_cpu_s: int = 120
    notebook_cpu_s: int = 600
    wall_factor: int = 4
    wall_margin_s: int = 30
    output_kb_per_cell: int = 256
    output_kb_per_notebook: int = 2048
    message_mb: int = 32

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if type(value) is not int:
                raise TypeError(f"{item.name} must be an int, got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{item.name} must be positive, got {value}")

    @property
    def cell_wall_s(self) -> int:
        """The wall-clock backstop of one cell (seconds)."""
        return self.wall_factor * self.cell_cpu_s + self.wall_margin_s

    @property
    def notebook_wall_s(self) -> int:
        """The wall-clock backstop of a whole notebook (seconds)."""
        return self.wall_factor * self.notebook_cpu_s + self.wall_margin_s

    @classmethod
    def from_config(cls, config: Mapping | None) -> Limits:
        """The limits a traitlets config sets under ``Sandbox`` (defaults elsewhere)."""
        section = (config or {}).get("Sandbox", {})
        for old, new in _RENAMED.items():
            if old in section:
                raise ValueError(f"Sandbox.{old} is no longer read: set Sandbox.{new} (CPU "
                                 "seconds of the student's processes) instead")
        names = {item.name for item in fields(cls)}
        return cls(**{k: v for k, v in dict(section).items() if k in names})

    def rlimits(self) -> dict[str, int]:
        """The ``setrlimit`` values for ``limits.py``."""
        return {
            "RLIMIT_AS": self.memory_mb * _MB,
            "RLIMIT_CPU": self.cpu_s,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_FSIZE": self.file_mb * _MB,
            "RLIMIT_CORE": 0,
        }


def sandbox_mode(config: Mapping | None) -> str:
    """``c.Sandbox.mode`` of a config: 'auto' (default), 'require' or 'off'."""
    mode = (config or {}).get("Sandbox", {}).get("mode", "auto")
    if mode not in MODES:
        raise ValueError(f"Sandbox.mode must be one of {MODES}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class Mount:
    """A host path shown inside the sandbox at ``target`` (relative: inside the working
    folder), read-only unless ``writable``."""

    source: Path
    target: str
    writable: bool = False

    def inside(self) -> str:
        return self.target if self.target.startswith("/") else f"{WORKDIR}/{self.target}"


@dataclass(frozen=True)
class SandboxSpec:
    """One sandboxed process: its user, the files of its working folder, other mounts, its
    environment (added to a minimal one) and extra read-only paths on ``PYTHONPATH``."""

    uid: int
    files: tuple[Mount, ...] = ()
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    pythonpath: tuple[str, ...] = ()
    host_workdir: Path | None = None  # the working folder when there is no sandbox
    host_home: Path | None = None  # the home folder when there is no sandbox

    def __post_init__(self) -> None:
        if type(self.uid) is not int or self.uid <= 0:
            raise ValueError(f"uid must be a positive int, got {self.uid!r}")


@dataclass(frozen=True)
class Support:
    """Whether sandboxed processes can be started here, and how.

    ``kind`` is 'root' (bubblewrap run as root, then setpriv to the sandbox user), 'userns'
    (bubblewrap through an unprivileged user namespace) or 'none' (limits only).
    """

    kind: str
    reason: str = ""
    bwrap: str = ""
    setpriv: str = ""
    mode: str = "auto"
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def available(self) -> bool:
        return self.kind != "none"

    @property
    def warning(self) -> str:
        """A loud line for reports where student code is NOT sandboxed ('' where it is)."""
        if self.available:
            return ""
        return ("WARNING: NOT SANDBOXED — student code runs with the grader's rights: it can "
                "read solutions/, autograder/ (hidden references) and the gradebook, and use "
                f"the network. Only resource limits apply. Reason: {self.reason}. Install "
                "bubblewrap as root (`apt-get install bubblewrap`) to sandbox grading.")


def _python_roots() -> list[Path]:
    """Folders the interpreter and its packages live in (mounted read-only)."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(os.path.realpath(sys.executable)).parent.parent}
    for entry in sys.path:
        if entry and "site-packages" in entry:
            roots.add(Path(entry))
    out: list[Path] = []
    for root in sorted(roots, key=lambda p: len(p.parts)):
        if root.is_dir() and not any(root.is_relative_to(o) for o in out) \
                and not any(root == Path(s) for s in _SYSTEM_DIRS):
            if str(root).startswith("/usr/"):
                continue  # inside /usr, mounted anyway
            out.append(root)
    return out


def _dirs_above(path: str) -> list[str]:
    parts = Path(path).parts
    return [str(Path(*parts[:i])) for i in range(2, len(parts))]


def _bwrap_args(spec: SandboxSpec, limits: Limits, support: Support) -> list[str]:
    args = [support.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if support.kind == "userns":
        args += ["--unshare-user", "--uid", str(spec.uid), "--gid", str(spec.uid)]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    # /tmp first: the checkout or its Python environment may live under /tmp, and a later
    # tmpfs on /tmp would hide them.
    args += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(limits.tmp_mb * _MB), "--perms", "1777", "--tmpfs", "/tmp"]
    made: set[str] = {"/tmp"}

    def mkdirs(target: str) -> None:
        for parent in _dirs_above(target):
            if parent not in made and parent not in _SYSTEM_DIRS:
                made.add(parent)
                args.extend(["--perms", "0755", "--dir", parent])

    for path in _ETC_FILES:
        mkdirs(path)
        args += ["--ro-bind-try", path, path]

    for root in _python_roots():
        mkdirs(str(root))
        args += ["--ro-bind", str(root), str(root)]
    for target, size in ((WORKDIR, limits.scratch_mb), (HOME, limits.scratch_mb)):
        mkdirs(target)
        made.add(target)
        args += ["--size", str(size * _MB), "--perms", "1777", "--tmpfs", target]
    for mount in (*spec.files, *spec.mounts):
        inside = mount.inside()
        mkdirs(inside)
        args += ["--bind" if mount.writable else "--ro-bind", str(mount.source), inside]
    env = _environment(spec, inside=True)
    for name, value in env.items():
        args += ["--setenv", name, value]
    args += ["--chdir", WORKDIR]
    return args


def _environment(spec: SandboxSpec, inside: bool) -> dict[str, str]:
    home = HOME if inside else str(spec.host_home or spec.host_workdir or Path.cwd())
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "USER": "student",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
        "NUMBA_CACHE_DIR": "/tmp/numba" if inside else f"{home}/.numba",
        "TQDM_DISABLE": "1",
    }
    if spec.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(spec.pythonpath)
    env.update(dict(spec.env))
    return env


def sandbox_command(argv: Sequence[str], spec: SandboxSpec, limits: Limits,
                    support: Support) -> list[str]:
    """The command that runs ``argv`` in the sandbox ``spec`` describes, within ``limits``.

    Without sandbox support, ``argv`` runs with the limits only; use :func:`host_environment`
    for its environment and ``spec.host_workdir`` as its working folder.
    """
    if not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError("argv must be a non-empty sequence of str")
    if not isinstance(spec, SandboxSpec):
        raise TypeError(f"spec must be a SandboxSpec, got {type(spec).__name__}")
    head = [sys.executable, "-I", "-S", str(LIMITS_SCRIPT), json.dumps(limits.rlimits()), "--"]
    if not support.available:
        return head + list(argv)
    command = _bwrap_args(spec, limits, support) + ["--"]
    if support.kind == "root":
        command += [support.setpriv, f"--reuid={spec.uid}", f"--regid={spec.uid}",
                    "--clear-groups", "--no-new-privs", "--inh-caps=-all",
                    "--bounding-set=-all", "--"]
    return head + command + list(argv)


def host_environment(spec: SandboxSpec) -> dict[str, str]:
    """The environment of an unsandboxed process (``Support.kind == 'none'``)."""
    return _environment(spec, inside=False)


def prepare_owned(path: Path, spec: SandboxSpec, support: Support, mode: int = 0o700) -> None:
    """Let the sandbox user write ``path`` (a folder or file the grader created for it)."""
    if support.kind == "root":
        os.chown(path, spec.uid, spec.uid)
    os.chmod(path, mode)


@functools.lru_cache(maxsize=4)
def probe_support(mode: str = "auto") -> Support:
    """Can this machine run sandboxed processes? Tries one (a Python that prints its uid)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "off":
        return Support("none", "the sandbox is switched off (Sandbox.mode = 'off')", mode=mode)
    bwrap = shutil.which("bwrap") or ""
    setpriv = shutil.which("setpriv") or ""
    if not bwrap:
        return Support("none", "bubblewrap (bwrap) is not installed", mode=mode)
    kinds = ["root"] if os.geteuid() == 0 and setpriv else []
    kinds.append("userns")
    reasons = []
    for kind in kinds:
        support = Support(kind, "", bwrap, setpriv, mode)
        spec = SandboxSpec(uid=UID_BASE)
        command = sandbox_command([sys.executable, "-c", "import os; print(os.getuid())"],
                                  spec, Limits(), support)
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=_PROBE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            reasons.append(f"{kind}: {error}")
            continue
        if done.returncode == 0 and done.stdout.strip() == str(UID_BASE):
            return support
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        reasons.append(f"{kind}: {last}")
    return Support("none", "bubblewrap cannot start a sandbox here (" + "; ".join(reasons) + ")",
                   bwrap, setpriv, mode)


__all__ = [
    "HOME",
    "LIB",
    "Limits",
    "MODES",
    "Mount",
    "SandboxSpec",
    "Support",
    "UID_BASE",
    "WORKDIR",
    "host_environment",
    "prepare_owned",
    "probe_support",
    "sandbox_command",
    "sandbox_mode",
]
