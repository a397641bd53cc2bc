"""The monitor application: tabs over one live snapshot of the queue, and guarded actions.

Data flow: a ``set_interval`` tick starts ``load_data``, an exclusive worker that reads one
``Snapshot`` through ``tui.source`` (read-only connection, ``sender.monitor`` queries) and
hands it to the widgets; widgets only format what they are given. A tick that finds the
previous load still running is skipped, so a slow disk delays the screen but never piles up
work. Actions go through ``tui.actions`` (``sender.admin``) after a confirmation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from . import actions, fmt, source
from .findings import KINDS, Findings
from .screens.confirm import Choose, Confirm
from .screens.detail import DetailScreen
from .screens.help import HelpScreen
from .source import Snapshot
from .widgets.duplicates import DuplicatesPanel
from .widgets.header import StatusHeader
from .widgets.panels import InFlightPanel, LogPanel, Panel, QueuePanel, WorkersPanel
from .widgets.table import RowsTable

WINDOWS = (3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0)
DEFAULT_WINDOW = 2  # 24h, the report's own default
REPORT_BACKGROUND = 30.0  # seconds between report runs while another tab is open
TABS = ("queue", "inflight", "workers", "duplicates", "log")
_DUPLICATE_KINDS = KINDS[:3]
_MAIN_VIEW_ACTIONS = frozenset(("act", "resolve", "pause", "window", "filter", "tab", "refresh",
                                "help"))

_VERB = {"cancel": "Cancel", "retry": "Retry"}
_QUESTION = {
    "cancel": "Cancel message #{row} to {to}?\nIt will never be sent.",
    "retry": "Retry failed message #{row} to {to}?\nIt goes back to scheduled with the same "
             "Message-ID and a fresh attempt budget.",
}


class FilterInput(Input):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.clear_filter", "Clear filter")]


class MonitorApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "sender monitor"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("r", "refresh", "Refresh"),
        Binding("c", "act('cancel')", "Cancel"),
        Binding("t", "act('retry')", "Retry"),
        Binding("u", "resolve", "Resolve"),
        Binding("p", "pause", "Pause/Resume"),
        Binding("left_square_bracket", "window(-1)", "Window-"),
        Binding("right_square_bracket", "window(1)", "Window+"),
        *(Binding(str(i), f"tab('{tab}')", show=False) for i, tab in enumerate(TABS, start=1)),
    ]

    def __init__(self, db_path: str, *, refresh_every: float = 1.0, read_only: bool = False,
                 clock: Callable[[], float] = time.time, actor: str | None = None) -> None:
        super().__init__()
        self.db_path = db_path
        self.refresh_every = refresh_every
        self.read_only = read_only
        self.clock = clock
        self.actor = actor or actions.default_actor()
        self.snapshot: Snapshot | None = None
        self.filter_text = ""
        self.window_index = DEFAULT_WINDOW
        self.findings: Findings | None = None
        self._loading = False
        self._reporting = False
        self._report_at = 0.0
        self._report_took = 0.0
        self._tab_chosen = False

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
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
        yield FilterInput(placeholder="filter: recipient, Message-ID, #row or status; Enter "
                          "applies, Escape clears", id="filter")
        yield Footer()

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
        if not self.query(TabbedContent):
            return  # the app is shutting down: its widgets are already gone
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
        try:
            snap = await source.load(self.db_path, self.clock(), log_filter=self.filter_text)
        finally:
            self._loading = False
        self.apply(snap)

    @work(exclusive=True, group="report")
    async def load_report(self) -> None:
        self._reporting = True
        self._report_at = time.monotonic()
        try:
            found = await source.load_findings(self.db_path, self.clock(), self.window)
        finally:
            self._reporting = False
            self._report_took = time.monotonic() - self._report_at
        if not self.query(TabbedContent):
            return  # finished after the app began shutting down
        self.findings = found
        self._show_header()
        self.query_one(DuplicatesPanel).show_findings(found, self.filter_text)
        if not self._tab_chosen:
            self._tab_chosen = True
            if any(found.count(k) for k in _DUPLICATE_KINDS):
                self.action_tab("duplicates")

    def apply(self, snap: Snapshot) -> None:
        if not self.query(TabbedContent):
            return  # finished after the app began shutting down
        self.snapshot = snap
        self._show_header()
        problem = self.query_one("#problem", Static)
        problem.display = snap.error is not None
        if snap.error is not None:
            problem.update(f"[b $error]⚠ {fmt.lit(snap.error)}[/]\n\nThe monitor keeps trying "
                           f"every {self.refresh_every:g}s. [b]q[/b] quits.")
            return
        for tab in TABS:
            self.panel(tab).show(snap, self.filter_text)
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

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys of the main view are off over a dialog, and tab keys are off over a detail."""
        if isinstance(self.screen, Choose | HelpScreen) and action in _MAIN_VIEW_ACTIONS:
            return False
        if isinstance(self.screen, DetailScreen) and action in ("tab", "filter", "window"):
            return False
        if action == "window":
            return self.active_tab == "duplicates"
        return True

    def action_window(self, step: int) -> None:
        self.window_index = max(0, min(len(WINDOWS) - 1, self.window_index + step))
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
        self._set_filter("")

    def _set_filter(self, text: str) -> None:
        self.filter_text = text
        self.query_one(FilterInput).display = False
        self.panel().table.focus()
        self._show_header()
        self.query_one(DuplicatesPanel).show_findings(self.findings, text)
        self.reload_now()

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
        kind: actions.Kind = "resume" if ov.paused.paused else "pause"
        question = ("Resume sending? Every daemon starts claiming again." if kind == "resume" else
                    "Pause sending? Every daemon stops claiming new messages;\nclaims already in "
                    "flight finish.")
        self.push_screen(Confirm(question), lambda answer: self._confirmed(answer, kind, None))

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
            self.push_screen(
                Choose(f"Resolve unknown message #{row} to {m.recipient}\n{m.mid}\n\n"
                       "sent: it arrived (e.g. found in the mailbox)\nfailed: it did not and "
                       "must not be resent\nrequeue: send again with the same Message-ID",
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
    async def execute(self, kind: actions.Kind, row: int | None) -> None:
        done = await actions.perform(self.db_path, kind, row, actor=self.actor, now=self.clock())
        self.notify(done.text, severity="information" if done.ok else "error",
                    title="Done" if done.ok else "Refused")
        self.reload_now(report=True)
