"""Bulk actions of the monitor: space marks rows, ``A`` acts on the marks or on everything the
Queue's search matches, through ``sender.store.operator.bulk`` (the store code of ``retry``/``cancel``).

The flow is three steps, each its own screen or worker: choose the action (only those that fit
the selection), count what it would change now (a dry run in the store), confirm with the exact
count and the filter (default No), act (one transaction, one audit row).
"""

from __future__ import annotations

from collections.abc import Callable

from textual import work
from textual.app import App

from sender.store.selection import Selection

from . import actions, source
from .screens.confirm import Choose, Confirm
from .source import Snapshot
from .widgets.panels import Panel


class BulkActions(App[None]):
    """Mixed into ``MonitorApp``, which provides the attributes declared here."""

    db_path: str
    actor: str
    clock: Callable[[], float]
    snapshot: Snapshot | None

    @property
    def active_tab(self) -> str:
        raise NotImplementedError

    def panel(self, tab: str | None = None) -> Panel:
        raise NotImplementedError

    def reload_now(self, *, report: bool = False) -> None:
        raise NotImplementedError

    def action_mark(self) -> None:
        row = self.panel().table.toggle_mark()
        if row is None:
            self.notify("This row is not a message.", severity="warning")
            return
        table = self.panel().table
        self.notify(f"{len(table.marked)} marked: A acts on them", timeout=2)
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1, animate=False)


    def bulk_selection(self) -> tuple[Selection, str]:
        """The marks of the tab on screen, else (on the Queue) everything its search matches."""
        table = self.panel().table
        if table.marked:
            return Selection(rows=tuple(sorted(table.marked))), f"{len(table.marked)} marked"
        page = self.snapshot.search if self.snapshot else None
        if self.active_tab == "queue" and page is not None:
            return page.selection, f"the search {page.text or 'scheduled'!r}"
        return Selection(), "every message"

    def action_bulk(self) -> None:
        sel, what = self.bulk_selection()
        choices = [c for c in actions.BULK_CHOICES
                   if not c[0].endswith("campaign") or sel.campaign is not None]
        self.push_screen(
            Choose(f"Act on {what} ({sel.describe()}):\neach action applies to the messages of "
                   "its state only; the next question shows the exact count.", choices,
                   stacked=True),
            lambda answer: self._bulk_chosen(answer, sel))

    def _bulk_chosen(self, answer: str | None, sel: Selection) -> None:
        if answer:
            self.confirm_bulk(answer, sel)

    @work(group="action")
    async def confirm_bulk(self, kind: actions.BulkKind, sel: Selection) -> None:
        verb = actions.BULK_VERB[kind]
        if kind.endswith("campaign"):
            question = f"{verb} {sel.campaign}? Its messages stay queued."
        else:
            count, text = await source.count_bulk(self.db_path, kind, sel)  # type: ignore[arg-type]
            if count is None:
                self.notify(text, title="Refused", severity="error")
                return
            if count == 0:
                self.notify(f"{verb}: no message matches ({text}).", severity="warning")
                return
            question = (f"{verb} {count:,} message(s)?\nfilter: {text}\n\nOne transaction, one "
                        "audit row; a message that changed state meanwhile is left alone.")
        self.push_screen(Confirm(question), lambda yes: self._bulk_confirmed(yes, kind, sel))

    def _bulk_confirmed(self, yes: bool | str | None, kind: actions.BulkKind, sel: Selection) -> None:
        if yes:
            self.execute_bulk(kind, sel)

    @work(group="action")
    async def execute_bulk(self, kind: actions.BulkKind, sel: Selection) -> None:
        done = await actions.perform_bulk(self.db_path, kind, sel, actor=self.actor,
                                          now=self.clock(), reason="from the monitor")
        self.notify(done.text, severity="information" if done.ok else "error",
                    title="Done" if done.ok else "Refused")
        if done.ok:
            self.panel().table.clear_marks()
        self.reload_now(report=True)
