"""No jargon in a student's logs: JupyterLab asks nothing about "official Jupyter news", and
writing feedback pages logs no "display_data_priority not recognized" per student.

``make lab`` adds ``jupyter_config/`` to JupyterLab's config path, whose
``labconfig/page_config.json`` disables the announcements plugin; ``nbgrader_config.py``
declares the trait that nbconvert's HTMLExporter sets configurable on nbgrader's feedback
preprocessors. The feedback test registers the configured preprocessors on the exporter as
nbgrader's GenerateFeedback does; the server test starts JupyterLab with the Makefile's
environment and reads the page config it serves.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
from test_jupyterlab import POLL_S, START_TIMEOUT_S, free_port, get, stop

ROOT = Path(__file__).resolve().parents[2]
ANNOUNCEMENTS = "@jupyterlab/apputils-extension:announcements"
NOT_RECOGNIZED = "not recognized"


def _feedback_warnings(caplog, preprocessors) -> list[str]:
    from nbconvert import HTMLExporter

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        exporter = HTMLExporter(config=_config())
        for preprocessor in preprocessors:
            exporter.register_preprocessor(preprocessor, enabled=True)
    return [r.getMessage() for r in caplog.records if NOT_RECOGNIZED in r.getMessage()]


def _config():
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()


def test_feedback_preprocessors_log_no_unrecognized_option(caplog):
    from nbconvert import HTMLExporter
    from nbgrader.preprocessors import ClearHiddenTests

    configured = list(_config().GenerateFeedback.preprocessors)
    assert [p.__name__ for p in configured] == [
        "GetGrades", "CSSHTMLHeaderPreprocessor", "ClearHiddenTestTracebacks", "ClearHiddenTests"]
    assert _feedback_warnings(caplog, configured) == []
    # nbgrader's own class, as it is, still logs it: the check above can fail.
    assert any("display_data_priority" in m and "ClearHiddenTests" in m
               for m in _feedback_warnings(caplog, [ClearHiddenTests]))
    # Behaviour kept: each is the nbgrader (or course) class itself or a subclass of that
    # name that changes no method, and the page's own output priority is the exporter's.
    for preprocessor in configured:
        base = preprocessor.__bases__[0]
        if base.__name__ == preprocessor.__name__:
            assert preprocessor.preprocess_cell is base.preprocess_cell
            assert preprocessor.preprocess is base.preprocess
    assert configured[3].__bases__[0] is ClearHiddenTests
    assert HTMLExporter(config=_config()).config.NbConvertBase.display_data_priority == \
        HTMLExporter().default_config.NbConvertBase.display_data_priority


def test_make_lab_reads_the_course_page_config():
    run = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert f'JUPYTER_CONFIG_PATH="{ROOT}/jupyter_config' in run.stdout
    page = json.loads((ROOT / "jupyter_config" / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"] == {ANNOUNCEMENTS: True}


@pytest.mark.slow
def test_jupyterlab_started_by_make_lab_disables_the_announcements(tmp_path):
    """The page config JupyterLab serves (what its front end loads plugins from) disables the
    announcements plugin; a server without the course's folder does not (the test can fail)."""
    assert ANNOUNCEMENTS in _served_disabled(tmp_path / "course", course_config=True)
    assert ANNOUNCEMENTS not in _served_disabled(tmp_path / "plain", course_config=False)


def _served_disabled(tmp_path: Path, course_config: bool) -> list[str]:
    tmp_path.mkdir()
    port, token = free_port(), secrets.token_hex(16)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    for variable, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"),
                          ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):
        env[variable] = str(tmp_path / sub)
    env.pop("JUPYTER_CONFIG_PATH", None)
    if course_config:  # as the Makefile's `lab` target sets it
        env["JUPYTER_CONFIG_PATH"] = str(ROOT / "jupyter_config")
    command = [str(bin_dir / "jupyter"), "lab", "--no-browser", f"--port={port}",
               f"--ServerApp.token={token}", "--notebook-dir=labs", "--ServerApp.ip=127.0.0.1",
               "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log_path = tmp_path / "jupyter.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"jupyter lab exited:\n{log_path.read_text()}"
            try:
                status, page = get(f"http://127.0.0.1:{port}/lab", token)
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"no answer:\n{log_path.read_text()}"
            time.sleep(POLL_S)
    finally:
        stop(process)
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      page.decode(), re.S)
    assert found, page[:2000]
    return list(json.loads(found.group(1)).get("disabledExtensions", []))
