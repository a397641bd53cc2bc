"""The lease fence (issue #12 item 1): a worker never starts a message, nor completes a
transaction, once its claim's lease may have lapsed or the store no longer holds the claim for it.

The fence's arithmetic is checked with injected clocks; the session's two checkpoints against a
real aiosmtpd; and the two incidents of the issue with real processes frozen by SIGSTOP (timed by
the sink's handler seeing RCPT), recovered, requeued and sent by another process, then resumed:
zero duplicates at the sink, the database consistent.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sender.daemon import Daemon
from sender.delivery import Session
from sender.fence import Fence, Fenced, margin
from sender.guard import NOT_DELIVERED
from sender.journal import BOOT_ID_ENV
from sender.message import build
from sender.store.db import open_db
from sender.store.operator import REQUEUE_RISK
from tests.conftest import Cli, Faults, RecordingHandler, SinkThread
from tests.support import daemon_args, in_state, log_statuses, query, seed, settings, states, stop, wait_until
from tests.test_crash import freeze


class Clocks:
    """A steady and a wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.steady = 100.0
        self.wall = 1_000_000.0

    def advance(self, seconds: float) -> None:
        self.steady += seconds
        self.wall += seconds


def fence_with(clocks: Clocks, lease: float = 10.0, heartbeat: float = 1.0) -> Fence:
    return Fence(lease, heartbeat, clock=lambda: clocks.steady, wall=lambda: clocks.wall)


# --- the fence's arithmetic ------------------------------------------------------------------

async def test_deadline_is_the_lease_minus_the_margin_by_the_steady_clock() -> None:
    """A granted claim may go on until lease - margin after its turn began, and not a moment later."""
    clocks = Clocks()
    fence = fence_with(clocks)
    fence.granted([(1, "t")], clocks.steady, clocks.wall)
    for _ in range(7):
        clocks.advance(1.0)  # ticks every second, no longer than the heartbeat: no stall
        await fence.check(1, "mail")
    clocks.advance(10.0 - margin(10.0) - 7.0 - 0.01)
    await fence.check(1, "dot")
    clocks.advance(0.02)
    with pytest.raises(Fenced, match="may have lapsed"):
        await fence.check(1, "dot")
    assert 0 < margin(10.0) < 10.0 and margin(3600.0) < 3600.0 * 0.2


async def test_a_forward_wall_clock_step_fences_too() -> None:
    """The store's view is wall-clock: a step forward that would let a recoverer expire the lease stops the worker."""
    clocks = Clocks()
    fence = fence_with(clocks)
    fence.granted([(1, "t")], clocks.steady, clocks.wall)
    clocks.wall += 9.0
    with pytest.raises(Fenced):
        await fence.check(1, "mail")


async def test_after_a_stall_a_claim_waits_for_the_store_to_confirm_it() -> None:
    """A stall longer than the heartbeat makes every claim wait for a heartbeat begun after it;
    a claim that heartbeat kept goes on, one it did not keep is fenced."""
    clocks = Clocks()
    stalls: list[float] = []
    fence = Fence(10.0, 1.0, clock=lambda: clocks.steady, wall=lambda: clocks.wall,
                  on_stall=lambda: stalls.append(clocks.steady))
    fence.granted([(1, "t"), (2, "t")], clocks.steady, clocks.wall)
    clocks.advance(2.0)  # the loop stood still for two heartbeats (shorter than the lease)
    one = asyncio.create_task(fence.check(1, "dot"))
    two = asyncio.create_task(fence.check(2, "mail"))
    await asyncio.sleep(0.05)
    assert stalls and not one.done() and not two.done()
    fence.renewed([(1, "t"), (2, "t")], {1, 2}, clocks.steady - 2.5, clocks.wall)  # begun before the stall
    await asyncio.sleep(0.05)
    assert not one.done() and not two.done()
    fence.renewed([(1, "t"), (2, "t")], {1}, clocks.steady, clocks.wall)
    await asyncio.wait_for(one, 1)
    with pytest.raises(Fenced, match="no longer holds"):
        await asyncio.wait_for(two, 1)


# --- the session's two checkpoints ------------------------------------------------------------

def envelope(n: int = 1) -> object:
    return build(mid=f"<{n}.x@example.org>", from_addr="team@example.org", from_name=None,
                 to=f"r{n}@example.com", to_name=None, subject="s", body_text="b" * 200_000,
                 body_html=None, date=time.time())


async def test_the_session_cuts_the_transaction_before_the_final_dot(db_path: str, tmp_path: Path) -> None:
    """Fenced at the dot, the whole text has gone but not the marker: the server stores nothing,
    and the session reconnects for the next message."""
    mails: list[str] = []
    with SinkThread(RecordingHandler(tmp_path / "maildir", on_mail=mails.append)) as sink:
        session = Session(settings(db_path, sink.port))
        points: list[str] = []

        async def fence(point: str) -> None:
            points.append(point)
            if point == "dot":
                raise Fenced(point, "test")

        with pytest.raises(Fenced):
            await session.send(envelope(1), fence)  # type: ignore[arg-type]
        assert points == ["mail", "rcpt", "data", "dot"] and session.phase == "idle"
        time.sleep(0.5)
        assert sink.received == [] and len(mails) == 1
        code, _reply = await session.send(envelope(2))  # type: ignore[arg-type]
        await session.close()
        received = sink.received
    assert code == 250 and [r.message_id for r in received] == ["<2.x@example.org>"]


async def test_fenced_before_mail_from_nothing_is_said(db_path: str, tmp_path: Path) -> None:
    """Fenced before MAIL FROM, the server never hears of the message."""
    mails: list[str] = []
    with SinkThread(RecordingHandler(tmp_path / "maildir", on_mail=mails.append)) as sink:
        session = Session(settings(db_path, sink.port))

        async def fence(point: str) -> None:
            raise Fenced(point, "test")

        with pytest.raises(Fenced):
            await session.send(envelope(1), fence)  # type: ignore[arg-type]
        await session.close()
        assert mails == [] and sink.received == []


# --- a stall shorter than the lease: the store is asked again ------------------------------

async def test_a_stall_revalidates_before_the_final_dot(db_path: str, tmp_path: Path) -> None:
    """The loop stalls (longer than the heartbeat, far shorter than the lease) while the claim is
    taken away in the store: the worker asks the store again, cuts the transaction, and the one
    copy the sink gets is the one of the new claim."""
    await seed(db_path, 1)
    loop = asyncio.get_running_loop()
    taken = threading.Event()

    def take_away(address: str) -> str | None:
        if taken.is_set():
            return None
        taken.set()
        loop.call_soon_threadsafe(time.sleep, 1.2)  # the worker's loop stands still
        conn = sqlite3.connect(db_path, timeout=10, isolation_level=None)
        try:  # meanwhile, as a recoverer and an operator would (a clock step, say)
            conn.execute("UPDATE send_log SET status = 'requeued' WHERE status = 'sending'")
            conn.execute("UPDATE messages SET state = 'scheduled', claim_token = NULL, lease_until = NULL")
        finally:
            conn.close()
        return None

    with SinkThread(RecordingHandler(tmp_path / "maildir", Faults(rcpt=take_away))) as sink:
        s = settings(db_path, sink.port, concurrency=1, lease=30.0, heartbeat=0.5)
        async with open_db(db_path) as db:
            daemon = Daemon(db, s, [Session(s)])
            stats = await asyncio.wait_for(daemon.run(once=True), 30)
        received = sink.received
    assert daemon.guard.fence.stalls >= 1
    assert len(received) == 1 and stats.sent == 1
    assert states(db_path) == {"sent": 1}
    assert log_statuses(db_path) == ["requeued", "sent"]


# --- the incidents of issue #12, with real processes ------------------------------------------

class FreezeAtRcpt:
    """The sink's RCPT hook: at the first RCPT, SIGSTOP the worker (outside any write lock)
    before answering, so the worker is frozen in the middle of its transaction."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.proc: subprocess.Popen[str] | None = None
        self.frozen = threading.Event()

    def __call__(self, address: str) -> str | None:
        if self.proc is not None and not self.frozen.is_set():
            freeze(self.proc, self.db_path)
            self.frozen.set()
        return None


def frozen_worker_scenario(db_path: str, cli: Cli, tmp_path: Path, n: int, *extra: str) -> tuple[
        subprocess.Popen[str], list[str]]:
    """Freeze a worker at its first RCPT, let its lease lapse, recover, requeue, send the rows from
    another process, then wake the worker and stop it. Returns it and the Message-IDs received.
    No start journal here (as on another host or boot): every expired claim becomes unknown."""
    hook = FreezeAtRcpt(db_path)
    cli.env[BOOT_ID_ENV] = str(tmp_path / "no-boot-id")  # no start journal: the rule of another host
    with SinkThread(RecordingHandler(tmp_path / "maildir", Faults(rcpt=hook))) as sink:
        hook.proc = proc = cli.popen(*daemon_args(db_path, sink.port, "--concurrency", "1",
                                                  "--lease", "2", *extra))
        try:
            assert hook.frozen.wait(20), proc.log_path.read_text()  # type: ignore[attr-defined]
            assert in_state(db_path, "sending") == n
            time.sleep(2.5)  # past the lease
            recovered = cli("recover", "--db", db_path)
            assert recovered.code == 0 and f"{n} expired" in recovered.out, recovered
            ids = [str(i) for i in range(1, n + 1)]
            resolved = cli("resolve", "--db", db_path, *ids, "--as", "requeue")
            assert resolved.code == 0 and REQUEUE_RISK in resolved.out
            assert cli(*daemon_args(db_path, sink.port, "--once")).code == 0
            assert states(db_path) == {"sent": n}
            proc.send_signal(signal.SIGCONT)
            log_path: Path = proc.log_path  # type: ignore[attr-defined]
            fenced = lambda: set(re.findall(r"row=(\d+) .*lease fence: ", log_path.read_text()))  # noqa: E731
            assert wait_until(lambda: len(fenced()) >= n, 15), fenced()  # each row fenced once
            time.sleep(1.0)  # had the worker gone on, its copies would be here by now
            assert stop(proc) == 0
        finally:
            proc.send_signal(signal.SIGCONT)
            stop(proc, signal.SIGKILL)
        return proc, [r.message_id for r in sink.received]


async def test_a_worker_frozen_during_rcpt_never_completes_its_transaction(db_path: str, cli: Cli,
                                                                           tmp_path: Path) -> None:
    """Frozen at RCPT past its lease, requeued and sent by another run, the worker wakes up, gets
    its 354 and cuts the line before the final dot: one copy, the row sent once."""
    await seed(db_path, 1)
    proc, received = frozen_worker_scenario(db_path, cli, tmp_path, 1)
    assert len(received) == 1
    assert states(db_path) == {"sent": 1}
    assert log_statuses(db_path) == ["requeued", "sent"]
    text = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert "lease fence: transaction cut before the final dot" in text
    assert "outcome released ignored" in text


async def test_a_frozen_worker_with_waiting_claims_starts_none_of_them(db_path: str, cli: Cli,
                                                                       tmp_path: Path) -> None:
    """With --prefetch 2, frozen holding one claim in flight and two waiting: after recover,
    requeue and another run sent all three, the woken worker sends nothing more."""
    await seed(db_path, 3)
    proc, received = frozen_worker_scenario(db_path, cli, tmp_path, 3, "--prefetch", "2")
    copies = Counter(received)
    assert len(copies) == 3 and max(copies.values()) == 1, copies
    assert "lease fence" in proc.log_path.read_text()  # type: ignore[attr-defined]
    assert states(db_path) == {"sent": 3}
    for row in (1, 2, 3):
        assert log_statuses(db_path, row) == ["requeued", "sent"]
    assert query(db_path, "SELECT count(*) FROM send_log WHERE status IN ('sending', 'unknown')") == [(0,)]
    assert query(db_path, "SELECT count(*) FROM send_log WHERE smtp_reply LIKE ?", (NOT_DELIVERED + "%",)) == [(0,)]
