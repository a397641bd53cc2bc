"""A DataTable that is refilled from plain rows and knows which message each row is about.

Refreshing every second must not make the cursor jump: rows carry a stable key, the cursor
follows its key across refills, and a refill with identical rows does nothing at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import DataTable

Cell = str | Text


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    message: int | None
    cells: tuple[Cell, ...]

    def matches(self, needle: str) -> bool:
        return any(needle in str(c).lower() for c in self.cells)


class RowsTable(DataTable[Cell]):
    """Rows of one panel; ``selected_message`` is the queue row under the cursor, if any."""

    def __init__(self, columns: Sequence[str], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._columns = list(columns)
        self._rows: list[Row] = []
        self._needle = ""

    def on_mount(self) -> None:
        self.add_columns(*self._columns)

    @property
    def selected_message(self) -> int | None:
        if not self._rows or self.cursor_row < 0:
            return None
        shown = self._shown()
        if self.cursor_row >= len(shown):
            return None
        return shown[self.cursor_row].message

    @property
    def shown_rows(self) -> list[Row]:
        return self._shown()

    def _shown(self) -> list[Row]:
        if not self._needle:
            return self._rows
        return [r for r in self._rows if r.matches(self._needle)]

    def fill(self, rows: Sequence[Row], needle: str = "") -> None:
        rows = list(rows)
        needle = needle.lower()
        if rows == self._rows and needle == self._needle:
            return
        current = self._shown()
        keep = current[self.cursor_row].key if 0 <= self.cursor_row < len(current) else None
        self._rows, self._needle = rows, needle
        self.clear()
        for row in self._shown():
            self.add_row(*(Text(c) if isinstance(c, str) else c for c in row.cells), key=row.key)
        if keep is not None:
            index = next((i for i, r in enumerate(self._shown()) if r.key == keep), None)
            if index is not None:
                self.move_cursor(row=index, animate=False)


def tone(widget: DataTable[Cell], text: str, variable: str, bold: bool = False) -> Text:
    """``text`` in a colour of the current theme (``error``, ``warning``, ``success``...)."""
    colour = widget.app.theme_variables.get(variable, "")
    style = f"{'bold ' if bold else ''}{colour}".strip()
    return Text(text, style=style)
