"""The monitor's read API: bounded, indexed queries returning dataclasses.

The TUI (``tui/``) shows what these functions return and never runs SQL itself. Every query
here has a ``LIMIT`` or walks a partial index whose size is bounded by activity (rows in
flight, sends in the last minute), never by the size of the queue, so one refresh stays cheap
at a million rows. Counts that could grow with the queue are capped and say so, except the
per-campaign counts of the scheduled messages, which are exact: one walk of an index of the
scheduled messages, read from the index alone (``messages_campaign_due``).

SQLite errors raised while reading (a locked file, a file replaced underneath us) are
translated here into ``StoreError`` with a readable reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..config import Settings
from . import counts, dialect, flags, reports
from .counts import DEAD_CUT_SQL, HEARTBEAT_MISSES, WorkerCounts, worker_of_token
from .engine import Store
from .states import PRIORITIES

LOG_LIMIT = 200
LOG_SCAN = 20_000       # a substring or status filter looks at this many recent attempts
QUEUE_LIMIT = 100
DUE_COUNT_CAP = 100_000  # "due now" stops counting here (a covering index walk)
INFLIGHT_LIMIT = 200
WORKER_LIMIT = 100
WORKER_HISTORY = 86_400.0
DETAIL_LIMIT = 100
# Presumed dead after three missed heartbeats at the default interval (workers do not record
# theirs): 15 s, where ``status`` waits a minute.
WORKER_DEAD_AFTER = HEARTBEAT_MISSES * Settings.heartbeat


@dataclass(frozen=True, slots=True)
class Overview:
    """The header: counts per state, recent send rate, workers, the pause flag."""

    counts: dict[str, int]
    sent_last_minute: int
    stale_claims: int
    workers: WorkerCounts
    paused: flags.PauseState

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    row: int
    recipient: str
    campaign: str
    due_at: float
    priority: int
    attempts: int
    note: str | None  # why a policy deferred it, else the last reply


@dataclass(frozen=True, slots=True)
class CampaignQueue:
    campaign: str
    due: int
    scheduled: int
    oldest_due_at: float
    paused: str | None


@dataclass(frozen=True, slots=True)
class QueueView:
    """Scheduled messages in claim order (priority, due time, id).

    ``due_now`` stops counting at ``due_cap`` (``due_capped``); the per-campaign counts are
    exact, every campaign with a scheduled message, as of ``campaigns_at`` (None: not read).
    """

    due_now: int
    due_capped: bool
    oldest_due: QueuedMessage | None
    next_due: QueuedMessage | None
    messages: list[QueuedMessage]
    campaigns: list[CampaignQueue] | None
    campaigns_at: float | None = None


@dataclass(frozen=True, slots=True)
class InFlight:
    """One message in state ``sending``; ``stale`` once its lease has run out."""

    row: int
    recipient: str
    campaign: str
    worker: str
    attempt: int
    claimed_at: float
    lease_until: float
    stale: bool


@dataclass(frozen=True, slots=True)
class Worker:
    id: int
    name: str
    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    status: str  # alive | stopped | presumed dead
    in_flight: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One SendLog row."""

    id: int
    row: int  # the queue row the attempt was for
    mid: str
    recipient: str
    campaign: str
    attempt: int
    worker: str
    status: str
    claimed_at: float
    finished_at: float | None
    smtp_code: int | None
    smtp_reply: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class MessageDetail:
    row: int
    state: str
    recipient: str
    recipient_name: str | None
    campaign: str
    mid: str
    dedupe_key: str
    subject: str
    from_addr: str
    due_at: float
    attempts: int
    worker: str | None
    lease_until: float | None
    last_reply: str | None
    created_at: float
    updated_at: float
    history: list[Attempt] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)


async def overview(db: Store, now: float) -> Overview:
    states = await counts.state_counts(db)
    rate = await db.fetchone(
        "SELECT count(*) FROM messages WHERE state = 'sent' AND updated_at >= ?", (now - 60.0,))
    stale = await reports.count_stale_claims(db, now)
    workers = await counts.worker_counts(db, now, WORKER_DEAD_AFTER)
    paused = await flags.pause_state(db)
    return Overview(counts=states, sent_last_minute=rate[0] if rate else 0,
                    stale_claims=stale, workers=workers, paused=paused)


_QUEUED = ("SELECT m.id, r.email, c.name, m.due_at, m.priority, m.attempts, "
           "       coalesce(m.defer_reason, m.last_reply) "
           "FROM messages m {due_index} JOIN recipients r ON r.id = m.recipient_id "
           "JOIN campaigns c ON c.id = m.campaign_id WHERE m.state = 'scheduled' ")


async def queue_view(db: Store, now: float, limit: int = QUEUE_LIMIT,
                     due_cap: int = DUE_COUNT_CAP, campaigns: bool = True) -> QueueView:
    """Walks the ``messages_due`` partial index only, a bounded number of entries.

    The index leads with the priority, so "oldest due" and "next" are one seek per priority.
    ``INDEXED BY`` keeps the plan fixed: without ``ANALYZE`` statistics SQLite may otherwise
    prefer ``messages_state_updated`` and sort every scheduled row.
    """
    queued = _QUEUED.format(due_index=dialect.indexed(db, "messages_due"))
    rows = await db.fetchall(queued + "ORDER BY m.priority, m.due_at, m.id LIMIT ?", (limit,))
    due = await db.fetchone(
        f"SELECT count(*) FROM (SELECT 1 FROM messages {dialect.indexed(db, 'messages_due')} "
        f"WHERE state = 'scheduled' AND priority IN {tuple(PRIORITIES.values())} AND due_at <= ? LIMIT ?) AS due",
        (now, due_cap + 1))
    due_now = due[0] if due else 0
    oldest: list[QueuedMessage] = []
    upcoming: list[QueuedMessage] = []
    for prio in PRIORITIES.values():
        for found, test in ((oldest, "<="), (upcoming, ">")):
            row = await db.fetchone(queued + f"AND m.priority = ? AND m.due_at {test} ? "
                                    "ORDER BY m.due_at, m.id LIMIT 1", (prio, now))
            if row is not None:
                found.append(QueuedMessage(*row))
    return QueueView(due_now=min(due_now, due_cap), due_capped=due_now > due_cap,
                     oldest_due=min(oldest, key=lambda m: (m.due_at, m.row), default=None),
                     next_due=min(upcoming, key=lambda m: (m.due_at, m.row), default=None),
                     messages=[QueuedMessage(*r) for r in rows],
                     campaigns=await campaign_queues(db, now) if campaigns else None,
                     campaigns_at=now if campaigns else None)


_CAMPAIGN_QUEUES = """
SELECT c.name, q.due, q.scheduled, q.oldest, c.paused
  FROM (SELECT campaign_id, coalesce(sum(due_at <= :now), 0) AS due, count(*) AS scheduled,
               min(due_at) AS oldest
          FROM messages {campaign_due_index}
         WHERE state = 'scheduled' GROUP BY campaign_id) q
  JOIN campaigns c ON c.id = q.campaign_id
 ORDER BY q.oldest, c.name
"""


async def campaign_queues(db: Store, now: float) -> list[CampaignQueue]:
    """Every campaign with scheduled messages: how many, how many due, the oldest due time.

    Exact, not a sample: one walk of ``messages_campaign_due`` (campaign, state, due time; the
    scheduled messages only), read from the index alone, one entry per scheduled message and
    no table row. ``INDEXED BY``: without statistics SQLite prefers ``messages_state_updated``
    and reads every scheduled row (113 ms against 13 ms at a million rows, 40,000 scheduled).
    The cost grows with the scheduled messages (280 ms for a million), so the monitor reads it
    less often when it is slow (``tui.app``)."""
    queues = _CAMPAIGN_QUEUES.format(campaign_due_index=dialect.indexed(db, "messages_campaign_due"))
    return [CampaignQueue(*r) for r in await db.fetchall(queues, {"now": now})]


async def in_flight(db: Store, now: float, limit: int = INFLIGHT_LIMIT) -> list[InFlight]:
    """Claims in ``sending``, lease running out first (so stale ones lead)."""
    rows = await db.fetchall(
        "SELECT m.id, r.email, c.name, coalesce(m.worker, '?'), m.attempts + 1, m.updated_at, "
        "       m.lease_until "
        f"FROM messages m {dialect.indexed(db, 'messages_lease')} JOIN recipients r ON r.id = m.recipient_id "
        "JOIN campaigns c ON c.id = m.campaign_id "
        "WHERE m.state = 'sending' ORDER BY m.lease_until, m.id LIMIT ?", (limit,))
    return [InFlight(row=r[0], recipient=r[1], campaign=r[2], worker=r[3], attempt=r[4],
                  claimed_at=r[5], lease_until=r[6] or 0.0, stale=(r[6] or 0.0) < now)
            for r in rows]


async def workers(db: Store, now: float, dead_after: float = WORKER_DEAD_AFTER,
                  limit: int = WORKER_LIMIT) -> list[Worker]:
    """Workers with a heartbeat in the last day, and any worker holding a claim, most recent
    heartbeat first.

    Every ``run --once`` registers a worker, so the table grows with each cron run: it is read
    through ``workers_heartbeat`` and by primary key, never scanned. A claim token starts with
    the id of the worker that made it, which finds the holders of claims however old.
    """
    busy = {r[0]: r[1] for r in await db.fetchall(
        f"SELECT {worker_of_token('claim_token')}, count(*) "
        f"FROM messages {dialect.indexed(db, 'messages_lease')} WHERE state = 'sending' GROUP BY 1")}
    rows = await db.fetchall(
        f"SELECT id, name, pid, host, started_at, heartbeat_at, stopped_at, heartbeat_at < {DEAD_CUT_SQL} FROM workers "
        "WHERE id IN (SELECT id FROM workers WHERE heartbeat_at >= :since "
        "             ORDER BY heartbeat_at DESC LIMIT :limit) "
        f"   OR id IN ({dialect.ids(db, ':busy')}) "
        "ORDER BY heartbeat_at DESC, id DESC LIMIT :limit",
        {"since": now - WORKER_HISTORY, "limit": limit, "busy": json.dumps(list(busy)), "now": now,
         "dead_after": dead_after, "misses": HEARTBEAT_MISSES})
    out = []
    for r in rows:
        if r[6] is not None:
            status = "stopped"
        elif r[7]:
            status = "presumed dead"
        else:
            status = "alive"
        out.append(Worker(id=r[0], name=r[1], pid=r[2], host=r[3], started_at=r[4],
                          heartbeat_at=r[5], stopped_at=r[6], status=status,
                          in_flight=busy.get(r[0], 0)))
    return out


_ATTEMPT_COLUMNS = ("id, message_id, mid, recipient, campaign, attempt, worker, status, "
                    "claimed_at, finished_at, smtp_code, smtp_reply")


async def send_log(db: Store, text: str = "", limit: int = LOG_LIMIT,
                   scan: int = LOG_SCAN) -> list[Attempt]:
    """Recent attempts, newest first, optionally filtered.

    ``text`` matches a recipient or Message-ID exactly (through their indexes, at any age), a
    message row id (``123`` or ``#123``), or, among the ``scan`` most recent attempts, a status
    name or a fragment of a recipient or Message-ID.
    """
    text = text.strip()
    if not text:
        rows = await db.fetchall(
            f"SELECT {_ATTEMPT_COLUMNS} FROM send_log ORDER BY id DESC LIMIT ?", (limit,))
        return [Attempt(*r) for r in rows]
    top = await db.fetchone("SELECT coalesce(max(id), 0) FROM send_log")
    floor = (top[0] if top else 0) - scan
    digits = text.removeprefix("#")
    # ASCII digits only ("²".isdigit() is true, int() refuses it) and within SQLite's 64-bit integers.
    row = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 18 else -1
    mid = text if text.startswith("<") else f"<{text}>"
    rows = await db.fetchall(
        f"SELECT {_ATTEMPT_COLUMNS} FROM send_log WHERE id IN ("
        "  SELECT id FROM send_log WHERE message_id = :row"
        "  UNION SELECT id FROM send_log WHERE recipient = :text"
        "  UNION SELECT id FROM send_log WHERE mid = :mid"
        "  UNION SELECT id FROM send_log WHERE id > :floor AND (status = :lower"
        "        OR recipient LIKE :like ESCAPE '\\' OR mid LIKE :like ESCAPE '\\')"
        ") ORDER BY id DESC LIMIT :limit",
        {"row": row, "text": text, "mid": mid, "floor": floor, "lower": text.lower(),
         "like": "%" + _escape_like(text) + "%", "limit": limit})
    return [Attempt(*r) for r in rows]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def message(db: Store, row_id: int, limit: int = DETAIL_LIMIT) -> MessageDetail | None:
    """One message with its attempts (oldest first) and the operator actions taken on it."""
    r = await db.fetchone(
        "SELECT m.id, m.state, r.email, coalesce(b.to_name, r.name), c.name, m.message_id, "
        "       m.dedupe_key, coalesce(b.subject, ''), coalesce(b.from_addr, ''), m.due_at, "
        "       m.attempts, m.worker, m.lease_until, m.last_reply, m.created_at, m.updated_at "
        "FROM messages m JOIN recipients r ON r.id = m.recipient_id "
        "JOIN campaigns c ON c.id = m.campaign_id "
        "LEFT JOIN message_bodies b ON b.message_id = m.id WHERE m.id = ?", (row_id,))
    if r is None:
        return None
    history = [Attempt(*a) for a in await db.fetchall(
        f"SELECT {_ATTEMPT_COLUMNS} FROM send_log WHERE message_id = ? ORDER BY id LIMIT ?",
        (row_id, limit))]
    audit = [AuditEntry(*a) for a in await db.fetchall(
        "SELECT at, actor, action, detail FROM audit WHERE message_id = ? ORDER BY id LIMIT ?",
        (row_id, limit))]
    return MessageDetail(
        row=r[0], state=r[1], recipient=r[2], recipient_name=r[3], campaign=r[4], mid=r[5],
        dedupe_key=r[6], subject=r[7], from_addr=r[8], due_at=r[9], attempts=r[10], worker=r[11],
        lease_until=r[12], last_reply=r[13], created_at=r[14], updated_at=r[15],
        history=history, audit=audit)
