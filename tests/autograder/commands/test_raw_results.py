"""``python -m autograder raw-results`` (``autograder.commands.raw_results``): the labs'
``results*.json`` rows in one table. ``make results`` is another table, the lecture's claims
(``course.claims``); ``results`` is no command of the autograder."""

from __future__ import annotations

import json

import pytest

from autograder.cli import main


def test_results_of_every_lab_become_one_markdown_table(tmp_path):
    from autograder.commands.raw_results import collect_results, markdown_table

    (tmp_path / "lab01_a").mkdir()
    (tmp_path / "lab02_b").mkdir()
    (tmp_path / "lab01_a" / "results.json").write_text(json.dumps(
        {"rows": [{"claim": "~6 dB per bit", "source": "slide 9", "measured": 6.0213}]}))
    (tmp_path / "lab02_b" / "results_speed.json").write_text(json.dumps(
        {"int8 speedup": 3.2, "note": "a|b"}))
    (tmp_path / "lab02_b" / "other.json").write_text("not collected")
    rows = collect_results(tmp_path)
    assert [(r["lab"], r["file"]) for r in rows] == [
        ("lab01_a", "results.json"), ("lab02_b", "results_speed.json"),
        ("lab02_b", "results_speed.json")]
    assert markdown_table(rows).splitlines() == [
        "| lab | file | claim | source | measured | metric | value |",
        "|---|---|---|---|---|---|---|",
        "| lab01_a | results.json | ~6 dB per bit | slide 9 | 6.021 |  |  |",
        "| lab02_b | results_speed.json |  |  |  | int8 speedup | 3.2 |",
        "| lab02_b | results_speed.json |  |  |  | note | a\\|b |",
    ]


def test_results_refuse_files_that_are_not_tables(tmp_path):
    from autograder.commands.raw_results import collect_results

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "results.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="results.json"):
        collect_results(tmp_path)
    (tmp_path / "lab" / "results.json").write_text("{broken")
    with pytest.raises(ValueError, match="not JSON"):
        collect_results(tmp_path)
    with pytest.raises(ValueError, match="labs_dir"):
        collect_results(tmp_path / "absent")


def test_the_command_prints_the_table_and_results_is_not_a_command(tmp_path, capsys):
    (tmp_path / "lab01_a").mkdir()
    (tmp_path / "lab01_a" / "results.json").write_text(json.dumps({"sqnr": 6.02}))
    out = tmp_path / "table.md"
    assert main(["raw-results", "--labs", str(tmp_path), "--out", str(out)]) == 0
    table = "| lab | file | metric | value |\n|---|---|---|---|\n" \
        "| lab01_a | results.json | sqnr | 6.02 |"
    assert capsys.readouterr().out.startswith(table)
    assert out.read_text() == table + "\n"
    with pytest.raises(SystemExit) as stop:
        main(["results"])
    assert stop.value.code == 2
