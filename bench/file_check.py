"""``python -m bench.file_check``: what the daemon's per-turn queue-file check costs.

``Database.check_file`` (two ``stat`` calls: same device and inode, ``-wal`` present) runs at
the start of every turn of the loop. This prints its cost next to one real turn of the loop's
database work (record 4 outcomes and claim 4 rows in one durable transaction) on a temporary
sending. Nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from sender.intake import NewMessage
from sender.policy import Policy
from sender.store import sending
from sender.store.db import open_db
from sender.store.enqueue import enqueue
from sender.store.sending import Outcome

TURNS = 300
CHECKS = 100_000


async def measure(path: str) -> tuple[float, float]:
    rows = [NewMessage(to=f"r{i}@example.com", subject="s", body="b") for i in range(4 * TURNS + 8)]
    async with open_db(path, create=True) as db:
        await enqueue(db, rows, from_addr="team@example.org", from_name=None, domain=None, now=time.time())
        worker = await sending.register_worker(db, "bench", 1, "host", time.time())
        pending: list[Outcome] = []
        started = time.perf_counter()
        for _ in range(TURNS):
            turn = await sending.exchange(db, pending, worker="bench", worker_id=worker, limit=4, lease=60,
                                        now=time.time(), policy=Policy(), pause_reason=None, read_pauses=False)
            pending = [Outcome(c.row, c.token, "sent", 250, "ok", None, c.mid, c.recipient) for c in turn.claims]
        per_turn = (time.perf_counter() - started) / TURNS
        started = time.perf_counter()
        for _ in range(CHECKS):
            db.check_file()
        per_check = (time.perf_counter() - started) / CHECKS
    return per_turn, per_check


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        per_turn, per_check = asyncio.run(measure(str(Path(tmp) / "q.db")))
    print(f"turn (record 4 + claim 4): {per_turn * 1e6:,.0f} us")
    print(f"check_file:                {per_check * 1e6:.2f} us ({per_check / per_turn:.2%} of a turn)")


if __name__ == "__main__":
    main()
