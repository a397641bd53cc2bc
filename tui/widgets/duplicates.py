"""The Duplicates tab: the duplicate report over a window the operator changes with ``[``/``]``.

Duplicate kinds (ghosts, repeated Message-IDs, multi-sends) come first, in the error colour:
they are the incident this project exists to catch. Then what needs a decision (unknown,
stale claims) and what never arrived (missing).
"""

from __future__ import annotations

from .. import fmt
from ..findings import KINDS, LABELS, PLURALS, Findings
from ..source import Snapshot
from .panels import Panel
from .table import Row, tone

_TONE = {"ghosts": "error", "repeated_message_ids": "error", "multi_sends": "error",
         "unknown": "warning", "stale_claims": "warning", "missing": "warning"}


class DuplicatesPanel(Panel):
    COLUMNS = ("Finding", "#", "Recipient", "Campaign", "When", "Message-IDs", "Detail")

    def show(self, snap: Snapshot, needle: str = "") -> None:
        """Nothing to do: the report arrives on its own schedule through ``show_findings``."""

    def show_findings(self, found: Findings | None, needle: str = "") -> None:
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
        counts = [f"{found.count(k)} {LABELS[k] if found.count(k) == 1 else PLURALS[k]}"
                  for k in KINDS if found.count(k)]
        found_text = ", ".join(counts) if counts else "[$success]nothing found[/]"
        if found.truncated:
            found_text += f" [dim](first {len(found.rows)} shown)[/dim]"
        self.summary(f"{head}\n{found_text}")
        rows = []
        for i, f in enumerate(found.rows):
            rows.append(Row(f"{f.kind}:{f.row}:{i}", f.row, (
                tone(self.table, LABELS[f.kind], _TONE[f.kind], bold=True),
                str(f.row) if f.row is not None else "-", f.recipient, f.campaign,
                fmt.when(f.at), " ".join(f.mids), fmt.short(f.detail, 60))))
        self.table.fill(rows, needle)
