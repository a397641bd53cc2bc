"""A DataTable that is refilled from plain rows and knows which message each row is about.

Refreshing every second must not make the cursor jump: rows carry a stable key, the cursor
follows its key across refills, and a refill with identical rows does nothing at all. The
table also sorts its rows (``sort_by``, a header click), and the main tables mark rows for a
bulk action (space) and clear their tab's filter with Escape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
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
        self.sort_column: int | None = None
        self.sort_reverse = False
        self.sorted_in_store = False  # the rows arrive sorted (the Queue's search sorts in SQL)
        self.marked: set[int] = set()

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

    @property
    def columns_named(self) -> list[str]:
        return self._columns

    def _shown(self) -> list[Row]:
        rows = self._rows if not self._needle else [r for r in self._rows if r.matches(self._needle)]
        if self.sort_column is not None and not self.sorted_in_store:
            col = self.sort_column
            rows = sorted(rows, key=lambda r: _sort_key(r.cells[col] if col < len(r.cells) else ""),
                          reverse=self.sort_reverse)
        return rows

    def sort_by(self, column: int) -> None:
        """Sort by ``column``; the same column again reverses the order."""
        if self.sort_column == column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        self._redraw(self.current_key())

    def current_key(self) -> str | None:
        current = self._shown()
        return current[self.cursor_row].key if 0 <= self.cursor_row < len(current) else None

    def fill(self, rows: Sequence[Row], needle: str = "", *, keep_top: bool = False) -> None:
        """Show ``rows``; the cursor stays on its row, or on the top row with ``keep_top``."""
        rows = list(rows)
        needle = needle.lower()
        if rows == self._rows and needle == self._needle:
            if keep_top and self.cursor_row != 0 and self.row_count:
                self.move_cursor(row=0, animate=False)
            return
        keep = None if keep_top else self.current_key()
        self._rows, self._needle = rows, needle
        self._redraw(keep)

    def _redraw(self, keep: str | None) -> None:
        with self.app.batch_update():
            self.clear()
            for row in self._shown():
                cells = [Text(c) if isinstance(c, str) else c for c in row.cells]
                if row.message is not None and row.message in self.marked and cells:
                    cells[0] = Text("● ", style="bold") + cells[0]
                self.add_row(*cells, key=row.key)
            index = 0
            if keep is not None:
                index = next((i for i, r in enumerate(self._shown()) if r.key == keep), 0)
            if self.row_count:
                self.move_cursor(row=index, animate=False)

    def toggle_mark(self) -> int | None:
        """Mark or unmark the message under the cursor; returns it (None on a row without one)."""
        row = self.selected_message
        if row is None:
            return None
        self.marked.symmetric_difference_update({row})
        self._redraw(self.current_key())
        return row

    def clear_marks(self) -> None:
        if self.marked:
            self.marked.clear()
            self._redraw(self.current_key())

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(event.column_index)
        self.post_message(Sorted(self))


class Sorted(Message):
    """A table changed its sort order (the Queue's search then sorts in SQL)."""

    def __init__(self, table: RowsTable) -> None:
        super().__init__()
        self.table = table


class MainTable(RowsTable):
    """The table of a tab: Escape clears that tab's filter."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.clear_filter", "Clear filter", show=False)]


class FollowTable(MainTable):
    """The Log's table: follows the newest attempt until the operator moves the cursor."""

    follow = True

    def _moved(self) -> None:
        self.follow = False

    def on_click(self) -> None:
        self._moved()

    def action_cursor_down(self) -> None:
        self._moved()
        super().action_cursor_down()

    def action_cursor_up(self) -> None:
        self._moved()
        super().action_cursor_up()

    def action_page_down(self) -> None:
        self._moved()
        super().action_page_down()

    def action_page_up(self) -> None:
        self._moved()
        super().action_page_up()

    def action_scroll_bottom(self) -> None:
        self._moved()
        super().action_scroll_bottom()

    def action_scroll_top(self) -> None:
        """ctrl+Home: back to the newest attempt, following again."""
        self.follow = True
        super().action_scroll_top()


_NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?$")


def _sort_key(cell: Cell) -> tuple[int, float, str]:
    """Numbers by value (before words), words without case."""
    text = str(cell).strip().lstrip("● ")
    if _NUMBER.match(text):
        return (0, float(text.replace(",", "")), "")
    return (1, 0.0, text.lower())


def tone(widget: DataTable[Cell], text: str, variable: str, bold: bool = False) -> Text:
    """``text`` in a colour of the current theme (``error``, ``warning``, ``success``...)."""
    colour = widget.app.theme_variables.get(variable, "")
    style = f"{'bold ' if bold else ''}{colour}".strip()
    return Text(text, style=style)
