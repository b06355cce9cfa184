"""A Jupyter kernel manager that starts the graded notebook's kernel inside the sandbox.

nbclient (through nbgrader's ``Execute``) creates the kernel manager named by
``ExecutePreprocessor.kernel_manager_class``; ``autograder.pipeline.worker`` points it here and
configures one per graded submission::

    c.SandboxKernelManager.job_dir = "/.../jobs/alice"    # ipc sockets, record file
    c.SandboxKernelManager.lib_dir = "/.../grading-lib"    # the grading copy of `course`
    c.SandboxKernelManager.refs_dir = "/.../redacted"      # hidden references, inputs only
    c.SandboxKernelManager.uid = 61001

The kernel is plain ipykernel (``python -m ipykernel_launcher -f {connection_file}``) run
through :func:`autograder.sandbox.bwrap.sandbox_command`: IPC transport (sockets in a private folder
under ``/tmp``, bound at the same path inside), interrupts sent as messages (the sandbox is another
PID namespace, so no signal could reach it), its own stdout/stderr discarded (a notebook's
output reaches the grader only as capped messages), and clients that refuse messages larger
than ``Limits.message_mb``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import channel_socket_types
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from traitlets import Int, Type, Unicode

from autograder.sandbox.bwrap import (
    LIB,
    Limits,
    Mount,
    SandboxSpec,
    host_environment,
    prepare_owned,
    probe_support,
    sandbox_command,
    sandbox_mode,
)

REFS_INSIDE = "/grader/refs"
RECORD_INSIDE = "/grader/record/records.jsonl"
RECORD_NAME = "records.jsonl"
_KERNEL_ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


class BoundedKernelClient(AsyncKernelClient):
    """A kernel client whose sockets drop (disconnect) messages above the size limit."""

    def _create_connected_socket(self, channel: str, identity: bytes | None = None):
        limit = getattr(self.parent, "max_message_bytes", 0)
        if not limit or getattr(self, "curve_publickey", None) is not None:
            return super()._create_connected_socket(channel, identity)
        sock = self.context.socket(channel_socket_types[channel])
        sock.linger = 1000
        sock.setsockopt(zmq.MAXMSGSIZE, int(limit))  # before connect: applies to the peer
        if identity:
            sock.identity = identity
        sock.connect(self._make_url(channel))
        return sock


def job_paths(job_dir: Path) -> Path:
    """The record file of a job folder."""
    return Path(job_dir) / RECORD_NAME


IPC_BASE_ENV = "GRADER_IPC_BASE"
"""A short folder a class run creates for its kernels' socket folders (and removes)."""


def _ipc_folder() -> Path:
    """A new private folder for a kernel's sockets, under a short path: a Unix socket's path
    must fit in 107 bytes, and job folders can be deep."""
    base = os.environ.get(IPC_BASE_ENV, "")
    if not base or not os.path.isdir(base):
        base = "/tmp" if os.access("/tmp", os.W_OK) else tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="ipc-", dir=base))


class SandboxKernelManager(AsyncKernelManager):
    """Starts ipykernel in the sandbox (``autograder.sandbox.bwrap``); see the module docstring."""

    job_dir = Unicode("", help="folder of this submission's job (ipc sockets, record)").tag(
        config=True)
    lib_dir = Unicode("", help="folder holding the grading copy of `course`").tag(config=True)
    refs_dir = Unicode("", help="folder of the hidden references (inputs only)").tag(config=True)
    uid = Int(0, help="the sandbox user of this job").tag(config=True)
    client_factory = Type(klass=BoundedKernelClient, default_value=BoundedKernelClient)

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(argv=list(_KERNEL_ARGV), display_name="Python 3 (grading sandbox)",
                          language="python", interrupt_mode="message", env={},
                          resource_dir="")

    @property
    def limits(self) -> Limits:
        return Limits.from_config(self.config)

    @property
    def max_message_bytes(self) -> int:
        return self.limits.message_mb * 1024 * 1024

    def _support(self):
        return probe_support(sandbox_mode(self.config))

    def _spec(self, cwd: Path) -> SandboxSpec:
        if not self.job_dir or not self.lib_dir or not self.uid:
            raise ValueError("SandboxKernelManager needs job_dir, lib_dir and uid configured")
        support = self._support()
        ipc, record = self._ipc, job_paths(Path(self.job_dir))
        inside = support.available
        files = tuple(
            Mount(path, path.name) for path in sorted(cwd.iterdir())
            if path.suffix != ".ipynb" and not path.name.startswith(".")
        ) if cwd.is_dir() else ()
        mounts = [Mount(Path(self.lib_dir), LIB), Mount(ipc, str(ipc), writable=True),
                  Mount(record, RECORD_INSIDE, writable=True)]
        env = {"NBGRADER_EXECUTION": os.environ.get("NBGRADER_EXECUTION", "autograde"),
               "COURSE_GRADING_RECORD": RECORD_INSIDE if inside else str(record)}
        if self.refs_dir:
            mounts.append(Mount(Path(self.refs_dir), REFS_INSIDE))
            env["COURSE_REFERENCES_DIR"] = REFS_INSIDE if inside else self.refs_dir
        home = Path(self.job_dir) / "home"
        if not inside:
            home.mkdir(parents=True, exist_ok=True)
        return SandboxSpec(uid=self.uid, files=files, mounts=tuple(mounts),
                           env=tuple(sorted(env.items())),
                           pythonpath=(LIB if inside else self.lib_dir,), host_workdir=cwd,
                           host_home=home)

    async def _async_pre_start_kernel(self, **kw):
        support = self._support()
        self._ipc = ipc = _ipc_folder()
        record = job_paths(Path(self.job_dir))
        record.parent.mkdir(parents=True, exist_ok=True)
        record.touch()
        self._spec_now = self._spec(Path(kw.get("cwd") or os.getcwd()))
        prepare_owned(ipc, self._spec_now, support, 0o700)
        prepare_owned(record, self._spec_now, support, 0o600)
        self.transport = "ipc"
        self.ip = str(ipc / "kernel")
        self.connection_file = str(ipc / "kernel.json")
        kw["stdout"] = subprocess.DEVNULL
        kw["stderr"] = subprocess.DEVNULL
        kw["stdin"] = subprocess.DEVNULL
        if not support.available:
            kw["env"] = host_environment(self._spec_now)
        return await super()._async_pre_start_kernel(**kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        ipc = getattr(self, "_ipc", None)
        if ipc is not None and not restart:
            shutil.rmtree(ipc, ignore_errors=True)

    def write_connection_file(self, **kwargs) -> None:
        super().write_connection_file(**kwargs)
        spec = getattr(self, "_spec_now", None)
        if spec is not None and os.path.exists(self.connection_file):
            prepare_owned(Path(self.connection_file), spec, self._support(), 0o600)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        argv = super().format_kernel_cmd(extra_arguments)
        return sandbox_command(argv, self._spec_now, self.limits, self._support())


__all__ = ["BoundedKernelClient", "IPC_BASE_ENV", "RECORD_NAME", "SandboxKernelManager",
           "job_paths"]
