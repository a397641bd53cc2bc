"""Overlapping cron runs cannot send one queued message twice.

The incident: several scheduler runs saw the same ``scheduled`` row and each sent it. Here real
OS processes of ``python -m sender run --once`` start together over the same SQLite file and
race for 1,200 due messages against a real aiosmtpd on 127.0.0.1; then one process races its
own 16 SMTP sessions. Both sides are checked: what the server received and what the database
says.
"""

from __future__ import annotations

import collections
import contextlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, SinkThread
from tests.support import enqueue_leads

pytestmark = pytest.mark.slow

MESSAGES = 1200
PROCESSES = 4
DEADLINE = 45.0


def _query(db_path: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def _run_together(cli: Cli, runs: list[list[str]]) -> list[tuple[int, str]]:
    """Start every run at once, wait for all (bounded), kill any survivor; return (code, stderr)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        procs = [cli.popen(*args) for args in runs]
        deadline = time.monotonic() + DEADLINE
        results = []
        for proc in procs:
            _out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results.append((proc.returncode, err))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()


def _assert_each_sent_once(db_path: str, sink: SinkThread, n: int) -> None:
    received = sink.received
    per_rcpt = collections.Counter(r for m in received for r in m.rcpt_tos)
    assert len(received) == n, f"server received {len(received)} messages for {n} queued"
    assert set(per_rcpt.values()) == {1}, [r for r, c in per_rcpt.items() if c > 1][:5]
    assert set(per_rcpt) == {f"lead{i}@example.com" for i in range(n)}
    mids = {m.message_id for m in received}
    assert len(mids) == n

    assert _query(db_path, "SELECT state, count(*) FROM messages GROUP BY state") == [("sent", n)]
    assert _query(db_path, "SELECT status, count(*) FROM send_log GROUP BY status") == [("sent", n)]
    assert _query(db_path, "SELECT count(DISTINCT message_id) FROM send_log WHERE status = 'sent'") \
        == [(n,)]
    # The Message-ID each recipient got is the one the queue minted for its row, and the log agrees.
    stored = dict(_query(db_path, "SELECT r.email, m.message_id FROM messages m "
                                  "JOIN recipients r ON r.id = m.recipient_id"))
    assert {m.rcpt_tos[0]: m.message_id for m in received} == stored
    assert set(stored.values()) == {r[0] for r in _query(db_path, "SELECT mid FROM send_log")}


def test_overlapping_cron_runs_send_each_message_once(cli: Cli, sink: SinkThread, db_path: str,
                                                      tmp_path: Path) -> None:
    """Four `run --once` processes started together over 1,200 due messages deliver each exactly once."""
    enqueue_leads(cli, tmp_path, db_path, MESSAGES)
    started = time.monotonic()
    results = _run_together(cli, [["run", "--db", db_path, "--smtp-port", str(sink.port), "--once",
                                    "--worker", f"cron{i}", "-q"] for i in range(PROCESSES)])
    elapsed = time.monotonic() - started
    assert [code for code, _err in results] == [0] * PROCESSES, [err for _c, err in results]

    _assert_each_sent_once(db_path, sink, MESSAGES)
    # The runs really overlapped: several workers won claims over the same rows.
    by_worker = dict(_query(db_path, "SELECT worker, count(*) FROM send_log GROUP BY worker"))
    assert len(by_worker) >= 2, by_worker
    print(f"\n{PROCESSES} processes, {MESSAGES} messages: {elapsed:.1f}s, "
          f"{MESSAGES / elapsed:.0f} msg/s, per worker {json.dumps(by_worker, sort_keys=True)}")


def test_many_sessions_in_one_process_send_each_message_once(cli: Cli, sink: SinkThread,
                                                             db_path: str, tmp_path: Path) -> None:
    """One `run --once` with 16 concurrent SMTP sessions delivers 1,200 messages exactly once each."""
    enqueue_leads(cli, tmp_path, db_path, MESSAGES)
    started = time.monotonic()
    [(code, err)] = _run_together(cli, [["run", "--db", db_path, "--smtp-port", str(sink.port),
                                         "--once", "--concurrency", "16", "-q"]])
    elapsed = time.monotonic() - started
    assert code == 0, err

    _assert_each_sent_once(db_path, sink, MESSAGES)
    # Every attempt came from this one process, over many reused sessions.
    assert len(_query(db_path, "SELECT DISTINCT worker FROM send_log")) == 1
    print(f"\n1 process x 16 sessions, {MESSAGES} messages: {elapsed:.1f}s, "
          f"{MESSAGES / elapsed:.0f} msg/s")


@pytest.mark.parametrize("prefetch", ["0", "2"])
def test_overlapping_runs_with_many_sessions_each(cli: Cli, sink: SinkThread, db_path: str,
                                                  tmp_path: Path, prefetch: str) -> None:
    """Four processes with 8 sessions each (32 racing sessions) still deliver each message once,
    claiming just in time or with two claims waiting per session."""
    enqueue_leads(cli, tmp_path, db_path, MESSAGES)
    results = _run_together(cli, [["run", "--db", db_path, "--smtp-port", str(sink.port), "--once",
                                   "--concurrency", "8", "--prefetch", prefetch, "--worker", f"busy{i}", "-q"]
                                  for i in range(PROCESSES)])
    assert [code for code, _err in results] == [0] * PROCESSES, [err for _c, err in results]
    _assert_each_sent_once(db_path, sink, MESSAGES)
