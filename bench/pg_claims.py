"""Claims per second through the store on both engines, same queue shape, same process.

``python -m bench.pg_claims [--total N] [--server URL]``: enqueue ``total`` rows into a fresh
SQLite file and a fresh PostgreSQL database (created on ``--server``, default
``$SENDER_TEST_POSTGRES``, dropped afterwards), then claim them with ``sending.exchange`` at
batch 1, 8 and 64, recording each batch's outcomes in the next claim's transaction (what the
daemon does). One process, one connection: the per-transaction cost, not a multi-host figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path

from sender.intake import NewMessage
from sender.store import sending
from sender.store.engine import open_store
from sender.store.enqueue import enqueue

BATCHES = (1, 8, 64)
DEADLINE = 20.0  # seconds per measurement at most


async def _fill(target: str, total: int) -> None:
    rows = [NewMessage(to=f"r{i}@example.com", subject=f"s{i}", body=f"b{i}") for i in range(total)]
    async with open_store(target, create=True) as db:
        await enqueue(db, rows, from_addr="team@example.org", from_name=None, domain=None, now=time.time() - 10)


async def _claims(target: str, batch: int, total: int) -> float:
    claimed = 0
    previous: list[sending.Outcome] = []
    async with open_store(target) as db:
        wid = await sending.register_worker(db, "bench", 1, "bench", time.time())
        started = time.perf_counter()
        while claimed < total and time.perf_counter() - started < DEADLINE:
            turn = await sending.exchange(db, previous, worker="bench", worker_id=wid, limit=batch,
                                          lease=300.0, now=time.time())
            if not turn.claims:
                break
            previous = [sending.Outcome(c.row, c.token, "sent", 250, "OK", None, c.mid, c.recipient)
                        for c in turn.claims]
            claimed += len(turn.claims)
        return claimed / (time.perf_counter() - started)


def _pg_database(server: str) -> tuple[str, str]:
    from urllib.parse import urlsplit, urlunsplit

    name = f"sender_bench_{secrets.token_hex(4)}"
    parts = urlsplit(server)
    return name, urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def _drop(server: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=4000)
    parser.add_argument("--server", default=os.environ.get("SENDER_TEST_POSTGRES", ""))
    args = parser.parse_args()
    if not args.server:
        parser.error("--server (or SENDER_TEST_POSTGRES): a postgresql:// URL to create a database on")
    print(f"claims per second, {args.total:,} rows per run, record-and-claim transactions")
    print(f"{'batch':>6} {'sqlite':>10} {'postgres':>10}")
    for batch in BATCHES:
        total = args.total if batch > 1 else min(args.total, 2000)
        with tempfile.TemporaryDirectory() as folder:
            path = str(Path(folder) / "queue.db")
            asyncio.run(_fill(path, total))
            lite = asyncio.run(_claims(path, batch, total))
        name, url = _pg_database(args.server)
        try:
            asyncio.run(_fill(url, total))
            pg = asyncio.run(_claims(url, batch, total))
        finally:
            _drop(args.server, name)
        print(f"{batch:>6} {lite:>10,.0f} {pg:>10,.0f}")


if __name__ == "__main__":
    main()
