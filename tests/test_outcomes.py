"""What the SMTP server answers decides the state: failed, retried or unknown, never guessed.

Each test queues through the command line, runs ``python -m sender run --once`` as a real process
against a real aiosmtpd on 127.0.0.1 that injects one fault, and checks both what the server
kept and what the database (message row and SendLog) says.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import Any

from tests.conftest import Cli, Faults, SinkThread


def _query(db_path: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def _enqueue(cli: Cli, db_path: str, *recipients: str) -> None:
    for to in recipients:
        r = cli("enqueue", "--db", db_path, "--to", to, "--subject", f"For {to}", "--body", "Hello",
                "--from", "team@example.org")
        assert r.code == 0, r.err


def _row(db_path: str, to: str) -> dict[str, Any]:
    [row] = _query(db_path, "SELECT m.id, m.state, m.attempts, m.last_reply, m.due_at, m.message_id "
                            "FROM messages m JOIN recipients r ON r.id = m.recipient_id "
                            "WHERE r.email = ?", (to,))
    return dict(zip(("id", "state", "attempts", "reply", "due_at", "mid"), row, strict=True))


def _log(db_path: str, row_id: int) -> list[tuple[Any, ...]]:
    return _query(db_path, "SELECT status, smtp_code, attempt FROM send_log WHERE message_id = ? "
                           "ORDER BY id", (row_id,))


def _run(cli: Cli, db_path: str, sink: SinkThread) -> None:
    r = cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once", "--timeout", "5")
    assert r.code == 0, r.err


def test_550_at_rcpt_is_failed_with_reason(cli: Cli, faulty_sink: SinkThread, faults: Faults,
                                           db_path: str) -> None:
    """A 550 to RCPT TO fails that message with the reply stored, and the others still go out."""
    faults.rcpt = lambda rcpt: "550 5.1.1 <gone@example.com>: no such user" if rcpt.startswith("gone") else None
    _enqueue(cli, db_path, "gone@example.com", "here@example.com")

    _run(cli, db_path, faulty_sink)

    assert [m.rcpt_tos for m in faulty_sink.received] == [["here@example.com"]]
    gone = _row(db_path, "gone@example.com")
    assert gone["state"] == "failed"
    assert "550" in gone["reply"] and "no such user" in gone["reply"]
    assert _log(db_path, gone["id"]) == [("failed", 550, 1)]
    assert _row(db_path, "here@example.com")["state"] == "sent"
    # A later run leaves a failed message alone.
    _run(cli, db_path, faulty_sink)
    assert len(faulty_sink.received) == 1 and _row(db_path, "gone@example.com")["state"] == "failed"


def test_451_at_data_is_rescheduled_with_one_attempt(cli: Cli, faulty_sink: SinkThread, faults: Faults,
                                                     db_path: str) -> None:
    """A 451 after DATA puts the message back to scheduled with attempts 1 and a later due time."""
    faults.data = lambda rcpt: "451 4.3.0 Mailbox busy"
    _enqueue(cli, db_path, "busy@example.com")
    before = time.time()

    _run(cli, db_path, faulty_sink)

    assert faulty_sink.received == []
    row = _row(db_path, "busy@example.com")
    assert (row["state"], row["attempts"]) == ("scheduled", 1)
    assert row["due_at"] > before + 1
    assert "451" in row["reply"]
    assert _log(db_path, row["id"]) == [("retry", 451, 1)]


def test_drop_after_data_is_unknown_and_not_resent(cli: Cli, faulty_sink: SinkThread, faults: Faults,
                                                   db_path: str) -> None:
    """A connection lost after the data arrived leaves the message unknown; a second run does not resend it."""
    faults.data = lambda rcpt: "DROP"
    _enqueue(cli, db_path, "maybe@example.com")

    _run(cli, db_path, faulty_sink)

    assert len(faulty_sink.received) == 1
    row = _row(db_path, "maybe@example.com")
    assert row["state"] == "unknown"
    assert faulty_sink.received[0].message_id == row["mid"]
    assert _log(db_path, row["id"]) == [("unknown", None, 1)]

    faults.data = None  # the server is healthy again: still nothing may be resent automatically
    _run(cli, db_path, faulty_sink)

    assert len(faulty_sink.received) == 1
    assert _row(db_path, "maybe@example.com")["state"] == "unknown"
    assert len(_log(db_path, row["id"])) == 1


def test_retry_reuses_the_message_id(cli: Cli, faulty_sink: SinkThread, faults: Faults,
                                     db_path: str) -> None:
    """After a 451, the next attempt carries the same Message-ID, which embeds the queue row id."""
    faults.data = lambda rcpt: "451 4.3.0 Temporary failure"
    _enqueue(cli, db_path, "grey@example.com")
    _run(cli, db_path, faulty_sink)
    row = _row(db_path, "grey@example.com")
    assert row["state"] == "scheduled"

    faults.data = None
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE messages SET due_at = 0 WHERE id = ?", (row["id"],))  # skip the backoff
    _run(cli, db_path, faulty_sink)

    [got] = faulty_sink.received
    assert got.message_id == row["mid"]
    assert row["mid"].startswith(f"<{row['id']}.")
    after = _row(db_path, "grey@example.com")
    assert (after["state"], after["attempts"]) == ("sent", 2)
    assert _query(db_path, "SELECT status, mid, attempt FROM send_log WHERE message_id = ? ORDER BY id",
                  (row["id"],)) == [("retry", row["mid"], 1), ("sent", row["mid"], 2)]
