"""Moving through what the monitor shows: pages, sorting, following the Log.

Two tabs page through the store, with the same keys (``n``/``N``) and the same arithmetic: the
Queue's search (``sender.store.search``: the app's ``queue_query`` changes and the panels reload)
and the Duplicates report (``sender.report.report_page``: the app's ``report_offset`` changes
and the report reruns). The Queue's search is also sorted by the store; other tabs sort their
own rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from textual import on

from sender.store.search import PAGE as SEARCH_PAGE

from .bulk import BulkActions
from .findings import PAGE as REPORT_PAGE
from .findings import Findings
from .source import QueueQuery
from .widgets.panels import QueuePanel
from .widgets.table import FollowTable, Sorted


class Navigation(BulkActions):
    """Mixed into ``MonitorApp``, which provides ``queue_query`` and ``filters``."""

    queue_query: QueueQuery
    filters: dict[str, str]
    findings: Findings | None
    report_offset: int

    def action_page(self, step: int) -> None:
        """``n`` / ``N``: the next or previous page of what this tab pages through."""
        paging = self._paging()
        if paging is None:
            return
        offset, size, total, go = paging
        target = offset + step * size
        if offset > 0 > target:
            target = 0
        if target < 0 or target >= total:
            self.notify("No more pages.", severity="warning")
            return
        go(target)

    def _paging(self) -> tuple[int, int, int, Callable[[int], None]] | None:
        """(offset, page size, total, go to an offset) of the tab on screen, if it pages."""
        if self.active_tab == "duplicates":
            found = self.findings
            if found is None or not found.available:
                return None
            return found.offset, REPORT_PAGE, found.total, self._report_page
        page = self.snapshot.search if self.snapshot else None
        if self.active_tab != "queue" or page is None:
            return None
        return page.offset, SEARCH_PAGE, page.total, self._queue_page

    def _queue_page(self, offset: int) -> None:
        self.queue_query = replace(self.queue_query, offset=offset)
        self.reload_now()

    def _report_page(self, offset: int) -> None:
        self.report_offset = offset
        self.reload_now(report=True)

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

