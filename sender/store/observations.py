"""Observed copies: what ``sender.observe`` read in a mailbox, stored once per copy and recipient.

A scan counts byte-identical copies in a temporary table (so re-reading a mailbox adds
nothing); each copy is traced to its queue row by the Message-ID it carries or, failing that,
by the SendLog entry for the same recipient closest in time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from . import dialect
from .engine import Store

_INSERT = """
INSERT INTO observations(mid, recipient, date, at, subject, source, observed_at, fingerprint, copy,
                         row_id, traced_by)
VALUES (:mid, :recipient, :date, :at, :subject, :source, :observed_at, :fingerprint, :copy,
        :row_id, :traced_by)
ON CONFLICT(fingerprint, recipient, copy) DO NOTHING
"""

_TRACE_BY_TIME = """
SELECT j.key, s.message_id
  FROM json_each(:items) j
  JOIN send_log s
    ON s.recipient IN (json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'))
   AND s.claimed_at BETWEEN json_extract(j.value, '$[2]') - :slack
                        AND json_extract(j.value, '$[2]') + :slack
 ORDER BY j.key, abs(s.claimed_at - json_extract(j.value, '$[2]')), s.id
"""

_TRACE_BY_TIME_PG = """
SELECT j.key - 1, s.message_id
  FROM jsonb_array_elements(CAST(:items AS jsonb)) WITH ORDINALITY AS j(value, key)
  JOIN send_log s
    ON s.recipient IN (j.value->>0, j.value->>1)
   AND s.claimed_at BETWEEN CAST(j.value->>2 AS double precision) - :slack
                        AND CAST(j.value->>2 AS double precision) + :slack
 ORDER BY j.key, abs(s.claimed_at - CAST(j.value->>2 AS double precision)), s.id
"""


async def begin_scan(db: Store) -> None:
    """An empty per-connection table of the copies this scan has counted."""
    await db.execute("CREATE TEMP TABLE IF NOT EXISTS observe_scan (fp TEXT PRIMARY KEY, n INTEGER NOT NULL)"
                     + dialect.pick(db, sqlite=" WITHOUT ROWID", postgres=""))
    await db.execute(f"DELETE FROM {_scan(db)}")


def _scan(db: Store) -> str:
    """The scan's table in the connection's own temporary schema."""
    return dialect.pick(db, sqlite="temp.observe_scan", postgres="pg_temp.observe_scan")


async def end_scan(db: Store) -> None:
    await db.execute(f"DROP TABLE IF EXISTS {_scan(db)}")


async def copy_ordinals(db: Store, fingerprints: list[str]) -> list[int]:
    """The n-th byte-identical copy in this scan is copy n: stable across re-reads."""
    seen = {r[0]: r[1] for r in await db.fetchall(
        f"SELECT fp, n FROM {_scan(db)} WHERE fp IN ({dialect.texts(db, '?')})",
        (json.dumps(sorted(set(fingerprints))),))}
    out = []
    for fp in fingerprints:
        seen[fp] = seen.get(fp, 0) + 1
        out.append(seen[fp])
    await db.executemany(f"INSERT INTO {_scan(db)}(fp, n) VALUES (?, ?) "
                         "ON CONFLICT(fp) DO UPDATE SET n = excluded.n", list(seen.items()))
    return out


async def row_owners(db: Store, rows: Iterable[int]) -> dict[int, str]:
    """Queue rows -> their recipient (lower-cased)."""
    ids = sorted(set(rows))
    if not ids:
        return {}
    return {r[0]: r[1].lower() for r in await db.fetchall(
        "SELECT m.id, r.email FROM messages m JOIN recipients r ON r.id = m.recipient_id "
        f"WHERE m.id IN ({dialect.ids(db, '?')})", (json.dumps(ids),))}


async def closest_sends(db: Store, items: list[tuple[str, str, float]], slack: float) -> dict[int, int]:
    """For each (recipient, recipient as written, time), by position: the queue row of the SendLog
    entry for that recipient closest in time within ``slack`` seconds, where there is one."""
    out: dict[int, int] = {}
    trace = dialect.pick(db, sqlite=_TRACE_BY_TIME, postgres=_TRACE_BY_TIME_PG)
    for key, row in await db.fetchall(trace, {"items": json.dumps(items), "slack": slack}):
        out.setdefault(key, row)  # the first candidate is the closest in time
    return out


async def insert(db: Store, rows: list[dict[str, Any]]) -> int:
    """Store observation rows (a copy already stored is skipped); return how many were new."""
    return await db.executemany(_INSERT, rows)


async def unknown_by_mid(db: Store) -> dict[str, tuple[int, str]]:
    """Every ``unknown`` row's Message-ID -> (row, recipient)."""
    return {r[1]: (r[0], r[2]) for r in await db.fetchall(
        "SELECT m.id, m.message_id, r.email FROM messages m "
        "JOIN recipients r ON r.id = m.recipient_id WHERE m.state = 'unknown'")}

