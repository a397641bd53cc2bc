"""Helpers shared by the fault, stop and chaos tests: seed a real queue, run a real daemon
in-process against a real SMTP server, and read the database back with plain sqlite3 (or, for
a PostgreSQL queue, plain psycopg: ``tests/pg.py``)."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sender.config import Settings
from sender.daemon import Daemon, RunStats
from sender.delivery import pool
from sender.intake import NewMessage
from sender.store.engine import open_store
from sender.store.enqueue import enqueue


def settings(db_path: str, port: int, **overrides: Any) -> Settings:
    base = Settings(db=db_path, smtp_port=port, smtp_timeout=2.0, concurrency=2, worker="test",
                    poll=0.05, heartbeat=0.2, lease=30.0, retry_delay=60.0, grace=5.0)
    return replace(base, **overrides)


async def seed(db_path: str, n: int, *, campaign: str = "c", prefix: str = "r",
               send_at: float | None = None) -> None:
    rows = [NewMessage(to=f"{prefix}{i}@example.com", subject=f"s{i}", body=f"b{i}", campaign=campaign,
                       send_at=send_at) for i in range(n)]
    async with open_store(db_path, create=True) as db:
        await enqueue(db, rows, from_addr="team@example.org", from_name="Team", domain=None,
                            now=time.time())


async def run_once(db_path: str, port: int, **overrides: Any) -> RunStats:
    s = settings(db_path, port, **overrides)
    async with open_store(db_path) as db:
        return await Daemon(db, s, pool(s)).run(once=True)


def query(db_path: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if "://" in db_path:
        from tests import pg

        return pg.query(db_path, sql.replace("?", "%s"), params)
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def states(db_path: str) -> dict[str, int]:
    return dict(query(db_path, "SELECT state, count(*) FROM messages GROUP BY state"))  # type: ignore[arg-type]


def one(db_path: str, row_id: int = 1) -> dict[str, Any]:
    if "://" in db_path:
        from tests import pg

        return pg.one(db_path, "SELECT * FROM messages WHERE id = %s", (row_id,))
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM messages WHERE id = ?", (row_id,)).fetchone()
        return dict(row)
    finally:
        conn.close()


def log_statuses(db_path: str, row_id: int = 1) -> list[str]:
    return [r[0] for r in query(db_path, "SELECT status FROM send_log WHERE message_id = ? ORDER BY id",
                                (row_id,))]


def in_state(db_path: str, state: str) -> int:
    return int(query(db_path, "SELECT count(*) FROM messages WHERE state = ?", (state,))[0][0])


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def daemon_args(db_path: str, port: int, *extra: str) -> list[str]:
    """``run`` arguments for a quick-polling daemon against the test sink."""
    return ["run", "--db", db_path, "--smtp-port", str(port), "--poll", "0.05", "--heartbeat", "0.2", *extra]


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Signal a daemon and wait for its exit code; kill it if it outlives ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def write_csv(path: Path, rows: list[dict[str, str]]) -> str:
    """Write ``rows`` as a CSV with a header line (the first row's keys); return the path."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def enqueue_leads(cli: Any, tmp_path: Path, db: str, n: int) -> None:
    """``init`` and ``enqueue`` ``n`` leads (lead0@example.com …) into ``db`` (a file or a URL)
    through the command line."""
    rows = [{"to": f"lead{i}@example.com", "subject": f"Your material #{i}",
             "body": f"Hello {i},\nhere it is.", "name": f"Lead {i}"} for i in range(n)]
    path = write_csv(tmp_path / "leads.csv", rows)
    r = cli("init", "--db", db)
    assert r.code == 0, r.err
    r = cli("enqueue", "--db", db, "--csv", path, "--from", "Team <team@example.org>")
    assert r.code == 0, r.err
    assert f"queued {n}," in r.out


def need(missing: str | None, in_ci: str | None = None) -> None:
    """A test that needs a service or tool: skip with ``missing`` as its one-line reason on a
    machine without it, but fail in CI (``CI`` set), where every such test must run."""
    if missing:
        if os.environ.get("CI"):
            pytest.fail(in_ci or f"CI must run this test: {missing}")
        pytest.skip(missing)
