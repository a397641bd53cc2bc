"""Where the monitor's data comes from: one read-only connection per refresh.

``load`` opens the queue with ``mode=ro``, calls the ``sender.monitor`` read API and returns
one immutable ``Snapshot``; ``load_findings`` does the same for the duplicate report (through
``tui.findings``), which is slower at scale and so runs on its own schedule. Any problem (no
file, not our database, a locked file, a newer schema) becomes an ``error`` sentence for the
screen, never an exception. Opening per refresh costs about a millisecond and means a file
that appears, is replaced or is unlocked later is simply picked up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sender import monitor
from sender.db import open_db
from sender.errors import SenderError

from . import findings


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh read, taken at ``now`` (the app's clock)."""

    now: float
    overview: monitor.Overview | None = None
    queue: monitor.QueueView | None = None
    in_flight: list[monitor.Claim] = field(default_factory=list)
    workers: list[monitor.Worker] = field(default_factory=list)
    log: list[monitor.Attempt] = field(default_factory=list)
    error: str | None = None
    query_ms: float = 0.0


async def load(path: str, now: float, *, log_filter: str = "") -> Snapshot:
    """Read one snapshot of every panel but Duplicates."""
    started = time.perf_counter()
    try:
        async with open_db(path, readonly=True) as db, monitor.reading(path):
            overview = await monitor.overview(db, now)
            queue = await monitor.queue_view(db, now)
            claims = await monitor.in_flight(db, now)
            workers = await monitor.workers(db, now)
            log = await monitor.send_log(db, log_filter)
    except SenderError as exc:
        return Snapshot(now=now, error=str(exc))
    except OSError as exc:
        return Snapshot(now=now, error=f"cannot open {path}: {exc}")
    return Snapshot(now=now, overview=overview, queue=queue, in_flight=claims, workers=workers,
                    log=log, query_ms=(time.perf_counter() - started) * 1000)


async def load_findings(path: str, now: float, span: float) -> findings.Findings:
    """The duplicate report over the last ``span`` seconds (see ``tui.findings``)."""
    try:
        async with open_db(path, readonly=True) as db, monitor.reading(path):
            return await findings.load(db, now, span)
    except SenderError as exc:
        return findings.Findings(span, False, note=str(exc))
    except OSError as exc:
        return findings.Findings(span, False, note=f"cannot open {path}: {exc}")


@dataclass(frozen=True)
class Detail:
    message: monitor.MessageDetail | None
    error: str | None = None


async def load_message(path: str, row_id: int) -> Detail:
    try:
        async with open_db(path, readonly=True) as db, monitor.reading(path):
            found = await monitor.message(db, row_id)
    except SenderError as exc:
        return Detail(None, str(exc))
    except OSError as exc:
        return Detail(None, f"cannot open {path}: {exc}")
    if found is None:
        return Detail(None, f"message #{row_id} is not in the queue")
    return Detail(found)
