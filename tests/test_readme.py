"""The README renders as written: each table row has as many cells as its header."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
CELL_BORDER = re.compile(r"(?<!\\)\|")  # GitHub splits cells at every unescaped |, code too


def broken_rows(text: str) -> list[str]:
    """Table rows whose cell count differs from their table's header row."""
    broken, header = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            header = None
            continue
        cells = len(CELL_BORDER.split(line.strip().strip("|")))
        if header is None:
            header = cells
        elif cells != header:
            broken.append(f"line {number}: {cells} cells, not {header}: {line}")
    return broken


def test_every_table_row_has_the_cells_of_its_header() -> None:
    assert broken_rows("| a | b |\n| --- | --- |\n| `x \\| y` | z |\n") == []
    assert broken_rows("| a | b |\n| --- | --- |\n| `x | y` | z |\n") != []
    assert broken_rows(README.read_text()) == []
