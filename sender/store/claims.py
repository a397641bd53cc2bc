"""The claim transaction body: pick due rows, apply the sending policy, move them to
``sending`` with a conditional update and log them in the SendLog, all inside the caller's
``BEGIN IMMEDIATE`` (see ``queue.exchange``).

Two paths choose the rows. With no policy, one ``UPDATE ... RETURNING`` over the due index does
it. With a policy, a bounded set of candidates is read in priority order and each is checked
against the rules, counting from the SendLog *in this same transaction*, so the limits hold
across processes. Either way the final move is ``... WHERE id IN (...) AND state = 'scheduled'``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..attachments import Part
from ..headers import from_json
from ..policy import Limit, Policy
from . import attachments, dialect
from .audit import audit_in
from .engine import Tx
from .flags import globally_paused
from .states import ATTEMPTED_SQL, LIVE_SQL

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed message: everything needed to send it, plus the fence token."""

    row: int
    mid: str
    token: str
    attempt: int
    recipient: str
    to_name: str | None
    campaign: str
    from_addr: str
    from_name: str | None
    subject: str
    body_text: str
    body_html: str | None
    reply_to: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Part, ...] = ()


_NOT_PAUSED = "campaign_id NOT IN (SELECT id FROM campaigns WHERE paused IS NOT NULL)"
_GLOBAL_PAUSE = "NOT EXISTS (SELECT 1 FROM flags WHERE key = 'paused')"

# ``INDEXED BY`` and the unary ``+``: without table statistics the planner would rather walk
# ``messages_state_updated`` over every scheduled row (measured: 20 ms per claim at 100k rows,
# 19 claims/s at 1M); the partial due index answers in microseconds at any size.
_DUE = """SELECT id FROM (SELECT id FROM messages INDEXED BY messages_due
                WHERE state = 'scheduled' AND priority = {prio} AND due_at <= :now AND {not_paused}
                ORDER BY due_at, id LIMIT :limit)"""

_FAST = f"""
UPDATE messages
   SET state = 'sending', claim_token = :token, worker = :worker, lease_until = :lease,
       updated_at = :now, defer_reason = NULL
 WHERE id IN ({" UNION ALL ".join(_DUE.format(prio=p, not_paused=_NOT_PAUSED) for p in (0, 1, 2))}
              LIMIT :limit)
   AND +state = 'scheduled' AND (expires_at IS NULL OR expires_at > :now) AND {_GLOBAL_PAUSE}
RETURNING id
"""

# PostgreSQL: the due rows are locked as they are chosen and rows other claimers hold are
# skipped (``FOR UPDATE SKIP LOCKED``), so senders on many hosts never wait on each other; the
# outer ``state = 'scheduled'`` is the same conditional move. ``MATERIALIZED``: as an ``IN``
# subquery the planner may rescan it, and the batch then exceeded its ``LIMIT``. One ordered scan of the due index
# replaces SQLite's per-priority union (a planner workaround there).
_FAST_PG = f"""
WITH due AS MATERIALIZED (
    SELECT id FROM messages
     WHERE state = 'scheduled' AND due_at <= :now AND {_NOT_PAUSED}
     ORDER BY priority, due_at, id LIMIT :limit FOR UPDATE SKIP LOCKED)
UPDATE messages AS m
   SET state = 'sending', claim_token = :token, worker = :worker, lease_until = :lease,
       updated_at = :now, defer_reason = NULL
  FROM due
 WHERE m.id = due.id AND m.state = 'scheduled' AND (m.expires_at IS NULL OR m.expires_at > :now)
   AND {_GLOBAL_PAUSE}
RETURNING m.id
"""

# The earliest due time of a row a claim could take (none while sending is paused), for a daemon
# that is woken when rows are made due but must also wake when a future one's time comes: one
# probe of ``messages_due`` per priority (a plain ``min`` would read every scheduled row).
NEXT_DUE = f"""
SELECT min(due_at) FROM ({" UNION ALL ".join(
    f"SELECT (SELECT min(due_at) FROM messages WHERE state = 'scheduled' AND priority = {p} "
    f"AND {_NOT_PAUSED}) AS due_at" for p in (0, 1, 2))}) AS next
 WHERE {_GLOBAL_PAUSE}
"""

_MOVE = f"""
UPDATE messages
   SET state = 'sending', claim_token = :token, worker = :worker, lease_until = :lease,
       updated_at = :now, defer_reason = NULL
 WHERE id IN ({{ids}}) AND {{state}} = 'scheduled' AND {_GLOBAL_PAUSE}
RETURNING id
"""
_MOVE, _MOVE_PG = (_MOVE.format(ids=dialect.ids(dialect.AS_SQLITE, ":ids"), state="+state"),
                   _MOVE.format(ids=dialect.ids(dialect.AS_POSTGRES, ":ids"), state="state"))

_CANDIDATES = f"""
SELECT m.id, m.message_id, r.email, r.tz, c.name, b.from_addr, m.expires_at, m.created_at
  FROM messages m {{indexed}} JOIN recipients r ON r.id = m.recipient_id
  JOIN campaigns c ON c.id = m.campaign_id JOIN message_bodies b ON b.message_id = m.id
 WHERE m.state = 'scheduled' AND m.priority = :prio AND m.due_at <= :now AND m.{_NOT_PAUSED}
 ORDER BY m.due_at, m.id LIMIT :limit {{lock}}
"""
# PostgreSQL: candidates are locked as read (another host's claim skips them, and a row another
# host holds is not weighed here at all).
_CANDIDATES, _CANDIDATES_PG = (_CANDIDATES.format(indexed="INDEXED BY messages_due", lock=""),
                               _CANDIDATES.format(indexed="", lock="FOR UPDATE OF m SKIP LOCKED"))

_LOG = """
INSERT INTO send_log(message_id, dedupe_key, mid, recipient, campaign, sender, attempt, worker,
                     claim_token, status, claimed_at)
SELECT m.id, m.dedupe_key, m.message_id, r.email, c.name, b.from_addr, m.attempts + 1, :worker,
       :token, 'sending', :now
  FROM messages m JOIN recipients r ON r.id = m.recipient_id JOIN campaigns c ON c.id = m.campaign_id
  JOIN message_bodies b ON b.message_id = m.id
 WHERE m.id IN ({ids})
"""
# PostgreSQL: SendLog ids in row order, as SQLite's plan gives them (the join's order is not).
_LOG, _LOG_PG = (_LOG.format(ids=dialect.ids(dialect.AS_SQLITE, ":ids")),
                 _LOG.format(ids=dialect.ids(dialect.AS_POSTGRES, ":ids")) + " ORDER BY m.id")

_DETAILS = """
SELECT m.id, m.message_id, m.attempts + 1, r.email, coalesce(b.to_name, r.name), c.name,
       b.from_addr, b.from_name, b.subject, b.body_text, b.body_html, b.reply_to, b.headers, b.attachments
  FROM messages m JOIN recipients r ON r.id = m.recipient_id
  JOIN campaigns c ON c.id = m.campaign_id JOIN message_bodies b ON b.message_id = m.id
 WHERE m.id IN ({ids})
 ORDER BY m.priority, m.due_at, m.id
"""
_DETAILS, _DETAILS_PG = (_DETAILS.format(ids=dialect.ids(dialect.AS_SQLITE, ":ids")),
                         _DETAILS.format(ids=dialect.ids(dialect.AS_POSTGRES, ":ids")))

_EXPIRE = """
UPDATE messages SET state = 'expired', updated_at = :now, defer_reason = NULL,
       last_reply = 'expired: past expires_at, never sent'
 WHERE id IN (SELECT id FROM messages {indexed}
               WHERE state = 'scheduled' AND expires_at IS NOT NULL AND expires_at <= :now)
RETURNING id, message_id
"""
# PostgreSQL: rows other sessions hold are skipped, not waited for, and the state is checked again
# on the row itself (as an ``IN`` subquery, a row another host claimed meanwhile would still match
# once its lock was released, and a claimed row would turn ``expired``).
_EXPIRE_PG = """
WITH due AS MATERIALIZED (
    SELECT id FROM messages WHERE state = 'scheduled' AND expires_at IS NOT NULL AND expires_at <= :now
       FOR UPDATE SKIP LOCKED)
UPDATE messages AS m SET state = 'expired', updated_at = :now, defer_reason = NULL,
       last_reply = 'expired: past expires_at, never sent'
  FROM due
 WHERE m.id = due.id AND m.state = 'scheduled'
RETURNING m.id, m.message_id
"""
_EXPIRE = _EXPIRE.format(indexed="INDEXED BY messages_expiry")


def expire_due(tx: Tx, now: float, worker: str) -> None:
    """``scheduled -> expired`` past ``expires_at`` (claims also skip them, so none is ever sent)."""
    for row_id, mid in tx.fetchall(dialect.pick(tx, sqlite=_EXPIRE, postgres=_EXPIRE_PG), {"now": now}):
        log.warning("row=%s mid=%s worker=%s scheduled->expired reason=past expires_at", row_id, mid, worker)


def claim(tx: Tx, policy: Policy | None, *, worker: str, worker_id: int, limit: int,
                lease: float, now: float) -> list[Claim]:
    token = f"{worker_id}.{secrets.token_hex(6)}"
    params = {"token": token, "worker": worker, "lease": now + lease, "now": now}
    refused = 0
    while refused < 3:  # a refused row is quarantined, then the rest of the batch is claimed
        tx.execute("SAVEPOINT claim")
        ids = _choose(tx, policy, params, limit, now, worker)
        if not ids:
            tx.execute("RELEASE claim")
            return []
        ids = _drop_suppressed(tx, ids, now, worker)
        if not ids:  # the whole batch was suppressed (each round moves rows out of scheduled)
            tx.execute("RELEASE claim")
            continue
        id_list = json.dumps(ids)
        try:
            tx.execute(dialect.pick(tx, sqlite=_LOG, postgres=_LOG_PG),
                       {"worker": worker, "token": token, "now": now, "ids": id_list})
        except tx.IntegrityError as exc:
            tx.execute("ROLLBACK TO claim")
            tx.execute("RELEASE claim")
            if not _quarantine(tx, ids, worker, now, str(exc)):
                raise
            refused += 1
            continue
        tx.execute("RELEASE claim")
        details = tx.fetchall(dialect.pick(tx, sqlite=_DETAILS, postgres=_DETAILS_PG), {"ids": id_list})
        with_files = [r[0] for r in details if r[13]]
        parts = attachments.load(tx, with_files) if with_files else {}
        return [Claim(row=r[0], mid=r[1], token=token, attempt=r[2], recipient=r[3], to_name=r[4],
                      campaign=r[5], from_addr=r[6], from_name=r[7], subject=r[8], body_text=r[9],
                      body_html=r[10], reply_to=r[11], headers=from_json(r[12]),
                      attachments=parts.get(r[0], ()))
                for r in details]
    return []


# Invariant 10: the suppression list is read in the claim transaction, for exactly the rows just
# chosen (index probes on a batch of ids), so an address suppressed a moment ago is never sent.
_SUPPRESSED = """
SELECT m.id, m.message_id, 'suppressed: recipient ' || s.reason || coalesce(' (' || nullif(s.source, '') || ')', '')
  FROM messages m JOIN recipients r ON r.id = m.recipient_id JOIN suppressions s ON s.email = r.email
 WHERE m.id IN ({ids})
"""
_SUPPRESSED, _SUPPRESSED_PG = (_SUPPRESSED.format(ids=dialect.ids(dialect.AS_SQLITE, ":ids")),
                               _SUPPRESSED.format(ids=dialect.ids(dialect.AS_POSTGRES, ":ids")))


def _drop_suppressed(tx: Tx, ids: list[int], now: float, worker: str) -> list[int]:
    """Move chosen rows whose recipient is suppressed to ``suppressed``; return the others."""
    gone = tx.fetchall(dialect.pick(tx, sqlite=_SUPPRESSED, postgres=_SUPPRESSED_PG), {"ids": json.dumps(ids)})
    if not gone:
        return ids
    for row_id, mid, reason in gone:
        tx.execute("UPDATE messages SET state = 'suppressed', claim_token = NULL, worker = NULL, "
                   "lease_until = NULL, updated_at = ?, last_reply = ? WHERE id = ? AND state = 'sending'",
                   (now, reason, row_id))
        log.warning("row=%s mid=%s worker=%s scheduled->suppressed reason=%s", row_id, mid, worker, reason)
    dropped = {r[0] for r in gone}
    return [i for i in ids if i not in dropped]


def _choose(tx: Tx, policy: Policy | None, params: dict[str, object], limit: int, now: float,
                  worker: str) -> list[int]:
    """Move the chosen due rows to ``sending`` (conditional update) and return their ids."""
    if policy is not None and policy.active:
        if globally_paused(tx):
            return []
        chosen = _apply_policy(tx, policy, limit, now, worker)
        move = dialect.pick(tx, sqlite=_MOVE, postgres=_MOVE_PG)
        return [r[0] for r in tx.fetchall(move, {**params, "ids": json.dumps(chosen)})] if chosen else []
    return [r[0] for r in tx.fetchall(dialect.pick(tx, sqlite=_FAST, postgres=_FAST_PG), {**params, "limit": limit})]


def _quarantine(tx: Tx, ids: list[int], worker: str, now: float, error: str) -> int:
    """Rows the SendLog index refused: a live attempt already exists, so never send; surface it."""
    rows = tx.fetchall(
        f"SELECT m.id, m.message_id FROM messages m WHERE m.id IN ({dialect.ids(tx, '?')}) "
        f"AND m.state = 'scheduled' AND EXISTS (SELECT 1 FROM send_log s WHERE s.status IN {LIVE_SQL} "
        "AND (s.message_id = m.id OR s.dedupe_key = m.dedupe_key))",
        (json.dumps(ids),))
    reason = f"claim refused by SendLog unique index ({error}); a live or successful attempt exists"
    for row_id, mid in rows:
        tx.execute("UPDATE messages SET state = 'unknown', last_reply = ?, updated_at = ? "
                         "WHERE id = ? AND state = 'scheduled'", (reason, now, row_id))
        audit_in(tx, now, worker, "claim-refused", row_id, reason)
        log.error("row=%s mid=%s worker=%s scheduled->unknown reason=%s", row_id, mid, worker, reason)
    return len(rows)


# --- policy ------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Batch:
    """Claims chosen earlier in this transaction: they count against limits like logged ones."""

    recipient: dict[tuple[str, str | None], int]
    sender: dict[str, int]


def _apply_policy(tx: Tx, policy: Policy, limit: int, now: float, worker: str) -> list[int]:
    scan = max(4 * limit, 16)
    candidates: list[Any] = []
    select = dialect.pick(tx, sqlite=_CANDIDATES, postgres=_CANDIDATES_PG)
    for prio in (0, 1, 2):
        if len(candidates) < scan:
            candidates += tx.fetchall(select, {"prio": prio, "now": now,
                                                          "limit": scan - len(candidates)})
    _lock_counted(tx, policy, candidates)
    batch = _Batch(defaultdict(int), defaultdict(int))
    chosen: list[int] = []
    for row_id, mid, email, tz, campaign, sender, expires_at, created_at in candidates:
        if len(chosen) >= limit:
            break
        if (expires_at is not None and expires_at <= now) or (
                policy.max_age is not None and created_at + policy.max_age <= now):
            tx.execute("UPDATE messages SET state = 'expired', updated_at = ?, defer_reason = NULL, "
                             "last_reply = 'expired: older than --max-age or past expires_at, never sent' "
                             "WHERE id = ? AND state = 'scheduled'", (now, row_id))
            log.warning("row=%s mid=%s worker=%s scheduled->expired reason=max age", row_id, mid, worker)
            continue
        held = _held_until(tx, policy, batch, email, tz, campaign, sender, now)
        if held is not None:
            until, reason = held
            tx.execute("UPDATE messages SET due_at = ?, defer_reason = ?, updated_at = ? "
                             "WHERE id = ? AND state = 'scheduled'", (until, reason, now, row_id))
            log.info("row=%s mid=%s worker=%s scheduled->scheduled reason=deferred by %s for %.0fs",
                     row_id, mid, worker, reason, until - now)
            continue
        chosen.append(row_id)
        batch.recipient[(email.lower(), None)] += 1
        batch.recipient[(email.lower(), campaign)] += 1
        batch.sender[sender.lower()] += 1
    return chosen


# PostgreSQL: one transaction-level advisory lock per recipient and per From account whose limits
# this claim is about to count, taken in one sorted statement (no two claimers wait on each other
# in opposite orders). A second host counting the same recipient or account waits until the first
# commits, and its next statement then sees the first's SendLog rows: the limits hold across hosts.
# SQLite needs none: ``BEGIN IMMEDIATE`` already lets one claim count at a time.
_LOCK_KEYS = """
SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))
  FROM (SELECT DISTINCT unnest(CAST(? AS text[])) AS k ORDER BY 1) AS keys
"""


def _lock_counted(tx: Tx, policy: Policy, candidates: list[Any]) -> None:
    if tx.dialect != dialect.POSTGRES or not candidates:
        return
    keys: set[str] = set()
    if policy.recipient_cap is not None or any(
            policy.for_campaign(c[4]).recipient_cap is not None for c in candidates):
        keys |= {f"sender:recipient:{c[2].lower()}" for c in candidates}
    if policy.rate is not None or policy.daily_cap is not None:
        keys |= {f"sender:account:{c[5].lower()}" for c in candidates}
    if keys:
        tx.fetchone(_LOCK_KEYS, (sorted(keys),))


def _held_until(tx: Tx, policy: Policy, batch: _Batch, email: str, tz: str | None,
                      campaign: str, sender: str, now: float) -> tuple[float, str] | None:
    """The moment the first rule that holds this message back frees it, and that rule's name."""
    rules = policy.for_campaign(campaign)
    if rules.window is not None:
        opens = rules.window.next_open(now, tz)
        if opens > now:
            return opens, "window"
    for cap, scope in ((policy.recipient_cap, None), (rules.recipient_cap, campaign)):
        if cap is not None:
            free = _window_free_at(
                tx, cap, now, batch.recipient[(email.lower(), scope)],
                f"recipient = :key {'AND campaign = :scope ' if scope else ''}AND status IN {LIVE_SQL}",
                {"key": email, "scope": scope})
            if free is not None:
                return free, "recipient-cap"
    if policy.rate is not None:
        free = _window_free_at(tx, policy.rate, now, batch.sender[sender.lower()],
                                     f"sender = :key AND status IN {ATTEMPTED_SQL}", {"key": sender},
                                     spacing=policy.rate.period / policy.rate.count)
        if free is not None:
            return free, "rate"
    if policy.daily_cap is not None:
        free = _window_free_at(tx, Limit(policy.daily_cap, 86400.0), now, batch.sender[sender.lower()],
                                     f"sender = :key AND status IN {ATTEMPTED_SQL}", {"key": sender})
        if free is not None:
            return free, "daily-cap"
    return None


def _window_free_at(tx: Tx, limit: Limit, now: float, in_batch: int, where: str,
                          params: dict[str, object], spacing: float = 0.0) -> float | None:
    """None if one more fits in the sliding window (and the spacing), else when it will."""
    rows = tx.fetchall(
        f"SELECT claimed_at FROM send_log WHERE {where} AND claimed_at > :since "
        "ORDER BY claimed_at DESC LIMIT :n", {**params, "since": now - limit.period, "n": limit.count})
    times = [now] * in_batch + [r[0] for r in rows]
    times = times[:limit.count]
    if spacing and times and times[0] + spacing > now:
        return times[0] + spacing
    if len(times) >= limit.count:
        return times[limit.count - 1] + limit.period
    return None
