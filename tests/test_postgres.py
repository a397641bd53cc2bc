"""The command line on a PostgreSQL queue: init, enqueue, run --once, status end to end, and
overlapping ``run --once`` processes on one PostgreSQL queue deliver each message exactly once.

Each test gets a fresh database on ``SENDER_TEST_POSTGRES`` (``tests/pg.py``); the sink is a real
aiosmtpd; both sides are checked, what the server received and what the database says (read back
with plain psycopg).
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from sender.intake import NewMessage
from sender.store import sending
from sender.store.engine import open_store
from sender.store.enqueue import enqueue
from tests import pg
from tests.conftest import Cli, SinkThread
from tests.support import enqueue_leads, query

MESSAGES = 1200
PROCESSES = 4
DEADLINE = 90.0


def _assert_each_sent_once(url: str, sink: SinkThread, n: int) -> None:
    received = sink.received
    per_rcpt = collections.Counter(r for m in received for r in m.rcpt_tos)
    assert len(received) == n, f"server received {len(received)} messages for {n} queued"
    assert set(per_rcpt.values()) == {1}, [r for r, c in per_rcpt.items() if c > 1][:5]
    assert set(per_rcpt) == {f"lead{i}@example.com" for i in range(n)}
    assert pg.query(url, "SELECT state, count(*) FROM messages GROUP BY state") == [("sent", n)]
    assert pg.query(url, "SELECT status, count(*) FROM send_log GROUP BY status") == [("sent", n)]
    assert pg.query(url, "SELECT count(DISTINCT message_id) FROM send_log WHERE status = 'sent'") == [(n,)]
    stored = dict(pg.query(url, "SELECT CAST(r.email AS text), m.message_id FROM messages m "
                                "JOIN recipients r ON r.id = m.recipient_id"))
    assert {m.rcpt_tos[0]: m.message_id for m in received} == stored
    # The trigger-kept counters agree with the rows.
    assert pg.query(url, "SELECT n FROM state_counts WHERE state = 'sent'") == [(n,)]


def test_init_enqueue_run_once_status(cli: Cli, sink: SinkThread, pg_database: str) -> None:
    """On PostgreSQL, two queued messages are delivered once each, a re-enqueue is skipped, and
    status says sent."""
    r = cli("init", "--db", pg_database)
    assert r.code == 0 and "queue database ready" in r.out, r.err
    for to in ("a@example.com", "b@example.com"):
        r = cli("enqueue", "--db", pg_database, "--to", to, "--subject", "Hi", "--body", "B",
                "--from", "team@example.org")
        assert r.code == 0, r.err
    r = cli("enqueue", "--db", pg_database, "--to", "a@example.com", "--subject", "Hi", "--body", "B",
            "--from", "team@example.org")
    assert "skipped 1" in r.out, r.out + r.err
    r = cli("run", "--db", pg_database, "--smtp-port", str(sink.port), "--once")
    assert r.code == 0, r.err
    assert "WARNING" not in r.err, r.err  # no start journal beside a URL, and no warning for it
    assert not list(Path.cwd().glob("postgres*"))
    assert sorted(m.rcpt_tos[0] for m in sink.received) == ["a@example.com", "b@example.com"]
    status = json.loads(cli("status", "--db", pg_database, "--json").out)
    assert status["sent"] == 2 and status["scheduled"] == 0
    assert pg.query(pg_database, "SELECT status, count(*) FROM send_log GROUP BY status") == [("sent", 2)]
    r = cli("run", "--db", pg_database, "--smtp-port", str(sink.port), "--once")
    assert r.code == 0 and len(sink.received) == 2, r.err


def test_init_reports_a_server_that_is_not_there(cli: Cli) -> None:
    """A PostgreSQL URL whose server refuses the connection is one line, exit 1."""
    r = cli("status", "--db", "postgresql://postgres@127.0.0.1:1/none")
    assert r.code == 1 and "connection refused" in r.err and "Traceback" not in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1, r.err


def test_status_on_a_missing_database_says_init(cli: Cli) -> None:
    """A database the server does not have is a missing queue: exit 2, naming init."""
    r = cli("status", "--db", pg.absent_database())
    assert r.code == 2 and "python -m sender init" in r.err, r.err


async def test_a_forced_back_row_is_refused_by_the_index_and_the_rest_is_claimed(pg_database: str) -> None:
    """On PostgreSQL too, a row forced back to scheduled behind the store's back is refused by the
    SendLog unique index (the savepoint rolls back only the refused insert): it goes to unknown,
    with its audit row, and the other due rows of the batch are claimed."""
    now = time.time()
    async with open_store(pg_database, create=True) as db:
        rows = [NewMessage(to=f"lead{i}@example.com", subject="s", body="b") for i in range(3)]
        await enqueue(db, rows, from_addr="team@example.org", from_name=None, domain=None, now=now - 10)
        [first] = await sending.claim(db, worker="w1", worker_id=1, limit=1, lease=300.0, now=now)
        with psycopg.connect(pg_database) as conn:
            conn.execute("UPDATE messages SET state = 'scheduled', claim_token = NULL, worker = NULL, "
                         "lease_until = NULL WHERE id = %s", (first.row,))
        again = await sending.claim(db, worker="w2", worker_id=2, limit=10, lease=300.0, now=now)
    assert sorted(c.row for c in again) == sorted({1, 2, 3} - {first.row})
    [(state, reason)] = pg.query(pg_database, "SELECT state, last_reply FROM messages WHERE id = %s", (first.row,))
    assert state == "unknown" and "unique index" in reason, reason
    assert pg.query(pg_database, "SELECT actor, action FROM audit WHERE message_id = %s", (first.row,)) == \
        [("w2", "claim-refused")]
    assert pg.query(pg_database, "SELECT worker, status FROM send_log WHERE message_id = %s", (first.row,)) == \
        [("w1", "sending")]
    assert dict(pg.query(pg_database, "SELECT state, n FROM state_counts WHERE n <> 0")) == \
        {"sending": 2, "unknown": 1}


def test_a_foreign_database_and_a_newer_schema_are_refused(cli: Cli, pg_database: str) -> None:
    """A database holding other tables is not a sender queue, and a queue migrated by a newer
    sender is refused: both exit 2 with one line, and init changes neither."""
    with psycopg.connect(pg_database) as conn:
        conn.execute("CREATE TABLE invoices (id integer)")
    for command in ("status", "init"):
        r = cli(command, "--db", pg_database)
        assert r.code == 2 and "not a sender queue" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    with psycopg.connect(pg_database) as conn:
        conn.execute("DROP TABLE invoices")
    assert cli("init", "--db", pg_database).code == 0
    with psycopg.connect(pg_database) as conn:
        conn.execute("INSERT INTO schema_migrations(version, name, applied_at) VALUES (99, 'future', 0)")
    r = cli("status", "--db", pg_database)
    assert r.code == 2 and "newer than this sender" in r.err and len(r.err.strip().splitlines()) == 1, r.err


async def test_state_counters_fold_without_changing_a_count(pg_database: str) -> None:
    """The counters are appended deltas (no hot row per state); folding them leaves one row per
    state and every count equal to the rows' real states."""
    from sender.store.postgres import ENGINE

    now = time.time()
    async with open_store(pg_database, create=True) as db:
        rows = [NewMessage(to=f"lead{i}@example.com", subject="s", body="b") for i in range(20)]
        await enqueue(db, rows, from_addr="team@example.org", from_name=None, domain=None, now=now - 10)
        for _ in range(5):
            claimed = await sending.claim(db, worker="w", worker_id=1, limit=3, lease=300.0, now=now)
            await sending.record(db, [sending.Outcome(c.row, c.token, "sent", 250, "ok") for c in claimed], now)
        before = pg.query(pg_database, "SELECT count(*) FROM state_count_deltas")[0][0]
        await db.transaction(ENGINE.compact_counts)
    real = dict(pg.query(pg_database, "SELECT state, count(*) FROM messages GROUP BY state"))
    counted = dict(pg.query(pg_database, "SELECT state, n FROM state_counts WHERE n <> 0"))
    assert counted == real == {"sent": 15, "scheduled": 5}
    after = pg.query(pg_database, "SELECT count(*) FROM state_count_deltas")[0][0]
    assert isinstance(before, int) and before > after == 9  # one row per state


async def test_recover_never_overwrites_an_outcome_landing_meanwhile(pg_database: str) -> None:
    """A claim whose lease ran out while its worker is recording the outcome (the row locked by
    that uncommitted transaction) is skipped by recover, not waited for and then overwritten:
    the outcome stands (on PostgreSQL an ``IN`` subquery would have turned it unknown)."""
    import asyncio

    now = time.time()
    async with open_store(pg_database, create=True) as db:
        await enqueue(db, [NewMessage(to="lead@example.com", subject="s", body="b")],
                      from_addr="team@example.org", from_name=None, domain=None, now=now - 60)
        [claim] = await sending.claim(db, worker="w", worker_id=1, limit=1, lease=1.0, now=now - 30)
        with psycopg.connect(pg_database) as worker:
            worker.execute("UPDATE messages SET state = 'sent', lease_until = NULL WHERE id = %s", (claim.row,))
            recovering = asyncio.create_task(sending.recover(db, now))
            await asyncio.sleep(0.5)
            worker.commit()
        expired = await asyncio.wait_for(recovering, 10)
    assert expired == []
    assert pg.query(pg_database, "SELECT state FROM messages") == [("sent",)]


async def test_recipient_cap_holds_between_two_hosts_claiming_at_once(pg_database: str) -> None:
    """Host A has claimed a lead's first message and not yet committed; host B, claiming at that
    moment a batch that holds the lead's second message (A's row locks make B skip A's rows), waits
    for A's commit on the recipient's advisory lock and then defers it: one message per day, across
    hosts (READ COMMITTED alone let B count before A's SendLog row existed and send both)."""
    import asyncio
    import threading

    from sender.policy import Limit, Policy
    from sender.store.postgres import ENGINE

    now = time.time()
    policy = Policy(recipient_cap=Limit(1, 86400.0))
    rows = [NewMessage(to="lead@example.com", subject="one", body="b", campaign="spring")]
    rows += [NewMessage(to=f"filler{i}@example.com", subject="f", body="b") for i in range(16)]
    rows += [NewMessage(to="lead@example.com", subject="two", body="b", campaign="summer")]
    hold = threading.Event()
    async with open_store(pg_database, create=True) as a, open_store(pg_database) as b:
        for i, row in enumerate(rows):  # due in this order
            await enqueue(a, [row], from_addr="team@example.org", from_name=None, domain=None, now=now - 100 + i)

        def claim_and_wait(tx: object) -> list[int]:
            got = ENGINE.claim(tx, policy, worker="a", worker_id=1, limit=1, lease=300.0, now=now)  # type: ignore[arg-type]
            hold.wait(10)
            return [c.row for c in got]

        host_a = asyncio.create_task(a.transaction(claim_and_wait))
        await asyncio.sleep(0.5)  # A holds the lead's first row, 15 fillers and the lead's lock
        host_b = asyncio.create_task(b.transaction(lambda tx: ENGINE.claim(
            tx, policy, worker="b", worker_id=2, limit=10, lease=300.0, now=now)))
        await asyncio.sleep(0.5)
        hold.set()
        claimed_a = await asyncio.wait_for(host_a, 10)
        claimed_b = [c.recipient for c in await asyncio.wait_for(host_b, 10)]
    assert claimed_a == [1]
    assert "lead@example.com" not in claimed_b and len(claimed_b) == 1, claimed_b
    assert pg.query(pg_database, "SELECT defer_reason FROM messages WHERE id = 18") == [("recipient-cap",)]


def _run_together(cli: Cli, runs: list[list[str]]) -> list[tuple[int, str]]:
    """Start every run at once, wait for all (bounded), kill any survivor; return (code, log)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        procs = [cli.popen(*args) for args in runs]
        deadline = time.monotonic() + DEADLINE
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        return [(p.returncode, Path(p.log_path).read_text()) for p in procs]  # type: ignore[attr-defined]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("prefetch", ["0", "2"])
def test_overlapping_runs_on_one_postgres_queue_send_each_once(cli: Cli, sink: SinkThread, pg_database: str,
                                                              tmp_path: Path, prefetch: str) -> None:
    """Four `run --once` processes with 4 sessions each, started together over 1,200 due messages
    on one PostgreSQL queue, deliver each exactly once, and more than one of them won claims."""
    enqueue_leads(cli, tmp_path, pg_database, MESSAGES)
    started = time.monotonic()
    results = _run_together(cli, [["run", "--db", pg_database, "--smtp-port", str(sink.port), "--once",
                                   "--concurrency", "4", "--prefetch", prefetch, "--worker", f"host{i}", "-q"]
                                  for i in range(PROCESSES)])
    elapsed = time.monotonic() - started
    assert [code for code, _log in results] == [0] * PROCESSES, [log for _c, log in results]
    _assert_each_sent_once(pg_database, sink, MESSAGES)
    by_worker = dict(pg.query(pg_database, "SELECT worker, count(*) FROM send_log GROUP BY worker"))
    assert len(by_worker) >= 2, by_worker
    print(f"\nPostgreSQL, {PROCESSES} processes x 4 sessions, prefetch {prefetch}, {MESSAGES} messages: "
          f"{elapsed:.1f}s, {MESSAGES / elapsed:.0f} msg/s, per worker {json.dumps(by_worker, sort_keys=True)}")


Rows = list[tuple[object, ...]]


def _table(read: Callable[[str], Rows], table: str, columns: tuple[str, ...]) -> Rows:
    """Every row of ``table``, in one order, blobs as bytes (psycopg reads bytea as memoryview)."""
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            for row in read(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(columns)}")]


def test_migrate_copies_a_whole_queue_into_postgres(cli: Cli, sink: SinkThread, tmp_path: Path,
                                                    pg_database: str) -> None:
    """migrate --from queue.db --to postgresql://… copies every table row for row (ids and
    Message-IDs kept), the counters agree, a second migrate into the now non-empty target is
    refused, and sending resumes on PostgreSQL without resending what was sent."""
    from sender.store.moving import TABLES
    from tests.test_store_views import seed as seed_views

    db = seed_views(tmp_path / "queue.db")
    r = cli("migrate", "--from", db, "--to", pg_database)
    assert r.code == 0 and "migrated 10 message(s)" in r.out, r.err
    for table, columns in TABLES:
        lite = _table(lambda q: query(db, q), table, columns)
        moved = _table(lambda q: pg.query(pg_database, q), table, columns)
        assert moved == lite, table
    assert json.loads(cli("status", "--db", pg_database, "--json").out)["sent"] == \
        json.loads(cli("status", "--db", db, "--json").out)["sent"] == 2
    r = cli("migrate", "--from", db, "--to", pg_database)
    assert r.code == 2 and "already holds a queue" in r.err, r.err
    sent_before = {m for (m,) in pg.query(pg_database, "SELECT message_id FROM messages WHERE state = 'sent'")}
    r = cli("run", "--db", pg_database, "--smtp-port", str(sink.port), "--once")
    assert r.code == 0, r.err
    got = [m.message_id for m in sink.received]
    assert got and not sent_before & set(got)
    assert len(got) == len(set(got))
