"""The Queue, In flight, Workers and Log tabs: a summary line over a table each.

Every panel has ``show(snapshot, needle)``, where ``needle`` is the ``/`` filter (the Log
applies it in SQL, through ``sender.monitor.send_log``; the others filter their own rows), and
a ``table`` whose cursor says which message the action keys act on.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from .. import fmt
from ..source import Snapshot
from .table import Row, RowsTable, tone


class Panel(Vertical):
    """Base: a summary ``Static`` and the main table."""

    COLUMNS: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static(classes="summary")
        yield RowsTable(self.COLUMNS, id=f"{self.id}-table")

    @property
    def table(self) -> RowsTable:
        return self.query_one(RowsTable)

    def summary(self, text: str) -> None:
        self.query_one(".summary", Static).update(text)

    def show(self, snap: Snapshot, needle: str = "") -> None:
        raise NotImplementedError


class QueuePanel(Panel):
    COLUMNS = ("#", "Recipient", "Campaign", "Prio", "Due", "", "Tries", "Note")
    _PRIORITY: ClassVar[dict[int, str]] = {0: "high", 1: "normal", 2: "low"}

    def compose(self) -> ComposeResult:
        yield Static(classes="summary")
        yield RowsTable(("Campaign", "Due now", "Scheduled", "Oldest due", "Paused"),
                        id="campaigns")
        yield RowsTable(self.COLUMNS, id="queue-table")

    @property
    def table(self) -> RowsTable:
        return self.query_one("#queue-table", RowsTable)

    def show(self, snap: Snapshot, needle: str = "") -> None:
        q, now = snap.queue, snap.now
        if q is None:
            return
        parts = [f"Due now [b]{q.due_now:,}{'+' if q.due_capped else ''}[/b]"]
        if (oldest := q.oldest_due) is not None:
            parts.append(f"oldest due [b]#{oldest.id}[/b] {fmt.lit(oldest.recipient)} "
                         f"({fmt.ago(oldest.due_at, now)})")
        if (nxt := q.next_due) is not None:
            parts.append(f"next [b]#{nxt.id}[/b] {fmt.lit(nxt.recipient)} "
                         f"{fmt.ago(nxt.due_at, now)}")
        if not q.messages:
            parts.append("nothing scheduled")
        sample = (f"\n[dim]campaign counts cover the first {q.sampled:,} messages in claim "
                  "order[/dim]" if q.sample_capped else "")
        self.summary("  ·  ".join(parts) + sample)
        campaigns = self.query_one("#campaigns", RowsTable)
        campaigns.fill([
            Row(c.campaign, None, (c.campaign, f"{c.due:,}", f"{c.scheduled:,}",
                                   fmt.ago(c.oldest_due_at, now),
                                   tone(campaigns, c.paused, "error") if c.paused else ""))
            for c in q.campaigns], needle)
        self.table.fill([
            Row(str(m.id), m.id, (str(m.id), m.recipient, m.campaign,
                                  self._PRIORITY.get(m.priority, str(m.priority)),
                                  fmt.when(m.due_at),
                                  tone(self.table, fmt.ago(m.due_at, now),
                                       "warning" if m.due_at <= now else "foreground"),
                                  str(m.attempts), fmt.short(m.note, 40)))
            for m in q.messages], needle)


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
            rows.append(Row(str(c.id), c.id, (str(c.id), c.recipient, c.campaign, c.worker,
                                              str(c.attempt), fmt.ago(c.claimed_at, snap.now),
                                              lease)))
        self.table.fill(rows, needle)


class WorkersPanel(Panel):
    COLUMNS = ("Name", "PID", "Host", "Started", "Heartbeat", "Status", "In flight")
    _TONE: ClassVar[dict[str, str]] = {
        "alive": "success", "stopped": "foreground-muted", "presumed dead": "error"}

    def show(self, snap: Snapshot, needle: str = "") -> None:
        alive = sum(w.status == "alive" for w in snap.workers)
        self.summary(f"[b]{alive}[/b] alive of {len(snap.workers)} listed: seen in the last day "
                     "or holding a claim  ·  presumed dead: no heartbeat for 60s, never stopped")
        self.table.fill([
            Row(str(w.id), None, (w.name, str(w.pid), w.host, fmt.when(w.started_at),
                                  fmt.ago(w.heartbeat_at, snap.now),
                                  tone(self.table, w.status, self._TONE[w.status],
                                       bold=w.status != "stopped"),
                                  str(w.in_flight)))
            for w in snap.workers], needle)


class LogPanel(Panel):
    COLUMNS = ("Attempt", "#", "Claimed", "Status", "Recipient", "Campaign", "Worker", "Try",
               "SMTP", "Message-ID")
    _TONE: ClassVar[dict[str, str]] = {"sent": "success", "failed": "error", "unknown": "warning",
                                       "sending": "accent", "retry": "warning"}

    def show(self, snap: Snapshot, needle: str = "") -> None:
        shown = f"{len(snap.log)} most recent attempt(s)"
        self.summary(f"{shown} matching [b]{fmt.lit(needle)}[/b] (recipient, Message-ID, #row or "
                     "status)" if needle else f"{shown}, newest first  ·  [b]/[/b] to filter")
        self.table.fill([
            Row(str(a.id), a.message, (
                str(a.id), str(a.message), fmt.when(a.claimed_at),
                tone(self.table, a.status, self._TONE.get(a.status, "foreground")),
                a.recipient, a.campaign, a.worker, str(a.attempt),
                fmt.short(f"{a.smtp_code or ''} {a.smtp_reply or ''}".strip(), 30), a.mid))
            for a in snap.log])
