"""The monitor's read API (``sender.store.views``) on a seeded queue, and the seed the TUI tests share.

``seed`` builds a small queue through the real write path (``sender.store`` enqueue, claim and
record, worker registration) at fixed times, then pins the random parts (Message-IDs) so the
screens are the same on every run. It holds one message in every state, a stale claim of a
dead worker, three workers (alive, presumed dead, stopped) and a reproduction of the incident:
one lead, one campaign, one SendLog row, three copies observed with three Message-IDs.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from sender import report
from sender.intake import NewMessage
from sender.store import sending, views
from sender.store.db import open_db
from sender.store.engine import open_store
from sender.store.enqueue import enqueue
from sender.store.sending import Outcome

T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC, the tests' fixed clock
ROOT = Path(__file__).resolve().parent.parent

# (local part, campaign, send_at offset from T0)
MESSAGES = [("a", "spring", -3000), ("b", "spring", -2900), ("c", "spring", -2800),
            ("d", "welcome", -2700), ("e", "welcome", -2600), ("f", "welcome", -100),
            ("g", "spring", -60), ("h", "welcome", 3600), ("i", "spring", 7200),
            ("lead", "spring", -1800)]
# After seeding: 1 sent, 2 scheduled (retry), 3 failed, 4 unknown, 5 stale claim (dead w2),
# 6 in flight (w1), 7 due now, 8 and 9 scheduled later, 10 the incident (sent, seen 3 times).
INCIDENT_ROW = 10


def fixed_mid(row: int, tag: str = "") -> str:
    return f"<{row}.{tag or format(row * 7919, '016x')}@example.org>"


async def _seed(path: str) -> None:
    """The shared queue, in an SQLite file or (a URL) a PostgreSQL database."""
    hex_id = "lpad(to_hex(id * 7919), 16, '0')" if "://" in path else "printf('%016x', id * 7919)"
    async with open_store(path, create=True) as db:
        rows = [NewMessage(to=f"{n}@example.com", subject=f"Hello {n}", body="Hi.", campaign=c,
                           send_at=T0 + off, name=n.title()) for n, c, off in MESSAGES]
        await enqueue(db, rows, from_addr="team@example.org", from_name="Team",
                            domain="example.org", now=T0 - 4000)
        w1 = await sending.register_worker(db, "w1", 101, "host-a", T0 - 3600)
        w2 = await sending.register_worker(db, "w2", 202, "host-b", T0 - 3000)
        w3 = await sending.register_worker(db, "w3", 303, "host-a", T0 - 7200)
        await sending.stop_worker(db, w3, T0 - 3500)
        first = await sending.claim(db, worker="w1", worker_id=w1, limit=4, lease=300, now=T0 - 2500)
        await sending.claim(db, worker="w2", worker_id=w2, limit=1, lease=300, now=T0 - 2500)
        t = {c.row: c.token for c in first}
        await sending.record(db, [
            Outcome(1, t[1], "sent", 250, "2.0.0 queued as A1"),
            Outcome(2, t[2], "retry", 451, "4.7.1 greylisted", due_at=T0 + 300),
            Outcome(3, t[3], "failed", 550, "5.1.1 no such user"),
            Outcome(4, t[4], "unknown", None, "connection lost after data"),
        ], T0 - 2490)
        lead = await sending.claim(db, worker="w1", worker_id=w1, limit=1, lease=300, now=T0 - 40)
        await sending.record(db, [Outcome(lead[0].row, lead[0].token, "sent", 250, "2.0.0 ok")],
                           T0 - 39)
        await sending.claim(db, worker="w1", worker_id=w1, limit=1, lease=300, now=T0 - 30)
        async with db.write():
            await db.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (T0 - 5, w1))
            await db.execute(f"UPDATE messages SET message_id = '<' || id || '.' || {hex_id} || '@example.org>'")
            await db.execute("UPDATE send_log SET mid = (SELECT message_id FROM messages m "
                             "WHERE m.id = send_log.message_id)")
            for copy, tag in enumerate(("", "3f2a9c0d1e4b5a66", "9b8c7d6e5f4a3b2c"), start=1):
                await db.execute(
                    "INSERT INTO observations(mid, recipient, date, at, subject, source, "
                    "observed_at, fingerprint, copy, row_id, traced_by) "
                    "VALUES (?, 'lead@example.com', ?, ?, 'Hello lead', 'maildir:/srv/lead', ?, ?, "
                    "1, ?, 'message-id')",
                    (fixed_mid(INCIDENT_ROW, tag), T0 - 40, T0 - 40, T0 - 20, f"fp{copy}",
                     INCIDENT_ROW))


_template: list[Path] = []


def _template_file() -> Path:
    """Seed once per test session (a dozen durable commits), then hand out copies."""
    if not _template:
        folder = Path(tempfile.mkdtemp(prefix="tui-seed-"))
        atexit.register(shutil.rmtree, folder, True)
        thread = threading.Thread(target=asyncio.run, args=(_seed(str(folder / "sending.db")),))
        thread.start()
        thread.join()
        _template.append(folder / "sending.db")
    return _template[0]


def seed(path: str | Path) -> str:
    """A copy of the shared test queue at ``path`` (a real SQLite file); returns its path."""
    shutil.copyfile(_template_file(), path)
    return str(path)


async def aseed(path: str | Path) -> str:
    """The shared queue at ``path``: a copy of the template file, or seeded into a PostgreSQL URL."""
    if "://" in str(path):
        await _seed(str(path))
        return str(path)
    return seed(path)


def rows(path: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Read back with plain sqlite3 (or psycopg for a URL), independent of the code under test."""
    if "://" in path:
        from tests import pg

        return pg.query(path, sql.replace("?", "%s"), params)
    with sqlite3.connect(path) as conn:
        return list(conn.execute(sql, params))


async def test_seed_has_every_state(tmp_path: Path) -> None:
    """The shared seed holds the states, workers and incident the other TUI tests rely on."""
    path = await aseed(tmp_path / "sending.db")
    states = dict(rows(path, "SELECT id, state FROM messages"))
    assert states == {1: "sent", 2: "scheduled", 3: "failed", 4: "unknown", 5: "sending",
                      6: "sending", 7: "scheduled", 8: "scheduled", 9: "scheduled", 10: "sent"}
    assert rows(path, "SELECT count(*) FROM send_log WHERE message_id = 10") == [(1,)]


async def test_read_api_returns_the_seeded_rows(tmp_path: Path) -> None:
    """Each monitor query returns exactly the rows its panel must show."""
    path = await aseed(tmp_path / "sending.db")
    await _check_read_api(path)


async def test_read_api_returns_the_seeded_rows_on_postgres(pg_database: str) -> None:
    """The monitor's queries return the same rows from the same queue on PostgreSQL."""
    await _seed(pg_database)
    await _check_read_api(pg_database)


async def _check_read_api(path: str) -> None:
    async with open_store(path, readonly=True) as db:
        ov = await views.overview(db, T0)
        q = await views.queue_view(db, T0)
        claims = await views.in_flight(db, T0)
        workers = await views.workers(db, T0)
        log = await views.send_log(db)
        detail = await views.message(db, 2)
    assert ov.counts["sending"] == 2 and ov.stale_claims == 1 and ov.sent_last_minute == 1
    assert (ov.workers.alive, ov.workers.presumed_dead, ov.workers.stopped) == (1, 1, 1)
    assert [m.row for m in q.messages] == [7, 2, 8, 9] and q.due_now == 1
    assert q.oldest_due is not None and q.oldest_due.row == 7
    assert q.next_due is not None and q.next_due.row == 2
    assert {c.campaign: (c.due, c.scheduled) for c in q.campaigns} == {
        "spring": (1, 3), "welcome": (0, 1)}
    assert [(c.row, c.worker, c.stale) for c in claims] == [(5, "w2", True), (6, "w1", False)]
    assert [(w.name, w.status, w.in_flight) for w in workers] == [
        ("w1", "alive", 1), ("w2", "presumed dead", 1), ("w3", "stopped", 0)]
    assert [a.row for a in log] == [6, 10, 5, 4, 3, 2, 1]
    assert detail is not None and [a.status for a in detail.history] == ["retry"]
    assert detail.mid == fixed_mid(2)


async def test_log_filter_forms(tmp_path: Path) -> None:
    """The log filter matches a recipient, a Message-ID with or without brackets, a row and a status."""
    path = await aseed(tmp_path / "sending.db")
    async with open_db(path, readonly=True) as db:
        by_rcpt = await views.send_log(db, "c@example.com")
        by_mid = await views.send_log(db, fixed_mid(4).strip("<>"))
        by_row = await views.send_log(db, "#3")
        by_status = await views.send_log(db, "unknown")
        by_part = await views.send_log(db, "LEAD@")
        odd = await views.send_log(db, "%_\\")
    assert [a.row for a in by_rcpt] == [3]
    assert [a.row for a in by_mid] == [4]
    assert [a.row for a in by_row] == [3]
    assert [a.row for a in by_status] == [4]
    assert [a.row for a in by_part] == [10]
    assert odd == []


async def test_monitor_queries_use_indexes(tmp_path: Path) -> None:
    """No monitor query walks a whole messages or SendLog table (a rowid walk under LIMIT is fine)."""
    path = await aseed(tmp_path / "sending.db")
    plans: list[tuple[str, str]] = []
    top: list[tuple[str, str]] = []  # steps of the outermost query only
    async with open_db(path, readonly=True) as db:
        original = db.fetchall

        async def explained(sql: str, params: Any = ()) -> list[sqlite3.Row]:
            for step in await original("EXPLAIN QUERY PLAN " + sql, params):
                plans.append((" ".join(sql.split()), step[3]))
                if step[1] == 0:
                    top.append((" ".join(sql.split()), step[3]))
            return await original(sql, params)

        async def first(sql: str, params: Any = ()) -> sqlite3.Row | None:
            found = await explained(sql, params)
            return found[0] if found else None

        db.fetchall = explained  # type: ignore[method-assign]
        db.fetchone = first  # type: ignore[method-assign]
        await views.overview(db, T0)
        await views.queue_view(db, T0)
        await views.in_flight(db, T0)
        await views.workers(db, T0)
        await views.send_log(db)
        await views.send_log(db, "lead@example.com")
        await views.message(db, 3)
        await report.build_report(db, report.Window(T0 - 86400, T0), T0)  # the Duplicates tab's worker
    full = [(sql, step) for sql, step in plans
            if step in ("SCAN messages", "SCAN m", "SCAN send_log", "SCAN s")
            and not sql.endswith("FROM send_log ORDER BY id DESC LIMIT ?")]
    assert full == []
    assert any("messages_due" in step for _sql, step in plans)
    assert any("messages_lease" in step for _sql, step in plans)
    # Stale claims come in lease order from the lease index, never by sorting every sending row
    # (the page of ids chosen in the index is sorted once joined: a sort of the outer query only);
    # multi-sends are looked for only among the pairs that have more than one message.
    stale = [(sql, step) for sql, step in plans if "lease_until < ?" in sql and "m.worker" in sql]
    assert any("messages_lease" in step for _sql, step in stale)
    assert all((sql, step) in top for sql, step in stale if "TEMP B-TREE" in step)
    assert any("send_log_recipient" in step for sql, step in plans if "FROM shared_pairs" in sql)


def test_importing_sender_never_imports_textual() -> None:
    """``sender`` (including the monitor's read API) never pulls in textual: imports go one way."""
    code = ("import sys, sender, sender.store.views, sender.store.operator, sender.store.counts; "
            "print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
