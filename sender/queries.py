"""The read path: bounded, indexed queries for ``status``, ``report`` and the monitor.

Everything here returns plain dataclasses or dicts and runs on a read-only connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database
from .schema import STATES

WORKER_DEAD_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    alive: int
    stopped: int
    presumed_dead: int


async def state_counts(db: Database) -> dict[str, int]:
    """Messages per state, from the trigger-maintained counters (O(1) at any queue size)."""
    counts = {state: 0 for state in STATES}
    for state, n in await db.fetchall("SELECT state, n FROM state_counts"):
        counts[state] = n
    return counts


async def worker_counts(db: Database, now: float, dead_after: float = WORKER_DEAD_AFTER) -> WorkerCounts:
    row = await db.fetchone(
        "SELECT coalesce(sum(stopped_at IS NULL AND heartbeat_at >= :cut), 0), "
        "       coalesce(sum(stopped_at IS NOT NULL), 0), "
        "       coalesce(sum(stopped_at IS NULL AND heartbeat_at < :cut), 0) "
        "FROM workers WHERE heartbeat_at >= :since OR stopped_at IS NULL",
        {"cut": now - dead_after, "since": now - 86400})
    assert row is not None
    return WorkerCounts(alive=row[0], stopped=row[1], presumed_dead=row[2])
