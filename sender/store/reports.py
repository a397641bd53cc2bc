"""The duplicate report: every way a message can have gone out other than exactly once.

The reads behind the duplicate report (assembled by ``sender.report``): each compares the SendLog
with what was observed in mailboxes (``sender.observe``):

* ``ghosts``: a Message-ID observed but absent from SendLog (a lead's "I got three emails"),
  traced back to its queue row when the Message-ID embeds one;
* ``repeated_message_ids``: one Message-ID delivered more than once to the same recipient
  (counted per mailbox, so reading two archives of the same mail is not a duplicate);
* ``multi_sends``: one recipient + campaign with more than one distinct Message-ID, logged or
  observed;
* ``unknown``: messages whose outcome is unknown (not windowed: an open question stays open);
* ``stale_claims``: ``sending`` rows whose lease has run out (not windowed);
* ``missing``: logged as sent but never observed, checked only against mailboxes the caller
  names, from the first message each holds.

Each function takes an open ``Store`` (read-only is
enough) and Unix-second floats, returns frozen dataclasses, and runs bounded, indexed queries
(``LIMIT`` everywhere; window scans walk ``send_log_claimed`` and ``observations_at``), so it
stays fast at a million SendLog rows. Windows are closed intervals ``[since, now]``.

Each list takes an ``offset`` (pages in its own stable order) and has a ``count_*`` twin giving
its true total with the same conditions, so a page can say "101-200 of 10,000". Paging is by
offset: a later page re-reads the entries before it through the same index (the deepest page of
10,000 unknown messages costs a few milliseconds, ``bench/monitor.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..report.model import (
    LIMIT,
    Ghost,
    Missing,
    MultiSend,
    RepeatedMessageId,
    Sighting,
    StaleClaim,
    UnknownMessage,
)
from . import counts, dialect
from .counts import worker_of_token
from .engine import Store
from .states import LIVE_SQL

MISSING_SLACK = 2.0  # a Date header (whole seconds) can precede its claim by under 1 s
MISSING_COUNT_CAP = 10_000  # "missing" totals stop here ("10,000+")


async def newest_activity(db: Store) -> float | None:
    """The latest SendLog claim or observed copy (two index lookups), or None if neither."""
    row = await db.fetchone("SELECT (SELECT max(claimed_at) FROM send_log), "
                            "(SELECT max(at) FROM observations)")
    values = [v for v in (row or ()) if v is not None]
    return max(values) if values else None


# --- the six findings ------------------------------------------------------------------------

_GHOST_WHERE = """
  FROM observations o
 WHERE o.at BETWEEN :since AND :now AND o.mid IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM send_log s WHERE s.mid = o.mid)
 GROUP BY o.mid, o.recipient
"""

_GHOSTS = ("SELECT o.mid, o.recipient, min(o.at), count(*), max(o.subject), "
           "json_group_array(DISTINCT o.source), max(o.row_id), max(o.traced_by)"
           + _GHOST_WHERE + " ORDER BY min(o.at), o.mid, o.recipient LIMIT :limit OFFSET :offset")


async def ghosts(db: Store, since: float, now: float, *, limit: int = LIMIT,
                 offset: int = 0) -> list[Ghost]:
    """Copies observed in ``[since, now]`` whose Message-ID is nowhere in SendLog, oldest first."""
    rows = await db.fetchall(_GHOSTS, {"since": since, "now": now, "limit": limit,
                                       "offset": offset})
    info = await _rows_info(db, [r[6] for r in rows])
    out = []
    for mid, rcpt, at, copies, subject, sources, row, traced_by in rows:
        state, own_mid, campaign = info.get(row, (None, None, None))
        out.append(Ghost(mid, rcpt, at, copies, subject or "", tuple(json.loads(sources)), row,
                         traced_by, campaign, state, own_mid))
    return out


_REPEATED_HITS = """
    SELECT o.mid, o.recipient, min(o.at) AS first_at FROM observations o
     WHERE o.at BETWEEN :since AND :now AND o.mid IS NOT NULL
       AND EXISTS (SELECT 1 FROM observations o2 WHERE o2.mid = o.mid
                      AND o2.recipient = o.recipient AND o2.source = o.source AND o2.id <> o.id)
     GROUP BY o.mid, o.recipient
"""

_REPEATED = "WITH hit AS (" + _REPEATED_HITS + """
     ORDER BY first_at, o.mid, o.recipient
     LIMIT :limit OFFSET :offset),
per_source AS (
    SELECT o.mid, o.recipient, count(*) AS n, min(o.at) AS first_at, max(o.at) AS last_at,
           max(o.row_id) AS row_id, o.source
      FROM hit JOIN observations o ON o.mid = hit.mid AND o.recipient = hit.recipient
     GROUP BY o.mid, o.recipient, o.source)
SELECT mid, recipient, max(n), min(first_at), max(last_at), json_group_array(source), max(row_id)
  FROM per_source
 GROUP BY mid, recipient
 ORDER BY min(first_at), mid, recipient
"""


async def repeated_message_ids(db: Store, since: float, now: float, *, limit: int = LIMIT,
                               offset: int = 0) -> list[RepeatedMessageId]:
    """Message-IDs a mailbox holds more than once for one recipient, with a copy in the window.

    ``attempts`` lists that Message-ID's SendLog statuses in order (``requeued``, ``sent`` is the
    trace of an operator resending an ambiguous message that had in fact arrived). Each copy in
    the window costs one probe of ``observations_mid``."""
    rows = await db.fetchall(_REPEATED, {"since": since, "now": now, "limit": limit,
                                         "offset": offset})
    info = await _rows_info(db, [r[6] for r in rows])
    attempts = await _attempts(db, [r[0] for r in rows])
    return [RepeatedMessageId(mid, rcpt, n, first, last, tuple(sorted(set(json.loads(sources)))),
                              row, info.get(row, (None, None, None))[2], attempts.get(mid, ()))
            for mid, rcpt, n, first, last, sources, row in rows]


# A pair is a candidate when SendLog holds two live attempts with different Message-IDs for it in
# the window, or a copy traced to one of its rows carries a Message-ID that row never had (a
# send outside the queue), or another row of the same pair was logged or observed in the window.
# Each is an index probe per event in the window, never a sort of the whole window. A candidate
# is a multi-send when its sightings in the window (live attempts, observed copies traced to its
# rows) hold more than one distinct Message-ID: the same test pages and totals use. The sightings
# are read from the candidates outwards (``CROSS JOIN`` fixes that order in SQLite; otherwise it
# walked every copy observed in the window and looked each up among the candidates).
_MULTI_PAIRS = f"""
WITH cand(recipient, campaign) AS (
    SELECT s.recipient, s.campaign
      FROM shared_pairs p JOIN recipients r ON r.id = p.recipient_id
      JOIN campaigns c ON c.id = p.campaign_id
      JOIN send_log s ON s.recipient = r.email AND s.campaign = c.name
     WHERE s.claimed_at BETWEEN :since AND :now AND s.status IN {LIVE_SQL}
     GROUP BY s.recipient, s.campaign HAVING count(DISTINCT s.mid) > 1
    UNION
    SELECT r.email, c.name FROM observations o
      JOIN messages m ON m.id = o.row_id
      JOIN recipients r ON r.id = m.recipient_id JOIN campaigns c ON c.id = m.campaign_id
     WHERE o.at BETWEEN :since AND :now AND o.mid IS NOT NULL
       AND (o.mid <> m.message_id OR EXISTS (
            SELECT 1 FROM messages m2 WHERE m2.recipient_id = m.recipient_id
               AND m2.campaign_id = m.campaign_id AND m2.id <> m.id
               AND (EXISTS (SELECT 1 FROM observations o2 WHERE o2.row_id = m2.id
                               AND o2.at BETWEEN :since AND :now)
                    OR EXISTS (SELECT 1 FROM send_log s2 WHERE s2.message_id = m2.id
                                  AND s2.status IN {LIVE_SQL}
                                  AND s2.claimed_at BETWEEN :since AND :now))))),
seen(recipient, campaign, mid, at) AS (
    SELECT s.recipient, s.campaign, s.mid, s.claimed_at
      FROM cand JOIN send_log s ON s.recipient = cand.recipient AND s.campaign = cand.campaign
     WHERE s.claimed_at BETWEEN :since AND :now AND s.status IN {LIVE_SQL}
    UNION ALL
    SELECT cand.recipient, cand.campaign, o.mid, o.at
      FROM cand CROSS JOIN recipients r CROSS JOIN campaigns c CROSS JOIN messages m
      CROSS JOIN observations o
     WHERE r.email = cand.recipient AND c.name = cand.campaign AND m.recipient_id = r.id
       AND m.campaign_id = c.id AND o.row_id = m.id
       AND o.at BETWEEN :since AND :now AND o.mid IS NOT NULL)
SELECT recipient, campaign, min(at) FROM seen
 GROUP BY recipient, campaign HAVING count(DISTINCT mid) > 1
"""

_MULTI_LOG_DETAIL = f"""
SELECT s.recipient, s.campaign, s.mid, min(s.claimed_at), max(s.message_id)
  FROM {{pairs}} j JOIN send_log s
    ON s.recipient = json_extract(j.value, '$[0]') AND s.campaign = json_extract(j.value, '$[1]')
 WHERE s.claimed_at BETWEEN :since AND :now AND s.status IN {LIVE_SQL}
 GROUP BY s.recipient, s.campaign, s.mid
"""

_MULTI_SEEN_DETAIL = """
SELECT r.email, c.name, o.mid, min(o.at), count(*), max(o.row_id)
  FROM {pairs} j
  JOIN recipients r ON r.email = json_extract(j.value, '$[0]')
  JOIN campaigns c ON c.name = json_extract(j.value, '$[1]')
  JOIN messages m ON m.recipient_id = r.id AND m.campaign_id = c.id
  JOIN observations o ON o.row_id = m.id
 WHERE o.at BETWEEN :since AND :now AND o.mid IS NOT NULL
 GROUP BY r.email, c.name, o.mid
"""


async def multi_sends(db: Store, since: float, now: float, *, limit: int = LIMIT,
                      offset: int = 0) -> list[MultiSend]:
    """Recipient + campaign pairs with more than one distinct Message-ID in ``[since, now]``,
    counting live SendLog attempts and observed copies traced to a queue row, first seen first."""
    params: dict[str, Any] = {"since": since, "now": now, "limit": limit, "offset": offset}
    pairs = [(r[0], r[1]) for r in await db.fetchall(
        _MULTI_PAIRS + " ORDER BY min(at), recipient, campaign LIMIT :limit OFFSET :offset", params)]
    if not pairs:
        return []
    params["pairs"] = json.dumps(pairs)
    seen: dict[tuple[str, str], dict[str, list[Any]]] = {pair: {} for pair in pairs}
    each_pair = dialect.arrays(db, ":pairs")
    for rcpt, campaign, mid, at, row in await db.fetchall(_MULTI_LOG_DETAIL.format(pairs=each_pair), params):
        seen[(rcpt, campaign)][mid] = [at, True, 0, row]
    for rcpt, campaign, mid, at, copies, row in await db.fetchall(_MULTI_SEEN_DETAIL.format(pairs=each_pair),
                                                                params):
        entry = seen[(rcpt, campaign)].setdefault(mid, [at, False, 0, row])
        entry[0], entry[2] = min(entry[0], at), copies
    return [MultiSend(pair[0], pair[1], tuple(sorted(
                (Sighting(mid, at, logged, observed, row)
                 for mid, (at, logged, observed, row) in seen[pair].items()),
                key=lambda s: (s.at, s.mid))))
            for pair in pairs]


async def unknown_messages(db: Store, *, limit: int = LIMIT,
                           offset: int = 0) -> list[UnknownMessage]:
    """Every message now ``unknown``, longest-standing first (``messages_state_updated``).

    The page is chosen in the index alone, then joined: an ``OFFSET`` over the joined rows
    would build every skipped row (62 ms for the last page of 10,000, against 1.3 ms)."""
    rows = await db.fetchall(
        "SELECT m.id, m.message_id, r.email, c.name, m.updated_at, coalesce(m.last_reply, ''), "
        "       m.worker, m.attempts, "
        "       EXISTS (SELECT 1 FROM observations o WHERE o.mid = m.message_id) "
        "  FROM messages m JOIN recipients r ON r.id = m.recipient_id "
        "  JOIN campaigns c ON c.id = m.campaign_id "
        " WHERE m.id IN (SELECT id FROM messages WHERE state = 'unknown' "
        "                ORDER BY updated_at, id LIMIT ? OFFSET ?) "
        " ORDER BY m.updated_at, m.id", (limit, offset))
    return [UnknownMessage(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]))
            for r in rows]


async def stale_claims(db: Store, now: float, *, limit: int = LIMIT,
                       offset: int = 0) -> list[StaleClaim]:
    """``sending`` rows whose lease ended before ``now`` (partial index ``messages_lease``, pinned:
    the planner preferred walking every ``sending`` row and sorting them, 38 ms for 10,000),
    with the heartbeat of the worker that holds them (its id prefixes the claim token). The page
    is chosen in the index, then joined (the last page of 10,000: 99 ms -> 1 ms)."""
    rows = await db.fetchall(
        "SELECT m.id, m.message_id, r.email, c.name, m.worker, "
        "       (SELECT s.claimed_at FROM send_log s WHERE s.message_id = m.id "
        "         AND s.claim_token = m.claim_token ORDER BY s.id DESC LIMIT 1), "
        "       m.lease_until, w.heartbeat_at, w.stopped_at IS NOT NULL "
        "  FROM messages m JOIN recipients r ON r.id = m.recipient_id "
        "  JOIN campaigns c ON c.id = m.campaign_id "
        f"  LEFT JOIN workers w ON w.id = {worker_of_token('m.claim_token')} "
        f" WHERE m.id IN (SELECT id FROM messages {dialect.indexed(db, 'messages_lease')} "
        "                 WHERE state = 'sending' AND lease_until < ? "
        "                 ORDER BY lease_until, id LIMIT ? OFFSET ?) "
        " ORDER BY m.lease_until, m.id", (now, limit, offset))
    return [StaleClaim(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8])) for r in rows]


_MISSING_WHERE = """
  FROM send_log s
 WHERE s.claimed_at BETWEEN :start AND :now AND s.status = 'sent'
   AND NOT EXISTS (SELECT 1 FROM observations o
                    WHERE o.mid = s.mid AND o.recipient = lower(s.recipient))
"""


async def missing(db: Store, since: float, now: float, sources: Sequence[str], *,
                  limit: int = LIMIT, offset: int = 0) -> list[Missing]:
    """Attempts logged ``sent`` in the window but never observed, judged only against the named
    mailbox ``sources`` (``maildir:/path``), from shortly before the first copy any of them holds
    (a mailbox that started later cannot vouch for earlier sends); none named -> nothing."""
    if not sources:
        return []
    rows = await db.fetchall(
        "SELECT s.message_id, s.mid, s.recipient, s.campaign, "
        "       coalesce(s.finished_at, s.claimed_at), "
        "       trim(coalesce(s.smtp_code || ' ', '') || coalesce(s.smtp_reply, '')) "
        + _MISSING_WHERE + " ORDER BY s.claimed_at, s.id LIMIT :limit OFFSET :offset",
        {"start": await _missing_start(db, since, sources), "now": now, "limit": limit,
         "offset": offset})
    return [Missing(*r) for r in rows]


async def _missing_start(db: Store, since: float, sources: Sequence[str]) -> float:
    row = await db.fetchone(
        "SELECT min((SELECT min(o.at) FROM observations o WHERE o.source = j.value)) "
        f"FROM {dialect.each(db, '?')} j", (json.dumps(list(sources)),))
    return since if row is None or row[0] is None else max(since, row[0] - MISSING_SLACK)


# --- true totals: the same conditions as the lists, counted -----------------------------------

async def count_ghosts(db: Store, since: float, now: float) -> int:
    return await _count(db, "SELECT 1" + _GHOST_WHERE, {"since": since, "now": now})


async def count_repeated_message_ids(db: Store, since: float, now: float) -> int:
    return await _count(db, _REPEATED_HITS, {"since": since, "now": now})


async def count_multi_sends(db: Store, since: float, now: float) -> int:
    return await _count(db, _MULTI_PAIRS, {"since": since, "now": now})


async def count_unknown(db: Store) -> int:
    """From the trigger-kept counters, as the header shows it (O(1))."""
    return (await counts.state_counts(db))["unknown"]


async def count_stale_claims(db: Store, now: float) -> int:
    """A walk of the ``messages_lease`` partial index (its size is the claims in flight)."""
    row = await db.fetchone(
        f"SELECT count(*) FROM messages {dialect.indexed(db, 'messages_lease')} "
        "WHERE state = 'sending' AND lease_until < ?", (now,))
    return row[0] if row else 0


async def count_missing(db: Store, since: float, now: float, sources: Sequence[str], *,
                        cap: int | None = None) -> int:
    """Up to ``cap + 1`` (``MISSING_COUNT_CAP``): the one total that grows with the sends in the window rather than with
    anomalies (a mailbox that holds nothing of a busy day), so it stops counting past ``cap``
    (all 600,000 sends of a day at a million rows: 340 ms; up to 10,000: a few ms)."""
    if not sources:
        return 0
    return await _count(db, "SELECT 1" + _MISSING_WHERE + " LIMIT :cap",
                        {"start": await _missing_start(db, since, sources), "now": now,
                         "cap": (MISSING_COUNT_CAP if cap is None else cap) + 1})


async def _count(db: Store, sql: str, params: dict[str, Any]) -> int:
    row = await db.fetchone(f"SELECT count(*) FROM ({sql}) found", params)
    return row[0] if row else 0


# --- helpers ---------------------------------------------------------------------------------

async def _rows_info(db: Store, rows: Sequence[int | None]) -> dict[int, tuple[str, str, str]]:
    """Queue row -> (state, its own Message-ID, campaign)."""
    ids = sorted({r for r in rows if r is not None})
    if not ids:
        return {}
    return {r[0]: (r[1], r[2], r[3]) for r in await db.fetchall(
        "SELECT m.id, m.state, m.message_id, c.name FROM messages m "
        f"JOIN campaigns c ON c.id = m.campaign_id WHERE m.id IN ({dialect.ids(db, '?')})",
        (json.dumps(ids),))}


async def _attempts(db: Store, mids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    if not mids:
        return {}
    out: dict[str, list[str]] = {}
    for mid, status in await db.fetchall(
            f"SELECT mid, status FROM send_log WHERE mid IN ({dialect.texts(db, '?')}) "
            "ORDER BY mid, id", (json.dumps(sorted(set(mids))),)):
        out.setdefault(mid, []).append(status)
    return {mid: tuple(statuses) for mid, statuses in out.items()}


async def first_claim(db: Store) -> float | None:
    """When the SendLog's oldest attempt was claimed, or None if it is empty."""
    row = await db.fetchone("SELECT min(claimed_at) FROM send_log")
    return row[0] if row else None
