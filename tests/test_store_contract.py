"""The store's contract, written against the engine seam (``sender.store.engine``).

Every test runs once per engine ``engines()`` reports (SQLite, PostgreSQL): claim, record,
leases, policy holds, pauses, the report's reads and error translation. Nothing here runs SQL;
each engine's queue is fresh (a file, or a new database: ``tests/pg.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sender.errors import StoreError
from sender.intake import NewMessage
from sender.policy import Limit, Policy
from sender.store import counts, flags, reports, sending
from sender.store.claims import Claim
from sender.store.engine import Engine, Store, engines
from sender.store.enqueue import enqueue
from sender.store.sending import Outcome
from tests import pg

T0 = 1_700_000_000.0
ENGINES = engines()


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    return ENGINES[request.param]


@pytest.fixture
def target(engine: Engine, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return pg.target(engine.name, tmp_path, request)


@pytest.fixture
async def store(engine: Engine, target: str) -> AsyncIterator[Store]:
    async with engine.open(target, create=True) as db:
        rows = [NewMessage(to=f"r{i}@example.com", subject=f"s{i}", body=f"b{i}", campaign="c")
                for i in range(3)]
        await enqueue(db, rows, from_addr="team@example.org", from_name=None, domain=None, now=T0)
        yield db


async def _claim(engine: Engine, db: Store, *, limit: int = 10, lease: float = 30.0, now: float = T0,
                 policy: Policy | None = None) -> list[Claim]:
    wid = await sending.register_worker(db, "w", 1, "h", now)
    return await db.transaction(lambda tx: engine.claim(tx, policy, worker="w", worker_id=wid,
                                                        limit=limit, lease=lease, now=now))


async def test_claim_takes_each_due_row_once(engine: Engine, store: Store) -> None:
    """Claims move due rows to ``sending`` with one token per batch and never hand a row out twice."""
    first = await _claim(engine, store, limit=2)
    second = await _claim(engine, store, limit=2)
    assert len(first) == 2 and len(second) == 1
    assert {c.row for c in first}.isdisjoint(c.row for c in second)
    assert len({c.token for c in first}) == 1
    assert await _claim(engine, store) == []
    assert (await counts.state_counts(store))["sending"] == 3


async def test_record_applies_outcomes_fenced_by_token(engine: Engine, store: Store) -> None:
    """Outcomes land by claim token: sent and retry move their rows; a stale token changes nothing."""
    a, b, c = await _claim(engine, store)
    outcomes = [Outcome(a.row, a.token, "sent", 250, "ok"),
                Outcome(b.row, b.token, "retry", 451, "later", due_at=T0 + 60),
                Outcome(c.row, "0.stale", "sent", 250, "ok")]
    await store.transaction(lambda tx: engine.record(tx, outcomes, T0 + 1))
    states = await counts.state_counts(store)
    assert (states["sent"], states["scheduled"], states["sending"]) == (1, 1, 1)


async def test_expired_lease_becomes_unknown_and_is_reported(engine: Engine, store: Store) -> None:
    """A lease that ran out is a stale claim until recovery makes it ``unknown``, which the report lists."""
    [claim] = await _claim(engine, store, limit=1, lease=5.0)
    [stale] = await reports.stale_claims(store, T0 + 10)
    assert stale.row == claim.row
    expired = await sending.recover(store, T0 + 10)
    assert [e.row for e in expired] == [claim.row]
    assert [u.row for u in await reports.unknown_messages(store)] == [claim.row]
    assert await reports.stale_claims(store, T0 + 10) == []


async def test_policy_holds_rows_past_a_rate(engine: Engine, store: Store) -> None:
    """A sending policy's rate is counted in the claim transaction: past it, due rows are held back."""
    policy = Policy(rate=Limit(1, 3600.0))
    assert len(await _claim(engine, store, policy=policy)) == 1
    assert await _claim(engine, store, policy=policy) == []
    assert (await counts.state_counts(store))["scheduled"] == 2
    assert len(await _claim(engine, store, policy=policy, now=T0 + 3601)) == 1


async def test_global_pause_stops_every_claim(engine: Engine, store: Store) -> None:
    """With the global pause set no row is claimed; resumed, the claim proceeds."""
    await flags.set_paused(store, True, actor="op", now=T0, reason="test")
    wid = await sending.register_worker(store, "w", 1, "h", T0)
    turn = await sending.exchange(store, [], worker="w", worker_id=wid, limit=10, lease=30.0, now=T0,
                                  read_pauses=True)
    assert turn.claims == [] and turn.paused
    await flags.set_paused(store, False, actor="op", now=T0)
    assert len(await _claim(engine, store)) == 3


async def test_next_due_is_the_earliest_row_a_claim_could_take(engine: Engine, store: Store) -> None:
    """The next due time skips rows no claim may take (claimed, a paused campaign) and is none
    while sending is paused."""
    later = [NewMessage(to="p@example.com", subject="s", body="b", campaign="p", send_at=T0 + 50),
             NewMessage(to="q@example.com", subject="s", body="b", campaign="q", send_at=T0 + 90, priority=0)]
    await enqueue(store, later, from_addr="team@example.org", from_name=None, domain=None, now=T0)
    assert await sending.next_due(store) == T0
    await _claim(engine, store)
    assert await sending.next_due(store) == T0 + 50
    await flags.set_campaign_paused(store, "p", True, actor="op", now=T0)
    assert await sending.next_due(store) == T0 + 90
    await flags.set_paused(store, True, actor="op", now=T0)
    assert await sending.next_due(store) is None


async def test_wakeups_come_when_a_row_is_enqueued_where_the_engine_sends_them(
        engine: Engine, store: Store, target: str) -> None:
    """An engine that says it wakes a daemon (PostgreSQL) does so when another connection enqueues
    a row; one that does not (SQLite) never calls ``wake``."""
    woken = asyncio.Event()
    async with engine.wakeups(store, woken.set, 30.0) as notified:
        await asyncio.sleep(0.5)  # listening, and its first wake-up (on connecting) is past
        woken.clear()
        async with engine.open(target) as other:
            await enqueue(other, [NewMessage(to="new@example.com", subject="s", body="b")],
                          from_addr="team@example.org", from_name=None, domain=None, now=T0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), 5.0 if notified else 0.5)
    assert notified == (engine.name == "postgres")
    assert woken.is_set() == notified


def _psycopg_error() -> Exception:
    import psycopg

    return psycopg.OperationalError("server closed the connection unexpectedly")


# Each engine's own kind of failure, and a queue it cannot find.
NATIVE_ERROR: dict[str, Callable[[], Exception]] = {
    "sqlite": lambda: sqlite3.OperationalError("disk I/O error"), "postgres": _psycopg_error}
ABSENT: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp: str(tmp / "absent.db"), "postgres": lambda _tmp: pg.absent_database()}


async def test_engine_errors_become_store_errors(engine: Engine, tmp_path: Path) -> None:
    """Opening a missing queue is a ``StoreError``; the engine's own exceptions translate to one."""
    with pytest.raises(StoreError):
        async with engine.open(ABSENT[engine.name](tmp_path)):
            pass
    assert isinstance(engine.translate(NATIVE_ERROR[engine.name](), "q.db"), StoreError)
    assert engine.translate(ValueError("not ours"), "q.db") is None
