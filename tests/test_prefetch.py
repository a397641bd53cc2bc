"""``--prefetch P``: each session may have P claimed messages waiting while it sends.

The default is 2; ``--prefetch 0`` claims strictly just in time. With P > 0 a claim is still the same durable
transaction before any SMTP byte for its rows; what changes is how many rows a process may hold
(at most sessions x (1 + P)) and what happens to claims no session started: handed back as
``released`` (provably not sent) on a stop (``test_crash``'s SIGTERM test), a pause or a
failing relay. A real aiosmtpd on 127.0.0.1 watches the database at every MAIL FROM.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from sender.daemon import NOT_STARTED, Daemon
from sender.delivery import Session
from sender.store.db import open_db
from tests.conftest import Cli, Faults, RecordingHandler, SinkThread
from tests.support import daemon_args, in_state, query, run_once, seed, settings, states, stop, wait_until
from tests.test_faults import free_port


class SendingCounter:
    """At each MAIL FROM: how many rows are ``sending``, and is this one claimed and logged."""

    def __init__(self) -> None:
        self.db_path = ""
        self.counts: list[int] = []
        self.unclaimed: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, address: str) -> None:
        [(sending, live)] = query(self.db_path,  # one statement: one snapshot
                                  "SELECT (SELECT count(*) FROM messages WHERE state = 'sending'), "
                                  "       (SELECT count(*) FROM send_log WHERE status = 'sending')")
        with self.lock:
            self.counts.append(sending)
            if live != sending:
                self.unclaimed.append(address)


@pytest.mark.parametrize("prefetch", [0, 1])
async def test_rows_held_are_bounded_by_sessions_and_prefetch(queue: str, tmp_path: Path,
                                                              prefetch: int) -> None:
    """Two sessions hold at most 2 rows just in time, at most 4 with --prefetch 1 (and do use them)."""
    counter = SendingCounter()
    counter.db_path = queue
    faults = Faults(data_delay=0.05)
    await seed(queue, 24)
    with SinkThread(RecordingHandler(tmp_path / "maildir", faults, on_mail=counter)) as sink:
        stats = await run_once(queue, sink.port, concurrency=2, prefetch=prefetch)
        received = len(sink.received)
    assert stats.sent == 24 and received == 24
    assert states(queue) == {"sent": 24}
    assert not counter.unclaimed
    assert max(counter.counts) <= 2 * (1 + prefetch), counter.counts
    if prefetch:
        assert max(counter.counts) > 2, counter.counts  # claims really were made ahead


async def test_an_outcome_is_written_before_the_next_send_ends(queue: str, faulty_sink: SinkThread,
                                                                faults: Faults) -> None:
    """With claims waiting, a finished send's outcome is written at the next turn, not held for a
    batch: the first `sent` is in the database while the next message, started at once from the
    waiting claims, is still being sent (so a crash then leaves at most the one in flight unknown)."""
    faults.data_delay = 1.0
    await seed(queue, 6)
    run = asyncio.create_task(run_once(queue, faulty_sink.port, concurrency=1, prefetch=4))
    while not faulty_sink.received and not run.done():
        await asyncio.sleep(0.01)
    first = faulty_sink.received[0].at
    while states(queue).get("sent", 0) == 0 and not run.done():
        await asyncio.sleep(0.01)
    written = time.time()
    assert len(faulty_sink.received) == 1, "the outcome waited for the next send"
    assert written - first < 0.5
    assert (await run).sent == 6 and states(queue) == {"sent": 6}


@pytest.mark.parametrize("scope", ["all", "campaign"])
async def test_a_pause_hands_back_the_waiting_claims(queue: str, cli: Cli, faulty_sink: SinkThread,
                                                     faults: Faults, scope: str) -> None:
    """An operator's pause reaches claims already waiting: the next turn hands them back, sends a
    session had started finish, and nothing else goes out."""
    faults.data_delay = 0.3
    await seed(queue, 30)
    proc = cli.popen(*daemon_args(queue, faulty_sink.port, "--concurrency", "2", "--prefetch", "2"))
    try:
        assert wait_until(lambda: in_state(queue, "sending") > 2, 15)
        assert cli("pause", "--db", queue, *(["--campaign", "c"] if scope == "campaign" else [])).code == 0
        assert wait_until(lambda: in_state(queue, "sending") == 0, 10)
        delivered = len(faulty_sink.received)
        time.sleep(1.0)
        assert len(faulty_sink.received) == delivered
    finally:
        assert stop(proc) == 0
    assert in_state(queue, "sent") == delivered and in_state(queue, "scheduled") == 30 - delivered
    released = {r[0] for r in query(queue, "SELECT smtp_reply FROM send_log WHERE status = 'released'")}
    assert released == {NOT_STARTED + ("sending paused" if scope == "all" else "campaign paused")}


async def test_a_failing_relay_hands_back_the_waiting_claims(queue: str) -> None:
    """Nothing listening: every claim, started or waiting, goes back to scheduled without an attempt."""
    await seed(queue, 12)
    stats = await run_once(queue, free_port(), concurrency=2, prefetch=3)
    assert stats.sent == 0 and stats.session_errors
    assert states(queue) == {"scheduled": 12}
    assert {r[0] for r in query(queue, "SELECT attempts FROM messages")} == {0}
    assert {r[0] for r in query(queue, "SELECT status FROM send_log")} <= {"released"}


async def test_timed_rules_turn_prefetch_off(db_path: str) -> None:
    """A rate, a daily cap or a send window needs each claim sent as it is made: prefetch is ignored."""
    await seed(db_path, 1)
    async with open_db(db_path) as db:
        for rule in ({"rate": "10/1m"}, {"daily_cap": 100},
                     {"campaigns": {"c": {"window": "09:00-17:00"}}}):
            s = settings(db_path, 25, prefetch=2, **rule)
            assert Daemon(db, s, [Session(s)]).prefetch == 0, rule
        s = settings(db_path, 25, prefetch=2, recipient_cap="1/24h")
        assert Daemon(db, s, [Session(s)]).prefetch == 2


def test_prefetch_out_of_range_is_exit_2(cli: Cli, db_path: str) -> None:
    assert cli("init", "--db", db_path).code == 0
    for bad in ("-1", "5"):
        r = cli("run", "--db", db_path, "--once", "--prefetch", bad)
        assert r.code == 2 and "--prefetch" in r.err
