"""The Duplicates tab: the duplicate report over a window the operator changes with ``[``/``]``.

Findings are grouped by recipient (the recipient whose findings include a duplicate first);
within a group duplicate kinds (ghosts, repeated Message-IDs, multi-sends) come first, in the
error colour, then what needs a decision (unknown, stale claims) and what never arrived
(missing). The full explanation of the row under the cursor is wrapped in a panel below the
table, and the summary says when each mailbox was last read.

The counts are the true totals (the store counts each kind); the table holds one page of the
findings laid end to end (``tui.findings.PAGE`` rows: ghosts first, missing last), "N-M of TOTAL",
and ``n``/``N`` pages, as on the Queue's search. Grouping by recipient is within the page.
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
        return f"{n:,} {LABELS[kind] if n == 1 else PLURALS[kind]}"

    def compose(self) -> ComposeResult:
        self._by_key: dict[str, Finding] = {}
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
        """The report arrives on its own schedule (``show_findings``), with its own totals."""

    def show_findings(self, found: Findings | None, needle: str = "") -> None:
        self._needle = needle
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
        groups = fmt.plural(len({f.recipient for f in found.rows}), "recipient")
        if found.total > len(found.rows):
            found_text += f"\n{self._page(found)} ({groups})  ·  [b]n[/b]/[b]N[/b] next/previous page"
        elif found.rows:
            found_text += f"  ·  {groups}"
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


    @staticmethod
    def _page(found: Findings) -> str:
        """ "101-200 of 20,000 findings: unknown 1-100" """
        first, last = found.offset + 1, found.offset + len(found.rows)
        kinds = ", ".join(f"{PLURALS[k]} {a:,}-{b:,}" for k, a, b in found.spans())
        return f"[b]{first:,}-{last:,} of {found.total:,}[/b] findings: {kinds}"


def _grouped(rows: list[Finding]) -> list[tuple[int, Finding]]:
    """By recipient, recipients with a duplicate first; kinds in report order within one."""
    worst: dict[str, int] = {}
    for f in rows:
        worst[f.recipient] = min(worst.get(f.recipient, len(ANOMALIES)), ANOMALIES.index(f.kind))
    return sorted(enumerate(rows), key=lambda p: (worst[p[1].recipient], p[1].recipient,
                                                  ANOMALIES.index(p[1].kind), p[0]))
