"""The Duplicates view's data: an adapter over ``sender.report``.

The report belongs to ``sender.report``; this adapter turns one page of it
(``report.report_page``: the findings laid end to end, ``PAGE`` at a time, with the true total of
each kind) into flat rows a table can show (kind, queue row, recipient, campaign, Message-IDs,
time, detail).

The window is the report's own ``window_for``: the last ``span`` seconds, or, when nothing
happened in them, the ``span`` ending at the newest activity (an idle queue, or sample.db
with its fixed dates), so the latest anomalies are on screen at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sender import report
from sender.report.model import ANOMALIES, LIMIT
from sender.store.engine import Store

from . import fmt

PAGE = LIMIT


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    row: int | None
    recipient: str
    campaign: str
    mids: tuple[str, ...]
    at: float | None
    detail: str


@dataclass(frozen=True)
class Findings:
    span: float
    available: bool
    since: float = 0.0
    until: float = 0.0
    anchored: bool = False
    rows: list[Finding] = field(default_factory=list)
    truncated: tuple[str, ...] = ()
    note: str = ""
    mailboxes: dict[str, float] = field(default_factory=dict)  # source -> last read
    totals: dict[str, int] = field(default_factory=dict)  # true count per kind
    offset: int = 0  # of this page's first row among all findings, kinds end to end

    def count(self, kind: str) -> int:
        """The true number of findings of ``kind``, on this page or not."""
        return self.totals.get(kind, self.shown(kind))

    def shown(self, kind: str) -> int:
        return sum(1 for f in self.rows if f.kind == kind)

    @property
    def total(self) -> int:
        return sum(self.count(kind) for kind in ANOMALIES)

    def spans(self) -> list[tuple[str, int, int]]:
        """Each kind on this page with its first and last position among that kind (1-based)."""
        out, start = [], 0
        for kind in ANOMALIES:
            first = max(self.offset - start, 0) + 1
            if self.shown(kind):
                out.append((kind, first, first + self.shown(kind) - 1))
            start += self.count(kind)
        return out


async def load(db: Store, now: float, span: float, offset: int = 0) -> Findings:
    window = await report.window_for(db, span, now)
    result = await report.report_page(db, window, now, offset=offset, limit=PAGE)
    rows = [_finding(kind, item, now) for kind in ANOMALIES for item in getattr(result, kind)]
    return Findings(span, True, since=window.since, until=window.until, anchored=window.anchored,
                    rows=rows, truncated=tuple(result.truncated), totals=dict(result.counts),
                    offset=result.offset)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _finding(kind: str, item: Any, now: float) -> Finding:
    """One report item as a row; every kind has a recipient and at least one Message-ID."""
    campaign = getattr(item, "campaign", None) or ""
    if kind == "ghosts":
        detail = f"{_plural(item.copies, 'copy')} observed, never logged"
        if item.row is not None:
            detail += (f"; row #{item.row} ({item.row_state}) was logged as "
                       f"{item.logged_mid}")
        return Finding(kind, item.row, item.recipient, campaign, (item.mid,), item.at,
                       detail)
    if kind == "repeated_message_ids":
        detail = f"{item.copies} copies in one mailbox; attempts: {', '.join(item.attempts) or '-'}"
        return Finding(kind, item.row, item.recipient, campaign, (item.mid,),
                       item.first_at, detail)
    if kind == "multi_sends":
        seen = item.mids
        rows = [s.row for s in seen if s.row is not None]
        logged = sum(s.logged for s in seen)
        detail = (f"{len(seen)} distinct Message-IDs: {logged} logged, "
                  f"{sum(1 for s in seen if s.observed)} observed")
        return Finding(kind, rows[0] if rows else None, item.recipient, campaign,
                       tuple(s.mid for s in seen), item.first_at, detail)
    if kind == "unknown":
        detail = item.reason + ("; seen in a mailbox: reconcile settles it" if item.observed
                                else "")
        return Finding(kind, item.row, item.recipient, campaign, (item.mid,), item.since,
                       detail)
    if kind == "stale_claims":
        beat = (f"last heartbeat {fmt.ago(item.heartbeat_at, now)}"
                if item.heartbeat_at is not None else "worker unknown")
        detail = (f"lease expired {fmt.ago(item.lease_until, now)}; worker "
                  f"{item.worker or '?'} {'stopped' if item.worker_stopped else beat}")
        return Finding(kind, item.row, item.recipient, campaign, (item.mid,),
                       item.claimed_at, detail)
    return Finding(kind, item.row, item.recipient, campaign, (item.mid,), item.sent_at,
                   f"logged sent ({item.reply}) but not in the mailbox")
