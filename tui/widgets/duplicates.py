"""The Duplicates tab: the duplicate report over a window the operator changes with ``[``/``]``.

Findings are grouped by recipient (the recipient whose findings include a duplicate first);
within a group duplicate kinds (ghosts, repeated Message-IDs, multi-sends) come first, in the
error colour, then what needs a decision (unknown, stale claims) and what never arrived
(missing). The full explanation of the row under the cursor is wrapped in a panel below the
table, and the summary says when each mailbox was last read.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from sender.report.model import ANOMALIES, LABELS, PLURALS

from .. import fmt
from ..findings import Finding, Findings
from ..source import Snapshot
from .panels import Panel
from .table import MainTable, Row, tone

_TONE = {"ghosts": "error", "repeated_message_ids": "error", "multi_sends": "error",
         "unknown": "warning", "stale_claims": "warning", "missing": "warning"}


class DuplicatesPanel(Panel):
    COLUMNS = ("Recipient", "Finding", "#", "Campaign", "When", "Detail", "Message-IDs")

    def _count(self, found: Findings, kind: str) -> str:
        n = found.count(kind)
        text = f"{n} {LABELS[kind] if n == 1 else PLURALS[kind]}"
        total = self._totals.get(kind)
        if total is not None and kind in found.truncated and total > n:
            where = "Queue /unknown" if kind == "unknown" else "In flight"
            text += f" [$warning](of {total:,}; {where} lists them all)[/]"
        return text

    def compose(self) -> ComposeResult:
        self._by_key: dict[str, Finding] = {}
        self._totals: dict[str, int] = {}
        self._found: Findings | None = None
        self._needle = ""
        yield Static(classes="summary")
        yield MainTable(self.COLUMNS, id="duplicates-panel-table")
        yield Static(id="explain")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._explain()

    def _explain(self) -> None:
        key = self.table.current_key()
        f = self._by_key.get(key or "")
        box = self.query_one("#explain", Static)
        if f is None:
            box.update("")
            return
        box.update(f"[b]{fmt.lit(LABELS[f.kind])}[/b] · {fmt.lit(f.recipient)}"
                   + (f" · row #{f.row}" if f.row is not None else "")
                   + (f" · {fmt.lit(f.campaign)}" if f.campaign else "")
                   + f"\n{fmt.lit(f.detail)}\nMessage-IDs: {fmt.lit(' '.join(f.mids))}"
                   + "  [dim](Enter: every attempt and observed copy)[/dim]")

    def show(self, snap: Snapshot, needle: str = "") -> None:
        """The report arrives on its own schedule (``show_findings``); the snapshot brings the
        true totals of the kinds the report may cut short (unknown, stale claims)."""
        ov = snap.overview
        if ov is None:
            return
        totals = {"unknown": ov.counts.get("unknown", 0), "stale_claims": ov.stale_claims}
        if totals != self._totals:
            self._totals = totals
            if self._found is not None:
                self.show_findings(self._found, self._needle)

    def show_findings(self, found: Findings | None, needle: str = "") -> None:
        self._found, self._needle = found, needle
        if found is None:
            self.summary("running the report…")
            return
        head = f"Report over [b]{fmt.window(found.span)}[/b] " + fmt.lit("([ and ] change it)")
        if found.anchored:
            head += (f"  [$warning]no activity since {fmt.when(found.until)} UTC: showing the "
                     f"{fmt.window(found.span)} before it[/]")
        if not found.available:
            self.summary(f"{head}  ·  [$warning]{fmt.lit(found.note)}[/]")
            self.table.fill([])
            return
        counts = [self._count(found, k) for k in ANOMALIES if found.count(k)]
        found_text = ", ".join(counts) if counts else "[$success]nothing found[/]"
        cut = [k for k in found.truncated if k not in self._totals]
        if cut:
            found_text += (f" [$warning](the report stops at {len(found.rows)} rows for "
                           f"{', '.join(PLURALS[k] for k in cut)}: there are more)[/]")
        groups = len({f.recipient for f in found.rows})
        if groups:
            found_text += f"  ·  {fmt.plural(groups, 'recipient')}"
        boxes = "  ·  ".join(f"{fmt.lit(src)} read {fmt.ago(at, found.until or at)}"
                             for src, at in found.mailboxes.items())
        self.summary(f"{head}\n{found_text}\n[dim]mailboxes: {boxes or 'none read yet (observe or reconcile)'}[/dim]")
        ordered = _grouped(found.rows)
        self._by_key = {}
        rows = []
        last = None
        for i, f in ordered:
            key = f"{f.kind}:{f.row}:{i}"
            self._by_key[key] = f
            rows.append(Row(key, f.row, (
                f.recipient if f.recipient != last else tone(self.table, f.recipient,
                                                             "foreground-muted"),
                tone(self.table, LABELS[f.kind], _TONE[f.kind], bold=True),
                str(f.row) if f.row is not None else "-", f.campaign,
                fmt.when(f.at), fmt.short(f.detail, 70), " ".join(f.mids))))
            last = f.recipient
        self.table.fill(rows, needle)
        self._explain()


def _grouped(rows: list[Finding]) -> list[tuple[int, Finding]]:
    """By recipient, recipients with a duplicate first; kinds in report order within one."""
    worst: dict[str, int] = {}
    for f in rows:
        worst[f.recipient] = min(worst.get(f.recipient, len(ANOMALIES)), ANOMALIES.index(f.kind))
    return sorted(enumerate(rows), key=lambda p: (worst[p[1].recipient], p[1].recipient,
                                                  ANOMALIES.index(p[1].kind), p[0]))
