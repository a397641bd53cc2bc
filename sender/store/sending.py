"""The write path of the queue: enqueue, claim, outcomes, leases, workers.

The claim is the heart of the project (invariants 1 and 2): one ``BEGIN IMMEDIATE``
transaction moves due rows ``scheduled -> sending`` with a conditional ``UPDATE ... RETURNING``
and inserts their SendLog rows; it commits with ``synchronous=FULL`` before the caller may
speak SMTP about them. If the SendLog unique index refuses an insert, the claim is rolled back
(to a savepoint, so outcomes written in the same transaction survive) and the offending rows
are moved to ``unknown`` for an operator: never sent, never silently skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..journal import StartEvidence, worker_of
from ..policy import Policy
from . import claims, dialect, flags
from .claims import Claim
from .engine import Store, Tx

log = logging.getLogger(__name__)

OutcomeStatus = Literal["sent", "retry", "failed", "unknown", "released"]

# Why an outcome is what it is, beyond its status: the daemon's ``--pause-after-errors`` streak
# counts the ones in ``RELAY_ERRORS`` (the relay refused, failed or was not there, or sending broke)
# and never those the sender decided itself (a claim not started, a transaction the fence cut, a
# throttle, a message that cannot be built, a worker stopping).
Reason = Literal["delivered", "relay", "refused", "outage", "internal", "throttled", "not_started",
                 "not_delivered", "build", "stopping"]
RELAY_ERRORS: frozenset[Reason] = frozenset({"relay", "refused", "outage", "internal"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claim. ``due_at`` is used by ``retry`` and ``released``."""

    row: int
    token: str
    status: OutcomeStatus
    code: int | None = None
    reply: str = ""
    due_at: float | None = None
    mid: str = ""
    recipient: str = ""
    reason: Reason = "relay"

    @classmethod
    def of(cls, claim: Claim, status: OutcomeStatus, reason: Reason, reply: str, *,
           code: int | None = None, due_at: float | None = None) -> Outcome:
        """The outcome of ``claim`` (the one way the sender makes them)."""
        return cls(claim.row, claim.token, status, code, reply, due_at, claim.mid, claim.recipient,
                   reason)


@dataclass(frozen=True, slots=True)
class Expired:
    """A claim whose lease ran out: ``unknown``; ``scheduled`` when its worker's start journal
    proves it never began, ``sent`` when the journal holds the relay's 250 for it."""

    row: int
    mid: str
    worker: str
    state: str = "unknown"




# --- claim and outcomes ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Turn:
    """What one exchange claimed, and (when asked) the pauses in force as it committed."""

    claims: list[Claim]
    paused: bool = False
    paused_campaigns: frozenset[str] = frozenset()


async def exchange(db: Store, outcomes: Sequence[Outcome], *, worker: str, worker_id: int,
                   limit: int, lease: float, now: float, policy: Policy | None = None,
                   pause_reason: str | None = None, read_pauses: bool = False) -> Turn:
    """Record ``outcomes`` and claim up to ``limit`` due messages, in one durable transaction.

    ``pause_reason`` sets the global pause flag in the same transaction, before the claim.
    ``read_pauses`` also reports the global and campaign pauses (for claims already waiting)."""

    def work(tx: Tx) -> Turn:
        if outcomes:
            db.engine.record(tx, outcomes, now)
        if pause_reason:
            for sql, params in flags.pause_flag_statements(True, actor=worker, now=now, reason=pause_reason):
                tx.execute(sql, params)
        claimed = [] if limit <= 0 else db.engine.claim(tx, policy, worker=worker, worker_id=worker_id,
                                                        limit=limit, lease=lease, now=now)
        if not read_pauses:
            return Turn(claimed)
        return Turn(claimed, flags.globally_paused(tx), flags.paused_campaigns(tx))

    return await db.transaction(work)


async def next_due(db: Store) -> float | None:
    """When the next row a claim could take is due (None: no such row, or sending is paused)."""
    row = await db.fetchone(claims.NEXT_DUE)
    return None if row is None or row[0] is None else float(row[0])


async def claim(db: Store, *, worker: str, worker_id: int, limit: int, lease: float,
                now: float, policy: Policy | None = None) -> list[Claim]:
    turn = await exchange(db, (), worker=worker, worker_id=worker_id, limit=limit, lease=lease,
                          now=now, policy=policy)
    return turn.claims


async def record(db: Store, outcomes: Sequence[Outcome], now: float) -> None:
    await db.transaction(lambda tx: db.engine.record(tx, outcomes, now))


# The message state each outcome leads to.
STATE_OF = {"sent": "sent", "retry": "scheduled", "failed": "failed", "unknown": "unknown",
             "released": "scheduled"}


# ``+m.state``: with a usable state index the planner walked every sending *and unknown* row,
# scanning the batch for each (measured: 48 us per message at a batch of 64, growing with the
# unknown backlog); without it, each outcome finds its row by id.
_RECORD_MESSAGES = """
UPDATE messages AS m
   SET state = j.state, attempts = m.attempts + j.counts, last_reply = j.reply,
       due_at = coalesce(j.due, m.due_at), lease_until = NULL, updated_at = :now
  FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token,
               json_extract(value, '$[2]') AS state, json_extract(value, '$[3]') AS counts,
               json_extract(value, '$[4]') AS reply, json_extract(value, '$[5]') AS due
          FROM json_each(:rows)) AS j
 WHERE m.id = j.id AND m.claim_token = j.token AND +m.state IN ('sending', 'unknown')
RETURNING id
"""

# PostgreSQL: the same two statements over ``jsonb_array_elements`` (one array per outcome).
_RECORD_MESSAGES_PG = """
UPDATE messages AS m
   SET state = j.state, attempts = m.attempts + j.counts, last_reply = j.reply,
       due_at = coalesce(j.due, m.due_at), lease_until = NULL, updated_at = :now
  FROM (SELECT CAST(e->>0 AS bigint) AS id, e->>1 AS token, e->>2 AS state,
               CAST(e->>3 AS integer) AS counts, e->>4 AS reply, CAST(e->>5 AS double precision) AS due
          FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS e) AS j
 WHERE m.id = j.id AND m.claim_token = j.token AND m.state IN ('sending', 'unknown')
RETURNING m.id
"""

_RECORD_LOG_PG = """
UPDATE send_log AS s
   SET status = j.status, finished_at = :now, smtp_code = j.code, smtp_reply = j.reply
  FROM (SELECT CAST(e->>0 AS bigint) AS id, e->>1 AS token, e->>2 AS status,
               CAST(e->>3 AS integer) AS code, e->>4 AS reply
          FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS e) AS j
 WHERE s.message_id = j.id AND s.claim_token = j.token AND s.status IN ('sending', 'unknown')
"""

_RECORD_LOG = """
UPDATE send_log AS s
   SET status = j.status, finished_at = :now, smtp_code = j.code, smtp_reply = j.reply
  FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token,
               json_extract(value, '$[2]') AS status, json_extract(value, '$[3]') AS code,
               json_extract(value, '$[4]') AS reply
          FROM json_each(:rows)) AS j
 WHERE s.message_id = j.id AND s.claim_token = j.token AND s.status IN ('sending', 'unknown')
"""


def record_in(tx: Tx, outcomes: Sequence[Outcome], now: float) -> None:
    """Apply outcomes, fenced by claim token, two statements for the whole batch. A late result
    for a row that moved to ``unknown`` (lease expired) still lands: the truth wins. A result
    whose claim no longer holds the row (an operator requeued it) is logged and ignored."""
    rows = [[o.row, o.token, STATE_OF[o.status], 0 if o.status == "released" else 1, _reply(o),
             o.due_at if o.status in ("retry", "released") else None] for o in outcomes]
    update = dialect.pick(tx, sqlite=_RECORD_MESSAGES, postgres=_RECORD_MESSAGES_PG)
    applied = {r[0] for r in tx.fetchall(update, {"rows": json.dumps(rows), "now": now})}
    for o in outcomes:
        if o.row not in applied:
            log.warning("row=%s mid=%s outcome %s ignored: claim %s no longer holds the row",
                        o.row, o.mid, o.status, o.token)
    logged = [[o.row, o.token, o.status, o.code, o.reply] for o in outcomes if o.row in applied]
    if logged:
        tx.execute(dialect.pick(tx, sqlite=_RECORD_LOG, postgres=_RECORD_LOG_PG),
                   {"rows": json.dumps(logged), "now": now})


def _reply(o: Outcome) -> str:
    return f"{o.code} {o.reply}".strip() if o.code else o.reply


# --- leases and workers ----------------------------------------------------------------------

def extend_leases(tx: Tx, tokens: Iterable[str], lease: float, now: float) -> set[int]:
    """Extend the leases of rows still ``sending`` under ``tokens``; return those rows (the
    fence's proof that they are still this worker's)."""
    tokens = list(tokens)
    if not tokens:
        return set()
    return {r[0] for r in tx.fetchall(
        "UPDATE messages SET lease_until = ? WHERE state = 'sending' "
        f"AND claim_token IN ({dialect.texts(tx, '?')}) RETURNING id",
        (now + lease, json.dumps(tokens)))}


_STALE = """
SELECT id, claim_token, message_id, worker FROM messages {lease_index}
 WHERE state = 'sending' AND lease_until < :now
"""
_STALE, _STALE_PG = _STALE.format(lease_index="INDEXED BY messages_lease"), _STALE.format(lease_index="")


def _lease_index(tx: Tx) -> str:
    return dialect.pick(tx, sqlite="INDEXED BY messages_lease", postgres="")


def release_unstarted(tx: Tx, now: float, evidence: StartEvidence) -> tuple[list[Expired], set[int]]:
    """Claims whose lease ran out and which their worker's start marks prove it never began:
    back to ``scheduled``, no attempt counted (SendLog ``released``); and those the marks prove
    the relay accepted (a journaled ``250`` whose outcome the crash kept from the store):
    ``sent``, the attempt counted, SendLog finished with the journaled reply. Also returns the
    workers whose leases ran out."""
    by_worker: dict[int, list[tuple[int, str, str, str]]] = {}
    for row_id, token, mid, worker in tx.fetchall(dialect.pick(tx, sqlite=_STALE, postgres=_STALE_PG), {"now": now}):
        wid = worker_of(token or "")
        if wid is not None:
            by_worker.setdefault(wid, []).append((row_id, token, mid, worker or "?"))
    released: list[Expired] = []
    for wid, rows in by_worker.items():
        host = tx.fetchone("SELECT host FROM workers WHERE id = ?", (wid,))
        proof = evidence.proof(tx, None if host is None else host[0], wid, [(r[0], r[1]) for r in rows])
        for row_id, token, mid, worker in rows:
            if row_id in proof.delivered:
                code, text = proof.delivered[row_id]
                _record_journaled_delivery(tx, now, row_id, token, code, text)
                released.append(Expired(row_id, mid, worker, "sent"))
                continue
            if row_id not in proof.unstarted:
                continue
            reply = f"not started: lease expired and worker {worker}'s start journal shows it never began"
            if not tx.execute("UPDATE messages SET state = 'scheduled', lease_until = NULL, due_at = :now, "
                              "last_reply = :reply, updated_at = :now "
                              "WHERE id = :id AND claim_token = :token AND state = 'sending'",
                              {"now": now, "reply": reply, "id": row_id, "token": token}):
                continue  # another recoverer, or the worker's own late outcome, came first
            tx.execute("UPDATE send_log SET status = 'released', finished_at = :now, smtp_reply = :reply "
                       "WHERE message_id = :id AND claim_token = :token AND status = 'sending'",
                       {"now": now, "reply": reply, "id": row_id, "token": token})
            released.append(Expired(row_id, mid, worker, "scheduled"))
    return released, set(by_worker)


def _record_journaled_delivery(tx: Tx, now: float, row_id: int, token: str, code: int, text: str) -> None:
    """The outcome ``sent`` for a claim whose 250 is in its dead worker's start journal, as
    ``record_in`` would have written it."""
    tx.execute("UPDATE messages SET state = 'sent', attempts = attempts + 1, lease_until = NULL, "
               "last_reply = :reply, updated_at = :now "
               "WHERE id = :id AND claim_token = :token AND state = 'sending'",
               {"now": now, "reply": f"{code} {text}".strip(), "id": row_id, "token": token})
    tx.execute("UPDATE send_log SET status = 'sent', finished_at = :now, smtp_code = :code, smtp_reply = :text "
               "WHERE message_id = :id AND claim_token = :token AND status = 'sending'",
               {"now": now, "code": code, "text": text, "id": row_id, "token": token})


def _forget_settled(tx: Tx, evidence: StartEvidence, workers: set[int]) -> None:
    """Journals of dead workers with no claim left are removed (they stay bounded in number)."""
    if not workers:
        return
    holding = {worker_of(r[0] or "") for r in tx.fetchall(
        f"SELECT claim_token FROM messages {_lease_index(tx)} WHERE state = 'sending'")}
    for wid in workers - holding:
        try:
            evidence.forget(tx, wid)
        except OSError as exc:
            log.warning("start journal of worker %s could not be removed: %s", wid, exc)


_EXPIRE_LEASES = (
    "UPDATE messages SET state = 'unknown', updated_at = :now, "
    "last_reply = 'lease expired: worker ' || coalesce(worker, '?') || ' presumed dead' "
    "WHERE id IN (SELECT id FROM messages INDEXED BY messages_lease "
    "             WHERE state = 'sending' AND lease_until < :now) "
    "RETURNING id, claim_token, message_id, worker")

# PostgreSQL: a claim whose row another session holds (its worker recording the outcome right
# now, or frozen inside a transaction) is skipped, not waited for, and its state and lease are
# checked again on the row itself: as an ``IN`` subquery, an outcome committed meanwhile would
# have been overwritten with ``unknown``.
_EXPIRE_LEASES_PG = """
WITH stale AS MATERIALIZED (
    SELECT id FROM messages WHERE state = 'sending' AND lease_until < :now FOR UPDATE SKIP LOCKED)
UPDATE messages AS m SET state = 'unknown', updated_at = :now,
       last_reply = 'lease expired: worker ' || coalesce(m.worker, '?') || ' presumed dead'
  FROM stale
 WHERE m.id = stale.id AND m.state = 'sending' AND m.lease_until < :now
RETURNING m.id, m.claim_token, m.message_id, m.worker
"""


def expire_leases(tx: Tx, now: float, evidence: StartEvidence | None = None) -> list[Expired]:
    """Move claims whose lease ran out to ``unknown``: their worker may have sent them. With
    ``evidence``, those it proves never started go back to ``scheduled`` first."""
    released, dead = release_unstarted(tx, now, evidence) if evidence is not None else ([], set())
    rows = tx.fetchall(dialect.pick(tx, sqlite=_EXPIRE_LEASES, postgres=_EXPIRE_LEASES_PG), {"now": now})
    for row_id, token, _mid, worker in rows:
        tx.execute(
            "UPDATE send_log SET status = 'unknown', finished_at = ?, smtp_reply = ? "
            "WHERE message_id = ? AND claim_token = ? AND status = 'sending'",
            (now, f"lease expired: worker {worker} presumed dead", row_id, token))
    if evidence is not None:
        _forget_settled(tx, evidence, dead)
    return released + [Expired(r[0], r[2], r[3] or "?") for r in rows]


async def recover(db: Store, now: float, evidence: StartEvidence | None = None) -> list[Expired]:
    """``python -m sender recover``: expire every claim whose lease has run out, now."""
    return await db.transaction(lambda tx: expire_leases(tx, now, evidence))


WORKER_RETENTION = 30 * 86400.0  # stopped worker rows older than this are pruned


async def register_worker(db: Store, name: str, pid: int, host: str, now: float,
                          heartbeat: float | None = None) -> int:
    """A worker row for this process, with its heartbeat interval (readers judge it dead after
    three missed ones); also prunes rows of workers stopped long ago (a cron line adds one row per
    run, about 260,000 a year)."""

    def work(tx: Tx) -> int:
        tx.execute("DELETE FROM workers WHERE stopped_at IS NOT NULL AND stopped_at < ?",
                   (now - WORKER_RETENTION,))
        row = tx.fetchone("INSERT INTO workers(name, pid, host, started_at, heartbeat_at, heartbeat_every) "
                          "VALUES (?, ?, ?, ?, ?, ?) RETURNING id", (name, pid, host, now, now, heartbeat))
        assert row is not None
        return int(row[0])

    return await db.transaction(work)


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat found: everybody's claims it expired, and which of ours it extended."""

    expired: list[Expired]
    kept: set[int]


async def heartbeat(db: Store, worker_id: int, tokens: Iterable[str], lease: float,
                    now: float, evidence: StartEvidence | None = None) -> Beat:
    """Heartbeat, extend our leases and expire everybody's dead ones, in one transaction."""
    tokens = list(tokens)

    def work(tx: Tx) -> Beat:
        tx.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (now, worker_id))
        kept = extend_leases(tx, tokens, lease, now)
        claims.expire_due(tx, now, f"worker {worker_id}")
        return Beat(expire_leases(tx, now, evidence), kept)

    return await db.transaction(work)


async def stop_worker(db: Store, worker_id: int, now: float) -> None:
    async with db.write():
        await db.execute("UPDATE workers SET stopped_at = ?, heartbeat_at = ? WHERE id = ?",
                         (now, now, worker_id))
