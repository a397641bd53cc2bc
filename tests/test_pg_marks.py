"""The start journal on PostgreSQL: a worker SIGKILLed with claims waiting (``--prefetch``) and
sessions in the middle of their data leaves the waiting ones ``scheduled`` (no attempt) and the
started ones ``unknown``; if the server epoch the worker recorded is not the server's any more
(as after a restart), nothing is trusted. A frozen worker starts nothing its marks released; a
lost marks connection stops only the starts whose marks failed. Marks go with their outcomes.

A real PostgreSQL (``SENDER_TEST_POSTGRES``), real daemon processes (SIGKILL, SIGSTOP), a real
aiosmtpd whose reply to the data is slow, so the sessions are mid-send when the worker dies. The
shared server cannot be restarted here, so "another epoch" is one update of the recorded value.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from sender.store.pg_marks import EPOCH
from tests.conftest import Cli, Faults, RecordingHandler, SinkThread
from tests.support import daemon_args, in_state, log_statuses, one, query, seed, states, stop, wait_until

SEEDED = 8
IN_FLIGHT = 2  # --concurrency 2
CLAIMED = 6  # two in flight and --prefetch 2 waiting for each session


def marks(url: str) -> set[int]:
    return {int(r[0]) for r in query(url, "SELECT row_id FROM start_marks")}


def kill_mid_send(url: str, cli: Cli, sink: SinkThread, faults: Faults, mails: list[str]) -> set[int]:
    """A worker with two sessions waiting for the relay's reply to their data and four claims
    waiting, SIGKILLed; returns the rows its sessions started (the marks it left)."""
    faults.data_delay = 5.0
    proc = cli.popen(*daemon_args(url, sink.port, "--concurrency", "2", "--prefetch", "2", "--lease", "1.5"))
    try:
        assert wait_until(lambda: len(mails) == IN_FLIGHT and in_state(url, "sending") == CLAIMED, 20)
        time.sleep(0.3)  # both sessions are past their final dot, waiting for the reply
    finally:
        stop(proc, signal.SIGKILL)
    faults.data_delay = 0.0
    started = marks(url)
    assert wait_until(lambda: all(time.time() > one(url, r)["lease_until"]
                                  for r, in query(url, "SELECT id FROM messages WHERE state = 'sending'")), 10)
    return started


async def test_unstarted_claims_go_back_and_nothing_is_sent_twice(cli: Cli, tmp_path: Path,
                                                                  pg_database: str) -> None:
    """After SIGKILL and the lease's expiry, ``recover`` moves the two started claims (marked) to
    unknown and the four waiting ones (no mark) to scheduled with no attempt and a SendLog
    'released' entry; the dead worker's marks are then gone, and a second run sends every other
    row: each recipient gets one copy."""
    url = pg_database
    await seed(url, SEEDED)
    mails: list[str] = []
    faults = Faults()
    with SinkThread(RecordingHandler(tmp_path / "maildir", faults, on_mail=mails.append)) as sink:
        started = kill_mid_send(url, cli, sink, faults, mails)
        assert len(started) == IN_FLIGHT
        [(recorded, current)] = query(url, f"SELECT marks_epoch, {EPOCH} FROM workers")
        assert recorded == current
        recovered = cli("recover", "--db", url)
        assert recovered.code == 0, recovered
        assert f"{IN_FLIGHT} expired claim(s) moved to unknown; {CLAIMED - IN_FLIGHT} never started" in recovered.out
        unknown = {r for r, in query(url, "SELECT id FROM messages WHERE state = 'unknown'")}
        assert unknown == started
        released = {r for r, in query(url, "SELECT message_id FROM send_log WHERE status = 'released'")}
        assert len(released) == CLAIMED - IN_FLIGHT and not released & started
        for row in released:
            assert (one(url, row)["state"], one(url, row)["attempts"]) == ("scheduled", 0)
            assert log_statuses(url, row) == ["released"]
        assert marks(url) == set()
        assert cli(*daemon_args(url, sink.port, "--once", "--concurrency", "2")).code == 0
        copies = Counter(r.rcpt_tos[0] for r in sink.received)
    assert states(url) == {"sent": SEEDED - IN_FLIGHT, "unknown": IN_FLIGHT}
    # One MAIL FROM per row in all; the sink dropped the two whose reply was pending when the line
    # died, and every other row arrived once.
    assert len(mails) == SEEDED
    sent = {str(a) for a, in query(url, "SELECT r.email FROM messages m JOIN recipients r ON r.id = m.recipient_id "
                                        "WHERE m.state = 'sent'")}
    assert set(copies) == sent and set(copies.values()) == {1}, copies
    assert marks(url) == set()


@pytest.mark.parametrize("case", ["server-restarted", "no-epoch"])
async def test_after_a_server_restart_nothing_is_trusted(cli: Cli, tmp_path: Path, pg_database: str,
                                                         case: str) -> None:
    """A recorded epoch that is not the server's (a restart may have lost marks committed
    asynchronously), or none at all, proves nothing: all six expired claims become unknown."""
    url = pg_database
    await seed(url, SEEDED)
    mails: list[str] = []
    faults = Faults()
    with SinkThread(RecordingHandler(tmp_path / "maildir", faults, on_mail=mails.append)) as sink:
        kill_mid_send(url, cli, sink, faults, mails)
    value = "'1.5 2.5'" if case == "server-restarted" else "NULL"
    query(url, f"UPDATE workers SET marks_epoch = {value} RETURNING id")
    recovered = cli("recover", "--db", url)
    assert recovered.code == 0 and f"{CLAIMED} expired claim(s) moved to unknown" in recovered.out, recovered
    assert "never started" not in recovered.out
    assert states(url) == {"unknown": CLAIMED, "scheduled": SEEDED - CLAIMED}
    assert marks(url) == set()  # the dead worker holds no claim any more


async def test_marks_are_removed_when_settled_and_on_a_clean_stop(cli: Cli, sink: SinkThread,
                                                                  pg_database: str) -> None:
    """A mark goes in the transaction that records its claim's outcome: once a running daemon's
    40 sends are recorded, none is left; a worker's start removes marks whose claims are over
    (as a worker killed after marking a claim already recovered leaves them); ``run --once``
    leaves none."""
    url = pg_database
    await seed(url, 40)
    proc = cli.popen(*daemon_args(url, sink.port, "--concurrency", "4", "--prefetch", "1"))
    try:
        assert wait_until(lambda: states(url) == {"sent": 40}, 30)
        assert marks(url) == set()
        assert stop(proc) == 0
    finally:
        stop(proc, signal.SIGKILL)
    assert marks(url) == set()
    query(url, "INSERT INTO start_marks VALUES (99, 1, '99.gone'), (99, 4242, '99.gone') RETURNING 1")
    await seed(url, 10, prefix="again")
    assert cli(*daemon_args(url, sink.port, "--once")).code == 0
    assert states(url) == {"sent": 50} and marks(url) == set()
    assert len(sink.received) == 50


async def test_a_lost_marks_connection_stops_one_start_and_sending_goes_on(cli: Cli, sink: SinkThread,
                                                                           pg_database: str) -> None:
    """The server ends the worker's marks connection mid-run: the messages whose marks failed are
    not started (SendLog 'released', no attempt), the next mark reconnects, and every row is sent
    once."""
    url = pg_database
    await seed(url, 30)
    proc = cli.popen(*daemon_args(url, sink.port, "--concurrency", "2"))
    try:
        assert wait_until(lambda: in_state(url, "sent") >= 5, 20)
        ended = query(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'sender marks' AND datname = current_database()")
        assert ended == [(True,)]
        assert wait_until(lambda: states(url) == {"sent": 30}, 30)
        assert stop(proc) == 0
    finally:
        stop(proc, signal.SIGKILL)
    assert Counter(Counter(r.rcpt_tos[0] for r in sink.received).values()) == {1: 30}
    released = query(url, "SELECT smtp_reply FROM send_log WHERE status = 'released'")
    assert 1 <= len(released) <= 2, released  # the failed statement's marks: one per session at most
    assert all("start journal cannot be written" in str(r[0]) for r in released), released
    assert query(url, "SELECT max(attempts) FROM messages") == [(1,)]
    assert "start marks: reconnected" in proc.log_path.read_text()  # type: ignore[attr-defined]
