"""Health at a glance: attempts per minute by outcome, the commonest error, pauses and pace.

Everything is read from SendLog through ``send_log_claimed`` over the last ``SPARK_MINUTES``
minutes (bounded by activity, not by the queue), and from the small ``flags`` and ``workers``
tables. A "failure storm" is a last five minutes in which failed and retried attempts
outnumber sent ones (and there are at least ``STORM_MIN`` of them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import dialect, flags
from .engine import Store

SPARK_MINUTES = 30
RECENT = 300.0     # "the last 5 minutes": the commonest error, the storm test
STORM_MIN = 10
WORKER_ACTIVITY = 3600.0
OBSERVED_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Minute:
    sent: int = 0
    retried: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    minutes: list[Minute]            # oldest first, the last one is the current minute
    recent: Minute                   # the last 5 minutes
    top_error: str | None            # the commonest failure reply of the last 5 minutes
    top_error_count: int
    pause_reason: str | None         # the global pause flag, if set
    paused_by: str = ""
    paused_at: float = 0.0
    paused_campaigns: dict[str, str] = field(default_factory=dict)
    pace: dict[str, str] = field(default_factory=dict)  # flags named pace*: relay throttling
    tls_insecure: str | None = None  # the worker running with --tls-insecure, if any

    @property
    def storm(self) -> bool:
        r = self.recent
        bad = r.failed + r.retried
        return bad >= STORM_MIN and bad > r.sent

    @property
    def per_minute(self) -> Minute:
        """The last full minute (the current one is still filling)."""
        return self.minutes[-2] if len(self.minutes) > 1 else Minute()


async def health(db: Store, now: float) -> Health:
    since = now - SPARK_MINUTES * 60.0
    buckets: dict[int, dict[str, int]] = {}
    # PostgreSQL's CAST rounds where SQLite's truncates: floor() keeps the same minutes.
    minute_of = dialect.pick(db, sqlite="CAST((:now - claimed_at) / 60 AS INTEGER)",
                             postgres="CAST(floor((:now - claimed_at) / 60) AS integer)")
    for minute, status, n in await db.fetchall(
            f"SELECT {minute_of}, status, count(*) "
            f"FROM send_log {dialect.indexed(db, 'send_log_claimed')} WHERE claimed_at > :since "
            "AND claimed_at <= :now AND status IN ('sent', 'retry', 'failed', 'unknown') "
            "GROUP BY 1, 2", {"now": now, "since": since}):
        buckets.setdefault(minute, {})[status] = n
    minutes = [Minute(b.get("sent", 0), b.get("retry", 0), b.get("failed", 0) + b.get("unknown", 0))
               for b in (buckets.get(m, {}) for m in range(SPARK_MINUTES - 1, -1, -1))]
    recent_minutes = minutes[-int(RECENT // 60):]
    recent = Minute(sum(m.sent for m in recent_minutes), sum(m.retried for m in recent_minutes),
                    sum(m.failed for m in recent_minutes))
    top = await db.fetchone(
        "SELECT trim(coalesce(CAST(smtp_code AS TEXT), '') || ' ' || coalesce(smtp_reply, '')), count(*) "
        f"FROM send_log {dialect.indexed(db, 'send_log_claimed')} WHERE claimed_at > ? "
        "AND status IN ('retry', 'failed', 'unknown') GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1",
        (now - RECENT,))
    pause = await flags.pause_state(db)
    pace = await flags.pace_flags(db)
    return Health(minutes=minutes, recent=recent, top_error=top[0] if top else None,
                  top_error_count=top[1] if top else 0,
                  pause_reason=pause.reason if pause.paused else None, paused_by=pause.set_by,
                  paused_at=pause.set_at, paused_campaigns=await flags.campaign_pauses(db),
                  pace={k: _pace_text(v) for k, v in pace.items()},
                  tls_insecure=await flags.flag_owner(db, "tls_insecure"))


def _pace_text(value: str) -> str:
    """A pace flag in words: the daemon's ``Pace.to_json`` as "mail-1: 2 of 4 sessions, 1.5 s
    apart, 3 throttles (last: 421 ...)"; any other JSON object as ``key value`` pairs."""
    try:
        data = json.loads(value)
    except ValueError:
        return value
    if not isinstance(data, dict):
        return str(data)
    if {"sessions", "of"} <= data.keys():
        text = f"{data.get('worker', '?')}: {data['sessions']} of {data['of']} sessions"
        if data.get("spacing_s"):
            text += f", {data['spacing_s']} s apart"
        if data.get("throttles"):
            text += f", {data['throttles']} throttles"
        if data.get("last"):
            text += f" (last: {data['last']})"
        return text
    return ", ".join(f"{k} {v}" for k, v in data.items())


@dataclass(frozen=True, slots=True)
class WorkerActivity:
    sent: int
    failed: int


async def worker_activity(db: Store, now: float) -> dict[str, WorkerActivity]:
    """Sent and failed attempts of the last hour, per worker name."""
    return {r[0]: WorkerActivity(r[1], r[2]) for r in await db.fetchall(
        "SELECT worker, sum(status = 'sent'), sum(status IN ('failed', 'unknown')) "
        f"FROM send_log {dialect.indexed(db, 'send_log_claimed')} WHERE claimed_at > ? GROUP BY worker",
        (now - WORKER_ACTIVITY,))}


@dataclass(frozen=True, slots=True)
class Observed:
    """One copy of a message seen in a mailbox."""

    mid: str | None
    recipient: str
    source: str
    at: float
    observed_at: float


async def observed_copies(db: Store, row_id: int, mid: str,
                          limit: int = OBSERVED_LIMIT) -> list[Observed]:
    """Every copy traced to the row, or carrying its Message-ID, oldest first."""
    return [Observed(*r) for r in await db.fetchall(
        "SELECT mid, recipient, source, at, observed_at FROM observations WHERE id IN ("
        "  SELECT id FROM observations WHERE row_id = :row"
        "  UNION SELECT id FROM observations WHERE mid = :mid) ORDER BY at, id LIMIT :limit",
        {"row": row_id, "mid": mid, "limit": limit})]


async def mailboxes(db: Store, limit: int = 20) -> dict[str, float]:
    """When each mailbox was last read (``observe``/``reconcile``), by source.

    The sources are walked one index seek at a time (a skip scan of
    ``observations_source_seen``), so this costs a few seeks however many copies were read.
    """
    out: dict[str, float] = {}
    source = ""
    for _ in range(limit):
        row = await db.fetchone(
            "SELECT min(source), max(observed_at) FROM observations WHERE source = "
            "(SELECT min(source) FROM observations WHERE source > ?)", (source,))
        if row is None or row[0] is None:
            break
        source = row[0]
        out[source] = row[1]
    return out
