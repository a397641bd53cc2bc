"""The read path: bounded, indexed queries for ``status``, ``report`` and the monitor.

Everything here returns plain dataclasses or dicts and runs on a read-only connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import dialect
from .engine import Store
from .states import ATTEMPTED_SQL, STATES

WORKER_DEAD_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    alive: int
    stopped: int
    presumed_dead: int


async def state_counts(db: Store) -> dict[str, int]:
    """Messages per state, from the trigger-maintained counters (O(1) at any queue size)."""
    counts = {state: 0 for state in STATES}
    for state, n in await db.fetchall("SELECT state, n FROM state_counts"):
        counts[state] = n
    return counts


HEARTBEAT_MISSES = 3  # a worker is presumed dead after this many missed heartbeats of its own
# A worker is presumed dead once its last heartbeat is older than ``dead_after`` or, for one with
# a longer --heartbeat, than three of its own intervals.
DEAD_CUT_SQL = ":now - max(:dead_after, :misses * coalesce(heartbeat_every, 0))"


def worker_of_token(column: str) -> str:
    """SQL for the id of the worker that made the claim token in ``column`` (a token is
    ``<worker id>.<random>``; ``journal.worker_of`` is the same rule in Python)."""
    return f"CAST(substr({column}, 1, instr({column}, '.') - 1) AS INTEGER)"


async def worker_counts(db: Store, now: float, dead_after: float = WORKER_DEAD_AFTER) -> WorkerCounts:
    """Workers not stopped (alive or presumed dead), and those stopped in the last day.

    Both halves are index probes (``workers_running``, ``workers_heartbeat``): a cron line adds a
    worker row per run, and this must not read them all.
    """
    running = await db.fetchone(
        f"SELECT coalesce(sum(heartbeat_at >= {DEAD_CUT_SQL}), 0), coalesce(sum(heartbeat_at < {DEAD_CUT_SQL}), 0) "
        f"FROM workers {dialect.pick(db, sqlite='INDEXED BY workers_running', postgres='')} WHERE stopped_at IS NULL",
        {"now": now, "dead_after": dead_after, "misses": HEARTBEAT_MISSES})
    stopped = await db.fetchone(
        "SELECT count(*) FROM workers WHERE heartbeat_at >= :since AND stopped_at IS NOT NULL",
        {"since": now - 86400})
    assert running is not None and stopped is not None
    return WorkerCounts(alive=running[0], stopped=stopped[0], presumed_dead=running[1])


async def deferred_counts(db: Store) -> dict[str, int]:
    """Scheduled messages a sending policy pushed back, by rule (window, recipient-cap, rate, daily-cap)."""
    return {r[0]: r[1] for r in await db.fetchall(
        "SELECT defer_reason, count(*) FROM messages "
        "WHERE state = 'scheduled' AND defer_reason IS NOT NULL GROUP BY defer_reason")}


async def sender_budgets(db: Store, rate: tuple[int, float] | None, daily_cap: int | None,
                         now: float) -> dict[str, dict[str, int]]:
    """What each From account may still send now under ``--rate`` and ``--daily-cap``."""
    if rate is None and daily_cap is None:
        return {}
    rate_period = rate[1] if rate else 0.0
    rows = await db.fetchall(
        "SELECT sender, sum(claimed_at > :rate_since), count(*) FROM send_log "
        f"WHERE claimed_at > :day_since AND status IN {ATTEMPTED_SQL} "
        "GROUP BY sender", {"rate_since": now - rate_period, "day_since": now - 86400})
    out: dict[str, dict[str, int]] = {}
    for sender, in_rate, in_day in rows:
        budget: dict[str, int] = {}
        if rate is not None:
            budget["rate_remaining"] = max(0, rate[0] - in_rate)
        if daily_cap is not None:
            budget["daily_remaining"] = max(0, daily_cap - in_day)
        out[sender] = budget
    return out
