"""Wake-ups on PostgreSQL: an idle daemon is woken by ``LISTEN/NOTIFY`` when rows are enqueued,
made due or resumed, and sleeps until a future row's due time, so latency does not depend on
``--poll``; a lost listening connection never stops it.

Daemons run as real processes (``--poll 30 --heartbeat 30``: without wake-ups such a daemon looks
at the queue every 30 s), or in-process where a test counts turns; each test gets a fresh
database (``tests/pg.py``); the sink is a real aiosmtpd.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sender.daemon import Daemon
from sender.delivery import pool
from sender.intake import NewMessage
from sender.store.engine import open_store
from sender.store.enqueue import enqueue
from sender.store.pg_listen import APPLICATION, SPACING
from sender.store.pg_schema import CHANNEL
from sender.times import iso
from tests import pg
from tests.conftest import Cli, SinkThread
from tests.support import settings

IDLE = ("--poll", "30", "--heartbeat", "30")
FROM = ("--from", "team@example.org")


def _wait(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _listeners(url: str) -> list[int]:
    """The server processes of this database's listening connections."""
    name = url.rsplit("/", 1)[1]
    return [int(r[0]) for r in pg.query(url, "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                                              "AND application_name = %s", (name, APPLICATION))]


@contextmanager
def _daemon(cli: Cli, url: str, sink: SinkThread, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """``sender run`` as a real process, listening (and idle) when the block starts; stopped after it."""
    proc = cli.popen("run", "--db", url, "--smtp-port", str(sink.port), "--worker", "idle", *IDLE, *extra)
    try:
        _wait("the daemon's listener", lambda: _listeners(url) or proc.poll() is not None, 15)
        assert proc.poll() is None, proc.log_path.read_text()  # type: ignore[attr-defined]
        time.sleep(0.3)  # its first turns are done: idle until woken
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _log(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


def _enqueue(cli: Cli, url: str, to: str, *extra: str) -> float:
    """Enqueue one message with the CLI; the time its command started (its commit is later)."""
    started = time.time()
    r = cli("enqueue", "--db", url, "--to", to, "--subject", "s", "--body", "b", *FROM, *extra)
    assert r.code == 0, r.err
    return started


def _delivered(sink: SinkThread, n: int, timeout: float) -> float:
    """When the sink received its ``n``-th message."""
    _wait(f"{n} message(s) at the sink", lambda: len(sink.received) >= n, timeout)
    return sink.received[n - 1].at


def test_an_idle_daemon_is_woken_by_an_enqueue(cli: Cli, sink: SinkThread, pg_database: str,
                                               record_property: pytest.RecordProperty) -> None:
    """A daemon idle with ``--poll 30`` delivers a message enqueued by the CLI within a second or
    two, not at its next poll; the queue says sent."""
    assert cli("init", "--db", pg_database).code == 0
    latencies = []
    with _daemon(cli, pg_database, sink) as proc:
        for n in range(1, 4):
            started = _enqueue(cli, pg_database, f"lead{n}@example.com")
            latencies.append(_delivered(sink, n, 10) - started)
            time.sleep(0.5)
        assert proc.poll() is None
    record_property("wake_latency_s", latencies)
    assert max(latencies) < 5, f"enqueue -> delivered: {latencies}"
    print(f"enqueue command started -> delivered, --poll 30: {', '.join(f'{s:.3f}s' for s in latencies)}")
    assert pg.query(pg_database, "SELECT state, count(*) FROM messages GROUP BY state") == [("sent", 3)]
    assert "WARNING" not in _log(proc), _log(proc)


def test_a_message_due_in_two_seconds_is_sent_at_two_seconds(cli: Cli, sink: SinkThread,
                                                             pg_database: str) -> None:
    """A message enqueued due in 2 s is sent when it falls due, not at the next 30 s poll, and
    not before."""
    assert cli("init", "--db", pg_database).code == 0
    with _daemon(cli, pg_database, sink):
        due = time.time() + 2.0
        _enqueue(cli, pg_database, "later@example.com", "--send-at", str(iso(due)))
        sent = _delivered(sink, 1, 15)
    assert due <= sent < due + 2.0, f"due at {due:.3f}, sent {sent - due:+.3f}s from it"
    print(f"due in 2 s: sent {sent - due:+.3f}s from its due time")


def test_resume_wakes_a_paused_daemon(cli: Cli, sink: SinkThread, pg_database: str) -> None:
    """A message queued while sending is paused goes out as soon as an operator resumes."""
    assert cli("init", "--db", pg_database).code == 0
    with _daemon(cli, pg_database, sink):
        assert cli("pause", "--db", pg_database, "--reason", "checking").code == 0
        _enqueue(cli, pg_database, "held@example.com")
        time.sleep(1.0)
        assert sink.received == []
        assert cli("resume", "--db", pg_database).code == 0
        resumed = time.time()
        sent = _delivered(sink, 1, 10)
    assert sent - resumed < 5, f"resume -> delivered: {sent - resumed:.3f}s"


def test_a_dropped_listener_reconnects_and_the_daemon_still_sends(cli: Cli, sink: SinkThread,
                                                                  pg_database: str) -> None:
    """The listening connection terminated by the server (``pg_terminate_backend``) is said once,
    reconnected, and the daemon keeps running and sending at once."""
    assert cli("init", "--db", pg_database).code == 0
    with _daemon(cli, pg_database, sink) as proc:
        [first] = _listeners(pg_database)
        pg.query(pg_database, "SELECT pg_terminate_backend(%s)", (first,))
        _wait("a new listener", lambda: [p for p in _listeners(pg_database) if p != first], 15)
        started = _enqueue(cli, pg_database, "after@example.com")
        latency = _delivered(sink, 1, 10) - started
        assert proc.poll() is None, _log(proc)
    assert latency < 5, f"enqueue -> delivered after the reconnection: {latency:.3f}s"
    log = _log(proc)
    assert log.count("no wake-ups from PostgreSQL") == 1 and "wake-ups back" in log, log
    assert "Traceback" not in log, log


async def test_a_listener_that_cannot_connect_leaves_the_daemon_polling(
        sink: SinkThread, pg_database: str, caplog: pytest.LogCaptureFixture) -> None:
    """When the listening connection cannot be made at all, the daemon warns once and polls: the
    message is still sent, and stopping leaves nothing running."""
    caplog.set_level(logging.DEBUG, logger="sender.store.pg_listen")
    s = settings(pg_database, sink.port, poll=0.3, heartbeat=30.0, lease=300.0)
    async with open_store(pg_database, create=True) as db:
        db.target = "postgresql://postgres@127.0.0.1:1/nowhere"  # type: ignore[attr-defined]  # refused
        daemon = Daemon(db, s, pool(s))
        task = asyncio.create_task(daemon.run(once=False))
        await asyncio.sleep(0.5)
        async with open_store(pg_database) as other:
            await enqueue(other, [NewMessage(to="polled@example.com", subject="s", body="b")],
                          from_addr="team@example.org", from_name=None, domain=None, now=time.time())
        deadline = time.monotonic() + 10
        while not sink.received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        daemon.request_stop()
        await asyncio.wait_for(task, 10)
    assert [m.rcpt_tos for m in sink.received] == [["polled@example.com"]]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "no wake-ups" in r.message]
    assert len(warnings) == 1, [r.message for r in caplog.records]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "sender-listen"]


def _storm(url: str, rows: int, per_commit: int) -> None:
    """Make ``rows`` failed rows scheduled again, due in an hour, ``per_commit`` rows per
    transaction (one notification each), pipelined: as fast as the server takes them."""
    import psycopg

    with psycopg.connect(url) as conn, conn.pipeline():
        for first in range(1, rows + 1, per_commit):
            conn.execute("UPDATE messages SET state = 'scheduled', due_at = %s WHERE id >= %s AND id < %s "
                         "AND state = 'failed'", (time.time() + 3600, first, first + per_commit))
            conn.commit()


async def test_a_storm_of_notifications_wakes_the_daemon_a_few_times(sink: SinkThread, pg_database: str) -> None:
    """A storm of notifications (10,000 rows made scheduled again, due in an hour, in 500
    transactions) costs an idle daemon a fraction of a turn each, not a turn per row or per
    notification, and sends nothing early."""
    import psycopg

    turns = 0

    def counted() -> None:
        nonlocal turns
        turns += 1

    async with open_store(pg_database, create=True):
        pass
    with psycopg.connect(pg_database) as conn:
        conn.execute("INSERT INTO campaigns(name, created_at) VALUES ('c', 0)")
        conn.execute("INSERT INTO recipients(email) SELECT 'r' || i || '@example.com' FROM generate_series(1, 10000) i")
        conn.execute("INSERT INTO messages(id, campaign_id, recipient_id, dedupe_key, message_id, state, due_at, "
                     "created_at, updated_at) SELECT i, 1, i, 'k' || i, '<' || i || '.x@example.org>', 'failed', "
                     "0, 0, 0 FROM generate_series(1, 10000) i")
    s = settings(pg_database, sink.port, poll=30.0, heartbeat=30.0, lease=300.0)
    with psycopg.connect(pg_database, autocommit=True) as watch:
        watch.execute(f"LISTEN {CHANNEL}")
        async with open_store(pg_database) as db:
            daemon = Daemon(db, s, pool(s), on_turn=counted)
            task = asyncio.create_task(daemon.run(once=False))
            deadline = time.monotonic() + 15
            while not _listeners(pg_database) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            before, started = turns, time.monotonic()
            await asyncio.to_thread(_storm, pg_database, 10_000, 20)
            lasted = time.monotonic() - started
            await asyncio.sleep(0.5)
            woken = turns - before
            daemon.request_stop()
            await asyncio.wait_for(task, 10)
        notified = sum(1 for _ in watch.notifies(timeout=0.5))
    print(f"{notified} notifications in {lasted:.2f}s, {woken} turns of the daemon")
    assert notified >= 500, notified
    assert 1 <= woken <= (lasted + 0.5) / SPACING + 5, f"{woken} turns for {notified} notifications in {lasted:.2f}s"
    assert sink.received == []
    assert pg.query(pg_database, "SELECT state, count(*) FROM messages GROUP BY state") == [("scheduled", 10_000)]
