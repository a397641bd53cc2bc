"""Operator resolution from the command line: resolve settles only unknown messages, writes an
audit row, refuses anything else without changing a row; requeue keeps the Message-ID; status
reports workers. The resolve and status tests run on both engines (``queue``)."""

from __future__ import annotations

import json

from tests.conftest import Cli, Faults, SinkThread
from tests.support import log_statuses, one, query, run_once, seed


async def make_unknown(db_path: str, sink: SinkThread, faults: Faults, n: int = 3) -> None:
    faults.data = lambda rcpt: "DROP"
    await seed(db_path, n)
    await run_once(db_path, sink.port)
    faults.data = None


async def test_resolve_sent_failed_requeue(queue: str, cli: Cli, faulty_sink: SinkThread,
                                           faults: Faults) -> None:
    """Each resolution moves exactly its row, records an audit row, and requeue resends with the same Message-ID."""
    await make_unknown(queue, faulty_sink, faults)
    mid3 = one(queue, 3)["message_id"]
    assert cli("resolve", "--db", queue, "1", "--as", "sent").code == 0
    assert cli("resolve", "--db", queue, "2", "--as", "failed", "--reason", "bounced").code == 0
    assert cli("resolve", "--db", queue, "3", "--as", "requeue").code == 0
    assert [one(queue, i)["state"] for i in (1, 2, 3)] == ["sent", "failed", "scheduled"]
    assert log_statuses(queue, 3) == ["requeued"]
    actions = [r[0] for r in query(queue, "SELECT action FROM audit ORDER BY id")]
    assert actions == ["resolve-sent", "resolve-failed", "resolve-requeue"]
    await run_once(queue, faulty_sink.port)
    assert one(queue, 3)["state"] == "sent" and one(queue, 3)["message_id"] == mid3
    copies = [r.message_id for r in faulty_sink.received if r.rcpt_tos == ["r2@example.com"]]
    assert copies == [mid3, mid3]  # the dropped first copy and the resend share one Message-ID
    assert log_statuses(queue, 3) == ["requeued", "sent"]


async def test_resolve_refuses_other_states_and_changes_nothing(queue: str, cli: Cli,
                                                                faulty_sink: SinkThread, faults: Faults) -> None:
    """One id not unknown (or missing) in the list: exit 2 with a one-line reason, no row changed."""
    await make_unknown(queue, faulty_sink, faults, n=2)
    await seed(queue, 1, prefix="other")
    before = query(queue, "SELECT id, state, updated_at FROM messages ORDER BY id")
    r = cli("resolve", "--db", queue, "1", "3", "--as", "sent")
    assert r.code == 2 and "3 is scheduled" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("resolve", "--db", queue, "1", "99", "--as", "sent")
    assert r.code == 2 and "99" in r.err
    assert query(queue, "SELECT id, state, updated_at FROM messages ORDER BY id") == before
    assert query(queue, "SELECT count(*) FROM audit") == [(0,)]


async def test_status_json_has_states_and_workers(queue: str, cli: Cli, sink: SinkThread) -> None:
    """status --json has every state key plus worker counts; a finished run counts as stopped."""
    await seed(queue, 2)
    await run_once(queue, sink.port)
    data = json.loads(cli("status", "--db", queue, "--json").out)
    assert {k: data[k] for k in ("scheduled", "sending", "sent", "failed", "unknown", "cancelled")} == {
        "scheduled": 0, "sending": 0, "sent": 2, "failed": 0, "unknown": 0, "cancelled": 0}
    assert data["workers"] == {"alive": 0, "stopped": 1, "presumed_dead": 0}


def test_readers_refuse_a_missing_or_foreign_file(cli: Cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A missing file, a non-SQLite file and someone else's SQLite file: exit 2, one clear line."""
    import sqlite3

    r = cli("status", "--db", str(tmp_path / "nope.db"))
    assert r.code == 2 and "no queue database" in r.err
    (tmp_path / "junk.db").write_bytes(b"hello, not a database" * 100)
    r = cli("status", "--db", str(tmp_path / "junk.db"))
    assert r.code == 2 and "not a sender queue" in r.err
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t(x)")
    other.commit()
    other.close()
    for command in ("status", "run"):
        r = cli(command, "--db", str(tmp_path / "other.db"))
        assert r.code == 2 and "not a sender queue" in r.err, r.err


def test_newer_schema_is_refused(cli: Cli, db_path: str) -> None:
    """A file written by a newer sender is refused (exit 2) by writers and readers alike."""
    import sqlite3

    assert cli("init", "--db", db_path).code == 0
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    for args in (("status",), ("init",), ("run", "--once")):
        r = cli(*args, "--db", db_path)
        assert r.code == 2 and "newer" in r.err, r.err


async def test_old_stopped_workers_are_pruned(db_path: str, sink: SinkThread) -> None:
    """Worker rows stopped over 30 days ago are deleted when a worker starts; recent and running ones stay."""
    import sqlite3
    import time

    await seed(db_path, 1)
    conn = sqlite3.connect(db_path)
    old = time.time() - 40 * 86400
    conn.executemany("INSERT INTO workers(name, pid, host, started_at, heartbeat_at, stopped_at) "
                     "VALUES (?, 1, 'h', ?, ?, ?)",
                     [("old", old, old, old), ("recent", time.time() - 86400, time.time() - 86400,
                                                time.time() - 86400), ("running", old, old, None)])
    conn.commit()
    conn.close()
    await run_once(db_path, sink.port)
    assert sorted(r[0] for r in query(db_path, "SELECT name FROM workers")) == ["recent", "running", "test"]
