"""A queue with more than a page of every finding, and a queue with campaigns a sample would miscount.

``build`` makes, in one transaction of plain SQL (the schema's triggers keep the state counters
and the shared pairs, as enqueue would): ``GHOSTS`` Message-IDs observed but never logged,
``REPEATED`` logged Message-IDs a mailbox holds twice, ``MULTI`` recipients each sent two
messages of one campaign, ``UNKNOWN`` unknown messages and ``STALE`` claims whose lease ran out
(a worker that stopped heartbeating). Everything happens in the hour before ``T0``, the tests'
fixed clock, so a report window ending at ``T0`` (or the report's own, anchored at the newest
activity) holds all of it.

``build_campaigns`` makes ``CAMPAIGNS`` campaigns of ``PER_CAMPAIGN`` scheduled messages each, the
first campaign's due first: the first 2,000 in claim order (the old sample) hold all of it, a
third of the second (and none of its due messages past the 500th) and none of the third.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sender.store.db import open_db
from tests.test_store_views import T0

GHOSTS, REPEATED, MULTI, UNKNOWN, STALE = 120, 105, 110, 150, 130
TOTAL = GHOSTS + REPEATED + MULTI + UNKNOWN + STALE
SOURCE = "maildir:/srv/bcc"
CAMPAIGNS, PER_CAMPAIGN = ("alpha", "bravo", "charlie"), 1_500
# The first due time of each campaign (then one a second): alpha all due, bravo half, charlie none.
DUE = (T0 - 20_000, T0 - PER_CAMPAIGN // 2 + 1, T0 + 3600)


async def _create(path: Path) -> sqlite3.Connection:
    async with open_db(str(path), create=True):
        pass
    return sqlite3.connect(path)


def _message(conn: sqlite3.Connection, row: int, campaign: int, recipient: int, state: str,
             at: float, **extra: object) -> str:
    mid = f"<{row}.f{row:05d}@example.org>"
    columns = {"id": row, "campaign_id": campaign, "recipient_id": recipient,
               "dedupe_key": f"k{row}", "message_id": mid, "state": state, "due_at": at,
               "attempts": 0 if state == "scheduled" else 1, "created_at": T0 - 7200,
               "updated_at": at, **extra}
    conn.execute(f"INSERT INTO messages({', '.join(columns)}) VALUES "
                 f"({', '.join('?' * len(columns))})", tuple(columns.values()))
    return mid


def _log(conn: sqlite3.Connection, row: int, mid: str, email: str, campaign: str, status: str,
         at: float, token: str) -> None:
    conn.execute(
        "INSERT INTO send_log(message_id, dedupe_key, mid, recipient, campaign, attempt, worker, "
        "claim_token, status, claimed_at, finished_at, smtp_code) VALUES (?, ?, ?, ?, ?, 1, 'w1', "
        "?, ?, ?, ?, ?)", (row, f"k{row}", mid, email, campaign, token, status, at,
                           None if status == "sending" else at + 1,
                           250 if status == "sent" else None))


def _observe(conn: sqlite3.Connection, mid: str, email: str, at: float, copy: int,
             row: int | None) -> None:
    conn.execute(
        "INSERT INTO observations(mid, recipient, date, at, subject, source, observed_at, "
        "fingerprint, copy, row_id, traced_by) VALUES (?, ?, ?, ?, 's', ?, ?, ?, ?, ?, ?)",
        (mid, email, at, at, SOURCE, T0 - 60, f"fp-{mid}", copy, row,
         None if row is None else "message-id"))


async def build(path: Path) -> str:
    conn = await _create(path)
    with conn:
        conn.execute("INSERT INTO campaigns(id, name, created_at) VALUES (1, 'bulk', 0), "
                     "(2, 'drip', 0)")
        conn.execute("INSERT INTO workers(id, name, pid, host, started_at, heartbeat_at) "
                     "VALUES (1, 'w1', 1, 'host-a', ?, ?)", (T0 - 7200, T0 - 3000))
        row = 0
        for i in range(UNKNOWN):
            row += 1
            conn.execute("INSERT INTO recipients(id, email) VALUES (?, ?)", (row, f"u{i}@example.com"))
            _message(conn, row, 1, row, "unknown", T0 - 3500 + i, last_reply="connection lost")
        for i in range(STALE):
            row += 1
            email = f"s{i}@example.com"
            conn.execute("INSERT INTO recipients(id, email) VALUES (?, ?)", (row, email))
            mid = _message(conn, row, 1, row, "sending", T0 - 3300 + i, claim_token=f"1.{row}",
                           worker="w1", lease_until=T0 - 3000 + i)
            _log(conn, row, mid, email, "bulk", "sending", T0 - 3300 + i, f"1.{row}")
        for i in range(MULTI):
            row += 1
            email = f"m{i}@example.com"
            conn.execute("INSERT INTO recipients(id, email) VALUES (?, ?)", (row, email))
            for step in (0, 1):
                mid = _message(conn, row * 10 + step, 2, row, "sent", T0 - 3000 + i * 2 + step)
                _log(conn, row * 10 + step, mid, email, "drip", "sent", T0 - 3000 + i * 2 + step,
                     f"1.{row}.{step}")
        for i in range(REPEATED):
            row += 1
            email = f"r{i}@example.com"
            conn.execute("INSERT INTO recipients(id, email) VALUES (?, ?)", (row, email))
            mid = _message(conn, row, 1, row, "sent", T0 - 2500 + i)
            _log(conn, row, mid, email, "bulk", "sent", T0 - 2500 + i, f"1.{row}")
            for copy in (1, 2):
                _observe(conn, mid, email, T0 - 2500 + i, copy, row)
        for i in range(GHOSTS):
            _observe(conn, f"<ghost.{i:04d}@elsewhere.example>", f"g{i}@example.com",
                     T0 - 2000 + i, 1, None)
    conn.close()
    return str(path)


async def build_campaigns(path: Path) -> str:
    conn = await _create(path)
    with conn:
        for number, name in enumerate(CAMPAIGNS, start=1):
            conn.execute("INSERT INTO campaigns(id, name, created_at) VALUES (?, ?, 0)",
                         (number, name))
        row = 0
        for number, _name in enumerate(CAMPAIGNS, start=1):
            for i in range(PER_CAMPAIGN):
                row += 1
                conn.execute("INSERT INTO recipients(id, email) VALUES (?, ?)",
                             (row, f"c{row}@example.com"))
                _message(conn, row, number, row, "scheduled", DUE[number - 1] + i)
    conn.close()
    return str(path)
