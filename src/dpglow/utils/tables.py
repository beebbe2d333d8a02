"""The one Markdown table writer of the project (benchmark, noise table, evaluation report)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def _escape(text: str) -> str:
    # A bare pipe would end the cell early, a newline the row.
    return text.replace("|", r"\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    fmt: Callable[[Any], str] = str,
) -> str:
    """A GitHub Markdown table of ``rows``: a header line, a ``|---|`` separator line and one
    line per row, joined by newlines (no trailing newline).

    ``columns``: the keys to show, in order, which are also the headings; ``None`` takes every
    key of the rows in the order first seen. A cell is ``fmt(row[key])``; a key a row lacks is a
    blank cell (``fmt`` is not called). Pipes in headings and cells are escaped (``\\|``) and
    newlines become spaces. No columns (``columns=[]``, or ``None`` with no rows) gives ``""``.
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        return ""
    lines = [
        "| " + " | ".join(_escape(str(key)) for key in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = (_escape(fmt(row[key])) if key in row else "" for key in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
