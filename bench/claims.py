"""Claims: rows/s of ``sender.queue`` transactions next to the raw SQL doing the same work.

Both sides run durable transactions on the same kind of file (WAL, ``synchronous=FULL``,
``BEGIN IMMEDIATE``). The raw side is plain ``sqlite3`` on the calling thread: one
``UPDATE ... RETURNING`` moving the first due rows (priority, due time, id; paused campaigns and
expired rows left alone) to ``sending`` plus one ``INSERT ... SELECT`` of their SendLog rows (and
for the exchange, the outcome updates as two ``executemany``). It leaves out what the sender
adds around that: the expiry sweep, the pause check, one ``UPDATE`` per priority, savepoints
and reading the claimed bodies back. The gap between
the two is what the wrapper costs: aiosqlite's thread hops, savepoints, the paused-flag check and
fetching the bodies.

Batch 8 is what the daemon claims per turn at concurrency 8; 64 is ``--batch``'s default. The
last rows repeat batch 8 on a deep queue, where the plan SQLite picks for the claim matters;
"INDEXED BY" is the same SQL with the planner pinned to the ``messages_due`` partial index.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

from sender.store import sending
from sender.store.db import open_db

from .common import Result, copy_db, template

BATCHES = (8, 64)
EXCHANGE_BATCH = 8
LEASE = 300.0

_DUE = """
SELECT id FROM messages {pin}
 WHERE state = 'scheduled' AND due_at <= :now
   AND campaign_id NOT IN (SELECT id FROM campaigns WHERE paused IS NOT NULL)
 ORDER BY priority, due_at, id LIMIT :limit
"""
_MOVE = """
UPDATE messages SET state = 'sending', claim_token = :token, worker = :worker,
       lease_until = :lease, updated_at = :now, defer_reason = NULL
 WHERE id IN ({due}) AND {plus}state = 'scheduled' AND (expires_at IS NULL OR expires_at > :now)
RETURNING id
"""
_RAW_CLAIM = _MOVE.format(due=_DUE.format(pin=""), plus="")
# The same claim with the planner pinned to the partial index (see the profile notes): without
# sqlite_stat1, SQLite may pick messages_state_updated and sort every scheduled row.
_RAW_CLAIM_PINNED = _MOVE.format(due=_DUE.format(pin="INDEXED BY messages_due"), plus="+")
_RAW_LOG = """
INSERT INTO send_log(message_id, dedupe_key, mid, recipient, campaign, sender, attempt, worker,
                     claim_token, status, claimed_at)
SELECT m.id, m.dedupe_key, m.message_id, r.email, c.name, b.from_addr, m.attempts + 1, :worker,
       :token, 'sending', :now
  FROM messages m JOIN recipients r ON r.id = m.recipient_id
  JOIN campaigns c ON c.id = m.campaign_id JOIN message_bodies b ON b.message_id = m.id
 WHERE m.id IN (SELECT value FROM json_each(:ids))
"""
_RAW_DONE = ("UPDATE messages SET state = 'sent', attempts = attempts + 1, last_reply = '250 OK', "
             "lease_until = NULL, updated_at = ? WHERE id = ? AND claim_token = ? "
             "AND state IN ('sending', 'unknown')")
_RAW_DONE_LOG = ("UPDATE send_log SET status = 'sent', finished_at = ?, smtp_code = 250, "
                 "smtp_reply = 'OK' WHERE message_id = ? AND claim_token = ? "
                 "AND status IN ('sending', 'unknown')")


def raw_claims(path: Path, batch: int, total: int, deadline: float, record: bool = False,
               claim_sql: str = _RAW_CLAIM) -> int:
    """Claim (and with ``record``, also complete the previous batch) until ``total`` rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    claimed = 0
    previous: list[tuple[float, int, str]] = []
    try:
        while claimed < total and time.perf_counter() < deadline:
            now, token = time.time(), f"9.{secrets.token_hex(6)}"
            params = {"token": token, "worker": "bench", "lease": now + LEASE, "now": now,
                      "limit": batch}
            conn.execute("BEGIN IMMEDIATE")
            if record and previous:
                conn.executemany(_RAW_DONE, previous)
                conn.executemany(_RAW_DONE_LOG, previous)
            ids = [r[0] for r in conn.execute(claim_sql, params)]
            if ids:
                conn.execute(_RAW_LOG, {**params, "ids": json.dumps(ids)})
            conn.execute("COMMIT")
            if not ids:
                break
            previous = [(now, i, token) for i in ids]
            claimed += len(ids)
    finally:
        conn.close()
    return claimed


async def sender_claims(path: Path, batch: int, total: int, deadline: float,
                        record: bool = False) -> int:
    claimed = 0
    previous: list[sending.Outcome] = []
    async with open_db(str(path)) as db:
        worker_id = await sending.register_worker(db, "bench", 1, "bench", time.time())
        while claimed < total and time.perf_counter() < deadline:
            turn = await sending.exchange(db, previous if record else (), worker="bench",
                                        worker_id=worker_id, limit=batch, lease=LEASE, now=time.time())
            claims = turn.claims
            if not claims:
                break
            previous = [sending.Outcome(c.row, c.token, "sent", 250, "OK", None, c.mid, c.recipient)
                        for c in claims]
            claimed += len(claims)
    return claimed


def run(total: int, deep: int, repeat: int, timeout: float) -> list[Result]:
    """Claims on a queue of ``total`` due rows (drained), then on a queue of ``deep`` rows
    (time-bounded: the point there is how the claim scales with the depth of the queue)."""
    results: list[Result] = []
    variants: list[tuple[str, int, bool, int]] = [
        *((f"claim, batch {b}", b, False, total) for b in BATCHES),
        (f"record {EXCHANGE_BATCH} + claim {EXCHANGE_BATCH}", EXCHANGE_BATCH, True, total),
        (f"claim, batch {EXCHANGE_BATCH}, queue of {deep:,}", EXCHANGE_BATCH, False, deep)]
    budget = timeout / (3 * repeat * len(variants))
    with tempfile.TemporaryDirectory(prefix="bench-claims-") as tmp:
        for label, batch, record, depth in variants:
            source = template(depth)
            sides = [("sender.queue", None), ("raw sqlite3", _RAW_CLAIM)]
            if depth == deep:
                sides.append(("raw sqlite3, INDEXED BY messages_due", _RAW_CLAIM_PINNED))
            rows = [Result("claims", f"{label}: {name}", "rows/s") for name, _sql in sides]
            ratio = Result("claims", f"{label}: sender.queue / raw", "x")
            for i in range(repeat):
                for result, (_name, sql) in zip(rows, sides, strict=True):
                    db = copy_db(source, Path(tmp) / f"claims{i}.db")
                    started = time.perf_counter()
                    deadline = started + budget
                    if sql is None:
                        n = asyncio.run(sender_claims(db, batch, total, deadline, record))
                    else:
                        n = raw_claims(db, batch, total, deadline, record, sql)
                    result.runs.append(n / (time.perf_counter() - started))
                    db.unlink()
                ratio.runs.append(rows[0].runs[-1] / rows[1].runs[-1])
            rows[0].note = f"up to {total:,} rows or {budget:.0f}s"
            results += [*rows, ratio]
    return results
