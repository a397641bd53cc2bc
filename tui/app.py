"""The monitor application: tabs over one live snapshot of the queue, and guarded actions.

Data flow: a ``set_interval`` tick starts ``load_data``, an exclusive worker that reads one
``Snapshot`` through ``tui.source`` (read-only connection, ``sender.store.views`` queries) and
hands it to the widgets; widgets only format what they are given. A tick that finds the
previous load still running is skipped, so a slow disk delays the screen but never piles up
work. Actions go through ``tui.actions`` (``sender.store.operator``) after a confirmation; bulk
actions live in ``tui.bulk``, paging, sorting and following in ``tui.navigation`` (mixins of
this app). Each tab keeps its own ``/`` filter; the Queue's is a search of the whole store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from sender.report.model import DUPLICATES
from sender.store import operator
from sender.store.engine import DbClock

from . import actions, fmt, source
from .findings import Findings
from .navigation import Navigation
from .screens.confirm import AskReason, Choose, Confirm
from .screens.detail import DetailScreen
from .screens.help import HelpScreen
from .source import QueueQuery, Snapshot
from .widgets.duplicates import DuplicatesPanel
from .widgets.header import StatusHeader
from .widgets.health import Banner, HealthBar
from .widgets.panels import InFlightPanel, LogPanel, Panel, QueuePanel, WorkersPanel
from .widgets.table import RowsTable

WINDOWS = (3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0)
DEFAULT_WINDOW = 2  # 24h, the report's own default
REPORT_BACKGROUND = 30.0  # seconds between report runs while another tab is open
SLOW_CAMPAIGNS = 0.05  # per-campaign counts slower than this are read at most a tenth of the time
TABS = ("queue", "inflight", "workers", "duplicates", "log")
_MAIN_VIEW_ACTIONS = frozenset(("act", "resolve", "pause", "window", "filter", "tab", "refresh",
                                "help", "bulk", "mark", "sort", "follow", "page"))
_WRITE_ACTIONS = frozenset(("act", "resolve", "pause", "bulk", "mark"))
_DETAIL_OFF = frozenset(("tab", "filter", "window", "bulk", "mark", "sort", "follow", "page"))

_VERB = {"cancel": "Cancel", "retry": "Retry"}
_QUESTION = {
    "cancel": "Cancel message #{row} to {to}?\nIt will never be sent.",
    "retry": "Retry failed message #{row} to {to}?\nIt goes back to scheduled with the same "
             "Message-ID and a fresh attempt budget.",
}


class FilterInput(Input):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.clear_filter", "Clear filter")]


class MonitorApp(Navigation):
    CSS_PATH = "app.tcss"
    TITLE = "sender monitor"
    # The footer shows the first few (it must fit 80 columns); ``?`` and the command palette
    # (ctrl+p) list every one.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Search"),
        Binding("space", "mark", "Mark"),
        Binding("A", "bulk", "Act on all"),
        Binding("p", "pause", "Pause"),
        Binding("s", "sort(1)", "Sort"),
        Binding("S", "sort(-1)", "Sort back", show=False),
        Binding("f", "follow", "Follow"),
        Binding("n", "page(1)", "Next page", show=False),
        Binding("N", "page(-1)", "Previous page", show=False),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("c", "act('cancel')", "Cancel", show=False),
        Binding("t", "act('retry')", "Retry", show=False),
        Binding("u", "resolve", "Resolve", show=False),
        Binding("left_square_bracket", "window(-1)", "Window-", show=False),
        Binding("right_square_bracket", "window(1)", "Window+", show=False),
        Binding("ctrl+s", "screenshot", "Screenshot", show=False),
        *(Binding(str(i), f"tab('{tab}')", show=False) for i, tab in enumerate(TABS, start=1)),
    ]

    def __init__(self, db_path: str, *, refresh_every: float = 1.0, read_only: bool = False,
                 clock: Callable[[], float] | None = None, actor: str | None = None,
                 screenshots: str | None = None) -> None:
        super().__init__()
        self.db_path = db_path
        self.refresh_every = refresh_every
        self.read_only = read_only
        # The queue's clock (database time, measured at each refresh) unless a test gives its own.
        self.clock: Callable[[], float] = clock or DbClock()
        self.actor = actor or actions.default_actor()
        self.screenshots = screenshots or os.getcwd()
        self.snapshot: Snapshot | None = None
        self.filters: dict[str, str] = dict.fromkeys(TABS, "")
        self.queue_query = QueueQuery()
        self.window_index = DEFAULT_WINDOW
        self.report_offset = 0  # the Duplicates tab's page (``n``/``N``)
        self.findings: Findings | None = None
        self._loading = False
        self._reporting = False
        self._report_at = 0.0
        self._report_took = 0.0
        self._tab_chosen = False
        self._campaigns_read = 0.0
        self._campaigns_took = 0.0

    @property
    def filter_text(self) -> str:
        """The filter of the tab on screen (each tab keeps its own)."""
        return self.filters[self.active_tab] if self.query(TabbedContent) else ""

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        yield HealthBar(id="health")
        yield Banner(id="banner")
        yield Static(id="problem")
        with TabbedContent(id="tabs"):
            with TabPane("Queue [1]", id="queue"):
                yield QueuePanel(id="queue-panel")
            with TabPane("In flight [2]", id="inflight"):
                yield InFlightPanel(id="inflight-panel")
            with TabPane("Workers [3]", id="workers"):
                yield WorkersPanel(id="workers-panel")
            with TabPane("Duplicates [4]", id="duplicates"):
                yield DuplicatesPanel(id="duplicates-panel")
            with TabPane("Log [5]", id="log"):
                yield LogPanel(id="log-panel")
        yield FilterInput(placeholder="search: recipient or part, <Message-ID>, #row, state, "
                          "campaign:NAME, reply:TEXT, since:1h; Enter applies, Escape clears",
                          id="filter")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._show_header()
        self.set_interval(self.refresh_every, self.tick)
        self.tick()

    # --- data -------------------------------------------------------------------------------

    @property
    def window(self) -> float:
        return WINDOWS[self.window_index]

    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    def panel(self, tab: str | None = None) -> Panel:
        return self.query_one(f"#{tab or self.active_tab}-panel", Panel)

    def tick(self) -> None:
        """Start a panel load unless one is running; start the report when it is due."""
        if not self.live:
            return
        if not self._loading:
            self.load_data()
        if not self._reporting and self._report_due():
            self.load_report()

    def _report_due(self) -> bool:
        """Every tick while Duplicates is open, every 30s otherwise, but never more often than
        ten times the report's own duration, so a slow report takes at most a tenth of a core."""
        if self.findings is None or self.findings.span != self.window:
            return True
        every = self.refresh_every if self.active_tab == "duplicates" else REPORT_BACKGROUND
        return time.monotonic() - self._report_at >= max(every, 10 * self._report_took)

    @work(exclusive=True, group="refresh")
    async def load_data(self) -> None:
        self._loading = True
        started = time.monotonic()
        try:
            snap = await source.load(self.db_path, self.clock(), log_filter=self.filters["log"],
                                     queue=self.queue_query, campaigns=self._campaigns_due(started),
                                     clock=self.clock if isinstance(self.clock, DbClock) else None)
        finally:
            self._loading = False
        if snap.campaigns_took:
            self._campaigns_read, self._campaigns_took = started, snap.campaigns_took
        self.apply(self._keep_campaigns(snap))

    def _campaigns_due(self, now: float) -> bool:
        """The per-campaign counts walk an index entry per scheduled message (exact, not a
        sample): every refresh while they are quick, else no more often than ten times their
        duration, so a queue of a million scheduled messages costs at most a tenth of a core."""
        return (self._campaigns_took < SLOW_CAMPAIGNS
                or now - self._campaigns_read >= 10 * self._campaigns_took)

    def _keep_campaigns(self, snap: Snapshot) -> Snapshot:
        """A snapshot that skipped the per-campaign counts shows the last ones read."""
        q, last = snap.queue, self.snapshot.queue if self.snapshot else None
        if q is None or q.campaigns is not None or last is None or last.campaigns is None:
            return snap
        return replace(snap, queue=replace(q, campaigns=last.campaigns,
                                           campaigns_at=last.campaigns_at))

    @work(exclusive=True, group="report")
    async def load_report(self) -> None:
        self._reporting = True
        self._report_at = time.monotonic()
        try:
            found = await source.load_findings(self.db_path, self.clock(), self.window,
                                               self.report_offset)
        finally:
            self._reporting = False
            self._report_took = time.monotonic() - self._report_at
        self.apply_findings(found)

    def apply_findings(self, found: Findings) -> None:
        if not self.live:
            return
        self.findings = found
        self.report_offset = found.offset  # a page past the end (the findings shrank) moved back
        self._show_header()
        self.query_one(DuplicatesPanel).show_findings(found, self.filters["duplicates"])
        if not self._tab_chosen:
            self._tab_chosen = True
            if any(found.count(k) for k in DUPLICATES):
                self.action_tab("duplicates")

    @property
    def live(self) -> bool:
        """False once shutdown has begun: a load that finishes then has no widgets to show on
        (Textual removes them one by one, so asking for any single one of them is not enough)."""
        return self.is_running and bool(self.query(StatusHeader))

    def apply(self, snap: Snapshot) -> None:
        if not self.live:
            return
        self.snapshot = snap
        self._show_header()
        self.query_one(HealthBar).show(snap)
        self.query_one(Banner).show(snap)
        problem = self.query_one("#problem", Static)
        problem.display = snap.error is not None
        if snap.error is not None:
            problem.update(f"[b $error]⚠ {fmt.lit(snap.error)}[/]\n\nThe monitor keeps trying "
                           f"every {self.refresh_every:g}s. [b]q[/b] quits.")
            return
        for tab in TABS:
            self.panel(tab).show(snap, self.filters[tab])
        if isinstance(self.screen, DetailScreen):
            self.screen.reload(snap.now)

    def _show_header(self) -> None:
        self.query_one(StatusHeader).show(self.db_path, self.snapshot, self.findings,
                                          read_only=self.read_only, filter_text=self.filter_text)

    def reload_now(self, *, report: bool = False) -> None:
        """Refresh at once, replacing a load in progress (after an action or a new filter)."""
        self.load_data()
        if report:
            self.load_report()

    # --- navigation -------------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self._tab_chosen = True
        self.query_one(TabbedContent).active = tab
        self.panel(tab).table.focus()

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.panel().table.focus()
        if self.active_tab == "duplicates" and not self._reporting and self._report_due():
            self.load_report()
        self.refresh_bindings()

    def check_action(self, action: str, _parameters: tuple[object, ...]) -> bool | None:
        """Keys of the main view are off over a dialog, and tab keys are off over a detail."""
        if self.read_only and action in _WRITE_ACTIONS:
            return False  # hidden, not just refused
        if isinstance(self.screen, Choose | HelpScreen | AskReason) and action in _MAIN_VIEW_ACTIONS:
            return False
        if isinstance(self.screen, DetailScreen) and action in _DETAIL_OFF:
            return False
        if action == "window":
            return self.active_tab == "duplicates"
        if action == "follow":
            return self.active_tab == "log"
        if action == "page":
            return self.active_tab == "duplicates" or (
                self.active_tab == "queue" and self.queue_query != QueueQuery())
        return True

    def action_window(self, step: int) -> None:
        self.window_index = max(0, min(len(WINDOWS) - 1, self.window_index + step))
        self.report_offset = 0
        self.load_report()

    def action_refresh(self) -> None:
        self.reload_now(report=True)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        box = self.query_one(FilterInput)
        box.display = True
        box.value = self.filter_text
        box.focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self._set_filter(event.value.strip())

    def action_clear_filter(self) -> None:
        """Escape: clear the filter of this tab (and, on the Queue, the page and sort too)."""
        if self.active_tab == "queue":
            self.queue_query = QueueQuery()
        self._set_filter("")

    def _set_filter(self, text: str) -> None:
        tab = self.active_tab
        self.filters[tab] = text
        if tab == "queue":
            self.queue_query = QueueQuery(text=text, order=self.queue_query.order if text else "")
        self.query_one(FilterInput).display = False
        self.panel().table.clear_marks()
        self.panel().table.focus()
        self._show_header()
        if tab == "duplicates":
            self.query_one(DuplicatesPanel).show_findings(self.findings, text)
        self.reload_now()

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        """Save an SVG of the screen to the current folder (or ``--screenshots DIR``)."""
        saved = self.save_screenshot(filename, path or self.screenshots)
        self.notify(f"saved {saved}", title="Screenshot")

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The palette (ctrl+p) lists the monitor's own actions first, then Textual's."""
        for binding in self.BINDINGS:
            if not isinstance(binding, Binding) or not binding.description:
                continue
            name = binding.action.split("(")[0]
            if name == "tab" or not self.check_action(name, ()):
                continue
            yield SystemCommand(binding.description, f"key {binding.key}",
                                partial(self.run_action, binding.action))
        for i, tab in enumerate(TABS, start=1):
            yield SystemCommand(f"Tab {i}: {tab}", f"key {i}", partial(self.action_tab, tab))
        for command in super().get_system_commands(screen):
            if command.title != "Screenshot":
                yield command

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        table = event.data_table
        if isinstance(self.screen, DetailScreen) or not isinstance(table, RowsTable):
            return
        row = table.selected_message
        if row is not None:
            self.push_screen(DetailScreen(self.db_path, row, self.clock()))

    # --- actions ----------------------------------------------------------------------------

    def selected_message(self) -> int | None:
        if isinstance(self.screen, DetailScreen):
            return self.screen.row_id
        focused = self.focused
        panel = self.panel()
        if (isinstance(focused, RowsTable) and focused in panel.query(RowsTable)
                and focused.selected_message is not None):
            return focused.selected_message
        return panel.table.selected_message

    def _refuse_read_only(self) -> bool:
        if self.read_only:
            self.notify("Read-only monitor (--read-only): actions are disabled.",
                        title="Refused", severity="warning")
        return self.read_only

    def action_act(self, kind: actions.Kind) -> None:
        if self._refuse_read_only():
            return
        row = self.selected_message()
        if row is None:
            self.notify("Select a message first.", severity="warning")
            return
        self.prepare(kind, row)

    def action_resolve(self) -> None:
        self.action_act("resolve-sent")

    def action_pause(self) -> None:
        if self._refuse_read_only():
            return
        ov = self.snapshot.overview if self.snapshot else None
        if ov is None:
            self.notify("No database to pause.", severity="warning")
            return
        if ov.paused.paused:
            self.push_screen(Confirm(f"Resume sending? Every daemon starts claiming again.\n"
                                     f"Paused by {ov.paused.set_by} at {fmt.when(ov.paused.set_at)} "
                                     f"UTC: {ov.paused.reason}"),
                             lambda answer: self._confirmed(answer, "resume", None))
            return
        self.push_screen(AskReason("Pause sending? Every daemon stops claiming new messages; "
                                   "claims already in flight finish.\nWhy? (shown to everyone "
                                   "in status and the monitor)"),
                         lambda reason: self._paused(reason))

    def _paused(self, reason: str | None) -> None:
        if reason is not None:
            self.execute("pause", None, reason or "from the monitor")

    @work(group="action")
    async def prepare(self, kind: actions.Kind, row: int) -> None:
        """Check the message's current state before asking, so a refusal needs no dialog."""
        found = await source.load_message(self.db_path, row)
        m = found.message
        if m is None:
            self.notify(found.error or f"#{row} not found", severity="error")
            return
        need = actions.NEEDS_STATE[kind]
        if m.state != need:
            what = "Resolve" if kind.startswith("resolve") else _VERB[kind]
            self.notify(f"#{row} is {m.state}: {what.lower()} applies to {need} messages only.",
                        severity="warning")
            return
        if kind.startswith("resolve"):
            seen = "".join(f"\nseen in mailbox {o.source} at {fmt.when(o.at)} UTC"
                           for o in found.observed[:3])
            seen = seen or "\nnot seen in any mailbox read so far"
            self.push_screen(
                Choose(f"Resolve unknown message #{row} to {m.recipient}\n{m.mid}{seen}\n\n"
                       "sent: it arrived (e.g. found in the mailbox)\nfailed: it did not and "
                       "must not be resent\nrequeue: send again with the same Message-ID\n\n"
                       f"[dim]{fmt.lit(operator.REQUEUE_RISK)}[/dim]",
                       [("sent", "s", "Sent"), ("failed", "f", "Failed"),
                        ("requeue", "r", "Requeue")]),
                lambda answer: self._confirmed(answer, f"resolve-{answer}", row))  # type: ignore[arg-type]
        else:
            self.push_screen(Confirm(_QUESTION[kind].format(row=row, to=m.recipient)),
                             lambda answer: self._confirmed(answer, kind, row))

    def _confirmed(self, answer: str | None, kind: actions.Kind, row: int | None) -> None:
        if answer:
            self.execute(kind, row)

    @work(group="action")
    async def execute(self, kind: actions.Kind, row: int | None, reason: str = "") -> None:
        done = await actions.perform(self.db_path, kind, row, actor=self.actor, now=self.clock(),
                                     reason=reason)
        self.notify(done.text, severity="information" if done.ok else "error",
                    title="Done" if done.ok else "Refused")
        self.reload_now(report=True)
