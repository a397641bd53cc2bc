"""A worker is presumed dead after three missed heartbeats *of its own*: the monitor and `status`
read each worker's recorded `--heartbeat`, so a daemon run with a long interval is not shown dead
between two of its heartbeats, and one with the default interval is shown dead within 15 s."""

from __future__ import annotations

from sender.store import counts as queries
from sender.store import sending as queue
from sender.store import views as monitor
from sender.store.db import open_db

T0 = 1_750_000_000.0


async def test_each_worker_is_judged_by_its_own_heartbeat_interval(db_path: str) -> None:
    """20 s after their last heartbeat: a 30 s-heartbeat worker is alive, a 5 s one presumed dead."""
    async with open_db(db_path, create=True) as db:
        slow = await queue.register_worker(db, "slow", 1, "h", T0 - 20, heartbeat=30.0)
        quick = await queue.register_worker(db, "quick", 2, "h", T0 - 20, heartbeat=5.0)
        old = await queue.register_worker(db, "old-row", 3, "h", T0 - 20)  # written before the column
        listed = {w.id: w.status for w in await monitor.workers(db, T0)}
        counts = await queries.worker_counts(db, T0, monitor.WORKER_DEAD_AFTER)
    assert listed == {slow: "alive", quick: "presumed dead", old: "presumed dead"}
    assert (counts.alive, counts.presumed_dead) == (1, 2)


async def test_a_long_heartbeat_still_ends_in_presumed_dead(db_path: str) -> None:
    """Past three of its own intervals a worker with a long heartbeat is presumed dead too."""
    async with open_db(db_path, create=True) as db:
        slow = await queue.register_worker(db, "slow", 1, "h", T0 - 95, heartbeat=30.0)
        assert [w.status for w in await monitor.workers(db, T0) if w.id == slow] == ["presumed dead"]
        assert (await queries.worker_counts(db, T0)).presumed_dead == 1  # status: 60 s, or 3 x 30 s
