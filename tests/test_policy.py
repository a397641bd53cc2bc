"""Sending policy is enforced inside the claim transaction, so it holds across real processes:
recipient caps, sender rate limits, send windows (DST, midnight), priorities, expiry,
per-campaign pause and auto-pause on an error streak."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sender.errors import UsageError
from sender.policy import parse_limit, parse_window
from tests.conftest import Cli, Faults, SinkThread
from tests.support import one, query, run_once, seed, states, wait_until

WARSAW = ZoneInfo("Europe/Warsaw")


def enqueue(cli: Cli, db_path: str, to: str, campaign: str) -> None:
    r = cli("enqueue", "--db", db_path, "--to", to, "--subject", f"from {campaign}", "--body", "b",
            "--campaign", campaign, "--from", "team@example.org")
    assert r.code == 0, r.err


def test_recipient_cap_across_four_processes(cli: Cli, queue: str, sink: SinkThread) -> None:
    """One lead queued by 3 campaigns, 4 overlapping runs with cap 1/24h: one delivered, two deferred a day."""
    for campaign in ("spring", "summer", "autumn"):
        enqueue(cli, queue, "lead@example.com", campaign)
    procs = [cli.popen("run", "--db", queue, "--smtp-port", str(sink.port), "--once",
                       "--recipient-cap", "1/24h") for _ in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    assert len(sink.received) == 1
    assert states(queue) == {"sent": 1, "scheduled": 2}
    claimed_at = query(queue, "SELECT claimed_at FROM send_log WHERE status = 'sent'")[0][0]
    deferred = query(queue, "SELECT defer_reason, due_at FROM messages WHERE state = 'scheduled'")
    assert [r[0] for r in deferred] == ["recipient-cap", "recipient-cap"]
    assert all(abs(r[1] - (claimed_at + 86400)) < 1 for r in deferred)
    status = json.loads(cli("status", "--db", queue, "--json").out)
    assert status["deferred"] == {"recipient-cap": 2}


def test_rate_limit_holds_across_processes(cli: Cli, db_path: str, sink: SinkThread) -> None:
    """3 daemons with --rate 4/1s never claim more than 4 in any second, and deliveries are spaced."""
    for i in range(10):
        enqueue(cli, db_path, f"r{i}@example.com", "c")
    args = ("run", "--db", db_path, "--smtp-port", str(sink.port), "--rate", "4/1s", "--poll", "0.05",
            "--heartbeat", "0.5")
    procs = [cli.popen(*args) for _ in range(3)]
    try:
        wait_until(lambda: len(sink.received) >= 10, 20, 0.05)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(20) for p in procs]
    assert codes == [0, 0, 0]
    assert len(sink.received) == 10
    claims = sorted(r[0] for r in query(db_path, "SELECT claimed_at FROM send_log WHERE status = 'sent'"))
    for i in range(len(claims) - 4):
        assert claims[i + 4] - claims[i] >= 1.0 - 1e-6, "5 claims inside one second"
    arrivals = sorted(r.at for r in sink.received)
    for i in range(len(arrivals) - 4):
        assert arrivals[i + 4] - arrivals[i] >= 0.75, "5 deliveries bunched at the sink"  # delivery jitter


async def test_send_window_defers_to_the_next_opening(db_path: str, sink: SinkThread, tmp_path: Path) -> None:
    """A campaign whose window is closed now is deferred to its next opening, reason 'window'."""
    now = datetime.now(UTC)
    closed = f"{(now.hour + 2) % 24:02d}:00-{(now.hour + 3) % 24:02d}:00 UTC"
    await seed(db_path, 2, campaign="night")
    stats = await run_once(db_path, sink.port, campaigns={"night": {"window": closed}})
    assert stats.sent == 0 and sink.received == []
    row = one(db_path, 1)
    assert row["defer_reason"] == "window"
    opens = datetime.fromtimestamp(row["due_at"], UTC)
    assert opens.minute == 0 and opens.hour == (now.hour + 2) % 24 and row["due_at"] > now.timestamp()


def test_window_across_dst_and_midnight() -> None:
    """Openings are computed in local time: a start in the spring-forward gap, an overnight window, weekdays only."""
    gap = parse_window("02:30-04:00 Europe/Warsaw")  # 2026-03-29 02:30 does not exist in Warsaw
    before = datetime(2026, 3, 29, 0, 0, tzinfo=WARSAW).timestamp()
    opened = datetime.fromtimestamp(gap.next_open(before), WARSAW)
    assert (opened.date().isoformat(), opened.hour, opened.minute) == ("2026-03-29", 3, 30)
    autumn = parse_window("09:00-17:00 Europe/Warsaw")  # clocks go back on 2026-10-25
    night = datetime(2026, 10, 25, 1, 0, tzinfo=WARSAW).timestamp()
    assert datetime.fromtimestamp(autumn.next_open(night), WARSAW).hour == 9
    assert autumn.next_open(night) - night == 9 * 3600  # 01:00 CEST -> 09:00 CET is nine hours
    overnight = parse_window("22:00-06:00 UTC")
    t = datetime(2026, 5, 5, 23, 30, tzinfo=UTC).timestamp()
    assert overnight.next_open(t) == t and overnight.next_open(t + 3 * 3600) == t + 3 * 3600
    assert overnight.next_open(t + 7 * 3600) == datetime(2026, 5, 6, 22, 0, tzinfo=UTC).timestamp()
    weekdays = parse_window("Mon-Fri 09:00-17:00 UTC")
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
    assert weekdays.next_open(saturday) == datetime(2026, 11, 30, 9, 0, tzinfo=UTC).timestamp()


def test_bad_policy_specs_are_usage_errors(cli: Cli, db_path: str) -> None:
    """A malformed limit, window or zone is refused at start with exit 2 and one line."""
    for bad in ("0/1m", "five/1m", "3/1y"):
        with pytest.raises(UsageError):
            parse_limit(bad)
    for bad in ("9-17", "mon-fri 09:00-09:00", "09:00-17:00 Mars/Olympus", "funday 09:00-10:00"):
        with pytest.raises(UsageError):
            parse_window(bad)
    assert cli("init", "--db", db_path).code == 0
    r = cli("run", "--db", db_path, "--once", "--rate", "lots")
    assert r.code == 2 and "N/PERIOD" in r.err and len(r.err.strip().splitlines()) == 1


async def test_priorities_and_expiry(db_path: str, sink: SinkThread) -> None:
    """High priority goes first, low last; a message past expires_at or --max-age is expired, never sent."""
    await seed(db_path, 6)
    query(db_path, "SELECT 1")
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE messages SET priority = 0 WHERE id = 5")
    conn.execute("UPDATE messages SET priority = 2 WHERE id = 1")
    conn.execute("UPDATE messages SET expires_at = ? WHERE id = 3", (time.time() - 1,))
    conn.execute("UPDATE messages SET created_at = created_at - 10 * 86400 WHERE id = 4")
    conn.commit()
    conn.close()
    await run_once(db_path, sink.port, concurrency=1, batch=1, max_age="7d")
    order = [r.rcpt_tos[0] for r in sink.received]
    assert order == ["r4@example.com", "r1@example.com", "r5@example.com", "r0@example.com"]
    assert one(db_path, 3)["state"] == "expired" and one(db_path, 4)["state"] == "expired"
    assert states(db_path) == {"sent": 4, "expired": 2}


async def test_campaign_pause_and_resume(cli: Cli, queue: str, sink: SinkThread) -> None:
    """A paused campaign is skipped by every claim and sent after resume; others are unaffected."""
    await seed(queue, 2, campaign="a", prefix="a")
    await seed(queue, 2, campaign="b", prefix="b")
    assert cli("pause", "--db", queue, "--campaign", "a", "--reason", "legal review").code == 0
    status = json.loads(cli("status", "--db", queue, "--json").out)
    assert status["paused"]["campaigns"] == {"a": "legal review"}
    await run_once(queue, sink.port)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["b0@example.com", "b1@example.com"]
    assert cli("resume", "--db", queue, "--campaign", "a").code == 0
    await run_once(queue, sink.port)
    assert states(queue) == {"sent": 4}
    assert [r[0] for r in query(queue, "SELECT action FROM audit ORDER BY id")] == [
        "pause-campaign", "resume-campaign"]


async def test_auto_pause_after_error_streak_holds_until_resumed(cli: Cli, db_path: str,
                                                                 faulty_sink: SinkThread, faults: Faults) -> None:
    """N relay errors in a row pause all sending, status says why, and only an operator resumes it."""
    tried: list[str] = []
    faults.rcpt = lambda rcpt: tried.append(rcpt) or "451 4.3.0 relay overloaded"
    await seed(db_path, 10)
    await run_once(db_path, faulty_sink.port, concurrency=1, batch=8, pause_after_errors=3)
    # three attempts, and no fourth: the third error stops the worker at once (a claim waiting
    # ahead is handed back, ``released``, never begun)
    assert query(db_path, "SELECT count(*) FROM send_log WHERE status <> 'released'") == [(3,)]
    assert len(tried) == 3
    status = json.loads(cli("status", "--db", db_path, "--json").out)
    assert "3 consecutive relay errors" in status["paused"]["global"]["reason"]
    faults.rcpt = None
    stats = await run_once(db_path, faulty_sink.port)
    assert stats.claimed == 0 and faulty_sink.received == []
    assert cli("resume", "--db", db_path).code == 0
    query(db_path, "SELECT 1")
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE messages SET due_at = 0 WHERE state = 'scheduled'")
    conn.commit()
    conn.close()
    await run_once(db_path, faulty_sink.port)
    assert states(db_path) == {"sent": 10}


async def test_a_throttling_relay_never_counts_toward_pause_after_errors(
        cli: Cli, db_path: str, faulty_sink: SinkThread, faults: Faults) -> None:
    """A throttle is the relay asking to slow down, not an error: it never pauses sending."""
    faults.rcpt = lambda rcpt: "450 4.7.1 too much mail from 127.0.0.1"
    await seed(db_path, 1)  # one is enough: the next would wait out the slowed pace
    await run_once(db_path, faulty_sink.port, concurrency=1, batch=1, pause_after_errors=1)
    assert query(db_path, "SELECT status FROM send_log") == [("released",)]
    status = json.loads(cli("status", "--db", db_path, "--json").out)
    assert status["paused"]["global"] is None, status["paused"]
    assert states(db_path) == {"scheduled": 1}


async def test_status_shows_budget_and_pause(cli: Cli, queue: str, sink: SinkThread, tmp_path: Path) -> None:
    """status reports what each From account may still send under the configured rate and daily cap, and pauses."""
    (tmp_path / "sender.toml").write_text('[policy]\nrate = "10/1m"\ndaily_cap = 100\n')
    await seed(queue, 2)
    await run_once(queue, sink.port)
    status = json.loads(cli("status", "--db", queue, "--json").out)
    assert status["budget"] == {"team@example.org": {"rate_remaining": 8, "daily_remaining": 98}}
    assert cli("pause", "--db", queue, "--reason", "incident review").code == 0
    text = cli("status", "--db", queue).out
    assert "PAUSED     all sending" in text and "incident review" in text
    assert "budget     team@example.org: rate remaining 8, daily remaining 98" in text
