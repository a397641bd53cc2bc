"""One message in full: its fields, its Message-ID, every attempt and every operator action.

Opened with Enter on any row that is about a message. The action keys of the main screen
(cancel, retry, resolve) act on the message shown here.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from sender.store.views import MessageDetail

from .. import fmt
from ..source import Detail, load_message
from ..widgets.table import Row, RowsTable, tone

_TONE = {"sent": "success", "failed": "error", "unknown": "warning", "sending": "accent",
         "retry": "warning", "scheduled": "primary"}


class DetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, path: str, row_id: int, now: float) -> None:
        super().__init__()
        self.path = path
        self.row_id = row_id
        self.now = now
        self.detail: MessageDetail | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(f"message #{self.row_id}: loading…", id="fields")
            yield Static("Attempts (SendLog)", classes="section")
            yield RowsTable(("Attempt", "Try", "Status", "Worker", "Claimed", "Finished",
                             "SMTP reply"), id="attempts")
            yield Static("Copies observed in mailboxes", classes="section")
            yield RowsTable(("Mailbox", "Date", "Read at", "Message-ID", "Recipient"),
                            id="observed")
            yield Static("Operator actions (audit)", classes="section")
            yield RowsTable(("At", "Actor", "Action", "Detail"), id="audit")
        yield Footer()

    def on_mount(self) -> None:
        self.reload(self.now)

    @work(exclusive=True, group="detail")
    async def reload(self, now: float) -> None:
        self.now = now
        self.show(await load_message(self.path, self.row_id))

    def show(self, found: Detail) -> None:
        fields = self.query_one("#fields", Static)
        m = found.message
        if m is None:
            fields.update(f"[$error]⚠ {fmt.lit(found.error or 'not found')}[/]")
            return
        self.detail = m
        state = f"[b]{m.state}[/b]"
        lease = ""
        if m.state == "sending" and m.lease_until is not None:
            lease = f"   lease {fmt.ago(m.lease_until, self.now)}"
        tries = f"failed tries counted {m.attempts}"
        if m.state == "sending":
            tries += f" (try {m.attempts + 1} in flight)"
        seen = (f"   [b $warning]seen {len(found.observed)} time(s) in a mailbox[/]"
                if found.observed else "")
        lines = [
            f"[b]Message #{m.row}[/b]   {state}   {tries}{lease}{seen}",
            f"Message-ID  [b]{fmt.lit(m.mid)}[/b]",
            f"To          {fmt.lit(m.recipient)}"
            + (f" ({fmt.lit(m.recipient_name)})" if m.recipient_name else ""),
            f"From        {fmt.lit(m.from_addr)}",
            f"Subject     {fmt.lit(m.subject)}",
            f"Campaign    {fmt.lit(m.campaign)}    dedupe key {fmt.lit(fmt.dedupe_key(m.dedupe_key))}",
            f"Due         {fmt.when(m.due_at)} UTC ({fmt.ago(m.due_at, self.now)})",
            f"Created     {fmt.when(m.created_at)} UTC   updated {fmt.when(m.updated_at)} UTC",
            f"Worker      {fmt.lit(m.worker or '-')}",
            f"Last reply  {fmt.lit(m.last_reply or '-')}",
        ]
        fields.update("\n".join(lines))
        attempts = self.query_one("#attempts", RowsTable)
        attempts.fill([
            Row(str(a.id), m.row, (str(a.id), str(a.attempt),
                                  tone(attempts, a.status, _TONE.get(a.status, "foreground")),
                                  a.worker, fmt.when(a.claimed_at), fmt.when(a.finished_at),
                                  f"{a.smtp_code or ''} {a.smtp_reply or ''}".strip() or "-"))
            for a in m.history])
        observed = self.query_one("#observed", RowsTable)
        observed.fill([
            Row(f"o{i}", m.row, (o.source, fmt.when(o.at), fmt.when(o.observed_at), o.mid or "-",
                                o.recipient))
            for i, o in enumerate(found.observed)]
            or [Row("none", m.row, ("none read so far", "-", "-", "-", "-"))])
        self.query_one("#audit", RowsTable).fill([
            Row(str(i), m.row, (fmt.when(e.at), e.actor, e.action, e.detail or ""))
            for i, e in enumerate(m.audit)] or [Row("none", m.row, ("-", "-", "none yet", ""))])
