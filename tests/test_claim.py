"""The claim: durable before SMTP, refused a second time by the SendLog unique index, bounded.

Invariants 1 and 2 of the design. The claim runs against a real SQLite file; what "behind the
store's back" means here is a plain ``sqlite3`` connection writing the file directly, the way a
buggy second code path (the incident's unconditional status write) would. Delivery goes to a
real aiosmtpd on 127.0.0.1, observed from the server side at the moment ``MAIL FROM`` arrives.
"""

from __future__ import annotations

import contextlib
import csv
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sender.intake import NewMessage
from sender.store import claims, sending
from sender.store.db import open_db
from sender.store.enqueue import enqueue
from tests.conftest import Cli, RecordingHandler, SinkThread

LEASE = 300.0


def _query(db_path: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def _write_behind_the_back(db_path: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(sql, params)


async def _seed(db_path: str, rows: list[NewMessage], now: float | None = None) -> None:
    async with open_db(db_path, create=True) as db:
        await enqueue(db, rows, from_addr="team@example.org", from_name="Team", domain=None,
                            now=time.time() if now is None else now)


def _msg(i: int, send_at: float | None = None, sender: str | None = None) -> NewMessage:
    return NewMessage(to=f"lead{i}@example.com", subject=f"s{i}", body=f"b{i}", send_at=send_at,
                      from_addr=sender)


async def _claim(db_path: str, limit: int, now: float, worker: str = "w1",
                 worker_id: int = 1) -> list[sending.Claim]:
    async with open_db(db_path) as db:
        return await sending.claim(db, worker=worker, worker_id=worker_id, limit=limit, lease=LEASE,
                                 now=now)


def _force_back_to_scheduled(db_path: str, row_id: int) -> None:
    """What the incident's unconditional status write did: make a claimed row look unclaimed."""
    _write_behind_the_back(db_path, "UPDATE messages SET state = 'scheduled', claim_token = NULL, "
                                    "worker = NULL, lease_until = NULL WHERE id = ?", (row_id,))


# --- the unique index alone stops a second claim ----------------------------------------------

async def test_second_claim_of_a_forced_back_row_is_refused_by_the_index(db_path: str) -> None:
    """A row forced back to scheduled behind the store's back is not claimed again: it goes to unknown."""
    await _seed(db_path, [_msg(1)])
    [first] = await _claim(db_path, 10, time.time())
    _force_back_to_scheduled(db_path, first.row)
    assert _query(db_path, "SELECT state FROM messages") == [("scheduled",)]

    again = await _claim(db_path, 10, time.time(), worker="w2", worker_id=2)

    assert again == []
    [(state, reason)] = _query(db_path, "SELECT state, last_reply FROM messages WHERE id = ?",
                               (first.row,))
    assert state == "unknown"
    assert "unique index" in reason and "live or successful attempt exists" in reason
    [(actor, action, detail)] = _query(
        db_path, "SELECT actor, action, detail FROM audit WHERE message_id = ?", (first.row,))
    assert (actor, action) == ("w2", "claim-refused") and "UNIQUE" in detail
    # The first attempt's log row is intact and there is no second one.
    assert _query(db_path, "SELECT worker, status, claim_token FROM send_log") == \
        [("w1", "sending", first.token)]


async def test_daemon_meeting_a_forced_back_row_sends_nothing(cli: Cli, sink: SinkThread,
                                                              db_path: str) -> None:
    """A daemon whose claim hits the unique index delivers nothing and leaves the row in unknown."""
    await _seed(db_path, [_msg(1)])
    [first] = await _claim(db_path, 10, time.time())
    _force_back_to_scheduled(db_path, first.row)

    r = cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once", "--worker", "second")

    assert r.code == 0, r.err
    assert sink.received == []
    assert "claim refused by SendLog unique index" in r.err
    assert _query(db_path, "SELECT state FROM messages") == [("unknown",)]
    assert _query(db_path, "SELECT worker, status FROM send_log") == [("w1", "sending")]
    assert _query(db_path, "SELECT actor, action FROM audit") == [("second", "claim-refused")]
    # And a later run does not resend it either: unknown is for an operator.
    assert cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once").code == 0
    assert sink.received == []


async def test_a_sent_row_forced_back_is_not_resent(cli: Cli, sink: SinkThread, db_path: str) -> None:
    """A delivered message flipped back to scheduled by a rogue write is refused, not delivered again."""
    await _seed(db_path, [_msg(1)])
    assert cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once").code == 0
    assert len(sink.received) == 1
    _force_back_to_scheduled(db_path, 1)

    assert cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once").code == 0

    assert len(sink.received) == 1
    assert _query(db_path, "SELECT status FROM send_log") == [("sent",)]
    assert _query(db_path, "SELECT state FROM messages") == [("unknown",)]


async def test_one_refused_row_does_not_hold_back_the_rest_of_a_once_run(
        cli: Cli, sink: SinkThread, db_path: str) -> None:
    """`run --once` still delivers every other due message when one row of its batch is refused."""
    await _seed(db_path, [_msg(i) for i in range(1, 6)])
    [first] = await _claim(db_path, 1, time.time())
    _force_back_to_scheduled(db_path, first.row)

    assert cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once").code == 0

    assert sorted(m.rcpt_tos[0] for m in sink.received) == [f"lead{i}@example.com" for i in range(2, 6)]
    assert _query(db_path, "SELECT state, count(*) FROM messages GROUP BY state") == \
        [("sent", 4), ("unknown", 1)]


# --- the durable claim precedes SMTP ----------------------------------------------------------

@dataclass
class Seen:
    """The database as a separate connection saw it when MAIL FROM arrived."""

    mail_from: str
    state: str | None
    log: list[tuple[str, str]]
    token: str | None


class Observer:
    """An ``on_mail`` hook: reads the queue file from its own sqlite3 connection, in the sink's
    thread, while the sender is blocked waiting for the reply to MAIL FROM."""

    def __init__(self) -> None:
        self.db_path = ""
        self.seen: list[Seen] = []
        self.lock = threading.Lock()

    def __call__(self, address: str) -> None:
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as conn:
            row = conn.execute(
                "SELECT m.id, m.state, m.claim_token FROM messages m "
                "JOIN message_bodies b ON b.message_id = m.id WHERE b.from_addr = ?",
                (address,)).fetchone()
            log = conn.execute("SELECT status, claim_token FROM send_log WHERE message_id = ?",
                               (row[0],)).fetchall() if row else []
        with self.lock:
            self.seen.append(Seen(address, row[1] if row else None, log, row[2] if row else None))


@pytest.fixture
def observed_sink(tmp_path: Path) -> Iterator[tuple[SinkThread, Observer]]:
    observer = Observer()
    with SinkThread(RecordingHandler(tmp_path / "observed-maildir", on_mail=observer)) as running:
        yield running, observer


@pytest.mark.parametrize("prefetch", ["0", "2"])
def test_row_is_sending_and_logged_before_mail_from(cli: Cli, observed_sink: tuple[SinkThread, Observer],
                                                    db_path: str, tmp_path: Path, prefetch: str) -> None:
    """At every MAIL FROM, another connection already sees the row `sending` with its SendLog row
    committed: claimed just in time or ahead (`--prefetch 2`)."""
    sink, observer = observed_sink
    observer.db_path = db_path
    n = 12
    path = tmp_path / "leads.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["to", "subject", "body", "from"])
        # A distinct From per row lets the observer tell which row a MAIL FROM is about.
        out.writerows([f"lead{i}@example.com", f"s{i}", "b", f"team+{i}@example.org"] for i in range(n))
    assert cli("enqueue", "--db", db_path, "--csv", str(path)).code == 0

    r = cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once", "--concurrency", "4",
            "--prefetch", prefetch)

    assert r.code == 0, r.err
    assert len(sink.received) == n
    assert sorted(s.mail_from for s in observer.seen) == sorted(f"team+{i}@example.org" for i in range(n))
    for seen in observer.seen:
        assert seen.state == "sending", seen
        assert seen.log == [("sending", seen.token)], seen
    assert _query(db_path, "SELECT state, count(*) FROM messages GROUP BY state") == [("sent", n)]


async def test_queue_connection_is_wal_with_full_sync(db_path: str) -> None:
    """The connection that commits claims runs WAL with synchronous=FULL, so a commit survives power loss."""
    async with open_db(db_path, create=True) as db:
        assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"  # type: ignore[index]
        assert (await db.fetchone("PRAGMA synchronous"))[0] == 2  # type: ignore[index]
        assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
        assert (await db.fetchone("PRAGMA temp_store"))[0] == 2  # type: ignore[index]  # scratch in memory


@pytest.mark.parametrize("sql", [claims._FAST, claims._LOG, claims._DETAILS, sending._RECORD_MESSAGES,
                                 sending._RECORD_LOG],
                         ids=["claim", "log", "details", "record-messages", "record-log"])
async def test_hot_statements_touch_only_the_rows_they_name(db_path: str, sql: str) -> None:
    """Claim and outcome statements reach rows by id or the due index, never by walking a state:
    recording outcomes once walked every `unknown` row per batch (quadratic in the batch, and
    linear in the unknown backlog)."""
    async with open_db(db_path, create=True):
        pass
    params = {"rows": "[]", "ids": "[]", "now": 0.0, "token": "t", "worker": "w", "lease": 0.0, "limit": 8}
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        steps = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    for step in steps:
        assert not step.startswith(("SCAN messages", "SCAN send_log", "SCAN m", "SCAN s ")), steps
        assert "messages_state_updated" not in step, steps


# --- what a claim takes -----------------------------------------------------------------------

async def test_claim_takes_at_most_limit_rows_and_logs_each(db_path: str) -> None:
    """A claim moves no more than `limit` rows, all under one token, each with its SendLog row."""
    now = time.time()
    await _seed(db_path, [_msg(i) for i in range(10)], now=now - 10)

    claims = await _claim(db_path, 3, now)

    assert len(claims) == 3
    assert len({c.token for c in claims}) == 1
    assert all(c.attempt == 1 for c in claims)
    ids = tuple(sorted(c.row for c in claims))
    assert _query(db_path, "SELECT state, count(*) FROM messages GROUP BY state") == \
        [("scheduled", 7), ("sending", 3)]
    assert _query(db_path, "SELECT message_id, status, claim_token, attempt FROM send_log ORDER BY 1") \
        == [(i, "sending", claims[0].token, 1) for i in ids]
    [(lease,)] = _query(db_path, "SELECT DISTINCT lease_until FROM messages WHERE state = 'sending'")
    assert lease == pytest.approx(now + LEASE)
    # The claimed message carries what the SMTP session needs, with the Message-ID from enqueue.
    stored = dict(_query(db_path, "SELECT id, message_id FROM messages"))
    assert {c.row: c.mid for c in claims} == {i: stored[i] for i in ids}


async def test_claim_takes_the_earliest_due_first(db_path: str) -> None:
    """Rows are claimed in due order, not insertion order."""
    now = time.time()
    dues = [now - 50, now - 10, now - 40, now - 20, now - 30]
    await _seed(db_path, [_msg(i, send_at=due) for i, due in enumerate(dues)], now=now - 60)

    first = await _claim(db_path, 2, now)
    rest = await _claim(db_path, 10, now, worker="w2", worker_id=2)

    due_of = dict(_query(db_path, "SELECT id, due_at FROM messages"))
    assert [due_of[c.row] for c in first] == pytest.approx([now - 50, now - 40])
    assert [due_of[c.row] for c in rest] == pytest.approx([now - 30, now - 20, now - 10])


async def test_future_send_at_is_not_claimed_until_due(db_path: str) -> None:
    """A message whose send_at is in the future stays scheduled until that moment."""
    now = time.time()
    await _seed(db_path, [_msg(1, send_at=now + 3600), _msg(2)], now=now)

    claims = await _claim(db_path, 10, now + 1)
    assert [c.recipient for c in claims] == ["lead2@example.com"]
    assert _query(db_path, "SELECT state FROM messages WHERE id = 1") == [("scheduled",)]
    assert _query(db_path, "SELECT count(*) FROM send_log WHERE message_id = 1") == [(0,)]

    assert await _claim(db_path, 10, now + 3599) == []
    later = await _claim(db_path, 10, now + 3600)
    assert [c.recipient for c in later] == ["lead1@example.com"]


async def test_a_claimed_row_is_not_claimed_again(db_path: str) -> None:
    """Two claims in a row never return the same message: the second finds nothing left."""
    now = time.time()
    await _seed(db_path, [_msg(i) for i in range(4)], now=now - 1)

    a = await _claim(db_path, 10, now, worker="a", worker_id=1)
    b = await _claim(db_path, 10, now, worker="b", worker_id=2)

    assert len(a) == 4 and b == []
    assert _query(db_path, "SELECT count(*), count(DISTINCT message_id) FROM send_log") == [(4, 4)]
