"""JupyterLab really serves the labs, started the way ``make lab`` starts it.

The server runs in its own process group on a free port with a random token, serving
``labs/`` (or, while no lab is released yet, a released toy lab); the test waits until it
answers, fetches the ``/lab`` page and a lab notebook through the contents API, checks that
a request without the token is refused, and always stops the whole process group with
bounded waits.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from autograder.session import REPO_ROOT

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20
POLL_S = 0.5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def served_notebook(tmp_path: Path) -> tuple[Path, str, str]:
    """(folder to serve, lab, notebook name): the repository's labs/ when it has a lab,
    else a toy lab released into ``tmp_path``."""
    labs = REPO_ROOT / "labs"
    notebooks = sorted(labs.glob("*/*.ipynb")) if labs.is_dir() else []
    if notebooks:
        return labs, notebooks[0].parent.name, notebooks[0].name
    from autograder.commands.release import release
    from autograder.session import CourseLayout
    from tests.autograder.toy_lab import TOY_LAB, write_toy_lab

    write_toy_lab(tmp_path)
    layout = CourseLayout.from_config(root=tmp_path)
    release([TOY_LAB], layout)
    return layout.release_dir, TOY_LAB, f"{TOY_LAB}.ipynb"


def stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group; kill it if it does not stop in time."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        process.wait(timeout=STOP_TIMEOUT_S)


@pytest.mark.slow
def test_jupyterlab_serves_the_lab_notebooks(tmp_path):
    folder, lab, name = served_notebook(tmp_path / "course")
    port, token = free_port(), secrets.token_hex(16)
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    for variable, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"),
                          ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):
        env[variable] = str(tmp_path / sub)
    log_path = tmp_path / "jupyter.log"
    base = f"http://127.0.0.1:{port}"
    command = [str(bin_dir / "jupyter"), "lab", "--no-browser", f"--port={port}",
               f"--ServerApp.token={token}", f"--notebook-dir={folder.name}",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:  # containers and CI run as root; Jupyter refuses without this
        command.append("--allow-root")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=folder.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"jupyter lab exited:\n{log_path.read_text()}"
            try:
                status, _ = get(f"{base}/api/status", token)
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"no answer in {START_TIMEOUT_S} s:\n" \
                                                f"{log_path.read_text()}"
            time.sleep(POLL_S)

        status, page = get(f"{base}/lab", token)
        assert status == 200
        assert b"jupyter-config-data" in page and b"JupyterLab" in page

        status, body = get(f"{base}/api/contents/{lab}/{name}", token)
        assert status == 200, body[:500]
        model = json.loads(body)
        on_disk = json.loads((folder / lab / name).read_text())
        assert (model["type"], model["name"], model["path"]) == ("notebook", name, f"{lab}/{name}")
        assert model["content"]["nbformat"] == 4
        assert [c["source"] for c in model["content"]["cells"]] == [
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in on_disk["cells"]
        ]

        status, _ = get(f"{base}/api/contents/{lab}/{name}", None)
        assert status == 403, "the contents API must refuse a request without the token"
    finally:
        stop(process)
    assert process.poll() is not None
