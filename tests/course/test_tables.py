"""course.tables: Markdown tables with stable formatting and escaped cells."""

import pytest

from course.tables import markdown_table


def test_columns_in_first_seen_order_and_missing_cells_empty():
    text = markdown_table([{"a": 1, "b": 0.123456}, {"c": "x|y", "a": None}])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1 | 0.1235 |  |",
                                 "|  |  | x\\|y |"]


def test_explicit_columns_select_and_order():
    assert markdown_table([{"a": 1, "b": 2}], columns=["b"]).splitlines()[2] == "| 2 |"


@pytest.mark.parametrize(("rows", "error"), [("abc", TypeError), ([1], TypeError),
                                             ([], ValueError)])
def test_bad_rows_are_clear_errors(rows, error):
    with pytest.raises(error):
        markdown_table(rows)
