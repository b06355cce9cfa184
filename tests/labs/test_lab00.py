"""lab00 end to end: the solution notebook executes top to bottom and its results show the
lecture's table rebuilt (sizes, MACs), memory dominating the energy of AlexNet, and the four
formats timed; graded with the real grader, the solution earns full marks, the released lab
scores zero without crashing, one wrong answer loses only its points, and an answer that
calls the library's own implementation is refused (withheld)."""

from __future__ import annotations

import pytest
from conftest import notebook_errors

from autograder.cases import lab00_why_quantize as lab00
from autograder.session import REPO_ROOT
from tests.autograder.classroom import (
    autograded_test_cells,
    grade_lab_class,
    gradebook_grades,
)

LAB = "lab00_why_quantize"
SOURCE = REPO_ROOT / "solutions" / LAB / f"{LAB}.ipynb"
SOLVED, BLANK, WRONG, LIBCALL = "alice", "bob", "carol", "erin"


@pytest.fixture(scope="module")
def executed(execute_solution):
    return execute_solution(LAB)


@pytest.mark.slow
def test_solution_notebook_runs_and_rebuilds_the_table(executed):
    nb, results, seconds = executed
    errors = notebook_errors(nb)
    assert not errors, errors[0]
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3          # sizes, energy, latency
    rows = {r["model"]: r for r in results["size_table"]}
    assert rows["alexnet"]["parameters"] == 61_100_840
    assert round(rows["alexnet"]["MiB fp32"]) == 233 == rows["alexnet"]["lecture MB"]
    assert rows["vgg16"]["MACs"] == 15_470_264_320
    for name in ("mobilenet_v2", "squeezenet1_0"):   # the lecture's MB are feature memory
        assert rows[name]["MiB fp32"] < rows[name]["lecture MB"] / 2
    for row in rows.values():
        assert 3.7 < row["MiB fp32"] / row["MiB int8"] <= 4.0   # BN and biases stay fp32
    print(f"{LAB} ran in {seconds:.0f} s; experiments {results['seconds']:.0f} s")


@pytest.mark.slow
def test_energy_and_latency_are_measured(executed):
    _, results, _ = executed
    alexnet = {r["format"]: r for r in results["energy"] if r["model"] == "alexnet"}
    assert alexnet["fp32"]["memory share"] > 0.9
    assert alexnet["int8"]["compute mJ"] < alexnet["fp32"]["compute mJ"] / 10
    rows = results["latency"]["rows"]
    assert {(r["batch"], r["format"]) for r in rows} == {
        (b, f) for b in (1, 256) for f in ("fp32", "fp16", "int8", "binary")}
    assert all(r["median ms"] > 0 for r in rows)
    network = results["network"]                 # PyTorch's own int8 MobileNetV2
    assert [r["model"].split()[1] for r in network["rows"]] == ["fp32", "int8"]
    assert 0.2 < network["size_ratio"] < 0.3 and network["speedup"] > 0


# ----------------------------------------------------------------------------- grading
@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return grade_lab_class(tmp_path_factory.mktemp("lab00_course"), LAB, SOURCE, {
        WRONG: ("storage_bytes",
                "return sum(t.numel() * t.element_size() for t in model.state_dict().values())"),
        LIBCALL: ("count_macs", "return cost.count_macs(model, input_shape)"),
    })


def _test_cells() -> dict[str, str]:
    return autograded_test_cells(SOURCE)


@pytest.mark.slow
def test_solution_full_marks_release_zero(graded):
    grades = gradebook_grades(graded, LAB)
    tests = _test_cells()
    assert sorted(tests) == sorted(f"test_{n}" for n in lab00.EXERCISES)
    assert {g: grades[(SOLVED, g)][:2] for g in tests
            if grades[(SOLVED, g)][0] != grades[(SOLVED, g)][1]} == {}
    assert sum(grades[(SOLVED, g)][1] for g in tests) == 6
    assert {grades[(BLANK, g)][0] for g in tests} == {0.0}
    assert grades[(SOLVED, "why_quantize")][1] == 2          # graded by hand


@pytest.mark.slow
def test_one_wrong_answer_loses_only_its_points(graded):
    grades = gradebook_grades(graded, LAB)

    def lost(student):
        return {g for g in _test_cells() if grades[(student, g)][0] != grades[(SOLVED, g)][0]}

    assert lost(WRONG) == {"test_storage_bytes"}
    assert lost(LIBCALL) == {"test_count_macs"}              # the library's is withheld
