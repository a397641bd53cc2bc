"""The header: which database, counts per state, workers, and anything alarming (the rates are
on the health line under it, ``tui.widgets.health``).

Anomalies (unknown messages, stale claims, a pause, a read problem) are in the header so an
operator sees them whatever tab is open.
"""

from __future__ import annotations

from textual.widgets import Static

from sender.report.model import DUPLICATES
from sender.store.states import STATES

from .. import fmt
from ..findings import Findings
from ..source import Snapshot

_STATE_COLOUR = {"sending": "$accent", "sent": "$success", "failed": "$error",
                 "unknown": "$warning", "cancelled": "$foreground-muted",
                 "scheduled": "$primary", "expired": "$foreground-muted"}


class StatusHeader(Static):
    """Three lines about the whole queue, rebuilt from each snapshot."""

    def show(self, path: str, snap: Snapshot | None, found: Findings | None, *, read_only: bool,
             filter_text: str) -> None:
        lines = self._lines(path, snap, found, read_only=read_only, filter_text=filter_text)
        self.update("\n".join(lines))

    def _lines(self, path: str, snap: Snapshot | None, dup: Findings | None, *, read_only: bool,
               filter_text: str) -> list[str]:
        first = f"[b]sender monitor[/b]  db [b]{fmt.lit(path)}[/b]"
        if read_only:
            first += "  [reverse $warning] READ-ONLY [/]"
        if snap is None:
            return [first, "loading…", ""]
        first += f"  [dim]at {fmt.when(snap.now)} UTC[/dim]"
        if filter_text:
            first += f"  filter [b]{fmt.lit(filter_text)}[/b]"
        ov = snap.overview
        if snap.error or ov is None:
            return [first, "[$error]⚠ cannot show the queue: see below[/]", ""]
        if ov.paused.paused:
            first += "  [reverse $error] SENDING PAUSED [/]"  # who, when, why: the banner
        counts = "  ".join(
            f"[{_STATE_COLOUR.get(s, '$foreground')}]{s}[/] [b]{ov.counts.get(s, 0):,}[/b]" for s in STATES)
        counts += f"  [dim]│[/dim] total [b]{ov.total:,}[/b]"
        w = ov.workers
        third = f"workers [$success]{w.alive} alive[/]"
        if w.presumed_dead:
            third += f", [$error]{w.presumed_dead} presumed dead[/]"
        third += f", {w.stopped} stopped"
        alarms = []
        if ov.counts.get("unknown"):
            alarms.append(f"{ov.counts['unknown']:,} unknown")
        if ov.stale_claims:
            alarms.append(f"{ov.stale_claims:,} stale claim{'s' if ov.stale_claims > 1 else ''}")
        if dup is not None and dup.available:
            found = sum(dup.count(k) for k in DUPLICATES)
            if found:
                alarms.append(f"{found} duplicate{'s' if found > 1 else ''}")
        if alarms:
            third += "  ·  [b $error]⚠ " + ", ".join(alarms) + "[/]"
        return [first, counts, third]
