"""Moving through what the monitor shows: pages of the Queue's search, sorting, following the Log.

The Queue's search is sorted and paged by the store (``sender.monitor_search``): these actions
change the app's ``queue_query`` and reload. Other tabs sort their own rows.
"""

from __future__ import annotations

from dataclasses import replace

from textual import on

from .bulk import BulkActions
from .source import QueueQuery
from .widgets.panels import QueuePanel
from .widgets.table import FollowTable, Sorted


class Navigation(BulkActions):
    """Mixed into ``MonitorApp``, which provides ``queue_query`` and ``filters``."""

    queue_query: QueueQuery
    filters: dict[str, str]

    def action_page(self, step: int) -> None:
        page = self.snapshot.search if self.snapshot else None
        if page is None:
            return
        offset = page.offset + step * max(1, len(page.rows) or 100)
        if offset < 0 or offset >= page.total:
            self.notify("No more pages.", severity="warning")
            return
        self.queue_query = replace(self.queue_query, offset=offset)
        self.reload_now()

    def action_sort(self, step: int) -> None:
        """``s``: sort by the next column (``S`` the previous one); again on the Queue: the store sorts."""
        table = self.panel().table
        if self.active_tab == "queue":
            keys = [k for k in QueuePanel.ORDER_KEYS if k]
            current = self.queue_query.order.removeprefix("-")
            index = (keys.index(current) + step) % len(keys) if current in keys else 0
            self._sort_queue(keys[index], descending=keys[index] in ("id", "updated"))
            return
        columns = len(table.columns_named)
        column = ((table.sort_column if table.sort_column is not None else -1) + step) % columns
        table.sort_by(column)
        self.notify(f"sorted by {table.columns_named[column] or 'column ' + str(column + 1)}",
                    timeout=2)

    def _sort_queue(self, key: str, *, descending: bool) -> None:
        order = f"-{key}" if descending else key
        self.queue_query = replace(self.queue_query, order=order, offset=0)
        self.reload_now()

    @on(Sorted)
    def _header_sorted(self, event: Sorted) -> None:
        """A header click: on the Queue's search the store sorts the whole match."""
        table = event.table
        if table.id != "found-table" or table.sort_column is None:
            return
        key = QueuePanel.ORDER_KEYS[table.sort_column]
        if key:
            self._sort_queue(key, descending=table.sort_reverse)

    def action_follow(self) -> None:
        table = self.query_one(FollowTable)
        table.follow = not table.follow
        if table.follow and table.row_count:
            table.move_cursor(row=0, animate=False)
        if self.snapshot is not None:
            self.panel("log").show(self.snapshot, self.filters["log"])

