"""The one Markdown table writer: exact strings for handmade rows."""

from __future__ import annotations

from dpglow.utils.tables import markdown_table


def test_columns_in_first_seen_order_and_missing_cells_blank():
    table = markdown_table([{"a": 1, "b": 0.5}, {"a": 2, "c": "x"}])
    assert table == "| a | b | c |\n|---|---|---|\n| 1 | 0.5 |  |\n| 2 |  | x |"


def test_named_columns_choose_and_order_the_cells():
    rows = [{"a": 1, "b": 2, "c": 3}]
    assert markdown_table(rows, columns=["c", "a"]) == "| c | a |\n|---|---|\n| 3 | 1 |"
    # A named column no row has is a blank column.
    assert markdown_table(rows, columns=["z"]) == "| z |\n|---|\n|  |"


def test_fmt_formats_present_cells_only():
    seen = []

    def fmt(value):
        seen.append(value)
        return f"<{value}>"

    table = markdown_table([{"a": 1.0, "b": None}, {"b": "x"}], fmt=fmt)
    assert table == "| a | b |\n|---|---|\n| <1.0> | <None> |\n|  | <x> |"
    assert seen == [1.0, None, "x"]  # never called for the missing cell


def test_pipes_are_escaped_and_newlines_flattened():
    table = markdown_table([{"a|b": "x | y", "c": "two\nlines"}])
    assert table == "| a\\|b | c |\n|---|---|\n| x \\| y | two lines |"
    assert table.splitlines()[2].count(" | ") == 1  # one cell boundary, not three


def test_no_columns_is_an_empty_string_and_no_rows_keeps_the_header():
    assert markdown_table([]) == ""
    assert markdown_table([{"a": 1}], columns=[]) == ""
    assert markdown_table([], columns=["a", "b"]) == "| a | b |\n|---|---|"
