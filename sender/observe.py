"""Observation: what actually arrived in a mailbox, stored once per copy and recipient.

The report compares these rows with the SendLog. Reading and parsing live in
``sender.mailreader``; this module counts what was odd, traces each copy back to its queue row,
and stores it. Re-reading a mailbox adds nothing (see ``0002_observations`` in ``schema``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import feedback
from .feedback import Rules
from .mailreader import MailSource, Parsed, RawMessage, parse_head
from .message import row_of
from .store import feedback as feedback_rows
from .store import observations
from .store.engine import Store

log = logging.getLogger(__name__)

_NO_RULES = Rules()
BATCH = 500
TRACE_SLACK = 900.0  # a copy whose Message-ID names no row traces to a send this close in time


@dataclass
class ObserveStats:
    """What one pass over a mailbox found. ``added`` counts new (copy, recipient) rows."""

    source: str
    messages: int = 0
    added: int = 0
    known: int = 0
    no_message_id: int = 0
    no_date: int = 0
    bad_date: int = 0
    no_recipient: int = 0
    traced: int = 0
    unsubscribed: int = 0
    bounced: int = 0
    delayed: int = 0
    complaints: int = 0
    unmatched_reports: int = 0
    seconds: float = 0.0
    found: set[str] = field(default_factory=set)

    def summary(self) -> str:
        problems = [f"{n} {what}" for n, what in (
            (self.no_message_id, "without Message-ID"), (self.no_date, "without Date"),
            (self.bad_date, "with a malformed Date"), (self.no_recipient, "without recipient"))
            if n]
        text = (f"observed {self.messages} messages in {self.source}: {self.added} new "
                f"observations, {self.known} already stored ({self.seconds:.1f}s)")
        reports = [f"{n} {what}" for n, what in (
            (self.bounced, "bounce(s)"), (self.delayed, "delay notice(s)"), (self.complaints, "complaint(s)"),
            (self.unmatched_reports, "report(s) matching no row")) if n]
        if reports:
            text += "; reports: " + ", ".join(reports)
        if self.unsubscribed:
            text += f"; {self.unsubscribed} unsubscribe repl{'y' if self.unsubscribed == 1 else 'ies'} applied"
        return text + (f"; {', '.join(problems)}" if problems else "")


@dataclass(frozen=True, slots=True)
class _Pending:
    raw: RawMessage
    parsed: Parsed


async def observe(db: Store, mailbox: MailSource, *, now: float,
                  progress: Callable[[int], None] | None = None, batch: int = BATCH,
                  watch: frozenset[str] = frozenset(), rules: Rules = _NO_RULES) -> ObserveStats:
    """Store every copy in ``mailbox`` once; return counts, and in ``found`` which Message-IDs
    of ``watch`` this mailbox holds. Commits every ``batch`` messages. With the unsubscribe
    ``rules.secret``, a reply whose Subject carries a valid token (the List-Unsubscribe mailto link)
    suppresses its address; bounces and complaints are applied by ``sender.store.feedback``
    (and not stored as observations)."""
    started = time.monotonic()
    stats = ObserveStats(mailbox.source)
    await observations.begin_scan(db)
    pending: list[_Pending] = []
    try:
        for raw in mailbox.messages():
            pending.append(_Pending(raw, parse_head(raw.head)))
            if len(pending) >= batch:
                await _store(db, pending, stats, now, watch, rules)
                if progress:
                    progress(sum(p.raw.units for p in pending))
                pending.clear()
        if pending:
            await _store(db, pending, stats, now, watch, rules)
            if progress:
                progress(sum(p.raw.units for p in pending))
    finally:
        await observations.end_scan(db)
    stats.seconds = time.monotonic() - started
    log.debug("%s", stats.summary())
    return stats


async def _store(db: Store, batch: list[_Pending], stats: ObserveStats, now: float,
                 watch: frozenset[str], rules: Rules = _NO_RULES) -> None:
    rows: list[dict[str, Any]] = []
    async with db.write():
        if rules.secret:
            stats.unsubscribed += await _unsubscribe_replies(db, batch, rules.secret, now, stats.source)
        batch = await _feedback(db, batch, stats, rules, now)
        copies = await observations.copy_ordinals(db, [p.raw.fingerprint for p in batch])
        owners = await observations.row_owners(
            db, {n for p in batch if p.parsed.mid and (n := row_of(p.parsed.mid)) is not None})
        for p, copy in zip(batch, copies, strict=True):
            parsed, raw = p.parsed, p.raw
            stats.messages += 1
            stats.no_message_id += parsed.mid is None
            stats.no_date += parsed.date_problem == "missing"
            stats.bad_date += parsed.date_problem == "malformed"
            stats.no_recipient += not parsed.recipients
            if parsed.mid is not None and parsed.mid in watch:
                stats.found.add(parsed.mid)
            at = parsed.date if parsed.date is not None else raw.delivered_at or now
            row = row_of(parsed.mid) if parsed.mid else None
            owner = owners.get(row) if row is not None else None
            for rcpt in parsed.recipients or ("",):
                traced = owner is not None and (not rcpt or owner == rcpt.lower())
                rows.append({"mid": parsed.mid, "recipient": rcpt.lower(), "raw_recipient": rcpt,
                             "date": parsed.date, "at": at, "subject": parsed.subject,
                             "source": stats.source, "observed_at": now,
                             "fingerprint": raw.fingerprint, "copy": copy,
                             "row_id": row if traced else None,
                             "traced_by": "message-id" if traced else None})
        await _trace_by_time(db, rows)
        for r in rows:
            del r["raw_recipient"]
        added = await observations.insert(db, rows)
    stats.added += added
    stats.known += len(rows) - added
    stats.traced += sum(r["row_id"] is not None for r in rows)


async def _feedback(db: Store, batch: list[_Pending], stats: ObserveStats, rules: Rules,
                    now: float) -> list[_Pending]:
    """Apply the DSN and ARF reports of ``batch``; return the other copies."""
    found: list[feedback_rows.Found] = []
    rest: list[_Pending] = []
    for p in batch:
        report = feedback.parse(p.raw.report) if p.raw.report is not None else None
        if report is None:
            rest.append(p)
        else:
            found.append(feedback_rows.Found(report, p.raw.fingerprint, rules.verp_row(p.parsed.recipients)))
    if found:
        counts = await feedback_rows.apply(db, found, rules, now, stats.source)
        stats.messages += len(found)
        stats.bounced += counts["bounced"]
        stats.delayed += counts["delayed"]
        stats.complaints += counts["complaints"]
        stats.unmatched_reports += counts["unmatched"]
    return rest


async def _unsubscribe_replies(db: Store, batch: list[_Pending], secret: str, now: float,
                               source: str) -> int:
    from . import unsubscribe
    from .store import suppressions

    entries = []
    for p in batch:
        if "unsubscribe" in p.parsed.subject.lower():
            match = unsubscribe.TOKEN.search(p.parsed.subject)
            found = unsubscribe.verify(secret, match.group()) if match else None
            if found is not None:
                entries.append((found.email, "unsubscribed"))
    return await suppressions.add_within(db, entries, source=f"reply in {source}", now=now)


async def _trace_by_time(db: Store, rows: list[dict[str, Any]]) -> None:
    """A copy whose Message-ID names no row of ours (the old system's random ids) traces to the
    SendLog entry for the same recipient closest in time, within ``TRACE_SLACK``."""
    todo = [r for r in rows if r["row_id"] is None and r["recipient"]]
    if not todo:
        return
    items = [(r["recipient"], r["raw_recipient"], r["at"]) for r in todo]
    for key, row_id in (await observations.closest_sends(db, items, TRACE_SLACK)).items():
        todo[key]["row_id"] = row_id
        todo[key]["traced_by"] = "recipient+time"


@contextlib.contextmanager
def progress_bar(mailbox: MailSource,
                 description: str = "observe") -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on a terminal; nothing when stderr is not one (cron, pipes, tests)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{description} {mailbox.path.name}", total=mailbox.total())
        yield lambda n: bar.advance(task, n)


@dataclass(frozen=True, slots=True, order=True)
class Reconciled:
    row: int
    mid: str
    recipient: str


async def reconcile(db: Store, mailbox: MailSource, *, actor: str, now: float,
                    progress: Callable[[int], None] | None = None, rules: Rules = _NO_RULES,
                    ) -> tuple[ObserveStats, list[Reconciled]]:
    """Observe ``mailbox``; ``unknown`` messages whose Message-ID it holds become ``sent``
    through ``operator.mark_found``, which writes the audit rows naming this mailbox."""
    from .store import operator

    unknown = await observations.unknown_by_mid(db)
    stats = await observe(db, mailbox, now=now, progress=progress, watch=frozenset(unknown), rules=rules)
    if not stats.found:
        return stats, []
    changed = set(await operator.mark_found(db, sorted(stats.found), actor=actor, now=now,
                                         source=mailbox.source))
    return stats, sorted(Reconciled(row, mid, rcpt) for mid, (row, rcpt) in unknown.items()
                         if row in changed)
