"""lab01 end to end: the solution notebook executes top to bottom (experiments included) and
its measured results show what the lab claims to demonstrate."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
LAB = "lab01_direct_quantization"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    work = tmp_path_factory.mktemp(LAB)
    for f in (ROOT / "solutions" / LAB).iterdir():
        if f.is_file():
            shutil.copy(f, work / f.name)
    nb = nbformat.read(work / f"{LAB}.ipynb", as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(work)}}).execute()
    seconds = time.perf_counter() - start
    print(f"{LAB} executed in {seconds:.1f} s")
    return nb, json.loads((work / "results.json").read_text())


@pytest.mark.slow
def test_solution_notebook_runs_without_errors(executed):
    nb, _ = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors[0]
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(shown) >= 4  # SQNR, per-channel SQNR, histogram, accuracy vs bits


@pytest.mark.slow
def test_results_show_the_six_db_rule_and_the_collapse(executed):
    _, results = executed
    for label, slope in results["sqnr_db_per_bit"].items():
        assert 5.8 < slope < 6.6, (label, slope)
        assert 5.8 < results["sqnr_gain_per_bit"][label][-1] < 6.3  # 7 -> 8 bits: ~6.02 dB
    first = results["first_layer_sqnr_db"]
    assert all(c > t for c, t in zip(first["per_channel"], first["per_tensor"], strict=True))
    direct = results["direct_quantization"]
    assert direct["bits"] == ["8", "6", "4", "3", "2", "1"]
    assert direct["float"] > 0.9
    assert abs(direct["per tensor"][0] - direct["float"]) < 0.01        # 8 bits: no loss
    assert direct["per channel"][-2] < direct["float"] - 0.05           # 2 bits: clear loss
    assert min(direct["per tensor"][-2:]) < 0.8                          # the collapse
