"""The Queue, In flight, Workers and Log tabs: a summary line over a table each.

Every panel has ``show(snapshot, needle)``, where ``needle`` is its tab's ``/`` filter. The
Queue searches the whole store with it (``sender.store.search``, paged, "N of M"), the Log
through ``sender.store.views.send_log``; the others filter their own rows. Each has a ``table``
whose cursor says which message the action keys act on.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from sender.store.states import PRIORITIES

from .. import fmt
from ..source import Snapshot
from .table import FollowTable, MainTable, Row, RowsTable, tone


class Panel(Vertical):
    """Base: a summary ``Static`` and the main table."""

    COLUMNS: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static(classes="summary")
        yield MainTable(self.COLUMNS, id=f"{self.id}-table")

    @property
    def table(self) -> RowsTable:
        return self.query_one(RowsTable)

    def summary(self, text: str) -> None:
        self.query_one(".summary", Static).update(text)

    def show(self, snap: Snapshot, needle: str = "") -> None:
        raise NotImplementedError


class QueuePanel(Panel):
    COLUMNS = ("#", "Recipient", "Campaign", "Prio", "Due", "", "Tries done", "Note")
    FOUND_COLUMNS = ("#", "Recipient", "Campaign", "State", "Changed", "Due", "Tries done",
                     "Reply / note")
    # The store's sort keys of FOUND_COLUMNS, by index (``sender.store.search.ORDERS``).
    ORDER_KEYS = ("id", "recipient", "campaign", "state", "updated", "due", "attempts", "")
    _PRIORITY: ClassVar[dict[int, str]] = {n: word for word, n in PRIORITIES.items()}

    def compose(self) -> ComposeResult:
        yield Static(classes="summary")
        yield RowsTable(("Campaign", "Due now", "Scheduled", "Oldest due", "Paused"),
                        id="campaigns")
        yield MainTable(self.COLUMNS, id="queue-table")
        yield MainTable(self.FOUND_COLUMNS, id="found-table")

    @property
    def table(self) -> RowsTable:
        found = self.query_one("#found-table", RowsTable)
        return found if found.display else self.query_one("#queue-table", RowsTable)

    def show(self, snap: Snapshot, needle: str = "") -> None:
        searching = snap.search is not None or snap.search_error is not None
        found = self.query_one("#found-table", RowsTable)
        plain = self.query_one("#queue-table", RowsTable)
        campaigns = self.query_one("#campaigns", RowsTable)
        if found.display != searching:
            focused = self.app.focused in (found, plain)
            found.display, plain.display, campaigns.display = searching, not searching, not searching
            if focused:
                self.table.focus()
        if searching:
            self._show_found(snap)
        else:
            self._show_plain(snap)

    def _lists(self, snap: Snapshot) -> str:
        counts = snap.overview.counts if snap.overview else {}
        return "lists: " + "  ".join(f"[b]/{s}[/b] {counts.get(s, 0):,}"
                                     for s in counts if s not in ("sent", "sending"))

    def _show_found(self, snap: Snapshot) -> None:
        page, now = snap.search, snap.now
        if page is None:
            self.summary(f"[$error]⚠ {fmt.lit(snap.search_error)}[/]  ·  Escape clears the search")
            self.query_one("#found-table", RowsTable).fill([])
            return
        if page.offset or page.last < page.total:
            head = f"[b]{page.first:,}-{page.last:,} of {page.total_text}[/b]"
        else:
            head = f"[b]{len(page.rows):,} of {page.total_text}[/b]"
        text = (f"{head} matching [b]{fmt.lit(page.selection.describe())}[/b]  ·  "
                f"sorted by {page.order.removeprefix('-')}{' (desc)' if page.order.startswith('-') else ''}")
        if page.total > page.last or page.offset:
            text += "  ·  [b]n[/b]/[b]N[/b] next/previous page"
        if page.sort_note:
            text += f"\n[$warning]{fmt.lit(page.sort_note)}[/]"
        self.summary(text + f"\n[dim]{self._lists(snap)}[/dim]")
        table = self.query_one("#found-table", RowsTable)
        table.sorted_in_store = True
        table.fill([
            Row(str(m.row), m.row, (str(m.row), m.recipient, m.campaign,
                                  tone(table, m.state, _STATE_TONE.get(m.state, "foreground")),
                                  fmt.ago(m.updated_at, now),
                                  fmt.ago(m.due_at, now) if m.state == "scheduled" else "-",
                                  str(m.attempts), fmt.short(m.note, 60)))
            for m in page.rows])

    def _show_plain(self, snap: Snapshot, needle: str = "") -> None:
        q, now = snap.queue, snap.now
        if q is None:
            return
        parts = [f"Due now [b]{q.due_now:,}{'+' if q.due_capped else ''}[/b]"]
        if (oldest := q.oldest_due) is not None:
            parts.append(f"oldest due [b]#{oldest.row}[/b] {fmt.lit(oldest.recipient)} "
                         f"({fmt.ago(oldest.due_at, now)})")
        if (nxt := q.next_due) is not None:
            parts.append(f"next [b]#{nxt.row}[/b] {fmt.lit(nxt.recipient)} "
                         f"{fmt.ago(nxt.due_at, now)}")
        if not q.messages:
            parts.append("nothing scheduled")
        scheduled = snap.overview.counts.get("scheduled", 0) if snap.overview else 0
        parts.append(f"showing {len(q.messages):,} of {scheduled:,} scheduled in claim order")
        if q.campaigns_at is not None and q.campaigns_at < now:
            parts.append(f"campaign counts as of {fmt.ago(q.campaigns_at, now)}")
        self.summary("  ·  ".join(parts) + f"\n[dim]{self._lists(snap)}  ·  [b]/[/b] "
                     "searches every message[/dim]")
        campaigns = self.query_one("#campaigns", RowsTable)
        campaigns.fill([
            Row(c.campaign, None, (c.campaign, f"{c.due:,}", f"{c.scheduled:,}",
                                   fmt.ago(c.oldest_due_at, now),
                                   tone(campaigns, c.paused, "error") if c.paused else ""))
            for c in q.campaigns or []])
        table = self.query_one("#queue-table", RowsTable)
        table.fill([
            Row(str(m.row), m.row, (str(m.row), m.recipient, m.campaign,
                                  self._PRIORITY.get(m.priority, str(m.priority)),
                                  fmt.when(m.due_at),
                                  tone(table, fmt.ago(m.due_at, now),
                                       "warning" if m.due_at <= now else "foreground"),
                                  str(m.attempts), fmt.short(m.note, 40)))
            for m in q.messages])


_STATE_TONE = {"sending": "accent", "sent": "success", "failed": "error", "unknown": "warning",
               "scheduled": "primary", "cancelled": "foreground-muted",
               "expired": "foreground-muted"}


class InFlightPanel(Panel):
    COLUMNS = ("#", "Recipient", "Campaign", "Worker", "Try", "Claimed", "Lease")

    def show(self, snap: Snapshot, needle: str = "") -> None:
        stale = sum(c.stale for c in snap.in_flight)
        text = f"[b]{len(snap.in_flight):,}[/b] claim(s) in flight"
        if stale:
            text += (f"  ·  [b $error]{stale} stale[/]: lease expired, the worker may have sent "
                     "them; they become unknown, never resent")
        self.summary(text)
        rows = []
        for c in snap.in_flight:
            lease = (tone(self.table, f"expired {fmt.span(snap.now - c.lease_until)} ago", "error",
                          bold=True)
                     if c.stale else f"{fmt.span(c.lease_until - snap.now)} left")
            rows.append(Row(str(c.row), c.row, (str(c.row), c.recipient, c.campaign, c.worker,
                                              str(c.attempt), fmt.ago(c.claimed_at, snap.now),
                                              lease)))
        self.table.fill(rows, needle)


class WorkersPanel(Panel):
    COLUMNS = ("Name", "PID", "Host", "Started", "Heartbeat", "Status", "In flight",
               "Sent 1h", "Failed 1h", "Claims")
    _TONE: ClassVar[dict[str, str]] = {
        "alive": "success", "stopped": "foreground-muted", "presumed dead": "error"}

    def show(self, snap: Snapshot, needle: str = "") -> None:
        from sender.store.views import WORKER_DEAD_AFTER

        alive = sum(w.status == "alive" for w in snap.workers)
        dead = sum(w.status == "presumed dead" for w in snap.workers)
        text = (f"[b]{alive}[/b] alive of {len(snap.workers)} listed: seen in the last day "
                f"or holding a claim  ·  presumed dead: 3 missed heartbeats of its own ({WORKER_DEAD_AFTER:g}s "
                "at the default), never stopped")
        if dead:
            text += f"\n[b $error]⚠ {dead} presumed dead[/]: their claims become unknown when the lease ends"
        self.summary(text)
        claims: dict[str, list[int]] = {}
        for c in snap.in_flight:
            claims.setdefault(c.worker, []).append(c.row)
        rows = []
        for w in snap.workers:
            act = snap.activity.get(w.name)
            dead_row = w.status == "presumed dead"
            held = " ".join(f"#{i}" for i in claims.get(w.name, [])[:8])
            cells = [w.name, str(w.pid), w.host, fmt.when(w.started_at),
                     fmt.ago(w.heartbeat_at, snap.now), w.status, str(w.in_flight),
                     str(act.sent if act else 0), str(act.failed if act else 0), held or "-"]
            styled = tuple(tone(self.table, c, "error", bold=True) if dead_row and i in (0, 4, 5, 6, 9)
                           else tone(self.table, c, self._TONE[w.status], bold=w.status != "stopped")
                           if i == 5 else c for i, c in enumerate(cells))
            rows.append(Row(str(w.id), None, styled))
        self.table.fill(rows, needle)


class LogPanel(Panel):
    COLUMNS = ("Attempt", "#", "Claimed", "Status", "Recipient", "Campaign", "Worker", "Try",
               "SMTP", "Message-ID")
    _TONE: ClassVar[dict[str, str]] = {"sent": "success", "failed": "error", "unknown": "warning",
                                       "sending": "accent", "retry": "warning"}

    def compose(self) -> ComposeResult:
        yield Static(classes="summary")
        yield FollowTable(self.COLUMNS, id="log-panel-table")

    @property
    def follow(self) -> bool:
        return self.query_one(FollowTable).follow

    def show(self, snap: Snapshot, needle: str = "") -> None:
        from sender.store.views import LOG_SCAN

        table = self.query_one(FollowTable)
        shown = f"{len(snap.log)} most recent attempt(s)"
        mode = ("[b $success]following[/] the newest ([b]f[/b] stops)" if table.follow
                else "[b $warning]not following[/] ([b]f[/b] follows the newest)")
        if needle:
            text = (f"{shown} matching [b]{fmt.lit(needle)}[/b]: an exact recipient, Message-ID "
                    f"or #row at any age; a status or fragment among the last {LOG_SCAN:,} "
                    "attempts")
        else:
            text = f"{shown}, newest first  ·  [b]/[/b] to filter"
        self.summary(f"{text}  ·  {mode}")
        table.fill([
            Row(str(a.id), a.row, (
                str(a.id), str(a.row), fmt.when(a.claimed_at),
                tone(table, a.status, self._TONE.get(a.status, "foreground")),
                a.recipient, a.campaign, a.worker, str(a.attempt),
                fmt.short(f"{a.smtp_code or ''} {a.smtp_reply or ''}".strip(), 30), a.mid))
            for a in snap.log], keep_top=table.follow)
