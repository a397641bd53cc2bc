"""Where the monitor's data comes from: one read-only connection per refresh.

``load`` opens the queue with ``mode=ro``, calls the ``sender.store.views`` read API and returns
one immutable ``Snapshot``; ``load_findings`` does the same for the duplicate report (through
``tui.findings``), which is slower at scale and so runs on its own schedule. Any problem (no
file, not our database, a locked file, a newer schema) becomes an ``error`` sentence for the
screen, never an exception. Opening per refresh costs about a millisecond and means a file
that appears, is replaced or is unlocked later is simply picked up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from sender.errors import SenderError, UsageError
from sender.store import health as monitor_health
from sender.store import operator as admin
from sender.store import search as monitor_search
from sender.store import views as monitor
from sender.store.engine import DbClock, open_store
from sender.store.selection import Selection

from . import findings


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh read, taken at ``now`` (the app's clock)."""

    now: float
    overview: monitor.Overview | None = None
    queue: monitor.QueueView | None = None
    in_flight: list[monitor.InFlight] = field(default_factory=list)
    workers: list[monitor.Worker] = field(default_factory=list)
    log: list[monitor.Attempt] = field(default_factory=list)
    health: monitor_health.Health | None = None
    activity: dict[str, monitor_health.WorkerActivity] = field(default_factory=dict)
    search: monitor_search.SearchPage | None = None  # the Queue tab's search, when it has one
    search_error: str | None = None  # a search text that means nothing (an unknown state...)
    error: str | None = None
    campaigns_took: float = 0.0  # seconds the per-campaign counts took, 0 when not read


@dataclass(frozen=True)
class QueueQuery:
    """What the Queue tab asks for: a search text (empty: scheduled in claim order), a page, an order."""

    text: str = ""
    offset: int = 0
    order: str = ""


async def load(path: str, now: float, *, log_filter: str = "",
               queue: QueueQuery = QueueQuery(), campaigns: bool = True, clock: DbClock | None = None) -> Snapshot:
    """Read one snapshot of every panel but Duplicates (without the per-campaign counts unless
    ``campaigns``; ``campaigns_took`` says how long they took). With ``clock`` (the queue's), it is
    measured against the database's first and ``now`` read from it."""
    search: monitor_search.SearchPage | None = None
    search_error: str | None = None
    took = 0.0
    try:
        async with open_store(path, readonly=True) as db:
            if clock is not None:
                await clock.sync(db)
                now = clock()
            overview = await monitor.overview(db, now)
            view = await monitor.queue_view(db, now, campaigns=False)
            if campaigns:
                started = time.perf_counter()
                view = replace(view, campaigns=await monitor.campaign_queues(db, now),
                               campaigns_at=now)
                took = time.perf_counter() - started
            if queue.text or queue.order:
                try:
                    search = await monitor_search.search(db, queue.text or "scheduled", now,
                                                         offset=queue.offset, order=queue.order)
                except UsageError as exc:
                    search_error = str(exc)
            claims = await monitor.in_flight(db, now)
            workers = await monitor.workers(db, now)
            log = await monitor.send_log(db, log_filter)
            health = await monitor_health.health(db, now)
            activity = await monitor_health.worker_activity(db, now)
    except SenderError as exc:
        return Snapshot(now=now, error=str(exc))
    except OSError as exc:
        return Snapshot(now=now, error=f"cannot open {path}: {exc}")
    return Snapshot(now=now, overview=overview, queue=view, in_flight=claims, workers=workers,
                    log=log, health=health, activity=activity, search=search,
                    search_error=search_error, campaigns_took=took)


async def load_findings(path: str, now: float, span: float, offset: int = 0) -> findings.Findings:
    """A page of the duplicate report over the last ``span`` seconds (see ``tui.findings``)."""
    try:
        async with open_store(path, readonly=True) as db:
            found = await findings.load(db, now, span, offset)
            return replace(found, mailboxes=await monitor_health.mailboxes(db))
    except SenderError as exc:
        return findings.Findings(span, False, note=str(exc))
    except OSError as exc:
        return findings.Findings(span, False, note=f"cannot open {path}: {exc}")


@dataclass(frozen=True)
class Detail:
    message: monitor.MessageDetail | None
    error: str | None = None
    observed: list[monitor_health.Observed] = field(default_factory=list)


async def load_message(path: str, row_id: int) -> Detail:
    try:
        async with open_store(path, readonly=True) as db:
            found = await monitor.message(db, row_id)
            observed = ([] if found is None else
                        await monitor_health.observed_copies(db, row_id, found.mid))
    except SenderError as exc:
        return Detail(None, str(exc))
    except OSError as exc:
        return Detail(None, f"cannot open {path}: {exc}")
    if found is None:
        return Detail(None, f"message #{row_id} is not in the queue")
    return Detail(found, observed=observed)


async def count_bulk(path: str, kind: admin.BulkKind, sel: Selection) -> tuple[int | None, str]:
    """How many messages a bulk action would change now, and its filter in words (or why not)."""
    try:
        async with open_store(path, readonly=True) as db:
            done = await admin.bulk(db, kind, sel, actor="", now=0.0, yes=False)
    except SenderError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot open {path}: {exc}"
    return done.count, done.filter
